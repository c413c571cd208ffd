// A fixed sequence of kernel launches over buffers allocated once. Arguments are bound
// when a launch is added; run() is one upload per input, the launches, one download per
// output, and a single wait, with no per-launch work on the host beyond the enqueue.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "kernel.hpp"

namespace accel {

class Plan {
 public:
  explicit Plan(const Queue& queue);

  void add_input(const Buffer& buffer) { inputs_.push_back(buffer); }
  void add_output(const Buffer& buffer) { outputs_.push_back(buffer); }
  void add_launch(const Kernel& kernel, std::vector<size_t> global, std::vector<size_t> local);

  const std::vector<Buffer>& inputs() const { return inputs_; }
  const std::vector<Buffer>& outputs() const { return outputs_; }
  size_t num_launches() const { return steps_.size(); }

  // Host pointers in add_input/add_output order, each of its buffer's size (the caller
  // checks). Safe to call without the Python GIL.
  void run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs);

  // Per-launch (kernel name, device nanoseconds) of the last run when profiling is on.
  void set_profiling(bool on) { profiling_ = on; }
  const std::vector<std::pair<std::string, cl_ulong>>& last_profile() const { return profile_; }

 private:
  struct Step {
    Kernel kernel;
    std::vector<size_t> global;
    std::vector<size_t> local;
  };
  Queue queue_;
  std::vector<Buffer> inputs_;
  std::vector<Buffer> outputs_;
  std::vector<Step> steps_;
  bool profiling_ = false;
  std::vector<std::pair<std::string, cl_ulong>> profile_;
};

}  // namespace accel
