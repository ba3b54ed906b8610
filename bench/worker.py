"""One benchmark configuration, measured in this process:

    python -m bench.worker '{"kind": "hyper", "T": 100, "backend": "numba", ...}'

prints one JSON object: the configuration, the seconds of each timed run, the peak resident memory
of the process (VmHWM) and what the kind adds (buffer_bits, phases, compile time). `python -m bench`
runs every configuration in a fresh subprocess, so each peak is that configuration's alone.

Kinds:
    step    the exact update plus buffer (forward) or its inverse (reverse) on P lanes, numpy/numba
    hyper   revlearn.hypergradient on the MNIST problem (backend, method, T, layers, optimizer:
            "momentum", the default, or "adam", the problem's Adam version `problem.ADAM`)
    train   revlearn.train(case, exact=False), plain float64 SGD with momentum, same batches
    torch   the PyTorch peer (bench.peers), same problem (momentum or Adam)
    jax     the JAX peer; the first call (compile and run) is timed apart from the steady calls
    check   the peers' hypergradients against revlearn's (revlearn.oracle.compare), small T

`threads` in the configuration: revlearn's `threads=` (None: its default, every core), the thread
count PyTorch is given (None: its default), and, with "mode": "pinned", the cores this process is
pinned to. "mode": "defaults" leaves everything at the libraries' defaults.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np

import revlearn
from revlearn import ans, fixedpoint, oracle
from revlearn import exact as refexact
from revlearn.threads import Workers

from . import peers, problem
from .reverse_forward import time_passes


def peak_rss():
    """Peak resident set size of this process in bytes (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def timed(fn, repeats):
    """Seconds of `repeats` calls of fn()."""
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return seconds


def warm_jit():
    """Compile (or load from the cache) every numba kernel on a tiny case, before any timing."""
    spec = dict(layer_sizes=[3, 4, 2], n_train=8, n_valid=4, n_iters=2, batch_size=2,
                init_scale=0.1)
    for case in (revlearn.make_case(dict(spec, alpha=0.1, gamma=0.5)),
                 revlearn.make_case(dict(spec, alpha=0.01, optimizer="adam"))):
        revlearn.hypergradient(case, backend="numba")
        revlearn.hypergradient(case.replace(activation="relu"), backend="numba")


def exact_steps(impl):
    """The module with exact_step, exact_unstep_w and exact_unstep_v of a backend."""
    if impl == "numba":
        from revlearn.kernels import exact as kexact
        return kexact
    return refexact


def _threads(cfg):
    return cfg.get("threads") if cfg.get("mode", "pinned") == "pinned" else None


def step(cfg):
    P, repeats = cfg["P"], cfg["repeats"]
    rng = np.random.default_rng(0)
    be, workers = exact_steps(cfg["impl"]), Workers(cfg.get("threads") or 1)
    if cfg["impl"] == "numba":
        warm_jit()
    alpha, gamma = np.full(P, 0.1), np.full(P, 0.9)
    n = fixedpoint.quantize_gamma(gamma)
    g = 1e-3 * rng.standard_normal(P)
    W, V, buf = fixedpoint.to_fixed(rng.standard_normal(P)), np.zeros(P, np.int64), \
        ans.new_buffer(P)

    def forward():
        nonlocal W, V, buf
        W, V, buf = be.exact_step(W, V, buf, g, alpha, gamma, n, workers)

    def reverse():
        nonlocal W, V, buf
        W = be.exact_unstep_w(W, V, alpha, workers)
        V, buf = be.exact_unstep_v(V, buf, g, gamma, n, workers)

    for _ in range(20):  # the buffer holds words before anything is timed
        forward()
    seconds = timed(forward, repeats)
    if cfg["direction"] == "reverse":
        seconds = timed(reverse, repeats)
    return dict(seconds=seconds)


def _case(cfg):
    return problem.case(cfg["T"], optimizer=cfg.get("optimizer", "momentum"),
                        layer_sizes=cfg.get("layers", problem.SPEC["layer_sizes"]))


def hyper(cfg):
    case = _case(cfg)
    if cfg["backend"] in ("numba", "auto"):
        warm_jit()
    results = []

    def run():
        results.append(revlearn.hypergradient(case, method=cfg["method"], backend=cfg["backend"],
                                              threads=_threads(cfg)))

    seconds = timed(run, cfg["repeats"])
    res = results[-1]
    out = dict(seconds=seconds, P=case.P, buffer_bits=res.buffer_bits,
               exact_recovery=res.exact_recovery, valid_loss=res.valid_loss)
    if cfg.get("phases"):  # Algorithm 1, the validation gradient, Algorithm 2, timed apart
        out["phases"] = [time_passes(case, cfg["backend"], _threads(cfg))
                         for _ in range(cfg["repeats"])]
    return out


def train(cfg):
    case = _case(cfg)
    if cfg["backend"] in ("numba", "auto"):
        warm_jit()
    seconds = timed(lambda: revlearn.train(case, exact=False, backend=cfg["backend"],
                                           threads=_threads(cfg)), cfg["repeats"])
    return dict(seconds=seconds, P=case.P)


def torch_peer(cfg):
    import torch

    run = peers.torch_hypergradient(_case(cfg), threads=_threads(cfg))
    return dict(seconds=timed(run, cfg["repeats"]), version=torch.__version__)


def jax_peer(cfg):
    import jax

    run = peers.jax_hypergradient(_case(cfg))
    first = timed(run, 1)[0]
    return dict(compile_and_first=first, seconds=timed(run, cfg["repeats"]),
                version=jax.__version__)


def check(cfg):
    """Each installed peer's answers against revlearn's reversible hypergradient (rtol 1e-6)."""
    case = _case(cfg)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        case_path = os.path.join(d, "case.npz")
        oracle.write_case(case_path, case, revlearn.hypergradient(case))
        for name, make in (("torch", peers.torch_hypergradient), ("jax", peers.jax_hypergradient)):
            try:
                answers = make(case)()
            except ImportError as e:
                out[name] = dict(skipped=str(e))
                continue
            theirs = os.path.join(d, name + ".npz")
            np.savez(theirs, **answers)
            rows = oracle.compare(case_path, theirs)
            out[name] = dict(ok=all(r.ok for r in rows),
                             max_rel={r.key: r.max_rel for r in rows})
    return out


KINDS = dict(step=step, hyper=hyper, train=train, torch=torch_peer, jax=jax_peer, check=check)


def pin(threads):
    """Run this process on `threads` cores: besides the libraries' thread settings, which XLA's
    CPU runtime does not fully honour (it spins up threads of its own), set the CPU affinity."""
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores[:threads])


def main(argv=None):
    cfg = json.loads((argv or sys.argv[1:])[0])
    if cfg.get("mode", "pinned") == "pinned" and cfg.get("threads"):
        pin(cfg["threads"])
    out = dict(config=cfg, **KINDS[cfg["kind"]](cfg))
    out["peak_rss"] = peak_rss()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
