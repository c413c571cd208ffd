#include "kernel.hpp"

#include "errors.hpp"

namespace accel {
namespace {

std::string sizes(const std::vector<size_t>& values) {
  std::string text = "{";
  for (size_t i = 0; i < values.size(); ++i) text += (i ? "," : "") + std::to_string(values[i]);
  return text + "}";
}

}  // namespace

Kernel::Kernel(const Program& program, const std::string& name) : program_(program), name_(name) {
  cl_int status = CL_SUCCESS;
  cl_kernel kernel = clCreateKernel(program.get(), name.c_str(), &status);
  check(status, "clCreateKernel", "kernel '" + name + "'");
  kernel_ = adopt(kernel, clReleaseKernel);
}

cl_uint Kernel::num_args() const {
  cl_uint count = 0;
  ACCEL_CL(clGetKernelInfo, kernel_.get(), CL_KERNEL_NUM_ARGS, sizeof(count), &count, nullptr);
  return count;
}

std::string Kernel::where(cl_uint index) const {
  return "argument " + std::to_string(index) + " of kernel '" + name_ + "'";
}

void Kernel::set_buffer(cl_uint index, const Buffer& buffer) {
  cl_mem mem = buffer.get();
  check(clSetKernelArg(kernel_.get(), index, sizeof(mem), &mem), "clSetKernelArg", where(index));
  bound_.insert_or_assign(index, buffer);
}

void Kernel::set_scalar(cl_uint index, const void* value, size_t size) {
  check(clSetKernelArg(kernel_.get(), index, size, value), "clSetKernelArg", where(index));
  bound_.erase(index);
}

void Kernel::set_local(cl_uint index, size_t nbytes) {
  check(clSetKernelArg(kernel_.get(), index, nbytes, nullptr), "clSetKernelArg", where(index));
  bound_.erase(index);
}

Event Kernel::launch(const Queue& queue, const std::vector<size_t>& global,
                     const std::vector<size_t>& local, const std::vector<Event>& wait_for) const {
  if (global.empty() || global.size() > 3 || (!local.empty() && local.size() != global.size())) {
    throw Error(ErrorClass::Launch, "clEnqueueNDRangeKernel", CL_INVALID_WORK_DIMENSION,
                "kernel '" + name_ + "': global " + sizes(global) + " and local " + sizes(local) +
                    " must have 1 to 3 matching dimensions");
  }
  const std::vector<cl_event> waits = raw_events(wait_for);
  cl_event event = nullptr;
  cl_int status = clEnqueueNDRangeKernel(
      queue.get(), kernel_.get(), static_cast<cl_uint>(global.size()), nullptr, global.data(),
      local.empty() ? nullptr : local.data(), static_cast<cl_uint>(waits.size()),
      waits.empty() ? nullptr : waits.data(), &event);
  check(status, "clEnqueueNDRangeKernel",
        "kernel '" + name_ + "' global " + sizes(global) + " local " + sizes(local));
  return Event(event, name_);
}

}  // namespace accel
