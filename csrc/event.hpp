// A finished-or-pending command and its profiling times (nanoseconds, device clock).
#pragma once
#include <string>

#include "opencl.hpp"

namespace accel {

class Event {
 public:
  Event(cl_event event, std::string label);  // takes ownership
  void wait() const;
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
};

}  // namespace accel
