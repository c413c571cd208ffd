// OpenCL programs: built from source (with -D options), from a cached binary, or from a
// prebuilt binary such as an FPGA board's .aocx. A failed build throws a Build error whose
// message and log() carry the compiler's build log.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "context.hpp"

namespace accel {

// Where a kernel argument lives, from clGetKernelArgInfo; Unknown where the program carries
// no argument information (e.g. a prebuilt FPGA bitstream).
enum class ArgSpace { Unknown, Global, Constant, Local, Private };

class Program {
 public:
  // Source build. With a non-empty cache_dir the binary is looked up by (device, driver,
  // options, source) first and stored after a successful build.
  static Program from_source(const Context& context, const std::string& source,
                             const std::string& options, const std::string& cache_dir);
  // A device binary, e.g. a .aocx bitstream for an FPGA board.
  static Program from_binary(const Context& context, const std::vector<unsigned char>& binary,
                             const std::string& options);

  std::vector<unsigned char> binary() const;
  std::vector<std::string> kernel_names() const;
  // The argument spaces of a kernel as recorded when the program was built from source
  // (Intel's runtimes drop argument information from programs loaded from a binary, so the
  // cache keeps it); empty when unknown.
  std::vector<ArgSpace> recorded_arg_spaces(const std::string& kernel) const;
  bool from_cache() const { return from_cache_; }
  const Context& context() const { return context_; }
  cl_program get() const { return program_.get(); }

 private:
  Program(Context context, ClRef<cl_program> program, bool from_cache);
  Context context_;
  ClRef<cl_program> program_;
  bool from_cache_;
  std::string arg_table_;  // "kernel=GGPL\n" per kernel: Global, Constant, Local, Private
};

// Counts of the on-disk program cache in this process; tests read them.
struct ProgramCacheStats {
  uint64_t hits = 0;    // built from a cached binary
  uint64_t misses = 0;  // built from source (and stored)
};
ProgramCacheStats program_cache_stats();

}  // namespace accel
