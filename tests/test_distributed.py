"""Meta-batches and dask: K hypergradients per meta-iteration on their own draws, the step on their
mean; the same bits serially, on a LocalCluster of worker processes, on a `dask scheduler` with
`dask worker` processes, with a worker SIGKILLed mid-task, and after a killed run is resumed;
the core without dask; and the one-line errors of `revlearn run --meta-batch/--dask`.

The clusters are started once per module (a scheduler and workers take seconds to start)."""

import contextlib
import importlib.util
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import revlearn
from revlearn import distributed, meta
from revlearn.experiments import chaos, plotting, runner
from revlearn.meta import MetaConfig

from conftest import needs_numba, run, small_spec

HAVE_DASK = importlib.util.find_spec("distributed") is not None
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="needs dask: pip install 'revlearn[dask]'")
DIES = Path(__file__).with_name("dask_dies_on_first_task.py")
KEEP_COPIES = {"DASK_DISTRIBUTED__SCHEDULER__ACTIVE_MEMORY_MANAGER__START": "False"}


@pytest.fixture(autouse=True)
def no_matplotlib(monkeypatch):
    monkeypatch.setattr(plotting, "pyplot", lambda: None)


def records(folder):
    return json.loads((folder / runner.RESULTS).read_text())["records"]


HYPERPARAMETERS = ("alpha", "gamma", "init_scale")


def assert_same_run(a, b):
    """Two finished `revlearn run schedules` folders hold the same run: the records, history.csv
    and schedules.csv bit for bit, and the same final hyperparameters in results.json."""
    assert records(a) == records(b)
    for name in ("history.csv", "schedules.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    learned = [{k: json.loads((f / runner.RESULTS).read_text())["summary"][k]
                for k in HYPERPARAMETERS} for f in (a, b)]
    assert learned[0] == learned[1]


@pytest.fixture(scope="module")
def case():
    return revlearn.make_case(small_spec(l2=0.02))


def steps(case, config, n, client=None):
    """n meta-steps from init: the final state and every MetaStep."""
    state, outcomes = meta.init(case, config), []
    for _ in range(n):
        state, outcome = meta.step(case, state, config, client)
        outcomes.append(outcome)
    return state, outcomes


def assert_same_state(a, b):
    assert a.i == b.i
    for part in ("theta", "m", "s"):
        x, y = getattr(a, part), getattr(b, part)
        assert set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x), part


def differs(a, b):
    return any(not np.array_equal(a.theta[k], b.theta[k]) for k in a.theta)


# --- meta-batches, serially ----------------------------------------------------------------------

def test_a_meta_batch_of_one_is_the_plain_meta_step(case):
    config = MetaConfig(fresh_seed=True, seed=5)
    state = meta.init(case, config)
    new, outcome = meta.step(case, state, config)
    case_i = meta.case_at(case, state, config)
    rng = np.random.default_rng([5, 0])  # today's draws for a fresh seed: (seed, i)
    assert np.array_equal(case_i.eps, rng.standard_normal(case.P))
    grad = meta.chain(state, revlearn.hypergradient(case_i))
    assert_same_state(new, meta.update(state, grad, config))
    assert outcome.objectives == [outcome.result.valid_loss]


def test_a_meta_batch_steps_on_the_mean_of_its_members_in_order(case):
    K, config = 3, MetaConfig(seed=5, meta_batch=3, learn=("alpha", "init_scale"))
    state = meta.init(case, config)
    new, outcome = meta.step(case, state, config)
    members = [meta.case_at(case, state, config, k) for k in range(K)]
    for k, c in enumerate(members):  # member k draws from (seed, i, k), fresh_seed or not
        rng = np.random.default_rng([5, 0, k])
        assert np.array_equal(c.eps, rng.standard_normal(case.P))
    assert not np.array_equal(members[0].eps, members[1].eps)
    grads = [meta.chain(state, revlearn.hypergradient(c)) for c in members]
    mean = {n: ((grads[0][n] + grads[1][n]) + grads[2][n]) / K for n in grads[0]}
    assert_same_state(new, meta.update(state, mean, config))
    assert all(np.array_equal(outcome.grad[n], mean[n]) for n in mean)
    one = meta.update(state, grads[0], config)  # the control: one member alone steps elsewhere
    assert differs(new, one)
    assert outcome.grad_norms == [float(np.sqrt(sum(np.sum(x * x) for x in g.values())))
                                  for g in grads]
    assert outcome.grad_norm < np.mean(outcome.grad_norms)
    assert outcome.objectives[0] == outcome.result.valid_loss
    assert np.array_equal(outcome.case.eps, members[0].eps)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2"])
def test_a_bad_meta_batch_is_refused(bad):
    with pytest.raises(revlearn.InputError, match=f"meta_batch = {bad!r}; use an integer >= 1"):
        MetaConfig(meta_batch=bad)


@pytest.mark.parametrize("bad", [0, -2.5, float("nan"), float("inf"), True, "10"])
def test_a_bad_step_decay_is_refused(bad):
    with pytest.raises(revlearn.InputError, match="step_decay = .*; give a number of "
                       "meta-iterations > 0, or None"):
        MetaConfig(step_decay=bad)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_decaying_meta_step_divides_eta_by_one_plus_i_over_tau(case, optimizer):
    grad = {"alpha": np.linspace(-2, 3, case.alpha.size).reshape(case.alpha.shape)}
    plain = MetaConfig(learn=("alpha",), optimizer=optimizer, step_size=0.3)
    decayed = MetaConfig(learn=("alpha",), optimizer=optimizer, step_size=0.3, step_decay=4)
    state = meta.init(case, plain)
    for i in (0, 6):
        at = meta.MetaState(i, state.theta, state.m, state.s)
        a, b = meta.update(at, grad, plain), meta.update(at, grad, decayed)
        move_a, move_b = (x.theta["alpha"] - state.theta["alpha"] for x in (a, b))
        if i == 0:  # the control: the first step is the same
            assert np.array_equal(move_a, move_b)
        else:
            assert np.allclose(move_b, move_a / (1 + 6 / 4), rtol=1e-12, atol=1e-15)


def test_the_records_and_history_of_a_meta_batch_hold_its_spread(tmp_path, capsys):
    out = tmp_path / "mb"
    code, printed, err = run(["l2", "--small", "--meta-batch", "3", "--out", str(out)], capsys)
    assert code == 0, err
    assert "a meta-batch of 3 hypergradients per meta-iteration" in printed
    assert "(members " in printed
    rec = records(out)
    assert all(r["meta_objective_sd"] > 0 and r["member_grad_norm"] > r["grad_norm"] for r in rec)
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["meta_objective_sd", "member_grad_norm"]
    one = tmp_path / "one"  # the control: K = 1 records no spread, as before meta-batches
    assert run(["l2", "--small", "--out", str(one)]) == 0
    assert "member_grad_norm" not in records(one)[0]
    assert "member" not in (one / "history.csv").read_text()


def test_a_format_2_checkpoint_resumes_as_a_meta_batch_of_one(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run(["data", "--small", "--meta-iters", "3", "--out", str(whole)]) == 0
    assert run(["data", "--small", "--meta-iters", "2", "--out", str(part)]) == 0
    with np.load(part / runner.CHECKPOINT, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    job = json.loads(str(arrays.pop("__job__")))
    job["format"] = 2
    del job["options"]["meta_batch"], job["options"]["meta_step_decay"]
    np.savez(part / runner.CHECKPOINT, __job__=np.array(json.dumps(job)), **arrays)
    assert run(["--resume", str(part), "--meta-iters", "3"]) == 0
    assert records(part) == records(whole)


def test_a_meta_batch_run_killed_mid_way_resumes_bit_for_bit(tmp_path):
    out, whole = tmp_path / "killed", tmp_path / "whole"
    argv = ["schedules", "--small", "--meta-batch", "2", "--meta-iters", "6",
            "--meta-step-decay", "3"]
    proc = subprocess.Popen([sys.executable, "-m", "revlearn", "run", *argv, "--out", str(out)],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ,
                                                                        MPLBACKEND="Agg"))
    printed = 0
    for line in proc.stdout:
        printed += line.startswith("meta-iteration")
        if printed == 2:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert run(["--resume", str(out)]) == 0
    assert run([*argv, "--out", str(whole)]) == 0
    assert_same_run(out, whole)


# --- the core without dask -----------------------------------------------------------------------

def test_the_core_imports_and_runs_a_meta_batch_without_dask(tmp_path):
    code = """
import sys
sys.modules["dask"] = sys.modules["distributed"] = None  # as if not installed: imports fail
import revlearn, revlearn.distributed, revlearn.meta, revlearn.experiments
from revlearn import cli
assert cli.main(["run", "l2", "--small", "--meta-batch", "2", "--meta-iters", "1",
                 "--out", sys.argv[1]]) == 0
case = revlearn.make_case(dict(layer_sizes=[3, 2], n_iters=2, batch_size=5, alpha=0.1,
                               gamma=0.9, init_scale=0.1))
try:
    revlearn.distributed.hypergradients([case], client=object())
except revlearn.InputError as e:
    assert "dask.distributed is not installed" in str(e), e
else:
    sys.exit("a client without dask was not refused")
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")],
                          capture_output=True, text=True, env=dict(os.environ, MPLBACKEND="Agg"))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / runner.RESULTS).read_text())["complete"]


def test_dask_flag_without_dask_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    out = tmp_path / "never"
    code, printed, err = run(["--small", "--meta-batch", "2", "--dask", "--out", str(out)],
                             capsys)
    assert code == 2 and printed == "" and err.count("\n") == 1
    assert err.startswith("revlearn run: error: --dask needs dask.distributed, which is not "
                          "installed: `pip install 'revlearn[dask]'`")
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--meta-batch", "0"], "--meta-batch '0': give an integer >= 1 and <= 10,000"),
    (["--meta-batch", "eight"], "--meta-batch 'eight': give an integer >= 1"),
    (["--meta-batch", "10001"], "--meta-batch '10001': give an integer >= 1 and <= 10,000"),
    (["chaos", "--meta-batch", "2"], "--meta-batch: the chaos sweep has no meta-iterations"),
    (["--meta-step-decay", "0"], "--meta-step-decay '0': give a number of meta-iterations > 0"),
    (["--meta-step-decay", "inf"], "--meta-step-decay 'inf': give a number"),
    (["--meta-step-decay", "soon"], "--meta-step-decay 'soon': give a number"),
    (["chaos", "--meta-step-decay", "5"], "--meta-step-decay: the chaos sweep takes no"),
    (["--dask", "schedules"], "--dask 'schedules': give a scheduler address such as "
     "tcp://HOST:PORT, or no value for a local cluster (to run schedules on a local cluster, "
     "write --dask after the name)"),
    (["--dask", "my laptop"], "--dask 'my laptop': give a scheduler address"),
])
def test_bad_meta_batch_and_dask_flags_give_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    code, printed, err = run([*argv, "--out", str(out)], capsys)
    assert code == 2 and printed == "" and err.count("\n") == 1
    assert err.startswith("revlearn run: error: ") and message in err, err
    assert not out.exists()


def test_the_meta_batch_and_decay_cannot_change_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["data", "--small", "--meta-iters", "1", "--out", str(out)]) == 0
    code, _, err = run(["--resume", str(out), "--meta-batch", "2"], capsys)
    assert code == 2 and "--meta-batch cannot change on --resume" in err
    code, _, err = run(["--resume", str(out), "--meta-step-decay", "9"], capsys)
    assert code == 2 and "--meta-step-decay cannot change on --resume" in err


def test_hypergradients_refuses_what_is_not_a_case_or_a_client(case):
    with pytest.raises(revlearn.InputError, match=r"hypergradients \(cases\[1\]\)"):
        distributed.hypergradients([case, {"layer_sizes": [3, 2]}])
    if HAVE_DASK:
        with pytest.raises(revlearn.InputError, match="a dask.distributed Client or None; "
                           "received dict"):
            distributed.hypergradients([case], client={})
        with pytest.raises(revlearn.InputError, match="received list"):
            distributed.hypergradients([], client=[])


# --- a LocalCluster of worker processes ----------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    if not HAVE_DASK:
        pytest.skip("needs dask: pip install 'revlearn[dask]'")
    with distributed.local_client(2) as c:
        yield c


@needs_dask
def test_a_meta_batch_on_a_local_cluster_is_the_serial_one_bit_for_bit(case, client):
    config = MetaConfig(meta_batch=3, learn=("alpha", "gamma", "init_scale", "l2"))
    serial, by_hand = steps(case, config, 2)
    on_cluster, remote = steps(case, config, 2, client)
    assert_same_state(serial, on_cluster)
    for a, b in zip(by_hand, remote, strict=True):
        assert a.objectives == b.objectives and a.grad_norms == b.grad_norms
        assert np.array_equal(a.result.w_final, b.result.w_final)
        assert np.array_equal(a.result.d_alpha, b.result.d_alpha)
    other, _ = steps(case, MetaConfig(meta_batch=3, seed=1, learn=config.learn), 2, client)
    assert differs(serial, other)  # the control: other draws give other bits


@needs_dask
def test_hypergradients_on_a_cluster_come_back_in_order_with_the_same_bits(case, client):
    cases = [case.replace(alpha=case.alpha * s) for s in (0.5, 1.0, 1.5)] + [
        revlearn.make_case(small_spec(seed=9))]
    serial = distributed.hypergradients(cases)
    remote = distributed.hypergradients(cases, client)
    for a, b in zip(serial, remote, strict=True):
        for field in ("w_final", "d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert a.valid_loss == b.valid_loss and b.exact_recovery
    assert serial[0].valid_loss != serial[2].valid_loss  # the control: order matters
    assert distributed.hypergradients([], client) == []


@needs_dask
def test_the_base_case_is_shipped_once_to_every_worker(case, client):
    first = distributed.ship(case, client)
    assert distributed.ship(case, client) is first
    holders = client.who_has(first)[first.key]
    assert len(holders) == len(client.scheduler_info()["workers"]) == 2
    # and stays there: dask's active memory manager would keep one copy once no task waits
    assert not client.amm.running() and distributed.check_scheduler(client) is None
    assert distributed.ship(case.replace(), client) is not first  # another base, another copy


@needs_dask
def test_the_local_workers_run_without_dasks_malloc_trim_threshold(client):
    assert distributed.check_allocator(client) is None
    assert set(client.run(distributed._trim_threshold).values()) == {None}


class Trimmed:
    """A client whose one worker of two runs with dask's MALLOC_TRIM_THRESHOLD_."""
    def run(self, fn):
        return {"tcp://a:1": "65536", "tcp://b:1": None}


def test_workers_with_a_malloc_trim_threshold_are_named():
    warning = distributed.check_allocator(Trimmed())
    assert warning.startswith("1 worker(s) (tcp://a:1) run with MALLOC_TRIM_THRESHOLD_ set")
    assert "\n" not in warning


@needs_dask
def test_a_scheduler_that_would_drop_the_copies_is_named(client):
    client.amm.start()
    try:
        warning = distributed.check_scheduler(client)
    finally:
        client.amm.stop()
    assert "ACTIVE_MEMORY_MANAGER__START=False" in warning and "\n" not in warning


@needs_dask
def test_the_chaos_sweep_maps_its_points_on_a_cluster(client):
    options = {"preset": "chaos", "seed": 0, "backend": "auto", "threads": None, "paper": False,
               "small": True, "mnist_dir": None, "meta_iters": 4, "meta_batch": 1,
               "meta_step_decay": None}
    serial, mapped = chaos.Job(options), chaos.Job(options)
    expect = [serial.step(i)[1] for i in range(4)]
    got = [mapped.step(i, client)[1] for i in (0, 1)]
    got += [mapped.step(i, client)[1] for i in (3,)]  # a jump (as on resume) maps afresh
    assert json.dumps(got) == json.dumps([expect[0], expect[1], expect[3]])


@needs_dask
@needs_numba
def test_workers_compile_the_kernels_once_not_per_task(case, client):
    def compiled():
        from revlearn.kernels import jit
        return sum(len(k.signatures) for k in jit.KERNELS)

    config = MetaConfig(meta_batch=4)
    steps(case, config, 1, client)
    before = client.run(compiled)
    steps(case, config, 2, client)
    assert client.run(compiled) == before and all(n > 0 for n in before.values())


# --- `dask scheduler` and `dask worker` processes ------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dask_command(what):
    exe = Path(sys.executable).with_name("dask")
    return [str(exe), what] if exe.exists() else [sys.executable, "-m", f"distributed.cli.dask_"
                                                  f"{what}"]


def start_worker(address, log, *extra):
    return subprocess.Popen([*dask_command("worker"), address, "--nthreads", "1", "--no-nanny",
                             "--no-dashboard", *extra], stdout=log, stderr=log)


def wait_for_workers(address, n):
    from distributed import Client
    with Client(address, timeout=30) as c:
        c.wait_for_workers(n, timeout=60)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1: the address."""
    if not HAVE_DASK:
        pytest.skip("needs dask: pip install 'revlearn[dask]'")
    log = open(tmp_path_factory.mktemp("dask") / "dask.log", "w")  # noqa: SIM115
    address = f"tcp://127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([*dask_command("scheduler"), "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--no-dashboard"], stdout=log,
                              stderr=log, env=dict(os.environ, **KEEP_COPIES))]
    try:
        procs += [start_worker(address, log) for _ in range(2)]
        wait_for_workers(address, 2)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


@pytest.fixture(scope="module")
def serial_runs(tmp_path_factory):
    """`revlearn run --small --meta-batch K` without dask, for K = 2 and 3: the folders."""
    base = tmp_path_factory.mktemp("serial")
    for K in ("2", "3"):
        assert run(["--small", "--meta-batch", K, "--out", str(base / K)]) == 0
    return base


def test_the_comparison_of_runs_tells_two_runs_apart(serial_runs):
    # the control for the comparisons below: K = 2 and K = 3 differ in their files
    assert_same_run(serial_runs / "2", serial_runs / "2")
    with pytest.raises(AssertionError):
        assert_same_run(serial_runs / "2", serial_runs / "3")


@needs_dask
def test_a_dask_scheduler_and_two_workers_give_the_serial_numbers(scheduler, serial_runs,
                                                                  tmp_path):
    # the command itself, as a user runs it, in its own process
    out = tmp_path / "remote"
    done = subprocess.run([sys.executable, "-m", "revlearn", "run", "schedules", "--small",
                           "--meta-batch", "2", "--dask", scheduler, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"dask: {scheduler}, 2 workers, one thread each" in done.stdout
    assert_same_run(out, serial_runs / "2")


@needs_dask
def test_a_worker_killed_mid_task_leaves_the_serial_numbers(scheduler, serial_runs, tmp_path,
                                                            capsys):
    log = open(tmp_path / "doomed.log", "w")  # noqa: SIM115
    doomed = start_worker(scheduler, log, "--preload", str(DIES))
    try:
        wait_for_workers(scheduler, 3)
        out = tmp_path / "remote"
        code, _, err = run(["--small", "--meta-batch", "3", "--dask", scheduler, "--out",
                            str(out)], capsys)
        assert code == 0, err
        assert doomed.wait(timeout=30) == -signal.SIGKILL  # it died inside a task of the run
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
        log.close()
    assert_same_run(out, serial_runs / "3")


@needs_dask
def test_the_advice_for_trimmed_workers_gives_a_worker_without_it(scheduler, tmp_path):
    from distributed import Client
    advice = distributed.check_allocator(Trimmed()).split("start them with ")[1]
    name, value = shlex.split(advice)[0].split("=", 1)
    env = {k: v for k, v in os.environ.items() if k != distributed.TRIM}
    with open(tmp_path / "advised.log", "w") as log:
        worker = subprocess.Popen([*dask_command("worker"), scheduler, "--nthreads", "1",
                                   "--no-dashboard", "--name", "advised"],  # with a nanny
                                  env={**env, name: value}, stdout=log, stderr=log)
        try:
            wait_for_workers(scheduler, 3)
            with Client(scheduler) as c:
                advised = [a for a, w in c.scheduler_info(n_workers=-1)["workers"].items()
                           if w["name"] == "advised"]
                assert c.run(distributed._trim_threshold, workers=advised) == {advised[0]: None}
        finally:
            worker.terminate()
            worker.wait(timeout=30)


@needs_dask
def test_an_unreachable_scheduler_is_one_line_before_any_write(tmp_path, capsys):
    import dask
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    out = tmp_path / "never"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        start = time.perf_counter()
        code, printed, err = run(["--small", "--meta-batch", "2", "--dask", address, "--out",
                                  str(out)], capsys)
    assert code == 2 and printed == "" and err.count("\n") == 1, err
    assert err.startswith(f"revlearn run: error: no dask scheduler answers at {address} "), err
    assert "`dask scheduler`" in err
    assert not out.exists() and time.perf_counter() - start < 20


@contextlib.contextmanager
def port_taken(port):
    """The port held meanwhile (unless another process holds it already), as by another cluster."""
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            s.listen()
        except OSError:
            pass
        yield


@needs_dask
def test_ctrl_c_stops_a_local_cluster_run_cleanly_and_it_resumes(tmp_path):
    out = tmp_path / "run"
    with port_taken(8787):  # dask's default HTTP port: a warning on stderr if it were used
        proc = subprocess.Popen([sys.executable, "-m", "revlearn", "run", "--small", "--meta-batch",
                             "2", "--meta-iters", "400", "--dask", "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=dict(os.environ, MPLBACKEND="Agg"))
        printed = 0
        for line in proc.stdout:
            printed += line.startswith("meta-iteration")
            if printed == 2:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
                break
        rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == ""  # nothing on stderr: no KeyboardInterrupt, no
    # worker's traceback, no warning about a port
    assert f"Continue with: revlearn run --resume {out}" in rest
    deadline = time.monotonic() + 10
    while live_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not live_in_group(proc.pid)  # the worker processes closed with the client
    done = json.loads((out / runner.RESULTS).read_text())["steps_done"]
    assert run(["--resume", str(out), "--meta-iters", str(done + 1)]) == 0
    assert records(out)[-1]["i"] == done


def live_in_group(pgid):
    """The processes of group pgid that are not zombies."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(d.name)
    return found


def test_a_task_carries_only_what_its_case_changes(case):
    assert set(distributed._differences(case, case.replace(alpha=case.alpha * 2))) == {"alpha"}
    assert distributed._differences(case, case.replace()) == {}
    other = revlearn.make_case(small_spec(l2=0.02, seed=4))  # the control: other data
    assert {"X_train", "y_train", "eps"} <= set(distributed._differences(case, other))


def test_the_cancel_race_of_ctrl_c_is_dropped_from_the_log_and_nothing_else():
    # dask's sync() may schedule the cancel of a future it has not made yet when Ctrl-C comes
    # early; tornado then logs a NameError with its traceback (seen once on a loaded machine)
    def record(message, error):
        try:
            raise error
        except type(error):
            return logging.LogRecord("tornado.application", logging.ERROR, __file__, 1, message,
                                     None, sys.exc_info())
    race = distributed.CancelRace()
    name_error = NameError("cannot access free variable 'future'")
    callback = "Exception in callback functools.partial(<function sync.<locals>.cancel at 0x7f>)"
    assert not race.filter(record(callback, name_error))
    assert race.filter(record(callback, ValueError("another failure")))  # the controls
    assert race.filter(record("Exception in callback other", name_error))
