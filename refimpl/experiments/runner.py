"""The experiment runner: a loop of steps that survives interruption.

A preset's Job (see `experiments/__init__.py`) turns options into a sequence of `n_steps` steps,
each a pure function of the previous state:  (state, record) = job.step(state, client), client
None or a dask client that computes the step's independent parts (the same bits). After every step
the runner writes a checkpoint (the state's arrays and all records so far) atomically: to a
temporary file in the same folder, flushed and fsynced, then renamed over the old one with
os.replace, so a checkpoint on disk is always a complete step. `--resume DIR` reads it back and
carries on; since each step depends only on the state (and seeds derived from (seed, step)), the
resumed run repeats the uninterrupted one bit for bit. Ctrl-C stops between writes and leaves the
last completed step saved, with results.json written for what has been done.

Progress printing lives here, never in the maths.
"""

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import blas
from ..atomic import atomic_write_bytes
from ..errors import InputError
from ..npzfile import read_npz

CHECKPOINT = "checkpoint.npz"
RESULTS = "results.json"
FORMAT = 4  # 2: the answers of revlearn 0.2 (chunks of rows, own tanh), threads and provenance;
#             3: the options meta_batch and meta_step_decay (a format-2 checkpoint reads as
#                meta_batch 1, meta_step_decay None);
#             4: the options draws, knots and fresh_draws (an older schedules checkpoint reads
#                as its protocol was: one draw, or fresh ones with --paper; one value per step;
#                and is scored on 5 fresh draws at the end)
READS = (2, 3, FORMAT)  # the checkpoint formats --resume reads


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode())


def write_csv(path, header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def write_checkpoint(out, options, arrays, records):
    """The state's arrays and, as a JSON string, the options, every record so far and what
    computed them (`blas.describe`: NumPy, its BLAS and kernel, the CPU's SIMD extensions)."""
    meta = json.dumps({"format": FORMAT, "options": options, "records": records,
                       "provenance": blas.describe()})
    buf = io.BytesIO()
    np.savez(buf, __job__=np.array(meta), **arrays)
    atomic_write_bytes(Path(out) / CHECKPOINT, buf.getvalue())


class Checkpoint(NamedTuple):
    """A checkpoint read back: the options, the state's arrays, the records so far, and what
    computed them (`blas.describe`; None for a checkpoint that does not say)."""

    options: dict
    arrays: dict
    records: list
    provenance: dict


OPTION_TYPES = {"preset": (str,), "seed": (int,), "backend": (str,), "threads": (int, type(None)),
                "paper": (bool,), "small": (bool,), "mnist_dir": (str, type(None)),
                "meta_iters": (int,), "optimizer": (str,), "meta_batch": (int,),
                "meta_step_decay": (float, type(None)), "draws": (str, type(None)),
                "knots": (int, type(None)), "fresh_draws": (int,)}
DRAWS = ("fresh", "one")  # the schedules preset's tuning draws: a new one every meta-iteration


def read_checkpoint(out):
    """The `Checkpoint` in DIR/checkpoint.npz, refusing anything else.

    The file is read by `npzfile.read_npz` (a damaged or hostile file is refused), and the run's
    description checked: its format, the option names and types, and records that are one dict
    per completed step, each naming its step i. The state's arrays are checked against the job
    by the caller (`experiments.cli`)."""
    out = Path(out)
    if not out.is_dir():
        raise InputError(f"--resume {out}: no such folder")
    path = out / CHECKPOINT
    if not path.is_file():
        raise InputError(f"--resume {out}: it holds no {CHECKPOINT}; give the --out folder of "
                         "an earlier `revlearn run`")
    where = f"--resume {out}: {CHECKPOINT}"
    arrays = read_npz(path, f"--resume {out}: checkpoint")
    job = arrays.pop("__job__", None)
    if job is None or job.ndim != 0 or job.dtype.kind != "U":
        raise InputError(f"{where} lacks the run's description (__job__); it was not written by "
                         "`revlearn run`")
    try:
        meta = json.loads(str(job))
    except (ValueError, RecursionError):
        raise InputError(f"{where}: the run's description is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") not in READS:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise InputError(f"{where}: checkpoint format {found} is not one of "
                         f"{', '.join(map(str, READS))}; it was written by another revlearn "
                         "version")
    options, records, provenance = meta.get("options"), meta.get("records"), meta.get("provenance")
    if meta["format"] == 2 and isinstance(options, dict) and "meta_batch" not in options:
        options.update(meta_batch=1, meta_step_decay=None)  # one hypergradient, constant step
    if isinstance(options, dict):
        options.setdefault("optimizer", "momentum")  # checkpoints written before Adam
        if meta["format"] < 4:  # the protocol before fresh draws were the default
            schedules = options.get("preset") == "schedules"
            options.update(draws=("fresh" if options.get("paper") else "one") if schedules
                           else None, knots=None, fresh_draws=5)
    _check_options(options, where)
    _check_records(records, options, where)
    if provenance is not None and not isinstance(provenance, dict):
        raise InputError(f"{where}: the record of what computed the run is not a JSON object")
    return Checkpoint(options, arrays, records, provenance)


def _check_options(options, where):
    if not isinstance(options, dict) or set(options) != set(OPTION_TYPES):
        raise InputError(f"{where}: the run's options are not {', '.join(OPTION_TYPES)}")
    for key, types in OPTION_TYPES.items():
        value = options[key]
        minimum = 1 if key in ("meta_iters", "threads", "meta_batch", "knots") else 0
        if type(value) not in types or (isinstance(value, int) and not isinstance(value, bool)
                                        and value < minimum) or (type(value) is float and not (
                                            math.isfinite(value) and value > 0)) or (
                key == "draws" and value not in (None, *DRAWS)):
            raise InputError(f"{where}: option {key} is {value!r}, not a valid value")


def _check_records(records, options, where):
    if not isinstance(records, list) or len(records) > options["meta_iters"]:
        raise InputError(f"{where}: the run's records are not a list of at most meta_iters "
                         f"({options['meta_iters']}) steps")
    for k, rec in enumerate(records):
        if not isinstance(rec, dict) or rec.get("i") != k or set(rec) != set(records[0]):
            raise InputError(f"{where}: record {k} is not the record of step {k}, with the same "
                             "fields as the others")


def provenance_change(before, now=None):
    """A sentence saying how `now` (default: this process) differs from `before` in what could
    change the last bits of a result (NumPy's version, its BLAS and kernel, the CPU's SIMD
    extensions), or None when nothing does."""
    now = blas.describe() if now is None else now
    if before is None:
        return "the checkpoint does not say what computed it"
    diffs = [f"{key} {_short(before.get(key))} -> {_short(now.get(key))}"
             for key in ("numpy", "blas", "cpu_simd") if before.get(key) != now.get(key)]
    return "; ".join(diffs) or None


def _short(value):
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return ", ".join(f"{b.get('library')} {b.get('version') or ''} {b.get('kernel') or ''}"
                         .strip() for b in value)
    if isinstance(value, list):
        return f"{len(value)} extensions"
    return str(value)


def _clock(seconds):
    if seconds < 60:
        return f"{seconds:4.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class Interrupted(Exception):
    """Ctrl-C arrived; the run stopped with its last completed step saved (`records`: all the
    completed steps' records)."""

    def __init__(self, message, records):
        super().__init__(message)
        self.records = records


def run(job, out, options, state, records, say=print, client=None):
    """Carry job from `state` (with its `records`) to job.n_steps, checkpointing every step;
    with a dask client the steps' independent work runs on its workers (the same bits).

    Returns the final (state, records). Raises Interrupted on Ctrl-C, after the last completed
    step's checkpoint is safely on disk.
    """
    out = Path(out)
    start, done_here = time.perf_counter(), 0
    first = len(records)
    try:
        while len(records) < job.n_steps:
            state, record = job.step(state, client)
            records = records + [record]
            write_checkpoint(out, options, job.state_arrays(state), records)
            done_here += 1
            elapsed = time.perf_counter() - start
            left = elapsed / done_here * (job.n_steps - len(records))
            width = len(str(job.n_steps))
            say(f"{job.unit} {len(records):{width}d}/{job.n_steps}  {job.progress(record)}  "
                f"elapsed {_clock(elapsed)}  remaining {_clock(left)}")
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {len(records)} of {job.n_steps} {job.unit}s "
                          f"({len(records) - first} in this session)", records) from None
    return state, records


def results_document(options, records, summary, files, seconds, complete):
    """What results.json holds."""
    return {"preset": options["preset"], "complete": complete, "options": options,
            "steps_done": len(records), "summary": summary, "files": files,
            "wall_seconds_this_session": seconds, "provenance": blas.describe(),
            "records": records}
