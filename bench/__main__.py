"""The benchmark report: a grid of configurations, each in a fresh process, and tables of ratios.

    python -m bench [--quick] [--repeats N] [--isa avx2] [--out bench/results/report.json]
    python -m bench --from bench/results/report.json --markdown    # a saved run's tables, again

Each configuration runs in its own process (`bench.worker`), which times it after warming the
JIT (and, for JAX, after one compiling call) and reports its peak resident memory. Times are
medians over the repeats. Three ways of running, side by side in one report:

- defaults    what a user gets: no thread variables, no pinning; revlearn with threads=None and
              backend="auto", JAX and PyTorch with their own defaults.
- one core    every process pinned to one core with one thread for BLAS, PyTorch, XLA and Numba.
- two threads revlearn and plain training with threads=2, pinned to two cores.

The tables: defaults against defaults (revlearn, JAX, PyTorch at T = 100 and 1000); one core
against one core; revlearn's thread scaling (the hypergradient, plain training, the exact step at
P = 1e6); the hypergradient against plain training; numba against numpy; the buffer against its
bound; memory; the peers' answers against revlearn's; and, with --shared, the defaults while
another process keeps one core busy. `--isa avx2` runs every library as on a CPU without AVX-512
(NumPy's and OpenBLAS's dispatch, Numba's target, XLA's and PyTorch's ISA), for the AVX2 numbers.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .machine import AVX2, describe

MNIST = "784-50-50-50-10 tanh, batch 200 (MNIST subset)"
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "XLA_FLAGS")


def grid(quick, shared):
    """The configurations: a short grid with --quick, the full one otherwise."""
    one = dict(mode="pinned", threads=1)
    out = [dict(kind="step", P=P, impl=impl, direction=d, **one)
           for P in (10**4, 10**5, 10**6) for impl in ("numpy", "numba")
           for d in ("forward", "reverse")]
    out += [dict(kind="step", P=10**6, impl="numba", direction=d, mode="pinned", threads=2)
            for d in ("forward", "reverse")]
    out += [dict(kind="hyper", T=100, backend=b, method="reversible", phases=True, **one)
            for b in ("numpy", "numba")]
    out += [dict(kind="hyper", T=100, backend="numba", method="stored", **one)]
    out += [dict(kind="train", T=100, backend=b, **one) for b in ("numpy", "numba")]
    horizons = (1000,) if quick else (1000, 10000)
    for T in horizons:
        out += [dict(kind="hyper", T=T, backend="numba", method="reversible", phases=T == 1000,
                     **one),
                dict(kind="hyper", T=T, backend="numba", method="stored", **one),
                dict(kind="train", T=T, backend="numba", **one)]
    for T in (100, 1000):  # two threads
        out += [dict(kind="hyper", T=T, backend="numba", method="reversible", mode="pinned",
                     threads=2, phases=T == 1000),
                dict(kind="train", T=T, backend="numba", mode="pinned", threads=2)]
    out += [dict(kind="check", T=20, **one)]
    for T in (100, 1000):  # the peers (revlearn's one-core runs are above)
        loads = (None, 1) if shared else (None,)
        for load in loads:
            extra = dict(load=load) if load else {}
            out += [dict(kind="hyper", T=T, backend="auto", method="reversible", mode="defaults",
                         **extra)]
            out += [dict(kind=k, T=T, mode="defaults", **extra) for k in ("jax", "torch")]
        out += [dict(kind=k, T=T, **one) for k in ("jax", "torch")]
    return _unique(out)


def _unique(configs):
    seen, out = set(), []
    for c in configs:
        key = json.dumps(c, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def environment(cfg, isa):
    """The worker's environment: thread variables removed (defaults) or set to the thread count
    (pinned), and the instruction set restricted with --isa avx2."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    xla = []
    if cfg.get("mode") == "pinned":
        n = str(cfg["threads"])
        env.update(OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n,
                   NUMBA_NUM_THREADS=n)
        xla += [f"--xla_cpu_multi_thread_eigen={'true' if cfg['threads'] > 1 else 'false'}",
                f"intra_op_parallelism_threads={n}"]
    if isa == "avx2":
        env.update({k: v for k, v in AVX2.items() if k != "XLA_ISA"})
        xla.append(AVX2["XLA_ISA"])
    if xla:
        env["XLA_FLAGS"] = " ".join(xla)
    return env


def run_one(cfg, isa):
    """One configuration in a fresh subprocess; its JSON result (or why it could not run). With
    "load": 1, a second process keeps one core busy for the whole run."""
    hog = None
    if cfg.get("load"):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(cfg)],
                              capture_output=True, text=True, env=environment(cfg, isa),
                              cwd=Path(__file__).resolve().parents[1])
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(config=cfg, error=last)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(r):
    return statistics.median(r["seconds"])


def find(results, **want):
    """The result whose configuration has the given keys, or None (not run, or failed).
    mode defaults to "pinned" and threads to 1 unless asked for; load to none."""
    want = dict(dict(mode="pinned", load=None), **want)
    if want["mode"] == "pinned":
        want.setdefault("threads", 1)
    for r in results:
        c = r["config"]
        if "error" not in r and all(c.get(k) == v for k, v in want.items()):
            return r
    return None


def ratio(a, b):
    return a / b if a is not None and b else None


def _peers_rows(results, mode, label, load=None):
    rows = []
    for T in (100, 1000):
        want = dict(mode=mode, load=load)
        hyp = find(results, kind="hyper", T=T, method="reversible", **want,
                   **({} if mode == "defaults" else dict(backend="numba")))
        for peer, name in (("jax", "JAX (steady state)"), ("torch", "PyTorch")):
            r = find(results, kind=peer, T=T, **want)
            if hyp and r:
                rows.append((f"{label}: revlearn / {name}, T = {T}", median(hyp) / median(r),
                             "< 1", f"revlearn {median(hyp):.3f} s, {name.split()[0]} "
                             f"{median(r):.3f} s"))
    return rows


def table(results):
    """Rows (what, value, target or bound, meaning) of the report."""
    rows = _peers_rows(results, "defaults", "defaults vs defaults")
    rows += _peers_rows(results, "pinned", "one core each")
    rows += _peers_rows(results, "defaults", "defaults, one core busy elsewhere", load=1)
    for T in (100, 1000):
        quiet = find(results, kind="hyper", T=T, mode="defaults", method="reversible")
        loaded = find(results, kind="hyper", T=T, mode="defaults", method="reversible", load=1)
        if quiet and loaded:
            rows.append((f"revlearn defaults, one core busy elsewhere / quiet, T = {T}",
                         median(loaded) / median(quiet), "no collapse",
                         f"{median(loaded):.3f} s vs {median(quiet):.3f} s"))
    for kind, what, target in (("hyper", "hypergradient", ">= 1.7 at T = 1000"),
                               ("train", "plain training", "")):
        for T in (100, 1000):
            extra = dict(method="reversible") if kind == "hyper" else {}
            one = find(results, kind=kind, T=T, backend="numba", threads=1, **extra)
            two = find(results, kind=kind, T=T, backend="numba", threads=2, **extra)
            if one and two:
                rows.append((f"threads 2 / threads 1 speed-up, {what}, T = {T}",
                             median(one) / median(two), target,
                             f"{median(one):.3f} s on one thread, {median(two):.3f} s on two"))
    for d in ("forward", "reverse"):
        one = find(results, kind="step", P=10**6, impl="numba", direction=d, threads=1)
        two = find(results, kind="step", P=10**6, impl="numba", direction=d, threads=2)
        if one and two:
            rows.append((f"threads 2 / threads 1 speed-up, exact step ({d}), P = 1e6",
                         median(one) / median(two), ">= 1.8" if d == "forward" else "",
                         f"{median(one) * 1e3:.2f} ms on one thread, {median(two) * 1e3:.2f} ms "
                         "on two"))
    for d in ("forward", "reverse"):
        for P in (10**4, 10**5, 10**6):
            np_, nb = (find(results, kind="step", P=P, impl=i, direction=d)
                       for i in ("numpy", "numba"))
            if np_ and nb:
                rows.append((f"exact step ({d}), P = 1e{round(math.log10(P))}: numpy / numba",
                             median(np_) / median(nb), ">= 10 at P = 1e6" if d == "forward"
                             else "", f"numba {median(nb) * 1e3:.2f} ms, numpy "
                             f"{median(np_) * 1e3:.2f} ms per step"))
    for threads in (1, 2):
        for T in (100, 1000, 10000):
            hyp = find(results, kind="hyper", T=T, backend="numba", method="reversible",
                       threads=threads)
            tr = find(results, kind="train", T=T, backend="numba", threads=threads)
            if hyp and tr:
                rows.append((f"hypergradient / plain training, {threads} thread"
                             f"{'s' if threads > 1 else ''}, T = {T}",
                             median(hyp) / median(tr), "<= 3",
                             f"{median(hyp):.3f} s vs {median(tr):.3f} s (float64 SGD)"))
            if hyp and hyp.get("phases") and tr:
                fwd, val, rev = (statistics.median(p[i] for p in hyp["phases"]) for i in range(3))
                rows.append((f"  of which (forward + reverse) / plain training, {threads} "
                             f"thread{'s' if threads > 1 else ''}, T = {T}",
                             (fwd + rev) / median(tr), "~3 (floor)",
                             f"forward {fwd:.3f} s, validation gradient {val:.3f} s, reverse "
                             f"{rev:.3f} s"))
    for T in (100, 1000, 10000):
        hyp = find(results, kind="hyper", T=T, backend="numba", method="reversible")
        sto = find(results, kind="hyper", T=T, backend="numba", method="stored")
        if hyp and sto:
            rows.append((f"stored / reversible time, T = {T}", median(sto) / median(hyp), "",
                         f"stored keeps {sto['buffer_bits'] / 8e9:.2f} GB, reversible "
                         f"{hyp['buffer_bits'] / 8e6:.2f} MB"))
        if hyp:
            P = hyp["P"]
            words = (hyp["buffer_bits"] - 64 * P) / (P * T)
            rows.append((f"buffer bits / parameter / step, T = {T}", words,
                         f"log2(1/0.9) = {math.log2(1 / 0.9):.3f}",
                         f"stack words only; with the 64-bit lane states "
                         f"{hyp['buffer_bits'] / (P * T):.3f}"))
    npy = find(results, kind="hyper", T=100, backend="numpy", method="reversible")
    nb = find(results, kind="hyper", T=100, backend="numba", method="reversible")
    if npy and nb:
        rows.append(("hypergradient T = 100, one core: numpy / numba", median(npy) / median(nb),
                     "", f"numpy {median(npy):.3f} s, numba {median(nb):.3f} s"))
    rows += _memory_rows(results)
    return rows


def _per_step_memory(results, kind, **want):
    """Bytes of peak resident memory per extra step, from the two horizons run (None if one is
    missing); for revlearn at least the buffer's own growth per step."""
    runs = sorted((r for r in results if r["config"]["kind"] == kind and "error" not in r
                   and r["config"].get("mode") == "pinned" and r["config"].get("threads") == 1
                   and all(r["config"].get(k) == v for k, v in want.items())),
                  key=lambda r: r["config"]["T"])
    slope = None
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        slope = (b["peak_rss"] - a["peak_rss"]) / (b["config"]["T"] - a["config"]["T"])
    if kind == "hyper" and runs:
        last = runs[-1]
        growth = (last["buffer_bits"] - 64 * last["P"]) / 8 / last["config"]["T"]
        slope = max(slope or 0.0, growth)
    return slope


def _memory_rows(results):
    rows = []
    mem_rev = _per_step_memory(results, "hyper", backend="numba", method="reversible")
    for T in (100, 1000):
        hyp = find(results, kind="hyper", T=T, backend="numba", method="reversible")
        for peer, name in (("torch", "PyTorch"), ("jax", "JAX")):
            r = find(results, kind=peer, T=T)
            if hyp and r:
                rows.append((f"revlearn / {name} peak memory, T = {T}",
                             hyp["peak_rss"] / r["peak_rss"], "",
                             f"revlearn {hyp['peak_rss'] / 2**20:.0f} MiB, {name} "
                             f"{r['peak_rss'] / 2**20:.0f} MiB (whole process)"))
            if peer == "jax" and r:
                rows.append((f"JAX compile and first run / steady run, T = {T}",
                             r["compile_and_first"] / median(r), "",
                             f"JAX first call {r['compile_and_first']:.2f} s"))
    for peer, name in (("torch", "PyTorch"), ("jax", "JAX")):
        mem = _per_step_memory(results, peer)
        if mem and mem_rev:
            rows.append((f"{name} / revlearn memory per step", mem / mem_rev, ">= 1000",
                         f"{name} {mem / 2**20:.2f} MiB/step, revlearn "
                         f"{mem_rev / 2**10:.2f} KiB/step"))
    check = find(results, kind="check")
    if check:
        for peer in ("torch", "jax"):
            c = check.get(peer, {})
            if "ok" in c:
                worst = max(c["max_rel"].values())
                rows.append((f"{peer} hypergradient agrees with revlearn (T = 20)", worst,
                             "rtol 1e-6", "all outputs ok" if c["ok"] else "MISMATCH"))
    return rows


def format_markdown(rows):
    lines = ["| ratio | value | target | detail |", "|---|---:|---|---|"]
    for what, value, target, detail in rows:
        shown = "n/a" if value is None else f"{value:.3g}"
        lines.append(f"| {what.strip()} | {shown} | {target} | {detail} |")
    return "\n".join(lines)


def format_table(rows):
    width = max(len(r[0]) for r in rows)
    lines = [f"{'ratio':<{width}}  {'value':>9}  {'target':<18}  detail"]
    for what, value, target, detail in rows:
        shown = "n/a" if value is None else f"{value:9.3g}"
        lines.append(f"{what:<{width}}  {shown:>9}  {target:<18}  {detail}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short grid")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per configuration (default 5, or 3 with --quick)")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native",
                        help="avx2: run every library as on a CPU without AVX-512")
    parser.add_argument("--shared", action="store_true",
                        help="also the defaults while another process keeps one core busy")
    parser.add_argument("--only", help="only the configurations of these kinds (step,hyper,...)")
    parser.add_argument("--peers", action="store_true",
                        help="only revlearn against JAX and PyTorch (defaults and one core)")
    parser.add_argument("--out", default="bench/results/report.json")
    parser.add_argument("--from", dest="saved", help="print the tables of a saved report instead")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args(argv)
    fmt = format_markdown if args.markdown else format_table
    if args.saved:
        saved = json.loads(Path(args.saved).read_text())
        print(f"machine: {saved['machine']}; medians of {saved['repeats']} runs")
        print(fmt(table(saved["results"])))
        return
    repeats = args.repeats or (3 if args.quick else 5)
    machine = describe(args.isa)
    results = []
    for cfg in grid(args.quick, args.shared):
        if args.only and cfg["kind"] not in args.only.split(","):
            continue
        if args.peers and not (cfg["kind"] in ("jax", "torch") or (
                cfg["kind"] == "hyper" and cfg.get("T") in (100, 1000)
                and cfg.get("method") == "reversible" and cfg.get("backend") != "numpy"
                and cfg.get("threads", 1) == 1)):
            continue
        cfg = dict(cfg, repeats=1 if cfg.get("T", 0) >= 10000 else repeats)
        print(f"running {json.dumps(cfg)}", file=sys.stderr, flush=True)
        results.append(run_one(cfg, args.isa))
        if "error" in results[-1]:
            print(f"  could not run: {results[-1]['error']}", file=sys.stderr, flush=True)
    rows = table(results)
    print(f"machine: {machine}")
    print(f"problem: {MNIST}; medians of {repeats} runs (1 run at T = 10000)")
    print(fmt(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, repeats=repeats, quick=args.quick,
                                              isa=args.isa, rows=rows, results=results),
                                         indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
