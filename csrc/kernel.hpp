// A kernel of a built program, its arguments, and its launch on a queue.
//
// Copies of a Kernel share one cl_kernel and its arguments (the buffers bound to it are
// kept alive with it). A Plan freezes the kernels it holds: setting an argument of a frozen
// kernel throws, so a plan's launches cannot be changed behind its back.
#pragma once
#include <map>
#include <memory>
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
  cl_uint num_args() const { return static_cast<cl_uint>(state_->spaces.size()); }
  ArgSpace arg_space(cl_uint index) const;

  void set_buffer(cl_uint index, const Buffer& buffer);
  void set_scalar(cl_uint index, const void* value, size_t size);
  void set_local(cl_uint index, size_t nbytes);
  void freeze() { state_->frozen = true; }
  // The buffers bound to its arguments.
  std::vector<Buffer> buffers() const;

  // global/local have 1 to 3 entries; an empty local lets the runtime choose. A
  // single-work-item kernel (FPGA pipelines) is launched with global {1}.
  Event launch(const Queue& queue, const std::vector<size_t>& global,
               const std::vector<size_t>& local, const std::vector<Event>& wait_for = {}) const;

 private:
  struct State {
    ClRef<cl_kernel> kernel;
    std::vector<ArgSpace> spaces;
    std::map<cl_uint, Buffer> bound;
    bool frozen = false;
  };
  std::string where(cl_uint index) const;
  void check_settable(cl_uint index) const;
  Program program_;
  std::string name_;
  std::shared_ptr<State> state_;
};

}  // namespace accel
