// A finished-or-pending command and its profiling times (nanoseconds, device clock).
#pragma once
#include <string>
#include <vector>

#include "opencl.hpp"

namespace accel {

class Event {
 public:
  // Takes ownership of the event; holds the queue it was enqueued on, which a wait with a
  // timeout flushes (an event does not keep its queue alive by itself).
  Event(cl_event event, std::string label, ClRef<cl_command_queue> queue);
  // Blocks until the command completes. With timeout_s > 0, throws a Launch error with
  // code kTimeoutCode instead of blocking longer (the command itself is not cancelled).
  void wait(double timeout_s = 0) const;
  cl_ulong queued_ns() const { return profile(CL_PROFILING_COMMAND_QUEUED); }
  cl_ulong start_ns() const { return profile(CL_PROFILING_COMMAND_START); }
  cl_ulong end_ns() const { return profile(CL_PROFILING_COMMAND_END); }
  // end - start, after waiting for the command to finish.
  cl_ulong duration_ns() const;
  const std::string& label() const { return label_; }
  cl_event get() const { return event_.get(); }

 private:
  cl_ulong profile(cl_profiling_info what) const;
  ClRef<cl_event> event_;
  std::string label_;
  ClRef<cl_command_queue> queue_;
};

// std::invalid_argument unless timeout_s is a finite number of seconds >= 0.
void check_timeout(double timeout_s);

// The raw handles of events, for an OpenCL wait list.
std::vector<cl_event> raw_events(const std::vector<Event>& events);

}  // namespace accel
