"""What machine a benchmark ran on, for the report."""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

# a CPU with AVX2 and FMA but no AVX-512, for every library that dispatches on the CPU
AVX2 = dict(NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX "
            "AVX512_CLX AVX512_CNL", OPENBLAS_CORETYPE="Haswell", NUMBA_CPU_NAME="haswell",
            ATEN_CPU_CAPABILITY="avx2", XLA_ISA="--xla_cpu_max_isa=AVX2")


def simd_level():
    """The widest SIMD level NumPy dispatches to in this process: 'X86_V4 (AVX-512)',
    'X86_V3 (AVX2)', ..., from NumPy's CPU feature table (which NPY_DISABLE_CPU_FEATURES
    narrows)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as f
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as f
    for names, level in ((("X86_V4", "AVX512_SKX"), "X86_V4 (AVX-512)"),
                         (("X86_V3", "AVX2"), "X86_V3 (AVX2)"), (("X86_V2", "SSE42"), "X86_V2"),
                         (("SVE",), "SVE"), (("ASIMD",), "ASIMD (NEON)")):
        if any(f.get(n) for n in names):
            return level
    return "baseline"


def describe(isa="native"):
    """CPU model, core count, its SIMD level (and the one the libraries were held to), Python,
    NumPy's BLAS and kernel, and the versions of the libraries compared."""
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
    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    except TypeError:  # NumPy < 1.25
        blas = {}
    out["blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    out["simd"] = simd_level()
    if isa != "native":
        out["libraries_held_to"] = isa
        env = {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES",)}
        probe = ("from revlearn import blas; from bench.machine import simd_level; import json; "
                 "print(json.dumps([simd_level(), blas.describe()['blas']]))")
        env.update({k: v for k, v in AVX2.items() if k != "XLA_ISA"})
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              env=env, cwd=Path(__file__).resolve().parents[1])
        if done.returncode == 0:
            out["simd_held"], out["blas_kernel_held"] = json.loads(done.stdout)
    from revlearn import blas as rblas
    out["blas_kernel"] = [b.get("kernel") for b in rblas.describe()["blas"]]
    for lib in ("numba", "torch", "jax"):
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
