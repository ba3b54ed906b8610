"""Numba kernels for revlearn (issue 4)."""
