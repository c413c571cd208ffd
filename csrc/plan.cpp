#include "plan.hpp"

#include "errors.hpp"

namespace accel {

Plan::Plan(const Queue& queue) : queues_{queue} {}

void Plan::add_launch(const Kernel& kernel, std::vector<size_t> global, std::vector<size_t> local) {
  stages_.push_back({Launch{kernel, std::move(global), std::move(local)}});
}

void Plan::add_concurrent(std::vector<Launch> launches) {
  if (launches.empty()) return;
  while (queues_.size() < launches.size()) queues_.emplace_back(queues_[0].context());
  stages_.push_back(std::move(launches));
}

size_t Plan::num_launches() const {
  size_t count = 0;
  for (const auto& stage : stages_) count += stage.size();
  return count;
}

void Plan::run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs) {
  if (inputs.size() != inputs_.size() || outputs.size() != outputs_.size()) {
    throw Error(ErrorClass::Launch, "Plan::run", CL_INVALID_VALUE,
                "plan expects " + std::to_string(inputs_.size()) + " inputs and " +
                    std::to_string(outputs_.size()) + " outputs, got " +
                    std::to_string(inputs.size()) + " and " + std::to_string(outputs.size()));
  }
  const Queue& main = queues_[0];
  std::vector<Event> previous;  // what the next stage waits for
  for (size_t i = 0; i < inputs.size(); ++i) {
    previous.push_back(inputs_[i].write(main, inputs[i], inputs_[i].nbytes(), false));
  }
  std::vector<Event> launched;
  for (const auto& stage : stages_) {
    std::vector<Event> current;
    for (size_t i = 0; i < stage.size(); ++i) {
      const Launch& launch = stage[i];
      current.push_back(launch.kernel.launch(queues_[i], launch.global, launch.local, previous));
    }
    if (profiling_) launched.insert(launched.end(), current.begin(), current.end());
    previous = std::move(current);
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    outputs_[i].read(main, outputs[i], outputs_[i].nbytes(), false, previous);
  }
  for (const Queue& queue : queues_) queue.flush();  // a stage may wait on another queue
  for (const Queue& queue : queues_) queue.finish(timeout_s_);
  profile_.clear();
  for (const Event& event : launched) profile_.emplace_back(event.label(), event.duration_ns());
}

}  // namespace accel
