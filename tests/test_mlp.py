"""The hand-written MLP passes against finite differences, and the shared-forward invariant."""

import numpy as np
import pytest

from revlearn import check_grad, mlp
from revlearn.gradcheck import GradientCheckError

NETS = [(5, 3), (5, 7, 3), (4, 6, 5, 4)]


def problem(sizes, rng, batch=9):
    lay = mlp.Layout(sizes)
    w = 0.6 * rng.standard_normal(lay.P)
    X = rng.standard_normal((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], batch)
    return lay, w, X, y


def test_layout_groups_are_contiguous_slices_in_design_order():
    lay = mlp.Layout((4, 3, 2))
    assert lay.G == 4 and lay.P == 4 * 3 + 3 + 3 * 2 + 2
    assert list(lay.sizes) == [12, 3, 6, 2]
    assert list(lay.offsets) == [0, 12, 15, 21, 23]
    w = np.arange(lay.P, dtype=float)
    (W1, b1), (W2, b2) = lay.unflatten(w)
    assert W1.shape == (4, 3) and W1[1, 0] == 3.0  # row-major
    assert b1[0] == 12.0 and W2[0, 0] == 15.0 and b2[-1] == 22.0
    assert [lay.group_of(i) for i in (0, 11, 12, 15, 22)] == [0, 0, 1, 2, 3]
    assert list(lay.group_sum(np.ones(lay.P))) == [12, 3, 6, 2]
    assert np.allclose(lay.group_dot(w, np.ones(lay.P)), lay.group_sum(w))


@pytest.mark.parametrize("sizes", NETS)
def test_gradient_matches_finite_differences(sizes, activation, rng):
    lay, w, X, y = problem(sizes, rng)
    ell, g = mlp.loss_grad(w, X, y, lay, activation)
    assert ell == mlp.loss(w, X, y, lay, activation)
    check_grad(lambda w: mlp.loss(w, X, y, lay, activation), w, g, directions=3,
               coords=[0, lay.P - 1], rtol=1e-7, name="w")


@pytest.mark.parametrize("sizes", NETS)
def test_hvp_matches_finite_differences_of_the_gradient(sizes, activation, rng):
    lay, w, X, y = problem(sizes, rng)
    dv = rng.standard_normal(lay.P)
    _, g, Hdv, _ = mlp.loss_grad_hvp(w, dv, X, y, lay, activation)
    for u in (rng.standard_normal(lay.P) for _ in range(3)):
        # u . H dv is the derivative of u . grad along dv
        check_grad(lambda e, u=u: u @ mlp.loss_grad(w + e * dv, X, y, lay, activation)[1],
                   np.zeros(()), np.array(u @ Hdv), directions=[np.ones(())], rtol=1e-7,
                   name="u.H.dv")


@pytest.mark.parametrize("sizes", NETS)
def test_mixed_input_derivative_matches_finite_differences(sizes, activation, rng):
    lay, w, X, y = problem(sizes, rng)
    dv = rng.standard_normal(lay.P)
    _, _, _, dX = mlp.loss_grad_hvp(w, dv, X, y, lay, activation, input_grad=True)
    check_grad(lambda X: mlp.loss_grad(w, X, y, lay, activation)[1] @ dv, X, dX, directions=3,
               coords=[(0, 0), (len(X) - 1, X.shape[1] - 1)], rtol=1e-7, name="X")


def test_hessian_is_symmetric(activation, rng):
    lay, w, X, y = problem((4, 6, 5, 4), rng)
    a, b = rng.standard_normal(lay.P), rng.standard_normal(lay.P)
    Ha = mlp.loss_grad_hvp(w, a, X, y, lay, activation)[2]
    Hb = mlp.loss_grad_hvp(w, b, X, y, lay, activation)[2]
    assert b @ Ha == pytest.approx(a @ Hb, rel=1e-12)


def test_gradient_of_hvp_pass_is_bit_identical_to_gradient_pass(activation, rng):
    # Algorithm 2 recomputes g_t with loss_grad_hvp to undo a step Algorithm 1 took with loss_grad
    lay, w, X, y = problem((7, 9, 8, 3), rng, batch=31)
    ell, g = mlp.loss_grad(w, X, y, lay, activation)
    ell2, g2, _, _ = mlp.loss_grad_hvp(w, rng.standard_normal(lay.P), X, y, lay, activation)
    assert ell == ell2
    assert np.array_equal(g, g2)


def test_a_wrong_hvp_is_caught(rng):
    # negative control: dropping the phi'' term of tanh must fail the same check
    lay, w, X, y = problem((5, 7, 3), rng)
    dv = rng.standard_normal(lay.P)
    saved = mlp.ACTIVATIONS["tanh"]
    mlp.ACTIVATIONS["tanh"] = saved._replace(d2phi=None)
    try:
        Hdv = mlp.loss_grad_hvp(w, dv, X, y, lay, "tanh")[2]
    finally:
        mlp.ACTIVATIONS["tanh"] = saved
    u = rng.standard_normal(lay.P)
    with pytest.raises(GradientCheckError):
        check_grad(lambda e: u @ mlp.loss_grad(w + e * dv, X, y, lay, "tanh")[1], np.zeros(()),
                   np.array(u @ Hdv), directions=[np.ones(())], rtol=1e-7)


def test_loss_is_stable_for_huge_logits(rng):
    lay, w, X, y = problem((5, 3), rng)
    ell, g = mlp.loss_grad(1e3 * w, X, y, lay, "tanh")
    assert np.isfinite(ell) and np.all(np.isfinite(g))


def test_loss_and_error_agree_with_the_loss_and_the_argmax(activation, rng):
    lay, w, X, y = problem((5, 7, 3), rng, batch=40)
    ell, err = mlp.loss_and_error(w, X, y, lay, activation)
    assert ell == mlp.loss(w, X, y, lay, activation)
    logits = mlp._forward(lay.unflatten(w), X, mlp.ACTIVATIONS[activation])[1]
    assert err == np.mean(np.argmax(logits, axis=1) != y) and 0 < err < 1
