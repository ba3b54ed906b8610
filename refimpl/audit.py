"""`revlearn audit`: how far each approximate hypergradient is from the exact one, on one case.

`audit(case, Ks)` computes the exact hypergradient e (the reversible method), forward mode along
random directions, and every method of `revlearn.approx` (truncated and ift at each K of the
grid `k_grid(Ks, T)`), and compares each hyperparameter kind a method gives with e:

    cosine          a . e / (|a| |e|)                (None when a or e is 0 or a is not finite)
    rel_err         |a - e| / |e|                    (2-norms over the kind's entries)
    sign_agreement  the fraction of entries with sign(a_i) = sign(e_i)

Forward mode's rows are per direction u: rel_err = |f'_u - e . u| / |e . u| and sign_agreement 1
or 0 (cosine None). `seconds` is the wall time of the call that gave the row (every kind it gives
at once, its own training run included): the median of `repeats` timed runs. `peak_bytes` is the
most memory that call held at once beyond what was allocated before it, as tracemalloc counts it
(NumPy's and Numba's arrays included), from one more, traced run (made first). Every method runs
once on a one-step copy of the case before anything is measured. The reporting lives here; the
maths in `revlearn.approx`.
"""

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np

from . import approx, blas, memory
from .atomic import atomic_write_bytes, files_in, some
from .errors import InputError
from .experiments import plotting
from .sgd import hypergradient, optimizer_of, trajectory_bytes

METHODS = ("exact", "forward", "truncated", "drmad", "ift", "greedy")
NOT_COVERED = {
    "forward": {"X_train": "forward mode here propagates tangents of w only (no input tangent)"},
    "truncated": {k: "needs all T steps: given at K = T only" for k in ("init_scale", "w0")},
    "drmad": {k: "written for SGD with momentum: the straight line gives w_t and v_t, not Adam's "
              "m_t and s_t" for k in approx.ADAM_KINDS + ("X_train",)},
    "ift": {k: "a stationary point does not depend on the optimizer or its start: the theorem "
            "gives 0" for k in ("alpha", "gamma", "beta1", "beta2", "epsilon", "init_scale",
                                "w0")},
    "greedy": {k: "not a per-step hyperparameter: no one-step derivative"
               for k in ("epsilon", "init_scale", "l2", "w0", "X_train")},
}
"""What each method does not give, and why, per kind (`not_covered` picks a case's)."""
MAX_K = 1_000_000
FILE = "audit.json"
FIGURE = "audit.png"


def k_grid(Ks, T):
    """The K used at horizon T: those of Ks below T, and T itself."""
    return sorted({int(k) for k in Ks if k < T} | {int(T)})


def kinds(case):
    """The hyperparameter kinds a case's hypergradient has."""
    return approx.kinds_of(case) + (("X_train",) if case.grad_train_inputs else ())


def methods(case):
    """The methods audited on a case: every one of METHODS but DrMAD for Adam (where
    `approx.drmad_applies` does not)."""
    return tuple(m for m in METHODS if m != "drmad" or approx.drmad_applies(case))


def not_covered(case):
    """NOT_COVERED for the kinds of the case's hypergradient (DrMAD's only for Adam, which it
    does not audit)."""
    return {m: {k: why for k, why in by_kind.items() if k in kinds(case)}
            for m, by_kind in NOT_COVERED.items() if m != "drmad" or not approx.drmad_applies(case)}


def compare(a, e):
    """(cosine, rel_err, sign_agreement) of an approximation a against the exact e."""
    a, e = np.ravel(a), np.ravel(e)
    with np.errstate(over="ignore", invalid="ignore"):
        na, ne = np.linalg.norm(a), np.linalg.norm(e)
        ok = bool(np.all(np.isfinite(a))) and np.isfinite(na) and ne > 0
        cosine = float(np.dot(a / na, e / ne)) if ok and na > 0 else None
        rel_err = float(np.linalg.norm(a - e) / ne) if ok else None
    sign = float(np.mean(np.sign(a) == np.sign(e)))
    return cosine, (rel_err if rel_err is None or np.isfinite(rel_err) else None), sign


def measure(call, repeats=1):
    """(call(), seconds, peak_bytes): call run traced (peak_bytes), then `repeats` times timed
    (seconds: the median)."""
    tracemalloc.start()
    try:
        call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - start)
    return out, float(np.median(times)), int(peak)


def measure_series(series, repeats=1):
    """[(K, Hypergrads, seconds, peak_bytes)] of a generator function of (K, Hypergrads) pairs,
    each K's seconds (the median of `repeats` timed runs) and peak those of the series up to its
    yield (see `approx.ift_series`)."""
    peaks = {}
    tracemalloc.start()
    try:
        for K, _ in series():
            peaks[K] = int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    times = {K: [] for K in peaks}
    for _ in range(repeats):
        got, start = {}, time.perf_counter()
        for K, g in series():
            times[K].append(time.perf_counter() - start)
            got[K] = g
    return [(K, got[K], float(np.median(times[K])), peaks[K]) for K in peaks]


def audit(case, Ks, seed=0, backend="auto", threads=None, repeats=1, say=None):
    """The rows (dicts: T, method, K, hyper, cosine, rel_err, sign_agreement, seconds,
    peak_bytes) of every method against the exact hypergradient of `case`, each call timed
    `repeats` times (seconds: the median); see the module's doc. say(line), if given, hears of
    each call as it ends."""
    run = dict(backend=backend, threads=threads)
    T, rows = case.T, []
    _warm_up(case, run)

    def add(method, K, got, seconds, peak):
        for kind in kinds(case):
            a = getattr(got, f"d_{kind}")
            if a is not None:
                rows.append(_row(T, method, K, kind, compare(a, exact_of[kind]), seconds, peak))
        if say is not None:
            say(f"T = {T}: {method}{'' if K is None else f' K = {K}'} {seconds:.2f} s")

    exact, seconds, peak = measure(lambda: hypergradient(case, **run), repeats)
    exact_of = {k: getattr(exact, f"d_{k}") for k in kinds(case)}
    rows.append(_row(T, "exact", None, "all", (1.0, 0.0, 1.0), seconds, peak))
    if say is not None:
        say(f"T = {T}: exact {seconds:.2f} s")
    rng = np.random.default_rng(seed)
    for hyper in approx.kinds_of(case) + ("all",):
        d = approx.random_direction(case, rng, None if hyper == "all" else (hyper,))
        fwd, seconds, peak = measure(lambda d=d: approx.forward(case, d, **run), repeats)
        want = approx.directional(exact, approx.check_direction(case, d))
        err = abs(fwd.derivative - want) / abs(want) if want != 0 else None
        same_sign = float(np.sign(fwd.derivative) == np.sign(want))
        rows.append(_row(T, "forward", None, hyper, (None, err, same_sign), seconds, peak))
        if say is not None:
            say(f"T = {T}: forward along {hyper} {seconds:.2f} s")
    grid = k_grid(Ks, T)
    for K in grid:
        add("truncated", K, *measure(lambda K=K: approx.truncated(case, K, **run), repeats))
    if "drmad" in methods(case):
        add("drmad", None, *measure(lambda: approx.drmad(case, **run), repeats))
    ift = measure_series(lambda: approx.ift_series(case, grid, **run), repeats)
    for K, got, seconds, peak in ift:
        add("ift", K, got, seconds, peak)
    add("greedy", None, *measure(lambda: approx.greedy(case, **run), repeats))
    return rows


def _warm_up(case, run):
    """Every method once on the case's first step, so that what a process does once (compiling
    or loading kernels, finding the BLAS) is not measured."""
    per_step = optimizer_of(case).per_step
    one = case.replace(batches=case.batches[:1], **{k: getattr(case, k)[:1] for k in per_step})
    hypergradient(one, **run)
    approx.forward(one, {}, **run)
    approx.truncated(one, 1, **run)
    if "drmad" in methods(case):
        approx.drmad(one, **run)
    approx.ift(one, 2, **run)
    approx.greedy(one, **run)


def _row(T, method, K, hyper, metrics, seconds, peak):
    cosine, rel_err, sign = metrics
    return dict(T=int(T), method=method, K=K, hyper=hyper, cosine=cosine, rel_err=rel_err,
                sign_agreement=sign, seconds=round(float(seconds), 4), peak_bytes=int(peak))


def format_table(rows):
    """The rows as a text table, one line each."""
    lines = [f"{'T':>5s}  {'method':9s} {'K':>5s}  {'hyper':10s} {'cosine':>8s} {'rel_err':>9s} "
             f"{'sign':>6s} {'seconds':>8s} {'peak MiB':>9s}"]
    for r in rows:
        lines.append(
            f"{r['T']:5d}  {r['method']:9s} {'-' if r['K'] is None else str(r['K']):>5s}  "
            f"{r['hyper']:10s} {_num(r['cosine'], '8.4f')} {_num(r['rel_err'], '9.2e')} "
            f"{r['sign_agreement']:6.3f} {r['seconds']:8.2f} {r['peak_bytes'] / 2**20:9.1f}")
    return "\n".join(lines)


def _num(x, fmt):
    width = int(fmt.split(".")[0])
    return f"{'-':>{width}s}" if x is None else format(x, fmt)


def check_out(out):
    """Refuse an --out that exists and is not an empty folder (the rule of `revlearn run`): an
    audit writes only into a new or empty folder, so it never overwrites what it did not write."""
    held = files_in(out, f"--out {out}")
    if held:
        raise InputError(f"--out {out} already holds files ({some(held)}); give a new or empty "
                         "folder")


def check_fits(case):
    """Refuse, before any work, an audit whose truncation at K = T (every state kept, as the
    stored method keeps them) needs more memory than this machine has."""
    need, have = trajectory_bytes(case), memory.physical_memory()
    if have is not None and need > have:
        raise InputError(f"the audit's truncation at K = T = {case.T} keeps every w_t and "
                         f"{', '.join(optimizer_of(case).state_names)}: "
                         f"{memory.describe_bytes(need)}, more than this machine's "
                         f"{memory.describe_bytes(have)}; audit a shorter horizon")


def document(case, spec, horizons, Ks, seed, backend, threads, repeats, rows, seconds):
    """audit.json's content (`case`: one of the audited cases, for what is not covered)."""
    return {"spec": spec, "horizons": list(horizons), "K": list(Ks), "seed": seed,
            "backend": backend, "threads": threads, "repeats": repeats,
            "provenance": blas.describe(),
            "seconds": round(seconds, 2), "rows": rows, "not_covered": not_covered(case)}


def write(out, doc):
    """DIR/audit.json, written atomically (strict JSON: a value that is not finite is null)."""
    atomic_write_bytes(Path(out) / FILE, (json.dumps(doc, indent=1, allow_nan=False) + "\n")
                       .encode())


def plot(rows, plt, path):
    """The figure, one column per hyperparameter kind: cosine with the exact hypergradient
    against K (top row; one line per horizon T, K-free methods as horizontal lines) and against T
    (bottom row; the K-free methods, and the others at each K below the shortest horizon)."""
    hypers = [h for h in dict.fromkeys(r["hyper"] for r in rows) if h != "all"]
    horizons = sorted({r["T"] for r in rows})
    colors = dict(truncated="C0", ift="C1", drmad="C2", greedy="C3")
    T_style = dict(zip(horizons[::-1], ("-", "--", ":", "-."), strict=False))
    fixed_K = sorted({r["K"] for r in rows if r["K"] is not None and r["K"] < horizons[0]})
    K_marker = dict(zip(fixed_K, "osD^v<>", strict=False))
    fig, axes = plt.subplots(2, len(hypers), figsize=(3 * len(hypers), 5.5), squeeze=False)
    for col, hyper in enumerate(hypers):
        top, bottom = axes[0, col], axes[1, col]
        mine = [r for r in rows if r["hyper"] == hyper and r["method"] in colors]
        for method, color in colors.items():
            for T, ls in T_style.items():
                pts = [r for r in mine if r["method"] == method and r["T"] == T]
                label = f"{method}, T = {T}"
                if pts and pts[0]["K"] is not None:
                    top.plot([r["K"] for r in pts], [_nan(r["cosine"]) for r in pts], "o" + ls,
                             color=color, label=label)
                elif pts:
                    top.axhline(_nan(pts[0]["cosine"]), color=color, ls=ls, label=label)
            for K in [None] if method in ("drmad", "greedy") else fixed_K:
                line = [r for r in mine if r["method"] == method and r["K"] == K]
                if line:
                    bottom.plot([r["T"] for r in line], [_nan(r["cosine"]) for r in line],
                                K_marker.get(K, "o") + "-", color=color,
                                label=method + ("" if K is None else f", K = {K}"))
        _log_ticks(top, sorted({r["K"] for r in rows if r["K"] is not None}))
        _log_ticks(bottom, horizons)
        top.set_title(hyper)
        top.set_xlabel("K")
        bottom.set_xlabel("horizon T")
        for ax in (top, bottom):  # from below 0.9 or the lowest point, down to -1 at most
            ax.set_ylim(max(min(ax.get_ylim()[0], 0.9) - 0.05, -1.05), 1.05)
    for ax in axes[:, 0]:
        ax.set_ylabel("cosine with the exact")
    fig.tight_layout()
    for row in axes:  # each row's lines, once, right of its last panel
        labelled = {}
        for ax in row:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                labelled.setdefault(label, handle)
        row[-1].legend(labelled.values(), labelled.keys(), frameon=False, fontsize=7,
                       loc="center left", bbox_to_anchor=(1.02, 0.5))
    return plotting.save(plt, fig, path)


def _log_ticks(ax, ticks):
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])


def _nan(x):
    return np.nan if x is None else x
