#include "context.hpp"

#include "errors.hpp"

namespace accel {

Context::Context(const DeviceInfo& device) : device_(device) {
  cl_context_properties properties[] = {
      CL_CONTEXT_PLATFORM, reinterpret_cast<cl_context_properties>(device.platform_id), 0};
  cl_int status = CL_SUCCESS;
  cl_context context =
      clCreateContext(properties, 1, &device.device_id, nullptr, nullptr, &status);
  check(status, "clCreateContext", device.platform + " / " + device.name);
  context_ = adopt(context, clReleaseContext);
}

Queue::Queue(const Context& context) : context_(context) {
  cl_int status = CL_SUCCESS;
  cl_command_queue queue = clCreateCommandQueue(context.get(), context.device().device_id,
                                                CL_QUEUE_PROFILING_ENABLE, &status);
  check(status, "clCreateCommandQueue", context.device().name);
  queue_ = adopt(queue, clReleaseCommandQueue);
}

void Queue::flush() const { ACCEL_CL(clFlush, queue_.get()); }

void Queue::finish(double timeout_s) const {
  check_timeout(timeout_s);
  if (timeout_s == 0) {
    ACCEL_CL(clFinish, queue_.get());
    return;
  }
  cl_event marker = nullptr;
  ACCEL_CL(clEnqueueMarkerWithWaitList, queue_.get(), 0, nullptr, &marker);
  Event(marker, "queue finish", queue_).wait(timeout_s);
}

}  // namespace accel
