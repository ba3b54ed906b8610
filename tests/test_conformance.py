"""The conformance suite (`revlearn conformance DIR`): its cases, its pinned answers, the
independent reference answering it, and `revlearn check DIR THEIRS_DIR`."""

import copy
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import revlearn
from revlearn import cli, conformance, oracle, trace

import reference

ROOT = Path(__file__).resolve().parent.parent
SMALL = [c.name for c in conformance.CASES if not c.large]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The suite written afresh (what `revlearn conformance` writes): (folder, records)."""
    folder = tmp_path_factory.mktemp("conformance") / "suite"
    return folder, conformance.write_suite(folder, say=lambda line: None)


@pytest.fixture(scope="module")
def answered(suite, tmp_path_factory):
    """tests/reference.py's answers to every small case, traces included, one file per case."""
    folder, _ = suite
    theirs = tmp_path_factory.mktemp("theirs")
    for name in SMALL:
        ref = oracle.read_case(folder / f"{name}.npz")
        adam = ref.case.optimizer == "adam"
        c = {k: getattr(ref.case, k) for k in (reference.ADAM_INPUT_KEYS if adam
                                                 else reference.INPUT_KEYS)}
        c["optimizer"] = ref.case.optimizer
        np.savez(theirs / f"{name}.npz", **reference.answers(
            c, ref.case.grad_train_inputs, trace_steps=ref.trace["trace_steps"]))
    return theirs


def by_name(records):
    return {r["name"]: r for r in records}


# --- what the suite holds -------------------------------------------------------------------------

def test_the_suite_covers_what_it_promises(suite):
    folder, records = suite
    specs = {c.name: c.spec for c in conformance.CASES}
    cases = {n: revlearn.make_case(s) for n, s in specs.items() if n != "mnist_paper"}
    assert len(records) >= 12 and len(set(specs)) == len(records)
    assert specs["smallest_net"]["layer_sizes"] == [1, 1, 2] and cases["smallest_net"].P == 6
    assert cases["one_step"].T == 1 and cases["long_horizon"].T >= 1000
    assert np.all(cases["gamma_min"].gamma == 2.0**-16)
    assert np.all(cases["gamma_one"].gamma[:, :2] == 1) and np.all(cases["gamma_one"].gamma < 1.1)
    assert np.all(cases["alpha_zero"].alpha[:, [1, 2]] == 0) and cases["alpha_zero"].alpha.any()
    assert {c.activation for c in cases.values()} == {"tanh", "relu"}
    assert cases["group_l2"].l2.shape == (6,) and len(set(cases["group_l2"].l2)) == 6
    assert cases["weight_l2"].l2_per_weight and len(set(cases["weight_l2"].l2)) > 50
    schedules = cases["schedules"]
    assert len(set(schedules.alpha[:, 0])) == schedules.T and len(set(schedules.alpha[0])) == 6
    assert schedules.gamma[3].min() == 1 and schedules.gamma[7].max() == 2.0**-16
    assert cases["train_inputs"].grad_train_inputs
    assert [c.name for c in conformance.CASES if c.large] == ["mnist_paper"]
    mnist = specs["mnist_paper"]
    assert (mnist["layer_sizes"], mnist["dataset"], mnist["n_iters"], mnist["batch_size"]) == (
        [784, 50, 50, 50, 10], "mnist", 100, 200)
    assert all(r["since"] == (2 if r["name"].startswith("adam_") else 1) for r in records)
    adam = {n: c for n, c in cases.items() if c.optimizer == "adam"}
    assert len(adam) == 6 and {c.activation for c in adam.values()} == {"tanh", "relu"}
    assert np.all(adam["adam_constant"].beta1 == round(0.9 * 2**16) / 2**16) and np.all(
        adam["adam_constant"].beta2 == round(0.999 * 2**16) / 2**16)
    assert adam["adam_constant"].epsilon[0] == 1e-8
    assert adam["adam_schedules"].beta1[4].max() == 2.0**-16
    assert adam["adam_schedules"].beta2[6].min() == 1 - 2.0**-16
    assert len(set(adam["adam_schedules"].alpha[:, 0])) == 30 and len(set(
        adam["adam_schedules"].epsilon)) == 6
    assert adam["adam_weight_l2"].l2_per_weight and adam["adam_train_inputs"].grad_train_inputs
    assert adam["adam_long_horizon"].T >= 1000


def test_the_adam_relu_case_has_entries_whose_s_stays_0(suite):
    # no penalty, so an entry that never moves had g = 0 (m = 0, s = 0) at every step: the
    # square root's derivative is taken as 0 there; the other entries move
    w = oracle.read_case(suite[0] / "adam_relu_dead_units.npz").trace["w_trace"]
    still = np.all(w == w[0], axis=0)
    assert 5 <= still.sum() < len(still) // 2, still.sum()


def test_the_relu_case_has_dead_units_and_units_that_die_and_revive(suite):
    # pre-activations from the trace's w_t, computed here with NumPy: units <= 0 on every row
    folder, _ = suite
    ref = oracle.read_case(folder / "relu_dead_units.npz")
    X = np.vstack([ref.case.X_train, ref.case.X_valid])
    dead = []
    for w in ref.trace["w_trace"]:
        a, off = X, []
        for W, b in ref.case.layout.unflatten(w.copy())[:-1]:
            z = a @ W + b
            off.append(set(np.flatnonzero(np.all(z <= 0, axis=0)).tolist()))
            a = np.maximum(z, 0)
        dead.append(off)
    assert all(d[0] == {10, 11} for d in dead)  # 2 of 12 dead throughout
    assert dead[0][1] == {0} and dead[-1][1] == {2}  # unit 0 revives, unit 2 dies


def test_the_edge_of_chaos_case_has_large_finite_hypergradients(suite):
    folder, _ = suite
    chaos = oracle.read_case(folder / "edge_of_chaos.npz")
    calm = revlearn.hypergradient(chaos.case.replace(alpha=np.ones_like(chaos.case.alpha)))
    for key in ("d_alpha", "d_w0"):
        big = np.max(np.abs(chaos.outputs[key]))
        assert np.isfinite(big) and big > 1000 * np.max(np.abs(getattr(calm, key))), key


def input_arrays(case):
    """The input keys of a case file, as `oracle.case_arrays` writes them."""
    return {"spec": np.array(json.dumps(case.spec, sort_keys=True)),
            "layer_sizes": np.array(case.layer_sizes, dtype=np.int64),
            "activation": np.array(case.activation), "optimizer": np.array(case.optimizer),
            **{k: getattr(case, k) for k in oracle.keys_of(case.optimizer)[0][3:]}}


def test_the_index_lists_every_case_and_each_spec_file_gives_its_inputs(suite):
    folder, records = suite
    index = json.loads((folder / "index.json").read_text())
    assert index["suite_version"] == conformance.SUITE_VERSION
    assert index["provenance"] == revlearn.blas.describe()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["index.json"] + [f"{c.name}.{ext}" for c in conformance.CASES for ext in ("npz", "json")])
    for entry, c in zip(index["cases"], conformance.CASES, strict=True):
        assert (entry["name"], entry["covers"], entry["large"]) == (c.name, c.covers, c.large)
        case = revlearn.make_case(json.loads((folder / entry["spec"]).read_text()))
        assert (entry["T"], entry["P"]) == (case.T, case.P)
        assert entry["traced_steps"] == len(trace.trace_steps(case.T, c.trace_every))
        arrays = input_arrays(case)
        assert conformance.digest(arrays, conformance.input_keys(arrays)) == \
            entry["inputs_sha256"]
        want = {*oracle.keys_of(case.optimizer)[1], *trace.KEYS} - (
            {"d_X_train"} if not case.grad_train_inputs else set())
        assert set(entry["answers"]) == want


def test_the_index_digests_are_those_of_the_files(suite):
    folder, records = suite
    for r in records:
        if r["name"] == "mnist_paper":
            continue  # 60 MB to decompress; its arrays are those of the records (write_suite)
        arrays = revlearn.npzfile.read_npz(folder / r["file"], "case file")
        assert conformance.digest(arrays, conformance.input_keys(arrays)) == r["inputs_sha256"]
        for key, a in r["answers"].items():
            assert conformance.digest(arrays, [key]) == a["sha256"], (r["name"], key)


def test_a_digest_sees_one_bit_and_the_names_but_not_the_byte_order():
    a = {"d_w0": np.linspace(-1, 1, 7), "w_final": np.arange(3.0)}
    flipped = a["d_w0"].copy()
    flipped.view(np.int64)[3] ^= 1
    base = conformance.digest(a, ["d_w0", "w_final"])
    assert conformance.digest({**a, "d_w0": flipped}, ["d_w0", "w_final"]) != base
    assert conformance.digest({"d_w0": a["w_final"], "w_final": a["d_w0"]},
                              ["d_w0", "w_final"]) != base
    assert conformance.digest({**a, "d_w0": a["d_w0"].astype(">f8")}, ["d_w0", "w_final"]) == base
    assert conformance.digest({**a, "d_w0": a["d_w0"].reshape(7, 1)}, ["d_w0", "w_final"]) != base


# --- the pinned answers ---------------------------------------------------------------------------

PINS = conformance.load_pins()
WHY = conformance.same_products(PINS["products"])


def test_the_answers_are_their_pinned_bits(suite):
    # held to the bits wherever the matrix products round as the pins' did, and wherever they
    # happen to give the same bits (NumPy 1.24.4 with OpenBLAS 0.3.21 did, on this machine)
    check = conformance.check_pins(suite[1])
    if check.how == "values":
        pytest.skip(f"some answers differ from their pinned bits on this machine, whose matrix "
                    f"products round differently "
                    f"({check.why}): they are compared with the pinned values within tolerances "
                    "instead (test_the_answers_are_near_their_pinned_values_everywhere)")
    assert check.problems == [], "\n".join(check.problems)


def test_the_answers_are_near_their_pinned_values_everywhere(suite):
    # what a machine whose products round differently checks (measured on this machine:
    # OpenBLAS's Haswell kernel moves answers by at most 6.5e-13 relative)
    check = conformance.check_pins(suite[1], values=True)
    assert check.how == "values" and check.problems == [], "\n".join(check.problems)


VALUES = ROOT / "tests" / "data" / "conformance_values.npz"


@pytest.fixture(scope="module")
def values():
    """The pinned values (`scripts/pin_conformance.py --values`): what computed them, and every
    entry of every answer, the large case's traces excepted."""
    with np.load(VALUES, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(str(arrays.pop("products"))), arrays


# Measured: every entry of every answer on the BLAS kernels this machine runs (OpenBLAS 0.3.31's
# Sandybridge, Nehalem and Katmai kernels and NumPy 1.24.4 with OpenBLAS 0.3.21) against the
# values (OpenBLAS 0.3.31, Haswell kernel): at most 4.2e-12 relative (long_horizon), 2.1e-11
# (mnist_paper), 1.7e-9 (edge_of_chaos). Each case's fallback_rtol (1e-9; 1e-7 at the edge of
# chaos) leaves a factor of 48 or more.

def test_every_entry_of_every_answer_is_near_the_pinned_values(suite, values):
    made_by, pinned = values
    records = suite[1]
    assert {f"{r['name']}/{k}" for r in records for k in r["arrays"]} - set(pinned) == {
        f"mnist_paper/{k}" for k in trace.KEYS}
    if conformance.same_products(made_by) is None:  # products as the values': the same bits
        assert all(np.array_equal(a, pinned[f"{r['name']}/{k}"]) for r in records
                   for k, a in r["arrays"].items() if f"{r['name']}/{k}" in pinned)
    assert conformance.check_entries(records, pinned) == []


def test_an_entry_no_fingerprint_samples_is_caught_off_by_1e_8(suite, values):
    # negative control: the fingerprints (norm and eight entries) miss one other entry off by a
    # relative 1e-8; the entries do not
    records = copy.deepcopy(suite[1])
    rec = by_name(records)["schedules"]
    d_w0 = rec["arrays"]["d_w0"]
    sampled = set(PINS["cases"]["schedules"]["answers"]["d_w0"]["fingerprint"]["index"])
    i = max((j for j in range(len(d_w0)) if j not in sampled), key=lambda j: abs(d_w0[j]))
    d_w0[i] *= 1 + 1e-8
    assert conformance.check_pins(records, values=True).problems == []
    assert conformance.check_entries(records, values[1]) == [
        "schedules: d_w0 differs from the pinned values by 1.0e-08 relative (in some entry)"]


def test_the_large_cases_traces_are_near_the_stored_trajectorys_entry_by_entry(suite):
    # mnist_paper's traces (7 MB) are not among the values: each entry is compared with this
    # machine's float64 training run (method="stored"), which reverses nothing. Measured: 4.7e-10
    # (dw_trace), 5.9e-11 (w_trace); 5e-9 leaves a factor of 10, and an entry off by 1e-8 fails.
    rec = by_name(suite[1])["mnist_paper"]
    c = next(c for c in conformance.CASES if c.name == "mnist_paper")
    case = revlearn.make_case(c.spec)
    kept = trace.Recorder(rec["arrays"]["trace_steps"], case.P)
    revlearn.hypergradient(case, method="stored", trace=kept)
    for key, want in (("w_trace", kept.w), ("dw_trace", kept.dw)):
        assert conformance.entry_errors(rec["arrays"][key], want) <= 5e-9, key
        off = rec["arrays"][key].copy()
        off.flat[np.argmax(np.abs(want))] *= 1 + 1e-8  # the control
        assert conformance.entry_errors(off, want) > 5e-9, key


def test_a_changed_answer_fails_the_pins(suite):
    # negative controls: a digest; the largest pinned entry of an answer off by a relative 1e-8,
    # a buffer nine words larger and other inputs (where only values are compared); a version
    records = suite[1]
    pins = copy.deepcopy(PINS)
    pins["cases"]["schedules"]["answers"]["d_gamma"]["sha256"] = "0" * 64
    assert conformance.check_pins(records, pins).problems == (
        ["schedules: d_gamma differs from its pinned bits"] if WHY is None else [])
    elsewhere = dict(copy.deepcopy(PINS), products={"numpy": "another NumPy"})
    fp = elsewhere["cases"]["one_step"]["answers"]["d_w0"]["fingerprint"]
    fp["value"][int(np.argmax(np.abs(fp["value"])))] *= 1 + 1e-8
    elsewhere["cases"]["gamma_min"]["answers"]["buffer_bits"]["fingerprint"]["value"] += 9 * 32
    elsewhere["cases"]["train_inputs"]["inputs_sha256"] = "0" * 64
    elsewhere["cases"]["long_horizon"]["answers"]["d_l2"]["sha256"] = "0" * 64  # bits differ
    check = conformance.check_pins(records, elsewhere)
    assert check.how == "values" and check.why.startswith("numpy ")
    assert check.problems == [
        "train_inputs: inputs differ from the pinned ones",
        "one_step: d_w0 differs from its pinned values by 1.0e-08 relative",
        "gamma_min: buffer_bits moved by 288 bits"]
    assert conformance.check_pins(records, dict(PINS, suite_version=0)).problems == [
        f"the pins are of suite version 0, this revlearn writes version "
        f"{conformance.SUITE_VERSION}"]


def pin_script():
    spec = importlib.util.spec_from_file_location("pin_conformance",
                                                  ROOT / "scripts" / "pin_conformance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pinning_new_answers_needs_a_new_suite_version(suite, tmp_path, monkeypatch):
    script = pin_script()
    old = json.loads(json.dumps(conformance.pins_of(suite[1])))
    old["cases"]["weight_l2"]["answers"]["d_l2"]["sha256"] = "0" * 64
    (tmp_path / "pins.json").write_text(json.dumps(old))
    monkeypatch.setattr(conformance, "PINS", tmp_path / "pins.json")
    monkeypatch.setattr(conformance, "write_suite", lambda folder: suite[1])
    version = conformance.SUITE_VERSION
    with pytest.raises(SystemExit, match=rf"the answers of suite version {version} changed "
                       r"\(weight_l2 d_l2\); raise SUITE_VERSION"):
        script.main([])
    assert json.loads((tmp_path / "pins.json").read_text()) == old  # left as it was
    monkeypatch.setattr(conformance, "SUITE_VERSION", conformance.SUITE_VERSION + 1)
    script.main([])
    assert json.loads((tmp_path / "pins.json").read_text())["suite_version"] == \
        conformance.SUITE_VERSION


# --- an independent implementation answers the suite ---------------------------------------------

# Measured (tests/reference.py, float64 autograd, against the suite's answers): at most 9.2e-9
# relative (dw_trace of edge_of_chaos, where rounding differences grow), 8.2e-11 elsewhere
# (long_horizon). RTOL leaves a factor of 10 and fails a 1e-6 error by 10.
RTOL = 1e-7


@pytest.mark.parametrize("name", SMALL)
def test_every_small_case_is_answered_by_the_independent_reference(suite, answered, name):
    report = oracle.check(suite[0] / f"{name}.npz", answered / f"{name}.npz", rtol=RTOL)
    table = oracle.format_table(report.rows, report.absent)
    assert all(r.ok for r in report.rows), f"{name}:\n{table}\n{report.divergence}"
    assert {r.key for r in report.rows} == set(oracle.read_case(
        suite[0] / f"{name}.npz").outputs) - set(oracle.EXACT_KEYS) | set(trace.TRACES)
    assert report.divergence.startswith("first divergence: none")


def test_check_of_the_suite_folder_against_the_reference(capsys, suite, answered):
    code, out, err = run(capsys, "check", suite[0], answered)
    lines = out.splitlines()
    assert code == 0 and err == "", out
    assert lines[0] == f"conformance suite version {conformance.SUITE_VERSION}: {suite[0]} " \
                       f"against {answered}"
    rows = {line.split()[0]: line for line in lines[2:2 + len(conformance.CASES)]}
    assert list(rows) == [c.name for c in conformance.CASES]
    assert all(rows[n].endswith("  ok")
               and any(f" {k}/{k + 2} " in rows[n] for k in (9, 10, 11, 12)) for n in SMALL)
    assert rows["mnist_paper"].endswith("not provided")
    assert lines[-2] == ("outputs not provided: exact_recovery (every case), buffer_bits "
                         "(every case)")
    assert lines[-1] == (f"all {len(SMALL)} cases provided agree (rtol 1e-06); 1 not provided: "
                         "mnist_paper")


def small_suite(suite, tmp_path, names=("one_step", "schedules", "train_inputs")):
    """A suite folder of a few cases (index.json listing them) and revlearn's own answers."""
    folder, theirs = tmp_path / "suite", tmp_path / "theirs"
    folder.mkdir()
    theirs.mkdir()
    index = json.loads((suite[0] / "index.json").read_text())
    index["cases"] = [c for c in index["cases"] if c["name"] in names]
    (folder / "index.json").write_text(json.dumps(index))
    for name in names:
        shutil.copy(suite[0] / f"{name}.npz", folder)
        with np.load(folder / f"{name}.npz", allow_pickle=False) as f:
            np.savez(theirs / f"{name}.npz", **{k: f[k] for k in f.files
                                               if k in oracle.OUTPUT_KEYS or k in trace.KEYS})
    return folder, theirs


def test_a_case_with_a_reverse_bug_is_named_with_its_divergence(capsys, suite, tmp_path):
    folder, theirs = small_suite(suite, tmp_path)
    with np.load(theirs / "schedules.npz") as f:
        a = {k: f[k] for k in f.files}
    a["dw_trace"][:8] *= 1 + 1e-4  # df/dw_t wrong from t = 7 down
    a["d_w0"] = a["dw_trace"][0]
    np.savez(theirs / "schedules.npz", **a)
    code, out, _ = run(capsys, "check", folder, theirs)
    lines = out.splitlines()
    assert code == 1
    assert re.fullmatch(r"schedules +11/11 +1\.000e-04  MISMATCH in d_w0, dw_trace", lines[3])
    assert lines[5].startswith("schedules: first divergence: reverse at step 7: df/dw_7 out of "
                               "tolerance in W1 (group 0)")
    assert lines[-1] == ("MISMATCH in 1 of 3 cases: schedules (rtol 1e-06, atol scaled per "
                         "key)")


def test_absent_cases_are_listed_and_not_counted(capsys, suite, tmp_path):
    folder, theirs = small_suite(suite, tmp_path)
    (theirs / "one_step.npz").unlink()
    code, out, _ = run(capsys, "check", folder, theirs)
    assert code == 0
    assert re.search(r"\none_step +- +-  not provided\n", out)
    assert out.splitlines()[-1] == "all 2 cases provided agree (rtol 1e-06); 1 not provided: " \
                                   "one_step"


@pytest.mark.parametrize("kind, reason", [
    ("stray", r"holds one_stp\.npz, named after no case of the suite; the cases are one_step, "),
    ("empty", r"holds none of the suite's answer files \(one_step\.npz, \.\.\.\)"),
    ("theirs a file", r"is not a folder; checking the suite .* takes a folder of answer files"),
    ("no index", r"holds no index\.json; give a folder written by `revlearn conformance DIR`"),
    ("bad index", r"index\.json is not the index of a conformance suite"),
    ("path in index", r"index\.json names cases that are not plain file names"),
    ("huge index", r"index\.json is \d+ bytes, too large for the index of a conformance suite"),
    ("NaN answer", r"theirs/schedules\.npz: d_gamma has NaN or infinite entries"),
    ("case folder, theirs file", r"is a folder but .* is not; give two case files, or a suite"),
])
def test_a_folder_that_cannot_be_checked_exits_2_with_one_line(capsys, suite, tmp_path,
                                                               monkeypatch, kind, reason):
    folder, theirs = small_suite(suite, tmp_path)
    monkeypatch.setattr(conformance, "MAX_INDEX_BYTES", 100 if kind == "huge index" else 1 << 20)
    args = [folder, theirs]
    if kind == "stray":
        shutil.copy(theirs / "one_step.npz", theirs / "one_stp.npz")
    elif kind == "empty":
        for p in theirs.iterdir():
            p.unlink()
    elif kind == "theirs a file":
        args = [folder, theirs / "one_step.npz"]
    elif kind == "no index":
        (folder / "index.json").unlink()
    elif kind == "bad index":
        (folder / "index.json").write_text('{"cases": 3}')
    elif kind == "path in index":
        (folder / "index.json").write_text('{"suite_version": 1, "cases": [{"name": "../x"}]}')
    elif kind == "huge index":
        pass  # MAX_INDEX_BYTES is 100 here
    elif kind == "NaN answer":
        with np.load(theirs / "schedules.npz") as f:
            a = {k: f[k] for k in f.files}
        a["d_gamma"][2, 2] = np.nan
        np.savez(theirs / "schedules.npz", **a)
    else:
        args = [theirs / "one_step.npz", folder]
    code, out, err = run(capsys, "check", *args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert re.search(reason, err), err


# --- revlearn conformance ------------------------------------------------------------------------

def test_conformance_says_whether_it_wrote_the_pinned_suite(capsys, suite, tmp_path, monkeypatch):
    monkeypatch.setattr(conformance, "write_suite", lambda *a: suite[1])
    code, out, err = run(capsys, "conformance", tmp_path / "new")
    assert code == 0 and err == ""
    assert out.splitlines()[0] == (f"revlearn conformance: suite version "
                                   f"{conformance.SUITE_VERSION}, {len(conformance.CASES)} cases, "
                                   f"into {tmp_path / 'new'}/ (backend "
                                   f"{revlearn.sgd.get_backend('auto').name})")
    check = conformance.check_pins(suite[1])
    assert out.splitlines()[-1] == (
        f"every answer is the pinned suite version {conformance.SUITE_VERSION}'s, bit for bit "
        "(sha256)" + ("" if WHY is None else ", although this machine's matrix products may "
                      f"round differently ({WHY})") if check.how == "bits" else
        "every answer's norm and eight of its entries are within its case's tolerance (1e-09 "
        "relative; 1e-07 for edge_of_chaos) of the pinned suite version "
        f"{conformance.SUITE_VERSION}'s; not bit for bit, as this machine's matrix products round "
        f"differently ({WHY})")
    wrong = copy.deepcopy(suite[1])
    wrong[0]["inputs_sha256"] = "0" * 64
    monkeypatch.setattr(conformance, "write_suite", lambda *a: wrong)
    code, out, err = run(capsys, "conformance", tmp_path / "new2")
    assert code == 0 and err == ("revlearn conformance: warning: this suite is not the pinned "
                                 f"suite version {conformance.SUITE_VERSION}: smallest_net: "
                                 "inputs differ from the pinned ones\n")


@pytest.mark.parametrize("kind, reason", [
    ("files", r"already holds files \(a\.txt\); give a new or empty folder"),
    ("suite", r"already holds a conformance suite; give a new or empty folder"),
    ("a file", r"exists and is not a folder"),
    ("no parent", r"the folder .*/missing of .* does not exist; create it first"),
])
def test_conformance_refuses_a_folder_before_any_work(capsys, tmp_path, monkeypatch, kind,
                                                      reason):
    monkeypatch.setattr(revlearn.sgd, "hypergradient", lambda *a, **k: pytest.fail("work done"))
    target = tmp_path / "out"
    if kind == "files":
        target.mkdir()
        (target / "a.txt").write_text("mine")
    elif kind == "suite":
        target.mkdir()
        (target / "index.json").write_text("{}")
    elif kind == "a file":
        target.write_text("mine")
    else:
        target = tmp_path / "missing" / "out"
    code, out, err = run(capsys, "conformance", target)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert re.search(reason, err), err
