"""Adam: hypergradients against finite differences of whole training runs (DESIGN §9.1's reverse
pass, line by line), exact recovery of w_0, m_0 = s_0 = 0 and the empty buffer, the buffer
against its bound, the float64 trajectory, fixed point against float64 Adam, and bad specs."""

import json

import numpy as np
import pytest
from autograd.extend import defvjp, primitive
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import revlearn
from revlearn import adam, check_grad, cli, mlp, sgd, trace
from revlearn.fixedpoint import LIMIT, D
from revlearn.threads import SERIAL

import reference
from conftest import needs_numba, small_spec
from quadratic import quadratic_case

OUTPUTS = ("w_final", "d_alpha", "d_beta1", "d_beta2", "d_epsilon", "d_init_scale", "d_l2",
           "d_w0", "d_X_train")
UNIT = 2.0**-16  # the lattice of the betas


def adam_spec(**changes):
    """small_spec with Adam: alpha 0.02, beta1 0.9, beta2 0.99, epsilon 1e-4 (T = 24)."""
    spec = small_spec(optimizer="adam", alpha=0.02, beta1=0.9, beta2=0.99, epsilon=1e-4)
    del spec["gamma"]
    spec.update(changes)
    return spec


# Finite differences of whole training runs (fourth-order stencil), uphill directions and the
# coordinate of the largest entry (as tests/test_sgd.py). Measured on the cases below, largest
# relative error over the three rows of each check, at the steps chosen (STEP):
#
#   check          tanh             relu            step (tanh, relu)
#   alpha          6.3e-12          1.0e-11         3e-5
#   beta1          7.0e-12          6.1e-11         4 and 1 lattice units of 2**-16
#   beta2          1.8e-11          5.3e-11         1 lattice unit
#   epsilon        6.7e-11          2.0e-10         1e-6 (epsilon 1e-4)
#   init_scale     2.6e-11          2.2e-11         3e-5
#   l2 per group   8.0e-11          5.7e-11         3e-6
#   l2 per weight  5.0e-11          4.5e-10         1e-5, 3e-6
#   eps (d_w0)     2.6e-11          2.4e-11         1e-4
#   X_train        7.1e-11          6.7e-11         1e-4
#   schedules      alpha 2.2e-12, 3.8e-10 (relu at step 1e-6); beta1 7.4e-11, 6.4e-10; beta2
#                  4.6e-11, 1.9e-10; epsilon 8.8e-11, 1.8e-10
#
# The steps are those where round-off (~1e-16 / step) and truncation (O(step**4)) balance:
# - beta2 = 0.99, not torch's 0.999: the bias correction c2_t = 1 - beta2**(t+1) ~ (t+1)(1 -
#   beta2) moves by a relative 2**-16 / (1 - beta2) per lattice unit, 6 % at 0.999, and the
#   stencil's truncation error with it (at 0.999: 1e-7 at one unit, 3e-9 at 0.99 and 4 units);
# - epsilon = 1e-4, not 1e-8: f varies with epsilon on the scale of the smallest sqrt(s) near
#   it, and at 1e-8 no step is both small against that and large against round-off (4e-8 to
#   8e-8 at the best step, 3e-9);
# - relu: f is discontinuous wherever a unit's pre-activation changes sign at some step (the
#   gradient jumps, and Adam's normalised update turns a small jump into one of about alpha),
#   and a stencil that crosses such a point is off by 1e-2 to 1 (alpha at 3e-5 in the
#   schedules, beta2 at 4 units). Hence relu's smaller steps, and, for the betas, whose step
#   cannot go below one lattice unit, directions on few entries (the 2 and the 8 largest of the
#   hypergradient) rather than on all of them (uphill over all 144 entries crossed such points in
#   the schedules at one unit).
# Torch's defaults are checked too, more loosely (test_at_torch_defaults...). RTOL is 100 times
# the worst row above, and a hypergradient off by a relative 1e-6 fails (negative controls).
STEP = {"alpha": (3e-5, 3e-5), "beta1": (4 * UNIT, UNIT), "beta2": (UNIT, UNIT),
        "epsilon": (1e-6, 1e-6), "init_scale": (3e-5, 3e-5), "l2": (3e-6, 3e-6),
        "eps": (1e-4, 1e-4), "X_train": (1e-4, 1e-4)}
PER_WEIGHT_L2_STEP = (1e-5, 3e-6)
SCHEDULE_STEP = dict(STEP, alpha=(3e-5, 1e-6))
RTOL = {"tanh": 1e-8, "relu": 5e-8}
ACT = {"tanh": 0, "relu": 1}


def analytic(case, res, name):
    if name == "eps":  # w_0 = s[group] eps
        return case.layout.expand(case.init_scale) * res.d_w0
    return getattr(res, "d_" + name)


def uphill(grad, rng):
    u = np.sign(grad) * np.abs(rng.standard_normal(grad.shape))
    return u / np.linalg.norm(u)


def on_largest(grad, k):
    """An integer uphill direction on the k largest entries of grad (1, 2, 1, 2, ... units)."""
    u = np.zeros(grad.shape)
    top = np.argsort(-np.abs(grad.ravel()), kind="stable")[:k]
    u.flat[top] = np.sign(grad.flat[top]) * (1 + np.arange(len(top)) % 2)
    return u


def fd_check(case, grad, name, step=None, rtol=None):
    """check_grad of f(w_T) along two uphill directions and at grad's largest entry; for the
    betas, which live on the lattice n / 2**16, integer directions on the 2 and the 8 largest
    entries of grad (see the note above STEP)."""
    x, act, rng = getattr(case, name), case.activation, np.random.default_rng(0)
    if name in ("beta1", "beta2"):
        directions = [on_largest(grad, 2), on_largest(grad, 8)]
    else:
        directions = [uphill(grad, rng) for _ in range(2)]
    coords = [np.unravel_index(np.argmax(np.abs(grad)), grad.shape)]
    return check_grad(lambda x: revlearn.valid_loss(case.replace(**{name: x})), x, grad,
                      directions=directions, coords=coords,
                      step=STEP[name][ACT[act]] if step is None else step,
                      rtol=RTOL[act] if rtol is None else rtol, name=name)


@pytest.fixture(scope="module", params=["tanh", "relu"])
def case_and_result(request):
    case = revlearn.make_case(adam_spec(activation=request.param, grad_train_inputs=True))
    return case, revlearn.hypergradient(case)


KINDS = list(STEP)


@pytest.mark.parametrize("name", KINDS)
def test_hypergradient_matches_finite_differences(case_and_result, name):
    case, res = case_and_result
    fd_check(case, analytic(case, res, name), name)


@pytest.mark.parametrize("name", KINDS)
def test_a_hypergradient_off_by_1e_6_is_caught(case_and_result, name):
    # negative control: the check above fails for a hypergradient scaled by 1 + 1e-6
    case, res = case_and_result
    with pytest.raises(revlearn.GradientCheckError, match="analytic"):
        fd_check(case, analytic(case, res, name) * (1 + 1e-6), name)


def test_per_weight_l2_hypergradient_matches_finite_differences(activation):
    case = revlearn.make_case(adam_spec(activation=activation, l2_per_weight=True))
    res = revlearn.hypergradient(case)
    assert res.d_l2.shape == (case.P,)
    fd_check(case, res.d_l2, "l2", step=PER_WEIGHT_L2_STEP[ACT[activation]])


def schedule_spec(activation, rng):
    T, G = 24, 6
    return adam_spec(activation=activation, alpha=rng.uniform(0.005, 0.03, (T, G)).tolist(),
                     beta1=rng.uniform(0.5, 0.95, (T, G)).tolist(),
                     beta2=rng.uniform(0.9, 0.995, (T, G)).tolist(),
                     epsilon=rng.uniform(1e-5, 1e-3, G).tolist(),
                     init_scale=rng.uniform(0.2, 0.6, G).tolist(),
                     l2=rng.uniform(0, 0.05, G).tolist())


@pytest.mark.parametrize("name", ["alpha", "beta1", "beta2", "epsilon"])
def test_hypergradient_with_per_step_and_group_schedules(activation, rng, name):
    case = revlearn.make_case(schedule_spec(activation, rng))
    res = revlearn.hypergradient(case)
    fd_check(case, getattr(res, "d_" + name), name, step=SCHEDULE_STEP[name][ACT[activation]])


# torch.optim.Adam's defaults: beta2 0.999 (effective 65470 / 2**16) and epsilon 1e-8. Measured
# largest relative errors (tanh, relu): alpha 2.3e-12, 1.1e-11; beta1 2.9e-11, 1.3e-10 (4
# units); init_scale 8.4e-12, 5.1e-11; beta2 9.8e-8, 1.0e-7 (one lattice unit is a 6 % change of
# the bias correction); epsilon 4.3e-8, 8.2e-8 (step 3e-9, truncation against round-off). So
# beta2 and epsilon are held to 5e-7 here, where a relative error of 1e-6 still fails (the
# negative control in the test); the others to 100 times their worst.
DEFAULTS_RTOL = {"alpha": 1e-9, "beta1": 1e-8, "beta2": 5e-7, "epsilon": 5e-7,
                 "init_scale": 5e-9}
DEFAULTS_STEP = {"alpha": 3e-5, "beta1": 4 * UNIT, "beta2": UNIT, "epsilon": 3e-9,
                 "init_scale": 3e-5}


@pytest.mark.parametrize("name", list(DEFAULTS_STEP))
def test_at_torch_defaults_the_hypergradient_matches_finite_differences(activation, name):
    spec = adam_spec(activation=activation, alpha=0.01)
    for key in ("beta1", "beta2", "epsilon"):
        del spec[key]
    case = revlearn.make_case(spec)
    assert case.beta2[0, 0] == 65470 / D and case.epsilon[0] == 1e-8
    grad = getattr(revlearn.hypergradient(case), "d_" + name)
    fd_check(case, grad, name, step=DEFAULTS_STEP[name], rtol=DEFAULTS_RTOL[name])
    with pytest.raises(revlearn.GradientCheckError):
        fd_check(case, grad * (1 + 1e-6), name, step=DEFAULTS_STEP[name],
                 rtol=DEFAULTS_RTOL[name])


# --- the reversal is exact ----------------------------------------------------------------------

def test_reversible_and_stored_agree(case_and_result):
    # the stored method keeps float64 Adam's trajectory: fixed point against float64 (measured:
    # 7.9e-15 (tanh) and 3.0e-15 (relu) of each output's largest entry, the same valid_loss)
    case, rev = case_and_result
    sto = revlearn.hypergradient(case, method="stored")
    assert rev.exact_recovery is True and sto.exact_recovery is None
    assert rev.d_gamma is None and sto.d_gamma is None
    assert rev.valid_loss == pytest.approx(sto.valid_loss, rel=1e-12)
    for key in OUTPUTS:
        a, b = getattr(rev, key), getattr(sto, key)
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b)), key


def test_result_has_adams_fields_and_shapes(case_and_result):
    case, res = case_and_result
    T, G = case.T, case.G
    assert res.d_alpha.shape == res.d_beta1.shape == res.d_beta2.shape == (T, G)
    assert res.d_epsilon.shape == res.d_init_scale.shape == (G,)
    assert res.d_gamma is None
    assert np.array_equal(revlearn.train(case).w_final, res.w_final)


@st.composite
def adam_specs(draw):
    """Random nets, horizons, per-step per-group betas anywhere on their lattice [1, 2**16 - 1]
    / 2**16, step sizes, epsilons from 1e-12 to 1, and with or without d_X_train."""
    sizes = [draw(st.integers(1, 6))] + draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    sizes.append(draw(st.integers(2, 4)))
    T, G = draw(st.integers(1, 60)), 2 * (len(sizes) - 1)
    n_train = draw(st.integers(4, 20))
    lattice = st.integers(1, D - 1)
    return dict(
        layer_sizes=sizes, activation=draw(st.sampled_from(["tanh", "relu"])),
        n_train=n_train, n_valid=draw(st.integers(1, 10)), n_iters=T,
        batch_size=draw(st.integers(1, n_train)), seed=draw(st.integers(0, 2**32 - 1)),
        optimizer="adam",
        alpha=draw(arrays(np.float64, (T, G), elements=st.floats(0, 0.1))).tolist(),
        beta1=(draw(arrays(np.int64, (T, G), elements=lattice)) / D).tolist(),
        beta2=(draw(arrays(np.int64, (T, G), elements=lattice)) / D).tolist(),
        epsilon=draw(arrays(np.float64, (G,), elements=st.floats(1e-12, 1))).tolist(),
        init_scale=draw(arrays(np.float64, (G,), elements=st.floats(0, 1))).tolist(),
        l2=draw(st.floats(0, 0.1)), grad_train_inputs=draw(st.booleans()))


@given(adam_specs())
def test_reversal_is_exact_and_hypergradients_finite(spec):
    """Exact reversal, or a clean refusal of a run that float64 Adam also blows up: about 1 case
    in 300 of this strategy diverges (epsilon 1e-12 with s near 0: steps of alpha m / epsilon),
    and there float64 Adam ends at |w| from 2,049 to 1.6e11 (CI's case, 11 of 3,000 measured)."""
    case = revlearn.make_case(spec)
    try:
        res = revlearn.hypergradient(case)
    except revlearn.errors.TrainingError as error:
        assert "left the fixed-point range" in str(error)
        w_float = revlearn.train(case, exact=False).w_final
        assert not np.all(np.abs(w_float) < LIMIT / 2), np.abs(w_float).max()
        return
    assert res.exact_recovery  # w_0 bit for bit, m_0 = s_0 = 0, every stack empty, lanes at X0
    for key in OUTPUTS[1:]:
        if getattr(res, key) is not None:
            assert np.all(np.isfinite(getattr(res, key))), key
    assert np.array_equal(res.w_final, revlearn.train(case).w_final)


def long_case(T=1000, **changes):
    spec = dict(layer_sizes=[5, 6, 4, 3], n_train=40, n_valid=20, n_iters=T, batch_size=8,
                seed=0, optimizer="adam", alpha=0.01, init_scale=0.3, l2=0.001)
    spec.update(changes)
    return revlearn.make_case(spec)


def test_exact_recovery_after_1000_steps_with_extreme_betas(rng):
    T, G = 1000, 6
    beta1, beta2 = rng.uniform(UNIT, 1 - UNIT, (T, G)), rng.uniform(UNIT, 1 - UNIT, (T, G))
    beta1[::7], beta2[3::11] = 1 - UNIT, UNIT
    beta1[5::13, 2], beta2[::5] = UNIT, 1 - UNIT
    case = long_case(beta1=beta1.tolist(), beta2=beta2.tolist(), epsilon=1e-8)
    res = revlearn.hypergradient(case)
    assert res.exact_recovery
    assert all(np.all(np.isfinite(getattr(res, k))) for k in OUTPUTS[:-1])


@pytest.mark.parametrize("beta1, beta2", [(0.9, 0.999), (0.5, 0.99)])
def test_buffer_size_is_within_the_bound(beta1, beta2):
    # sum_t (log2(1/beta1_t) + log2(1/beta2_t)) per parameter, plus DESIGN §4's overhead of the
    # 64-bit lane state and about one word in flight: measured 6.5 and 9.5 bits per parameter
    # above the bound plus 64 (0.152 + 0.0015 and 1 + 0.0145 bits per parameter per step)
    case = long_case(beta1=beta1, beta2=beta2)
    res = revlearn.hypergradient(case)
    T, P = case.T, case.P
    bound = T * P * (np.log2(1 / case.beta1[0, 0]) + np.log2(1 / case.beta2[0, 0]))
    assert res.exact_recovery
    assert res.buffer_bits - 64 * P <= bound + 32 * P
    assert res.buffer_bits - 64 * P >= bound  # a negative control on the accounting itself


def reversed_after(case, corrupt):
    """exact_recovery of a reversal whose state after Algorithm 1 was corrupted by corrupt(W,
    state, buf) (in place), and the same without corruption as the control."""
    be = sgd.get_backend("numpy")
    W, state, buf, _ = sgd.train_exact(case, be, SERIAL)
    corrupt(W, state, buf)
    traj = adam.Reversal(be, SERIAL, W, state, buf)
    dw = sgd.Passes(case, be, SERIAL).grad(be.from_fixed(W), case.X_valid, case.y_valid)[1]
    sgd.reverse(case, be, SERIAL, traj, dw)
    return traj.recovered(case)


@pytest.mark.parametrize("where", ["stack word", "lane state", "m high", "m low", "s high",
                                   "s low", "W entry"])
def test_exact_recovery_is_false_when_one_bit_of_the_state_is_wrong(where):
    case = revlearn.make_case(adam_spec(n_iters=300))  # long enough for words on the stack

    def corrupt(W, state, buf):
        if where == "stack word":
            assert buf.top[0] > 0
            buf.stack[0, buf.top[0] // 2] ^= 1
        elif where == "lane state":
            buf.x[7] ^= 1 << 3
        elif where == "W entry":
            W[5] ^= 1
        else:
            moment = state.m if where[0] == "m" else state.s
            (moment.H if where.endswith("high") else moment.L)[11] ^= 1

    assert reversed_after(case, lambda W, state, buf: None) is True
    # a wrong state takes the reversal elsewhere: it ends away from the start, or (when s_t
    # comes out negative, which a true reversal never gives) leaves the fixed-point range
    with np.errstate(invalid="ignore"):
        try:
            recovered = reversed_after(case, corrupt)
        except revlearn.ReversalError:
            recovered = False
    assert recovered is False


def test_float64_adam_reversal_does_not_recover_w0():
    # negative control: Adam undone in float64 arithmetic misses w_0
    case = long_case(T=300, beta1=0.9, beta2=0.999)
    lay, T, sched = case.layout, case.T, adam.Schedule(case)

    def grad(t, w):
        rows = case.batches[t]
        g = mlp.loss_grad(w, case.X_train[rows], case.y_train[rows], lay, case.activation)[1]
        return g + case.lam * w

    w, state = case.w0, adam.Moments(np.zeros(case.P), np.zeros(case.P))
    for t in range(T):
        w, state = adam.float_step(w, state, grad(t, w), sched.at(t))
    m, s = state
    for t in range(T - 1, -1, -1):
        h = sched.at(t)
        w = w + h.alpha * adam.increment(m, np.abs(s), h)[0]  # s < 0 happens: round-off
        g = grad(t, w)
        m, s = (m - (1 - h.b1) * g) / h.b1, (s - (1 - h.b2) * g * g) / h.b2
    assert not np.array_equal(w, case.w0)
    assert np.max(np.abs(w - case.w0)) > 1e-6


# --- what the definition says about corners ----------------------------------------------------

def test_entries_whose_gradient_is_always_zero_stay_put_and_have_finite_hypergradients():
    # an input column that is 0 in every training row: the weights it feeds have g = 0 (l2 = 0),
    # so m = s = 0, u = 0 and the derivative of sqrt at s = 0 is taken as 0
    case = revlearn.make_case(adam_spec(l2=0.0))
    X = case.X_train.copy()
    X[:, 0] = 0.0
    case = case.replace(X_train=X)
    res = revlearn.hypergradient(case)
    fan_out = case.layer_sizes[1]
    w0 = revlearn.fixedpoint.from_fixed(revlearn.fixedpoint.to_fixed(case.w0))
    assert np.array_equal(res.w_final[:fan_out], w0[:fan_out])
    assert res.exact_recovery
    for key in OUTPUTS[:-1]:
        assert np.all(np.isfinite(getattr(res, key))), key
    fd_check(case, res.d_alpha, "alpha")


def tiny_gradient_case():
    """Input column 0 scaled by 1e-20: the weights it feeds have gradients near 1e-21, so m =
    (1 - beta1) g (about 1e-22) is on the fixed point's grid of 2**-100 while s = (1 - beta2) g g
    (about 1e-44) rounds to 0: m != 0 with s = 0."""
    case = revlearn.make_case(adam_spec(l2=0.0))
    X = case.X_train.copy()
    X[:, 0] *= 1e-20
    return case.replace(X_train=X)


def test_an_entry_with_m_nonzero_and_s_zero_takes_the_square_roots_derivative_as_0():
    case = tiny_gradient_case()
    fan_out = case.layer_sizes[1]
    _, state, _, _ = sgd.train_exact(case, sgd.get_backend("numpy"), SERIAL)
    m, s = (revlearn.wide.from_wide(x)[:fan_out] for x in state)
    assert np.all(m != 0) and np.all(s == 0)  # the corner this test is about
    res = revlearn.hypergradient(case)
    assert res.exact_recovery
    for key in OUTPUTS[:-1]:
        assert np.all(np.isfinite(getattr(res, key))), key
    # The reference, in float64, keeps s near 1e-44 and the square root's derivative finite
    # there; its share of the answer is round-off. Measured: 1.9e-15 of each output's largest
    # entry, and 2.4e-14 entry by entry in d_w0 at the weights of column 0. The tolerances leave
    # a factor of 10; an answer off by a relative 1e-12 fails them (the control).
    inputs = {k: getattr(case, k) for k in reference.ADAM_INPUT_KEYS}
    theirs = reference.answers(dict(inputs, optimizer="adam"))

    def errors(off=1.0):
        worst = {k: np.max(np.abs(getattr(res, k) * off - theirs[k])) / np.max(np.abs(theirs[k]))
                 for k in OUTPUTS[:-1]}
        corner = np.abs(res.d_w0[:fan_out] * off - theirs["d_w0"][:fan_out])
        return worst, np.max(corner / np.abs(theirs["d_w0"][:fan_out]))
    worst, corner = errors()
    assert max(worst.values()) <= 2e-14 and corner <= 3e-13, (worst, corner)
    worst, corner = errors(1 + 1e-12)
    assert min(worst.values()) > 2e-14 and corner > 3e-13
    fd_check(case, res.d_alpha, "alpha")


def test_the_square_roots_infinite_derivative_at_s_zero_would_break_the_answer(monkeypatch):
    # negative control for the test above: du/ds' = -q / (2 c2 r) taken as it is where r = 0
    case = tiny_gradient_case()
    plain = adam.adjoint_before

    def infinite_at_zero(adj, u, den, r, h, offsets):
        du, q = -(h.alpha * adj.dw), u / den
        out = plain(adj, u, den, r, h, offsets)
        zero = r == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            adj.ds[zero] -= (du * q)[zero] / ((2.0 * h.c2) * r)[zero]
        return out
    monkeypatch.setattr(adam, "adjoint_before", infinite_at_zero)
    with np.errstate(invalid="ignore", over="ignore"):
        res = revlearn.hypergradient(case, backend="numpy")
    assert not np.all(np.isfinite(res.d_alpha))


def test_the_weights_move_by_about_alpha_per_step_as_adam_does():
    # Adam's first step is alpha sign(g) where |g| >> epsilon: u_0 = g / (|g| + eps)
    case = revlearn.make_case(adam_spec(n_iters=1, epsilon=1e-12, l2=0.0))
    res = revlearn.hypergradient(case)
    g = mlp.loss_grad(case.w0, case.X_train[case.batches[0]], case.y_train[case.batches[0]],
                      case.layout, case.activation)[1]
    moved = case.w0 - res.w_final
    big = np.abs(g) > 1e-6
    assert np.allclose(moved[big], 0.02 * np.sign(g[big]), rtol=1e-6, atol=0)


def test_fixed_point_adam_is_float64_adam_to_its_grid():
    # exact=True against plain float64 Adam: w_T differs by the rounding of w to 2**-52 (m and s
    # are held to 2**-100), measured 1.6e-15 of the largest weight here
    case = revlearn.make_case(adam_spec(n_iters=100, epsilon=1e-8, beta2=0.999))
    exact, plain = revlearn.train(case), revlearn.train(case, exact=False)
    w = np.abs(plain.w_final).max()
    assert 0 < np.max(np.abs(exact.w_final - plain.w_final)) <= 1e-13 * w


# --- specs ---------------------------------------------------------------------------------

def test_betas_are_stored_quantised_and_the_defaults_are_torchs():
    spec = adam_spec()
    for key in ("beta1", "beta2", "epsilon"):
        del spec[key]
    case = revlearn.make_case(spec)
    assert case.optimizer == "adam" and case.gamma is None
    assert np.all(case.beta1 == 58982 / D) and np.all(case.beta2 == 65470 / D)
    assert case.beta1.shape == case.beta2.shape == (24, 6) and case.epsilon.shape == (6,)
    assert np.all(case.epsilon == 1e-8)
    assert case.spec["optimizer"] == "adam" and case.spec["beta2"] == 0.999
    assert "gamma" not in case.spec
    # a momentum spec completes as it did before Adam (the conformance suite pins its text)
    momentum = revlearn.make_case(small_spec())
    assert momentum.optimizer == "momentum" and "optimizer" not in momentum.spec
    assert "optimizer" not in revlearn.make_case(dict(small_spec(), optimizer="momentum")).spec


@pytest.mark.parametrize("change, message", [
    (dict(beta1=1.0), r"beta1\[0, 0\] = 1.0 is outside \[2\*\*-16, 1 - 2\*\*-16\]"),
    (dict(beta1=0.0), r"beta1\[0, 0\] = 0.0 is outside"),
    (dict(beta2=1 - 2.0**-17), r"beta2\[0, 0\] = 0.99999\d* is outside"),
    (dict(beta2=float("nan")), r"beta2\[0, 0\] = nan is outside"),
    (dict(beta1=[[0.9] * 6] * 23 + [[0.9] * 5 + [1.5]]), r"beta1\[23, 5\] = 1.5 is outside"),
    (dict(epsilon=0.0), r"epsilon\[0\] = 0.0 is not > 0"),
    (dict(epsilon=[1e-8] * 5 + [-1.0]), r"epsilon\[5\] = -1.0 is not > 0"),
    (dict(epsilon=[1e-8] * 5), r"epsilon has shape \(5,\)"),
    (dict(beta1=[0.9] * 6), r"beta1 has shape \(6,\)"),
    (dict(gamma=0.9), r"'gamma' belong to another optimizer; optimizer 'adam' takes 'beta1', "
                      "'beta2', 'epsilon' instead"),
    (dict(optimizer="sgd"), r"'optimizer' must be one of 'momentum', 'adam'; received str \"sgd\""),
    (dict(optimizer=None), r"'optimizer' must be one of"),
    (dict(beta1="0.9"), r"spec key 'beta1' must be a number or an array"),
])
def test_bad_adam_specs_are_refused_in_one_line(change, message):
    with pytest.raises(revlearn.InputError, match=message) as e:
        revlearn.make_case(adam_spec(**change))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key", ["beta1", "beta2", "epsilon"])
def test_momentum_refuses_adams_keys(key):
    with pytest.raises(revlearn.InputError, match=f"'{key}' belong to another optimizer; "
                                                  "optimizer 'momentum' takes 'gamma' instead"):
        revlearn.make_case(small_spec(**{key: 0.9}))


def test_a_case_checks_its_optimizer_keys(case_and_result):
    case, _ = case_and_result
    with pytest.raises(revlearn.InputError, match="gamma is momentum's; optimizer 'adam' takes"):
        case.replace(gamma=np.full((case.T, case.G), 0.9))
    with pytest.raises(revlearn.InputError, match="unknown optimizer 'rmsprop'"):
        case.replace(optimizer="rmsprop")
    with pytest.raises(revlearn.InputError, match="needs gamma"):
        case.replace(optimizer="momentum", beta1=None, beta2=None, epsilon=None)
    with pytest.raises(revlearn.InputError, match=r"epsilon\[2\] = 0.0 is not > 0"):
        case.replace(epsilon=np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]))


def test_bad_adam_spec_is_one_line_and_exit_2_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(adam_spec(beta2=1.0)))
    code = cli.main(["oracle", str(path), "-o", str(tmp_path / "case.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "beta2[0, 0] = 1.0 is outside" in err
    assert not (tmp_path / "case.npz").exists()


def test_the_memory_estimate_counts_both_decays():
    from revlearn import spec as spec_module
    full = spec_module.complete_spec(adam_spec(n_iters=1000, beta1=0.5, beta2=0.5))
    parts = spec_module.memory_needed(full)
    P = 6 * 8 + 8 + 8 * 7 + 7 + 7 * 3 + 3
    assert parts["information buffer"] == int(2 * 1000 * P * 2.0 / 8)


# --- traces (revlearn oracle --trace) for Adam ---------------------------------------------------

def adam_inputs(path):
    """The inputs of an Adam case file, as tests/reference.py takes them."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in (*reference.ADAM_INPUT_KEYS, "optimizer")}


@primitive
def _scaled_backward(w):
    return w


defvjp(_scaled_backward, lambda ans, w: lambda g: g * (1 + 1e-4))


def adam_bug(where, k):
    """tests/reference.py's Adam step with one bug at step k: beta1 off by a relative 1e-6
    ("forward": w_{k+1} on is wrong), or the backward pass through step k scaling its cotangent
    by 1 + 1e-4 ("reverse": df/dw_t is wrong from t = k down)."""
    def step(t, w, state, L_t, alpha_t, decays_t):
        beta1, beta2, epsilon = decays_t
        if t == k and where == "forward":
            beta1 = beta1 * (1 + 1e-6)
        if t == k and where == "reverse":
            w = _scaled_backward(w)
        return reference.adam_step(t, w, state, L_t, alpha_t, (beta1, beta2, epsilon))
    return step


@pytest.fixture(scope="module")
def adam_trace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adam_trace")
    (folder / "spec.json").write_text(json.dumps(adam_spec(n_iters=13)))
    assert cli.main(["oracle", str(folder / "spec.json"), "-o", str(folder / "case.npz"),
                     "--trace"]) == 0
    return folder


@pytest.mark.parametrize("bug", [None, "forward", "reverse"])
def test_an_adam_trace_is_the_autograd_references_and_a_wrong_step_is_found(
        adam_trace, tmp_path, capsys, bug):
    # dw_trace of an Adam case is df/dw_t with m_t and s_t held: what tests/reference.py's tap
    # keeps. A reference with a bug at step 6 departs at w_7 (forward) or at df/dw_6 (reverse).
    case_path = adam_trace / "case.npz"
    with np.load(case_path) as f:
        steps = f["trace_steps"]
    theirs = reference.answers(adam_inputs(case_path), trace_steps=steps,
                               step=None if bug is None else adam_bug(bug, 6))
    np.savez(tmp_path / "theirs.npz", **theirs)
    capsys.readouterr()
    code = cli.main(["check", str(case_path), str(tmp_path / "theirs.npz")])
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("first divergence"))
    if bug is None:
        assert code == 0 and line.startswith("first divergence: none"), out
    else:
        assert code == 1, out
        at = 7 if bug == "forward" else 6
        assert line.startswith(f"first divergence: {bug} at step {at}:"), out


@pytest.mark.parametrize("backend, threads", [("numpy", 2),
                                              pytest.param("numba", 3, marks=needs_numba)])
def test_an_adam_trace_is_the_same_bits_on_every_backend_and_thread_count(adam_trace, backend,
                                                                            threads):
    case = revlearn.make_case(adam_spec(n_iters=13))
    rec = trace.Recorder(trace.trace_steps(case.T), case.P)
    res = revlearn.hypergradient(case, backend=backend, threads=threads, trace=rec)
    with np.load(adam_trace / "case.npz") as f:
        assert np.array_equal(rec.w, f["w_trace"]) and np.array_equal(rec.dw, f["dw_trace"])
        assert np.array_equal(f["dw_trace"][0], res.d_w0)


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
def test_a_non_finite_gradient_names_the_step_on_both_backends(backend):
    case = revlearn.make_case(adam_spec(activation="relu", init_scale=1.0))
    X = case.X_train.copy()
    X[case.batches[5]] = 1e308  # finite inputs whose activations overflow at step 5 only
    X[case.batches[:5].ravel()] = case.X_train[case.batches[:5].ravel()]
    with pytest.raises(revlearn.TrainingError, match="step 5: the gradient is not finite"):
        revlearn.hypergradient(case.replace(X_train=X), backend=backend)


# --- DESIGN's reverse pass against autodiff, on a quadratic ---------------------------------------

def autograd_on_quadratic(case):
    """d f(w_T) / d (alpha, beta1, beta2, epsilon, init_scale, l2, w_0) by autograd through the
    float64 unroll of Adam (tests/reference.py's step) on the least-squares model of
    tests/quadratic.py, written again here in autograd.numpy."""
    import autograd.numpy as anp
    from autograd import grad

    lay = case.layout
    group = np.repeat(np.arange(lay.G), np.diff(lay.offsets))
    K = case.layer_sizes[-1]

    def ell(w, X, y):
        Z = np.hstack([X, np.ones((len(X), 1))])
        R = anp.dot(Z, anp.reshape(w, (Z.shape[1], K))) - np.eye(K)[y]
        return 0.5 * anp.sum(R * R) / len(y)

    def f(hyper):
        alpha, beta1, beta2, epsilon, init_scale, l2, shift = hyper
        w, state = init_scale[group] * case.eps + shift, (np.zeros(case.P), np.zeros(case.P), 1.0,
                                                          1.0)
        for t in range(case.T):
            def L_t(w):
                return ell(w, case.X_train, case.y_train) + 0.5 * anp.sum(l2[group] * w * w)
            w, state = reference.adam_step(t, w, state, L_t, alpha[t][group],
                                           (beta1[t][group], beta2[t][group], epsilon[group]))
        return ell(w, case.X_valid, case.y_valid)
    names = ("alpha", "beta1", "beta2", "epsilon", "init_scale", "l2")
    hyper = tuple(getattr(case, k) for k in names) + (np.zeros(case.P),)
    return dict(zip((*names, "w0"), grad(f)(hyper), strict=True))


def quadratic_adam_case():
    """Adam with per-step, per-group schedules on the least-squares model, T = 30."""
    rng, T, G = np.random.default_rng(4), 30, 2
    return quadratic_case(T, l2=(0.05, 0.02), adam=(0.9, 0.99, 1e-3)).replace(
        alpha=rng.uniform(0.01, 0.08, (T, G)), beta1=rng.uniform(0.5, 0.95, (T, G)),
        beta2=rng.uniform(0.9, 0.999, (T, G)), epsilon=np.array([1e-3, 3e-4]))


def quadratic_errors(res, want, scale=None):
    """Largest |difference| over the largest |entry|, per hypergradient (one key's answer scaled
    by scale[1] when scale = (key, factor))."""
    out = {}
    for k, w in want.items():
        got = getattr(res, "d_" + k) * (scale[1] if scale and scale[0] == k else 1.0)
        out[k] = np.max(np.abs(got - w)) / np.max(np.abs(w))
    return out


# Measured (largest over the hypergradients): method="stored", DESIGN's reverse pass on the float64
# trajectory, 1.2e-14 (d_epsilon; 8.7e-15 d_beta1); the fixed point 8.6e-14 (d_epsilon: w is
# rounded to 2**-52 at every step). The tolerances leave a factor of 6 to 8; an answer off by a
# relative 1e-12 fails both.
QUADRATIC_RTOL = {"stored": 1e-13, "reversible": 5e-13}


@pytest.fixture(scope="module")
def quadratic_autodiff():
    case = quadratic_adam_case()
    return case, autograd_on_quadratic(case)


@pytest.mark.parametrize("method", ["stored", "reversible"])
def test_the_reverse_pass_is_autodiffs_on_a_quadratic(quadratic_autodiff, method):
    case, want = quadratic_autodiff
    res = revlearn.hypergradient(case, method=method)
    errors = quadratic_errors(res, want)
    assert max(errors.values()) <= QUADRATIC_RTOL[method], errors
    for key in want:  # negative control, at the same tolerance: one answer off by 1e-12
        assert quadratic_errors(res, want, (key, 1 + 1e-12))[key] > QUADRATIC_RTOL[method], key
