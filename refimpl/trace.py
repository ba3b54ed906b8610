"""Step-by-step traces: w_t and df/dw_t at chosen steps, and where another implementation's first
part from revlearn's.

At the steps trace_steps = (0 = t_0 < t_1 < ... < t_{S-1} = T) a trace holds

    w_trace[i]  = w_{t_i}      Algorithm 1's weights after t_i steps
    dw_trace[i] = df/dw_{t_i}  the gradient of f(w_T) with respect to w_t when training restarts
                               from (w_t, v_t), v_t held fixed: grad f(w_T) at T, d_w0 at 0

Algorithm 2 hands both over as it runs backwards (the `trace` hook of `sgd.hypergradient`): w_t
given back by undoing step t exactly, and df/dw_t the adjoint dw right after step t's update,

    dw_t = dw_{t+1} - (H_t + diag(lam)) (1 - gamma_t) (dv_{t+1} + alpha_t dw_{t+1})

since w_{t+1} = w_t + alpha_t v_{t+1} and v_{t+1} = gamma_t v_t - (1 - gamma_t) grad L_t(w_t).

A bug in step t of another implementation's forward run first shows in w_{t+1}; a bug in step t
of its reverse pass (or of its autodiff's backward through step t) first shows in dw_t, the forward
run being right. So `first_divergence` names the first traced step whose w_t is out of tolerance,
going forward from 0, and else the first whose dw_t is, going back from T.

The tolerance is `oracle`'s, applied to each traced step on its own scale: an element passes when
|theirs - ref| <= atol + rtol |ref|, atol = rtol * 1e-3 * max |ref| over that step's row unless
given.
"""

from typing import NamedTuple

import numpy as np

from .errors import InputError

KEYS = ("trace_steps", "w_trace", "dw_trace")
TRACES = ("w_trace", "dw_trace")
ATOL_SCALE = 1e-3


def trace_steps(T, every=1):
    """The traced steps 0, every, 2 every, ... and T, increasing, shape (S,) int64."""
    return np.unique(np.append(np.arange(0, T, every, dtype=np.int64), np.int64(T)))


def bytes_needed(T, P, every=1):
    """The memory w_trace and dw_trace take, in bytes."""
    return 2 * 8 * len(trace_steps(T, every)) * P


class Recorder:
    """The `trace` hook of `sgd.hypergradient`: keeps w_t and df/dw_t at the given steps."""

    def __init__(self, steps, P):
        self.steps = np.asarray(steps, dtype=np.int64)
        self.row = {int(t): i for i, t in enumerate(self.steps)}
        self.w = np.full((len(self.steps), P), np.nan)
        self.dw = np.full((len(self.steps), P), np.nan)

    def __call__(self, t, w, dw):
        i = self.row.get(t)
        if i is not None:
            self.w[i] = w
            self.dw[i] = dw

    def arrays(self):
        """trace_steps, w_trace and dw_trace, the case-file keys."""
        return {"trace_steps": self.steps, "w_trace": self.w, "dw_trace": self.dw}


# --- reading -----------------------------------------------------------------------------------

def check_steps(where, steps, T):
    """Refuse trace_steps that are not an increasing int64 vector in [0, T] from 0 to T."""
    if steps.dtype != np.int64 or steps.ndim != 1 or len(steps) < 2:
        raise InputError(f"{where}: trace_steps is a {steps.dtype} array of shape {steps.shape}; "
                         "expected a 1-d int64 array of at least two steps (0 and T)")
    if steps[0] != 0 or steps[-1] != T or np.any(np.diff(steps) <= 0):
        raise InputError(f"{where}: trace_steps must increase from 0 to T = {T}; received "
                         f"{describe_steps(steps)}")


def check_trace(where, key, arr, S, P):
    """Refuse a w_trace or dw_trace that is not a finite float64 (S, P) array."""
    if arr.dtype != np.float64:
        raise InputError(f"{where}: {key} is {arr.dtype}; expected float64 (convert with "
                         ".astype(np.float64))")
    if arr.shape != (S, P):
        raise InputError(f"{where}: {key} has shape {arr.shape}; the case's trace needs "
                         f"({S}, {P}), one row of P = {P} entries per traced step")
    if not np.all(np.isfinite(arr)):
        t, i = np.argwhere(~np.isfinite(arr))[0]
        raise InputError(f"{where}: {key} has NaN or infinite entries (first in row {t}, entry "
                         f"{i})")


def describe_steps(steps):
    """A short text for a trace_steps array: its first steps and how many there are."""
    text = ", ".join(map(str, steps[:6].tolist()))
    return f"[{text}{', ...' if len(steps) > 6 else ''}] ({len(steps)} steps)"


# --- comparing ---------------------------------------------------------------------------------

class StepErrors(NamedTuple):
    """One trace compared step by step: for each traced step (row), whether every entry passes;
    and for every entry, its error |theirs - ref| and its tolerance."""

    ok: np.ndarray
    err: np.ndarray
    tol: np.ndarray


def step_errors(theirs, ref, rtol, atol=None):
    """Each traced step (row) of theirs against ref under the rule of the module's doc."""
    err = np.abs(theirs - ref)
    scale = np.max(np.abs(ref), axis=1, keepdims=True, initial=0.0)
    tol = (rtol * ATOL_SCALE * scale if atol is None else atol) + rtol * np.abs(ref)
    return StepErrors(np.all(err <= tol, axis=1), err, tol)


def max_errors(theirs, ref):
    """(largest absolute error, largest relative error among the entries on their step's scale)."""
    err = np.abs(theirs - ref)
    scale = np.max(np.abs(ref), axis=1, keepdims=True, initial=0.0)
    on_scale = np.abs(ref) > ATOL_SCALE * scale
    rel = float(np.max(err[on_scale] / np.abs(ref[on_scale]), initial=0.0))
    return float(np.max(err, initial=0.0)), rel


def first_divergence(steps, layout, theirs, ref, rtol, atol=None):
    """The line `revlearn check` prints about the traces THEIRS holds (theirs, ref: dicts of
    w_trace and/or dw_trace): the first traced step whose w_t is out of tolerance, else the first,
    from T down to 0, whose df/dw_t is, with the groups out of tolerance there and the worst
    entry; or that the traces agree at every traced step."""
    for key, order, pass_, name in (("w_trace", range(len(steps)), "forward", "w"),
                                    ("dw_trace", range(len(steps) - 1, -1, -1), "reverse",
                                     "df/dw")):
        if key not in theirs:
            continue
        e = step_errors(theirs[key], ref[key], rtol, atol)
        bad = [i for i in order if not e.ok[i]]
        if bad:
            i = bad[0]
            t = int(steps[i])
            return (f"first divergence: {pass_} at step {t}: {name}_{t} out of tolerance in "
                    + _where(layout, theirs[key][i], ref[key][i], e.err[i], e.tol[i]))
    given = " and ".join(k for k in TRACES if k in theirs)
    return f"first divergence: none ({given} agree at all {len(steps)} traced steps)"


def _where(layout, theirs, ref, err, tol):
    """Which groups are out of tolerance, and the entry furthest out: its name and how far."""
    out = err > tol
    groups = np.unique(np.searchsorted(layout.offsets, np.flatnonzero(out), side="right") - 1)
    i = int(np.argmax(np.where(out, err / np.maximum(tol, np.finfo(float).tiny), -1.0)))
    rel = f"relative {err[i] / abs(ref[i]):.1e}, " if ref[i] != 0 else ""
    names = ", ".join(layout.describe_group(g) for g in groups[:6])
    more = f" and {len(groups) - 6} more" if len(groups) > 6 else ""
    return (f"{names}{more}; worst {entry_name(layout, i)}: theirs {theirs[i]:.10e}, revlearn "
            f"{ref[i]:.10e}, off by {err[i]:.1e} ({rel}tolerance {tol[i]:.1e})")


def entry_name(layout, i):
    """The name of entry i of w: W2[3, 0] (row 3, column 0 of W_2) or b1[4]."""
    g = layout.group_of(i)
    j, l = i - int(layout.offsets[g]), g // 2 + 1
    if g % 2:
        return f"b{l}[{j}]"
    fan_out = layout.layer_sizes[l]
    return f"W{l}[{j // fan_out}, {j % fan_out}]"
