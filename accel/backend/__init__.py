"""The back half of the compiler: quantize an optimized IR graph, lower it to kernel launches
on one device, and run it as one C++ Plan.

    graph -> quantize.assign(graph, calibration) -> schedule.lower(graph, qparams) -> Lowered
    CompiledModel(lowered, device).run(x)        # binds buffers and builds the Plan once
"""
