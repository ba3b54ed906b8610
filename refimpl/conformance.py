"""The conformance suite: a fixed, versioned set of case files for checking another implementation.

`write_suite(DIR)` (`revlearn conformance DIR`) writes, for each case of `CASES`, DIR/NAME.npz (a
case file with its trace, `revlearn.trace`) and DIR/NAME.json (its spec, every default filled
in), then DIR/index.json: the suite's version, what computed it, and for each case what it covers,
its sizes, its trace, whether it is large, and the sha256 of its inputs and answers.
`check_folder(DIR, THEIRS_DIR)` (`revlearn check DIR THEIRS_DIR`) checks THEIRS_DIR/NAME.npz
against each case, one row per case.

Every answer of the suite is pinned by the sha256 of its bytes in `conformance_pins.json` (made by
`scripts/pin_conformance.py`), so a change of revlearn that alters any answer fails the tests until
it is made deliberately: SUITE_VERSION goes up and the pins are made again. Inputs should be the
same bits on every machine (NumPy's seeded generators, the embedded MNIST, no matrix product but
the argmax that labels the synthetic data), and the tests compare their digests everywhere.
Answers are held to their digests, and must be the same bits wherever NumPy's version, revlearn's
way of calling BLAS and the BLAS library's version and kernel are the pins' (`same_products`).
Elsewhere the last bits of matrix products may differ (README, "Same bits everywhere"), so the
pins also hold a few values of every answer (its norm and up to eight entries, `fingerprint`),
compared there when some digest differs, within FALLBACK_RTOL: 1e-9,
1,500 times the largest change measured with OpenBLAS's Haswell kernel in place of SkylakeX
(6.5e-13), except near the edge of chaos, where rounding differences grow (measured 1.7e-9
between float64 and fixed-point trajectories): 1e-7 there. `check_entries` compares every entry
within the same tolerances, given the answers as one machine computed them (the tests keep such a
set: docs/conformance.md).

A digest (`digest`) is the sha256 of, for each key in sorted order: the key in UTF-8, a NUL byte,
the array's dtype as NumPy writes it little-endian ('<f8', '<i8', '|b1', '<U87'), a NUL byte, its
shape as a Python tuple ('(100, 8)'), a NUL byte, and its bytes in C order, little-endian.
"""

import hashlib
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import __version__, backends, blas, oracle, sgd, trace
from .atomic import atomic_write_bytes, files_in, some
from .errors import InputError
from .spec import make_case

SUITE_VERSION = 2  # 1: momentum's 13 cases; 2: Adam's 6 added, the 13 unchanged
PINS = Path(__file__).with_name("conformance_pins.json")
INDEX = "index.json"
MAX_INDEX_BYTES = 64 << 20  # an index of a few cases is kilobytes
FALLBACK_RTOL = 1e-9  # answers against the pinned values where the products' last bits differ
BUFFER_SLACK_BITS = 32 * 8  # buffer_bits there: the stacks' peaks may move by a few words


class SuiteCase(NamedTuple):
    """One case of the suite: its file name, what it covers, its spec, every how many steps it is
    traced, whether an autograd unroll takes more than seconds (large), the suite version that
    added it, and how far its answers may move where matrix products round differently."""

    name: str
    covers: str
    spec: dict
    trace_every: int = 1
    large: bool = False
    since: int = 1
    fallback_rtol: float = FALLBACK_RTOL


def _per_group(T, values):
    """A (T, G) schedule holding values[g] at every step, as nested lists."""
    return [list(values)] * T


def _schedules(T, G):
    """alpha and gamma per step and group: alpha warms up over 5 steps and decays, differently per
    group; gamma rises from 0.5 to 0.99, with gamma = 1 at step 3 and 2**-16 at step 7."""
    alpha = [[round(0.4 * min(1, (t + 1) / 5) * 0.97 ** t * (1 + 0.25 * g), 6) for g in range(G)]
             for t in range(T)]
    gamma = [[round(0.5 + 0.49 * t / (T - 1) - 0.05 * (g % 2), 6) for g in range(G)]
             for t in range(T)]
    gamma[3] = [1.0] * G
    gamma[7] = [2.0**-16] * G
    return alpha, gamma


def _weight_l2(P):
    """Per-weight penalties over three decades, 10**(-4 + 3 frac(0.618034 i)), i = 0 .. P-1."""
    return [round(10 ** (-4 + 3 * ((0.618034 * i) % 1)), 9) for i in range(P)]


def _adam_schedules(T, G):
    """Adam's alpha, beta1 and beta2 per step and group: alpha warms up over 5 steps and decays,
    beta1 rises from 0.5 to 0.95 and beta2 from 0.9 to 0.999; beta1 = 2**-16 at step 4 and
    beta2 = 1 - 2**-16 at step 6 (the ends of their range)."""
    alpha = [[round(0.02 * min(1, (t + 1) / 5) * 0.97 ** t * (1 + 0.25 * g), 6) for g in range(G)]
             for t in range(T)]
    beta1 = [[round(0.5 + 0.45 * t / (T - 1) - 0.05 * (g % 2), 6) for g in range(G)]
             for t in range(T)]
    beta2 = [[round(0.9 + 0.099 * t / (T - 1), 6)] * G for t in range(T)]
    beta1[4] = [2.0**-16] * G
    beta2[6] = [1 - 2.0**-16] * G
    return alpha, beta1, beta2


def _cases():
    small = dict(dataset="synthetic", n_train=60, n_valid=50, batch_size=10, seed=0)
    alpha, gamma = _schedules(30, 6)
    adam = dict(optimizer="adam")
    a_alpha, beta1, beta2 = _adam_schedules(30, 6)
    return (
        SuiteCase("smallest_net", "the smallest net: 1 input, 1 hidden unit, 2 classes (P = 6)",
                  dict(small, layer_sizes=[1, 1, 2], n_train=20, n_valid=20, batch_size=5,
                       n_iters=10, alpha=0.5, gamma=0.9, init_scale=0.8)),
        SuiteCase("one_step", "T = 1: a single step from v_0 = 0",
                  dict(small, layer_sizes=[4, 5, 3], n_iters=1, alpha=0.5, gamma=0.5,
                       init_scale=0.5, l2=0.01)),
        SuiteCase("gamma_min", "gamma = 2**-16 at every step: 16 bits per parameter and step "
                  "into the buffer", dict(small, layer_sizes=[5, 6, 3], n_iters=20, alpha=0.2,
                                          gamma=2.0**-16, init_scale=0.4, l2=0.001)),
        SuiteCase("gamma_one", "gamma = 1 for W1 and b1: their velocity stays 0 and they never "
                  "move, yet their d_gamma is not 0",
                  dict(small, layer_sizes=[5, 7, 3], n_iters=20, alpha=0.3,
                       gamma=_per_group(20, [1.0, 1.0, 0.9, 0.9]), init_scale=0.4, l2=0.001)),
        SuiteCase("alpha_zero", "alpha = 0 for b1 and W2 (two frozen groups), two hidden layers",
                  dict(small, layer_sizes=[5, 7, 6, 3], n_iters=20,
                       alpha=_per_group(20, [0.3, 0.0, 0.0, 0.3, 0.3, 0.3]), gamma=0.8,
                       init_scale=0.4, l2=0.001)),
        SuiteCase("relu_dead_units", "relu, two hidden layers: 2 of the 12 first-layer units "
                  "dead (off on every row) throughout; in the second layer one dead unit revives "
                  "and another dies",
                  dict(small, layer_sizes=[5, 12, 6, 3], activation="relu", n_train=100,
                       n_valid=100, n_iters=40, alpha=0.3, gamma=0.9, seed=1,
                       init_scale=[0.3, 1.5, 0.4, 0.5, 0.5, 0.1])),
        SuiteCase("group_l2", "per-group l2, 0 for one group; init_scale 0 for the biases",
                  dict(small, layer_sizes=[6, 8, 7, 3], n_iters=24, alpha=0.3, gamma=0.9,
                       init_scale=[0.4, 0.0, 0.4, 0.0, 0.4, 0.0],
                       l2=[0.01, 0.0, 0.003, 0.001, 0.03, 0.0001])),
        SuiteCase("weight_l2", "per-weight l2 over three decades, relu",
                  dict(small, layer_sizes=[6, 8, 3], activation="relu", n_iters=24, alpha=0.3,
                       gamma=0.9, init_scale=0.4, l2=_weight_l2(6 * 8 + 8 + 8 * 3 + 3),
                       l2_per_weight=True)),
        SuiteCase("schedules", "alpha and gamma per step and group, gamma = 1 at step 3 and "
                  "2**-16 at step 7, two hidden layers",
                  dict(small, layer_sizes=[6, 8, 7, 3], n_iters=30, alpha=alpha, gamma=gamma,
                       init_scale=[0.4, 0.1, 0.4, 0.1, 0.4, 0.1], l2=0.001)),
        SuiteCase("train_inputs", "grad_train_inputs: d_X_train, each row in several batches",
                  dict(small, layer_sizes=[4, 6, 3], n_train=40, n_iters=30, alpha=0.3,
                       gamma=0.9, init_scale=0.4, l2=0.001, grad_train_inputs=True)),
        SuiteCase("long_horizon", "T = 1000 (traced every 10 steps)",
                  dict(small, layer_sizes=[4, 5, 3], n_train=100, n_valid=100, n_iters=1000,
                       alpha=0.1, gamma=0.95, init_scale=0.3, l2=0.001), trace_every=10),
        SuiteCase("edge_of_chaos", "alpha = 3.5, near the edge of chaos: hypergradients 2,000 "
                  "times those at alpha = 1, finite, and float64 still agrees to 1e-8",
                  dict(small, layer_sizes=[6, 10, 3], n_train=100, n_valid=100, n_iters=100,
                       alpha=3.5, gamma=0.9, init_scale=0.5), fallback_rtol=1e-7),
        SuiteCase("mnist_paper", "the paper's MNIST net: 784-50-50-50-10 tanh, 10,000 images, "
                  "T = 100, batch 200 (traced every 10 steps)",
                  dict(layer_sizes=[784, 50, 50, 50, 10], activation="tanh", dataset="mnist",
                       n_train=10000, n_valid=10000, n_iters=100, batch_size=200, seed=0,
                       alpha=1.0, gamma=0.9, init_scale=0.1, l2=0.0001),
                  trace_every=10, large=True),
        SuiteCase("adam_constant", "Adam with constant betas 0.9 and 0.999 and epsilon 1e-8: "
                  "torch.optim.Adam with the penalty in the loss",
                  dict(small, **adam, layer_sizes=[5, 7, 3], n_iters=30, alpha=0.05, beta1=0.9,
                       beta2=0.999, epsilon=1e-8, init_scale=0.4, l2=0.001), since=2),
        SuiteCase("adam_schedules", "Adam with alpha, beta1 and beta2 per step and group, beta1 = "
                  "2**-16 at step 4 and beta2 = 1 - 2**-16 at step 6, epsilon per group from "
                  "1e-8 to 0.1",
                  dict(small, **adam, layer_sizes=[6, 8, 7, 3], n_iters=30, alpha=a_alpha,
                       beta1=beta1, beta2=beta2, epsilon=[1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1],
                       init_scale=[0.4, 0.1, 0.4, 0.1, 0.4, 0.1], l2=0.001), since=2),
        SuiteCase("adam_relu_dead_units", "Adam, relu, no penalty: entries of dead units whose "
                  "gradient is exactly 0 at every step, so s = 0 and they never move (the "
                  "square root's derivative taken as 0 there)",
                  dict(small, **adam, layer_sizes=[5, 12, 6, 3], activation="relu",
                       n_train=100, n_valid=100, n_iters=40, seed=1, alpha=0.02, beta1=0.9,
                       beta2=0.99, epsilon=1e-6, init_scale=[0.3, 1.5, 0.4, 0.5, 0.5, 0.1]),
                  since=2),
        SuiteCase("adam_weight_l2", "Adam with per-weight l2 over three decades",
                  dict(small, **adam, layer_sizes=[6, 8, 3], n_iters=24, alpha=0.03, beta1=0.9,
                       beta2=0.999, epsilon=1e-7, init_scale=0.4,
                       l2=_weight_l2(6 * 8 + 8 + 8 * 3 + 3), l2_per_weight=True), since=2),
        SuiteCase("adam_train_inputs", "Adam with grad_train_inputs: d_X_train",
                  dict(small, **adam, layer_sizes=[4, 6, 3], n_train=40, n_iters=30, alpha=0.03,
                       beta1=0.8, beta2=0.95, epsilon=1e-5, init_scale=0.4, l2=0.001,
                       grad_train_inputs=True), since=2),
        SuiteCase("adam_long_horizon", "Adam, T = 1000 (traced every 10 steps)",
                  dict(small, **adam, layer_sizes=[4, 5, 3], n_train=100, n_valid=100,
                       n_iters=1000, alpha=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8,
                       init_scale=0.3, l2=0.001), trace_every=10, since=2),
    )


CASES = _cases()


def tolerances():
    """The cases' fallback_rtol in words: "1e-09 relative; 1e-07 for edge_of_chaos"."""
    other = [f"{c.fallback_rtol:g} for {c.name}" for c in CASES if c.fallback_rtol != FALLBACK_RTOL]
    return "; ".join([f"{FALLBACK_RTOL:g} relative", *other])


# --- digests and fingerprints -------------------------------------------------------------------

def digest(arrays, keys):
    """The sha256 (hex) of the arrays under `keys`, as the module's doc defines it."""
    h = hashlib.sha256()
    for key in sorted(keys):
        a = np.asarray(arrays[key])
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        h.update(f"{key}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _optimizer(arrays):
    return str(arrays[oracle.OPTIMIZER_KEY]) if oracle.OPTIMIZER_KEY in arrays else "momentum"


def input_keys(arrays):
    """The input keys a suite case file's digest covers: its optimizer's, and for Adam the
    optimizer key itself (momentum's are those of suite version 1, whose files lack it)."""
    optimizer = _optimizer(arrays)
    keys = oracle.keys_of(optimizer)[0]
    return keys if optimizer == "momentum" else (*keys, oracle.OPTIMIZER_KEY)


def answer_keys(arrays):
    """The answer keys a suite case file holds: its optimizer's outputs and its trace."""
    return [k for k in (*oracle.keys_of(_optimizer(arrays))[1], *trace.KEYS) if k in arrays]


def fingerprint(a):
    """A few values of an answer to compare to a tolerance: the largest |entry|, the norm and up
    to eight entries (the largest, the first, the last and five between), by flat index."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return {"value": a.tolist()}
    flat = a.ravel()
    idx = sorted({int(np.argmax(np.abs(flat)))}
                 | {int(i) for i in np.linspace(0, flat.size - 1, 7).round()})
    return {"max_abs": float(np.max(np.abs(flat))), "norm": math.sqrt(math.fsum(flat * flat)),
            "index": idx, "value": [float(flat[i]) for i in idx]}


def fingerprint_errors(a, pinned):
    """How far an answer is from its pinned fingerprint: the largest error over its norm and
    entries, relative to max(|pinned value|, 1e-3 x the largest pinned |entry|); for integers and
    booleans 0 when equal, else inf."""
    if "max_abs" not in pinned:
        return 0.0 if np.asarray(a).tolist() == pinned["value"] else math.inf
    flat = np.asarray(a).ravel()
    floor = 1e-3 * pinned["max_abs"]
    mine = [math.sqrt(math.fsum(flat * flat))] + [float(flat[i]) for i in pinned["index"]]
    want = [pinned["norm"]] + pinned["value"]
    return max((abs(m - w) / max(abs(w), floor) if max(abs(w), floor) > 0 else abs(m - w))
               for m, w in zip(mine, want, strict=True))


def entry_errors(a, pinned):
    """How far an answer is from pinned values, entry by entry: the largest |a - pinned| relative to
    max(|pinned entry|, 1e-3 x the largest pinned |entry|) (`fingerprint_errors`' rule); for
    integers and booleans 0 when equal, else inf."""
    a, pinned = np.asarray(a), np.asarray(pinned)
    if a.shape != pinned.shape:
        return math.inf
    if pinned.dtype.kind != "f":
        return 0.0 if np.array_equal(a, pinned) else math.inf
    scale = np.maximum(np.abs(pinned), 1e-3 * np.max(np.abs(pinned), initial=0.0))
    err = np.abs(a - pinned)
    return float(np.max(np.where(scale > 0, err / np.where(scale > 0, scale, 1.0), err),
                        initial=0.0))


def check_entries(records, values):
    """One line per case and answer of the records whose entries are not all within the case's
    fallback_rtol of `values` ({"NAME/KEY": array}, the answers as computed on one machine);
    answers that `values` lacks are not checked."""
    problems = []
    for rec in records:
        for key, a in rec["arrays"].items():
            pinned = values.get(f"{rec['name']}/{key}")
            if pinned is None:
                continue
            if key == "buffer_bits":
                moved = abs(int(a) - int(pinned))
                problems += [f"{rec['name']}: buffer_bits moved by {moved} bits"] * (
                    moved > BUFFER_SLACK_BITS)
                continue
            err = entry_errors(a, pinned)
            if err > rec["fallback_rtol"]:
                problems.append(f"{rec['name']}: {key} differs from the pinned values by "
                                f"{err:.1e} relative (in some entry)")
    return problems


def products():
    """What decides the last bits of revlearn's matrix products on this machine: NumPy's version,
    whether revlearn calls its OpenBLAS's cblas_dgemm directly, and each BLAS library's API,
    version and kernel."""
    made_by = blas.describe()
    return {"numpy": made_by["numpy"], "dgemm": blas.DGEMM is not None,
            "blas": [{k: lib.get(k) for k in ("api", "version", "kernel")}
                     for lib in made_by["blas"]]}


def same_products(pinned, now=None):
    """None when this machine computes matrix products as the pins' did, else what differs."""
    now = products() if now is None else now
    diffs = [f"{k} {_say(pinned.get(k))} (pinned) against {_say(now.get(k))} (here)"
             for k in ("numpy", "dgemm", "blas") if pinned.get(k) != now.get(k)]
    return "; ".join(diffs) or None


def _say(value):
    if isinstance(value, list):
        return ", ".join(" ".join(str(lib.get(k)) for k in ("api", "version", "kernel"))
                         for lib in value) or "no BLAS found"
    return str(value)


def load_pins():
    """The pinned digests and fingerprints (`conformance_pins.json`)."""
    return json.loads(PINS.read_text())


class PinCheck(NamedTuple):
    """A suite set against the pins. how: "bits" when the answers were held to their digests,
    "values" when they were compared with their fingerprints within their fallback_rtol, because
    some differ from their pinned bits on a machine whose matrix products differ from the pins'
    (`why` says how; None when they do not). problems: one line per case and key that failed."""

    how: str
    why: str
    problems: list


def check_pins(records, pins=None, values=False):
    """Set the records of a written suite (index.json's "cases", with "arrays") against the pins:
    the inputs' digests always; the answers' digests, unless some differ and this machine's
    products differ from the pins', in which case (or when `values`) the answers' values."""
    pins = load_pins() if pins is None else pins
    why = same_products(pins["products"])
    problems = []
    if pins["suite_version"] != SUITE_VERSION:
        problems.append(f"the pins are of suite version {pins['suite_version']}, this revlearn "
                        f"writes version {SUITE_VERSION}")
    for rec in records:
        if rec["name"] not in pins["cases"]:
            problems.append(f"{rec['name']}: not pinned")
        elif rec["inputs_sha256"] != pins["cases"][rec["name"]]["inputs_sha256"]:
            problems.append(f"{rec['name']}: inputs differ from the pinned ones")
    pinned = [(rec, pins["cases"][rec["name"]]["answers"]) for rec in records
              if rec["name"] in pins["cases"]]
    bits = [f"{rec['name']}: {key} differs from its pinned bits" for rec, answers in pinned
            for key, pin in answers.items() if rec["answers"][key]["sha256"] != pin["sha256"]]
    if not values and (not bits or why is None):
        return PinCheck("bits", why, problems + bits)
    for rec, answers in pinned:
        for key, pin in answers.items():
            problems += _value_problems(rec, key, pin["fingerprint"])
    return PinCheck("values", why, problems)


def _value_problems(rec, key, fp):
    """[] when answer `key` of a record is near its pinned fingerprint, else [what differs]."""
    if key == "buffer_bits":
        moved = abs(int(rec["arrays"][key]) - fp["value"])
        return [f"{rec['name']}: buffer_bits moved by {moved} bits"] * (moved > BUFFER_SLACK_BITS)
    err = fingerprint_errors(rec["arrays"][key], fp)
    return [] if err <= rec["fallback_rtol"] else [
        f"{rec['name']}: {key} differs from its pinned values by {err:.1e} relative"]


def pins_of(records):
    """The pins of a written suite: what `scripts/pin_conformance.py` writes."""
    return {"suite_version": SUITE_VERSION, "revlearn": __version__, "products": products(),
            "cases": {r["name"]: {"inputs_sha256": r["inputs_sha256"],
                                  "answers": {k: {"sha256": v["sha256"],
                                                  "fingerprint": fingerprint(r["arrays"][k])}
                                              for k, v in r["answers"].items()}}
                      for r in records}}


# --- writing the suite -------------------------------------------------------------------------

def check_folder_is_new(folder):
    """Refuse a DIR that is a file or a folder holding files: the suite goes into a new or empty
    folder, so it never mixes with or overwrites other files."""
    folder = Path(folder)
    held = files_in(folder, str(folder))
    if INDEX in held:
        raise InputError(f"{folder} already holds a conformance suite; give a new or empty folder")
    if held:
        raise InputError(f"{folder} already holds files ({some(held)}); give a new or empty "
                         "folder")
    if not folder.is_dir() and not folder.parent.is_dir():
        raise InputError(f"the folder {folder.parent} of {folder} does not exist; create it "
                         "first")


def write_suite(folder, backend="auto", threads=None, say=print):
    """Write every case of the suite into `folder` (new or empty) and index.json last; the
    records of the cases (as in index.json, plus each case's answer arrays under "arrays")."""
    folder = Path(folder)
    check_folder_is_new(folder)
    backends.get_backend(backend)
    folder.mkdir(exist_ok=True)
    records = []
    for i, c in enumerate(CASES):
        start = time.perf_counter()
        case = make_case(c.spec)
        recorder = trace.Recorder(trace.trace_steps(case.T, c.trace_every), case.P)
        result = sgd.hypergradient(case, backend=backend, threads=threads, trace=recorder)
        arrays = oracle.case_arrays(case, result, recorder)
        oracle.write_case(folder / f"{c.name}.npz", case, result, recorder)
        atomic_write_bytes(folder / f"{c.name}.json",
                           (json.dumps(case.spec, indent=1, sort_keys=True) + "\n").encode())
        seconds = time.perf_counter() - start
        records.append(_record(c, case, arrays, seconds))
        say(f"  {i + 1:2d}/{len(CASES)} {c.name:<16s} P = {case.P:6d}  T = {case.T:5d}  "
            f"{len(recorder.steps):4d} traced steps  {seconds:6.2f} s")
    index = {"suite_version": SUITE_VERSION, "revlearn": __version__,
             "provenance": blas.describe(), "products": products(),
             "cases": [{k: v for k, v in r.items() if k != "arrays"} for r in records]}
    atomic_write_bytes(folder / INDEX, (json.dumps(index, indent=1) + "\n").encode())
    return records


def _record(c, case, arrays, seconds):
    keys = answer_keys(arrays)
    return {"name": c.name, "file": f"{c.name}.npz", "spec": f"{c.name}.json", "covers": c.covers,
            "large": c.large, "since": c.since, "layer_sizes": list(case.layer_sizes),
            "activation": case.activation, "P": case.P, "T": case.T,
            "trace_every": c.trace_every, "traced_steps": len(arrays["trace_steps"]),
            "fallback_rtol": c.fallback_rtol,
            "seconds": round(seconds, 3),
            "inputs_sha256": digest(arrays, input_keys(arrays)),
            "answers": {k: {"sha256": digest(arrays, [k])} for k in keys},
            "arrays": {k: arrays[k] for k in keys}}


# --- checking a folder of answers --------------------------------------------------------------

class CaseReport(NamedTuple):
    """One case of a folder check: its name, the `oracle.Report` (None when THEIRS_DIR lacks the
    case) and how many outputs and traces the case has."""

    name: str
    report: object
    keys: int


def read_index(folder):
    """The case names a suite folder lists in index.json, after checking that it is one."""
    folder = Path(folder)
    path = folder / INDEX
    if not path.is_file():
        raise InputError(f"{folder} holds no {INDEX}; give a folder written by `revlearn "
                         "conformance DIR`")
    if path.stat().st_size > MAX_INDEX_BYTES:
        raise InputError(f"{path} is {path.stat().st_size} bytes, too large for the index of a "
                         "conformance suite")
    try:
        index = json.loads(path.read_bytes().decode("utf-8"))
        names = [c["name"] for c in index["cases"]]
        version = index["suite_version"]
    except (ValueError, TypeError, KeyError, RecursionError):
        raise InputError(f"{path} is not the index of a conformance suite (it lacks "
                         "suite_version or a list of cases with names)") from None
    if not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        raise InputError(f"{path} names cases that are not plain file names")
    return version, names


def check_folder(folder, theirs, rtol=oracle.RTOL, atol=None):
    """Check THEIRS/NAME.npz against each case NAME of the suite in `folder`; (suite version,
    [CaseReport]). Refuses a THEIRS that is not a folder, holds an .npz named after no case, or
    holds none of the cases; each answer file is checked as `oracle.check` checks one."""
    version, names = read_index(folder)
    theirs = Path(theirs)
    if not theirs.is_dir():
        raise InputError(f"{theirs} is not a folder; checking the suite {folder} takes a folder "
                         "of answer files NAME.npz, one per case")
    strays = sorted(p.name for p in theirs.glob("*.npz") if p.stem not in names)
    if strays:
        raise InputError(f"{theirs} holds {', '.join(strays[:3])}, named after no case of the "
                         f"suite; the cases are {', '.join(names)}")
    present = [n for n in names if (theirs / f"{n}.npz").is_file()]
    if not present:
        raise InputError(f"{theirs} holds none of the suite's answer files ({names[0]}.npz, ...)")
    out = []
    for name in names:
        case_path = Path(folder) / f"{name}.npz"
        report = (oracle.check(case_path, theirs / f"{name}.npz", rtol, atol)
                  if name in present else None)
        keys = len(report.rows) + len(report.absent) if report is not None else None
        out.append(CaseReport(name, report, keys))
    return version, out


def format_folder(reports, rtol, atol=None):
    """The table of a folder check, each failing case's divergence line, and the verdict, which
    names the cases and the outputs THEIRS did not provide; (text, ok)."""
    n = max([18, *(len(r.name) + 1 for r in reports)])
    lines = [f"{'case':<{n}s}{'checked':>9s}{'max rel err':>13s}  result"]
    notes, bad, absent, unanswered = [], [], [], {}
    for r in reports:
        if r.report is None:
            absent.append(r.name)
            lines.append(f"{r.name:<{n}s}{'-':>9s}{'-':>13s}  not provided")
            continue
        rows = r.report.rows
        wrong = [row.key for row in rows if not row.ok]
        worst = max((row.max_rel for row in rows), default=0.0)
        lines.append(f"{r.name:<{n}s}{f'{len(rows)}/{r.keys}':>9s}{worst:>13.3e}  "
                     + ("ok" if not wrong else f"MISMATCH in {', '.join(wrong)}"))
        for key in r.report.absent:
            unanswered[key] = unanswered.get(key, 0) + 1
        if wrong:
            bad.append(r.name)
            if r.report.divergence is not None:
                notes.append(f"{r.name}: {r.report.divergence}")
    checked = len(reports) - len(absent)
    if unanswered:
        notes.append("outputs not provided: " + ", ".join(
            f"{k} ({'every case' if n == checked else f'{n} case' + 's' * (n > 1)})"
            for k, n in unanswered.items()))
    if bad:
        verdict = (f"MISMATCH in {len(bad)} of {checked} cases: {', '.join(bad)} (rtol {rtol:g}, "
                   f"atol {'scaled per key' if atol is None else f'{atol:g}'})")
    else:
        verdict = f"all {checked} cases provided agree (rtol {rtol:g})"
    if absent:
        verdict += f"; {len(absent)} not provided: {', '.join(absent)}"
    return "\n".join(lines + notes + [verdict]), not bad
