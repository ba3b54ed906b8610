"""Case files, `revlearn oracle` / `revlearn check`, and the golden cases."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import revlearn
from revlearn import cli, oracle

from conftest import small_spec

GOLDEN = Path(__file__).parent / "golden"


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def case_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oracle")
    spec = folder / "spec.json"
    spec.write_text(json.dumps(small_spec(grad_train_inputs=True)))
    path = folder / "case.npz"
    assert cli.main(["oracle", str(spec), "-o", str(path)]) == 0
    return path


def copy_with(path, dest, **changes):
    """Write dest: the arrays of path with some changed (None removes a key)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(dest, **{k: v for k, v in arrays.items() if v is not None})
    return dest


def outputs_of(path, tmp_path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k in oracle.OUTPUT_KEYS}


# --- writing and reading -----------------------------------------------------------------------

def test_case_file_holds_every_design_key_with_its_dtype(case_file):
    with np.load(case_file, allow_pickle=False) as f:
        a = {k: f[k] for k in f.files}
    assert set(a) == set(oracle.INPUT_KEYS) | set(oracle.OUTPUT_KEYS) | {"provenance"}
    made_by = json.loads(str(a["provenance"]))
    assert made_by["numpy"] == np.__version__ and "blas" in made_by and "cpu_simd" in made_by
    assert a["spec"].ndim == 0 and json.loads(str(a["spec"]))["n_iters"] == 24
    assert a["layer_sizes"].dtype == np.int64 and str(a["activation"]) == "tanh"
    assert a["y_train"].dtype == a["batches"].dtype == np.int64
    assert a["exact_recovery"].dtype == bool and bool(a["exact_recovery"])
    assert a["buffer_bits"].dtype == np.int64 and a["buffer_bits"].ndim == 0
    assert np.all(a["gamma"] * 2**16 == np.round(a["gamma"] * 2**16))  # effective gamma


def test_read_case_gives_back_the_case_and_answers(case_file):
    ref = oracle.read_case(case_file)
    case = revlearn.make_case(small_spec(grad_train_inputs=True))
    for key in ("X_train", "batches", "eps", "alpha", "gamma", "l2"):
        assert np.array_equal(getattr(ref.case, key), getattr(case, key))
    res = revlearn.hypergradient(ref.case)
    assert np.array_equal(res.w_final, ref.outputs["w_final"])
    assert np.array_equal(res.d_X_train, ref.outputs["d_X_train"])


def test_write_is_atomic(tmp_path, monkeypatch, small_case):
    res = revlearn.hypergradient(small_case)
    path = tmp_path / "case.npz"
    path.write_bytes(b"previous contents")

    def crash(f, **arrays):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        oracle.write_case(path, small_case, res)
    assert path.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]  # no temporary left behind


# --- check ---------------------------------------------------------------------------------------

def test_check_of_a_case_against_itself_passes(capsys, case_file):
    code, out, err = run(capsys, "check", case_file, case_file)
    assert code == 0 and err == ""
    assert "d_X_train" in out and "MISMATCH" not in out and "all 10 outputs agree" in out


@pytest.mark.parametrize("key", ["w_final", "d_alpha", "d_gamma", "d_init_scale", "d_l2", "d_w0",
                                 "d_X_train", "valid_loss"])
def test_one_element_off_by_1e4_relative_fails_and_names_the_key(capsys, case_file, tmp_path, key):
    theirs = outputs_of(case_file, tmp_path)
    x = theirs[key].copy()
    i = np.unravel_index(np.argmax(np.abs(x)), x.shape)
    x[i] *= 1 + 1e-4
    copy_with(case_file, tmp_path / "theirs.npz", **{key: x})
    code, out, _ = run(capsys, "check", case_file, tmp_path / "theirs.npz")
    assert code == 1
    assert f"MISMATCH in {key} " in out
    assert [line.split()[0] for line in out.splitlines() if line.endswith("MISMATCH")] == [key]


def test_check_accepts_a_subset_of_outputs_and_the_case_inputs(capsys, case_file, tmp_path):
    theirs = outputs_of(case_file, tmp_path)
    np.savez(tmp_path / "theirs.npz", d_alpha=theirs["d_alpha"] * (1 + 1e-9))
    code, out, _ = run(capsys, "check", case_file, tmp_path / "theirs.npz")
    absent = ("w_final, valid_loss, d_gamma, d_init_scale, d_l2, d_w0, d_X_train, exact_recovery, "
              "buffer_bits")
    assert code == 0
    assert f"not checked (absent from THEIRS): {absent}\n" in out
    assert out.splitlines()[-1] == (f"all 1 provided outputs agree (rtol 1e-06); 9 not provided: "
                                    f"{absent}")
    assert "all 1 outputs agree" not in out  # negative control: the old, overclaiming verdict
    copy_with(case_file, tmp_path / "full.npz")  # a copy of the case itself, inputs included
    assert run(capsys, "check", case_file, tmp_path / "full.npz")[0] == 0


def test_a_mismatch_among_a_subset_names_both(capsys, case_file, tmp_path):
    theirs = outputs_of(case_file, tmp_path)
    np.savez(tmp_path / "theirs.npz", d_alpha=theirs["d_alpha"] * 1.01, w_final=theirs["w_final"],
             valid_loss=theirs["valid_loss"], d_gamma=theirs["d_gamma"],
             d_init_scale=theirs["d_init_scale"], d_l2=theirs["d_l2"],
             exact_recovery=theirs["exact_recovery"], buffer_bits=theirs["buffer_bits"])
    code, out, _ = run(capsys, "check", case_file, tmp_path / "theirs.npz")
    assert code == 1
    assert "\nnot checked (absent from THEIRS): d_w0, d_X_train\n" in out
    assert out.splitlines()[-1] == ("MISMATCH in d_alpha (rtol 1e-06, atol scaled per key); "
                                    "2 not provided: d_w0, d_X_train")


def bad_files(case_file, tmp_path):
    theirs = outputs_of(case_file, tmp_path)
    nan = theirs["d_gamma"].copy()
    nan[3, 1] = np.nan
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(case_file.read_bytes()[:3000])
    text = tmp_path / "text.npz"
    text.write_text("d_alpha = 1, 2, 3\n")
    alpha = np.load(case_file)["alpha"].copy()
    alpha[0, 0] += 0.01
    return {
        "truncated": (truncated, "truncated.npz is damaged or truncated: its zip directory "
                                 "cannot be read"),
        "not npz": (text, "text.npz is a text file, not an .npz file"),
        "wrong dtype": (copy_with(case_file, tmp_path / "dtype.npz",
                                  d_alpha=theirs["d_alpha"].astype(np.int64)),
                        "d_alpha is int64; expected float64"),
        "float32": (copy_with(case_file, tmp_path / "f4.npz",
                              d_w0=theirs["d_w0"].astype(np.float32)),
                    "d_w0 is float32; expected float64"),
        "uint64 buffer_bits": (copy_with(case_file, tmp_path / "u8.npz",
                                         buffer_bits=theirs["buffer_bits"].astype(np.uint64)),
                               "buffer_bits is uint64; expected int64"),
        "int exact_recovery": (copy_with(case_file, tmp_path / "b.npz",
                                         exact_recovery=np.array(1)),
                               "exact_recovery is int64; expected bool"),
        "wrong shape": (copy_with(case_file, tmp_path / "shape.npz", d_w0=theirs["d_w0"][:-1]),
                        r"d_w0 has shape \(142,\); the case needs \(143,\)"),
        "NaN": (copy_with(case_file, tmp_path / "nan.npz", d_gamma=nan),
                "d_gamma has NaN or infinite entries"),
        "mismatched inputs": (copy_with(case_file, tmp_path / "inputs.npz", alpha=alpha),
                              "holds alpha different from the case's"),
        "unknown key": (copy_with(case_file, tmp_path / "typo.npz", d_aplha=theirs["d_alpha"]),
                        "unknown key.*d_aplha"),
        "no outputs": (copy_with(case_file, tmp_path / "none.npz",
                                 **{k: None for k in oracle.OUTPUT_KEYS}),
                       "none of the output keys"),
        "missing file": (tmp_path / "absent.npz", "does not exist"),
    }


@pytest.mark.parametrize("kind", ["truncated", "not npz", "wrong dtype", "float32",
                                  "uint64 buffer_bits", "int exact_recovery", "wrong shape", "NaN",
                                  "mismatched inputs", "unknown key", "no outputs",
                                  "missing file"])
def test_malformed_theirs_exits_2_with_a_one_line_reason(capsys, case_file, tmp_path, kind):
    path, reason = bad_files(case_file, tmp_path)[kind]
    code, out, err = run(capsys, "check", case_file, path)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert re.search(reason, err), err


@pytest.mark.parametrize("change, reason", [
    (dict(eps=None), "case file .* lacks eps"),
    (dict(gamma=np.full((24, 6), 0.9)), "gamma holds values that are not n / 2\\*\\*16"),
    (dict(y_train=np.full(60, 7)), r"y_train\[0\] = 7 is not a class label"),
    (dict(batches=np.zeros((24, 10))), "batches is float64, expected int64"),
])
def test_malformed_case_file_exits_2(capsys, case_file, tmp_path, change, reason):
    bad = copy_with(case_file, tmp_path / "bad_case.npz", **change)
    code, _, err = run(capsys, "check", bad, case_file)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(reason, err), err


def test_negative_tolerance_is_refused(capsys, case_file):
    code, _, err = run(capsys, "check", case_file, case_file, "--rtol", "-1")
    assert code == 2 and "rtol and atol must be >= 0" in err


# --- oracle --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, reason", [
    ({**small_spec(), "learning_rate": 0.1}, "unknown spec key"),
    (small_spec(n_iters=2.5), "'n_iters' must be a positive integer"),
    (small_spec(batch_size=10**6), "batch_size 1000000 is larger than the 60 training rows"),
    (small_spec(dataset="mnist", n_train=20000, layer_sizes=[784, 10]), "n_train = 20000"),
    ("[1, 2]", "a spec is a JSON object"),
    ("{not json", "is not valid JSON"),
])
def test_bad_spec_is_refused_before_any_work(capsys, tmp_path, spec, reason):
    path = tmp_path / "spec.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    code, out, err = run(capsys, "oracle", path, "-o", tmp_path / "case.npz")
    assert code == 2 and reason in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "case.npz").exists()


@pytest.mark.parametrize("content, reason", [
    (b"\xff\xfe{\x00}\x00", r"is not UTF-8 text \(byte 0xff at offset 0\); save it as UTF-8"),
    (b"{\"layer_sizes\": [6, 3], \"activation\": \"tanh\xe9\"}", "is not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nests its JSON too deeply"),
    (b"{\"n_iters\": " + b"9" * 5000 + b"}", "holds a number too long to read"),
    (b"42", "holds a JSON number; a spec is a JSON object"),
    (b"null", "holds a JSON null; a spec is a JSON object"),
    (b"\"spec\"", "holds a JSON string; a spec is a JSON object"),
    (b"", "is not valid JSON: Expecting value at line 1 column 1"),
    (b"\x00\x01\x02garbage", "is not valid JSON"),
])
def test_hostile_spec_files_are_one_line_errors(capsys, tmp_path, content, reason):
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    code, out, err = run(capsys, "oracle", path, "-o", tmp_path / "case.npz")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert re.search(reason, err), err
    assert not (tmp_path / "case.npz").exists()


def test_a_spec_file_with_a_byte_order_mark_is_read(capsys, tmp_path):
    path = tmp_path / "spec.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(small_spec(n_iters=3)).encode())
    assert run(capsys, "oracle", path, "-o", tmp_path / "case.npz")[0] == 0
    code, _, err = run(capsys, "oracle", tmp_path, "-o", tmp_path / "c.npz")
    assert code == 2 and "is a folder; give a .json file" in err


def test_oracle_refuses_an_unwritable_output_before_any_work(capsys, tmp_path, monkeypatch):
    (tmp_path / "spec.json").write_text(json.dumps(small_spec()))
    monkeypatch.setattr(revlearn.sgd, "hypergradient", lambda *a, **k: pytest.fail("work done"))
    code, _, err = run(capsys, "oracle", tmp_path / "spec.json", "-o", tmp_path / "no" / "c.npz")
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "oracle", tmp_path / "spec.json", "-o", tmp_path)
    assert code == 2 and "is a folder" in err
    code, _, err = run(capsys, "oracle", tmp_path / "missing.json", "-o", tmp_path / "c.npz")
    assert code == 2 and "spec file" in err and "does not exist" in err


def test_oracle_on_mnist_and_stored_method(capsys, tmp_path):
    spec = dict(layer_sizes=[784, 12, 10], dataset="mnist", n_train=100, n_valid=100, n_iters=8,
                batch_size=25, alpha=0.3, gamma=0.9, init_scale=0.05, l2=0.001)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code, out, _ = run(capsys, "oracle", tmp_path / "spec.json", "-o", tmp_path / "rev.npz")
    assert code == 0 and "exact_recovery True" in out
    code, _, _ = run(capsys, "oracle", tmp_path / "spec.json", "-o", tmp_path / "sto.npz",
                     "--method", "stored")
    assert code == 0
    # the stored method's answers check against the reversible case (the buffer differs, and a
    # stored trajectory reverses nothing: its file says exact_recovery False)
    stored = outputs_of(tmp_path / "sto.npz", tmp_path)
    assert not bool(stored["exact_recovery"])
    theirs = {k: v for k, v in stored.items() if k not in ("buffer_bits", "exact_recovery")}
    np.savez(tmp_path / "theirs.npz", **theirs)
    code, out, _ = run(capsys, "check", tmp_path / "rev.npz", tmp_path / "theirs.npz",
                       "--rtol", "1e-10")
    assert code == 0, out


@pytest.mark.parametrize("argv, message", [
    (["check", "case.npz"], "revlearn check: error: the following arguments are required: "
                            "THEIRS.npz (see revlearn check --help)"),
    (["oracle", "spec.json"], "revlearn oracle: error: the following arguments are required: -o"),
    (["run", "--bogus"], "revlearn: error: unrecognized arguments: --bogus"),
    (["frobnicate"], "revlearn: error: argument COMMAND: invalid choice: 'frobnicate'"),
])
def test_argparse_errors_are_one_line_and_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("command", ["oracle", "check", "run", "conformance"])
def test_every_subcommand_has_help(command):
    out = subprocess.run([sys.executable, "-m", "revlearn", command, "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "usage: revlearn " + command in out.stdout


# --- golden cases --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.json")))
def test_golden_case_is_reproduced(name):
    """Regenerate the committed case from its spec: inputs identical, answers within 1e-9 (BLAS
    and SIMD libraries may round the last bits differently on another machine)."""
    spec = json.loads((GOLDEN / f"{name}.json").read_text())
    ref = oracle.read_case(GOLDEN / f"{name}.npz")
    case = revlearn.make_case(spec)
    mine = oracle.case_arrays(case, revlearn.hypergradient(case))
    for key in oracle.INPUT_KEYS[1:]:
        assert np.array_equal(mine[key], getattr(ref.case, key) if key != "layer_sizes"
                              else np.array(ref.case.layer_sizes)), key
    assert set(ref.outputs) == {k for k in mine if k in oracle.OUTPUT_KEYS}
    for key, want in ref.outputs.items():
        if key == "buffer_bits":
            assert abs(int(mine[key]) - int(want)) <= 32 * 8, key  # a few words either way
        else:
            np.testing.assert_allclose(mine[key], want, rtol=1e-9,
                                       atol=1e-12 * np.max(np.abs(want)), err_msg=key)


def test_golden_set_covers_the_kinds():
    specs = [json.loads(p.read_text()) for p in GOLDEN.glob("*.json")]
    kinds = {(s["dataset"], s["activation"], bool(s.get("l2_per_weight")),
              bool(s.get("grad_train_inputs"))) for s in specs}
    assert {k[0] for k in kinds} == {"synthetic", "mnist"}
    assert {k[1] for k in kinds} == {"tanh", "relu"}
    assert {k[2] for k in kinds} == {True, False} and True in {k[3] for k in kinds}
