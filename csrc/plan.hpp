// A fixed sequence of kernel launches over buffers allocated once. Arguments are bound
// when a launch is added; run() is one upload per input, the launches, one download per
// output, and a wait, with no per-launch work on the host beyond the enqueue.
//
// Launches are grouped in stages. A stage of one launch is the usual case. A concurrent
// stage runs its launches at the same time, the i-th on the plan's i-th queue: FPGA
// pipelines whose kernels talk through channels must all be running at once. Each stage
// starts when the previous one has ended.
#pragma once
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "kernel.hpp"

namespace accel {

struct Launch {
  Kernel kernel;
  std::vector<size_t> global;
  std::vector<size_t> local;
};

class Plan {
 public:
  explicit Plan(const Queue& queue);

  void add_input(const Buffer& buffer) { inputs_.push_back(buffer); }
  void add_output(const Buffer& buffer) { outputs_.push_back(buffer); }
  void add_launch(const Kernel& kernel, std::vector<size_t> global, std::vector<size_t> local);
  void add_concurrent(std::vector<Launch> launches);

  const std::vector<Buffer>& inputs() const { return inputs_; }
  const std::vector<Buffer>& outputs() const { return outputs_; }
  size_t num_launches() const;
  size_t num_queues() const { return queues_.size(); }

  // Host pointers in add_input/add_output order, each of its buffer's size (the caller
  // checks). Safe to call without the Python GIL, from several threads (runs take turns).
  // Copies are blocking and outputs are read only once every launch has finished, so no
  // copy to or from host memory is left queued when run() returns or throws. After a
  // timeout the plan refuses to run again: its kernels may still be running.
  void run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs);

  // Per-launch (kernel name, device nanoseconds) of the last run when profiling is on.
  void set_profiling(bool on) { profiling_ = on; }
  // run() throws a Launch error instead of waiting longer than this (0: no limit).
  void set_timeout(double seconds) {
    check_timeout(seconds);
    timeout_s_ = seconds;
  }
  const std::vector<std::pair<std::string, cl_ulong>>& last_profile() const { return profile_; }

 private:
  void make_resident(const std::vector<Launch>& launches);
  std::vector<Queue> queues_;  // queues_[0] also does the copies
  std::vector<Buffer> inputs_;
  std::vector<Buffer> outputs_;
  std::vector<std::vector<Launch>> stages_;
  bool profiling_ = false;
  double timeout_s_ = 0;
  bool timed_out_ = false;
  std::mutex mutex_;
  std::vector<std::pair<std::string, cl_ulong>> profile_;
};

}  // namespace accel
