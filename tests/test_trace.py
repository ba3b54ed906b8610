"""Traces: w_t and df/dw_t at chosen steps (`revlearn oracle --trace`), and `revlearn check` naming
the first step where an outside implementation departs from them.

The outside implementations here are tests/reference.py (float64, autograd, no revlearn code) with
a bug put into one step of their forward run or of their backward pass.
"""

import json
import re

import autograd.numpy as anp
import numpy as np
import pytest
from autograd.extend import defvjp, primitive

import revlearn
from revlearn import check_grad, cli, mlp, oracle, trace
from revlearn.gradcheck import GradientCheckError

import reference
from conftest import needs_numba, small_spec

SPEC = small_spec(n_iters=13)
T = SPEC["n_iters"]
EVERY_3 = [0, 3, 6, 9, 12, 13]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trace")
    (folder / "spec.json").write_text(json.dumps(SPEC))
    assert cli.main(["oracle", str(folder / "spec.json"), "-o", str(folder / "case.npz"),
                     "--trace"]) == 0
    assert cli.main(["oracle", str(folder / "spec.json"), "-o", str(folder / "case3.npz"),
                     "--trace", "--trace-every", "3"]) == 0
    return folder


def arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def inputs(path):
    return {k: v for k, v in arrays(path).items() if k in reference.INPUT_KEYS}


# --- what a trace holds ---------------------------------------------------------------------------

def test_a_trace_holds_every_step_from_w0_and_d_w0_to_w_T_and_grad_f(folder):
    a = arrays(folder / "case.npz")
    case = revlearn.make_case(SPEC)
    assert a["trace_steps"].dtype == np.int64 and list(a["trace_steps"]) == list(range(T + 1))
    assert a["w_trace"].shape == a["dw_trace"].shape == (T + 1, case.P)
    assert np.max(np.abs(a["w_trace"][0] - case.w0)) <= 2.0**-53  # w_0 on the fixed-point grid
    assert np.array_equal(a["w_trace"][-1], a["w_final"])
    assert np.array_equal(a["dw_trace"][0], a["d_w0"])
    grad_f = mlp.loss_grad(a["w_final"], case.X_valid, case.y_valid, case.layout, "tanh")[1]
    assert np.array_equal(a["dw_trace"][-1], grad_f)


def test_trace_every_k_keeps_0_k_2k_and_T(folder):
    a, every = arrays(folder / "case.npz"), arrays(folder / "case3.npz")
    assert list(every["trace_steps"]) == EVERY_3
    assert np.array_equal(every["w_trace"], a["w_trace"][EVERY_3])
    assert np.array_equal(every["dw_trace"], a["dw_trace"][EVERY_3])
    assert list(trace.trace_steps(5, 10)) == [0, 5] and list(trace.trace_steps(1)) == [0, 1]


def test_tracing_changes_no_answer():
    case = revlearn.make_case(SPEC)
    plain = revlearn.hypergradient(case, backend="numpy")
    traced = revlearn.hypergradient(case, backend="numpy",
                                    trace=trace.Recorder(trace.trace_steps(T), case.P))
    for key in oracle.OUTPUT_KEYS:
        assert np.array_equal(np.asarray(getattr(plain, key)), np.asarray(getattr(traced, key)))


@pytest.mark.parametrize("backend, threads", [("numpy", 2),
                                              pytest.param("numba", 1, marks=needs_numba),
                                              pytest.param("numba", 3, marks=needs_numba)])
def test_a_trace_is_the_same_bits_on_every_backend_and_thread_count(folder, backend, threads):
    case = revlearn.make_case(SPEC)
    rec = trace.Recorder(trace.trace_steps(T), case.P)
    revlearn.hypergradient(case, backend=backend, threads=threads, trace=rec)
    a = arrays(folder / "case.npz")
    assert np.array_equal(rec.w, a["w_trace"]) and np.array_equal(rec.dw, a["dw_trace"])


def test_the_stored_trajectory_gives_the_same_trace_to_1e_11(folder):
    # the float64 trajectory read back from memory instead of reversed in fixed point. Measured:
    # at most 1.7e-13 relative in w_trace and 3.7e-13 in dw_trace (entries on their step's scale)
    case = revlearn.make_case(SPEC)
    rec = trace.Recorder(trace.trace_steps(T), case.P)
    revlearn.hypergradient(case, method="stored", trace=rec)
    a = arrays(folder / "case.npz")
    for key, mine in (("w_trace", rec.w), ("dw_trace", rec.dw)):
        assert np.all(trace.step_errors(mine, a[key], 1e-11).ok), key
        assert not np.all(trace.step_errors(mine * (1 + 1e-10), a[key], 1e-11).ok), key


# --- df/dw_t by finite differences of training restarted from (w_t, v_t) --------------------------

def restarted(c, t, w, v, stop):
    """(w, v) after steps t .. stop - 1 of Algorithm 1 in float64 from (w_t, v_t) = (w, v):
    tests/reference.py's step and loss, nothing of revlearn."""
    sizes = [int(n) for n in c["layer_sizes"]]
    group = np.repeat(np.arange(2 * (len(sizes) - 1)), reference.group_sizes(sizes))
    lam = c["l2"][group]
    for s in range(t, stop):
        X, y = c["X_train"][c["batches"][s]], c["y_train"][c["batches"][s]]

        def L_s(w, X=X, y=y):
            return (reference.data_loss(w, X, y, sizes, str(c["activation"]))
                    + 0.5 * anp.sum(lam * w * w))

        w, v = reference.momentum_step(s, w, v, L_s, c["alpha"][s][group], c["gamma"][s][group])
    return w, v


def f_from(c, t):
    """f(w_T) as a function of w_t, training restarted from (w_t, v_t) with v_t held fixed."""
    sizes = [int(n) for n in c["layer_sizes"]]
    w0 = c["init_scale"][np.repeat(np.arange(2 * (len(sizes) - 1)),
                                   reference.group_sizes(sizes))] * c["eps"]
    w_t, v_t = restarted(c, 0, w0, np.zeros_like(w0), t)
    T = len(c["batches"])
    return w_t, lambda w: float(reference.data_loss(restarted(c, t, w, v_t, T)[0], c["X_valid"],
                                                    c["y_valid"], sizes, str(c["activation"])))


# Measured (fourth-order differences, h = 1e-4, the steps below): relative errors at most 4.3e-10
# (a small entry of dw_0), 1.1e-10 elsewhere; the neighbouring row (the negative control) misses
# by 4e-2.
FD_RTOL = 1e-8


@pytest.mark.parametrize("t", [0, 4, 12, 13])
def test_dw_trace_is_df_dw_t_with_training_restarted_from_w_t_v_t(folder, t):
    c, a = inputs(folder / "case.npz"), arrays(folder / "case.npz")
    w_t, f = f_from(c, t)
    assert np.max(np.abs(w_t - a["w_trace"][t])) < 1e-13
    rows = check_grad(f, w_t, a["dw_trace"][t], directions=2, coords=[0, 50, 140],
                      rtol=FD_RTOL, name=f"dw_{t}")
    assert max(r.rel_error for r in rows) < FD_RTOL


def test_the_neighbouring_adjoint_fails_that_check(folder):
    # negative control: df/dw_{t+1} (the adjoint before step t's update) is not df/dw_t
    c, a = inputs(folder / "case.npz"), arrays(folder / "case.npz")
    w_t, f = f_from(c, 4)
    with pytest.raises(GradientCheckError):
        check_grad(f, w_t, a["dw_trace"][5], directions=2, rtol=FD_RTOL, name="dw_5 as dw_4")


# --- an outside implementation with a bug in one step --------------------------------------------

def forward_bug(k):
    """Algorithm 1 with step k's w_{k+1} off by a relative 1e-4."""
    def step(t, w, v, L_t, alpha_t, gamma_t):
        w, v = reference.momentum_step(t, w, v, L_t, alpha_t, gamma_t)
        return (w * (1 + 1e-4) if t == k else w), v
    return step


@primitive
def _wrong_backward(w):
    return w


defvjp(_wrong_backward, lambda ans, w: lambda g: g * (1 + 1e-4))


def reverse_bug(k):
    """Algorithm 1 right, but the backward pass through step k scales its cotangent by 1 + 1e-4:
    df/dw_t is right for t > k and wrong from t = k down."""
    def step(t, w, v, L_t, alpha_t, gamma_t):
        return reference.momentum_step(t, _wrong_backward(w) if t == k else w, v, L_t, alpha_t,
                                       gamma_t)
    return step


def check_theirs(capsys, folder, tmp_path, case="case.npz", step=reference.momentum_step,
                 keep=("w_trace", "dw_trace")):
    a = arrays(folder / case)
    theirs = reference.answers(inputs(folder / case), trace_steps=a["trace_steps"], step=step)
    for key in {"w_trace", "dw_trace"} - set(keep):
        del theirs[key]
    np.savez(tmp_path / "theirs.npz", **theirs)
    return run(capsys, "check", folder / case, tmp_path / "theirs.npz")


def divergence(out):
    lines = [line for line in out.splitlines() if line.startswith("first divergence")]
    assert len(lines) == 1, out
    return lines[0]


def test_a_right_implementation_has_no_divergence(capsys, folder, tmp_path):
    code, out, _ = check_theirs(capsys, folder, tmp_path)
    assert code == 0, out
    assert divergence(out) == (f"first divergence: none (w_trace and dw_trace agree at all "
                               f"{T + 1} traced steps)")


@pytest.mark.parametrize("k", [0, 5, 12])
def test_a_forward_bug_at_step_k_diverges_forward_at_step_k_plus_1(capsys, folder, tmp_path, k):
    code, out, _ = check_theirs(capsys, folder, tmp_path, step=forward_bug(k))
    line = divergence(out)
    assert code == 1 and "MISMATCH" in out.splitlines()[-1]
    assert line.startswith(f"first divergence: forward at step {k + 1}: w_{k + 1} out of "
                           "tolerance in W1 (group 0)"), line
    assert re.search(r"worst \w+\[[\d, ]+\]: theirs .* revlearn .* off by .*\(relative 1\.0e-04",
                     line), line


@pytest.mark.parametrize("k", [0, 5, 12])
def test_a_reverse_bug_at_step_k_diverges_in_reverse_at_step_k(capsys, folder, tmp_path, k):
    code, out, _ = check_theirs(capsys, folder, tmp_path, step=reverse_bug(k))
    line = divergence(out)
    assert code == 1
    assert line.startswith(f"first divergence: reverse at step {k}: df/dw_{k} out of tolerance "
                           "in W1 (group 0)"), line
    assert "w_trace" in out and [r for r in out.splitlines() if r.startswith("w_trace")][0] \
        .endswith(" ok")


@pytest.mark.parametrize("bug, k, at", [(forward_bug, 4, "forward at step 6"),
                                        (forward_bug, 12, "forward at step 13"),
                                        (reverse_bug, 4, "reverse at step 3"),
                                        (reverse_bug, 12, "reverse at step 12")])
def test_with_every_third_step_the_first_traced_step_after_the_bug(capsys, folder, tmp_path,
                                                                    bug, k, at):
    code, out, _ = check_theirs(capsys, folder, tmp_path, case="case3.npz", step=bug(k))
    assert code == 1 and divergence(out).startswith(f"first divergence: {at}:"), out


def test_a_reverse_trace_alone_is_checked(capsys, folder, tmp_path):
    code, out, _ = check_theirs(capsys, folder, tmp_path, step=reverse_bug(7), keep=["dw_trace"])
    assert code == 1 and divergence(out).startswith("first divergence: reverse at step 7:")
    assert "not checked (absent from THEIRS): exact_recovery, buffer_bits, w_trace" in out


# --- malformed traces: one line, exit 2 ---------------------------------------------------------

def malformed(a):
    S, P = a["w_trace"].shape
    nan = a["dw_trace"].copy()
    nan[3, 7] = np.nan
    shifted = a["trace_steps"].copy()
    shifted[5] += 1
    return {
        "short w_trace": (dict(w_trace=a["w_trace"][:-1]),
                          rf"w_trace has shape \({S - 1}, {P}\); the case's trace needs "
                          rf"\({S}, {P}\)"),
        "wide dw_trace": (dict(dw_trace=np.hstack([a["dw_trace"], a["dw_trace"][:, :1]])),
                          rf"dw_trace has shape \({S}, {P + 1}\)"),
        "float32": (dict(dw_trace=a["dw_trace"].astype(np.float32)),
                    "dw_trace is float32; expected float64"),
        "NaN": (dict(dw_trace=nan), r"dw_trace has NaN or infinite entries \(first in row 3, "
                                    r"entry 7\)"),
        "other steps": (dict(trace_steps=shifted), "its trace_steps .* are not the case's"),
        "every other step": (dict(trace_steps=a["trace_steps"][::2],
                                  w_trace=a["w_trace"][::2], dw_trace=a["dw_trace"][::2]),
                             "its trace_steps .* are not the case's"),
        "int32 steps": (dict(trace_steps=a["trace_steps"].astype(np.int32)),
                        r"its trace_steps \(int32"),
        "no steps": (dict(trace_steps=None), "holds w_trace and dw_trace without trace_steps"),
        "steps alone": (dict(w_trace=None, dw_trace=None),
                        "holds trace_steps but neither w_trace nor dw_trace"),
    }


KINDS = ["short w_trace", "wide dw_trace", "float32", "NaN", "other steps", "every other step",
         "int32 steps", "no steps", "steps alone"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_malformed_trace_exits_2_with_one_line(capsys, folder, tmp_path, kind):
    a = arrays(folder / "case.npz")
    theirs = {k: a[k] for k in ("d_alpha", "trace_steps", "w_trace", "dw_trace")}
    change, reason = malformed(a)[kind]
    theirs.update(change)
    np.savez(tmp_path / "theirs.npz", **{k: v for k, v in theirs.items() if v is not None})
    code, out, err = run(capsys, "check", folder / "case.npz", tmp_path / "theirs.npz")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert re.search(reason, err), err


def test_a_trace_for_a_case_without_one_exits_2(capsys, folder, tmp_path):
    a = arrays(folder / "case.npz")
    np.savez(tmp_path / "plain.npz", **{k: v for k, v in a.items() if k not in trace.KEYS})
    np.savez(tmp_path / "theirs.npz", **{k: a[k] for k in trace.KEYS})
    code, _, err = run(capsys, "check", tmp_path / "plain.npz", tmp_path / "theirs.npz")
    assert code == 2 and err.count("\n") == 1
    assert "the case file has no trace; write one with `revlearn oracle SPEC -o CASE --trace`" \
        in err


@pytest.mark.parametrize("change, reason", [
    (dict(dw_trace=None), "holds trace_steps, w_trace but not dw_trace"),
    (dict(trace_steps=np.arange(1, T + 1)), "trace_steps must increase from 0 to T = 13"),
    (dict(trace_steps=np.array([0, 5, 5, T])), "trace_steps must increase"),
    (dict(trace_steps=np.arange(T + 1.0)), "trace_steps is a float64 array"),
])
def test_a_case_file_with_a_malformed_trace_exits_2(capsys, folder, tmp_path, change, reason):
    a = arrays(folder / "case.npz")
    a.update(change)
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in a.items() if v is not None})
    code, _, err = run(capsys, "check", tmp_path / "bad.npz", folder / "case.npz")
    assert code == 2 and err.count("\n") == 1 and reason in err, err


# --- the oracle's flags --------------------------------------------------------------------------

@pytest.mark.parametrize("flags, reason", [
    (["--trace-every", "3"], "--trace-every 3 needs --trace"),
    (["--trace", "--trace-every", "0"], "--trace-every '0': give an integer >= 1"),
    (["--trace", "--trace-every", "x"], "--trace-every 'x': give an integer >= 1"),
])
def test_bad_trace_flags_are_refused_before_any_work(capsys, tmp_path, monkeypatch, flags,
                                                     reason):
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    monkeypatch.setattr(revlearn.sgd, "hypergradient", lambda *a, **k: pytest.fail("work done"))
    code, _, err = run(capsys, "oracle", tmp_path / "spec.json", "-o", tmp_path / "c.npz", *flags)
    assert code == 2 and reason in err and err.count("\n") == 1, err
    assert not (tmp_path / "c.npz").exists()


def test_a_trace_larger_than_memory_is_refused_before_any_work(capsys, tmp_path, monkeypatch):
    (tmp_path / "spec.json").write_text(json.dumps(small_spec(n_iters=2000)))
    monkeypatch.setattr(cli, "physical_memory", lambda: 5 << 20)
    monkeypatch.setattr(revlearn.sgd, "hypergradient", lambda *a, **k: pytest.fail("work done"))
    code, _, err = run(capsys, "oracle", tmp_path / "spec.json", "-o", tmp_path / "c.npz",
                       "--trace")
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(r"a trace of 2001 steps of P = 143 parameters takes 4\.4 MiB; with the "
                     r"run's own .* that is more than this machine's 5\.0 MiB; trace fewer "
                     r"steps, e\.g\. --trace-every \d+$", err.strip()), err
