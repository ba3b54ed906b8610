"""The `revlearn` command: oracle case files, the conformance suite, the check of another
implementation's answers, and the audit of approximate hypergradients against the exact one.

Exit codes: 0 ok, 1 mismatch (check), 2 bad input (with a one-line reason on stderr), 130
interrupted.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import audit, backends, conformance, oracle, sgd, trace
from .errors import InputError, ReversalError, TrainingError
from .experiments import plotting
from .experiments.cli import add_parser as add_run_parser
from .experiments.cli import threads_flag
from .memory import describe_bytes, physical_memory
from .spec import complete_spec, make_case, memory_needed
from .threads import available_cores

MAX_SPEC_BYTES = 256 << 20


def read_spec(path):
    """The spec in a JSON file: a UTF-8 text holding one JSON object, or an InputError."""
    path = Path(path)
    try:
        if path.is_dir():
            raise InputError(f"spec file {path} is a folder; give a .json file")
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise InputError(f"spec file {path} is {path.stat().st_size} bytes; a spec is at most "
                             f"{MAX_SPEC_BYTES >> 20} MiB of JSON")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"spec file {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read spec file {path} ({e.strerror or type(e).__name__})") \
            from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"spec file {path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset "
                         f"{e.start}); save it as UTF-8 JSON") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"spec file {path} is not valid JSON: {e.msg} at line {e.lineno} "
                         f"column {e.colno}") from None
    except RecursionError:
        raise InputError(f"spec file {path} nests its JSON too deeply to read") from None
    except ValueError:  # an integer beyond Python's limit on digits
        raise InputError(f"spec file {path} holds a number too long to read") from None
    if not isinstance(spec, dict):
        raise InputError(f"spec file {path} holds a JSON {_json_kind(spec)}; a spec is a JSON "
                         'object such as {"layer_sizes": [784, 50, 10], "n_iters": 100, ...}')
    return spec


def _json_kind(value):
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _oracle(args):
    spec = read_spec(args.spec)
    threads = threads_flag(args.threads)
    every = _trace_every(args)
    oracle.check_writable(args.output)
    backend = backends.get_backend(args.backend).name
    if every is not None:
        _check_trace_fits(complete_spec(spec), every)
    case = make_case(spec)
    recorder = None if every is None else trace.Recorder(trace.trace_steps(case.T, every), case.P)
    start = time.perf_counter()
    result = sgd.hypergradient(case, method=args.method, backend=backend, threads=threads,
                               trace=recorder)
    seconds = time.perf_counter() - start
    oracle.write_case(args.output, case, result, recorder)
    print(f"wrote {args.output}: {case.layer_sizes} {case.activation}, T = {case.T}, "
          f"B = {case.batches.shape[1]}, P = {case.P}, method {args.method}, backend "
          f"{backend}, {seconds:.2f} s" + ("" if recorder is None else
                                          f", traced at {len(recorder.steps)} steps"))
    print(f"valid_loss {result.valid_loss:.10g}, exact_recovery {result.exact_recovery}, "
          f"buffer_bits {result.buffer_bits}")
    return 0


def _trace_every(args):
    """Every how many steps --trace records (None without --trace)."""
    if args.trace_every is not None and not args.trace:
        raise InputError(f"--trace-every {args.trace_every} needs --trace")
    if not args.trace:
        return None
    if args.trace_every is None:
        return 1
    try:
        every = int(args.trace_every)
    except ValueError:
        every = 0
    if every < 1:
        raise InputError(f"--trace-every {args.trace_every!r}: give an integer >= 1 (the trace "
                         "holds steps 0, K, 2K, ... and T)")
    return every


def _check_trace_fits(spec, every):
    """Refuse, before any work, a trace that would not fit in memory beside the run itself."""
    sizes, T = spec["layer_sizes"], spec["n_iters"]
    P = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=False))
    need, have = trace.bytes_needed(T, P, every), physical_memory()
    run = sum(memory_needed(spec).values())
    if have is not None and need + run > have:
        rows = max(have - run, 0) // 2 // (16 * P)  # half of what is left
        raise InputError(f"a trace of {len(trace.trace_steps(T, every))} steps of P = {P} "
                         f"parameters takes {describe_bytes(need)}; with the run's own "
                         f"{describe_bytes(run)} that is more than this machine's "
                         f"{describe_bytes(have)}; trace fewer steps, e.g. --trace-every "
                         f"{-(-T // max(rows - 1, 1))}")


def _int_list(flag, text, maximum):
    """A flag's comma-separated positive integers, each at most `maximum`."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 1 or v > maximum for v in values):
        raise InputError(f"{flag} {text!r}: give positive integers (at most {maximum:,}) separated "
                         "by commas, such as 1,10,100")
    return sorted(set(values))


def _int_at_least(flag, text, least):
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise InputError(f"{flag} {text!r}: give an integer >= {least}")
    return value


def _audit(args):
    spec = read_spec(args.spec)
    Ks = _int_list("--K", args.K, audit.MAX_K)
    horizons = _int_list("--horizons", args.horizons, audit.MAX_K) if args.horizons else None
    seed = _int_at_least("--seed", args.seed, 0)
    repeats = _int_at_least("--repeats", args.repeats, 1)
    threads = threads_flag(args.threads)
    backend = backends.get_backend(args.backend).name
    audit.check_out(args.out)
    cases = [make_case(spec)] if horizons is None else [make_case({**spec, "n_iters": T})
                                                        for T in horizons]
    for case in cases:
        audit.check_fits(case)
    start, rows = time.perf_counter(), []
    for case in cases:
        rows += audit.audit(case, Ks, seed, backend, threads, repeats, say=print)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror}") from None
    audit.write(out, audit.document(cases[0], complete_spec(spec), [c.T for c in cases], Ks,
                                    seed, backend, threads, repeats, rows,
                                    time.perf_counter() - start))
    files = [str(out / audit.FILE)]
    plt = plotting.pyplot()
    if plt is not None:
        files.append(audit.plot(rows, plt, out / audit.FIGURE))
    print()
    print(audit.format_table(rows))
    print()
    print("Files:\n" + "\n".join(f"  {f}" for f in files))
    if plt is None:
        print("matplotlib is not installed, so only audit.json was written; "
              "`pip install 'revlearn[plot]'` for the figure")
    return 0


def _check(args):
    if Path(args.case).is_dir():
        version, reports = conformance.check_folder(args.case, args.theirs, rtol=args.rtol,
                                                    atol=args.atol)
        text, ok = conformance.format_folder(reports, args.rtol, args.atol)
        print(f"conformance suite version {version}: {args.case} against {args.theirs}")
        print(text)
        return 0 if ok else 1
    if Path(args.theirs).is_dir():
        raise InputError(f"{args.theirs} is a folder but {args.case} is not; give two case "
                         "files, or a suite folder and a folder of answers")
    report = oracle.check(args.case, args.theirs, rtol=args.rtol, atol=args.atol)
    print(oracle.format_table(report.rows, report.absent))
    if report.divergence is not None:
        print(report.divergence)
    print(oracle.verdict(report, args.rtol, args.atol))
    return 0 if all(r.ok for r in report.rows) else 1


def _conformance(args):
    threads = threads_flag(args.threads)
    conformance.check_folder_is_new(args.folder)
    backend = backends.get_backend(args.backend).name
    print(f"revlearn conformance: suite version {conformance.SUITE_VERSION}, "
          f"{len(conformance.CASES)} cases, into {args.folder}/ (backend {backend})")
    start = time.perf_counter()
    records = conformance.write_suite(args.folder, backend, threads)
    print(f"wrote {len(records)} case files, their specs and {conformance.INDEX} in "
          f"{time.perf_counter() - start:.1f} s")
    pins = conformance.check_pins(records)
    if pins.problems:
        print(f"revlearn conformance: warning: this suite is not the pinned suite version "
              f"{conformance.SUITE_VERSION}: {'; '.join(pins.problems[:3])}"
              + (f" and {len(pins.problems) - 3} more" if len(pins.problems) > 3 else ""),
              file=sys.stderr)
    elif pins.how == "bits":
        print(f"every answer is the pinned suite version {conformance.SUITE_VERSION}'s, bit for "
              "bit (sha256)" + ("" if pins.why is None else ", although this machine's matrix "
                                f"products may round differently ({pins.why})"))
    else:
        print(f"every answer's norm and eight of its entries are within its case's tolerance "
              f"({conformance.tolerances()}) of the pinned suite version "
              f"{conformance.SUITE_VERSION}'s; not bit for bit, as this machine's matrix "
              f"products round differently ({pins.why})")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors (unknown flag, missing value) on one line like every other."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog="revlearn", description="Exact hypergradients through reversible learning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("oracle", help="write a case file: every input and the exact answers",
                       description="Build the case a spec describes, compute its hypergradients "
                       "and write every input and output to one .npz (see the README's "
                       "'Case files').")
    p.add_argument("spec", metavar="SPEC.json", help="the spec (JSON object)")
    p.add_argument("-o", "--output", metavar="CASE.npz", required=True, help="case file to write")
    p.add_argument("--backend", choices=backends.BACKENDS, default="auto",
                   help="auto (default: numba when installed), numpy or numba: the same bits")
    p.add_argument("--threads", metavar="N",
                   help=f"threads to use (default: every core this process may use, "
                   f"{available_cores()} here): the same bits for every N")
    p.add_argument("--method", choices=sgd.METHODS, default="reversible")
    p.add_argument("--trace", action="store_true",
                   help="also write trace_steps, w_trace (w_t) and dw_trace (df/dw_t) at every "
                   "step, or every K with --trace-every (see the README's 'Case file format')")
    p.add_argument("--trace-every", metavar="K",
                   help="trace steps 0, K, 2K, ... and T only (default 1: every step)")
    p.set_defaults(func=_oracle)

    p = sub.add_parser("conformance", help="write the conformance suite: case files to check "
                       "an implementation against",
                       description="Write the conformance suite into DIR (a new or empty "
                       "folder): NAME.npz (a traced case file) and NAME.json (its spec) for each "
                       "case, and index.json listing them and what each covers. Answer each "
                       "case into THEIRS_DIR/NAME.npz and run `revlearn check DIR THEIRS_DIR`.")
    p.add_argument("folder", metavar="DIR", help="the folder to write (new or empty)")
    p.add_argument("--backend", choices=backends.BACKENDS, default="auto",
                   help="auto (default: numba when installed), numpy or numba: the same bits")
    p.add_argument("--threads", metavar="N",
                   help=f"threads to use (default: every core this process may use, "
                   f"{available_cores()} here): the same bits for every N")
    p.set_defaults(func=_conformance)

    p = sub.add_parser("check", help="compare another implementation's answers with a case",
                       description="Compare every output key THEIRS.npz holds with the case's "
                       "reference. An element passes when |theirs - ref| <= atol + rtol |ref|; "
                       "by default atol is rtol * 1e-3 * max|ref| per key. The outputs of the case "
                       "that THEIRS lacks are listed as not checked. When THEIRS holds w_trace "
                       "or dw_trace, a line says at which step they first depart. CASE and "
                       "THEIRS may be folders: a suite written by `revlearn conformance` and "
                       "one answer file NAME.npz per case. Exit 0 when all it holds agree, 1 on "
                       "a mismatch, 2 when a file cannot be used.")
    p.add_argument("case", metavar="CASE.npz", help="a case file, or a suite folder")
    p.add_argument("theirs", metavar="THEIRS.npz",
                   help="an answer file, or a folder of answer files")
    p.add_argument("--rtol", type=float, default=oracle.RTOL)
    p.add_argument("--atol", type=float, default=None)
    p.set_defaults(func=_check)

    p = sub.add_parser("audit", help="how far approximate hypergradients are from the exact one",
                       description="Compute the exact hypergradient of the case a spec describes "
                       "and every approximation (forward mode along random directions, truncated "
                       "reverse mode and the implicit function theorem with K terms, DrMAD "
                       "(SGD with momentum only), greedy one-step), and compare each "
                       "hyperparameter kind with the exact answer: cosine, relative error, "
                       "sign agreement, seconds, peak memory. Writes DIR/audit.json and, with "
                       "matplotlib, DIR/audit.png.")
    p.add_argument("spec", metavar="SPEC.json", help="the spec (JSON object)")
    p.add_argument("--out", metavar="DIR", required=True,
                   help="a new or empty folder for audit.json and audit.png")
    p.add_argument("--K", default="1,10,100", metavar="K1,K2,...",
                   help="the K of truncated and ift (default 1,10,100); those below T are used, "
                   "and T itself")
    p.add_argument("--horizons", metavar="T1,T2,...",
                   help="audit the spec at each of these n_iters (default: the spec's)")
    p.add_argument("--seed", default="0", help="seed of forward mode's random directions "
                   "(default 0)")
    p.add_argument("--repeats", default="1", metavar="N",
                   help="time each call N times and report the median (default 1)")
    p.add_argument("--backend", choices=backends.BACKENDS, default="auto",
                   help="auto (default: numba when installed), numpy or numba: the same bits")
    p.add_argument("--threads", metavar="N",
                   help=f"threads to use (default: every core this process may use, "
                   f"{available_cores()} here): the same bits for every N")
    p.set_defaults(func=_audit)

    add_run_parser(sub)
    return parser


def main(argv=None):
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, ReversalError, TrainingError) as e:
        print(f"revlearn {args.command}: error: {' '.join(str(e).splitlines())}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"revlearn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`revlearn run | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
