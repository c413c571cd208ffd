// Python bindings: accel._runtime. Runtime errors become accel.errors classes (chosen by the
// CL error code), numpy arrays are checked for size and layout before any copy, and the
// blocking calls release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "errors.hpp"
#include "plan.hpp"

namespace py = pybind11;
using namespace accel;

namespace {

struct LocalMemory {
  size_t nbytes;
};

py::object python_error_class(ErrorClass error_class) {
  py::module_ errors = py::module_::import("accel.errors");
  switch (error_class) {
    case ErrorClass::Device:
      return errors.attr("DeviceError");
    case ErrorClass::Build:
      return errors.attr("BuildError");
    case ErrorClass::Memory:
      return errors.attr("DeviceMemoryError");
    case ErrorClass::Launch:
    default:
      return errors.attr("LaunchError");
  }
}

py::dict device_dict(const DeviceInfo& d) {
  py::dict info;
  info["platform_index"] = d.platform_index;
  info["device_index"] = d.device_index;
  info["platform"] = d.platform;
  info["platform_version"] = d.platform_version;
  info["vendor"] = d.vendor;
  info["name"] = d.name;
  info["version"] = d.version;
  info["driver_version"] = d.driver_version;
  info["kind"] = d.kind;
  info["extensions"] = d.extensions;
  info["compute_units"] = d.compute_units;
  info["global_mem_bytes"] = d.global_mem_bytes;
  info["local_mem_bytes"] = d.local_mem_bytes;
  info["max_alloc_bytes"] = d.max_alloc_bytes;
  info["max_work_group_size"] = d.max_work_group_size;
  return info;
}

// A host array that is to be copied to or from a device buffer of `nbytes`.
void check_host_array(const py::array& array, size_t nbytes, bool writable, const std::string& what) {
  if (array.dtype().kind() == 'O') throw py::type_error(what + ": an array of Python objects holds no data to copy");
  if (!(array.flags() & py::array::c_style)) {
    throw py::value_error(what + ": array must be C-contiguous");
  }
  if (writable && !array.writeable()) throw py::value_error(what + ": array is read-only");
  if (static_cast<size_t>(array.nbytes()) != nbytes) {
    throw Error(ErrorClass::Memory, what, CL_INVALID_VALUE,
                what + ": host array has " + std::to_string(array.nbytes()) +
                    " bytes but the device buffer has " + std::to_string(nbytes));
  }
}

// Buffers, local-memory sizes and numpy scalars. Python ints and floats are refused: the
// width of a scalar argument must be explicit (np.int32(5), np.float32(0.5)).
// Where the kernel says what an argument is (programs built from source), the value must
// be of that kind: a wrong one could otherwise be taken as a device pointer.
void set_kernel_arg(Kernel& kernel, cl_uint index, py::handle value) {
  const ArgSpace space = kernel.arg_space(index);
  auto refuse = [&](const char* expected) {
    throw py::type_error("argument " + std::to_string(index) + " of kernel '" + kernel.name() +
                         "': expected " + expected + ", got " +
                         std::string(py::str(value.get_type().attr("__name__"))));
  };
  if (py::isinstance<Buffer>(value)) {
    if (space == ArgSpace::Local || space == ArgSpace::Private) {
      refuse(space == ArgSpace::Local ? "LocalMemory" : "a numpy scalar");
    }
    kernel.set_buffer(index, value.cast<const Buffer&>());
  } else if (py::isinstance<LocalMemory>(value)) {
    if (space != ArgSpace::Local && space != ArgSpace::Unknown) {
      refuse(space == ArgSpace::Private ? "a numpy scalar" : "a Buffer");
    }
    kernel.set_local(index, value.cast<const LocalMemory&>().nbytes);
  } else if (py::isinstance(value, py::module_::import("numpy").attr("generic"))) {
    if (space != ArgSpace::Private && space != ArgSpace::Unknown) {
      refuse(space == ArgSpace::Local ? "LocalMemory" : "a Buffer");
    }
    py::array scalar = py::array::ensure(value);
    if (scalar.dtype().kind() == 'O') refuse("a numpy number");
    kernel.set_scalar(index, scalar.data(), static_cast<size_t>(scalar.itemsize()));
  } else {
    refuse("a Buffer, LocalMemory or numpy scalar (e.g. np.int32(5))");
  }
}

// Driver messages and build logs as text even where they are not valid UTF-8 (a compiler's
// log may quote bytes of the source): a strict decode would replace the error with a
// UnicodeDecodeError.
py::str lenient_str(const std::string& text) {
  PyObject* decoded = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()),
                                           "replace");
  if (decoded == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(decoded);
}

}  // namespace

PYBIND11_MODULE(_runtime, m) {
  m.doc() = "accel's OpenCL runtime (C++). Use it through the accel package.";

  py::register_exception_translator([](std::exception_ptr pointer) {
    try {
      if (pointer) std::rethrow_exception(pointer);
    } catch (const Error& error) {
      py::object error_class = python_error_class(error.error_class());
      py::object log = error.log().empty() ? py::object(py::none()) : lenient_str(error.log());
      py::object instance = error_class(lenient_str(error.what()), py::arg("code") = error.code(),
                                        py::arg("routine") = error.routine(), py::arg("log") = log);
      PyErr_SetObject(error_class.ptr(), instance.ptr());
    }
  });

  m.def("devices", [] {
    py::list result;
    for (const DeviceInfo& d : enumerate_devices()) result.append(device_dict(d));
    return result;
  }, "Every OpenCL device present, as dicts.");
  m.def("error_name", &error_name, "The name of a CL error code.");
  m.def("program_cache_stats", [] {
    ProgramCacheStats stats = program_cache_stats();
    py::dict result;
    result["hits"] = stats.hits;
    result["misses"] = stats.misses;
    return result;
  }, "Program cache hits and misses in this process.");

  py::class_<Context>(m, "Context")
      .def(py::init([](int platform_index, int device_index) {
             return Context(device_at(platform_index, device_index));
           }),
           py::arg("platform_index"), py::arg("device_index"))
      .def_static("from_int_ptr", [](uintptr_t context, uintptr_t device) {
                    return Context::wrap(reinterpret_cast<cl_context>(context),
                                         reinterpret_cast<cl_device_id>(device));
                  }, py::arg("context"), py::arg("device"),
                  "Wrap a live cl_context handle (retained) for one of its devices.")
      .def_property_readonly("device", [](const Context& c) { return device_dict(c.device()); })
      .def_property_readonly("int_ptr", [](const Context& c) {
             return reinterpret_cast<uintptr_t>(c.get());
           }, "The cl_context handle (for pyopencl.Context.from_int_ptr).")
      .def_property_readonly("device_int_ptr", [](const Context& c) {
             return reinterpret_cast<uintptr_t>(c.device().device_id);
           }, "The cl_device_id handle.")
      .def_property_readonly("reference_count", &Context::reference_count,
                             "The driver's CL_CONTEXT_REFERENCE_COUNT.");

  py::class_<Queue>(m, "Queue")
      .def(py::init<const Context&>(), py::arg("context"))
      .def_static("from_int_ptr", [](const Context& context, uintptr_t queue) {
                    return Queue::wrap(context, reinterpret_cast<cl_command_queue>(queue));
                  }, py::arg("context"), py::arg("queue"),
                  "Wrap a live in-order cl_command_queue handle of this context (retained).")
      .def_property_readonly("int_ptr", [](const Queue& q) {
             return reinterpret_cast<uintptr_t>(q.get());
           }, "The cl_command_queue handle (for pyopencl.CommandQueue.from_int_ptr).")
      .def_property_readonly("profiling", [](const Queue& q) {
             return (q.properties() & CL_QUEUE_PROFILING_ENABLE) != 0;
           }, "Whether the queue records profiling times (accel's own queues do).")
      .def("finish", &Queue::finish, py::arg("timeout_s") = 0.0,
           py::call_guard<py::gil_scoped_release>(),
           "Wait for every command so far; with timeout_s > 0 raise LaunchError after that long.");

  py::class_<Event>(m, "Event")
      .def("wait", &Event::wait, py::arg("timeout_s") = 0.0,
           py::call_guard<py::gil_scoped_release>(),
           "Wait for the command; with timeout_s > 0 raise LaunchError after that long.")
      .def_property_readonly("queued_ns", &Event::queued_ns)
      .def_property_readonly("start_ns", &Event::start_ns)
      .def_property_readonly("end_ns", &Event::end_ns)
      .def_property_readonly("duration_ns", &Event::duration_ns)
      .def_property_readonly("label", &Event::label);

  py::class_<Buffer>(m, "Buffer")
      .def(py::init<const Context&, size_t>(), py::arg("context"), py::arg("nbytes"))
      .def_static("from_int_ptr", [](uintptr_t mem) {
                    return Buffer::wrap(reinterpret_cast<cl_mem>(mem));
                  }, py::arg("mem"), "Wrap a live cl_mem buffer handle (retained).")
      .def_property_readonly("nbytes", &Buffer::nbytes)
      .def("region", &Buffer::region, py::arg("offset"), py::arg("nbytes"),
           "Bytes [offset, offset + nbytes) as a buffer of its own (an OpenCL sub-buffer; "
           "offset aligned to the device's CL_DEVICE_MEM_BASE_ADDR_ALIGN).")
      .def_property_readonly("int_ptr", [](const Buffer& b) {
             return reinterpret_cast<uintptr_t>(b.get());
           }, "The cl_mem handle (for pyopencl.Buffer.from_int_ptr).")
      .def_property_readonly("context_int_ptr", [](const Buffer& b) {
             return reinterpret_cast<uintptr_t>(b.context());
           }, "The cl_context handle the buffer belongs to.")
      .def("write", [](const Buffer& buffer, const Queue& queue, const py::array& host) {
             check_host_array(host, buffer.nbytes(), false, "Buffer.write");
             const void* data = host.data();
             py::gil_scoped_release release;
             return buffer.write(queue, data, buffer.nbytes(), true);
           }, py::arg("queue"), py::arg("host"), "Copy a C-contiguous array of exactly nbytes in.")
      .def("read", [](const Buffer& buffer, const Queue& queue, py::array& host) {
             check_host_array(host, buffer.nbytes(), true, "Buffer.read");
             void* data = host.mutable_data();
             py::gil_scoped_release release;
             return buffer.read(queue, data, buffer.nbytes(), true);
           }, py::arg("queue"), py::arg("host"), "Copy the buffer into a writable array of nbytes.");

  py::class_<LocalMemory>(m, "LocalMemory")
      .def(py::init<size_t>(), py::arg("nbytes"))
      .def_readonly("nbytes", &LocalMemory::nbytes);

  py::class_<Program>(m, "Program")
      .def_static("from_source", &Program::from_source, py::arg("context"), py::arg("source"),
                  py::arg("options") = "", py::arg("cache_dir") = "",
                  py::call_guard<py::gil_scoped_release>())
      .def_static("from_binary", [](const Context& context, const py::bytes& binary,
                                    const std::string& options) {
                    std::string data = binary;
                    std::vector<unsigned char> bytes(data.begin(), data.end());
                    py::gil_scoped_release release;
                    return Program::from_binary(context, bytes, options);
                  }, py::arg("context"), py::arg("binary"), py::arg("options") = "")
      .def("binary", [](const Program& program) {
             std::vector<unsigned char> binary = program.binary();
             return py::bytes(reinterpret_cast<const char*>(binary.data()), binary.size());
           })
      .def_property_readonly("kernel_names", &Program::kernel_names)
      .def_property_readonly("from_cache", &Program::from_cache);

  py::class_<Kernel>(m, "Kernel")
      .def(py::init<const Program&, const std::string&>(), py::arg("program"), py::arg("name"))
      .def_property_readonly("name", &Kernel::name)
      .def_property_readonly("num_args", &Kernel::num_args)
      .def("set_arg", [](Kernel& kernel, cl_uint index, py::handle value) {
             set_kernel_arg(kernel, index, value);
           }, py::arg("index"), py::arg("value"))
      .def("set_args", [](Kernel& kernel, py::args values) {
             cl_uint expected = kernel.num_args();
             if (values.size() != expected) {
               throw py::type_error("kernel '" + kernel.name() + "' takes " +
                                    std::to_string(expected) + " arguments, got " +
                                    std::to_string(values.size()));
             }
             for (size_t i = 0; i < values.size(); ++i) {
               set_kernel_arg(kernel, static_cast<cl_uint>(i), values[i]);
             }
           })
      .def("launch", &Kernel::launch, py::arg("queue"), py::arg("global_size"),
           py::arg("local_size") = std::vector<size_t>{},
           py::arg("wait_for") = std::vector<Event>{});

  py::class_<Plan>(m, "Plan")
      .def(py::init<const Queue&>(), py::arg("queue"))
      .def("add_input", &Plan::add_input)
      .def("add_output", &Plan::add_output)
      .def("add_launch", &Plan::add_launch, py::arg("kernel"), py::arg("global_size"),
           py::arg("local_size") = std::vector<size_t>{},
           "Append a launch. The kernel keeps the arguments it has now: use one Kernel per launch.")
      .def("add_concurrent", [](Plan& plan, const std::vector<py::tuple>& launches) {
             std::vector<Launch> stage;
             for (const py::tuple& t : launches) {
               if (t.size() != 3) throw py::value_error("add_concurrent takes (kernel, global, local) tuples");
               stage.push_back(Launch{t[0].cast<Kernel>(), t[1].cast<std::vector<size_t>>(),
                                      t[2].cast<std::vector<size_t>>()});
             }
             plan.add_concurrent(std::move(stage));
           }, py::arg("launches"),
           "Append a stage of (kernel, global, local) launches that run at the same time, the "
           "i-th on the plan's i-th queue (FPGA pipelines joined by channels).")
      .def_property_readonly("num_launches", &Plan::num_launches)
      .def_property_readonly("num_queues", &Plan::num_queues)
      .def("set_profiling", &Plan::set_profiling)
      .def("set_timeout", &Plan::set_timeout, py::arg("seconds"))
      .def_property_readonly("last_profile", &Plan::last_profile)
      .def("run", [](Plan& plan, const std::vector<py::array>& inputs,
                     std::vector<py::array>& outputs) {
             if (inputs.size() != plan.inputs().size() || outputs.size() != plan.outputs().size()) {
               throw py::value_error("plan takes " + std::to_string(plan.inputs().size()) +
                                     " inputs and " + std::to_string(plan.outputs().size()) +
                                     " outputs, got " + std::to_string(inputs.size()) + " and " +
                                     std::to_string(outputs.size()));
             }
             std::vector<const void*> in;
             std::vector<void*> out;
             for (size_t i = 0; i < inputs.size(); ++i) {
               check_host_array(inputs[i], plan.inputs()[i].nbytes(), false,
                                "Plan.run input " + std::to_string(i));
               in.push_back(inputs[i].data());
             }
             for (size_t i = 0; i < outputs.size(); ++i) {
               check_host_array(outputs[i], plan.outputs()[i].nbytes(), true,
                                "Plan.run output " + std::to_string(i));
               out.push_back(outputs[i].mutable_data());
             }
             py::gil_scoped_release release;
             plan.run(in, out);
           }, py::arg("inputs"), py::arg("outputs"),
           "Upload inputs, run every launch, download into the output arrays; GIL released.");
}
