// A device buffer of a fixed size in bytes. Copies are checked against that size by the
// caller (the bindings check numpy arrays) and again here.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

#include "context.hpp"
#include "event.hpp"

namespace accel {

class Buffer {
 public:
  Buffer(const Context& context, size_t nbytes);
  // An existing buffer (made by another library, e.g. pyopencl): retained here, released
  // when the last copy goes; its size and context are the driver's.
  static Buffer wrap(cl_mem mem);
  // Bytes [offset, offset + nbytes) of this buffer as a buffer of its own (clCreateSubBuffer;
  // offset a multiple of the device's CL_DEVICE_MEM_BASE_ADDR_ALIGN). The FPGA's persistent
  // pipeline addresses every activation in one arena; the other kernels get regions of it.
  Buffer region(size_t offset, size_t nbytes) const;
  size_t nbytes() const { return nbytes_; }
  cl_mem get() const { return mem_.get(); }
  cl_context context() const { return context_; }

  // Host -> device and device -> host copies of exactly nbytes().
  Event write(const Queue& queue, const void* host, size_t nbytes, bool blocking) const;
  Event read(const Queue& queue, void* host, size_t nbytes, bool blocking,
             const std::vector<Event>& wait_for = {}) const;

 private:
  Buffer(size_t nbytes, cl_context context, ClRef<cl_mem> mem)
      : nbytes_(nbytes), context_(context), mem_(std::move(mem)) {}
  void check_size(size_t nbytes, const char* what) const;
  size_t nbytes_;
  cl_context context_;  // kept alive by the buffer itself (a cl_mem retains its context)
  ClRef<cl_mem> mem_;
};

}  // namespace accel
