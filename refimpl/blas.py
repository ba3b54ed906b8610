"""NumPy's BLAS: held to one thread while revlearn computes, and described for the record.

A multi-threaded BLAS splits a matrix product between its threads in a way that changes the
rounding (with OpenBLAS, `X @ W` on a 200 x 784 batch differs in its last bits between 1 and 2
threads), so revlearn runs every product on one BLAS thread, inside its own threads
(`revlearn.threads`), whatever OPENBLAS_NUM_THREADS says. `single_threaded()` sets the BLAS
libraries loaded in this process to one thread and gives them their setting back when the last
computation in the process leaves it (nested and concurrent computations share one setting).

The libraries are found where the process has loaded them (/proc/self/maps on Linux, or
threadpoolctl's inventory where it is installed) and driven through their own entry points:
OpenBLAS (`openblas_set_num_threads`, with the prefixes and suffixes of NumPy's and SciPy's builds),
MKL (`MKL_Set_Num_Threads`) and BLIS (`bli_thread_set_num_threads`). `describe()` records which
BLAS computed a result (name, version, the kernel it chose for this CPU): the last bits of a matrix
product differ between kernels, so results from different machines are compared with that in mind.
"""

import contextlib
import ctypes
import os
import threading
from pathlib import Path

import numpy as np

OPENBLAS_AFFIXES = [(p, s) for p in ("", "scipy_") for s in ("", "64_", "_64")]


class _Library:
    """One loaded BLAS library and its thread-count entry points (None where it has none)."""

    def __init__(self, api, path):
        self.api, self.path = api, path
        self.dll = ctypes.CDLL(path)
        self.get = self.set = self.config = self.core = None
        if api == "openblas":
            for prefix, suffix in OPENBLAS_AFFIXES:
                if hasattr(self.dll, f"{prefix}openblas_get_num_threads{suffix}"):
                    sym = lambda name: getattr(self.dll, f"{prefix}{name}{suffix}", None)  # noqa
                    self.get, self.set = sym("openblas_get_num_threads"), sym(
                        "openblas_set_num_threads")
                    self.config, self.core = sym("openblas_get_config"), sym(
                        "openblas_get_corename")
                    break
        elif api == "mkl":
            self.get = getattr(self.dll, "MKL_Get_Max_Threads", None)
            self.set = getattr(self.dll, "MKL_Set_Num_Threads", None)
        elif api == "blis":
            self.get = getattr(self.dll, "bli_thread_get_num_threads", None)
            self.set = getattr(self.dll, "bli_thread_set_num_threads", None)
        for f in (self.config, self.core):
            if f is not None:
                f.restype = ctypes.c_char_p

    def describe(self):
        out = {"api": self.api, "library": Path(self.path).name}
        if self.config is not None:
            words = self.config().decode(errors="replace").split()
            out["version"] = words[1] if len(words) > 1 and words[0] == "OpenBLAS" else None
        if self.core is not None:
            out["kernel"] = self.core().decode(errors="replace")
        return out


def _api_of(name):
    name = name.lower()
    for api, marks in (("openblas", ("openblas",)), ("mkl", ("mkl_rt",)), ("blis", ("blis",))):
        if any(m in name for m in marks):
            return api
    return None


def _loaded_paths():
    """(api, path) of the BLAS libraries loaded in this process."""
    found = {}
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(None, 5)[-1].strip()
                api = _api_of(os.path.basename(path))
                if api and path.startswith("/") and ".so" in path:
                    found.setdefault(path, api)
        return [(api, path) for path, api in found.items()]
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [(i["internal_api"], i["filepath"]) for i in threadpool_info()
            if i.get("user_api") == "blas" and i.get("internal_api") in ("openblas", "mkl", "blis")]


_LOCK = threading.Lock()
_STATE = {"libraries": None, "depth": 0, "saved": []}


def _libraries():
    if _STATE["libraries"] is None:
        libs = []
        for api, path in _loaded_paths():
            try:
                libs.append(_Library(api, path))
            except OSError:
                continue
        _STATE["libraries"] = libs
    return _STATE["libraries"]


@contextlib.contextmanager
def single_threaded():
    """Every loaded BLAS on one thread for the duration (then back to its own setting)."""
    with _LOCK:
        if _STATE["depth"] == 0:
            libs = [lib for lib in _libraries() if lib.get is not None and lib.set is not None]
            _STATE["saved"] = [(lib, lib.get()) for lib in libs]
            for lib in libs:
                lib.set(1)
        _STATE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                for lib, n in _STATE["saved"]:
                    lib.set(n)
                _STATE["saved"] = []


def thread_counts():
    """The thread count each loaded BLAS would use now, {library file name: threads}."""
    return {Path(lib.path).name: lib.get() for lib in _libraries() if lib.get is not None}


def controlled():
    """True when revlearn can hold NumPy's BLAS to one thread (it found a library it knows)."""
    return any(lib.set is not None for lib in _libraries())


def describe():
    """What computes the matrix products: NumPy's version and build, each BLAS library loaded
    (name, version, the kernel chosen for this CPU), and the CPU's SIMD extensions."""
    build = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return {"numpy": np.__version__,
            "numpy_blas": f"{build.get('name', '?')} {build.get('version', '')}".strip(),
            "blas": [lib.describe() for lib in _libraries()],
            "cpu_simd": sorted(k for k, v in features.items() if v)}


def _forget():
    _STATE.update(libraries=None, depth=0, saved=[])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
