// A context on one device, and in-order command queues on it (profiling on, so every
// launch can be timed from its event).
#pragma once
#include "device.hpp"
#include "event.hpp"
#include "opencl.hpp"

namespace accel {

class Context {
 public:
  explicit Context(const DeviceInfo& device);
  const DeviceInfo& device() const { return device_; }
  cl_context get() const { return context_.get(); }

 private:
  DeviceInfo device_;
  ClRef<cl_context> context_;
};

class Queue {
 public:
  explicit Queue(const Context& context);
  cl_command_queue get() const { return queue_.get(); }
  const ClRef<cl_command_queue>& ref() const { return queue_; }
  const Context& context() const { return context_; }
  // Waits for every command enqueued so far; timeout_s > 0 as in Event::wait.
  void finish(double timeout_s = 0) const;
  void flush() const;

 private:
  Context context_;
  ClRef<cl_command_queue> queue_;
};

}  // namespace accel
