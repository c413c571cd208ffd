// A context on one device, and in-order command queues on it (profiling on, so every
// launch can be timed from its event).
#pragma once
#include <utility>

#include "device.hpp"
#include "event.hpp"
#include "opencl.hpp"

namespace accel {

class Context {
 public:
  explicit Context(const DeviceInfo& device);
  // An existing context (made by another library, e.g. pyopencl) used on `device`, one of
  // its devices: retained here and released when the last copy goes, so both owners may
  // drop it in any order.
  static Context wrap(cl_context context, cl_device_id device);
  const DeviceInfo& device() const { return device_; }
  cl_context get() const { return context_.get(); }
  // The driver's CL_CONTEXT_REFERENCE_COUNT (for leak checks).
  cl_uint reference_count() const;

 private:
  Context(DeviceInfo device, ClRef<cl_context> context)
      : device_(std::move(device)), context_(std::move(context)) {}
  DeviceInfo device_;
  ClRef<cl_context> context_;
};

class Queue {
 public:
  explicit Queue(const Context& context);
  // An existing queue of `context` on its device (retained like Context::wrap). It must
  // be in order: accel's launches rely on it. Without CL_QUEUE_PROFILING_ENABLE, events
  // have no times.
  static Queue wrap(const Context& context, cl_command_queue queue);
  cl_command_queue get() const { return queue_.get(); }
  cl_command_queue_properties properties() const;
  const ClRef<cl_command_queue>& ref() const { return queue_; }
  const Context& context() const { return context_; }
  // Waits for every command enqueued so far; timeout_s > 0 as in Event::wait.
  void finish(double timeout_s = 0) const;
  void flush() const;

 private:
  Queue(Context context, ClRef<cl_command_queue> queue)
      : context_(std::move(context)), queue_(std::move(queue)) {}
  Context context_;
  ClRef<cl_command_queue> queue_;
};

}  // namespace accel
