"""Numba kernels for revlearn: ``backend="numba"`` in `revlearn.hypergradient` and `revlearn.train`.

`NUMBA` is a `revlearn.sgd.Backend` whose results are bit-identical to refimpl's (the NumPy
backend): the exact momentum step and its inverse (`exact`), the MLP passes (`mlp`) and the
adjoint updates of Algorithm 2 (`sgd`), with one JIT policy for every kernel (`jit`). Importing
this package needs numba; revlearn does not.
"""

from revlearn.sgd import Backend

from . import elementary, exact, mlp, sgd  # noqa: F401 (elementary: the overloads)

NUMBA = Backend("numba", mlp.loss_grad, mlp.loss_grad_hvp, exact.exact_step,
                exact.exact_unstep_w, exact.exact_unstep_v, sgd.adjoint_v, sgd.adjoint_w)

__all__ = ["NUMBA"]
