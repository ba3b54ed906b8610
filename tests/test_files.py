"""Corrupt and hostile files: every .npz revlearn reads (case files, answer files, checkpoints,
data sets) goes through `revlearn.npzfile`, and every bad one gives a one-line error and exit 2,
never a traceback; a fuzz test mutates real files byte by byte."""

import gzip
import io
import json
import re
import shutil
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

from revlearn import InputError, cli, npzfile, oracle
from revlearn.experiments import plotting

from conftest import small_spec

TRIPPED = []


def _trip(tag):
    TRIPPED.append(tag)


class Tripwire:
    """Unpickling one calls _trip: proof that a reader unpickled."""

    def __reduce__(self):
        return (_trip, ("unpickled",))


# --- making files --------------------------------------------------------------------------------

def npz_bytes(compressed=False, **arrays):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npy_member(header, data=b""):
    """An .npy (version 1.0) member with the header dict text given, padded as NumPy pads."""
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


def zip_bytes(*members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; we want them
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def patch_directory(blob, offset, fmt, value):
    """blob with one field of its first central-directory entry replaced."""
    at = blob.index(b"PK\x01\x02") + offset
    return blob[:at] + struct.pack(fmt, value) + blob[at + struct.calcsize(fmt):]


def pickled_npz():
    return npz_bytes(X_train=np.array([Tripwire()], dtype=object))


def hostile_files():
    """kind -> (bytes, a fragment the error must hold)."""
    real = npz_bytes(compressed=True, X_train=np.linspace(0, 1, 4000).reshape(400, 10),
                     y_train=np.arange(400) % 3)
    rng = np.random.default_rng(5)
    garbled = bytearray(real)
    for i in rng.integers(100, len(real) - 100, 64):
        garbled[i] ^= int(rng.integers(1, 256))
    npy = io.BytesIO()
    np.save(npy, np.zeros(3))
    huge = npy_member("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }",
                      b"\0" * 16)
    zeros = npz_bytes(compressed=True, X_train=np.zeros(1000))
    return {
        "truncated": (real[:len(real) // 2], "is damaged or truncated: its zip directory cannot"),
        "garbled": (bytes(garbled), "is damaged"),
        "text": (b"X_train = 1, 2, 3\n", "is a text file, not an .npz file"),
        "empty": (b"", r"is empty \(0 bytes\)"),
        "gzip": (gzip.compress(real), "is gzip-compressed"),
        "single npy": (npy.getvalue(), "is a single .npy array"),
        "pickled": (pickled_npz(), "X_train is an object array, stored pickled; revlearn never "
                                   "unpickles"),
        "huge shape": (zip_bytes(("X_train.npy", huge)),
                       r"X_train declares shape \(1000000, 1000000\) of float64 \(7.3 TiB\) but "
                       "holds 16 bytes"),
        "zip bomb": (patch_directory(zeros, 24, "<I", 0xFFFFFFF0),
                     "X_train declares 4.0 GiB from .* of compressed data, more than its "
                     "compression can hold"),
        "duplicate": (zip_bytes(("X_train.npy", npy.getvalue()), ("X_train.npy", npy.getvalue())),
                      "holds 'X_train.npy' twice"),
        "not an array": (zip_bytes(("notes.txt", b"hello")), "holds 'notes.txt', which is not "
                                                              "an .npy array"),
        "encrypted": (patch_directory(zeros, 8, "<H", 1), "X_train is encrypted"),
        "bzip2": (patch_directory(zeros, 10, "<H", 12), "X_train uses zip compression method 12"),
        "bad header": (zip_bytes(("X_train.npy", npy_member(
            "{'descr': '<f8', 'fortran_order': False, 'shape': 'big', }"))),
            "X_train declares shape 'big'"),
        "header not a dict": (zip_bytes(("X_train.npy", npy_member("__import__('os')"))),
                              "X_train has a header that is not an .npy header"),
        "complex dtype": (zip_bytes(("X_train.npy", npy_member(
            "{'descr': [('a', '<f8'), ('b', '|O')], 'fortran_order': False, 'shape': (1,), }",
            b"\0" * 16))), "X_train is an object array"),
    }


KINDS = sorted(hostile_files())


# --- the reader itself ---------------------------------------------------------------------------

def test_read_npz_gives_back_what_numpy_saved(tmp_path):
    arrays = dict(f8=np.linspace(-1, 1, 12).reshape(3, 4), f4=np.ones(5, np.float32),
                  i4=np.arange(6, dtype=np.int32).reshape(2, 3), b=np.array([True, False]),
                  s=np.array("a spec, in unicode: \u03b3"), empty=np.zeros((0, 7)),
                  fortran=np.asfortranarray(np.arange(12.0).reshape(3, 4)),
                  big_endian=np.arange(4, dtype=">f8"), scalar=np.array(3.5))
    arrays["theta/alpha"] = np.full((2, 2), -np.inf)
    for compressed in (False, True):
        path = tmp_path / f"a{compressed}.npz"
        path.write_bytes(npz_bytes(compressed, **arrays))
        got = npzfile.read_npz(path, "file")
        assert set(got) == set(arrays)
        for k, a in arrays.items():
            assert got[k].dtype.kind == a.dtype.kind and got[k].dtype.isnative, k
            np.testing.assert_array_equal(got[k], a, err_msg=k)
            assert got[k].flags.writeable and got[k].flags.owndata, k
        assert npzfile.inspect_npz(path, "file")["f8"] == ((3, 4), np.dtype("<f8"))


@pytest.mark.parametrize("kind", KINDS)
def test_each_hostile_file_is_refused_in_our_words(tmp_path, kind):
    blob, reason = hostile_files()[kind]
    path = tmp_path / "hostile.npz"
    path.write_bytes(blob)
    TRIPPED.clear()
    with pytest.raises(InputError, match=reason) as e:
        npzfile.read_npz(path, "dataset")
    message = str(e.value)
    assert message.startswith(f"dataset {path} ") or message.startswith(f"dataset {path}:")
    assert "\n" not in message and "allow_pickle" not in message and "unsafe" not in message
    assert TRIPPED == []


def test_pickled_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "p.npz"
    path.write_bytes(pickled_npz())
    TRIPPED.clear()
    with np.load(path, allow_pickle=True) as f:  # negative control: the tripwire works
        f["X_train"]
    assert TRIPPED == ["unpickled"]
    TRIPPED.clear()
    with pytest.raises(InputError, match="object array"):
        npzfile.read_npz(path, "dataset")
    with pytest.raises(InputError, match="object array"):
        npzfile.inspect_npz(path, "dataset")
    assert TRIPPED == []


def peak_bytes_while(f):
    tracemalloc.start()
    try:
        f()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kind", ["huge shape", "zip bomb"])
def test_huge_declared_sizes_are_refused_without_allocating(tmp_path, kind):
    path = tmp_path / "big.npz"
    path.write_bytes(hostile_files()[kind][0])

    def read():
        with pytest.raises(InputError):
            npzfile.read_npz(path, "dataset")

    assert peak_bytes_while(read) < 1 << 20


def test_a_file_that_expands_beyond_the_limit_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "zeros.npz"
    path.write_bytes(npz_bytes(compressed=True, X_train=np.zeros(1 << 22)))  # 32 MiB, 33 KB
    assert path.stat().st_size < 100_000
    assert npzfile.read_npz(path, "dataset")["X_train"].shape == (1 << 22,)  # control: it reads

    def read():
        with pytest.raises(InputError, match=r"would expand to 32.0 MiB, more than the limit "
                                             r"\(8.0 MiB\); revlearn refuses it unread"):
            npzfile.read_npz(path, "dataset", max_bytes=8 << 20)

    assert peak_bytes_while(read) < 1 << 20
    monkeypatch.setattr(npzfile.memory, "physical_memory", lambda: 8 << 20)
    with pytest.raises(InputError, match=r"more than this machine's memory \(8.0 MiB\)"):
        npzfile.read_npz(path, "dataset")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="case file .*absent.npz does not exist"):
        npzfile.read_npz(tmp_path / "absent.npz", "case file")
    with pytest.raises(InputError, match="is a folder; give an .npz file"):
        npzfile.read_npz(tmp_path, "case file")


# --- every reader, through the command line ------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A real case file, an answer file for it, and the folder of a finished `revlearn run`."""
    folder = tmp_path_factory.mktemp("real")
    (folder / "spec.json").write_text(json.dumps(small_spec(grad_train_inputs=True)))
    case = folder / "case.npz"
    assert cli.main(["oracle", str(folder / "spec.json"), "-o", str(case)]) == 0
    with np.load(case, allow_pickle=False) as f:
        np.savez(folder / "theirs.npz", **{k: f[k] for k in f.files if k in oracle.OUTPUT_KEYS})
    run = folder / "run"
    real_pyplot = plotting.pyplot
    plotting.pyplot = lambda: None
    try:
        assert cli.main(["run", "l2", "--small", "--out", str(run)]) == 0
    finally:
        plotting.pyplot = real_pyplot
    return dict(case=case, theirs=folder / "theirs.npz", run=run)


@pytest.fixture
def no_matplotlib(monkeypatch):
    monkeypatch.setattr(plotting, "pyplot", lambda: None)


def command(consumer, files, path, tmp_path):
    """The argv that makes `consumer` read the file at path (written by the caller)."""
    if consumer == "case file":
        return ["check", path, files["theirs"]]
    if consumer == "answer file":
        return ["check", files["case"], path]
    if consumer == "checkpoint":
        return ["run", "--resume", path.parent]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(small_spec(layer_sizes=[10, 4, 3], dataset=str(path))))
    return ["oracle", spec, "-o", tmp_path / "out.npz"]


def run_cli(capsys, argv):
    """(exit code, stdout, stderr) of revlearn.cli.main in this process; any exception escaping
    main is a failure of the test (a user would have seen a traceback)."""
    try:
        code = cli.main([str(a) for a in argv])
    except BaseException as e:  # noqa: BLE001 - precisely what must never happen
        pytest.fail(f"revlearn {' '.join(map(str, argv))} raised {type(e).__name__}: {e}")
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, argv):
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.startswith(f"revlearn {argv[0]}: error: "), err
    assert "Traceback" not in err and "allow_pickle" not in err


CONSUMERS = ["case file", "answer file", "checkpoint", "dataset"]


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("kind", ["truncated", "garbled", "text", "pickled", "huge shape",
                                  "zip bomb"])
def test_every_reader_refuses_every_hostile_file_with_exit_2(capsys, files, tmp_path, kind,
                                                              consumer, no_matplotlib):
    blob, reason = hostile_files()[kind]
    path = tmp_path / ("checkpoint.npz" if consumer == "checkpoint" else "hostile.npz")
    path.write_bytes(blob)
    argv = command(consumer, files, path, tmp_path)
    TRIPPED.clear()
    code, out, err = run_cli(capsys, argv)
    assert_one_line_error(code, out, err, argv)
    assert str(path) in err and TRIPPED == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["checkpoint.npz"] if consumer == "checkpoint" else
        ["hostile.npz"] + ["spec.json"] * (consumer == "dataset"))  # nothing written


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_the_real_files_are_accepted(capsys, files, tmp_path, consumer, no_matplotlib):
    """The control for the tests above: each consumer, given a good file, succeeds."""
    if consumer == "dataset":
        path = tmp_path / "d.npz"
        dataset_file(path)
    elif consumer == "checkpoint":
        shutil.copytree(files["run"], tmp_path / "run")
        path = tmp_path / "run" / "checkpoint.npz"
    else:
        path = files["case" if consumer == "case file" else "theirs"]
    code, out, err = run_cli(capsys, command(consumer, files, path, tmp_path))
    assert code == 0 and err == "", err


# --- the fuzz ------------------------------------------------------------------------------------

def structural_positions(blob):
    """Byte offsets where a zip keeps its structure: each member's local header and the start of
    its .npy header, the central directory and the end record."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        starts = [i.header_offset for i in zf.infolist()]
    directory = blob.index(b"PK\x01\x02")
    positions = [p for s in starts for p in range(s, min(s + 160, len(blob)))]
    return np.array(sorted(set(positions) | set(range(directory, len(blob)))))


def mutants(blob, rng, n_flips, n_cuts):
    """(description, bytes): single bytes flipped, half at structural positions, half anywhere;
    as many runs of 2 to 16 random bytes, half of them structural; half as many 16- and 32-bit
    fields of the zip directory (central directory and end record) set to random values or to
    0 or all ones; and truncations at random lengths."""
    structural = structural_positions(blob)
    directory = blob.index(b"PK\x01\x02")
    where = np.concatenate([rng.choice(structural, n_flips // 2),
                            rng.integers(0, len(blob), n_flips - n_flips // 2)])
    for i in where:
        flip = int(rng.integers(1, 256))
        mutant = bytearray(blob)
        mutant[i] ^= flip
        yield f"byte {i} ^= {flip:#04x}", bytes(mutant)
    starts = np.concatenate([rng.choice(structural, n_flips // 2),
                             rng.integers(0, len(blob), n_flips - n_flips // 2)])
    for i in starts:
        k = int(rng.integers(2, 17))
        mutant = bytearray(blob)
        mutant[i:i + k] = rng.integers(0, 256, len(mutant[i:i + k]), dtype=np.uint8).tobytes()
        yield f"bytes {i}..{i + k - 1} random", bytes(mutant)
    for i in rng.integers(directory, len(blob) - 4, n_flips // 2):
        width = int(rng.choice([2, 4]))
        value = int(rng.choice([0, (1 << 8 * width) - 1, int(rng.integers(0, 1 << 8 * width))]))
        mutant = bytearray(blob)
        mutant[i:i + width] = value.to_bytes(width, "little")
        yield f"directory bytes {i}..{i + width - 1} = {value:#x}", bytes(mutant)
    for n in sorted(rng.integers(0, len(blob), n_cuts)):
        yield f"truncated to {n} bytes", blob[:n]


def untimed(text):
    return re.sub(r"\d+\.\d+ s$", "", text, flags=re.M)


def dataset_file(path):
    """A real .npz data set, as np.savez writes it."""
    rng = np.random.default_rng(0)
    np.savez(path, X_train=rng.normal(size=(60, 10)), y_train=rng.integers(0, 3, 60),
             X_valid=rng.normal(size=(50, 10)), y_valid=rng.integers(0, 3, 50))


@pytest.mark.parametrize("consumer, n_flips, n_cuts", [("case file", 160, 40),
                                                        ("answer file", 160, 40),
                                                        ("checkpoint", 80, 20),
                                                        ("dataset", 160, 40)])
def test_fuzz_every_mutant_is_a_clean_error_or_the_right_answer(capsys, files, tmp_path,
                                                               consumer, n_flips, n_cuts,
                                                               no_matplotlib):
    if consumer == "checkpoint":
        shutil.copytree(files["run"], tmp_path / "run")
        path = tmp_path / "run" / "checkpoint.npz"
    elif consumer == "dataset":
        path = tmp_path / "mutant.npz"
        dataset_file(path)
    else:
        path = tmp_path / "mutant.npz"
        path.write_bytes(files["case" if consumer == "case file" else "theirs"].read_bytes())
    original = path.read_bytes()
    argv = command(consumer, files, path, tmp_path)
    written = tmp_path / "out.npz"  # what the dataset's consumer (revlearn oracle) writes
    want = run_cli(capsys, argv)
    assert want[0] == 0 and want[2] == ""
    answer = written.read_bytes() if consumer == "dataset" else None
    results = path.parent / "results.json"
    counts = {0: 0, 2: 0}
    for what, blob in mutants(original, np.random.default_rng(2024), n_flips, n_cuts):
        path.write_bytes(blob)
        written.unlink(missing_ok=True)
        before = results.read_bytes() if consumer == "checkpoint" else None
        code, out, err = run_cli(capsys, argv)
        assert code in (0, 2), f"{what}: exit {code}\n{out}{err}"
        counts[code] += 1
        if code == 2:
            assert_one_line_error(code, out, err, argv)
            assert out == "", f"{what}: printed before refusing\n{out}"
            assert not written.exists(), f"{what}: a case file written before refusing"
            if before is not None:
                assert results.read_bytes() == before, f"{what}: results.json rewritten"
        elif consumer == "checkpoint":  # the same finished run, re-plotted
            assert json.loads(results.read_text())["records"] == json.loads(before)["records"]
        elif answer is not None:  # the same case file (the message says how long it took)
            assert written.read_bytes() == answer, f"{what}: another case file"
            assert untimed(out) == untimed(want[1]) and err == "", f"{what}\n{out}"
        else:
            assert (out, err) == (want[1], want[2]), f"{what}: another answer\n{out}"
    total = sum(counts.values())
    assert counts[2] > 0.5 * total, counts  # most mutants are caught
