"""The one JIT policy for every kernel in revlearn.kernels.

    cache=True          compiled code is kept on disk beside the sources (a second run skips LLVM)
    nogil=True          a kernel releases the GIL, so callers may run it beside BLAS in a thread
    error_model="numpy" no division-by-zero checks in the loops: every divisor (n >= 1, the rANS
                        frequencies f >= 1) is >= 1 by construction, checked where a Case is built
    fastmath=False      never: the kernels must round exactly as NumPy does, operation by operation,
                        so that the numba backend reproduces refimpl bit for bit (no reassociation,
                        no fused multiply-add contraction, no approximate reciprocals)

`kernel` applies the policy and records the kernel in `KERNELS`, which a test walks to check that
every compiled function in the package was made here. Kernels take C-contiguous float64 and int64
arrays: `floats` and `ints` give them (without a copy when they already are).
"""

import numba
import numpy as np

POLICY = dict(cache=True, nogil=True, error_model="numpy", fastmath=False)

KERNELS = []


def kernel(fn=None, *, parallel=False, inline=False):
    """`numba.njit` with the policy above.

    parallel=True only for loops whose iterations are independent integer or elementwise work
    (their results cannot depend on the schedule). inline=True for the small per-entry helpers
    the loops call: they are inlined in Numba's IR, since calls between cached functions are not
    inlined by LLVM and an out-of-line call per lane costs ten times the work it does.
    """
    if fn is None:
        return lambda f: kernel(f, parallel=parallel, inline=inline)
    compiled = numba.njit(**POLICY, parallel=parallel, inline="always" if inline else "never")(fn)
    KERNELS.append(compiled)
    return compiled


def floats(a):
    """a as a C-contiguous float64 array."""
    return np.ascontiguousarray(a, dtype=np.float64)


def ints(a):
    """a as a C-contiguous int64 array."""
    return np.ascontiguousarray(a, dtype=np.int64)
