"""`revlearn run [NAME]`: run one of the paper's experiments, print progress and a results table,
write results.json, CSV files and (with matplotlib) PNG figures into --out.

Exit codes: 0 done, 2 bad input (one line on stderr, before any work or file write), 130
interrupted by Ctrl-C (the last completed step is saved; `--resume DIR` continues).
"""

import contextlib
import json
import math
import re
import sys
import time
from pathlib import Path

from .. import blas, distributed
from ..atomic import files_in, some
from ..case import OPTIMIZERS
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
    p.add_argument("--optimizer", metavar="NAME", default="momentum",
                   help="what the training runs use: momentum (SGD with momentum, the default) or "
                   "adam (schedules only: learns alpha, beta1, beta2 per step and group)")
    p.add_argument("--mnist", metavar="DIR",
                   help="folder with the canonical MNIST files: test on all 10,000 t10k images "
                   "instead of the embedded 5,000")
    p.add_argument("--meta-batch", metavar="K",
                   help="hypergradients per meta-iteration (default 1), each on its own fresh "
                   "initial noise and batches; the meta-step follows their mean")
    p.add_argument("--meta-step-decay", metavar="TAU",
                   help="divide the meta step by 1 + i / TAU at meta-iteration i; 'none' for a "
                   "constant meta step (default: 100 for schedules on fresh draws, else none)")
    p.add_argument("--knots", metavar="K",
                   help="schedules: learn each step-size and momentum schedule as K values per "
                   "group, piecewise linear between them (default 8; the number of training "
                   "steps for one value per step, as --paper does)")
    p.add_argument("--one-draw", action="store_true",
                   help="schedules: tune on one fixed draw of initial noise and batches (the "
                   "hyperparameters then fit that draw) instead of a fresh draw every "
                   "meta-iteration")
    p.add_argument("--fresh-draws", metavar="N",
                   help="at the end, train the initial and the learned hyperparameters on N draws "
                   "of initial noise and batches that no tuning used, and report their test loss "
                   "(default 5; 0 skips)")
    p.add_argument("--dask", metavar="ADDRESS", nargs="?", const="local",
                   help="compute a meta-batch (or the chaos sweep's step sizes) on a dask "
                   "cluster: alone, a local one with one single-threaded worker process per "
                   "core; with tcp://HOST:PORT, the scheduler there. The same bits as without "
                   "(needs `pip install 'revlearn[dask]'`)")
    p.set_defaults(func=handler)
    return p


MAX_META_ITERS = 1_000_000
MAX_META_BATCH = 10_000
MAX_FRESH_DRAWS = 10_000
MAX_KNOTS = 100_000  # and at most the number of training steps (checked by the preset)
ADDRESS = re.compile(r"[a-z][a-z0-9+.-]*://\S+|[^\s/:]+:\d+")


def _int(flag, text, minimum, maximum=None):
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        raise InputError(f"{flag} {text!r}: give an integer >= {minimum}"
                         + (f" and <= {maximum:,}" if maximum is not None else ""))
    return value


def _decay(text):
    """The value of --meta-step-decay: a number > 0 (a float), or None for 'none'."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"--meta-step-decay {text!r}: give a number of meta-iterations > 0")
    return value


def threads_flag(text):
    """The value of --threads: None (every core) when not given, else an integer >= 1."""
    return None if text is None else _int("--threads", text, 1)


def _check_dask(value):
    """Refuse a --dask value that is no scheduler address, or --dask without dask installed."""
    if value is None:
        return
    if value != "local" and not ADDRESS.fullmatch(value):
        hint = (f" (to run {value} on a local cluster, write --dask after the name)"
                if value in PRESETS else "")
        raise InputError(f"--dask {value!r}: give a scheduler address such as "
                         f"tcp://HOST:PORT, or no value for a local cluster{hint}")
    try:
        import distributed  # noqa: F401  (only checked here; revlearn.distributed uses it)
    except ImportError:
        raise InputError("--dask needs dask.distributed, which is not installed: "
                         "`pip install 'revlearn[dask]'`, or run without --dask") from None


def _options(args):
    """(options, out, arrays, records, warning) from the flags, checked before any work or
    write; warning says how the machine differs from the one that started a resumed run."""
    if args.backend not in BACKENDS:
        raise InputError(f"--backend {args.backend!r}: use one of {', '.join(BACKENDS)}")
    threads = threads_flag(args.threads)
    _check_dask(args.dask)
    if args.resume:
        fixed = [f for f, v in (("--seed", args.seed != "0"), ("--paper", args.paper),
                 ("--small", args.small), ("--mnist", args.mnist), ("--out", args.out),
                 ("--optimizer", args.optimizer != "momentum"),
                 ("--meta-batch", args.meta_batch is not None),
                 ("--meta-step-decay", args.meta_step_decay is not None),
                 ("--knots", args.knots is not None), ("--one-draw", args.one_draw)) if v]
        if fixed:
            raise InputError(f"{', '.join(fixed)} cannot change on --resume: the checkpoint "
                             "fixes them (--meta-iters may extend a run, --fresh-draws change "
                             "the final report; --backend, --threads and --dask may change, they "
                             "never change the results)")
        options, arrays, records, provenance = runner.read_checkpoint(args.resume)
        if options["meta_iters"] > MAX_META_ITERS:
            raise InputError(f"--resume {args.resume}: its checkpoint asks for "
                             f"{options['meta_iters']} meta-iterations, more than "
                             f"{MAX_META_ITERS:,}")
        for key, known in (("preset", PRESETS), ("backend", BACKENDS), ("optimizer", OPTIMIZERS)):
            if options[key] not in known:
                raise InputError(f"--resume {args.resume}: its checkpoint names {key} "
                                 f"{options[key]!r}; this revlearn knows {', '.join(known)}")
        options.update(backend=args.backend, threads=threads)
        change = runner.provenance_change(provenance)
        warning = None if change is None else (
            f"this machine differs from the one that computed the checkpoint ({change}); the "
            "continued run may differ in its last bits from an uninterrupted one")
        if args.name and args.name != options["preset"]:
            raise InputError(f"--resume {args.resume} holds a {options['preset']!r} run, not "
                             f"{args.name!r}")
        if args.meta_iters is not None:
            options["meta_iters"] = _int("--meta-iters", args.meta_iters, len(records),
                                         MAX_META_ITERS)
        if args.fresh_draws is not None:
            options["fresh_draws"] = _int("--fresh-draws", args.fresh_draws, 0, MAX_FRESH_DRAWS)
        return options, Path(args.resume), arrays, records, warning
    name = args.name or DEFAULT_PRESET
    if name not in PRESETS:
        raise InputError(f"unknown experiment {name!r}; use one of {', '.join(PRESETS)}")
    if args.paper and args.small:
        raise InputError("--paper and --small contradict each other; give one")
    if args.optimizer not in OPTIMIZERS:
        raise InputError(f"--optimizer {args.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if args.optimizer != "momentum" and name != "schedules":
        raise InputError(f"--optimizer {args.optimizer}: only the schedules experiment trains "
                         f"with it; {name!r} trains with momentum, as the paper")
    options = {"preset": name, "seed": _int("--seed", args.seed, 0), "backend": args.backend,
               "threads": threads, "paper": args.paper, "small": args.small,
               "mnist_dir": str(Path(args.mnist).resolve()) if args.mnist else None,
               "optimizer": args.optimizer}
    options["meta_iters"] = (_int("--meta-iters", args.meta_iters, 1, MAX_META_ITERS)
                             if args.meta_iters is not None
                             else PRESETS[name].default_meta_iters(options))
    options["meta_batch"] = (1 if args.meta_batch is None
                             else _int("--meta-batch", args.meta_batch, 1, MAX_META_BATCH))
    if name == "chaos" and options["meta_batch"] != 1:
        raise InputError("--meta-batch: the chaos sweep has no meta-iterations to average over; "
                         "--dask alone computes its step sizes on a cluster")
    if name == "chaos" and args.meta_step_decay is not None:
        raise InputError("--meta-step-decay: the chaos sweep takes no meta-steps")
    for flag, given in (("--knots", args.knots is not None), ("--one-draw", args.one_draw)):
        if given and name != "schedules":
            raise InputError(f"{flag}: only the schedules experiment learns schedules; {name!r} "
                             "tunes on one draw")
    if args.one_draw and args.paper:
        raise InputError("--one-draw and --paper contradict each other: the paper draws afresh "
                         "every meta-iteration")
    options["draws"] = None if name != "schedules" else ("one" if args.one_draw else "fresh")
    options["knots"] = None if name != "schedules" else (
        PRESETS[name].default_knots(options) if args.knots is None
        else _int("--knots", args.knots, 1, MAX_KNOTS))
    options["fresh_draws"] = (5 if args.fresh_draws is None
                              else _int("--fresh-draws", args.fresh_draws, 0, MAX_FRESH_DRAWS))
    default_decay = getattr(PRESETS[name], "default_meta_step_decay", lambda options: None)
    options["meta_step_decay"] = (default_decay(options) if args.meta_step_decay is None
                                  else _decay(args.meta_step_decay))
    if name in ("chaos", "omniglot") and args.fresh_draws is not None:
        raise InputError(f"--fresh-draws: the {name} experiment is not scored on fresh draws; "
                         "schedules, l2 and data are")
    out = Path(args.out or f"revlearn-runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    _check_out(out)
    return options, out, None, [], None


def _check_out(out):
    """Refuse an --out that exists and is not an empty folder: a run writes only into a new or
    empty folder, so it never overwrites files it did not write."""
    if (out / runner.CHECKPOINT).exists():
        raise InputError(f"--out {out} already holds a run; continue it with --resume {out} "
                         "or choose another folder")
    held = files_in(out, f"--out {out}")
    if held:
        raise InputError(f"--out {out} is a folder that already holds files ({some(held)}) and "
                         "no revlearn run; give a new or empty folder")


def _resumed_state(job, arrays, records, where):
    """The state a checkpoint holds, after checking its arrays against the job's own: the same
    names, shapes and kinds of numbers, and a step count that matches the records."""
    template = job.state_arrays(job.initial_state())
    if set(arrays) != set(template):
        raise InputError(f"{where}: its arrays ({', '.join(sorted(arrays)) or 'none'}) are not "
                         f"those of this run's state ({', '.join(sorted(template))})")
    for key, want in template.items():
        got = arrays[key]
        if got.shape != want.shape or got.dtype.kind != want.dtype.kind:
            raise InputError(f"{where}: {key} is a {got.dtype} array of shape {got.shape}; this "
                             f"run's state has {want.dtype} of shape {want.shape}")
    if "i" in template and int(arrays["i"]) != len(records):
        raise InputError(f"{where}: its state is at step {int(arrays['i'])} but it holds "
                         f"{len(records)} records")
    return job.state_from_arrays(arrays)


def _steps(n, unit):
    return f"{n} {unit}{'' if n == 1 else 's'}"


def handler(args, say=print):
    """The `run` subcommand; returns the exit code."""
    options, out, arrays, records, warning = _options(args)
    if warning:
        print(f"revlearn run: warning: {warning}", file=sys.stderr)
    get_backend(options["backend"])
    job = PRESETS[options["preset"]].Job(options)
    where = f"--resume {out}: {runner.CHECKPOINT}"
    state = job.initial_state() if arrays is None else _resumed_state(job, arrays, records, where)
    with _cluster(args.dask, say) as client:
        return _run(job, options, out, state, records, where, arrays is not None, say, client)


@contextlib.contextmanager
def _cluster(address, say):
    """The dask client --dask asks for (None without it), connected before anything is written
    and closed, with a local cluster's workers, however the run ends (Ctrl-C included)."""
    if address is None:
        yield None
        return
    with distributed.connect(address) as client:
        workers = client.scheduler_info().get("workers", {})
        if not workers:
            say(f"dask: no workers at {address} yet; waiting for one (start them with `dask "
                f"worker {address}`; Ctrl-C stops)")
            client.wait_for_workers(1)
            workers = client.scheduler_info().get("workers", {})
        where = "a local cluster" if address == "local" else address
        say(f"dask: {where}, {len(workers)} workers, one thread each")
        for warning in (distributed.check_workers(client), distributed.check_scheduler(client),
                        distributed.check_allocator(client)):
            if warning:
                print(f"revlearn run: warning: {warning}", file=sys.stderr)
        yield client


def _run(job, options, out, state, records, where, resumed, say, client):
    """Run job (from `state`, after `records`) into --out, then finish it; the exit code."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror}") from None
    K = options["meta_batch"]
    say(f"revlearn run {options['preset']}: {job.headline}"
        + (f"; a meta-batch of {K} hypergradients per meta-iteration" if K > 1 else ""))
    say(f"writing to {out}/" + (f"  (resuming after {len(records)} {job.unit}s)"
                                if records else ""))
    start, done_before = time.perf_counter(), len(records)
    try:
        with blas.single_threaded():  # the evaluations' products too: the same bits every run
            state, records = runner.run(job, out, options, state, records, say, client)
    except runner.Interrupted as e:
        runner.write_json(out / runner.RESULTS, runner.results_document(
            options, e.records, None, [], time.perf_counter() - start, complete=False))
        say(f"{e}; saved in {out}/. Continue with: revlearn run --resume {out}")
        return 130
    plt = plotting.pyplot()
    with blas.single_threaded():
        try:
            summary, table, files = job.finish(state, records, out, plt)
        except KeyError as e:
            if not resumed:
                raise
            raise InputError(f"{where}: its records lack the field {e}, which a "
                             f"{options['preset']!r} run records") from None
    seconds = time.perf_counter() - start
    files = [str(out / runner.RESULTS)] + files
    runner.write_json(out / runner.RESULTS, runner.results_document(
        options, records, json.loads(json.dumps(summary)), files, seconds, complete=True))
    say("")
    say(table)
    say("")
    done_here = len(records) - done_before
    say(f"{_steps(done_here, job.unit)} in {seconds:.1f} s this session"
        + (f" ({len(records)} in all)" if done_before else "") + ". Files:")
    for f in files:
        say(f"  {f}")
    if plt is None:
        say(plotting.NO_PLOT_NOTE.format(out=out))
    return 0
