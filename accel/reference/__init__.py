"""numpy references of every kernel, built on accel.numerics: the oracle of the kernel tests.
One module per op family, mirroring kernels/."""
from accel.reference import conv  # noqa: F401
from accel.reference import eltwise, l2norm, pool  # noqa: F401
