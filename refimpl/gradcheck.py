"""Finite-difference checks of gradients, as library code.

`check_grad(f, x, grad)` compares the analytic directional derivatives grad . u with fourth-order
central differences

    f'(x; u) ~ [8 (f(x + h u) - f(x - h u)) - (f(x + 2h u) - f(x - 2h u))] / (12 h)

along random unit directions u and along single coordinates, and raises `GradientCheckError` with
the analytic and numeric values side by side when any relative error exceeds `rtol`.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

STEP = 1e-4
"""Default finite-difference step h (the truncation error is O(h**4))."""
RTOL = 1e-5
"""Default largest relative error |analytic - numeric| / max(|analytic|, |numeric|, atol/rtol)."""
ATOL = 1e-10
"""Default absolute floor: derivatives smaller than this in both forms pass."""


class GradientCheckError(AssertionError):
    """An analytic derivative disagrees with its finite-difference estimate."""


class Check(NamedTuple):
    """One compared derivative, with
    rel_error = |analytic - numeric| / max(|analytic|, |numeric|, atol/rtol)."""

    where: str
    analytic: float
    numeric: float
    rel_error: float

    def __str__(self):
        return (f"{self.where:>24}  analytic {self.analytic: .12e}  numeric {self.numeric: .12e}"
                f"  rel.err {self.rel_error:.2e}")


def _compare(where, analytic, numeric, rtol, atol):
    rel = abs(analytic - numeric) / max(abs(analytic), abs(numeric), atol / rtol)
    return Check(where, analytic, numeric, rel)


def directional_derivative(f, x, u, step=STEP):
    """The fourth-order central difference of f at x along u with step h."""
    f1 = f(x + step * u) - f(x - step * u)
    f2 = f(x + 2 * step * u) - f(x - 2 * step * u)
    return (8.0 * f1 - f2) / (12.0 * step)


def check_grad(f: Callable[[np.ndarray], float], x: np.ndarray, grad: np.ndarray, *,
               directions: int | Sequence[np.ndarray] = 2, coords: Sequence = (),
               step: float = STEP, rtol: float = RTOL, atol: float = ATOL, seed: int = 0,
               name: str = "x") -> list[Check]:
    """Check `grad` (the analytic gradient of the scalar function f at x) by finite differences.

    directions: how many random unit directions, or a list of direction arrays to use as given
    (for an argument that lives on a lattice, such as gamma quantised to 2**-16: integer directions
    with step 2**-16 keep every evaluation on the lattice); coords: indices into x to check one at
    a time. Returns the list of `Check` rows; raises `GradientCheckError` listing them all if any
    relative error exceeds rtol.
    """
    x, grad = np.asarray(x, dtype=np.float64), np.asarray(grad, dtype=np.float64)
    if grad.shape != x.shape:
        raise ValueError(f"grad has shape {grad.shape} but {name} has shape {x.shape}")
    rng = np.random.default_rng(seed)
    if isinstance(directions, int):
        directions = [u / np.linalg.norm(u) for u in
                      (rng.standard_normal(x.shape) for _ in range(directions))]
    rows = []
    for k, u in enumerate(directions):
        rows.append(_compare(f"{name} . u{k}", float(np.sum(grad * u)),
                             directional_derivative(f, x, u, step), rtol, atol))
    for idx in coords:
        u = np.zeros_like(x)
        u[idx] = 1.0
        where = ", ".join(str(int(i)) for i in np.atleast_1d(idx))
        rows.append(_compare(f"{name}[{where}]", float(grad[idx]),
                             directional_derivative(f, x, u, step), rtol, atol))
    if any(r.rel_error > rtol for r in rows):
        raise GradientCheckError(f"gradient check of {name} failed (rtol {rtol:g}, "
                                 f"step {step:g}):\n" + "\n".join(map(str, rows)))
    return rows
