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

Kernel::Kernel(const Program& program, const std::string& name)
    : program_(program), name_(name), state_(std::make_shared<State>()) {
  cl_int status = CL_SUCCESS;
  cl_kernel kernel = clCreateKernel(program.get(), name.c_str(), &status);
  check(status, "clCreateKernel", "kernel '" + name + "'");
  state_->kernel = adopt(kernel, clReleaseKernel);
  cl_uint count = 0;
  ACCEL_CL(clGetKernelInfo, kernel, CL_KERNEL_NUM_ARGS, sizeof(count), &count, nullptr);
  for (cl_uint i = 0; i < count; ++i) {
    cl_kernel_arg_address_qualifier qualifier = 0;
    if (clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof(qualifier),
                           &qualifier, nullptr) != CL_SUCCESS) {
      state_->spaces = program.recorded_arg_spaces(name);
      if (state_->spaces.size() != count) state_->spaces.assign(count, ArgSpace::Unknown);
      break;
    }
    state_->spaces.push_back(qualifier == CL_KERNEL_ARG_ADDRESS_GLOBAL     ? ArgSpace::Global
                             : qualifier == CL_KERNEL_ARG_ADDRESS_CONSTANT ? ArgSpace::Constant
                             : qualifier == CL_KERNEL_ARG_ADDRESS_LOCAL    ? ArgSpace::Local
                                                                           : ArgSpace::Private);
  }
}

ArgSpace Kernel::arg_space(cl_uint index) const {
  return index < state_->spaces.size() ? state_->spaces[index] : ArgSpace::Unknown;
}

std::string Kernel::where(cl_uint index) const {
  return "argument " + std::to_string(index) + " of kernel '" + name_ + "'";
}

void Kernel::check_settable(cl_uint index) const {
  if (state_->frozen) {
    throw std::logic_error("kernel '" + name_ + "' belongs to a Plan; its arguments are fixed " +
                           "(make a new Kernel to launch it with others)");
  }
  if (index >= state_->spaces.size()) {
    throw std::out_of_range(where(index) + ": the kernel takes " +
                            std::to_string(state_->spaces.size()) + " arguments");
  }
}

void Kernel::set_buffer(cl_uint index, const Buffer& buffer) {
  check_settable(index);
  if (buffer.context() != program_.context().get()) {
    throw std::invalid_argument(where(index) + ": the buffer belongs to another context");
  }
  cl_mem mem = buffer.get();
  check(clSetKernelArg(state_->kernel.get(), index, sizeof(mem), &mem), "clSetKernelArg",
        where(index));
  state_->bound.insert_or_assign(index, buffer);
}

std::vector<Buffer> Kernel::buffers() const {
  std::vector<Buffer> out;
  for (const auto& entry : state_->bound) out.push_back(entry.second);
  return out;
}

void Kernel::set_scalar(cl_uint index, const void* value, size_t size) {
  check_settable(index);
  check(clSetKernelArg(state_->kernel.get(), index, size, value), "clSetKernelArg", where(index));
  state_->bound.erase(index);
}

void Kernel::set_local(cl_uint index, size_t nbytes) {
  check_settable(index);
  check(clSetKernelArg(state_->kernel.get(), index, nbytes, nullptr), "clSetKernelArg",
        where(index));
  state_->bound.erase(index);
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
      queue.get(), state_->kernel.get(), static_cast<cl_uint>(global.size()), nullptr, global.data(),
      local.empty() ? nullptr : local.data(), static_cast<cl_uint>(waits.size()),
      waits.empty() ? nullptr : waits.data(), &event);
  check(status, "clEnqueueNDRangeKernel",
        "kernel '" + name_ + "' global " + sizes(global) + " local " + sizes(local));
  return Event(event, name_, queue.ref());
}

}  // namespace accel
