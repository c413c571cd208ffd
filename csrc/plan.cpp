#include "plan.hpp"

#include "errors.hpp"

namespace accel {

Plan::Plan(const Queue& queue) : queue_(queue) {}

void Plan::add_launch(const Kernel& kernel, std::vector<size_t> global, std::vector<size_t> local) {
  steps_.push_back(Step{kernel, std::move(global), std::move(local)});
}

void Plan::run(const std::vector<const void*>& inputs, const std::vector<void*>& outputs) {
  if (inputs.size() != inputs_.size() || outputs.size() != outputs_.size()) {
    throw Error(ErrorClass::Launch, "Plan::run", CL_INVALID_VALUE,
                "plan expects " + std::to_string(inputs_.size()) + " inputs and " +
                    std::to_string(outputs_.size()) + " outputs, got " +
                    std::to_string(inputs.size()) + " and " + std::to_string(outputs.size()));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs_[i].write(queue_, inputs[i], inputs_[i].nbytes(), false);
  }
  std::vector<Event> events;
  events.reserve(steps_.size());
  for (const Step& step : steps_) events.push_back(step.kernel.launch(queue_, step.global, step.local));
  for (size_t i = 0; i < outputs.size(); ++i) {
    outputs_[i].read(queue_, outputs[i], outputs_[i].nbytes(), false);
  }
  queue_.finish();
  profile_.clear();
  if (profiling_) {
    for (const Event& event : events) profile_.emplace_back(event.label(), event.duration_ns());
  }
}

}  // namespace accel
