"""Adam's exact hypergradient against momentum's and against PyTorch's and JAX's stored unrolls,
on the paper's MNIST net (`bench.problem`; Adam with its `problem.ADAM` settings):

    python -m bench.adam [--repeats N] [--horizons 100,1000] [--out bench/results/adam.json]
    python -m bench.adam --from bench/results/adam.json          # the table of a saved run

Each configuration runs in a fresh process (`bench.worker`) with the libraries' defaults (no
pinning, no thread variables; revlearn's backend "auto" on every core, PyTorch's and XLA's own
thread counts), after warming the JIT (JAX: after one compiling call, timed apart): the median
time of the repeats and the process's peak resident memory. revlearn's buffer is given in bits
per parameter per step, against the bound sum_t log2(1 / gamma_t) (momentum) or
sum_t (log2(1 / beta1_t) + log2(1 / beta2_t)) (Adam), per parameter and step, twice: the
information it holds after Algorithm 1 (32 bits per stack word plus log2(x / X0) per lane: what
the lanes' 64-bit states hold above their start; computed by one more, untimed, forward run in
the driver) and its allocated size beyond the 64-bit lane states (`buffer_bits`, whole 32-bit
words at the stacks' peak: 0 while the lanes' 16 bits of headroom hold it all). The peers need
torch and jax importable by the driver's Python, which runs the workers (on this project's
machines `torch==2.13.0` and `jax==0.10.2` live in /work/benchvenv, whose revlearn is this
checkout, installed editable); a peer that is not importable is left out of the table, said
once.
"""

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from .machine import describe

D = 2**16
BOUND = {"momentum": math.log2(D / round(0.9 * D)),
         "adam": math.log2(D / round(0.9 * D)) + math.log2(D / round(0.999 * D))}


def configurations(horizons, repeats, peers):
    for T in horizons:
        for optimizer in ("momentum", "adam"):
            yield dict(kind="hyper", T=T, optimizer=optimizer, backend="auto",
                       method="reversible", mode="defaults", repeats=repeats)
            for peer in peers:
                yield dict(kind=peer, T=T, optimizer=optimizer, mode="defaults",
                           repeats=max(1, repeats // 2) if T >= 1000 else repeats)


def run(cfg):
    done = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(cfg)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def information(T, optimizer):
    """Bits per parameter per step the buffer holds after Algorithm 1 on the problem: 32 per
    stack word plus log2(x / X0) per lane."""
    from revlearn import ans, blas, sgd
    from revlearn.threads import Workers

    from . import problem
    case = problem.case(T, optimizer=optimizer)
    with blas.single_threaded():
        _, _, buf, _ = sgd.train_exact(case, sgd.get_backend("auto"), Workers(None))
    held = ans.WORD_BITS * int(buf.top.sum()) + float(np.sum(np.log2(buf.x / ans.X0)))
    return held / (T * case.P)


PEERS = (("torch", "PyTorch"), ("jax", "JAX (steady state)"))


def table(results, held):
    """The markdown table: per horizon and optimizer, revlearn against each peer that ran."""
    by = {(r["config"]["kind"], r["config"]["T"], r["config"]["optimizer"]): r for r in results}
    ran = [(kind, name) for kind, name in PEERS if any(k[0] == kind for k in by)]
    head = ["T", "optimizer", "revlearn"]
    head += [name for _, name in ran] + [f"revlearn / {name.split()[0]}" for _, name in ran]
    head += ["peak memory, revlearn"] + [name.split()[0] for _, name in ran]
    head += ["buffer: bits held per parameter per step", "allocated", "bound"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for T in sorted({k[1] for k in by}):
        for optimizer in ("momentum", "adam"):
            mine = by.get(("hyper", T, optimizer))
            if mine is None:
                continue
            theirs = [by.get((kind, T, optimizer)) for kind, _ in ran]
            t_mine = statistics.median(mine["seconds"])
            bits = (mine["buffer_bits"] - 64 * mine["P"]) / (T * mine["P"])
            row = [str(T), optimizer, f"{t_mine:.2f} s"]
            row += [f"{statistics.median(r['seconds']):.2f} s" if r else "" for r in theirs]
            row += [f"{t_mine / statistics.median(r['seconds']):.2f}" if r else ""
                    for r in theirs]
            row += [f"{mine['peak_rss'] / 2**20:.0f} MiB"]
            row += [f"{r['peak_rss'] / 2**30:.1f} GiB" if r else "" for r in theirs]
            row += [f"{held[f'{T} {optimizer}']:.4f}", f"{bits:.4f}", f"{BOUND[optimizer]:.4f}"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.adam", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--horizons", default="100,1000")
    p.add_argument("--out", default="bench/results/adam.json")
    p.add_argument("--from", dest="saved", help="print the table of a saved run")
    args = p.parse_args(argv)
    if args.saved:
        saved = json.loads(Path(args.saved).read_text())
        print(table(saved["results"], saved["information"]))
        return 0
    peers = [kind for kind, _ in PEERS if importlib.util.find_spec(kind) is not None]
    if len(peers) < len(PEERS):
        print("left out (not importable by this Python; see the module's doc):",
              ", ".join(kind for kind, _ in PEERS if kind not in peers), file=sys.stderr)
    results = []
    for cfg in configurations([int(T) for T in args.horizons.split(",")], args.repeats, peers):
        results.append(run(cfg))
        median = statistics.median(results[-1]["seconds"])
        print(json.dumps(cfg), f"median {median:.3f} s", flush=True)
    held = {f"{T} {o}": information(T, o) for T in map(int, args.horizons.split(","))
            for o in ("momentum", "adam")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=describe(), results=results,
                                              information=held), indent=1))
    print(table(results, held))
    return 0


if __name__ == "__main__":
    sys.exit(main())
