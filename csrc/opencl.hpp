// The one place that includes the OpenCL headers, so every file agrees on the API level.
// 1.2 is what the Intel FPGA SDK and its emulator speak.
#pragma once
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>

#include <memory>
#include <type_traits>

namespace accel {

// Shared ownership of a cl_* handle; the last owner releases it.
template <typename Handle>
using ClRef = std::shared_ptr<std::remove_pointer_t<Handle>>;

template <typename Handle, typename Release>
ClRef<Handle> adopt(Handle handle, Release release) {
  return ClRef<Handle>(handle, [release](Handle h) {
    if (h != nullptr) release(h);
  });
}

}  // namespace accel
