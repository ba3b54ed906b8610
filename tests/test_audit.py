"""`revlearn audit`: the rows of audit.json and the table, the figure (or its absence), and bad
input (one line on stderr, exit 2, nothing written)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from revlearn import audit, cli, memory
from revlearn.experiments import plotting
from revlearn.spec import complete_spec, memory_needed

from conftest import small_spec

ROW_KEYS = {"T", "method", "K", "hyper", "cosine", "rel_err", "sign_agreement", "seconds",
            "peak_bytes"}


def run(argv, capsys):
    try:
        code = cli.main(["audit", *argv])
    except SystemExit as e:  # argparse's errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(small_spec(n_iters=12)))
    return path


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One audit of the small spec at horizons 6 and 12 with K = 1, 5, without matplotlib:
    (folder, audit.json, stdout)."""
    folder = tmp_path_factory.mktemp("audit")
    (folder / "spec.json").write_text(json.dumps(small_spec(n_iters=12)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plotting, "pyplot", lambda: None)
        code = cli.main(["audit", str(folder / "spec.json"), "--out", str(folder / "out"),
                         "--horizons", "6,12", "--K", "5,1"])
    assert code == 0
    return folder / "out", json.loads((folder / "out" / audit.FILE).read_text())


def test_audit_json_holds_a_row_per_method_K_and_hyperparameter(audited):
    out, doc = audited
    assert sorted(p.name for p in out.iterdir()) == [audit.FILE]  # no matplotlib: no figure
    assert doc["horizons"] == [6, 12] and doc["K"] == [1, 5] and doc["spec"]["n_iters"] == 12
    rows = doc["rows"]
    assert all(set(r) == ROW_KEYS for r in rows)
    assert {r["method"] for r in rows} == set(audit.METHODS)
    for T in (6, 12):
        mine = [r for r in rows if r["T"] == T]
        by = {m: [(r["K"], r["hyper"]) for r in mine if r["method"] == m] for m in audit.METHODS}
        assert by["exact"] == [(None, "all")]
        assert by["forward"] == [(None, k) for k in ("alpha", "gamma", "init_scale", "l2", "w0",
                                                     "all")]
        assert by["truncated"] == ([(1, "alpha"), (1, "gamma"), (1, "l2"), (5, "alpha"),
                                    (5, "gamma"), (5, "l2")]
                                   + [(T, k) for k in ("alpha", "gamma", "init_scale", "l2",
                                                       "w0")])
        assert by["drmad"] == [(None, k) for k in ("alpha", "gamma", "init_scale", "l2", "w0")]
        assert by["ift"] == [(1, "l2"), (5, "l2"), (T, "l2")]
        assert by["greedy"] == [(None, "alpha"), (None, "gamma")]
    for r in rows:
        assert r["seconds"] >= 0 and isinstance(r["peak_bytes"], int) and r["peak_bytes"] >= 0
        assert 0 <= r["sign_agreement"] <= 1
        assert r["cosine"] is None or -1 - 1e-12 <= r["cosine"] <= 1 + 1e-12
    for r in rows:  # the exact methods agree with the exact answer; truncation only at K = T
        if r["method"] == "forward":
            assert r["rel_err"] <= 1e-7 and r["sign_agreement"] == 1 and r["cosine"] is None
        if r["method"] == "truncated":
            assert (r["rel_err"] <= 1e-12) == (r["K"] == r["T"]), r
    assert set(doc["not_covered"]) == {"forward", "truncated", "ift", "greedy"}


def test_the_table_prints_every_row(audited, capsys, spec_file, tmp_path):
    _, doc = audited
    table = audit.format_table(doc["rows"]).splitlines()
    assert table[0].split() == ["T", "method", "K", "hyper", "cosine", "rel_err", "sign",
                                "seconds", "peak", "MiB"]
    assert len(table) == 1 + len(doc["rows"])
    for line, r in zip(table[1:], doc["rows"], strict=True):
        cells = line.split()
        assert cells[:4] == [str(r["T"]), r["method"], "-" if r["K"] is None else str(r["K"]),
                             r["hyper"]]
        assert cells[4] == ("-" if r["cosine"] is None else f"{r['cosine']:.4f}")
        assert cells[5] == ("-" if r["rel_err"] is None else f"{r['rel_err']:.2e}")


def test_the_command_prints_the_table_and_draws_the_figure(spec_file, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the figure needs the optional extra 'plot'")
    out = tmp_path / "out"
    code, printed, err = run([str(spec_file), "--out", str(out), "--K", "4", "--repeats", "2"],
                             capsys)
    assert code == 0, err
    assert json.loads((out / audit.FILE).read_text())["repeats"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([audit.FIGURE, audit.FILE])
    rows = json.loads((out / audit.FILE).read_text())["rows"]
    assert f"\n\n{audit.format_table(rows)}\n\n" in printed
    assert "T = 12: ift K = 12" in printed  # progress, one line per call


def test_the_command_has_help():
    out = subprocess.run([sys.executable, "-m", "revlearn", "audit", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "usage: revlearn audit" in out.stdout
    assert "--horizons" in out.stdout and "--repeats" in out.stdout


def test_compare():
    e = np.array([1.0, -2.0, 3.0])
    assert audit.compare(e, e) == (1.0, 0.0, 1.0)
    cosine, rel_err, sign = audit.compare(2 * e, e)
    assert cosine == pytest.approx(1.0) and rel_err == pytest.approx(1.0) and sign == 1.0
    cosine, rel_err, sign = audit.compare(-e, e)
    assert cosine == pytest.approx(-1.0) and rel_err == pytest.approx(2.0) and sign == 0.0
    assert audit.compare(np.zeros(3), e) == (None, 1.0, 0.0)
    assert audit.compare(np.array([np.inf, 1.0, 1.0]), e)[:2] == (None, None)
    assert audit.compare(np.array([1e200, 1e200, 1e200]), e)[1] is None  # |a - e| overflows


def test_measure_times_the_median_of_the_repeats(monkeypatch):
    clock = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # three runs: 1, 3 and 2 seconds
    monkeypatch.setattr(audit.time, "perf_counter", lambda: next(clock))
    out, seconds, peak = audit.measure(lambda: np.ones(1000), repeats=3)
    assert seconds == 2.0 and peak >= 8000 and out.shape == (1000,)


def test_k_grid():
    assert audit.k_grid([1, 10, 100], 1000) == [1, 10, 100, 1000]
    assert audit.k_grid([1, 10, 100], 100) == [1, 10, 100]
    assert audit.k_grid([1, 10, 100], 6) == [1, 6]


@pytest.mark.parametrize("argv, message", [
    (["{spec}", "--out", "{out}", "--K", "0"], r"--K '0': give positive integers"),
    (["{spec}", "--out", "{out}", "--K", "1,ten"], r"--K '1,ten': give positive integers"),
    (["{spec}", "--out", "{out}", "--horizons", "-5"], r"--horizons '-5': give positive"),
    (["{spec}", "--out", "{out}", "--seed", "x"], r"--seed 'x': give an integer >= 0"),
    (["{spec}", "--out", "{out}", "--repeats", "0"], r"--repeats '0': give an integer >= 1"),
    (["{spec}", "--out", "{out}", "--threads", "0"], r"--threads '0': give an integer >= 1"),
    (["{spec}", "--out", "{out}", "--backend", "gpu"], r"invalid choice: 'gpu'"),
    (["{tmp}/none.json", "--out", "{out}"], r"spec file .*none.json does not exist"),
    (["{bad}", "--out", "{out}"], r"unknown spec key\(s\) 'lr'"),
    (["{spec}", "--out", "{spec}"], r"--out .*spec.json exists and is not a folder"),
    (["{spec}", "--out", "{tmp}"], r"--out .* already holds files \(bad.json, spec.json\); give"),
    (["{spec}"], r"the following arguments are required: --out"),
])
def test_bad_input_gives_one_line_and_exit_2_before_writing(argv, message, spec_file, tmp_path,
                                                           capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**small_spec(), "lr": 0.1}))
    names = dict(spec=spec_file, out=tmp_path / "out", tmp=tmp_path, bad=bad)
    code, printed, err = run([a.format(**names) for a in argv], capsys)
    assert code == 2 and err.count("\n") == 1 and printed == ""
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "spec.json"]


def test_a_truncation_larger_than_memory_is_refused_before_work(tmp_path, capsys, monkeypatch):
    # enough memory for the case (make_case's estimate) but not for every state of 1000 steps
    spec = small_spec(n_iters=1000)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    have = sum(memory_needed(complete_spec(spec)).values())
    assert have < 2 * 8 * 1001 * 143
    monkeypatch.setattr(memory, "physical_memory", lambda: have)
    code, printed, err = run([str(tmp_path / "spec.json"), "--out", str(tmp_path / "out")],
                             capsys)
    assert code == 2 and "truncation at K = T = 1000 keeps every w_t and v_t" in err, err
    assert printed == "" and not (tmp_path / "out").exists()


def test_training_that_leaves_the_range_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(small_spec(n_iters=12, alpha=1e6)))
    code, _, err = run([str(spec), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "left the fixed-point range" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
