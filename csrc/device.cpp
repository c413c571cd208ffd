#include "device.hpp"

#include "errors.hpp"

namespace accel {
namespace {

std::string platform_string(cl_platform_id id, cl_platform_info what) {
  size_t size = 0;
  ACCEL_CL(clGetPlatformInfo, id, what, 0, nullptr, &size);
  std::string value(size, '\0');
  ACCEL_CL(clGetPlatformInfo, id, what, size, value.data(), nullptr);
  while (!value.empty() && value.back() == '\0') value.pop_back();
  return value;
}

std::string device_string(cl_device_id id, cl_device_info what) {
  size_t size = 0;
  ACCEL_CL(clGetDeviceInfo, id, what, 0, nullptr, &size);
  std::string value(size, '\0');
  ACCEL_CL(clGetDeviceInfo, id, what, size, value.data(), nullptr);
  while (!value.empty() && value.back() == '\0') value.pop_back();
  return value;
}

template <typename T>
T device_value(cl_device_id id, cl_device_info what) {
  T value{};
  ACCEL_CL(clGetDeviceInfo, id, what, sizeof(T), &value, nullptr);
  return value;
}

std::string kind_of(cl_device_type type, const std::string& platform, const std::string& name) {
  // oclgrind's simulated device calls itself an accelerator; it is a checking tool.
  if (platform.find("Oclgrind") != std::string::npos) return "simulator";
  if (type & CL_DEVICE_TYPE_ACCELERATOR) {
    bool emulated = platform.find("Emulation") != std::string::npos ||
                    name.find("Emulation") != std::string::npos;
    return emulated ? "fpga-emulator" : "fpga";
  }
  if (type & CL_DEVICE_TYPE_GPU) return "gpu";
  if (type & CL_DEVICE_TYPE_CPU) return "cpu";
  return "other";
}

}  // namespace

std::vector<DeviceInfo> enumerate_devices() {
  cl_uint num_platforms = 0;
  cl_int status = clGetPlatformIDs(0, nullptr, &num_platforms);
  if (status == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || num_platforms == 0) return {};
  check(status, "clGetPlatformIDs");
  std::vector<cl_platform_id> platforms(num_platforms);
  ACCEL_CL(clGetPlatformIDs, num_platforms, platforms.data(), nullptr);

  std::vector<DeviceInfo> devices;
  for (cl_uint p = 0; p < num_platforms; ++p) {
    cl_uint num_devices = 0;
    status = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, nullptr, &num_devices);
    if (status == CL_DEVICE_NOT_FOUND || num_devices == 0) continue;
    check(status, "clGetDeviceIDs");
    std::vector<cl_device_id> ids(num_devices);
    ACCEL_CL(clGetDeviceIDs, platforms[p], CL_DEVICE_TYPE_ALL, num_devices, ids.data(), nullptr);
    for (cl_uint d = 0; d < num_devices; ++d) {
      DeviceInfo info;
      info.platform_index = static_cast<int>(p);
      info.device_index = static_cast<int>(d);
      info.platform_id = platforms[p];
      info.device_id = ids[d];
      info.platform = platform_string(platforms[p], CL_PLATFORM_NAME);
      info.platform_version = platform_string(platforms[p], CL_PLATFORM_VERSION);
      info.name = device_string(ids[d], CL_DEVICE_NAME);
      info.vendor = device_string(ids[d], CL_DEVICE_VENDOR);
      info.version = device_string(ids[d], CL_DEVICE_VERSION);
      info.driver_version = device_string(ids[d], CL_DRIVER_VERSION);
      info.extensions = device_string(ids[d], CL_DEVICE_EXTENSIONS);
      info.kind = kind_of(device_value<cl_device_type>(ids[d], CL_DEVICE_TYPE), info.platform,
                          info.name);
      info.compute_units = device_value<cl_uint>(ids[d], CL_DEVICE_MAX_COMPUTE_UNITS);
      info.global_mem_bytes = device_value<cl_ulong>(ids[d], CL_DEVICE_GLOBAL_MEM_SIZE);
      info.local_mem_bytes = device_value<cl_ulong>(ids[d], CL_DEVICE_LOCAL_MEM_SIZE);
      info.max_alloc_bytes = device_value<cl_ulong>(ids[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE);
      info.max_work_group_size = device_value<size_t>(ids[d], CL_DEVICE_MAX_WORK_GROUP_SIZE);
      devices.push_back(std::move(info));
    }
  }
  return devices;
}

DeviceInfo device_at(int platform_index, int device_index) {
  for (auto& info : enumerate_devices()) {
    if (info.platform_index == platform_index && info.device_index == device_index) return info;
  }
  throw Error(ErrorClass::Device, "clGetDeviceIDs", CL_DEVICE_NOT_FOUND,
              "no OpenCL device at " + std::to_string(platform_index) + ":" +
                  std::to_string(device_index));
}

DeviceInfo device_of(cl_device_id id) {
  for (auto& info : enumerate_devices()) {
    if (info.device_id == id) return info;
  }
  throw Error(ErrorClass::Device, "clGetDeviceIDs", CL_INVALID_DEVICE,
              "the OpenCL device is not one of the devices accel enumerates (a sub-device, or a "
              "platform the ICD loader does not list)");
}

}  // namespace accel
