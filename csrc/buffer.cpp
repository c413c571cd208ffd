#include "buffer.hpp"

#include "errors.hpp"

namespace accel {

Buffer::Buffer(const Context& context, size_t nbytes) : nbytes_(nbytes), context_(context.get()) {
  if (nbytes == 0) {
    throw Error(ErrorClass::Memory, "clCreateBuffer", CL_INVALID_BUFFER_SIZE,
                "cannot allocate a zero-size device buffer");
  }
  cl_int status = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(context.get(), CL_MEM_READ_WRITE, nbytes, nullptr, &status);
  check(status, "clCreateBuffer", std::to_string(nbytes) + " bytes on " + context.device().name);
  mem_ = adopt(mem, clReleaseMemObject);
}

Buffer Buffer::wrap(cl_mem mem) {
  if (mem == nullptr) {
    throw Error(ErrorClass::Memory, "Buffer::wrap", CL_INVALID_MEM_OBJECT,
                "cannot wrap a null OpenCL memory object");
  }
  cl_mem_object_type type = 0;
  ACCEL_CL(clGetMemObjectInfo, mem, CL_MEM_TYPE, sizeof(type), &type, nullptr);
  if (type != CL_MEM_OBJECT_BUFFER) {
    throw Error(ErrorClass::Memory, "clGetMemObjectInfo", CL_INVALID_MEM_OBJECT,
                "the OpenCL memory object is an image or pipe, not a buffer");
  }
  size_t nbytes = 0;
  ACCEL_CL(clGetMemObjectInfo, mem, CL_MEM_SIZE, sizeof(nbytes), &nbytes, nullptr);
  cl_context context = nullptr;
  ACCEL_CL(clGetMemObjectInfo, mem, CL_MEM_CONTEXT, sizeof(context), &context, nullptr);
  ACCEL_CL(clRetainMemObject, mem);
  return Buffer(nbytes, context, adopt(mem, clReleaseMemObject));
}

Buffer Buffer::region(size_t offset, size_t nbytes) const {
  if (nbytes == 0 || offset > nbytes_ || nbytes > nbytes_ - offset) {
    throw Error(ErrorClass::Memory, "clCreateSubBuffer", CL_INVALID_VALUE,
                "region [" + std::to_string(offset) + ", " + std::to_string(offset + nbytes) +
                    ") is empty or outside the buffer's " + std::to_string(nbytes_) + " bytes");
  }
  cl_buffer_region region{offset, nbytes};
  cl_int status = CL_SUCCESS;
  cl_mem mem = clCreateSubBuffer(mem_.get(), CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION,
                                 &region, &status);
  check(status, "clCreateSubBuffer",
        std::to_string(nbytes) + " bytes at offset " + std::to_string(offset));
  return Buffer(nbytes, context_, adopt(mem, clReleaseMemObject));
}

void Buffer::check_size(size_t nbytes, const char* what) const {
  if (nbytes != nbytes_) {
    throw Error(ErrorClass::Memory, what, CL_INVALID_VALUE,
                std::string(what) + ": host array has " + std::to_string(nbytes) +
                    " bytes but the device buffer has " + std::to_string(nbytes_));
  }
}

Event Buffer::write(const Queue& queue, const void* host, size_t nbytes, bool blocking) const {
  check_size(nbytes, "clEnqueueWriteBuffer");
  cl_event event = nullptr;
  ACCEL_CL(clEnqueueWriteBuffer, queue.get(), mem_.get(), blocking ? CL_TRUE : CL_FALSE, 0,
           nbytes, host, 0, nullptr, &event);
  return Event(event, "write", queue.ref());
}

Event Buffer::read(const Queue& queue, void* host, size_t nbytes, bool blocking,
                   const std::vector<Event>& wait_for) const {
  check_size(nbytes, "clEnqueueReadBuffer");
  const std::vector<cl_event> waits = raw_events(wait_for);
  cl_event event = nullptr;
  ACCEL_CL(clEnqueueReadBuffer, queue.get(), mem_.get(), blocking ? CL_TRUE : CL_FALSE, 0, nbytes,
           host, static_cast<cl_uint>(waits.size()), waits.empty() ? nullptr : waits.data(),
           &event);
  return Event(event, "read", queue.ref());
}

}  // namespace accel
