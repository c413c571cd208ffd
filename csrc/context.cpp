#include "context.hpp"

#include <algorithm>
#include <vector>

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

Context Context::wrap(cl_context context, cl_device_id device) {
  if (context == nullptr || device == nullptr) {
    throw Error(ErrorClass::Device, "Context::wrap", CL_INVALID_CONTEXT,
                "cannot wrap a null OpenCL context or device");
  }
  size_t size = 0;
  ACCEL_CL(clGetContextInfo, context, CL_CONTEXT_DEVICES, 0, nullptr, &size);
  std::vector<cl_device_id> devices(size / sizeof(cl_device_id));
  ACCEL_CL(clGetContextInfo, context, CL_CONTEXT_DEVICES, size, devices.data(), nullptr);
  if (std::find(devices.begin(), devices.end(), device) == devices.end()) {
    throw Error(ErrorClass::Device, "clGetContextInfo", CL_INVALID_DEVICE,
                "the device is not one of the context's devices");
  }
  DeviceInfo info = device_of(device);
  ACCEL_CL(clRetainContext, context);
  return Context(std::move(info), adopt(context, clReleaseContext));
}

cl_uint Context::reference_count() const {
  cl_uint count = 0;
  ACCEL_CL(clGetContextInfo, context_.get(), CL_CONTEXT_REFERENCE_COUNT, sizeof(count), &count,
           nullptr);
  return count;
}

Queue::Queue(const Context& context) : context_(context) {
  cl_int status = CL_SUCCESS;
  cl_command_queue queue = clCreateCommandQueue(context.get(), context.device().device_id,
                                                CL_QUEUE_PROFILING_ENABLE, &status);
  check(status, "clCreateCommandQueue", context.device().name);
  queue_ = adopt(queue, clReleaseCommandQueue);
}

Queue Queue::wrap(const Context& context, cl_command_queue queue) {
  if (queue == nullptr) {
    throw Error(ErrorClass::Device, "Queue::wrap", CL_INVALID_COMMAND_QUEUE,
                "cannot wrap a null OpenCL command queue");
  }
  cl_context owner = nullptr;
  ACCEL_CL(clGetCommandQueueInfo, queue, CL_QUEUE_CONTEXT, sizeof(owner), &owner, nullptr);
  if (owner != context.get()) {
    throw Error(ErrorClass::Device, "clGetCommandQueueInfo", CL_INVALID_CONTEXT,
                "the command queue belongs to another OpenCL context");
  }
  cl_device_id device = nullptr;
  ACCEL_CL(clGetCommandQueueInfo, queue, CL_QUEUE_DEVICE, sizeof(device), &device, nullptr);
  if (device != context.device().device_id) {
    throw Error(ErrorClass::Device, "clGetCommandQueueInfo", CL_INVALID_DEVICE,
                "the command queue is on another device than " + context.device().name);
  }
  cl_command_queue_properties properties = 0;
  ACCEL_CL(clGetCommandQueueInfo, queue, CL_QUEUE_PROPERTIES, sizeof(properties), &properties,
           nullptr);
  if (properties & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) {
    throw Error(ErrorClass::Device, "clGetCommandQueueInfo", CL_INVALID_QUEUE_PROPERTIES,
                "the command queue executes out of order; accel needs an in-order queue");
  }
  ACCEL_CL(clRetainCommandQueue, queue);
  return Queue(context, adopt(queue, clReleaseCommandQueue));
}

cl_command_queue_properties Queue::properties() const {
  cl_command_queue_properties properties = 0;
  ACCEL_CL(clGetCommandQueueInfo, queue_.get(), CL_QUEUE_PROPERTIES, sizeof(properties),
           &properties, nullptr);
  return properties;
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
