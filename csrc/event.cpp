#include "event.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <chrono>
#include <thread>

#include "errors.hpp"

namespace accel {

Event::Event(cl_event event, std::string label, ClRef<cl_command_queue> queue)
    : event_(adopt(event, clReleaseEvent)), label_(std::move(label)), queue_(std::move(queue)) {}

void check_timeout(double timeout_s) {
  if (!std::isfinite(timeout_s) || timeout_s < 0 || timeout_s > 1e7) {
    throw std::invalid_argument("timeout must be a number of seconds in [0, 1e7], got " +
                                std::to_string(timeout_s));
  }
}

void Event::wait(double timeout_s) const {
  check_timeout(timeout_s);
  cl_event event = event_.get();
  if (timeout_s == 0) {
    check(clWaitForEvents(1, &event), "clWaitForEvents", label_);
    return;
  }
  // Make sure the command was submitted, then poll: clWaitForEvents has no timeout.
  if (queue_) check(clFlush(queue_.get()), "clFlush", label_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    cl_int status = CL_QUEUED;
    check(clGetEventInfo(event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(status), &status,
                         nullptr),
          "clGetEventInfo", label_);
    if (status < 0) check(status, "clWaitForEvents", "command '" + label_ + "' failed");
    if (status == CL_COMPLETE) return;
    if (std::chrono::steady_clock::now() > deadline) {
      throw Error(ErrorClass::Launch, "clWaitForEvents", kTimeoutCode,
                  "timed out after " + std::to_string(timeout_s) + " s waiting for '" + label_ +
                      "' (a channel deadlock, or a kernel that never finishes)");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

cl_ulong Event::profile(cl_profiling_info what) const {
  wait();
  cl_ulong value = 0;
  check(clGetEventProfilingInfo(event_.get(), what, sizeof(value), &value, nullptr),
        "clGetEventProfilingInfo", label_);
  return value;
}

std::vector<cl_event> raw_events(const std::vector<Event>& events) {
  std::vector<cl_event> raw;
  raw.reserve(events.size());
  for (const Event& event : events) raw.push_back(event.get());
  return raw;
}

cl_ulong Event::duration_ns() const {
  cl_ulong start = start_ns(), end = end_ns();
  return end > start ? end - start : 0;
}

}  // namespace accel
