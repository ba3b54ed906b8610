"""What machine a benchmark ran on, for the report."""

import importlib.metadata
import os
import platform

import numpy as np


def describe():
    """CPU model, core count, Python, NumPy's BLAS, and the versions of the libraries compared."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
           "numpy": np.__version__, "system": platform.system()}
    try:
        with open("/proc/meminfo") as f:
            out["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        pass
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    out["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    for lib in ("numba", "torch", "jax"):
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
