"""revlearn.approx for a case trained with Adam: forward mode against the reverse mode and finite
differences, truncation where it must be exact, the implicit function theorem against its closed
form, the greedy step against the next step's training loss, DrMAD refused, and the audit."""

import json

import numpy as np
import pytest
from test_adam import ACT, RTOL, STEP, UNIT, adam_spec, on_largest, uphill
from test_approx import check_greedy_against_the_next_loss

import revlearn
from revlearn import approx, audit, cli
from revlearn.gradcheck import directional_derivative

from quadratic import implicit, quadratic_case

FIELDS = ("d_alpha", "d_beta1", "d_beta2", "d_epsilon", "d_init_scale", "d_l2", "d_w0",
          "d_X_train")
PER_STEP = ("d_alpha", "d_beta1", "d_beta2")

# Forward mode against the reverse mode's dot product, relative: measured on the cases below
# (two random directions per kind, tanh and relu) up to 6.9e-14 against the exact (fixed-point)
# hypergradient and 6.4e-15 against the float64 stored one. Tolerance 14 times the worst.
RTOL_REVERSE = 1e-12


def rel(a, b):
    return abs(a - b) / abs(b)


def relative(a, b):
    """max |a - b| / max |b| over the entries."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module", params=["tanh", "relu"])
def solved(request):
    """A small Adam case with the training inputs, its reversible and stored hypergradients."""
    case = revlearn.make_case(adam_spec(activation=request.param, grad_train_inputs=True))
    return case, revlearn.hypergradient(case), revlearn.hypergradient(case, method="stored")


# --- forward mode --------------------------------------------------------------------------

@pytest.mark.parametrize("kinds", [None] + [(k,) for k in approx.ADAM_KINDS])
def test_forward_mode_agrees_with_the_reverse_mode_along_random_directions(solved, kinds):
    case, rev, _ = solved
    rng = np.random.default_rng(1)
    for _ in range(2):
        d = approx.random_direction(case, rng, kinds)
        forward = approx.forward(case, d).derivative
        reverse = approx.directional(rev, approx.check_direction(case, d))
        assert rel(forward, reverse) <= RTOL_REVERSE, (forward, reverse)
        assert rel(forward * (1 + 1e-10), reverse) > RTOL_REVERSE  # the check can fail


def fd_direction(case, rev, kind, rng):
    """A direction uphill of the exact hypergradient; for the betas an integer one on its 8
    largest entries (the lattice n / 2**16 and relu's kinks: tests/test_adam.py's note)."""
    grad = rev.d_w0 if kind == "w0" else getattr(rev, f"d_{kind}")
    return on_largest(grad, 8) if kind in ("beta1", "beta2") else uphill(grad, rng)


@pytest.mark.parametrize("kind", approx.ADAM_KINDS)
def test_forward_mode_matches_finite_differences(solved, kind):
    # Fourth-order differences of whole fixed-point training runs at tests/test_adam.py's steps
    # and tolerances (its table; w0 moves eps by u / s as there). Measured here: tanh at most
    # 6.2e-11 (l2), relu 1.3e-10 (epsilon).
    case, rev, _ = solved
    act, rng = ACT[case.activation], np.random.default_rng(0)
    u = fd_direction(case, rev, kind, rng)
    if kind == "w0":
        numeric = directional_derivative(lambda x: revlearn.valid_loss(case.replace(eps=x)),
                                         case.eps, u / case.layout.expand(case.init_scale),
                                         STEP["eps"][act])
    else:
        numeric = directional_derivative(
            lambda x: revlearn.valid_loss(case.replace(**{kind: x})), getattr(case, kind), u,
            STEP[kind][act])
    forward = approx.forward(case, {kind: u}).derivative
    rtol = RTOL[case.activation]
    assert rel(forward, numeric) <= rtol, (forward, numeric)
    assert rel(forward * (1 + 1e-6), numeric) > rtol  # negative control


def test_forward_mode_trains_the_float64_run(solved):
    case = solved[0]
    fw = approx.forward(case, {"beta2": np.ones_like(case.beta2)})
    assert np.array_equal(fw.w_final, revlearn.train(case, exact=False).w_final)


# --- truncated reverse mode ----------------------------------------------------------------

def test_truncation_at_K_equal_T_is_the_stored_method_bit_for_bit(solved):
    case, _, stored = solved
    got = approx.truncated(case, case.T)
    for f in FIELDS:
        assert np.array_equal(getattr(got, f), getattr(stored, f)), f
    assert got.d_gamma is None


def test_truncation_is_exact_inside_its_window_and_zero_before(solved):
    case, _, stored = solved
    K = 5
    got = approx.truncated(case, K)
    for f in PER_STEP:
        assert np.array_equal(getattr(got, f)[-K:], getattr(stored, f)[-K:]), f
        assert not getattr(got, f)[:-K].any(), f
    assert got.d_init_scale is None and got.d_w0 is None
    for f in ("d_epsilon", "d_l2"):  # only the last K steps' share
        assert not np.allclose(getattr(got, f), getattr(stored, f), rtol=1e-3), f


# --- DrMAD ---------------------------------------------------------------------------------

def test_drmad_refuses_adam_in_one_line(solved):
    with pytest.raises(revlearn.InputError, match="trained with 'adam'.*not Adam's m_t and s_t"):
        approx.drmad(solved[0])


# --- the implicit function theorem ---------------------------------------------------------

ADAM = (0.9, 0.999, 1e-8)


def test_ift_converges_to_its_closed_form_as_K_grows():
    # The series preconditioned by Adam's last step (the module's doc). Measured relative errors
    # at K = 1, 10, 100, 400, 2000: d_l2 0.85, 0.27, 4.6e-3, 5.5e-6, 8.3e-16 (d_X_train 0.87,
    # 0.32, 2.8e-2, 4.1e-5, 1.7e-15)
    case = quadratic_case(400, alpha=0.05, grad_train_inputs=True, adam=ADAM)
    want_l2, want_X = implicit(case, revlearn.train(case, exact=False).w_final)
    errors = [(relative(got.d_l2, want_l2), relative(got.d_X_train, want_X))
              for _, got in approx.ift_series(case, [1, 10, 100, 400, 2000])]
    assert errors[0][0] > 0.5 and errors[0][1] > 0.5
    assert all(b[0] < a[0] and b[1] < a[1] for a, b in zip(errors[:-1], errors[1:],
                                                           strict=True))
    assert max(errors[-1]) <= 1e-13, errors
    for f in ("d_alpha", "d_beta1", "d_beta2", "d_epsilon", "d_init_scale", "d_w0"):
        assert getattr(approx.ift(case, 2), f) is None


def test_ift_approaches_the_exact_hypergradient_once_training_has_converged():
    # Measured: the exact d_l2 against the converged series 1.5e-8 at T = 400 (Adam at a constant
    # step hovers near w*, it does not land on it), 0.31 at T = 30.
    case = quadratic_case(400, alpha=0.05, adam=ADAM)
    exact, ift = revlearn.hypergradient(case), approx.ift(case, 2000)
    assert relative(ift.d_l2, exact.d_l2) <= 1e-7
    short = quadratic_case(30, alpha=0.05, adam=ADAM)  # negative control: not converged
    assert relative(approx.ift(short, 2000).d_l2, revlearn.hypergradient(short).d_l2) > 1e-2


# --- greedy --------------------------------------------------------------------------------

def test_greedys_last_step_is_exact(solved):
    case, _, stored = solved
    got = approx.greedy(case)
    assert np.array_equal(got.d_alpha[-1], stored.d_alpha[-1])
    for f in ("d_beta1", "d_beta2"):  # measured 3e-16
        assert relative(getattr(got, f)[-1], getattr(stored, f)[-1]) <= 1e-13, f
    assert got.d_gamma is None and got.d_epsilon is None and got.d_l2 is None


@pytest.mark.parametrize("t", [1, 11])
def test_greedy_is_the_derivative_of_the_next_steps_training_loss(t):
    # d L_{t+1}(w_{t+1}) / d alpha_t, beta1_t, beta2_t, with w_{t+1} from t + 1 float64 steps;
    # the betas by steps of 1 and 2 lattice units. (Not t = 0: there u_0 = g_0 / den does not
    # depend on beta1_0, the bias correction cancels it, and the derivative is 0.) Measured:
    # alpha 4.3e-11, beta1 4.4e-10, beta2 6.3e-9 at most.
    check_greedy_against_the_next_loss(revlearn.make_case(adam_spec()), t,
                                       {"alpha": 1e-4, "beta1": UNIT, "beta2": UNIT})


# --- bad input -----------------------------------------------------------------------------

def test_a_direction_for_the_other_optimizer_is_refused(solved):
    case = solved[0]
    with pytest.raises(revlearn.InputError, match="unknown direction key.*'gamma'; the keys are "
                       "alpha, beta1, beta2, epsilon, init_scale, l2, w0"):
        approx.forward(case, {"gamma": np.ones_like(case.alpha)})
    with pytest.raises(revlearn.InputError, match=r"direction\['epsilon'\] has shape \(3,\); "
                       r"this case needs \(6,\)"):
        approx.forward(case, {"epsilon": np.ones(3)})
    with pytest.raises(revlearn.InputError, match="unknown kind.*'gamma'"):
        approx.random_direction(case, np.random.default_rng(0), ("gamma",))


# --- the audit -----------------------------------------------------------------------------

def test_the_audit_of_an_adam_case(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(adam_spec(n_iters=12)))
    code = cli.main(["audit", str(path), "--out", str(tmp_path / "out"), "--K", "1,4"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / audit.FILE).read_text())
    rows = doc["rows"]
    assert {r["method"] for r in rows} == {"exact", "forward", "truncated", "ift", "greedy"}
    assert {r["hyper"] for r in rows if r["method"] == "forward"} == set(approx.ADAM_KINDS) | {
        "all"}
    forward = [r for r in rows if r["method"] == "forward"]
    assert max(r["rel_err"] for r in forward) <= 1e-7  # a second exact method
    at_T = {r["hyper"]: r for r in rows if r["method"] == "truncated" and r["K"] == 12}
    assert set(at_T) == set(approx.ADAM_KINDS)
    assert all(r["rel_err"] <= 1e-7 and r["cosine"] >= 1 - 1e-12 for r in at_T.values())
    assert {r["hyper"] for r in rows if r["method"] == "greedy"} == {"alpha", "beta1", "beta2"}
    assert "drmad" in doc["not_covered"] and "gamma" not in doc["not_covered"]["ift"]
