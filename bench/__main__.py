"""The benchmark report: a grid of configurations, each in a fresh process, and a table of ratios.

    python -m bench [--quick] [--repeats N] [--threads N] [--out bench/report.json]
    python -m bench --from bench/report.json --markdown      # the table of a saved run, again

Each configuration runs in its own process (`bench.worker`), which times it after warming the
JIT and reports its peak resident memory. Times are medians over the repeats. The table compares:
numba against numpy on the exact update plus buffer step; the hypergradient against a plain float64
training run on the same batches; the buffer's bits per parameter per step against log2(1/gamma);
revlearn against PyTorch and JAX (each when installed) in time and memory. Every process is
pinned to `--threads` cores, with as many threads for BLAS, PyTorch, XLA and Numba (1 by default:
a shared 2-core machine makes multi-threaded timings erratic).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .machine import describe

MNIST = "784-50-50-50-10 tanh, batch 200 (MNIST subset)"


def grid(quick):
    """The configurations: a short grid with --quick, the full one otherwise."""
    out = [dict(kind="step", P=P, impl=impl, direction=d)
           for P in (10**4, 10**5, 10**6) for impl in ("numpy", "numba")
           for d in ("forward", "reverse")]
    out += [dict(kind="hyper", T=100, backend=b, method="reversible", phases=True)
            for b in ("numpy", "numba")]
    out += [dict(kind="hyper", T=100, backend="numba", method="stored")]
    out += [dict(kind="train", T=100, backend=b) for b in ("numpy", "numba")]
    horizons = (1000,) if quick else (1000, 10000)
    for T in horizons:
        out += [dict(kind="hyper", T=T, backend="numba", method="reversible", phases=T == 1000),
                dict(kind="hyper", T=T, backend="numba", method="stored")]
        out += [dict(kind="train", T=T, backend="numba")]
    out += [dict(kind="check", T=20)]
    peer_horizons = (100,) if quick else (100, 1000)
    out += [dict(kind=k, T=T) for k in ("torch", "jax") for T in peer_horizons]
    return out


def run_one(cfg, threads):
    """One configuration in a fresh subprocess; its JSON result (or why it could not run)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                         f"intra_op_parallelism_threads={threads}")
    cfg = dict(cfg, threads=threads)
    done = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(cfg)],
                          capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return dict(config=cfg, error=last)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(r):
    return statistics.median(r["seconds"])


def find(results, **want):
    """The result whose configuration has the given keys, or None (not run, or failed)."""
    for r in results:
        if all(r["config"].get(k) == v for k, v in want.items()) and "error" not in r:
            return r
    return None


def ratio(a, b):
    return a / b if a is not None and b else None


def table(results):
    """Rows (what, value, target or bound, meaning) of the report."""
    rows = []
    for d in ("forward", "reverse"):
        for P in (10**4, 10**5, 10**6):
            np_, nb = (find(results, kind="step", P=P, impl=i, direction=d)
                       for i in ("numpy", "numba"))
            if np_ and nb:
                rows.append((f"exact step ({d}), P = 1e{round(math.log10(P))}: numpy / numba",
                             median(np_) / median(nb), ">= 10 at P = 1e6" if d == "forward"
                             else "", f"numba {median(nb) * 1e3:.2f} ms, numpy "
                             f"{median(np_) * 1e3:.2f} ms per step"))
    for T in (100, 1000, 10000):
        hyp = find(results, kind="hyper", T=T, backend="numba", method="reversible")
        sto = find(results, kind="hyper", T=T, backend="numba", method="stored")
        tr = find(results, kind="train", T=T, backend="numba")
        trn = find(results, kind="train", T=T, backend="numpy")
        if hyp and tr:
            rows.append((f"hypergradient (numba) / plain training, T = {T}",
                         median(hyp) / median(tr), "<= 3",
                         f"{median(hyp):.3f} s vs {median(tr):.3f} s (float64 SGD, numba backend)"))
        if hyp and trn:
            rows.append((f"hypergradient (numba) / plain training (numpy backend), T = {T}",
                         median(hyp) / median(trn), "<= 3", f"training {median(trn):.3f} s"))
        if hyp and hyp.get("phases"):
            fwd, val, rev = (statistics.median(p[i] for p in hyp["phases"]) for i in range(3))
            rows.append((f"  of which (forward + reverse) / plain training, T = {T}",
                         (fwd + rev) / median(tr) if tr else None, "~3 (floor)",
                         f"forward {fwd:.3f} s, validation gradient {val:.3f} s, reverse "
                         f"{rev:.3f} s"))
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
        rows.append(("hypergradient T = 100: numpy / numba", median(npy) / median(nb), "",
                     f"numpy {median(npy):.3f} s"))
    rows += _peer_rows(results)
    return rows


def _per_step_memory(results, kind, **want):
    """Bytes of peak resident memory per extra step, from the two horizons run (None if one is
    missing); for revlearn at least the buffer's own growth per step."""
    runs = sorted((r for r in results if r["config"]["kind"] == kind and "error" not in r
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


def _peer_rows(results):
    rows = []
    mem_rev = _per_step_memory(results, "hyper", backend="numba", method="reversible")
    for T in (100, 1000):
        hyp = find(results, kind="hyper", T=T, backend="numba", method="reversible")
        for peer in ("torch", "jax"):
            r = find(results, kind=peer, T=T)
            if not (hyp and r):
                continue
            name = "PyTorch" if peer == "torch" else "JAX (steady state)"
            rows.append((f"revlearn / {name} time, T = {T}", median(hyp) / median(r),
                         "< 1 vs JAX" if peer == "jax" else "",
                         f"revlearn {median(hyp):.3f} s, {name} {median(r):.3f} s"))
            if peer == "jax":
                rows.append((f"revlearn / JAX compile and first run, T = {T}",
                             median(hyp) / r["compile_and_first"], "",
                             f"JAX first call {r['compile_and_first']:.2f} s"))
            rows.append((f"revlearn / {name.split()[0]} peak memory, T = {T}",
                         hyp["peak_rss"] / r["peak_rss"], "",
                         f"revlearn {hyp['peak_rss'] / 2**20:.0f} MiB, "
                         f"{name.split()[0]} {r['peak_rss'] / 2**20:.0f} MiB (whole process)"))
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
    parser.add_argument("--quick", action="store_true", help="the short grid (a few minutes)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per configuration (default 5, or 3 with --quick)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/report.json")
    parser.add_argument("--from", dest="saved", help="print the table of a saved report instead")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    fmt = format_markdown if args.markdown else format_table
    if args.saved:
        saved = json.loads(Path(args.saved).read_text())
        print(f"machine: {saved['machine']}; threads {saved['threads']}; medians of "
              f"{saved['repeats']} runs")
        print(fmt(table(saved["results"])))
        return
    repeats = args.repeats or (3 if args.quick else 5)
    results = []
    for cfg in grid(args.quick):
        cfg = dict(cfg, repeats=1 if cfg.get("T", 0) >= 10000 else repeats)
        print(f"running {json.dumps(cfg)}", file=sys.stderr, flush=True)
        results.append(run_one(cfg, args.threads))
        if "error" in results[-1]:
            print(f"  could not run: {results[-1]['error']}", file=sys.stderr, flush=True)
    rows = table(results)
    machine = describe()
    print(f"machine: {machine}")
    print(f"problem: {MNIST}; threads {args.threads}; medians of {repeats} runs "
          "(1 run at T = 10000)")
    print(fmt(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, threads=args.threads,
                                              repeats=repeats, quick=args.quick, rows=rows,
                                              results=results), indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
