#include "plan.hpp"

#include <algorithm>

#include "errors.hpp"

namespace accel {

namespace {

// "kernel 'a' still running; kernels 'b', 'c' never started; kernel 'd' failed (status
// -5)": the launches of a timed-out run that had not finished (an FPGA pipeline whose
// channels deadlocked shows which kernel spins and which wait; a launch the runtime aborted
// leaves its partners waiting for ever).
std::string unfinished(const std::vector<Event>& events) {
  std::vector<std::string> running, waiting, failed;
  for (const Event& event : events) {
    cl_int status = CL_COMPLETE;
    cl_event raw = event.get();
    if (clGetEventInfo(raw, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(status), &status,
                       nullptr) != CL_SUCCESS || status == CL_COMPLETE) {
      continue;
    }
    const std::string name = "'" + event.label() + "'";
    if (status < 0) {
      failed.push_back(name + " (status " + std::to_string(status) + ")");
    } else {
      (status == CL_RUNNING ? running : waiting).push_back(name);
    }
  }
  auto join = [](const std::vector<std::string>& names, const char* what) {
    std::string text = names.size() == 1 ? "kernel " : "kernels ";
    for (size_t i = 0; i < names.size(); ++i) text += (i ? ", " : "") + names[i];
    return text + what;
  };
  std::string text;
  auto add = [&](const std::vector<std::string>& names, const char* what) {
    if (!names.empty()) text += (text.empty() ? "" : "; ") + join(names, what);
  };
  add(running, " still running");
  add(waiting, " never started");
  add(failed, " failed");
  return text.empty() ? "every kernel had finished" : text;
}

}  // namespace

// Concurrent kernels sharing a buffer that no command has used on the device yet: Intel's
// FPGA emulator then sometimes starts one of them without its arguments in place (it never
// reads them and the pipeline deadlocks; measured, about one first run in ten of a
// persistent segment, whose six kernels share the layer table and arenas). Migrating the
// stage's buffers to the device once, before any run, puts each in place first.
void Plan::make_resident(const std::vector<Launch>& launches) {
  std::vector<cl_mem> mems;
  for (const Launch& launch : launches) {
    for (const Buffer& buffer : launch.kernel.buffers()) {
      if (std::find(mems.begin(), mems.end(), buffer.get()) == mems.end()) {
        mems.push_back(buffer.get());
      }
    }
  }
  if (mems.empty()) return;
  const Queue& queue = queues_[0];
  cl_event event = nullptr;
  ACCEL_CL(clEnqueueMigrateMemObjects, queue.get(), static_cast<cl_uint>(mems.size()), mems.data(),
           0, 0, nullptr, &event);
  Event(event, "make resident", queue.ref()).wait();
}

Plan::Plan(const Queue& queue) : queues_{queue} {}

void Plan::add_launch(const Kernel& kernel, std::vector<size_t> global, std::vector<size_t> local) {
  add_concurrent({Launch{kernel, std::move(global), std::move(local)}});
}

void Plan::add_concurrent(std::vector<Launch> launches) {
  if (launches.empty()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (Launch& launch : launches) launch.kernel.freeze();
  if (launches.size() > 1) make_resident(launches);
  while (queues_.size() < launches.size()) queues_.emplace_back(queues_[0].context());
  stages_.push_back(std::move(launches));
}

size_t Plan::num_launches() const {
  size_t count = 0;
  for (const auto& stage : stages_) count += stage.size();
  return count;
}

void Plan::run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (inputs.size() != inputs_.size() || outputs.size() != outputs_.size()) {
    throw Error(ErrorClass::Launch, "Plan::run", CL_INVALID_VALUE,
                "plan expects " + std::to_string(inputs_.size()) + " inputs and " +
                    std::to_string(outputs_.size()) + " outputs, got " +
                    std::to_string(inputs.size()) + " and " + std::to_string(outputs.size()));
  }
  if (timed_out_) {
    throw Error(ErrorClass::Launch, "Plan::run", kTimeoutCode,
                "an earlier run of this plan timed out and its kernels may still be running; "
                "build the plan again on a new Context");
  }
  const Queue& main = queues_[0];
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs_[i].write(main, inputs[i], inputs_[i].nbytes(), true);
  }
  std::vector<Event> previous;  // what the next stage waits for
  std::vector<Event> launched;  // every launch of this run
  for (const auto& stage : stages_) {
    std::vector<Event> current;
    for (size_t i = 0; i < stage.size(); ++i) {
      const Launch& launch = stage[i];
      current.push_back(launch.kernel.launch(queues_[i], launch.global, launch.local, previous));
    }
    launched.insert(launched.end(), current.begin(), current.end());
    previous = std::move(current);
  }
  try {
    for (const Queue& queue : queues_) queue.flush();  // a stage may wait on another queue
    for (const Queue& queue : queues_) queue.finish(timeout_s_);
  } catch (const Error& error) {
    if (error.code() != kTimeoutCode) throw;
    timed_out_ = true;
    throw Error(ErrorClass::Launch, "Plan::run", kTimeoutCode,
                "the plan did not finish within " + std::to_string(timeout_s_) + " s: " +
                    unfinished(launched) + " (a channel deadlock, or a kernel that never ends)");
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    outputs_[i].read(main, outputs[i], outputs_[i].nbytes(), true);
  }
  profile_.clear();
  if (profiling_) {
    for (const Event& event : launched) profile_.emplace_back(event.label(), event.duration_ns());
  }
}

}  // namespace accel
