// A kernel of a built program, its arguments, and its launch on a queue. The buffers bound
// to it are kept alive as long as the kernel is.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "buffer.hpp"
#include "event.hpp"
#include "program.hpp"

namespace accel {

class Kernel {
 public:
  Kernel(const Program& program, const std::string& name);
  const std::string& name() const { return name_; }
  cl_uint num_args() const;

  void set_buffer(cl_uint index, const Buffer& buffer);
  void set_scalar(cl_uint index, const void* value, size_t size);
  void set_local(cl_uint index, size_t nbytes);

  // global/local have 1 to 3 entries; an empty local lets the runtime choose. A
  // single-work-item kernel (FPGA pipelines) is launched with global {1}.
  Event launch(const Queue& queue, const std::vector<size_t>& global,
               const std::vector<size_t>& local, const std::vector<Event>& wait_for = {}) const;

 private:
  std::string where(cl_uint index) const;
  Program program_;
  std::string name_;
  ClRef<cl_kernel> kernel_;
  std::map<cl_uint, Buffer> bound_;
};

}  // namespace accel
