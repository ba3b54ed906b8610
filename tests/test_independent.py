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


def test_the_reference_imports_nothing_from_revlearn():
    tree = ast.parse((Path(__file__).parent / "reference.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules == {"numpy", "autograd", "autograd.numpy", "autograd.extend"}


def reference_answers(case):
    """The independent answers for the inputs of a Case (only its input arrays are read)."""
    inputs = {k: getattr(case, k) for k in reference.INPUT_KEYS}
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
    rows, table = compare_with_reference(path, reference_answers(ref.case))
    assert {r.key for r in rows} == set(ref.outputs) - set(oracle.EXACT_KEYS)
    assert all(r.ok for r in rows), f"{name} against the independent reference:\n{table}"


@pytest.fixture(scope="module")
def golden_with_dX():
    path = GOLDEN / "synthetic_tanh_group_l2_dX.npz"
    return path, reference_answers(oracle.read_case(path).case)


@pytest.mark.parametrize("key", FLOAT_OUTPUTS)
def test_an_answer_off_by_1e_6_fails_the_golden_comparison(golden_with_dX, tmp_path, key):
    # negative control: revlearn's case file with one output scaled by 1 + 1e-6
    path, answers = golden_with_dX
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[key] = arrays[key] * (1 + 1e-6)
    np.savez(tmp_path / "perturbed.npz", **arrays)
    rows, table = compare_with_reference(tmp_path / "perturbed.npz", answers)
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


def test_an_answer_off_by_1e_6_fails_the_random_case_comparison():
    # negative control for `mismatches`: one output of one case scaled by 1 + 1e-6
    case = revlearn.make_case(dict(layer_sizes=[3, 4, 2], activation="relu", n_train=12,
                                   n_valid=6, n_iters=15, batch_size=4, seed=5, alpha=0.3,
                                   gamma=0.8, init_scale=0.5, l2=0.01, grad_train_inputs=True))
    res = revlearn.hypergradient(case)
    theirs = reference_answers(case)
    ours = {k: getattr(res, k) for k in theirs}
    assert not mismatches(ours, theirs)
    for key in theirs:
        assert list(mismatches(dict(ours, **{key: ours[key] * (1 + 1e-6)}), theirs)) == [key]
