"""The library's finite-difference checker catches wrong gradients and says where."""

import numpy as np
import pytest

from revlearn import GradientCheckError, check_grad
from revlearn.gradcheck import directional_derivative


def f(x):
    return np.sum(np.sin(x) * x**2)


def grad_f(x):
    return np.cos(x) * x**2 + 2 * x * np.sin(x)


def test_accepts_the_right_gradient(rng):
    x = rng.normal(size=(3, 4))
    rows = check_grad(f, x, grad_f(x), directions=3, coords=[(0, 0), (2, 3)])
    assert len(rows) == 5 and max(r.rel_error for r in rows) < 1e-9


def test_rejects_a_wrong_gradient_and_prints_both_values(rng):
    x = rng.normal(size=5)
    wrong = grad_f(x)
    wrong[2] *= 1.001
    with pytest.raises(GradientCheckError) as e:
        check_grad(f, x, wrong, directions=1, coords=[2], name="theta")
    text = str(e.value)
    assert "theta[2]" in text and "analytic" in text and "numeric" in text
    assert f"{wrong[2]: .12e}" in text


def test_fourth_order_stencil_is_accurate():
    x, u = np.array([0.7]), np.array([1.0])
    exact = grad_f(x)[0]
    assert abs(directional_derivative(f, x, u, 1e-2) - exact) < 1e-8


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="grad has shape"):
        check_grad(f, np.zeros(3), np.zeros(4))
