// A context on one device, and in-order command queues on it (profiling on, so every
// launch can be timed from its event).
#pragma once
#include "device.hpp"
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
  const Context& context() const { return context_; }
  void finish() const;

 private:
  Context context_;
  ClRef<cl_command_queue> queue_;
};

}  // namespace accel
