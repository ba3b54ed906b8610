"""Algorithms 1 and 2: hypergradients against finite differences of whole training runs, exact
recovery, the stored-trajectory cross-check and the buffer size."""

import importlib

import numpy as np
import pytest

import revlearn
from revlearn import check_grad, fixedpoint, mlp

from conftest import needs_numba, small_spec

OUTPUTS = ("w_final", "d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0", "d_X_train")
# Finite differences of whole training runs (fourth-order stencil, gradcheck.py). Their error is
# round-off, about 1e-16 / step in absolute terms (f is computed to ~1e-16), plus truncation,
# O(step**4), plus, for relu, a kink crossed inside the stencil (a relative error of ~1e-2, not
# subtle). Measured on the cases below, largest relative error over the rows of each check:
#
#   check        tanh, step 3e-4  relu, step 3e-5     (gamma: 4 and 1 lattice units of 2**-16)
#   alpha            3.2e-11          1.4e-10
#   gamma            1.7e-11          3.0e-11
#   init_scale       6.3e-12          6.5e-12
#   l2 per group     3.2e-13          1.1e-11
#   l2 per weight    4.8e-12          6.2e-11
#   eps (d_w0)       2.2e-12          8.9e-11
#   X_train          5.4e-11          1.3e-09
#   schedules        5.4e-12 (alpha), 5.0e-11 (gamma); relu 1.6e-10, 1.5e-10
#
# RTOL is about 100 times the worst of these, so a hypergradient off by a relative 1e-6 fails on
# its own (test_a_hypergradient_off_by_1e_6_is_caught). Two choices make the checks this sharp:
# - uphill directions (`uphill`) and the coordinate of the largest entry: the former random
#   Gaussian directions and first/last coordinates met derivatives as small as 4e-5, where the
#   same absolute round-off is a relative 1e-8 to 1e-6 (the former tolerance was 1e-5);
# - the steps. Round-off falls as the step grows, until truncation (tanh: 1e-8 on init_scale at
#   2e-3) or, for relu, kinks: the stencil crossed one at step 1e-4 along init_scale[0], at 3e-4
#   along the uphill directions of init_scale and at 4 lattice units of gamma, none at the steps
#   chosen (counted as sign changes of every hidden pre-activation over the run between
#   x - 2h u and x + 2h u).
STEP = {"tanh": 3e-4, "relu": 3e-5}
GAMMA_STEP = {"tanh": 4 * 2.0**-16, "relu": 2.0**-16}  # gamma stays on its lattice n / 2**16
RTOL = {"tanh": 1e-8, "relu": 1e-7}


def valid_loss_after_training(case, **changes):
    """f(w_T): train the case with some inputs replaced, from scratch, and evaluate."""
    return revlearn.valid_loss(case.replace(**changes))


def analytic(case, res, name):
    """The hypergradient with respect to input `name`; for eps (w_0 = s[group] eps) it is
    s[group] d_w0."""
    if name == "eps":
        return case.layout.expand(case.init_scale) * res.d_w0
    return getattr(res, "d_" + name)


def uphill(grad, rng):
    """A random unit direction in the orthant of grad: every entry's derivative adds to grad . u
    with its size, none cancels, so the finite difference is large against its round-off."""
    u = np.sign(grad) * np.abs(rng.standard_normal(grad.shape))
    return u / np.linalg.norm(u)


def fd_check(case, grad, name, rtol=None, coords=None):
    """check_grad of f(w_T) in input `name` of the case against grad: along two uphill directions
    and at grad's largest entry, with the step and the tolerance of the case's activation."""
    x, act, rng = getattr(case, name), case.activation, np.random.default_rng(0)
    if name == "gamma":  # integer directions and a step of 2**-16 units keep gamma on the lattice
        directions = [np.sign(grad) * rng.integers(1, 3, x.shape) for _ in range(2)]
        step = GAMMA_STEP[act]
    else:
        directions, step = [uphill(grad, rng) for _ in range(2)], STEP[act]
    if coords is None:
        coords = [np.unravel_index(np.argmax(np.abs(grad)), grad.shape)]
    return check_grad(lambda x: valid_loss_after_training(case, **{name: x}), x, grad,
                      directions=directions, coords=coords, step=step,
                      rtol=RTOL[act] if rtol is None else rtol, name=name)


@pytest.fixture
def case_and_result(activation):
    case = revlearn.make_case(small_spec(activation=activation, grad_train_inputs=True))
    return case, revlearn.hypergradient(case)


KINDS = ["alpha", "gamma", "init_scale", "l2", "eps", "X_train"]


@pytest.mark.parametrize("name", KINDS)
def test_hypergradient_matches_finite_differences(case_and_result, name):
    case, res = case_and_result
    fd_check(case, analytic(case, res, name), name)


def test_per_weight_l2_hypergradient_matches_finite_differences(activation):
    case = revlearn.make_case(small_spec(activation=activation, l2_per_weight=True))
    res = revlearn.hypergradient(case)
    assert res.d_l2.shape == (case.P,)
    fd_check(case, res.d_l2, "l2")


def test_hypergradient_with_per_step_and_group_schedules(activation, rng):
    T, G = 24, 6
    case = revlearn.make_case(small_spec(
        activation=activation, alpha=rng.uniform(0.05, 0.5, (T, G)).tolist(),
        gamma=rng.uniform(0.5, 0.99, (T, G)).tolist(), init_scale=rng.uniform(0.2, 0.6, G).tolist(),
        l2=rng.uniform(0, 0.05, G).tolist()))
    res = revlearn.hypergradient(case)
    fd_check(case, res.d_alpha, "alpha")
    fd_check(case, res.d_gamma, "gamma")


@pytest.mark.parametrize("name", KINDS)
def test_a_hypergradient_off_by_1e_6_is_caught(case_and_result, name):
    # negative control: the check above fails for a hypergradient scaled by 1 + 1e-6
    case, res = case_and_result
    with pytest.raises(revlearn.GradientCheckError, match="analytic"):
        fd_check(case, analytic(case, res, name) * (1 + 1e-6), name)


def test_reversible_and_stored_agree(case_and_result):
    case, rev = case_and_result
    sto = revlearn.hypergradient(case, method="stored")
    assert rev.exact_recovery is True and sto.exact_recovery is None  # stored: nothing reversed
    assert rev.valid_loss == pytest.approx(sto.valid_loss, rel=1e-10)
    assert rev.valid_loss == revlearn.valid_loss(case)
    for key in OUTPUTS:
        a, b = getattr(rev, key), getattr(sto, key)
        assert np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b)), key


def test_result_has_the_design_shapes(case_and_result):
    case, res = case_and_result
    T, G, P = case.T, case.G, case.P
    assert res.w_final.shape == (P,) and res.d_w0.shape == (P,)
    assert res.d_alpha.shape == res.d_gamma.shape == (T, G)
    assert res.d_init_scale.shape == res.d_l2.shape == (G,)
    assert res.d_X_train.shape == case.X_train.shape
    assert res.train_losses.shape == (T,)
    assert isinstance(res.valid_loss, float) and isinstance(res.buffer_bits, int)
    assert revlearn.hypergradient(case.replace(grad_train_inputs=False)).d_X_train is None


def test_train_returns_the_hypergradient_runs_final_weights(small_case):
    res = revlearn.hypergradient(small_case)
    trained = revlearn.train(small_case)
    assert np.array_equal(trained.w_final, res.w_final)
    assert np.array_equal(trained.train_losses, res.train_losses)
    plain = revlearn.train(small_case, exact=False)
    assert np.allclose(plain.w_final, trained.w_final, rtol=0, atol=1e-12)
    assert trained.train_losses[-1] < trained.train_losses[0]


def long_case(gamma, T=1000, seed=0):
    return revlearn.make_case(dict(layer_sizes=[5, 6, 4, 3], n_train=40, n_valid=20, n_iters=T,
                                   batch_size=8, seed=seed, alpha=0.05, gamma=gamma,
                                   init_scale=0.3, l2=0.001))


def test_exact_recovery_after_1000_steps_with_extreme_gammas(rng):
    T, G = 1000, 6
    gamma = rng.uniform(2.0**-16, 1.0, (T, G))
    gamma[::7] = 1.0
    gamma[3::11] = 2.0**-16
    gamma[5::13, 2] = 3 * 2.0**-16
    case = long_case(gamma)
    assert set(fixedpoint.quantize_gamma(case.gamma[:, 0])) >= {1, fixedpoint.D}
    res = revlearn.hypergradient(case)
    assert res.exact_recovery  # w_0 bit for bit, stack empty, every lane at its start
    assert all(np.all(np.isfinite(getattr(res, k))) for k in OUTPUTS if k != "d_X_train")


def test_float64_reversal_does_not_recover_w0():
    # negative control: the same 1000 steps undone in float64 arithmetic miss w_0
    case = long_case(0.9)
    lay, T = case.layout, case.T
    w, v = case.w0, np.zeros(case.P)
    alpha, gamma = lay.expand(case.alpha[0]), lay.expand(case.gamma[0])

    def grad(t, w):
        rows = case.batches[t]
        g = mlp.loss_grad(w, case.X_train[rows], case.y_train[rows], lay, case.activation)[1]
        return g + case.lam * w

    for t in range(T):
        v = gamma * v - (1 - gamma) * grad(t, w)
        w = w + alpha * v
    for t in range(T - 1, -1, -1):
        w = w - alpha * v
        v = (v + (1 - gamma) * grad(t, w)) / gamma
    assert not np.array_equal(w, case.w0)
    assert np.max(np.abs(w - case.w0)) > 1e-3


def test_buffer_size_is_within_the_bound_at_gamma_09():
    case = long_case(0.9)
    res = revlearn.hypergradient(case)
    T, P = case.T, case.P
    bound = T * P * np.log2(1 / case.gamma[0, 0])
    assert res.exact_recovery
    assert res.buffer_bits <= 1.1 * bound + 96 * P
    assert res.buffer_bits >= bound  # a negative control on the accounting itself


def test_unknown_method_or_backend_is_refused(small_case):
    with pytest.raises(revlearn.InputError, match="unknown method 'exact'.*'reversible'"):
        revlearn.hypergradient(small_case, method="exact")
    with pytest.raises(revlearn.InputError, match="unknown backend 'cuda'"):
        revlearn.hypergradient(small_case, backend="cuda")


def test_stored_method_refuses_a_trajectory_larger_than_memory(monkeypatch):
    case = long_case(0.9, T=10)
    monkeypatch.setattr(revlearn.sgd.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096,
                                                                 "SC_PHYS_PAGES": 1}[name])
    with pytest.raises(revlearn.InputError, match="'stored' keeps .* use method='reversible'"):
        revlearn.hypergradient(case, method="stored")
    assert revlearn.hypergradient(case).exact_recovery


def test_leaving_the_fixed_point_range_names_step_and_group():
    case = revlearn.make_case(small_spec(alpha=[[0.3] * 6] * 23 + [[0.3, 0.3, 1e6, 0.3, 0.3, 0.3]]))
    with pytest.raises(revlearn.TrainingError, match=r"step 23: W2 \(group 2\).*smaller alpha"):
        revlearn.hypergradient(case)


def test_initialisation_outside_the_range_is_reported():
    case = revlearn.make_case(small_spec(init_scale=1e4))
    with pytest.raises(revlearn.TrainingError, match="initialisation.*init_scale"):
        revlearn.train(case)


def test_non_finite_gradient_names_the_step():
    case = revlearn.make_case(small_spec(activation="relu", init_scale=1.0))
    X = case.X_train.copy()
    X[case.batches[5]] = 1e308  # finite inputs whose activations overflow at step 5 only
    X[case.batches[:5].ravel()] = case.X_train[case.batches[:5].ravel()]
    with pytest.raises(revlearn.TrainingError, match="step 5: the gradient is not finite"):
        revlearn.hypergradient(case.replace(X_train=X))


# --- exact_recovery can come out False: one bit wrong anywhere in the state -------------------

def reversed_after(case, corrupt):
    """exact_recovery of a reversal whose state after Algorithm 1 was corrupted by corrupt(W, V,
    buf) (in place), and the same without corruption as the control."""
    from revlearn import momentum, sgd
    from revlearn.threads import SERIAL
    be = sgd.get_backend("numpy")
    W, V, buf, _ = sgd.train_exact(case, be, SERIAL)
    corrupt(W, V, buf)
    traj = momentum.Reversal(be, SERIAL, W, V, buf)
    dw = sgd.Passes(case, be, SERIAL).grad(be.from_fixed(W), case.X_valid, case.y_valid)[1]
    sgd.reverse(case, be, SERIAL, traj, dw)
    return traj.recovered(case)


@pytest.mark.parametrize("where", ["stack word", "lane state", "V entry", "W entry"])
def test_exact_recovery_is_false_when_one_bit_of_the_state_is_wrong(where):
    case = revlearn.make_case(small_spec(n_iters=200))  # long enough for words on the stack

    def corrupt(W, V, buf):
        if where == "stack word":
            assert buf.top[0] > 0
            buf.stack[0, buf.top[0] // 2] ^= 1
        elif where == "lane state":
            buf.x[7] ^= 1 << 3
        elif where == "V entry":
            V[11] ^= 1
        else:
            W[5] ^= 1

    assert reversed_after(case, lambda W, V, buf: None) is True
    assert reversed_after(case, corrupt) is False


# --- ... and revlearn.hypergradient says so: a corruption injected on the public path ---------

def corrupting(be, optimizer, where, T):
    """Backend be whose exact step flips one bit of the state it returns after step T - 1 (the
    end of Algorithm 1), so that the reversal starts from a wrong state."""
    def wrap(forward):
        steps = []

        def step(W, state, buf, *rest):
            W, state, buf, w, bad = forward(W, state, buf, *rest)
            steps.append(None)
            if len(steps) == T:
                flip(where, W, state, buf)
            return W, state, buf, w, bad
        return step
    if optimizer == "adam":
        return be._replace(adam=be.adam._replace(forward=wrap(be.adam.forward)))
    return be._replace(forward=wrap(be.forward))


def flip(where, W, state, buf):
    if where == "stack word":
        assert buf.top[0] > 0
        buf.stack[0, buf.top[0] // 2] ^= 1
    elif where == "lane state":
        buf.x[7] ^= 1 << 3
    elif where == "W entry":
        W[5] ^= 1
    else:  # the optimizer's state: V, or Adam's m (its low word)
        (state.m.L if hasattr(state, "m") else state)[11] ^= 1


BACKEND_MODULES = [("numpy", "revlearn.backends", "NUMPY"),
                   pytest.param("numba", "revlearn.kernels", "NUMBA", marks=needs_numba)]


def corrupted_case(optimizer, n_iters):
    spec = small_spec(n_iters=n_iters)
    if optimizer == "adam":  # beta1 0.5: a bit per parameter per step, words on the stacks
        del spec["gamma"]
        spec.update(optimizer="adam", alpha=0.02, beta1=0.5, beta2=0.99, epsilon=1e-4)
    return revlearn.make_case(spec)


@pytest.mark.parametrize("where", ["stack word", "lane state", "state entry", "W entry"])
@pytest.mark.parametrize("backend, module, attr", BACKEND_MODULES)
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_hypergradient_reports_a_reversal_that_missed_the_start(optimizer, backend, module, attr,
                                                               where, monkeypatch):
    case = corrupted_case(optimizer, 300 if optimizer == "momentum" else 40)
    assert revlearn.hypergradient(case, backend=backend).exact_recovery is True  # the control
    home = importlib.import_module(module)
    monkeypatch.setattr(home, attr, corrupting(getattr(home, attr), optimizer, where, case.T))
    assert revlearn.hypergradient(case, backend=backend).exact_recovery is False


@pytest.mark.parametrize("backend, module, attr", BACKEND_MODULES)
def test_a_reversal_that_leaves_the_range_is_a_clear_error(backend, module, attr, monkeypatch):
    # over 300 steps Adam's wrong state grows until some s_t comes out negative
    case = corrupted_case("adam", 300)
    home = importlib.import_module(module)
    monkeypatch.setattr(home, attr, corrupting(getattr(home, attr), "adam", "W entry", case.T))
    with np.errstate(invalid="ignore"), pytest.raises(
            revlearn.ReversalError, match=r"^step \d+ of the reverse pass: entry \d+ left the "
            r"fixed-point range .*its state was not the one training ended in"):
        revlearn.hypergradient(case, backend=backend)
