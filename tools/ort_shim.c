/* Stand-in for libonnxruntime.1.12.22.721.so, which Intel's CPU and FPGA-emulator OpenCL
 * runtimes link against for one symbol, OrtGetApiBase@VERS_1.12.0. It forwards that call
 * to the onnxruntime library installed from PyPI, whose path is baked in at build time
 * (ORT_LIBRARY). Built by tools/setup-opencl.sh with tools/ort_shim.map. */
#include <dlfcn.h>
#include <stddef.h>

#ifndef ORT_LIBRARY
#error "build with -DORT_LIBRARY=\"/path/to/libonnxruntime.so.1.x\""
#endif

typedef const void *(*get_api_base_fn)(void);

const void *OrtGetApiBase(void) {
  static get_api_base_fn forward = NULL;
  if (forward == NULL) {
    void *lib = dlopen(ORT_LIBRARY, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) return NULL;
    forward = (get_api_base_fn)dlsym(lib, "OrtGetApiBase");
    if (forward == NULL) return NULL;
  }
  return forward();
}
