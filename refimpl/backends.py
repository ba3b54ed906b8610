"""The backends: the hot loops of one training run and its reverse, from this package (`NUMPY`)
or from `revlearn.kernels` (numba), chosen by name (`get_backend`). Every backend gives the same
bits; the engine (`revlearn.sgd`) and `revlearn.approx` drive whichever they are given."""

from typing import NamedTuple

from . import adam, fixedpoint, lanes, mlp
from .errors import InputError

BACKENDS = ("auto", "numpy", "numba")


class Backend(NamedTuple):
    """The hot loops one backend provides: the MLP passes over chunks of rows (summed, or in parts
    one row per chunk), and the per-parameter work of one step of each algorithm (`lanes` for
    momentum, `adam` an `adam.Lanes` for Adam), on `workers`. The numba backend updates the
    fixed-point state and the adjoints in place, so callers pass the current state on and keep no
    other reference to it."""

    name: str
    loss_and_error: object
    loss_grad: object
    loss_grad_hvp: object
    grad_parts: object
    grad_hvp_parts: object
    forward: object
    reverse_before: object
    reverse_after: object
    from_fixed: object
    adam: object


NUMPY = Backend("numpy", mlp.loss_and_error, mlp.loss_grad, mlp.loss_grad_hvp,
                mlp.grad_parts, mlp.grad_hvp_parts, lanes.forward, lanes.reverse_before,
                lanes.reverse_after, fixedpoint.from_fixed, adam.LANES)


def get_backend(name):
    """The Backend called `name`: "numpy" (this package), "numba" (revlearn.kernels), or "auto"
    (numba when it can be imported, else numpy: the results are the same bits, only faster)."""
    if name == "numpy":
        return NUMPY
    if name in ("numba", "auto"):
        try:
            from revlearn.kernels import NUMBA
        except ImportError as e:
            if name == "auto":
                return NUMPY
            raise InputError(f"backend='numba' needs numba ({e}); install it with "
                             "`pip install 'revlearn[fast]'`, or use backend='numpy'") from None
        return NUMBA
    raise InputError(f"unknown backend {name!r}; use one of {', '.join(map(repr, BACKENDS))}")
