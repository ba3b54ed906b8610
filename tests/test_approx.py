"""revlearn.approx: forward mode against the reverse mode and finite differences, and each
approximation where it must be exact (truncation at K = T, DrMAD on a straight path, the implicit
function theorem against its closed form on a quadratic training loss and at convergence, the
greedy step's last entry and its one-step derivative)."""

import json
from pathlib import Path

import numpy as np
import pytest

import revlearn
from revlearn import approx, audit, check_grad, mlp
from revlearn.gradcheck import directional_derivative

from conftest import needs_numba, small_spec
from quadratic import implicit, quadratic_case

FIELDS = ("d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0", "d_X_train")

# Forward mode against the reverse mode's dot product along the same direction, relative error.
# Measured (random Gaussian directions): the small cases below up to 6e-15 (tanh and relu); the
# paper's MNIST net 4e-14 to 1e-11 at T = 100 and 4.5e-12 to 3.0e-10 at T = 1000, against the
# float64 stored method 3e-16 to 1.0e-14 there: the difference is the fixed-point run's rounding,
# which the float64 forward mode does not share. Near chaos (examples/chaos_spec.json, alpha = e,
# T = 100) that rounding is amplified: 1.4e-7 to 5.1e-7 against the exact answer, still 2e-16 to
# 3e-15 against the stored method (docs/approx.md). The issue asks for 1e-7.
RTOL_REVERSE = 1e-7
# Forward mode against fourth-order finite differences of whole (fixed-point) training runs, the
# steps of tests/test_sgd.py, three random unit directions per kind (integer directions on the
# 2**-16 lattice for gamma). Largest relative error measured per kind:
#
#   kind          tanh      relu
#   alpha       1.4e-10   3.3e-09
#   gamma       1.8e-11   5.0e-10
#   init_scale  5.9e-12   9.6e-11
#   l2          1.9e-12   9.3e-11
#   w0          6.9e-11   4.0e-10
#
# (random directions meet smaller derivatives than test_sgd's uphill ones, hence larger relative
# round-off). The tolerances are 30 to 70 times the worst, and a derivative off by 1e-6 fails.
STEP = {"tanh": 3e-4, "relu": 3e-5}
GAMMA_STEP = {"tanh": 4 * 2.0**-16, "relu": 2.0**-16}
RTOL_FD = {"tanh": 1e-8, "relu": 1e-7}


def rel(a, b):
    return abs(a - b) / abs(b)


def relative(a, b):
    """max |a - b| / max |b| over the entries."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def cosine(a, b):
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module", params=["tanh", "relu"])
def solved(request):
    """A small case with the training inputs, its reversible and stored hypergradients."""
    case = revlearn.make_case(small_spec(activation=request.param, grad_train_inputs=True))
    return case, revlearn.hypergradient(case), revlearn.hypergradient(case, method="stored")


# --- forward mode --------------------------------------------------------------------------

def along(case, res, d):
    """(forward mode's derivative, the reverse mode's) along direction d."""
    return approx.forward(case, d).derivative, approx.directional(res, approx.check_direction(
        case, d))


@pytest.mark.parametrize("kinds", [approx.KINDS] + [(k,) for k in approx.KINDS])
def test_forward_mode_agrees_with_the_reverse_mode_along_random_directions(solved, kinds):
    case, rev, _ = solved
    rng = np.random.default_rng(1)
    for _ in range(2):
        forward, reverse = along(case, rev, approx.random_direction(case, rng, kinds))
        assert rel(forward, reverse) <= RTOL_REVERSE, (forward, reverse)
        assert rel(forward * (1 + 1e-6), reverse) > RTOL_REVERSE  # the check can fail


def test_forward_mode_with_schedules_and_per_weight_penalties(rng):
    T, G = 24, 6
    case = revlearn.make_case(small_spec(
        alpha=rng.uniform(0.05, 0.5, (T, G)), gamma=rng.uniform(0.5, 0.99, (T, G)),
        init_scale=rng.uniform(0.2, 0.6, G), l2=rng.uniform(0, 0.05, 143), l2_per_weight=True))
    rev = revlearn.hypergradient(case)
    forward, reverse = along(case, rev, approx.random_direction(case, rng))
    assert rel(forward, reverse) <= RTOL_REVERSE


def test_forward_mode_on_the_mnist_net_agrees_to_the_fixed_point_rounding():
    spec = json.loads((Path(__file__).parents[1] / "examples" / "mnist_spec.json").read_text())
    case = revlearn.make_case({**spec, "n_iters": 20})
    forward, reverse = along(case, revlearn.hypergradient(case),
                             approx.random_direction(case, np.random.default_rng(0)))
    assert 0 < rel(forward, reverse) <= RTOL_REVERSE  # not bit for bit: float64, not fixed point


def fd_along(case, kind, u):
    """The fourth-order finite difference of f(w_T) (fixed-point training) along u in `kind`."""
    act = case.activation
    if kind == "w0":  # w_0 = s[group] eps: move eps by u / s
        return directional_derivative(lambda x: revlearn.valid_loss(case.replace(eps=x)),
                                      case.eps, u / case.layout.expand(case.init_scale),
                                      STEP[act])
    step = GAMMA_STEP[act] if kind == "gamma" else STEP[act]
    return directional_derivative(lambda x: revlearn.valid_loss(case.replace(**{kind: x})),
                                  getattr(case, kind), u, step)


def fd_directions(case, kind, rng):
    """Three unit directions in `kind`; for gamma integer ones, keeping it on its lattice."""
    if kind == "gamma":
        return [rng.integers(-2, 3, case.gamma.shape).astype(float) for _ in range(3)]
    return [u / np.linalg.norm(u) for u in
            (approx.random_direction(case, rng, (kind,))[kind] for _ in range(3))]


@pytest.mark.parametrize("kind", approx.KINDS)
def test_forward_mode_matches_finite_differences(activation, kind):
    case = revlearn.make_case(small_spec(activation=activation))
    rtol = RTOL_FD[activation]
    for u in fd_directions(case, kind, np.random.default_rng(0)):
        forward, numeric = approx.forward(case, {kind: u}).derivative, fd_along(case, kind, u)
        err = abs(forward - numeric) / max(abs(forward), abs(numeric))
        assert err <= rtol, (forward, numeric, err)
        # negative control: a derivative off by a relative 1e-6 fails the same check
        off = forward * (1 + 1e-6)
        assert abs(off - numeric) / max(abs(off), abs(numeric)) > rtol


def test_forward_mode_trains_the_float64_run(small_case):
    fw = approx.forward(small_case, {"alpha": np.ones_like(small_case.alpha)})
    assert np.array_equal(fw.w_final, revlearn.train(small_case, exact=False).w_final)
    assert fw.valid_loss == pytest.approx(revlearn.valid_loss(small_case), rel=1e-12)


def test_a_zero_direction_gives_zero(small_case):
    assert approx.forward(small_case, {}).derivative == 0.0


@needs_numba
def test_forward_mode_gives_the_same_bits_on_every_backend_and_thread_count(small_case):
    d = approx.random_direction(small_case, np.random.default_rng(2))
    runs = [approx.forward(small_case, d, backend=b, threads=n)
            for b, n in (("numpy", 1), ("numba", 1), ("numba", 2), ("numpy", 3))]
    assert len({r.derivative for r in runs}) == 1
    assert all(np.array_equal(r.w_final, runs[0].w_final) for r in runs)


# --- truncated reverse mode ----------------------------------------------------------------

def test_truncation_at_K_equal_T_is_the_stored_method_bit_for_bit(solved):
    case, _, stored = solved
    got = approx.truncated(case, case.T)
    for f in FIELDS:
        assert np.array_equal(getattr(got, f), getattr(stored, f)), f


def test_truncation_is_exact_inside_its_window_and_zero_before(solved):
    case, _, stored = solved
    K = 5
    got = approx.truncated(case, K)
    assert np.array_equal(got.d_alpha[-K:], stored.d_alpha[-K:])
    assert np.array_equal(got.d_gamma[-K:], stored.d_gamma[-K:])
    assert not got.d_alpha[:-K].any() and not got.d_gamma[:-K].any()
    assert got.d_init_scale is None and got.d_w0 is None
    assert not np.allclose(got.d_l2, stored.d_l2, rtol=1e-3)  # only the last K steps' share
    assert np.all(np.isfinite(got.d_X_train))


# --- DrMAD ---------------------------------------------------------------------------------

def test_drmad_is_exact_when_training_is_one_straight_step(solved):
    case, _, _ = solved
    one = case.replace(batches=case.batches[:1], alpha=case.alpha[:1], gamma=case.gamma[:1])
    exact, got = revlearn.hypergradient(one, method="stored"), approx.drmad(one)
    for f in FIELDS:  # v_1 = (w_1 - w_0) / alpha_0 differs from v_1 by rounding only
        assert relative(getattr(got, f), getattr(exact, f)) <= 1e-13, f
    # negative control: T steps are not a straight line
    full = approx.drmad(case)
    assert relative(full.d_alpha, solved[2].d_alpha) > 1e-2


# --- the implicit function theorem ---------------------------------------------------------

def test_the_quadratic_models_derivatives_match_finite_differences():
    case = quadratic_case(3)
    model, rng = case.model, np.random.default_rng(0)
    w, u = rng.standard_normal(case.P), rng.standard_normal(case.P)
    X, y = case.X_train, case.y_train
    _, g, Hu, dX = model.loss_grad_hvp(w, u, X, y, input_grad=True)
    assert np.array_equal(g, model.loss_grad(w, X, y)[1])
    check_grad(lambda x: model.loss_grad(x, X, y)[0], w, g, coords=[0, 7], rtol=1e-9)
    check_grad(lambda x: model.loss_grad(x, X, y)[1] @ u, w, Hu, coords=[1], rtol=1e-9)
    check_grad(lambda x: model.loss_grad(w, x, y)[1] @ u, X, dX, coords=[(2, 1)], rtol=1e-9)


@pytest.mark.parametrize("per_weight", [False, True])
def test_ift_converges_to_its_closed_form_as_K_grows(per_weight):
    # T = 30: w_T is not yet the stationary point; the closed form is the theorem's answer at w_T.
    # Measured relative errors at K = 1, 10, 100, 400: d_l2 per group 0.87, 0.26, 4.0e-6, 4.7e-16
    # (d_X_train 0.89, 0.29, 5.1e-6, 5.5e-16); per weight 0.89, 0.31, 7.2e-6, 9.4e-16 (0.89,
    # 0.31, 8.3e-6, 4.3e-16)
    l2 = np.linspace(0.01, 0.05, 15) if per_weight else (0.05, 0.02)
    case = quadratic_case(30, l2=l2, grad_train_inputs=True)
    want_l2, want_X = implicit(case, revlearn.train(case, exact=False).w_final)
    errors = [(relative(got.d_l2, want_l2), relative(got.d_X_train, want_X))
              for _, got in approx.ift_series(case, [1, 10, 100, 400])]
    assert errors[0][0] > 0.5 and errors[0][1] > 0.5  # one term is far off
    assert all(b[0] < a[0] and b[1] < a[1] for a, b in zip(errors[:-1], errors[1:],
                                                           strict=True))
    assert max(errors[-1]) <= 1e-13, errors
    for f in ("d_alpha", "d_gamma", "d_init_scale", "d_w0"):
        assert getattr(approx.ift(case, 400), f) is None


def test_ift_equals_the_exact_hypergradient_once_training_has_converged():
    # Full-batch training on a quadratic converges, and with it d w_T / d lam -> d w* / d lam.
    # Measured: exact against the closed form 1.0e-15 (l2) and 1.5e-15 (X_train) at T = 400,
    # 1.2e-4 and 4.4e-4 at T = 30; |d_alpha| 2e-17 at T = 400.
    case = quadratic_case(400, grad_train_inputs=True)
    exact = revlearn.hypergradient(case)
    ift = approx.ift(case, 400)
    assert relative(ift.d_l2, exact.d_l2) <= 1e-12
    assert relative(ift.d_X_train, exact.d_X_train) <= 1e-12
    assert np.max(np.abs(exact.d_alpha)) <= 1e-12 * np.max(np.abs(exact.d_l2))  # the theorem's 0
    short = quadratic_case(30)  # negative control: not converged, so not the implicit answer
    assert relative(approx.ift(short, 400).d_l2, revlearn.hypergradient(short).d_l2) > 1e-5


def test_a_diverging_neumann_series_is_an_answer_not_an_error():
    # eta h > 2 for the largest eigenvalue h of H: the terms grow by |1 - eta h| ~ 22 each, and
    # the audit reports what is not finite as null
    case = quadratic_case(3, alpha=50.0)
    assert np.all(np.isfinite(approx.ift(case, 10).d_l2))
    diverged = approx.ift(case, 400).d_l2
    assert not np.all(np.isfinite(diverged))
    assert audit.compare(diverged, np.ones_like(diverged))[:2] == (None, None)


# --- greedy --------------------------------------------------------------------------------

def test_greedys_last_step_is_exact(solved):
    case, _, stored = solved
    got = approx.greedy(case)
    assert np.array_equal(got.d_alpha[-1], stored.d_alpha[-1])
    assert got.d_init_scale is None and got.d_l2 is None and got.d_w0 is None


def check_greedy_against_the_next_loss(case, t, steps):
    """Each greedy entry of step t (groups 0 and 3) against the finite difference of
    L_{t+1}(w_{t+1}), w_{t+1} from t + 1 float64 steps; steps: {per-step hyperparameter: the
    difference's step}, the per-step hyperparameters of the case's optimizer."""
    rows = case.batches[t + 1]

    def next_loss(**changes):
        c = case.replace(batches=case.batches[:t + 1],
                         **{k: getattr(case, k)[:t + 1] for k in steps}).replace(**changes)
        w = revlearn.train(c, exact=False).w_final
        ell = mlp.loss(w, case.X_train[rows], case.y_train[rows], case.layout, case.activation)
        return ell + 0.5 * np.sum(case.lam * w * w)

    got = approx.greedy(case)
    for name, step in steps.items():
        x = getattr(case, name)[:t + 1]
        for g in (0, 3):
            u = np.zeros_like(x)
            u[t, g] = 1.0
            numeric = directional_derivative(lambda x, n=name: next_loss(**{n: x}), x, u, step)
            want = getattr(got, f"d_{name}")[t, g]
            assert abs(want - numeric) <= 1e-7 * abs(numeric), (name, g, want, numeric)


@pytest.mark.parametrize("t", [0, 11])
def test_greedy_is_the_derivative_of_the_next_steps_training_loss(small_case, t):
    # d L_{t+1}(w_{t+1}) / d alpha_t and / d gamma_t
    check_greedy_against_the_next_loss(small_case, t, {"alpha": 1e-4, "gamma": 2.0**-16})


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("given, message", [
    ([1.0], "a direction is a dict.*received list"),
    ({"beta": 1.0}, "unknown direction key.*'beta'.*alpha, gamma"),
    ({"alpha": np.ones(3)}, r"direction\['alpha'\] has shape \(3,\); this case needs \(24, 6\)"),
    ({"l2": [np.nan] * 6}, r"direction\['l2'\] has NaN"),
    ({"w0": "up"}, r"direction\['w0'\] is not an array of numbers"),
])
def test_a_bad_direction_is_refused(small_case, given, message):
    with pytest.raises(revlearn.InputError, match=message):
        approx.forward(small_case, given)


def test_bad_K_and_non_cases_are_refused(small_case):
    with pytest.raises(revlearn.InputError, match=r"K must be an integer >= 1 and <= T = 24"):
        approx.truncated(small_case, 25)
    with pytest.raises(revlearn.InputError, match="K must be an integer >= 1; received 0"):
        approx.ift(small_case, 0)
    with pytest.raises(revlearn.InputError, match="received 2.5"):
        approx.truncated(small_case, 2.5)
    with pytest.raises(revlearn.InputError, match="must increase"):
        next(approx.ift_series(small_case, [10, 1]))
    with pytest.raises(revlearn.InputError, match="approx.drmad takes a revlearn.Case"):
        approx.drmad(small_spec())
