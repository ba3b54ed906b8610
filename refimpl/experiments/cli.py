"""`revlearn run [NAME]`: run one of the paper's experiments, print progress and a results table,
write results.json, CSV files and (with matplotlib) PNG figures into --out.

Exit codes: 0 done, 2 bad input (one line on stderr, before any work or file write), 130
interrupted by Ctrl-C (the last completed step is saved; `--resume DIR` continues).
"""

import json
import sys
import time
from pathlib import Path

from .. import blas
from ..errors import InputError
from ..sgd import BACKENDS, get_backend
from ..threads import available_cores
from . import DEFAULT_PRESET, PRESETS, plotting, runner


def add_parser(subparsers):
    """Register the `run` subcommand on an argparse subparsers object."""
    names = ", ".join(PRESETS)
    p = subparsers.add_parser(
        "run", help="run one of the paper's experiments (default: schedules)",
        description="Run one of the paper's experiments: "
        + "; ".join(f"{k}: {m.DESCRIPTION}" for k, m in PRESETS.items())
        + ". Every meta-iteration is checkpointed; Ctrl-C stops cleanly and --resume DIR "
        "continues bit for bit.")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help=f"the experiment, one of {names} (default {DEFAULT_PRESET})")
    p.add_argument("--out", metavar="DIR",
                   help="folder for results.json, CSV, PNG and the checkpoint "
                   "(default revlearn-runs/NAME-DATE-TIME)")
    p.add_argument("--meta-iters", metavar="N",
                   help="meta-iterations (for chaos: points on the step-size sweep); default per "
                   "preset, the paper's with --paper")
    p.add_argument("--seed", metavar="S", default="0", help="random seed (default 0)")
    p.add_argument("--backend", metavar="NAME", default="auto",
                   help=f"one of {', '.join(BACKENDS)} (default auto: numba when installed); the "
                   "results are the same bits with each")
    p.add_argument("--threads", metavar="N",
                   help=f"threads to use (default: every core this process may use, "
                   f"{available_cores()} here); the results are the same bits for every N")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run whose --out folder is DIR from its last completed "
                   "meta-iteration (a finished run is only re-plotted)")
    p.add_argument("--paper", action="store_true", help="the paper's full settings (slower)")
    p.add_argument("--small", action="store_true",
                   help="a small, quick version (for smoke tests; the numbers mean little)")
    p.add_argument("--mnist", metavar="DIR",
                   help="folder with the canonical MNIST files: test on all 10,000 t10k images "
                   "instead of the embedded 5,000")
    p.set_defaults(func=handler)
    return p


def _int(flag, text, minimum):
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise InputError(f"{flag} {text!r}: give an integer >= {minimum}")
    return value


def threads_flag(text):
    """The value of --threads: None (every core) when not given, else an integer >= 1."""
    return None if text is None else _int("--threads", text, 1)


def _options(args):
    """(options, out, arrays, records, warning) from the flags, checked before any work or
    write; warning says how the machine differs from the one that started a resumed run."""
    if args.backend not in BACKENDS:
        raise InputError(f"--backend {args.backend!r}: use one of {', '.join(BACKENDS)}")
    threads = threads_flag(args.threads)
    if args.resume:
        fixed = [f for f, v in (("--seed", args.seed != "0"), ("--paper", args.paper),
                 ("--small", args.small), ("--mnist", args.mnist), ("--out", args.out)) if v]
        if fixed:
            raise InputError(f"{', '.join(fixed)} cannot change on --resume: the checkpoint "
                             "fixes them (--meta-iters may extend a run; --backend and "
                             "--threads may change, they never change the results)")
        options, arrays, records, provenance = runner.read_checkpoint(args.resume)
        options.update(backend=args.backend, threads=threads)
        change = runner.provenance_change(provenance)
        warning = None if change is None else (
            f"this machine differs from the one that computed the checkpoint ({change}); the "
            "continued run may differ in its last bits from an uninterrupted one")
        if args.name and args.name != options["preset"]:
            raise InputError(f"--resume {args.resume} holds a {options['preset']!r} run, not "
                             f"{args.name!r}")
        if args.meta_iters is not None:
            options["meta_iters"] = _int("--meta-iters", args.meta_iters, len(records))
        return options, Path(args.resume), arrays, records, warning
    name = args.name or DEFAULT_PRESET
    if name not in PRESETS:
        raise InputError(f"unknown experiment {name!r}; use one of {', '.join(PRESETS)}")
    if args.paper and args.small:
        raise InputError("--paper and --small contradict each other; give one")
    options = {"preset": name, "seed": _int("--seed", args.seed, 0), "backend": args.backend,
               "threads": threads, "paper": args.paper, "small": args.small,
               "mnist_dir": str(Path(args.mnist).resolve()) if args.mnist else None}
    options["meta_iters"] = (_int("--meta-iters", args.meta_iters, 1)
                             if args.meta_iters is not None
                             else PRESETS[name].default_meta_iters(options))
    out = Path(args.out or f"revlearn-runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out / runner.CHECKPOINT).exists():
        raise InputError(f"--out {out} already holds a run; continue it with --resume {out} "
                         "or choose another folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    return options, out, None, [], None


def handler(args, say=print):
    """The `run` subcommand; returns the exit code."""
    options, out, arrays, records, warning = _options(args)
    if warning:
        print(f"revlearn run: warning: {warning}", file=sys.stderr)
    get_backend(options["backend"])
    job = PRESETS[options["preset"]].Job(options)
    state = job.initial_state() if arrays is None else job.state_from_arrays(arrays)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror}") from None
    say(f"revlearn run {options['preset']}: {job.headline}")
    say(f"writing to {out}/" + (f"  (resuming after {len(records)} {job.unit}s)"
                                if records else ""))
    start = time.perf_counter()
    try:
        with blas.single_threaded():  # the evaluations' products too: the same bits every run
            state, records = runner.run(job, out, options, state, records, say)
    except runner.Interrupted as e:
        runner.write_json(out / runner.RESULTS, runner.results_document(
            options, e.records, None, [], time.perf_counter() - start, complete=False))
        say(f"{e}; saved in {out}/. Continue with: revlearn run --resume {out}")
        return 130
    plt = plotting.pyplot()
    with blas.single_threaded():
        summary, table, files = job.finish(state, records, out, plt)
    seconds = time.perf_counter() - start
    files = [str(out / runner.RESULTS)] + files
    runner.write_json(out / runner.RESULTS, runner.results_document(
        options, records, json.loads(json.dumps(summary)), files, seconds, complete=True))
    say("")
    say(table)
    say("")
    say(f"{len(records)} {job.unit}s in {seconds:.1f} s this session. Files:")
    for f in files:
        say(f"  {f}")
    if plt is None:
        say(plotting.NO_PLOT_NOTE.format(out=out))
    return 0
