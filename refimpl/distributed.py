"""Many independent hypergradients at once: here, one after another, or on a dask cluster.

`hypergradients(cases, client=None)` is ``[hypergradient(case) for case in cases]``; with a
`dask.distributed` client the cases are computed on its workers and come back in order, the same
bits (DESIGN §8: an answer depends on the problem, not on the process or the machine that
computed it, among machines whose BLAS kernels agree: `check_workers`). The meta-batches of
`revlearn.meta` and the step sizes of the chaos sweep go through `starmap`, which ships a base
case to the workers once and sends each task only what differs: a function (by reference: the
workers import revlearn, and its numba kernels load from their on-disk cache once per worker
process) and a few small arguments.

On a cluster each task runs revlearn on one thread (one single-threaded worker process per
core), and `base` is replicated on every worker: a worker that dies takes no only copy with it,
and dask recomputes the tasks it held on the others, which give the same bits. dask is optional
(`pip install 'revlearn[dask]'`): this module imports it only when given a client.
"""

import contextlib
import logging
import os
import signal
import threading
import weakref
from dataclasses import fields

import numpy as np

from . import blas
from .backends import get_backend
from .case import Case, require_case
from .errors import InputError
from .sgd import METHODS, hypergradient
from .threads import available_cores
from .threads import resolve as resolve_threads

_SHIPPED = weakref.WeakKeyDictionary()  # client -> {base: its future on the cluster}
TRIM = "MALLOC_TRIM_THRESHOLD_"  # set by dask's nanny in its workers: `check_allocator`


def hypergradients(cases, client=None, method="reversible", backend="auto", threads=None):
    """[hypergradient(case, method, backend, threads) for case in cases], in order.

    client: None (the reference: here, one case after another on `threads` threads) or a
    dask.distributed Client (each case a task on its workers, on one thread; the first case is
    shipped to each worker once, and each task carries only the inputs in which its case
    differs from the first). The same bits either way.
    """
    cases = list(cases)
    for i, case in enumerate(cases):
        require_case(case, f"revlearn.distributed.hypergradients (cases[{i}])")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(map(repr, METHODS))}")
    get_backend(backend)
    resolve_threads(threads)
    if client is not None:
        _check_client(client)
    if client is None or not cases:
        return [hypergradient(c, method=method, backend=backend, threads=threads) for c in cases]
    base = cases[0]
    items = [(_differences(base, c), method, backend) for c in cases]
    return list(starmap(_hypergradient, base, items, client))


def _differences(base, case):
    """The fields of `case` that differ from `base`'s: not the same object, nor an array or a
    plain value equal to it."""
    return {f.name: getattr(case, f.name) for f in fields(Case)
            if not _same(getattr(base, f.name), getattr(case, f.name))}


def _same(a, b):
    if a is b:
        return True
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return isinstance(a, (tuple, str, bool, dict)) and type(a) is type(b) and a == b


def _hypergradient(base, changes, method, backend):
    case = base.replace(**changes) if changes else base
    return hypergradient(case, method=method, backend=backend, threads=1)


def starmap(fn, base, items, client=None):
    """Yield fn(base, *item) for each item, in order.

    client None: computed here when asked for, one after another (the reference). A dask
    client: all submitted at the first request, `base` sent to every worker once per client (a
    Case, kept weakly: the next call with the same base and client reuses the copies), each task
    carrying fn (by reference: it must be importable on the workers) and its item; the results
    come back in order as they are ready, a task's exception raised in turn. Closing the
    generator early cancels the tasks not yet returned.
    """
    if client is None:
        for item in items:
            yield fn(base, *item)
        return
    shipped = ship(base, client)
    futures = [client.submit(fn, shipped, *item, pure=False) for item in items]
    try:
        for future in futures:
            yield future.result()
    finally:
        client.cancel(futures)
        for future in futures:  # now, while the client is open, not when collected
            future.release()


def ship(base, client):
    """`base` on every worker of `client`'s cluster: a future to pass to its tasks, sent once."""
    _check_client(client)
    on_client = _SHIPPED.setdefault(client, weakref.WeakKeyDictionary())
    future = on_client.get(base)
    if future is None or future.status != "finished":
        future = client.scatter(base, broadcast=True, hash=False)
        on_client[base] = future
    return future


def _check_client(client):
    try:
        from distributed import Client
    except ImportError:
        raise InputError("a client was given, but dask.distributed is not installed; "
                         "`pip install 'revlearn[dask]'`, or pass client=None") from None
    if not isinstance(client, Client):
        raise InputError(f"client must be a dask.distributed Client or None; received "
                         f"{type(client).__name__}")


@contextlib.contextmanager
def connect(address="local"):
    """A dask Client, closed on leaving: for address "local" on a LocalCluster started here (one
    single-threaded worker process per core this process may use, closed with it), else on the
    scheduler at `address` (tcp://HOST:PORT). An InputError, before anything starts, when dask
    is not installed or no scheduler answers at the address (within dask's connect timeout,
    `distributed.comm.timeouts.connect`)."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("dask.distributed is not installed; `pip install 'revlearn[dask]'`") \
            from None
    if address == "local":
        with contextlib.ExitStack() as stack, _quiet_cancel_race():
            with _sigint_ignored():  # inherited by the worker processes: Ctrl-C reaches this one
                client = stack.enter_context(local_client(available_cores()))
            yield client
        return
    try:
        client = Client(address)
    except (OSError, ValueError) as e:
        raise InputError(f"no dask scheduler answers at {address} ({e}); start one with `dask "
                         "scheduler` and workers with `dask worker ADDRESS`, then give its "
                         "address") from None
    with client, _quiet_cancel_race():
        yield client


class CancelRace(logging.Filter):
    """Drops one log record: dask's `sync` answers Ctrl-C by scheduling the cancel of a future
    it may not have made yet, and when it has not, tornado logs that callback's NameError with
    its traceback. Harmless (the run stops as asked), and seen on a loaded machine."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, NameError) and "sync.<locals>.cancel" in record.getMessage())


@contextlib.contextmanager
def _quiet_cancel_race():
    logger = logging.getLogger("tornado.application")
    race = CancelRace()
    logger.addFilter(race)
    try:
        yield
    finally:
        logger.removeFilter(race)


@contextlib.contextmanager
def local_client(n_workers):
    """A Client on a LocalCluster of `n_workers` single-threaded worker processes, both closed on
    leaving. Its scheduler keeps every copy of a shipped base case (dask's active memory manager,
    which would drop all but one between meta-iterations, is off) and serves its HTTP on a free
    port of the loopback (on dask's default 8787 it warns on stderr when another cluster holds
    it). Its workers start without dask's MALLOC_TRIM_THRESHOLD_ (see `check_allocator`)."""
    import dask
    from distributed import Client, LocalCluster
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{TRIM}": None}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR,
                               scheduler_kwargs={"dashboard": False,
                                                 "dashboard_address": "127.0.0.1:0"})
    with cluster, Client(cluster) as client:
        client.amm.stop()
        yield client


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT ignored meanwhile (in the main thread; elsewhere signals cannot be set), so that
    processes started meanwhile ignore it too and Ctrl-C stops the client alone, which closes
    them, rather than every worker printing its own KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def check_workers(client):
    """A sentence naming the workers whose NumPy, BLAS library or kernel or CPU extensions differ
    from this process's (the last bits of a matrix product may differ with them), or None."""
    here = {k: blas.describe().get(k) for k in ("numpy", "blas", "cpu_simd")}
    differ = [addr for addr, d in client.run(blas.describe).items()
              if {k: d.get(k) for k in here} != here]
    if not differ:
        return None
    return (f"{len(differ)} worker(s) ({', '.join(sorted(differ)[:3])}"
            f"{' ...' if len(differ) > 3 else ''}) differ from this machine in NumPy, its BLAS "
            "or the CPU's extensions; their answers may differ in the last bits from a serial run "
            "here")


def check_scheduler(client):
    """A sentence when the scheduler's active memory manager runs (dask's default), or None: it
    drops the copies of a shipped base case on all workers but one when no task waits for it, so
    the case travels again at every meta-iteration, and the death of that one worker loses it."""
    if not client.amm.running():
        return None
    return ("the dask scheduler's active memory manager is on: between meta-iterations it keeps "
            "the shipped case on one worker only, which then sends it again to the others, and a "
            "run fails if that worker dies; start the scheduler with "
            "DASK_DISTRIBUTED__SCHEDULER__ACTIVE_MEMORY_MANAGER__START=False")


def _trim_threshold():
    return os.environ.get(TRIM)


def check_allocator(client):
    """A sentence naming the workers started with MALLOC_TRIM_THRESHOLD_ set, or None. dask's
    nanny sets it by default (65536); glibc then also stops raising its mmap threshold, so every
    temporary array over 128 KiB is mapped and unmapped again, and a hypergradient of the main job
    took 1.9x as long in such a worker as in one without (docs/distributed.md)."""
    trimmed = sorted(addr for addr, value in client.run(_trim_threshold).items()
                     if value is not None)
    if not trimmed:
        return None
    more = " ..." if len(trimmed) > 3 else ""
    return (f"{len(trimmed)} worker(s) ({', '.join(trimmed[:3])}{more}) run with {TRIM} set, "
            "which slows revlearn about 2x; start them with "
            f"DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON=\"{{'{TRIM}': None}}\"")
