"""Op-level API: run one int8 kernel on numpy arrays (tests, benchmarks), or bind it to
device buffers for a Plan (the compiler). Each op family lives in its own module."""
from accel.ops import conv  # noqa: F401
from accel.ops import eltwise, l2norm, pool  # noqa: F401
