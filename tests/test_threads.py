"""The same bits on every thread count, BLAS thread setting and backend (DESIGN §8): w_T, every
g_t, every hypergradient and the buffer; the thread pool and the BLAS guard themselves."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import revlearn
from revlearn import blas, lanes, sgd, threads
from revlearn.partition import LANES, ROWS, row_chunks
from revlearn.threads import Workers

from conftest import HAVE_NUMBA, needs_numba

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("w_final", "train_losses", "d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0",
           "d_X_train")
# P = 60*120 + 120 + 120*10 + 10 = 8530 lanes: three blocks; batches of 250 rows: three chunks
SPEC = dict(layer_sizes=[60, 120, 10], dataset="synthetic", n_train=600, n_valid=450, n_iters=12,
            batch_size=250, seed=5, alpha=0.2, gamma=0.9, init_scale=0.2, l2=1e-3,
            grad_train_inputs=True)
CONFIGS = [("numpy", 1), ("numpy", 3)] + ([("numba", 1), ("numba", 2), ("numba", 3)]
                                           if HAVE_NUMBA else [])


def bits(a):
    return np.asarray(a, np.float64).view(np.int64)


def fingerprint(result):
    """A hash of every output of a Result, bit for bit."""
    h = hashlib.sha256()
    for key in OUTPUTS:
        h.update(np.ascontiguousarray(getattr(result, key)).tobytes())
    h.update(repr((result.valid_loss, result.buffer_bits, result.exact_recovery)).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def case():
    c = revlearn.make_case(SPEC)
    assert c.P > 2 * LANES and c.batches.shape[1] > 2 * ROWS and len(c.X_valid) > 4 * ROWS
    return c


@pytest.fixture(scope="module")
def reference(case):
    return revlearn.hypergradient(case, backend="numpy", threads=1)


@pytest.mark.parametrize("backend, n", CONFIGS[1:])
def test_hypergradient_is_the_same_bits_on_every_thread_count_and_backend(case, reference,
                                                                          backend, n):
    res = revlearn.hypergradient(case, backend=backend, threads=n)
    assert res.exact_recovery and reference.exact_recovery
    assert res.valid_loss == reference.valid_loss and res.buffer_bits == reference.buffer_bits
    for key in OUTPUTS:
        assert np.array_equal(bits(getattr(res, key)), bits(getattr(reference, key))), key


def test_every_g_t_and_the_buffer_are_the_same_bits(case, monkeypatch):
    runs = []
    for backend, n in CONFIGS:
        grads = []
        original = sgd.Passes.batch_grad

        def recording(self, t, w, _original=original, _grads=grads):
            ell = _original(self, t, w)
            _grads.append(lanes.penalized(self.G, self.case.lam, w)[0])  # g_t, as the step adds it
            return ell
        monkeypatch.setattr(sgd.Passes, "batch_grad", recording)
        W, V, buf, _ = sgd.train_exact(case, sgd.get_backend(backend), Workers(n))
        monkeypatch.undo()
        runs.append((np.array(grads), W, V, buf))
    g0, W0, V0, buf0 = runs[0]
    assert g0.shape == (case.T, case.P) and buf0.peak.min() >= 0
    for g, W, V, buf in runs[1:]:
        assert np.array_equal(bits(g), bits(g0))
        assert np.array_equal(W, W0) and np.array_equal(V, V0)
        assert np.array_equal(buf.x, buf0.x) and np.array_equal(buf.top, buf0.top)
        assert np.array_equal(buf.peak, buf0.peak)
        for b, top in enumerate(buf0.top):
            assert np.array_equal(buf.stack[b, :top], buf0.stack[b, :top])


def test_train_and_valid_loss_are_the_same_bits_on_every_thread_count(case):
    for exact in (True, False):
        ref = revlearn.train(case, exact=exact, backend="numpy", threads=1)
        for backend, n in CONFIGS[1:]:
            other = revlearn.train(case, exact=exact, backend=backend, threads=n)
            assert np.array_equal(bits(other.w_final), bits(ref.w_final))
            assert np.array_equal(bits(other.train_losses), bits(ref.train_losses))
    losses = {revlearn.valid_loss(case, backend=b, threads=n) for b, n in CONFIGS}
    assert len(losses) == 1


ADAM_OUTPUTS = ("w_final", "train_losses", "d_alpha", "d_beta1", "d_beta2", "d_epsilon",
                "d_init_scale", "d_l2", "d_w0", "d_X_train")


def test_adams_hypergradient_is_the_same_bits_on_every_thread_count_and_backend(case):
    # beta1 0.1: 3.3 bits per parameter per step, so that the 12 steps put words on the stacks
    adam = case.replace(optimizer="adam", gamma=None, alpha=np.full(case.alpha.shape, 0.01),
                        beta1=np.full(case.alpha.shape, 0.1),
                        beta2=np.full(case.alpha.shape, 0.999), epsilon=np.full(case.G, 1e-8))
    results = [revlearn.hypergradient(adam, backend=b, threads=n) for b, n in CONFIGS]
    ref = results[0]
    assert ref.exact_recovery and ref.buffer_bits > 64 * adam.P
    for res in results[1:]:
        assert res.exact_recovery and res.buffer_bits == ref.buffer_bits
        assert res.valid_loss == ref.valid_loss
        for key in ADAM_OUTPUTS:
            assert np.array_equal(bits(getattr(res, key)), bits(getattr(ref, key))), key


def test_the_answer_depends_on_the_row_chunks(case):
    # negative control for the partition: cut a batch of 250 rows into 2 chunks instead of 3 and
    # the gradient changes in its last bits (so the tests above would see a thread-dependent cut)
    from revlearn import mlp, partition
    rows = case.batches[0]
    w = case.w0
    g3 = mlp.loss_grad(w, case.X_train[rows], case.y_train[rows], case.layout, "tanh")[1]
    saved = partition.ROWS
    try:
        partition.ROWS = 125
        g2 = mlp.loss_grad(w, case.X_train[rows], case.y_train[rows], case.layout, "tanh")[1]
    finally:
        partition.ROWS = saved
    assert len(row_chunks(250)) == 4  # three chunks under the rule
    assert np.allclose(g2, g3, rtol=1e-12, atol=1e-15) and not np.array_equal(g2, g3)


# --- BLAS thread settings, in fresh processes ------------------------------------------------

SCRIPT = """
    import contextlib, json, sys
    import revlearn
    from revlearn import blas
    sys.path.insert(0, {tests!r})
    from test_threads import SPEC, fingerprint
    if {unguarded!r}:  # the negative control: revlearn's products left to the BLAS's own threads
        blas.single_threaded = contextlib.nullcontext
    case = revlearn.make_case(SPEC)
    inside = set()  # the BLAS thread counts while revlearn computes, seen from Algorithm 2
    record = lambda t, w, dw: inside.update(blas.thread_counts().values())
    out = {{b: fingerprint(revlearn.hypergradient(case, backend=b, threads=2, trace=record))
            for b in ("numpy", "numba")}}
    out.update(inside=sorted(inside), after=sorted(set(blas.thread_counts().values())),
               kernel=[lib.get("kernel") for lib in blas.describe()["blas"]])
    print(json.dumps(out))
"""


def run_script(blas_threads, unguarded=False):
    """revlearn's answers on both backends in a fresh process whose BLAS is set to blas_threads
    threads, with revlearn's guard (`blas.single_threaded`) on, or switched off."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(blas_threads),
               OMP_NUM_THREADS=str(blas_threads))
    script = textwrap.dedent(SCRIPT.format(tests=str(ROOT / "tests"), unguarded=unguarded))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


needs_blas_threads = pytest.mark.skipif(
    threads.available_cores() < 2 or not blas.controlled(),
    reason="needs two cores and a BLAS library revlearn can drive")


@pytest.fixture(scope="module")
def guarded():
    return {n: run_script(n) for n in (1, 2)}


@needs_blas_threads
@needs_numba
def test_openblas_thread_setting_does_not_change_the_answer(guarded, reference):
    one, two = guarded[1], guarded[2]
    assert one["numpy"] == one["numba"] == two["numpy"] == two["numba"] == fingerprint(reference)
    # the guard held the BLAS to one thread while revlearn computed, and gave back the setting
    assert one["inside"] == two["inside"] == [1]
    assert one["after"] == [1] and two["after"] == [2]


@needs_blas_threads
@needs_numba
def test_without_the_guard_the_blas_runs_its_own_threads_and_can_change_the_answer(guarded):
    # The negative control for the test above: switched off in a fresh process, revlearn's guard
    # no longer holds the BLAS to one thread (on every machine), and where this BLAS rounds a
    # product differently on 2 threads, revlearn's answer changes with the setting.
    one, two = run_script(1, unguarded=True), run_script(2, unguarded=True)
    assert one["inside"] == [1] and two["inside"] == [2]
    assert one["numpy"] == one["numba"] == guarded[1]["numpy"]  # one BLAS thread: nothing to hold
    if two["numpy"] == one["numpy"]:
        pytest.skip(f"this BLAS ({', '.join(map(str, two['kernel']))} kernel) gives revlearn's "
                    "products the same bits on 1 and 2 threads, so the guard cannot change the "
                    "answer here")
    assert two["numpy"] != guarded[2]["numpy"]


# --- the command line -------------------------------------------------------------------------

@needs_numba
def test_runs_with_different_threads_and_backends_write_the_same_history(tmp_path):
    from revlearn import cli
    histories = []
    for k, (backend, n) in enumerate([("numpy", 1), ("numba", 2), ("auto", 3)]):
        out = tmp_path / f"run{k}"
        argv = ["run", "schedules", "--small", "--meta-iters", "2", "--backend", backend,
                "--threads", str(n), "--out", str(out)]
        assert cli.main(argv) == 0
        histories.append((out / "history.csv").read_bytes())
    assert histories[0] == histories[1] == histories[2]


@needs_numba
def test_resume_with_another_thread_count_continues_bit_for_bit(tmp_path):
    from revlearn import cli
    whole, part = tmp_path / "whole", tmp_path / "part"
    base = ["run", "l2", "--small", "--out"]
    assert cli.main(base + [str(whole), "--meta-iters", "3", "--threads", "1"]) == 0
    assert cli.main(base + [str(part), "--meta-iters", "2", "--threads", "1",
                            "--backend", "numpy"]) == 0
    assert cli.main(["run", "--resume", str(part), "--meta-iters", "3", "--threads", "2",
                     "--backend", "numba"]) == 0
    assert (whole / "history.csv").read_bytes() == (part / "history.csv").read_bytes()


def test_resume_on_another_machine_warns(tmp_path, capsys):
    from revlearn import cli
    from revlearn.experiments import runner
    out = tmp_path / "run"
    assert cli.main(["run", "l2", "--small", "--meta-iters", "1", "--out", str(out)]) == 0
    ckpt = runner.read_checkpoint(out)
    other = dict(ckpt.provenance, blas=[{"api": "openblas", "library": "libopenblas.so",
                                         "version": "0.3.20", "kernel": "Haswell"}])
    runner.write_checkpoint(out, ckpt.options, ckpt.arrays, ckpt.records)
    data = dict(np.load(out / runner.CHECKPOINT, allow_pickle=False))
    meta = json.loads(str(data.pop("__job__")))
    meta["provenance"] = other
    np.savez(out / runner.CHECKPOINT, __job__=np.array(json.dumps(meta)), **data)
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(out), "--meta-iters", "2"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("revlearn run: warning: this machine differs") and "Haswell" in err
    assert err.count("\n") == 1
    # and no warning when nothing changed
    assert cli.main(["run", "--resume", str(out), "--meta-iters", "3"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_threads_flag_is_one_line_and_exit_2(tmp_path, capsys, value):
    from revlearn import cli
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(dict(SPEC, n_iters=2)))
    for argv in (["oracle", str(spec), "-o", str(tmp_path / "c.npz"), "--threads", value],
                 ["run", "--small", "--threads", value, "--out", str(tmp_path / "r")]):
        assert cli.main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1
        assert f"--threads {value!r}: give an integer >= 1" in err
    assert not (tmp_path / "c.npz").exists() and not (tmp_path / "r").exists()


# --- the pool and the BLAS guard ---------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, 2.0, "2", True])
def test_threads_must_be_a_positive_integer_or_none(bad, case):
    with pytest.raises(revlearn.InputError, match="threads must be a positive integer or None"):
        revlearn.hypergradient(case, threads=bad)


def test_threads_none_means_every_core_this_process_may_use():
    assert Workers(None).threads == len(os.sched_getaffinity(0)) == threads.available_cores()
    assert Workers(np.int64(3)).threads == 3


def test_map_and_fold_give_the_serial_order_on_any_number_of_threads():
    # float addition is not associative: only the item order gives the serial sum's bits
    rng = np.random.default_rng(1)
    values = rng.standard_normal(200) * 10.0 ** rng.integers(0, 17, 200)
    serial = reverse = 0.0
    for v in values:
        serial = serial + v
    for v in values[::-1]:
        reverse = reverse + v
    for n in (1, 2, 3, 8):
        w = Workers(n)
        assert w.map(lambda i: i * i, 50) == [i * i for i in range(50)]
        assert w.fold(lambda i: values[i], len(values), lambda a, b: a + b) == serial
    assert reverse != serial  # negative control: another order gives other bits


def test_an_error_in_an_item_reaches_the_caller_the_first_one_first():
    def fn(i):
        if i in (7, 30):
            raise ValueError(f"item {i}")
        return i
    for n in (1, 3):
        with pytest.raises(ValueError, match="item 7"):
            Workers(n).map(fn, 40)
    assert Workers(3).map(lambda i: i, 5) == [0, 1, 2, 3, 4]  # the pool still works


def test_items_run_on_several_threads():
    seen = set()
    barrier = threading.Barrier(2, timeout=10)

    def fn(i):
        seen.add(threading.get_ident())
        barrier.wait()  # two items at once, or this times out
        return i
    assert Workers(2).map(fn, 2) == [0, 1]
    assert len(seen) == 2


def test_blas_guard_holds_one_thread_and_gives_the_setting_back():
    if not blas.controlled():
        pytest.skip("no BLAS library revlearn can drive is loaded")
    before = blas.thread_counts()
    with blas.single_threaded():
        assert set(blas.thread_counts().values()) == {1}
        with blas.single_threaded():
            assert set(blas.thread_counts().values()) == {1}
        assert set(blas.thread_counts().values()) == {1}
    assert blas.thread_counts() == before


def test_blas_description_names_numpy_the_library_and_the_cpu():
    d = blas.describe()
    assert d["numpy"] == np.__version__ and isinstance(d["cpu_simd"], list)
    assert all({"api", "library"} <= set(lib) for lib in d["blas"])
    json.dumps(d)


@needs_numba
def test_without_the_direct_dgemm_both_backends_use_matmul_and_agree():
    # where NumPy's BLAS is not an OpenBLAS revlearn can call, every product is np.matmul and the
    # numba backend runs refimpl's MLP passes: still the same bits on each backend and thread count
    script = textwrap.dedent(f"""
        import json, sys
        import revlearn
        from revlearn import blas
        assert blas.DGEMM is None
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_threads import SPEC, fingerprint
        case = revlearn.make_case(dict(SPEC, n_iters=4))
        print(json.dumps(sorted({{fingerprint(revlearn.hypergradient(case, backend=b, threads=n))
                                  for b, n in (("numpy", 1), ("numba", 1), ("numba", 2))}})))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, REVLEARN_DGEMM="0"), timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout.strip().splitlines()[-1])) == 1


def test_mm_is_one_dgemm_with_the_transposes_asked_for():
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((6, 4)), rng.standard_normal((4, 5))
    assert np.allclose(blas.mm(A, B), A @ B, rtol=1e-14)
    assert np.allclose(blas.mm(np.ascontiguousarray(A.T), B, ta=True), A @ B, rtol=1e-14)
    assert np.allclose(blas.mm(A, np.ascontiguousarray(B.T), tb=True), A @ B, rtol=1e-14)
    with pytest.raises(ValueError, match="C-contiguous"):
        blas.mm(A.T, B[:, :4].T)
