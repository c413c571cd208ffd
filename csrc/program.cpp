#include "program.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "errors.hpp"

namespace accel {
namespace {

std::atomic<uint64_t> cache_hits{0};
std::atomic<uint64_t> cache_misses{0};

const char kCacheMagic[] = "accel-program-cache-v3\n";

std::string build_log(cl_program program, cl_device_id device) {
  size_t size = 0;
  if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size) !=
      CL_SUCCESS) {
    return "(no build log)";
  }
  std::string log(size, '\0');
  clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
  while (!log.empty() && (log.back() == '\0' || log.back() == '\n')) log.pop_back();
  return log;
}

// clBuildProgram, with the build log attached to any failure.
void build(cl_program program, const Context& context, const std::string& options) {
  cl_device_id device = context.device().device_id;
  cl_int status = clBuildProgram(program, 1, &device, options.c_str(), nullptr, nullptr);
  if (status == CL_SUCCESS) return;
  std::string log = build_log(program, device);
  throw Error(ErrorClass::Build, "clBuildProgram", status,
              std::string("clBuildProgram failed: ") + error_name(status) + " (" +
                  std::to_string(status) + ") on " + context.device().name + " with options '" +
                  options + "'\n--- build log ---\n" + log,
              log);
}

// The cache key names everything that changes the binary; it is stored whole in the entry
// and compared on load, so a hash collision can only cost a rebuild.
std::string cache_key(const Context& context, const std::string& source,
                      const std::string& options) {
  const DeviceInfo& d = context.device();
  // Intel's runtimes compile for the instruction set this variable names.
  const char* target = std::getenv("CL_CONFIG_CPU_TARGET_ARCH");
  return d.platform + "\n" + d.platform_version + "\n" + d.name + "\n" + d.driver_version +
         "\ntarget=" + (target ? target : "") + "\n" + options + "\n" + source;
}

uint64_t fnv1a(const std::string& text) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::filesystem::path cache_path(const std::string& dir, const std::string& key) {
  char name[32];
  std::snprintf(name, sizeof(name), "%016llx.bin", static_cast<unsigned long long>(fnv1a(key)));
  return std::filesystem::path(dir) / name;
}

bool read_cache(const std::filesystem::path& path, const std::string& key,
                std::vector<unsigned char>& binary, std::string& arg_table) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::string magic(sizeof(kCacheMagic) - 1, '\0');
  uint64_t key_size = 0, binary_size = 0, checksum = 0;
  in.read(magic.data(), magic.size());
  in.read(reinterpret_cast<char*>(&key_size), sizeof(key_size));
  if (!in || magic != kCacheMagic || key_size != key.size()) return false;
  std::string stored_key(key_size, '\0');
  in.read(stored_key.data(), key_size);
  in.read(reinterpret_cast<char*>(&binary_size), sizeof(binary_size));
  in.read(reinterpret_cast<char*>(&checksum), sizeof(checksum));
  if (!in || stored_key != key || binary_size == 0) return false;
  const std::streampos payload = in.tellg();
  in.seekg(0, std::ios::end);
  const uint64_t remaining = static_cast<uint64_t>(in.tellg() - payload);
  in.seekg(payload);
  if (!in || remaining < binary_size + sizeof(uint64_t)) return false;
  binary.resize(binary_size);
  in.read(reinterpret_cast<char*>(binary.data()), binary_size);
  uint64_t table_size = 0;
  in.read(reinterpret_cast<char*>(&table_size), sizeof(table_size));
  if (!in || remaining != binary_size + sizeof(table_size) + table_size) return false;
  arg_table.assign(table_size, '\0');
  in.read(arg_table.data(), table_size);
  // A damaged binary can crash a vendor's loader, so it is checked before anyone sees it.
  return in && fnv1a(std::string(binary.begin(), binary.end()) + arg_table) == checksum;
}

// Written to a temporary name and renamed, so a reader never sees half an entry.
void write_cache(const std::filesystem::path& path, const std::string& key,
                 const std::vector<unsigned char>& binary, const std::string& arg_table) {
  std::error_code ignored;
  std::filesystem::create_directories(path.parent_path(), ignored);
  std::filesystem::path tmp = path;
  tmp += ".tmp" + std::to_string(reinterpret_cast<uintptr_t>(&binary));
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) return;  // an unwritable cache only costs rebuilds
    uint64_t key_size = key.size(), binary_size = binary.size();
    uint64_t table_size = arg_table.size();
    uint64_t checksum = fnv1a(std::string(binary.begin(), binary.end()) + arg_table);
    out.write(kCacheMagic, sizeof(kCacheMagic) - 1);
    out.write(reinterpret_cast<const char*>(&key_size), sizeof(key_size));
    out.write(key.data(), key.size());
    out.write(reinterpret_cast<const char*>(&binary_size), sizeof(binary_size));
    out.write(reinterpret_cast<const char*>(&checksum), sizeof(checksum));
    out.write(reinterpret_cast<const char*>(binary.data()), binary.size());
    out.write(reinterpret_cast<const char*>(&table_size), sizeof(table_size));
    out.write(arg_table.data(), arg_table.size());
    out.close();  // flush now, so a failed write is seen before the rename
    if (!out) {
      std::filesystem::remove(tmp, ignored);
      return;
    }
  }
  std::filesystem::rename(tmp, path, ignored);
  if (ignored) std::filesystem::remove(tmp, ignored);
}

// "name=GGPL\n" for every kernel of a program built from source.
std::string query_arg_table(cl_program program, const std::vector<std::string>& names) {
  std::string table;
  for (const std::string& name : names) {
    cl_int status = CL_SUCCESS;
    cl_kernel raw = clCreateKernel(program, name.c_str(), &status);
    if (status != CL_SUCCESS) return {};
    ClRef<cl_kernel> kernel = adopt(raw, clReleaseKernel);
    cl_uint count = 0;
    clGetKernelInfo(raw, CL_KERNEL_NUM_ARGS, sizeof(count), &count, nullptr);
    std::string letters;
    for (cl_uint i = 0; i < count; ++i) {
      cl_kernel_arg_address_qualifier q = 0;
      if (clGetKernelArgInfo(raw, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof(q), &q, nullptr) !=
          CL_SUCCESS) {
        return {};
      }
      letters += q == CL_KERNEL_ARG_ADDRESS_GLOBAL     ? 'G'
                 : q == CL_KERNEL_ARG_ADDRESS_CONSTANT ? 'C'
                 : q == CL_KERNEL_ARG_ADDRESS_LOCAL    ? 'L'
                                                       : 'P';
    }
    table += name + "=" + letters + "\n";
  }
  return table;
}

ClRef<cl_program> create_with_binary(const Context& context,
                                     const std::vector<unsigned char>& binary) {
  cl_device_id device = context.device().device_id;
  const unsigned char* data = binary.data();
  size_t size = binary.size();
  cl_int binary_status = CL_SUCCESS, status = CL_SUCCESS;
  cl_program program = clCreateProgramWithBinary(context.get(), 1, &device, &size, &data,
                                                 &binary_status, &status);
  check(status, "clCreateProgramWithBinary", context.device().name);
  ClRef<cl_program> owned = adopt(program, clReleaseProgram);
  check(binary_status, "clCreateProgramWithBinary", "binary rejected by " + context.device().name);
  return owned;
}

}  // namespace

Program::Program(Context context, ClRef<cl_program> program, bool from_cache)
    : context_(std::move(context)), program_(std::move(program)), from_cache_(from_cache) {}

Program Program::from_source(const Context& context, const std::string& source,
                             const std::string& user_options, const std::string& cache_dir) {
  // Argument information lets a Kernel check what is bound to each argument.
  const std::string options = user_options + " -cl-kernel-arg-info";
  const std::string key = cache_key(context, source, options);
  if (!cache_dir.empty()) {
    std::vector<unsigned char> binary;
    std::string arg_table;
    if (read_cache(cache_path(cache_dir, key), key, binary, arg_table)) {
      try {
        Program program = from_binary(context, binary, options);
        program.from_cache_ = true;
        program.arg_table_ = arg_table;
        ++cache_hits;
        return program;
      } catch (const Error&) {
        // A stale or foreign binary: fall through and rebuild from source.
      }
    }
  }
  const char* text = source.c_str();
  size_t length = source.size();
  cl_int status = CL_SUCCESS;
  cl_program raw = clCreateProgramWithSource(context.get(), 1, &text, &length, &status);
  check(status, "clCreateProgramWithSource");
  Program program(context, adopt(raw, clReleaseProgram), false);
  build(program.get(), context, options);
  program.arg_table_ = query_arg_table(program.get(), program.kernel_names());
  if (!cache_dir.empty()) {
    ++cache_misses;
    write_cache(cache_path(cache_dir, key), key, program.binary(), program.arg_table_);
  }
  return program;
}

Program Program::from_binary(const Context& context, const std::vector<unsigned char>& binary,
                             const std::string& options) {
  if (binary.empty()) {
    throw Error(ErrorClass::Build, "clCreateProgramWithBinary", CL_INVALID_BINARY,
                "empty program binary");
  }
  Program program(context, create_with_binary(context, binary), false);
  build(program.get(), context, options);
  return program;
}

std::vector<unsigned char> Program::binary() const {
  size_t size = 0;
  ACCEL_CL(clGetProgramInfo, program_.get(), CL_PROGRAM_BINARY_SIZES, sizeof(size), &size,
           nullptr);
  std::vector<unsigned char> binary(size);
  unsigned char* data = binary.data();
  ACCEL_CL(clGetProgramInfo, program_.get(), CL_PROGRAM_BINARIES, sizeof(data), &data, nullptr);
  return binary;
}

std::vector<std::string> Program::kernel_names() const {
  size_t size = 0;
  ACCEL_CL(clGetProgramInfo, program_.get(), CL_PROGRAM_KERNEL_NAMES, 0, nullptr, &size);
  std::string names(size, '\0');
  ACCEL_CL(clGetProgramInfo, program_.get(), CL_PROGRAM_KERNEL_NAMES, size, names.data(),
           nullptr);
  std::vector<std::string> result;
  std::stringstream stream(names.c_str());
  for (std::string name; std::getline(stream, name, ';');) {
    if (!name.empty()) result.push_back(name);
  }
  return result;
}

std::vector<ArgSpace> Program::recorded_arg_spaces(const std::string& kernel) const {
  std::stringstream lines(arg_table_);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(kernel + "=", 0) != 0) continue;
    std::vector<ArgSpace> spaces;
    for (char c : line.substr(kernel.size() + 1)) {
      spaces.push_back(c == 'G'   ? ArgSpace::Global
                       : c == 'C' ? ArgSpace::Constant
                       : c == 'L' ? ArgSpace::Local
                                  : ArgSpace::Private);
    }
    return spaces;
  }
  return {};
}

ProgramCacheStats program_cache_stats() { return {cache_hits.load(), cache_misses.load()}; }

}  // namespace accel
