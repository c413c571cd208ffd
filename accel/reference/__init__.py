"""numpy references of every kernel, built on accel.numerics: the oracle of the kernel tests.
One module per op family, mirroring kernels/."""
