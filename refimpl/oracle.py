"""Oracle case files (DESIGN §5): every input of a problem and the reference answers in one .npz.

`write_case` writes one atomically (a crash never leaves a half-written file under the final name);
`read_case` reads one strictly (no pickle; every key present with its dtype and shape; the inputs
checked as a Case); `check` sets another implementation's outputs against the reference and
says which of the case's outputs it did not provide. A case written with a trace (`revlearn.trace`:
trace_steps, w_trace, dw_trace) also checks the traces an answer file holds, and says where they
first part from revlearn's.

An element of an output passes when |theirs - reference| <= atol + rtol |reference|. With no atol
given, atol is rtol * 1e-3 * max |reference| for that key: entries a thousand times smaller than
the key's largest are compared on the key's scale, where another implementation's round-off
lives, instead of their own.
"""

import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import blas, trace
from .atomic import atomic_write
from .case import Case
from .errors import InputError
from .npzfile import read_npz

INPUT_KEYS = ("spec", "layer_sizes", "activation", "X_train", "y_train", "X_valid", "y_valid",
              "batches", "eps", "alpha", "gamma", "init_scale", "l2")
OUTPUT_KEYS = ("w_final", "valid_loss", "d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0",
               "d_X_train", "exact_recovery", "buffer_bits")
EXACT_KEYS = ("exact_recovery", "buffer_bits")
INFO_KEYS = ("provenance",)  # what computed the answers (`blas.describe`); never compared
RTOL = 1e-6
ATOL_SCALE = 1e-3


def case_arrays(case, result, traced=None):
    """The DESIGN §5 keys of a case and its result, and the trace keys of `traced` (a
    `trace.Recorder`) if given, as arrays ready for np.savez."""
    arrays = {"spec": np.array(json.dumps(case.spec, sort_keys=True)),
              "layer_sizes": np.array(case.layer_sizes, dtype=np.int64),
              "activation": np.array(case.activation)}
    arrays.update({k: getattr(case, k) for k in INPUT_KEYS[3:]})
    arrays.update({k: np.asarray(getattr(result, k)) for k in OUTPUT_KEYS
                   if getattr(result, k) is not None})
    arrays["exact_recovery"] = np.array(bool(result.exact_recovery))
    arrays["buffer_bits"] = np.array(result.buffer_bits, dtype=np.int64)
    arrays["provenance"] = np.array(json.dumps(blas.describe(), sort_keys=True))
    if traced is not None:
        arrays.update(traced.arrays())
    return arrays


def check_writable(path):
    """Refuse, before any work, an output path whose folder is missing or that is a folder."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name such as {path}/case.npz")
    if not path.parent.is_dir():
        raise InputError(f"the folder of output {path} does not exist; create {path.parent} first")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write into {path.parent}")


def write_case(path, case, result, traced=None):
    """Write the case file atomically (`atomic.atomic_write`), compressed."""
    check_writable(path)
    arrays = case_arrays(case, result, traced)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


class Reference(NamedTuple):
    """A case file read back: the Case, its reference outputs (DESIGN §5 keys) and its trace
    (trace_steps, w_trace, dw_trace; None when it has none)."""

    case: Case
    outputs: dict
    trace: dict = None


def read_case(path):
    """The Case and the reference outputs of a case file, after checking every key."""
    a = read_npz(path, "case file")
    missing = [k for k in INPUT_KEYS + OUTPUT_KEYS if k not in a and k != "d_X_train"]
    if missing:
        raise InputError(f"case file {path} lacks {', '.join(missing)}")
    for key in ("spec", "activation"):
        if a[key].ndim != 0 or a[key].dtype.kind != "U":
            raise InputError(f"case file {path}: {key} must be a 0-d string, not {_desc(a[key])}")
    spec = _spec_of(a["spec"], f"case file {path}")
    if a["layer_sizes"].ndim != 1 or a["layer_sizes"].dtype.kind not in "iu":
        raise InputError(f"case file {path}: layer_sizes is {_desc(a['layer_sizes'])}, expected "
                         "a 1-d int64 array")
    inputs = {k: a[k] for k in INPUT_KEYS[3:]}
    for key, arr in inputs.items():
        if arr.dtype.kind not in ("iu" if key in ("y_train", "y_valid", "batches") else "f"):
            raise InputError(f"case file {path}: {key} is {arr.dtype}, expected "
                             f"{'int64' if key[0] in 'yb' else 'float64'}")
    try:
        case = Case(layer_sizes=tuple(a["layer_sizes"].tolist()), activation=str(a["activation"]),
                    grad_train_inputs="d_X_train" in a, spec=spec, **inputs)
    except InputError as e:
        raise InputError(f"case file {path}: {e}") from None
    if not np.array_equal(case.gamma, a["gamma"]):
        raise InputError(f"case file {path}: gamma holds values that are not n / 2**16 "
                         "(case files store the effective, quantised gamma)")
    outputs = {k: a[k] for k in OUTPUT_KEYS if k in a}
    for key, arr in outputs.items():
        _check_output(f"case file {path}", key, arr, case)
    return Reference(case, outputs, _trace_of(a, f"case file {path}", case))


def _trace_of(a, where, case):
    """The trace keys of a case file, checked, or None when it holds none of them."""
    held = [k for k in trace.KEYS if k in a]
    if not held:
        return None
    if len(held) < len(trace.KEYS):
        raise InputError(f"{where} holds {', '.join(held)} but not "
                         f"{', '.join(k for k in trace.KEYS if k not in a)}; a traced case "
                         f"holds all of {', '.join(trace.KEYS)}")
    trace.check_steps(where, a["trace_steps"], case.T)
    for key in trace.TRACES:
        trace.check_trace(where, key, a[key], len(a["trace_steps"]), case.P)
    return {k: a[k] for k in trace.KEYS}


def _spec_of(text, where):
    """The spec a case file stores as JSON text: a JSON object."""
    try:
        spec = json.loads(str(text))
    except (ValueError, RecursionError):  # JSONDecodeError, digits beyond int's limit, nesting
        raise InputError(f"{where}: spec is not valid JSON") from None
    if not isinstance(spec, dict):
        raise InputError(f"{where}: spec is a JSON {type(spec).__name__}, not an object")
    return spec


def expected_shape(key, case):
    """The shape output `key` has for `case`."""
    return {"w_final": (case.P,), "valid_loss": (), "d_alpha": case.alpha.shape,
            "d_gamma": case.gamma.shape, "d_init_scale": case.init_scale.shape,
            "d_l2": case.l2.shape, "d_w0": (case.P,), "d_X_train": case.X_train.shape,
            "exact_recovery": (), "buffer_bits": ()}[key]


DTYPES = {"exact_recovery": ("b", 1, "bool"), "buffer_bits": ("i", 8, "int64")}
FLOAT64 = ("f", 8, "float64")


def _check_output(where, key, arr, case):
    kind, itemsize, name = DTYPES.get(key, FLOAT64)
    if arr.dtype.kind != kind or arr.dtype.itemsize != itemsize:
        raise InputError(f"{where}: {key} is {arr.dtype}; expected {name}, as the case file "
                         "format says" + (" (convert with .astype(np.float64))"
                                          if name == "float64" else ""))
    if arr.shape != expected_shape(key, case):
        raise InputError(f"{where}: {key} has shape {arr.shape}; the case needs "
                         f"{expected_shape(key, case)}")
    if kind == "f" and not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: {key} has NaN or infinite entries")


class Row(NamedTuple):
    """One line of the comparison table."""

    key: str
    shape: tuple
    max_abs: float
    max_rel: float
    ok: bool


class Report(NamedTuple):
    """What `check` found: one `Row` per output THEIRS holds, the case's outputs it lacks, and,
    when it holds a trace, the line saying where it first departs (`trace.first_divergence`)."""

    rows: list
    absent: list
    divergence: str = None


def check(case_path, theirs_path, rtol=RTOL, atol=None):
    """Compare every output key THEIRS holds with the case's reference; a `Report`.

    Refuses (InputError) a THEIRS that is not an .npz, holds an unknown key, an input that differs
    from the case's, an output of the wrong dtype (float64, exact_recovery bool, buffer_bits
    int64) or shape, a NaN, no output at all, or a trace the case cannot check (`_their_trace`).
    """
    if not rtol >= 0 or (atol is not None and not atol >= 0):
        raise InputError(f"rtol and atol must be >= 0; received rtol={rtol}, atol={atol}")
    ref = read_case(case_path)
    theirs = read_npz(theirs_path, "answer file")
    unknown = sorted(set(theirs) - set(INPUT_KEYS) - set(OUTPUT_KEYS) - set(INFO_KEYS)
                     - set(trace.KEYS))
    if unknown:
        raise InputError(f"{theirs_path} holds unknown key(s) {', '.join(unknown)}; the output "
                         f"keys are {', '.join(OUTPUT_KEYS)}")
    for key in INPUT_KEYS:
        if key in theirs and not _same_input(key, theirs[key], ref):
            raise InputError(f"{theirs_path} holds {key} different from the case's: its answers "
                             "are for another problem")
    keys = [k for k in OUTPUT_KEYS if k in theirs]
    traced = _their_trace(theirs_path, theirs, ref)
    if not keys and not traced:
        raise InputError(f"{theirs_path} holds none of the output keys {', '.join(OUTPUT_KEYS)}")
    if "d_X_train" in theirs and "d_X_train" not in ref.outputs:
        raise InputError(f"{theirs_path} holds d_X_train but the case has none (its spec sets "
                         "grad_train_inputs false)")
    for key in keys:
        _check_output(str(theirs_path), key, theirs[key], ref.case)
    rows = [_compare_key(k, theirs[k], ref.outputs[k], rtol, atol) for k in keys]
    rows += [_compare_trace(k, theirs[k], ref.trace[k], rtol, atol) for k in traced]
    absent = [k for k in ref.outputs if k not in theirs]
    absent += [k for k in trace.TRACES if ref.trace is not None and k not in theirs]
    divergence = None if not traced else trace.first_divergence(
        ref.trace["trace_steps"], ref.case.layout, {k: theirs[k] for k in traced}, ref.trace,
        rtol, atol)
    return Report(rows, absent, divergence)


def _their_trace(path, theirs, ref):
    """The traces (w_trace, dw_trace) THEIRS holds, after refusing one the case cannot check:
    a case without a trace, trace_steps missing or not the case's, a wrong shape or dtype, NaN."""
    traced = [k for k in trace.TRACES if k in theirs]
    if not traced:
        if "trace_steps" in theirs:
            raise InputError(f"{path} holds trace_steps but neither w_trace nor dw_trace")
        return traced
    if ref.trace is None:
        raise InputError(f"{path} holds {' and '.join(traced)} but the case file has no trace; "
                         "write one with `revlearn oracle SPEC -o CASE --trace`")
    if "trace_steps" not in theirs:
        raise InputError(f"{path} holds {' and '.join(traced)} without trace_steps; save the "
                         "case's trace_steps with them")
    steps, want = theirs["trace_steps"], ref.trace["trace_steps"]
    if steps.dtype != np.int64 or steps.shape != want.shape or not np.array_equal(steps, want):
        raise InputError(f"{path}: its trace_steps ({steps.dtype}, "
                         f"{trace.describe_steps(steps)}) are not the case's "
                         f"({trace.describe_steps(want)}); trace the steps the case lists")
    for key in traced:
        trace.check_trace(str(path), key, theirs[key], len(want), ref.case.P)
    return traced


def compare(case_path, theirs_path, rtol=RTOL, atol=None):
    """The rows of `check`: one `Row` per output THEIRS holds (the outputs it lacks are not
    reported here; `check` lists them)."""
    return check(case_path, theirs_path, rtol, atol).rows


def _same_input(key, theirs, ref):
    if key == "spec":
        try:
            return json.loads(str(theirs)) == ref.case.spec
        except json.JSONDecodeError:
            return False
    mine = np.asarray(ref.case.layer_sizes if key == "layer_sizes" else getattr(ref.case, key))
    return theirs.shape == mine.shape and bool(np.all(theirs == mine))


def _compare_key(key, theirs, ref, rtol, atol):
    if key in EXACT_KEYS:
        same = bool(theirs == ref)
        return Row(key, ref.shape, float(abs(int(theirs) - int(ref))), 0.0 if same else np.inf,
                   same)
    err = np.abs(theirs - ref)
    scale = np.max(np.abs(ref), initial=0.0)
    tol = (rtol * ATOL_SCALE * scale if atol is None else atol) + rtol * np.abs(ref)
    on_scale = np.abs(ref) > ATOL_SCALE * scale
    max_rel = float(np.max(err[on_scale] / np.abs(ref[on_scale]), initial=0.0))
    return Row(key, ref.shape, float(np.max(err, initial=0.0)), max_rel, bool(np.all(err <= tol)))


def _compare_trace(key, theirs, ref, rtol, atol):
    """A trace's row of the table: its largest errors, ok when every traced step passes."""
    max_abs, max_rel = trace.max_errors(theirs, ref)
    return Row(key, ref.shape, max_abs, max_rel,
               bool(np.all(trace.step_errors(theirs, ref, rtol, atol).ok)))


def format_table(rows, absent=()):
    """The comparison as a text table (key, shape, max abs error, max rel error, ok), then a line
    naming the case's outputs that were not checked, if any."""
    lines = [f"{'key':<15}{'shape':<16}{'max abs err':>13}{'max rel err':>13}  ok"]
    for r in rows:
        lines.append(f"{r.key:<15}{str(r.shape):<16}{r.max_abs:>13.3e}{r.max_rel:>13.3e}  "
                     f"{'ok' if r.ok else 'MISMATCH'}")
    if absent:
        lines.append(f"not checked (absent from THEIRS): {', '.join(absent)}")
    return "\n".join(lines)


def verdict(report, rtol, atol=None):
    """The last line of `revlearn check`: which outputs agree, mismatch, or were not provided."""
    bad = [r.key for r in report.rows if not r.ok]
    if bad:
        line = (f"MISMATCH in {', '.join(bad)} (rtol {rtol:g}, atol "
                f"{'scaled per key' if atol is None else f'{atol:g}'})")
    elif report.absent:
        line = f"all {len(report.rows)} provided outputs agree (rtol {rtol:g})"
    else:
        return f"all {len(report.rows)} outputs agree (rtol {rtol:g})"
    if report.absent:
        line += f"; {len(report.absent)} not provided: {', '.join(report.absent)}"
    return line


def _desc(a):
    return f"{a.dtype} array of shape {a.shape}"
