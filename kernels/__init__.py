"""Numba kernels for revlearn: ``backend="numba"`` in `revlearn.hypergradient` and `revlearn.train`.

`NUMBA` is a `revlearn.backends.Backend` whose results are bit-identical to refimpl's (the NumPy
backend): the MLP passes (`mlp`), the per-parameter work of each step with the exact momentum step
and its inverse (`lanes`, `exact`) and with Adam's (`adam`), on what both share (`blocks`, and
`rans` for the buffer), and tanh, exp and log (`elementary`), with one JIT policy for every kernel
(`jit`). Importing this package needs numba; revlearn does not.
"""

from revlearn.backends import Backend

from . import adam, elementary, exact, lanes, mlp  # noqa: F401 (elementary: the overloads)

NUMBA = Backend("numba", mlp.loss_and_error, mlp.loss_grad, mlp.loss_grad_hvp,
                mlp.grad_parts, mlp.grad_hvp_parts, lanes.forward, lanes.reverse_before,
                lanes.reverse_after, lanes.from_fixed, adam.ADAM)

__all__ = ["NUMBA"]
