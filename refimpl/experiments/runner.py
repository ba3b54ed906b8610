"""The experiment runner: a loop of steps that survives interruption.

A preset's Job (see `experiments/__init__.py`) turns options into a sequence of `n_steps` steps,
each a pure function of the previous state:  (state, record) = job.step(state). After every step
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
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import blas
from ..atomic import atomic_write_bytes
from ..errors import InputError

CHECKPOINT = "checkpoint.npz"
RESULTS = "results.json"
FORMAT = 1


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
    computed them (None for a checkpoint that does not say)."""

    options: dict
    arrays: dict
    records: list
    provenance: dict


def read_checkpoint(out):
    """The `Checkpoint` in DIR/checkpoint.npz, refusing anything else."""
    path = Path(out) / CHECKPOINT
    if not Path(out).is_dir():
        raise InputError(f"--resume {out}: no such folder")
    if not path.is_file():
        raise InputError(f"--resume {out}: it holds no {CHECKPOINT}; give the --out folder of "
                         "an earlier `revlearn run`")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("__job__")))
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise InputError(f"--resume {out}: {CHECKPOINT} is not a readable checkpoint ({e})") \
            from None
    if meta.get("format") != FORMAT:
        raise InputError(f"--resume {out}: checkpoint format {meta.get('format')} is not "
                         f"{FORMAT}; it was written by another revlearn version")
    return Checkpoint(meta["options"], arrays, meta["records"], meta.get("provenance"))


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


def run(job, out, options, state, records, say=print):
    """Carry job from `state` (with its `records`) to job.n_steps, checkpointing every step.

    Returns the final (state, records). Raises Interrupted on Ctrl-C, after the last completed
    step's checkpoint is safely on disk.
    """
    out = Path(out)
    start, done_here = time.perf_counter(), 0
    first = len(records)
    try:
        while len(records) < job.n_steps:
            state, record = job.step(state)
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
