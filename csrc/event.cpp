#include "event.hpp"

#include "errors.hpp"

namespace accel {

Event::Event(cl_event event, std::string label)
    : event_(adopt(event, clReleaseEvent)), label_(std::move(label)) {}

void Event::wait() const {
  cl_event event = event_.get();
  check(clWaitForEvents(1, &event), "clWaitForEvents", label_);
}

cl_ulong Event::profile(cl_profiling_info what) const {
  wait();
  cl_ulong value = 0;
  check(clGetEventProfilingInfo(event_.get(), what, sizeof(value), &value, nullptr),
        "clGetEventProfilingInfo", label_);
  return value;
}

cl_ulong Event::duration_ns() const {
  cl_ulong start = start_ns(), end = end_ns();
  return end > start ? end - start : 0;
}

}  // namespace accel
