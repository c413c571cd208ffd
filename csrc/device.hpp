// Platform and device enumeration. Devices are named by (platform index, device index),
// which is stable within a process; the Python layer does the selecting.
#pragma once
#include <string>
#include <vector>

#include "opencl.hpp"

namespace accel {

struct DeviceInfo {
  int platform_index = 0;
  int device_index = 0;
  std::string platform;
  std::string platform_version;
  std::string vendor;
  std::string name;
  std::string version;
  std::string driver_version;
  std::string kind;  // "fpga", "fpga-emulator", "cpu", "gpu", "simulator" (oclgrind) or "other"
  std::string extensions;
  cl_uint compute_units = 0;
  cl_ulong global_mem_bytes = 0;
  cl_ulong local_mem_bytes = 0;
  cl_ulong max_alloc_bytes = 0;
  size_t max_work_group_size = 0;
  cl_platform_id platform_id = nullptr;
  cl_device_id device_id = nullptr;
};

// Every device of every platform the ICD loader finds; empty when there are none.
std::vector<DeviceInfo> enumerate_devices();

// The device at (platform_index, device_index); throws a Device error when absent.
DeviceInfo device_at(int platform_index, int device_index);

// The enumerated device with this handle (a context made elsewhere, e.g. by pyopencl, on
// the same ICD platforms); throws a Device error for one accel does not list (a sub-device).
DeviceInfo device_of(cl_device_id id);

}  // namespace accel
