"""The back half of the compiler: quantize an optimized IR graph, lower it to kernel steps,
and run it on one device as one C++ Plan.

    graph -> quantize.assign(graph, calibration) -> lower.lower(graph, qparams) -> Lowered
    CompiledModel(lowered, device).run(x)        # binding.bind: buffers and the Plan, once

Modules, one job each: lowered (the data model and its saved format), partition (host head
/ device / host tail), placement (where device tensors live; concats), op_lowering (one
lowering per IR node type), stem (the space-to-depth rewrite of stem convs), steps (the
step kinds: parameters, NDRange and FPGA binding), allocate (liveness-based buffer reuse),
binding (kernel choice and the Plan), fpga_layout and fpga_depthwise (what the FPGA binding
runs: stems folded, tensors re-strided, depthwise convs as group convs), compiled
(CompiledModel, save/load), api (compile).
"""
