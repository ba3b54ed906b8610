"""What a dask cluster costs per hypergradient task, against what a task of the main job's size
computes: the numbers behind the scaling estimate in docs/distributed.md.

    python -m bench.dask_overhead [--workers 2] [--repeats 5] [--json FILE]

On a LocalCluster of `--workers` single-threaded worker processes, with the `schedules --paper`
problem (784-50-50-50-10 tanh, 10,000 MNIST images, T = 100, batch 200) shipped to every worker:

- ship: sending the base case (126 MB) to every worker, once per run;
- round trip: one task that does nothing with the shipped case, submitted and waited for
  (median of 50): the latency a meta-iteration pays at least once;
- per task: 400 such tasks at once, wall time / 400: the scheduler's cost per task when busy;
- member: one meta-batch member of the main job's size (a hypergradient, one thread), its time
  measured inside the worker against the wall time the client waits for it (medians of
  --repeats); and the same member in this process on one thread and on every core;
- client: what the client does alone each meta-iteration (the first member's case, evaluating
  its w_T on the training, validation and test sets, the checkpoint's arrays).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from revlearn import blas, meta
from revlearn.experiments import schedules
from revlearn.threads import available_cores


def _noop(case):
    return case.P


def _timed_member(case, state, config, k):
    start = time.perf_counter()
    meta.member(case, state, config, k, 1)
    return time.perf_counter() - start


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    from revlearn import distributed

    options = {"preset": "schedules", "seed": 0, "backend": "auto", "threads": None,
               "paper": True, "small": False, "mnist_dir": None, "meta_iters": 1,
               "meta_batch": 8, "meta_step_decay": None}
    job = schedules.Job(options)
    state = meta.init(job.case, job.config)
    report = {"workers": args.workers, "repeats": args.repeats}
    with distributed.local_client(args.workers) as client:
        start = time.perf_counter()
        shipped = distributed.ship(job.case, client)
        report["ship_s"] = time.perf_counter() - start
        client.submit(_noop, shipped, pure=False).result()  # warm the workers' imports
        report["round_trip_s"], _ = median_time(
            lambda: client.submit(_noop, shipped, pure=False).result(), 50)
        start = time.perf_counter()
        client.gather([client.submit(_noop, shipped, pure=False) for _ in range(400)])
        report["per_task_s"] = (time.perf_counter() - start) / 400
        client.gather([client.submit(_timed_member, shipped, state, job.config, k, pure=False)
                       for k in range(args.workers)])  # the kernels load once per worker
        inside, waited = [], []
        for r in range(args.repeats):
            start = time.perf_counter()
            inside.append(client.submit(_timed_member, shipped, state, job.config, r,
                                        pure=False).result())
            waited.append(time.perf_counter() - start)
        report["member_on_worker_s"] = statistics.median(inside)
        report["member_waited_s"] = statistics.median(waited)
        report["member_overhead_s"] = statistics.median(w - i for w, i in
                                                        zip(waited, inside, strict=True))
    for threads in (1, None):
        report[f"member_here_threads_{threads or 'all'}_s"], _ = median_time(
            lambda t=threads: meta.member(job.case, state, job.config, 0, t), args.repeats)
    _, outcome = meta.step(job.case, state, meta.MetaConfig(**{
        **job.config.__dict__, "meta_batch": 1}))
    with blas.single_threaded():  # as `revlearn run` evaluates
        job.record(state, outcome)  # the evaluation kernels load once
        report["client_s"], _ = median_time(lambda: (meta.case_at(job.case, state, job.config),
                                                     job.record(state, outcome),
                                                     job.state_arrays(state)), args.repeats)
    for key, value in report.items():
        print(f"{key:32s} {value:.4g}" if isinstance(value, float) else f"{key:32s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
