"""`revlearn run`: every preset end to end in its --small version, checkpoints and resumption bit
for bit (after Ctrl-C and after a real SIGKILL), the no-matplotlib path, and bad input."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from revlearn import blas, meta
from revlearn.experiments import PRESETS, common, plotting, runner

from conftest import needs_numba, run

META_PRESETS = [n for n in PRESETS if n != "chaos"]


def results(folder):
    return json.loads((folder / runner.RESULTS).read_text())


def checkpoint(folder):
    with np.load(folder / runner.CHECKPOINT, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setattr(plotting, "pyplot", lambda: None)


@pytest.mark.parametrize("name", META_PRESETS)
def test_each_meta_preset_runs_end_to_end_and_its_objective_goes_down(name, tmp_path, capsys,
                                                                      no_matplotlib):
    out = tmp_path / name
    code, printed, err = run([name, "--small", "--out", str(out)], capsys)
    assert code == 0, err
    doc = results(out)
    assert doc["complete"] and doc["preset"] == name and doc["steps_done"] >= 3
    objective = [r["meta_objective"] for r in doc["records"]]
    assert objective[-1] < objective[0], objective
    for f in doc["files"]:
        assert os.path.getsize(f) > 0, f
    assert not list(out.glob("*.png"))
    assert "pip install 'revlearn[plot]'" in printed
    assert printed.count("meta-iteration ") >= doc["steps_done"]


def test_chaos_preset_records_loss_and_hypergradient_per_step_size(tmp_path, no_matplotlib):
    out = tmp_path / "chaos"
    assert run(["chaos", "--small", "--out", str(out)]) == 0
    doc = results(out)
    recs = doc["records"]
    assert len(recs) == doc["options"]["meta_iters"] == 4
    assert [r["log_alpha"] for r in recs] == sorted(r["log_alpha"] for r in recs)
    T = doc["summary"]["horizons"][0]
    # at the smallest step size training is stable: a finite loss and hypergradient
    assert np.isfinite(recs[0][f"valid_loss_T{T}"]) and np.isfinite(recs[0][f"dlog_alpha_T{T}"])
    assert (out / "chaos.csv").read_text().count("\n") == 5


def test_figures_are_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib", reason="the figures need the optional extra 'plot'")
    out = tmp_path / "s"
    assert run(["schedules", "--small", "--out", str(out)]) == 0
    for name in ("schedules.png", "learning_curves.png", "init_scales.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path, no_matplotlib):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run(["schedules", "--small", "--meta-iters", "4", "--out", str(whole)]) == 0
    assert run(["schedules", "--small", "--meta-iters", "2", "--out", str(part)]) == 0
    assert results(part)["steps_done"] == 2
    assert run(["--resume", str(part), "--meta-iters", "4"]) == 0
    assert results(part)["records"] == results(whole)["records"]
    a, b = checkpoint(whole), checkpoint(part)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path, monkeypatch, capsys, no_matplotlib):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run(["l2", "--small", "--out", str(whole)]) == 0
    real_step, calls = meta.step, []

    def interrupted_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(meta, "step", interrupted_on_third)
    code, printed, _ = run(["l2", "--small", "--out", str(cut)], capsys)
    assert code == 130
    assert "interrupted after 2 of 4" in printed and f"--resume {cut}" in printed
    doc = results(cut)
    assert not doc["complete"] and doc["steps_done"] == 2
    monkeypatch.setattr(meta, "step", real_step)
    assert run(["--resume", str(cut)]) == 0
    assert results(cut)["records"] == results(whole)["records"]
    assert not list(cut.glob(".*.tmp"))


def test_sigkill_mid_run_loses_at_most_one_meta_iteration(tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.Popen([sys.executable, "-m", "revlearn", "run", "schedules", "--small",
                             "--meta-iters", "40", "--out", str(out)], stdout=subprocess.PIPE,
                            text=True, env=env)
    printed = 0
    for line in proc.stdout:
        printed += line.startswith("meta-iteration")
        if printed == 3:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    done = int(checkpoint(out)["i"])
    assert 3 <= done <= 4  # every printed meta-iteration was saved; at most the one running is lost
    assert run(["--resume", str(out), "--meta-iters", str(done + 2)]) == 0
    whole = tmp_path / "whole"
    assert run(["schedules", "--small", "--meta-iters", str(done + 2), "--out", str(whole)]) == 0
    assert results(out)["records"] == results(whole)["records"]


@pytest.mark.parametrize("argv, message", [
    (["nonsense"], "unknown experiment 'nonsense'; use one of schedules"),
    (["--meta-iters", "0"], "--meta-iters '0': give an integer >= 1"),
    (["--meta-iters", "many"], "--meta-iters 'many'"),
    (["--seed", "-3"], "--seed '-3': give an integer >= 0"),
    (["--backend", "cuda"], "--backend 'cuda': use one of auto, numpy, numba"),
    (["--threads", "0"], "--threads '0': give an integer >= 1"),
    (["--threads", "two"], "--threads 'two': give an integer >= 1"),
    (["--paper", "--small"], "contradict"),
    (["--resume", "/nonexistent/run"], "--resume /nonexistent/run: no such folder"),
    (["--mnist", "/nonexistent/mnist"], "--mnist /nonexistent/mnist: no such folder"),
    (["--optimizer", "sgd"], "--optimizer 'sgd': use one of momentum, adam"),
    (["l2", "--optimizer", "adam"], "--optimizer adam: only the schedules experiment trains with"),
    (["--fresh-draws", "-1"], "--fresh-draws '-1': give an integer >= 0"),
    (["--fresh-draws", "abc"], "--fresh-draws 'abc': give an integer >= 0"),
    (["chaos", "--fresh-draws", "3"], "--fresh-draws: the chaos experiment is not scored on"),
    (["--knots", "0"], "--knots '0': give an integer >= 1"),
    (["--knots", "four"], "--knots 'four': give an integer >= 1"),
    (["--knots", "101"], "knots = 101; a schedule of T = 100 steps takes at most 100 knots"),
    (["l2", "--knots", "4"], "--knots: only the schedules experiment learns schedules"),
    (["data", "--one-draw"], "--one-draw: only the schedules experiment learns schedules"),
    (["--one-draw", "--paper"], "--one-draw and --paper contradict each other"),
])
def test_bad_flags_give_one_line_and_exit_2_before_writing(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    code, printed, err = run([*argv, "--out", str(out)] if "--resume" not in argv else argv,
                             capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("revlearn run: error: ") and message in err
    assert printed == "" and not out.exists()


def test_missing_data_and_reused_folders_are_refused(tmp_path, capsys, no_matplotlib):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["--mnist", str(empty), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "MNIST file train-images-idx3-ubyte[.gz] is missing" in err
    assert err.count("\n") == 1 and not (tmp_path / "x").exists()
    code, _, err = run(["--resume", str(empty)], capsys)
    assert code == 2 and "holds no checkpoint.npz" in err
    out = tmp_path / "done"
    assert run(["data", "--small", "--out", str(out)]) == 0
    code, _, err = run(["data", "--small", "--out", str(out)], capsys)
    assert code == 2 and f"--resume {out}" in err
    code, _, err = run(["chaos", "--resume", str(out)], capsys)
    assert code == 2 and "holds a 'data' run" in err
    code, _, err = run(["--resume", str(out), "--seed", "4"], capsys)
    assert code == 2 and "--seed cannot change on --resume" in err


@needs_numba
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_numba_backend_gives_the_same_run_bit_for_bit(name, tmp_path, no_matplotlib):
    for backend in ("numpy", "numba"):
        assert run([name, "--small", "--backend", backend, "--out", str(tmp_path / backend)]) == 0
    assert results(tmp_path / "numba")["records"] == results(tmp_path / "numpy")["records"]


# --- --out, the closing line, and checkpoints that are valid zips but not revlearn's -------------

def test_out_never_overwrites_a_folder_revlearn_did_not_write(tmp_path, capsys, no_matplotlib):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    (mine / "results.json").write_text("{}")
    code, printed, err = run(["l2", "--small", "--out", str(mine)], capsys)
    assert code == 2 and printed == "" and err.count("\n") == 1
    assert f"--out {mine} is a folder that already holds files (chapter1.tex, results.json) and " \
           "no revlearn run; give a new or empty folder" in err
    assert sorted(p.name for p in mine.iterdir()) == ["chapter1.tex", "results.json"]
    assert (mine / "results.json").read_text() == "{}"
    empty = tmp_path / "empty"
    empty.mkdir()  # the control: an empty folder is fine
    assert run(["l2", "--small", "--out", str(empty)]) == 0


def test_the_closing_line_counts_the_steps_this_invocation_ran(tmp_path, capsys, no_matplotlib):
    out = tmp_path / "run"
    code, printed, _ = run(["l2", "--small", "--meta-iters", "2", "--out", str(out)], capsys)
    assert code == 0
    assert re.search(r"\n2 meta-iterations in [\d.]+ s this session\. Files:", printed)
    code, printed, _ = run(["--resume", str(out), "--meta-iters", "3"], capsys)
    assert code == 0
    assert re.search(r"\n1 meta-iteration in [\d.]+ s this session \(3 in all\)\. Files:", printed)
    code, printed, _ = run(["--resume", str(out)], capsys)  # finished: only re-plotted
    assert code == 0
    assert re.search(r"\n0 meta-iterations in [\d.]+ s this session \(3 in all\)\. Files:", printed)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "l2"
    real = plotting.pyplot
    plotting.pyplot = lambda: None
    try:
        assert run(["l2", "--small", "--out", str(out)]) == 0
    finally:
        plotting.pyplot = real
    return out


def rewrite_checkpoint(folder, meta_changes=None, array_changes=None, job=None):
    arrays = checkpoint(folder)
    meta = json.loads(str(arrays.pop("__job__")))
    for key, value in (meta_changes or {}).items():
        path = key.split(".")
        target = meta
        for p in path[:-1]:
            target = target[p]
        if value is None:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    arrays.update(array_changes or {})
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if job is not False:
        arrays["__job__"] = np.array(job if job is not None else json.dumps(meta))
    np.savez(folder / runner.CHECKPOINT, **arrays)


@pytest.mark.parametrize("change, message", [
    (dict(job=False), "lacks the run's description"),
    (dict(job="{not json"), "the run's description is not valid JSON"),
    (dict(job="[1, 2]"), "checkpoint format None is not one of 2, 3, 4"),
    (dict(meta_changes={"format": 1}), "checkpoint format 1 is not one of 2, 3, 4; it was written"),
    (dict(meta_changes={"options.meta_batch": 0}), "option meta_batch is 0, not a valid value"),
    (dict(meta_changes={"options.meta_step_decay": -1.0}),
     "option meta_step_decay is -1.0, not a valid value"),
    (dict(meta_changes={"options.meta_step_decay": "slow"}),
     "option meta_step_decay is 'slow', not a valid value"),
    (dict(meta_changes={"options.seed": None}), "the run's options are not preset, seed"),
    (dict(meta_changes={"options.seed": "zero"}), "option seed is 'zero', not a valid value"),
    (dict(meta_changes={"options.small": 1}), "option small is 1, not a valid value"),
    (dict(meta_changes={"options.meta_iters": 0, "records": []}),
     "option meta_iters is 0, not a valid value"),
    (dict(meta_changes={"options.preset": "cifar"}), "names preset 'cifar'; this revlearn knows"),
    (dict(meta_changes={"options.backend": "cuda"}), "names backend 'cuda'"),
    (dict(meta_changes={"options.optimizer": "rmsprop"}), "names optimizer 'rmsprop'"),
    (dict(meta_changes={"options.optimizer": 3}), "option optimizer is 3, not a valid value"),
    (dict(meta_changes={"options.meta_iters": 10**12}), "asks for 1000000000000 meta-iterations"),
    (dict(meta_changes={"records": {"i": 0}}), "the run's records are not a list"),
    (dict(meta_changes={"records": [{"i": 1}]}), "record 0 is not the record of step 0"),
    (dict(array_changes={"i": np.array(7)}), "its state is at step 7 but it holds 4 records"),
    (dict(array_changes={"theta/l2": np.zeros(3)}), r"theta/l2 is a float64 array of shape \(3,\)"),
    (dict(array_changes={"m/l2": None}), "its arrays .* are not those of this run's state"),
    (dict(array_changes={"extra": np.zeros(2)}), "its arrays .* are not those of this run's state"),
])
def test_a_checkpoint_that_is_not_a_runs_own_is_refused(tmp_path, capsys, finished_run, change,
                                                         message, no_matplotlib):
    folder = tmp_path / "copy"
    shutil.copytree(finished_run, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    rewrite_checkpoint(folder, **change)
    before[runner.CHECKPOINT] = (folder / runner.CHECKPOINT).read_bytes()
    code, printed, err = run(["--resume", str(folder)], capsys)
    assert code == 2 and printed == "" and err.count("\n") == 1, err
    assert err.startswith(f"revlearn run: error: --resume {folder}") and re.search(message, err)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written


def test_the_checkpoint_rewriter_keeps_a_good_checkpoint_good(tmp_path, finished_run,
                                                              no_matplotlib):
    """The control for the test above: rewritten without changes, the checkpoint resumes."""
    folder = tmp_path / "copy"
    shutil.copytree(finished_run, folder)
    rewrite_checkpoint(folder)
    assert run(["--resume", str(folder)]) == 0


def test_records_that_lack_a_field_are_refused(tmp_path, capsys, finished_run, no_matplotlib):
    folder = tmp_path / "copy"
    shutil.copytree(finished_run, folder)
    records = json.loads(str(checkpoint(folder)["__job__"]))["records"]
    rewrite_checkpoint(folder, {"records": [{"i": r["i"]} for r in records]})
    code, _, err = run(["--resume", str(folder)], capsys)
    assert code == 2 and "its records lack the field" in err and err.count("\n") == 1


def test_too_many_meta_iterations_are_refused(capsys, tmp_path):
    code, _, err = run(["--meta-iters", "1000001", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--meta-iters '1000001': give an integer >= 1 and <= 1,000,000" in err


def test_schedules_with_adam_learns_alpha_and_both_betas_and_resumes_bit_for_bit(tmp_path, capsys,
                                                                               no_matplotlib):
    whole, part = tmp_path / "whole", tmp_path / "part"
    code, printed, _ = run(["schedules", "--small", "--optimizer", "adam", "--out", str(whole)],
                           capsys)
    assert code == 0 and ("trained with Adam; learning 200 hyperparameters (alpha, beta1, beta2 "
                          "on 8 knots per group") in printed
    doc = results(whole)
    assert doc["options"]["optimizer"] == "adam" and doc["summary"]["optimizer"] == "adam"
    objective = [r["meta_objective"] for r in doc["records"]]
    assert objective[-1] < objective[0], objective
    beta1, beta2 = np.array(doc["summary"]["beta1"]), np.array(doc["summary"]["beta2"])
    assert beta1.shape == beta2.shape == (12, 8) and np.all(beta1 * 2**16 % 1 == 0)
    assert np.any(beta1 != 58982 / 2**16) and np.any(beta2 != 65470 / 2**16)  # both learned
    header = (whole / "schedules.csv").read_text().splitlines()[0].split(",")
    assert header[1] == "alpha_W1" and header[9] == "beta1_W1" and header[17] == "beta2_W1"
    assert set(checkpoint(whole)) >= {"theta/beta1", "theta/beta2", "m/beta2"}
    assert run(["schedules", "--small", "--optimizer", "adam", "--meta-iters", "2", "--out",
                str(part)]) == 0
    code, _, err = run(["--resume", str(part), "--optimizer", "adam"], capsys)
    assert code == 2 and "--optimizer cannot change on --resume" in err
    assert run(["--resume", str(part), "--meta-iters", "4"]) == 0
    assert results(part)["records"] == results(whole)["records"]


def test_a_checkpoint_written_before_adam_resumes_as_momentum(tmp_path, finished_run,
                                                               no_matplotlib):
    folder = tmp_path / "copy"
    shutil.copytree(finished_run, folder)
    rewrite_checkpoint(folder, {"options.optimizer": None})
    assert "optimizer" not in json.loads(str(checkpoint(folder)["__job__"]))["options"]
    assert run(["--resume", str(folder)]) == 0
    assert results(folder)["options"]["optimizer"] == "momentum"


def test_the_evaluation_holds_the_blas_to_one_thread(monkeypatch):
    """common.losses (the records' losses, the Optuna baseline's objective) runs the BLAS on one
    thread: with its own threads on top of revlearn's it took 15x as long on two cores."""
    threadpoolctl = pytest.importorskip("threadpoolctl")  # to let the BLAS use two threads
    if not blas.controlled():
        pytest.skip("the BLAS thread count cannot be seen here")
    seen = []

    class Spy:
        def loss_and_error(self, *args):
            seen.append(blas.thread_counts())
            return 0.0, 0.0

    monkeypatch.setattr(common, "get_backend", lambda name: Spy())
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # free to use two, as by default
        common.losses(type("C", (), {"layout": None, "activation": "tanh"})(), None, None, None)
    assert seen and set(seen[0].values()) == {1}


# --- tuning for fresh draws (the schedules preset's default) ------------------------------------

def test_the_default_draws_afresh_every_meta_iteration_and_scores_on_draws_none_used(
        tmp_path, capsys, no_matplotlib):
    out = tmp_path / "run"
    code, printed, _ = run(["--small", "--out", str(out)], capsys)
    assert code == 0 and "on 8 knots per group" in printed and "a fresh draw" in printed
    assert "test loss on 5 fresh draws" in printed
    doc = results(out)
    fresh = doc["summary"]["fresh_draws"]
    assert fresh["draws"] == 5 and len(fresh["initial"]) == len(fresh["learned"]) == 5
    assert np.mean(fresh["learned"]) < np.mean(fresh["initial"])
    # the draws that score the run are none of those that tuned it, nor the fixed draw
    job = PRESETS["schedules"].Job(doc["options"])
    config, base = job.config, job.case
    assert config.fresh_seed and config.knots == 8
    state = meta.init(base, config)
    tuned = [meta.case_at(base, meta.MetaState(i, state.theta, state.m, state.s), config).eps
             for i in range(doc["options"]["meta_iters"] + 1)] + [base.eps]
    scored = [meta.draw(base, [config.seed, common.FRESH_STREAM, d])["eps"] for d in range(5)]
    assert len({e.tobytes() for e in tuned + scored}) == len(tuned) + len(scored)
    # the scores are the learned hyperparameters trained on exactly those draws
    learned = job.fresh_draw_losses(meta.case_at(base, job.state_from_arrays(checkpoint(out)),
                                                 config))
    assert learned == fresh["learned"]


def test_fresh_draws_zero_skips_the_scoring_and_one_draw_is_the_old_protocol(tmp_path, capsys,
                                                                             no_matplotlib):
    out = tmp_path / "one"
    code, printed, _ = run(["--small", "--one-draw", "--knots", "12", "--fresh-draws", "0",
                            "--out", str(out)], capsys)
    assert code == 0 and "fresh draws" not in printed.split("writing to")[1]
    assert "(alpha, gamma per step and group, init scales)" in printed
    assert "one fixed draw of initial noise and batches" in printed
    doc = results(out)
    assert doc["summary"]["fresh_draws"] == {}
    job = PRESETS["schedules"].Job(doc["options"])
    assert not job.config.fresh_seed and job.config.knots is None


def test_the_new_default_resumes_bit_for_bit(tmp_path, no_matplotlib):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run(["--small", "--meta-iters", "5", "--out", str(whole)]) == 0
    assert run(["--small", "--meta-iters", "2", "--out", str(part)]) == 0
    assert run(["--resume", str(part), "--meta-iters", "5"]) == 0
    assert results(part)["records"] == results(whole)["records"]
    assert results(part)["summary"] == results(whole)["summary"]
    for name in ("history.csv", "schedules.csv"):
        assert (part / name).read_bytes() == (whole / name).read_bytes()


def test_a_format_3_schedules_checkpoint_resumes_as_its_protocol(tmp_path, no_matplotlib):
    # before fresh draws and knots, a schedules run tuned on one draw, per step: so it resumes
    whole, part = tmp_path / "whole", tmp_path / "part"
    old = ["--small", "--one-draw", "--knots", "12"]
    assert run([*old, "--meta-iters", "3", "--out", str(whole)]) == 0
    assert run([*old, "--meta-iters", "2", "--out", str(part)]) == 0
    rewrite_checkpoint(part, {"format": 3, "options.draws": None, "options.knots": None,
                              "options.fresh_draws": None})
    assert run(["--resume", str(part), "--meta-iters", "3"]) == 0
    assert results(part)["records"] == results(whole)["records"]
    assert results(part)["options"]["draws"] == "one"


def test_a_longer_run_passes_through_the_shorter_runs_hyperparameters(tmp_path, no_matplotlib):
    # what bench.value relies on: nothing in a run depends on how long it will be, so a run of
    # 2 x n meta-iterations holds, after n, the hyperparameters a run of n ends with
    from bench.value import revlearn_budgets
    out = tmp_path / "short"
    assert run(["--small", "--out", str(out)]) == 0
    options = results(out)["options"]
    budgets = revlearn_budgets(PRESETS["schedules"].Job(options), [1, 2], lambda line: None)
    summary = results(out)["summary"]
    for key in ("alpha", "gamma", "init_scale"):
        assert getattr(budgets[1][0], key).tolist() == summary[key]
        assert getattr(budgets[2][0], key).tolist() != summary[key]  # the control: it moved on


def test_a_reader_that_goes_away_stops_the_run_quietly(tmp_path):
    # `revlearn run | head -1`: the pipe closes under the run, which stops without a traceback
    proc = subprocess.Popen([sys.executable, "-m", "revlearn", "run", "--small", "--out",
                             str(tmp_path / "run")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("revlearn run schedules:")
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err
