"""Two threads over one, measured in pairs side by side in one process:

    python -m bench.scaling [--pairs 5] [--out bench/results/scaling.json]

On a shared machine the time of one configuration drifts by tens of percent from one minute to the
next, so `python -m bench`'s ratios between processes run minutes apart carry that drift. Here each
pair runs threads=1 then threads=2 (alternating which goes first) back to back in one process, and
the ratio reported is the median over the pairs of each pair's own ratio: the hypergradient of the
paper's net at T = 100 and T = 1000, plain training at T = 1000, and the exact step forward and
back at P = 1e6.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import revlearn
from revlearn import ans, blas, fixedpoint
from revlearn.threads import Workers

from . import problem
from .machine import describe
from .worker import exact_steps, warm_jit


def _seconds(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pairs(run, n):
    """[(seconds with threads=1, seconds with threads=2)] for n pairs, alternating the order."""
    out = []
    for k in range(n):
        order = (1, 2) if k % 2 == 0 else (2, 1)
        t = {threads: _seconds(lambda threads=threads: run(threads)) for threads in order}
        out.append((t[1], t[2]))
    return out


def exact_step_runner(P, direction):
    kexact = exact_steps("numba")
    rng = np.random.default_rng(0)
    alpha, gamma = np.full(P, 0.1), np.full(P, 0.9)
    n, g = fixedpoint.quantize_gamma(gamma), 1e-3 * rng.standard_normal(P)
    state = [fixedpoint.to_fixed(rng.standard_normal(P)), np.zeros(P, np.int64), ans.new_buffer(P)]
    for _ in range(20):
        state[:] = kexact.exact_step(*state, g, alpha, gamma, n)

    def run(threads, steps=10):
        workers = Workers(threads)
        for _ in range(steps):  # ten steps forward, then ten back: the state returns each time
            if direction == "forward":
                state[:] = kexact.exact_step(*state, g, alpha, gamma, n, workers)
            else:
                state[0] = kexact.exact_unstep_w(state[0], state[1], alpha, workers)
                state[1], state[2] = kexact.exact_unstep_v(state[1], state[2], g, gamma, n,
                                                           workers)
        for _ in range(steps):
            if direction == "forward":
                state[0] = kexact.exact_unstep_w(state[0], state[1], alpha, workers)
                state[1], state[2] = kexact.exact_unstep_v(state[1], state[2], g, gamma, n,
                                                           workers)
            else:
                state[:] = kexact.exact_step(*state, g, alpha, gamma, n, workers)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", default="bench/results/scaling.json")
    args = parser.parse_args(argv)
    warm_jit()
    cases = {T: problem.case(T) for T in (100, 1000)}
    runs = {
        "hypergradient, T = 100": lambda th: revlearn.hypergradient(cases[100], threads=th),
        "hypergradient, T = 1000": lambda th: revlearn.hypergradient(cases[1000], threads=th),
        "plain training, T = 1000": lambda th: revlearn.train(cases[1000], exact=False,
                                                              threads=th),
        "exact step forward (10 steps and back), P = 1e6": exact_step_runner(10**6, "forward"),
        "exact step reverse (10 steps and back), P = 1e6": exact_step_runner(10**6, "reverse"),
    }
    rows = []
    with blas.single_threaded():
        for name, run in runs.items():
            run(2)  # warm
            measured = pairs(run, args.pairs if "T = 1000" not in name else max(3, args.pairs // 2))
            ratios = sorted(a / b for a, b in measured)
            rows.append(dict(what=name, pairs=measured, speedup=statistics.median(ratios),
                             low=ratios[0], high=ratios[-1]))
            print(f"{name}: threads 2 / threads 1 speed-up {statistics.median(ratios):.2f} "
                  f"(pairs {ratios[0]:.2f}..{ratios[-1]:.2f}); one thread "
                  f"{statistics.median(a for a, _ in measured):.3f} s, two "
                  f"{statistics.median(b for _, b in measured):.3f} s", flush=True)
    machine = describe()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(machine=machine, rows=rows), indent=1))
    print(f"machine: {machine}\nwrote {args.out}")


if __name__ == "__main__":
    main()
