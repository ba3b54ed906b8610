"""Threads that share one problem's work; the answer never depends on how many there are.

The work is cut by the problem (`revlearn.partition`) into items 0 .. n-1. `Workers(threads).map`
computes fn(i) for every item on `threads` threads (the caller's and threads - 1 helpers), each
claiming the next unclaimed item, and gives the results back in item order; `Workers.fold` adds
them up in item order as they arrive, so at most a few are held at once. Whichever thread computes
an item computes it the same way, so the results are those of the serial loop
``[fn(i) for i in range(n)]``, which is what threads=1 runs.

The helpers are daemon threads started on first use and kept for the life of the process (a
fork's child starts afresh). They block on a queue while idle, so they never spin. Each item's
matrix products run on the thread that computes the item: `revlearn.blas` holds NumPy's BLAS to one
thread of its own meanwhile, so threads x BLAS threads never exceeds the thread count asked for.
"""

import itertools
import os
import queue
import threading

import numpy as np

from .errors import InputError


def available_cores():
    """The number of cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve(threads):
    """The thread count to use: `threads` checked, or every available core for None."""
    if threads is None:
        return available_cores()
    ok = isinstance(threads, (int, np.integer)) and not isinstance(threads, (bool, np.bool_))
    if not ok or threads < 1:
        raise InputError(f"threads must be a positive integer or None (every core this process "
                         f"may use: {available_cores()}); received {threads!r}")
    return int(threads)


class Workers:
    """`threads` threads for the items of one problem (threads=1: the caller's alone)."""

    def __init__(self, threads=1):
        self.threads = resolve(threads)

    def map(self, fn, n):
        """[fn(0), ..., fn(n - 1)], computed on up to `threads` threads."""
        results = [None] * n

        def store(i, r):
            results[i] = r
        self._run(fn, n, store)
        return results

    def fold(self, fn, n, add):
        """add(... add(add(fn(0), fn(1)), fn(2)) ..., fn(n - 1)): the items' results combined in
        item order (`add` may update its first argument in place and return it)."""
        pending, done = {}, [None, 0]  # the sum so far and how many items it holds
        lock = threading.Lock()

        def store(i, r):
            with lock:
                pending[i] = r
                while done[1] in pending:
                    r = pending.pop(done[1])
                    done[0] = r if done[1] == 0 else add(done[0], r)
                    done[1] += 1
        self._run(fn, n, store)
        return done[0]

    def _run(self, fn, n, store):
        helpers = min(self.threads, n) - 1
        if helpers <= 0:
            for i in range(n):
                store(i, fn(i))
            return
        job = _Job(fn, n, store)
        _helpers().post(job, helpers)
        job.work()
        job.wait()


SERIAL = Workers(1)


class _Job:
    """One map: items claimed from a shared counter; the caller waits for the items, not for the
    helpers (a helper that wakes after every item was claimed finds nothing to do); the failure of
    the lowest item is re-raised."""

    def __init__(self, fn, n, store):
        self.fn, self.n, self.store = fn, n, store
        self.claim = itertools.count().__next__  # atomic under the GIL
        self.errors = []
        self.lock = threading.Lock()
        self.remaining = n
        self.finished = threading.Event()

    def work(self):
        while not self.errors:
            i = self.claim()
            if i >= self.n:
                return
            try:
                self.store(i, self.fn(i))
            except BaseException as e:  # re-raised by the caller's thread in `wait`
                self.errors.append((i, e))
            finally:
                with self.lock:
                    self.remaining -= 1
                    if self.remaining == 0:
                        self.finished.set()

    def wait(self):
        if self.errors:  # no item claimed after the failure will run: count them as done
            with self.lock:
                unclaimed = max(self.n - self.claim(), 0)
                self.remaining -= unclaimed
                if self.remaining <= 0:
                    self.finished.set()
        self.finished.wait()
        if self.errors:
            raise min(self.errors, key=lambda ie: ie[0])[1]


class _Helpers:
    """Daemon threads that take jobs from one queue."""

    def __init__(self):
        self.inbox = queue.SimpleQueue()
        self.count = 0
        self.lock = threading.Lock()

    def post(self, job, k):
        with self.lock:
            while self.count < k:
                threading.Thread(target=self._serve, name=f"revlearn-{self.count}",
                                 daemon=True).start()
                self.count += 1
        for _ in range(k):
            self.inbox.put(job)

    def _serve(self):
        while True:
            self.inbox.get().work()


_HELPERS = _Helpers()


def _helpers():
    return _HELPERS


def _forget_helpers():
    global _HELPERS
    _HELPERS = _Helpers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)  # a fork's child has none of the threads
