"""A dask worker preload (`dask worker --preload THIS_FILE`): the worker SIGKILLs its own process
as its first task starts executing, a worker dying mid-task for tests/test_distributed.py."""

import os
import signal

from distributed import WorkerPlugin


class DieOnFirstTask(WorkerPlugin):
    def transition(self, key, start, finish, **kwargs):
        if finish == "executing":
            os.kill(os.getpid(), signal.SIGKILL)


async def dask_setup(worker):
    await worker.plugin_add(DieOnFirstTask(), name="die-on-first-task")
