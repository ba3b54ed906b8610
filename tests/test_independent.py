"""revlearn against code it did not write.

tests/reference.py unrolls the training run in float64 and differentiates it with HIPS autograd,
from the README's conventions alone. It answers every golden case file the way an outside
implementation would (its answers written to an .npz and judged by `revlearn.oracle.compare`), and
small random cases, output by output against `revlearn.hypergradient`. Negative controls show that
an answer off by a relative 1e-6 in any one output fails both comparisons.

Tolerances, from measurement (float64 unroll against the fixed-point engine):
- golden cases: largest relative error 1.1e-11 (w_final of mnist_relu_weight_l2), 3e-12 or less
  for the hypergradients, so RTOL = 1e-8 leaves a factor of 1000 and fails a 1e-6 error by 100.
- 1,500 random cases (the strategy below): every error at most 3e-10 (|ref| + 1e-3 max|ref|)
  (oracle.compare's rule at rtol 3e-10), except entries off by at most 3.6e-17 absolute (2.1e-16
  in w_final). Those are the engine's fixed-point grid: w and v are held to 2**-52 = 2.2e-16
  absolute, so a key whose true value is near 0 (d_gamma_t = dv . (v_t + g_t) when v_t + g_t
  cancels, say) is round-off in both implementations. ATOL = 1e-14 is 50 times the largest of
  those; a 1e-6 relative error is still caught in any entry larger than 1e-8.
- Adam, golden cases: largest relative error 8.3e-9 (d_init_scale of mnist_relu_adam_weight_l2,
  torch's epsilon 1e-8), 4e-13 or less in the synthetic case; ADAM_GOLDEN_RTOL = 1e-7.
- Adam, 1,500 random cases (`adam_specs` with epsilon from 1e-6; now from 1e-3): every error at
  most 2.4e-8 by the rule above, all but two below 2e-9. Adam divides by sqrt(s) + epsilon, so
  where a gradient is round-off (a sum that cancels to 1e-17 in one implementation and to 0 in the
  other) its update is that round-off times alpha / epsilon: with epsilons down to 1e-8, 1,500
  more cases gave errors up to 3.4e-7 (a hidden layer of one relu unit, hypergradients of 1e5).
  Torch's 1e-8 is checked in the golden case instead. Adam's absolute floor, ADAM_ATOL = 1e-12:
  d_beta2_t is a difference of two terms carrying 1 / c2_t, as large as 2**16 at beta2_0 = 1 -
  2**-16, and is exactly 0 when alpha is nonzero at step 0 only (u_0 = g / (|g| + eps) whatever
  beta2_0); the reference's float64 terms cancel to 0 (and so do method="stored"'s), revlearn's,
  from m and s in fixed point, to 2.8e-14: 1e-15 of terms of 10 to 40 (found by hypothesis on a
  [5, 1, 1, 3] net). 1e-12 still catches a 1e-6 relative error in any entry above 1e-6.
- Adam, random cases: a tolerance per case, from a measurement of the case. Adam's
  u = g / (|g| + eps) makes some cases ill-conditioned, and there any rounding (float64's, or the
  fixed point's: w to 2**-52, m and s to 2**-100 absolute) is amplified: at epsilon 1e-6
  hypothesis found a [4, 8, 8, 1, 4] case where the fixed point differs from the reference by
  4.1e-7. So each case first measures how far the reference's own answers move when w_0 moves by
  one unit of the fixed-point grid (2**-52, random signs): `moved`, per output, by the rule
  below. Both method="stored" (Algorithm 2's formulas on a float64 trajectory) and the fixed
  point are then held to clip(10 moved, 1e-9, 3e-7) per output, and every case checks that an
  answer off by 3 times its tolerance fails (the control, at the tolerance the test uses).
  Measured on 1,500 random cases of `adam_specs`: the fixed point within 1.7 max(moved, 1e-11)
  of the reference and at most 1.4e-10 away; method="stored" within 1.7 max(moved, 1e-11) and
  4.8e-11. So a well-conditioned case is held to 1e-9 (where a 1e-6 error fails by 1,000) and
  no case to more than 3e-7.
"""

import ast
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import revlearn
from revlearn import oracle

import reference

GOLDEN = Path(__file__).parent / "golden"
D16 = 2**16  # gamma = n / 2**16
RTOL = 1e-8
ATOL = 1e-14
FLOAT_OUTPUTS = ("w_final", "valid_loss", "d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0",
                 "d_X_train")
ADAM_FLOAT_OUTPUTS = ("w_final", "valid_loss", "d_alpha", "d_beta1", "d_beta2", "d_epsilon",
                      "d_init_scale", "d_l2", "d_w0", "d_X_train")
ADAM_GOLDEN_RTOL = 1e-7
ADAM_RTOL = 3e-7  # the largest per-case tolerance of the random Adam cases
ADAM_RTOL_FLOOR = 1e-9  # the smallest
ADAM_ATOL = 1e-12
GRID = 2.0**-52  # one unit of the fixed-point grid of w


def test_the_reference_imports_nothing_from_revlearn():
    tree = ast.parse((Path(__file__).parent / "reference.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules == {"numpy", "autograd", "autograd.numpy", "autograd.extend"}


def reference_answers(case):
    """The independent answers for the inputs of a Case (only its input arrays are read)."""
    adam = case.optimizer == "adam"
    inputs = {k: getattr(case, k) for k in (reference.ADAM_INPUT_KEYS if adam
                                            else reference.INPUT_KEYS)}
    inputs["optimizer"] = case.optimizer
    return reference.answers(inputs, grad_train_inputs=case.grad_train_inputs)


def compare_with_reference(case_path, answers, rtol=RTOL):
    """oracle.compare of the answers, written as an outside implementation's .npz, with the case
    file at case_path: the rows, and the table to show when one fails."""
    with tempfile.TemporaryDirectory() as folder:
        theirs = Path(folder) / "theirs.npz"
        np.savez(theirs, **answers)
        rows = oracle.compare(case_path, theirs, rtol=rtol)
    return rows, oracle.format_table(rows)


# --- the golden case files ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.npz")))
def test_golden_case_agrees_with_the_independent_reference(name):
    path = GOLDEN / f"{name}.npz"
    ref = oracle.read_case(path)
    rtol = ADAM_GOLDEN_RTOL if ref.case.optimizer == "adam" else RTOL
    rows, table = compare_with_reference(path, reference_answers(ref.case), rtol)
    assert {r.key for r in rows} == set(ref.outputs) - set(oracle.EXACT_KEYS)
    assert all(r.ok for r in rows), f"{name} against the independent reference:\n{table}"


GOLDEN_WITH_DX = {"synthetic_tanh_group_l2_dX": FLOAT_OUTPUTS,
                  "synthetic_tanh_adam_schedules_dX": ADAM_FLOAT_OUTPUTS}


@pytest.fixture(scope="module")
def independent_answers():
    """The reference's answers for a golden case, computed once per module."""
    cache = {}

    def answers(name):
        if name not in cache:
            cache[name] = reference_answers(oracle.read_case(GOLDEN / f"{name}.npz").case)
        return cache[name]
    return answers


@pytest.mark.parametrize("name, key", [(n, k) for n, keys in GOLDEN_WITH_DX.items() for k in keys])
def test_an_answer_off_by_1e_6_fails_the_golden_comparison(independent_answers, tmp_path, name,
                                                           key):
    # negative control: revlearn's case file with one output scaled by 1 + 1e-6
    path = GOLDEN / f"{name}.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[key] = arrays[key] * (1 + 1e-6)
    np.savez(tmp_path / "perturbed.npz", **arrays)
    rtol = ADAM_GOLDEN_RTOL if "adam" in name else RTOL
    rows, table = compare_with_reference(tmp_path / "perturbed.npz", independent_answers(name),
                                         rtol)
    assert [r.key for r in rows if not r.ok] == [key], table


# --- random small cases ---------------------------------------------------------------------------

def mismatches(got, want, rtol=RTOL, atol=ATOL):
    """The keys of got where some entry misses want by more than
    atol + rtol (|want| + 1e-3 max|want|), oracle.compare's rule with an absolute floor for the
    fixed-point grid, each with its worst entry."""
    bad = {}
    for key, w in want.items():
        g = np.asarray(got[key], dtype=np.float64)
        err = np.abs(g - w)
        tol = atol + rtol * (np.abs(w) + oracle.ATOL_SCALE * np.max(np.abs(w), initial=0.0))
        if np.any(err > tol):
            i = np.unravel_index(np.argmax(err - tol), err.shape)
            bad[key] = f"at {tuple(map(int, i))}: revlearn {g[i]!r}, reference {w[i]!r}"
    return bad


def zero_or(lo, hi):
    """0, or a value in [lo, hi]."""
    return st.one_of(st.just(0.0), st.floats(lo, hi))


@st.composite
def specs(draw):
    """Small random cases: 0-3 hidden layers of 1-8 units, T = 1..40, a step size and a momentum
    per step and group (gamma anywhere on its lattice n / 2**16, 1 <= n <= 2**16), initial scales
    per group, L2 per group or per weight, with and without d_X_train.

    Nonzero alpha, init_scale and l2 stay at 1e-4, 1e-3 and 1e-6 or more. Smaller values are below
    or near the engine's fixed-point grid (2**-52 absolute), where a float64 implementation rightly
    differs: init_scale 1e-10 puts w_0 on the grid to 6 digits (measured: 5e-8 relative in
    d_init_scale), and a relu net whose tiny weights round to exactly 0 sits on its kinks in
    fixed point but not in float64 (measured: different answers altogether).
    """
    sizes = [draw(st.integers(1, 6)), *draw(st.lists(st.integers(1, 8), max_size=3)),
             draw(st.integers(2, 4))]
    T, G, P = draw(st.integers(1, 40)), 2 * (len(sizes) - 1), sum(reference.group_sizes(sizes))
    n_train, per_weight = draw(st.integers(1, 20)), draw(st.booleans())
    return dict(
        layer_sizes=sizes, activation=draw(st.sampled_from(["tanh", "relu"])),
        n_train=n_train, n_valid=draw(st.integers(1, 10)), n_iters=T,
        batch_size=draw(st.integers(1, n_train)), seed=draw(st.integers(0, 2**32 - 1)),
        alpha=draw(arrays(np.float64, (T, G), elements=zero_or(1e-4, 0.5))).tolist(),
        gamma=(draw(arrays(np.int64, (T, G), elements=st.integers(1, D16))) / D16).tolist(),
        init_scale=draw(arrays(np.float64, (G,), elements=zero_or(1e-3, 1))).tolist(),
        l2=draw(arrays(np.float64, (P if per_weight else G,),
                       elements=zero_or(1e-6, 0.1))).tolist(),
        l2_per_weight=per_weight, grad_train_inputs=draw(st.booleans()))


@given(specs())
def test_random_cases_agree_with_the_independent_reference(spec):
    case = revlearn.make_case(spec)
    res = revlearn.hypergradient(case)
    theirs = reference_answers(case)
    assert set(theirs) == {k for k in FLOAT_OUTPUTS if getattr(res, k) is not None}
    bad = mismatches({k: getattr(res, k) for k in theirs}, theirs)
    assert not bad, f"{spec}\n" + "\n".join(f"{k} {v}" for k, v in bad.items())


@st.composite
def adam_specs(draw):
    """Small random Adam cases: as `specs`, with beta1 and beta2 per step and group anywhere on
    their lattice n / 2**16 (1 <= n <= 2**16 - 1), alpha up to 0.05 and epsilon per group from 1e-3
    to 0.1, and the output bias drawn away from 0. Smaller epsilons make some of these tiny nets
    chaotic: u = g / (|g| + eps) amplifies a change of g by up to 1 / eps per step, and hypothesis
    found a [4, 8, 8, 1, 4] case at epsilon 1e-6 with hypergradients of 1e12 where two float64
    implementations (the reference and method="stored") part by 3e-4 in w_final; the golden cases
    check torch's 1e-8 on well-conditioned nets. With every logit exactly 0 at step 0 (output
    weights and bias, or hidden units and bias, all 0) the softmax is uniform and the output bias's
    gradient, sum_rows (1/K - y), cancels exactly: to 0 in the reference's order of summation, to
    1e-17 in revlearn's chunked one, and Adam turns that round-off into d_epsilon's share alpha dw g
    / epsilon**2, 3e-7 of 0.09 in the case hypothesis found ([1, 3], init_scale 0, epsilon 1e-6;
    method="stored" agrees with the fixed point there): an ambiguity of float64 Adam, not an error
    of either."""
    spec = draw(specs())
    T, G = len(spec["alpha"]), len(spec["init_scale"])
    lattice = st.integers(1, D16 - 1)
    del spec["gamma"]
    spec["init_scale"][-1] = draw(st.floats(0.05, 1.0))
    spec.update(
        optimizer="adam",
        alpha=draw(arrays(np.float64, (T, G), elements=zero_or(1e-4, 0.05))).tolist(),
        beta1=(draw(arrays(np.int64, (T, G), elements=lattice)) / D16).tolist(),
        beta2=(draw(arrays(np.int64, (T, G), elements=lattice)) / D16).tolist(),
        epsilon=draw(arrays(np.float64, (G,), elements=st.floats(1e-3, 0.1))).tolist())
    return spec


def relative_errors(got, want, atol):
    """Per key, the smallest rtol at which `mismatches` passes got: the largest
    (|got - want| - atol) / (|want| + 1e-3 max|want|) over the entries."""
    out = {}
    for key, w in want.items():
        scale = np.abs(w) + oracle.ATOL_SCALE * np.max(np.abs(w), initial=0.0)
        err = np.abs(np.asarray(got[key], dtype=np.float64) - w) - atol
        out[key] = float(np.max(np.where(scale > 0, err / np.where(scale > 0, scale, 1.0), 0.0),
                                initial=0.0))
    return out


def tolerances(case, theirs):
    """The case's tolerance per output: clip(10 moved, ADAM_RTOL_FLOOR, ADAM_RTOL), moved how far
    the reference's answers go when w_0 moves by one unit of the grid (the module's doc)."""
    inputs = {k: getattr(case, k) for k in reference.ADAM_INPUT_KEYS}
    shift = GRID * np.random.default_rng(0).choice([-1.0, 1.0], case.P)
    moved = reference.answers(dict(inputs, optimizer="adam"),
                              grad_train_inputs=case.grad_train_inputs, shift=shift)
    return {k: float(np.clip(10 * e, ADAM_RTOL_FLOOR, ADAM_RTOL))
            for k, e in relative_errors({k: moved[k] for k in theirs}, theirs, 0.0).items()}


@given(adam_specs())
def test_random_adam_cases_agree_with_the_independent_reference(spec):
    # Algorithm 2's formulas on the float64 trajectory (method="stored" runs the reversible
    # method's reverse-step code) and the fixed-point answers, each at the case's tolerances
    case = revlearn.make_case(spec)
    theirs = reference_answers(case)
    rtol = tolerances(case, theirs)
    stored, exact = (revlearn.hypergradient(case, method=m) for m in ("stored", "reversible"))
    assert set(theirs) == {k for k in ADAM_FLOAT_OUTPUTS if getattr(exact, k) is not None}
    bad = {}
    for label, res in (("stored", stored), ("fixed point", exact)):
        errors = relative_errors({k: getattr(res, k) for k in theirs}, theirs, ADAM_ATOL)
        bad.update({f"{k} ({label})": f"{e:.1e} > {rtol[k]:.1e}" for k, e in errors.items()
                    if e > rtol[k]})
    assert not bad, f"{spec}\n" + "\n".join(f"{k} {v}" for k, v in bad.items())
    # the control, at the tolerances used: the largest entry of one output off by 3 rtol fails
    key = max(theirs, key=lambda k: np.max(np.abs(theirs[k]), initial=0.0))
    off = {k: np.array(getattr(exact, k), dtype=np.float64) for k in theirs}
    i = np.unravel_index(np.argmax(np.abs(theirs[key])), np.shape(theirs[key]))
    off[key][i] = theirs[key][i] * (1 + 3 * rtol[key]) + np.sign(theirs[key][i]) * ADAM_ATOL
    assert relative_errors(off, theirs, ADAM_ATOL)[key] > rtol[key]


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_an_answer_off_by_1e_6_fails_the_random_case_comparison(optimizer):
    # negative control for `mismatches`: one output of one case scaled by 1 + 1e-6
    own = dict(gamma=0.8) if optimizer == "momentum" else dict(optimizer="adam", alpha=0.02)
    case = revlearn.make_case(dict(dict(layer_sizes=[3, 4, 2], activation="relu", n_train=12,
                                        n_valid=6, n_iters=15, batch_size=4, seed=5, alpha=0.3,
                                        init_scale=0.5, l2=0.01, grad_train_inputs=True), **own))
    res = revlearn.hypergradient(case)
    theirs = reference_answers(case)
    ours = {k: getattr(res, k) for k in theirs}
    rtol = RTOL if optimizer == "momentum" else ADAM_RTOL
    assert not mismatches(ours, theirs, rtol)
    for key in theirs:
        assert list(mismatches(dict(ours, **{key: ours[key] * (1 + 1e-6)}), theirs, rtol)) == [key]
