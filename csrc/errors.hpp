// Errors of the runtime. Every OpenCL call goes through ACCEL_CL (or accel::check for calls
// that report through an errcode_ret argument), so a failure carries the routine's name and
// the CL error code, and is sorted into the class Python sees (accel.DeviceError, ...).
#pragma once
#include <stdexcept>
#include <string>

#include "opencl.hpp"

namespace accel {

enum class ErrorClass { Device, Build, Launch, Memory };

// Not an OpenCL code: a wait that ran past its timeout (a channel deadlock, a kernel that
// never ends). Reported as a Launch error.
constexpr cl_int kTimeoutCode = -10000;

class Error : public std::runtime_error {
 public:
  Error(ErrorClass error_class, std::string routine, cl_int code, const std::string& message,
        std::string log = {});
  ErrorClass error_class() const { return error_class_; }
  const std::string& routine() const { return routine_; }
  cl_int code() const { return code_; }
  const std::string& log() const { return log_; }

 private:
  ErrorClass error_class_;
  std::string routine_;
  cl_int code_;
  std::string log_;
};

// "CL_OUT_OF_RESOURCES" for -5, "CL_UNKNOWN_ERROR" for codes the spec does not name.
const char* error_name(cl_int code);

// Which Python class a CL error code belongs to.
ErrorClass classify(cl_int code);

// Throws accel::Error when code is not CL_SUCCESS. context is added to the message.
void check(cl_int code, const char* routine, const std::string& context = {});

}  // namespace accel

#define ACCEL_CL(routine, ...) ::accel::check((routine)(__VA_ARGS__), #routine)
