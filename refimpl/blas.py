"""NumPy's BLAS: held to one thread while revlearn computes, called directly, and described.

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

`mm(A, B, ta, tb)` is every matrix product of the MLP: op(A) op(B), op a transpose when asked, with
A and B as stored (row-major), by one call of NumPy's own OpenBLAS `cblas_dgemm` (beta = 0), the
same call the numba backend makes from inside its kernels (`DGEMM` is that entry point, or None
where NumPy's BLAS is not an OpenBLAS found in NumPy's own folder: then `mm` is `np.matmul` and the
numba backend calls it too). One routine for every shape keeps both backends on the same rounding
without depending on how `np.matmul` dispatches (it takes other paths when a dimension is 1).
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
        self.dgemm = self._dgemm() if self.get is not None and api == "openblas" else None

    def _dgemm(self):
        """cblas_dgemm with its argument types (64-bit integers in a USE64BITINT build)."""
        config = self.config().decode(errors="replace") if self.config is not None else ""
        for prefix, suffix in OPENBLAS_AFFIXES:
            f = getattr(self.dll, f"{prefix}cblas_dgemm{suffix}", None)
            if f is not None:
                i = ctypes.c_int64 if "USE64BITINT" in config.split() else ctypes.c_int32
                d, p = ctypes.c_double, ctypes.c_void_p
                f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i, i, i, d, p, i, p, i, d,
                              p, i]
                f.restype = None
                return f
        return None

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
    try:
        build = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    except TypeError:  # NumPy < 1.25 prints its configuration and returns nothing
        build = {}
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return {"numpy": np.__version__,
            "numpy_blas": f"{build.get('name', '?')} {build.get('version', '')}".strip(),
            "blas": [lib.describe() for lib in _libraries()],
            "cpu_simd": sorted(k for k, v in features.items() if v)}


# --- the matrix products -----------------------------------------------------------------------

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _numpy_dgemm():
    """The cblas_dgemm of the OpenBLAS in NumPy's own folder, if it computes a product right."""
    home = Path(np.__file__).resolve().parent
    folders = {home, home.parent / "numpy.libs", home / ".libs", home / ".dylibs"}
    for lib in _libraries():
        if lib.dgemm is not None and Path(lib.path).resolve().parent in folders:
            if _sound(lib.dgemm):
                return lib.dgemm
    return None


def _sound(f):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((7, 5)), rng.standard_normal((6, 5))
    C = np.empty((7, 6))
    f(ROW_MAJOR, NO_TRANS, TRANS, 7, 6, 5, 1.0, A.ctypes.data, 5, B.ctypes.data, 5, 0.0,
      C.ctypes.data, 6)
    return bool(np.allclose(C, A @ B.T, rtol=1e-12, atol=1e-12))


DGEMM = _numpy_dgemm() if os.environ.get("REVLEARN_DGEMM", "1") != "0" else None


def mm(A, B, ta=False, tb=False, out=None):
    """op(A) op(B), A and B C-contiguous 2-d float64 (op(X) = X.T when asked): one dgemm call."""
    if not (A.flags.c_contiguous and B.flags.c_contiguous):
        raise ValueError("mm takes C-contiguous arrays (pass A and ta=True for A.T)")
    M, K = (A.shape[1], A.shape[0]) if ta else A.shape
    N = B.shape[0] if tb else B.shape[1]
    if out is None:
        out = np.empty((M, N))
    if DGEMM is None:
        return np.matmul(A.T if ta else A, B.T if tb else B, out=out)
    DGEMM(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, M, N, K, 1.0,
          A.ctypes.data, A.shape[1], B.ctypes.data, B.shape[1], 0.0, out.ctypes.data, N)
    return out


def _forget():
    _STATE.update(libraries=None, depth=0, saved=[])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget)
