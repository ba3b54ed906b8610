"""The multi-task model: the change of variables, its passes against finite differences, and
hypergradients of whole training runs through a Case that carries it."""

import numpy as np
import pytest

import revlearn
from revlearn import check_grad, multitask
from revlearn.case import Case
from revlearn.spec import sample_batches

SIZES, N_TASKS = (5, 6, 3), 3


@pytest.fixture
def model():
    return multitask.MultiTaskMLP(SIZES, "tanh", N_TASKS)


def data(rng, n=24):
    X = rng.standard_normal((n, SIZES[0]))
    y = rng.integers(0, N_TASKS * SIZES[-1], n)
    return X, y


def test_helmert_is_orthonormal_with_the_mean_first():
    Q = multitask.helmert(5)
    assert np.allclose(Q.T @ Q, np.eye(5), atol=1e-15)
    assert np.allclose(Q[:, 0], 1 / np.sqrt(5))


def test_deviation_coordinates_carry_the_cross_task_penalty(model, rng):
    lay = model.layout
    u = rng.standard_normal(lay.P)
    W = model.weights(u)
    assert np.allclose(model.coords(W), u, atol=1e-14)
    dev = lay.group_dot(u, u)
    single = lay.single
    for g in range(single.G):
        Wg = W[:, single.offsets[g]:single.offsets[g + 1]]
        assert np.isclose(dev[2 * g + 1], np.sum((Wg - Wg.mean(axis=0)) ** 2))
        assert np.isclose(dev[2 * g] + dev[2 * g + 1], np.sum(Wg ** 2))
    assert lay.describe_group(3) == "b1 task deviations (group 3)"


def test_passes_match_finite_differences(model, rng):
    X, y = data(rng)
    u, du = 0.5 * rng.standard_normal(model.layout.P), rng.standard_normal(model.layout.P)
    ell, g = model.loss_grad(u, X, y)
    ell2, g2, Hdu, dX = model.loss_grad_hvp(u, du, X, y, input_grad=True)
    assert ell == ell2 == model.loss(u, X, y) and np.array_equal(g, g2)  # bit-identical
    assert np.isclose(np.sum(model.task_losses(u, X, y)), ell)
    check_grad(lambda u: model.loss(u, X, y), u, g, directions=3, rtol=1e-7, name="u")
    check_grad(lambda e: model.loss_grad(u + e * du, X, y)[1] @ g, np.zeros(()),
               np.array(g @ Hdu), directions=[np.ones(())], rtol=1e-7, name="g.H.du")
    check_grad(lambda X: model.loss_grad(u, X, y)[1] @ du, X, dX, directions=2, rtol=1e-7,
               name="X")


def multitask_case(model, rng, **changes):
    X, y = data(rng, 30)
    Xv, yv = data(rng, 20)
    lay, T = model.layout, 15
    args = dict(layer_sizes=SIZES, activation="tanh", X_train=X, y_train=y, X_valid=Xv,
                y_valid=yv, batches=sample_batches(30, T, 10, rng),
                eps=rng.standard_normal(lay.P), alpha=np.full((T, lay.G), 0.3),
                gamma=np.full((T, lay.G), 0.9), init_scale=np.full(lay.G, 0.4),
                l2=rng.uniform(0.01, 0.1, lay.G), model=model)
    args.update(changes)
    return Case(**args)


def test_hypergradient_through_the_model_matches_finite_differences(model, rng):
    case = multitask_case(model, rng)
    res = revlearn.hypergradient(case)
    assert res.exact_recovery and res.d_l2.shape == (model.layout.G,)
    assert res.valid_loss == revlearn.valid_loss(case)
    for name in ("l2", "init_scale", "alpha"):
        check_grad(lambda x, name=name: revlearn.valid_loss(case.replace(**{name: x})),
                   getattr(case, name), getattr(res, "d_" + name), directions=2, rtol=1e-5,
                   name=name)


def test_equal_penalties_train_the_nets_independently(model, rng):
    # lam_dev = lam_mean: the multi-task run is the n nets trained side by side, each on its rows
    case = multitask_case(model, rng, l2=np.full(model.layout.G, 0.05))
    W = model.weights(revlearn.train(case, exact=False).w_final)
    W0 = model.weights(case.w0)
    K, gamma = SIZES[-1], case.gamma[0, 0]  # gamma as quantised by the Case
    for t in range(N_TASKS):
        rows = case.y_train // K == t
        X, y = case.X_train[rows], case.y_train[rows] % K
        idx = np.cumsum(rows) - 1  # batch rows of task t, renumbered
        batches = [idx[b[rows[b]]] for b in case.batches]
        w, v = W0[t].copy(), np.zeros_like(W0[t])
        for b in batches:  # Algorithm 1 by hand on net t alone (its batch rows only)
            g = revlearn.mlp.loss_grad(w, X[b], y[b], model.layout.single, "tanh")[1] \
                if len(b) else np.zeros_like(w)
            v = gamma * v - (1 - gamma) * (g + 0.05 * w)
            w = w + 0.3 * v
        assert np.allclose(W[t], w, rtol=0, atol=1e-10), t
