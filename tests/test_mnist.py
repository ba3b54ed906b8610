"""The MNIST IDX reader and the embedded subset."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import revlearn
from revlearn import InputError, embedded, mnist

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_full_mnist = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"the canonical MNIST files are not at {SHARED} (developer data)")


def write_idx(path, magic, dims, payload, compress=False):
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload
    path.write_bytes(gzip.compress(raw) if compress else raw)


def fake_mnist(folder, n_train=3, n_test=2, compress=True):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        gz = ".gz" if compress else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{gz}", 0x803, [n, 28, 28],
                  rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes(), compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{gz}", 0x801, [n],
                  rng.integers(0, 10, n, dtype=np.uint8).tobytes(), compress)
    return folder


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_reads_gzip_and_plain_files(tmp_path, compress):
    m = mnist.load_mnist(fake_mnist(tmp_path, compress=compress))
    assert m.train_images.shape == (3, 784) and m.train_images.dtype == np.uint8
    assert m.test_labels.shape == (2,) and m.test_labels.dtype == np.int64


def test_corrupted_header_is_refused(tmp_path):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", 0x801, [3, 28, 28], bytes(3 * 784), True)
    with pytest.raises(InputError, match="magic number 0x00000801; an IDX image file starts with "
                                         "0x00000803"):
        mnist.load_mnist(tmp_path)


def test_truncated_file_is_refused(tmp_path):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, [2, 28, 28], bytes(784), True)
    with pytest.raises(InputError, match="truncated or damaged"):
        mnist.load_mnist(tmp_path)


def test_wrong_image_size_and_count_mismatch(tmp_path):
    fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, [2, 32, 32], bytes(2 * 1024), True)
    with pytest.raises(InputError, match="32x32 images"):
        mnist.load_mnist(tmp_path)
    fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 0x801, [4], bytes(4), True)
    with pytest.raises(InputError, match="3 images but 4 labels"):
        mnist.load_mnist(tmp_path)


def test_missing_file_and_bad_gzip(tmp_path):
    with pytest.raises(InputError, match="train-images-idx3-ubyte.*missing"):
        mnist.load_mnist(tmp_path)
    fake_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(InputError, match="not a readable gzip file"):
        mnist.load_mnist(tmp_path)
    garbled = bytearray(gzip.compress(bytes(range(256)) * 40))
    garbled[20:60] = bytes(b ^ 0xFF for b in garbled[20:60])  # a corrupt deflate stream
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(bytes(garbled))
    with pytest.raises(InputError, match="not a readable gzip file"):
        mnist.load_mnist(tmp_path)


def test_embedded_subset_shapes_and_values():
    X_train, y_train, X_valid, y_valid = mnist.embedded()
    X_test, y_test = mnist.embedded_test()
    assert X_train.shape == X_valid.shape == (10_000, 784) and X_test.shape == (5_000, 784)
    for X in (X_train, X_valid, X_test):
        assert X.dtype == np.float64 and X.min() == 0.0 and X.max() == 1.0
        assert not X.flags.writeable
    for y in (y_train, y_valid, y_test):
        assert set(np.unique(y)) == set(range(10))


def test_embedded_subset_checksum_is_verified():
    payload, manifest = embedded.pack({"a": np.arange(5, dtype=np.uint8)})
    assert list(embedded.unpack(payload, manifest)["a"]) == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="damaged"):
        embedded.unpack(payload[:-1] + b"\x07", manifest)


def test_mnist_spec_uses_the_embedded_subset():
    case = revlearn.make_case(dict(layer_sizes=[784, 10], dataset="mnist", n_train=300,
                                   n_valid=200, n_iters=2, batch_size=100, alpha=0.1, gamma=0.9,
                                   init_scale=0.01))
    X_train, y_train, X_valid, _ = mnist.embedded()
    assert np.array_equal(case.X_train, X_train[:300])
    assert np.array_equal(case.y_train, y_train[:300])
    assert np.array_equal(case.X_valid, X_valid[:200])
    with pytest.raises(InputError, match="n_train = 10001 but dataset mnist has 10000 rows"):
        revlearn.make_case(dict(case.spec, n_train=10_001))


@needs_full_mnist
def test_embedded_subset_equals_the_canonical_images():
    full = mnist.load_mnist(SHARED)
    X_train, y_train, X_valid, y_valid = mnist.embedded()
    X_test, y_test = mnist.embedded_test()
    assert np.array_equal(X_train * 255, full.train_images[:10_000])
    assert np.array_equal(y_valid, full.train_labels[10_000:20_000])
    assert np.array_equal(X_valid * 255, full.train_images[10_000:20_000])
    assert np.array_equal(X_test * 255, full.test_images[::2])
    assert np.array_equal(y_test, full.test_labels[::2])
    assert len(full.train_images) == 60_000 and len(full.test_images) == 10_000


def test_a_label_outside_0_to_9_is_refused(tmp_path):
    # one flipped byte of a plain labels file gave label 216: refused, not an IndexError later
    folder = fake_mnist(tmp_path, compress=False)
    path = folder / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[9] = 216
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="holds label 216 at row 1; MNIST labels are 0 to 9"):
        mnist.load_mnist(folder)


def byte_mutants(blob, rng, n):
    """(description, bytes): n single bytes flipped, n runs of 2 to 16 random bytes (half of each
    in the first 32 bytes, where gzip and IDX keep their headers), n truncations."""
    def where():
        return np.concatenate([rng.integers(0, min(32, len(blob)), n // 2),
                               rng.integers(0, len(blob), n - n // 2)])
    for i in where():
        flip = int(rng.integers(1, 256))
        mutant = bytearray(blob)
        mutant[i] ^= flip
        yield f"byte {i} ^= {flip:#04x}", bytes(mutant)
    for i in where():
        k = int(rng.integers(2, 17))
        mutant = bytearray(blob)
        mutant[i:i + k] = rng.integers(0, 256, len(mutant[i:i + k]), dtype=np.uint8).tobytes()
        yield f"bytes {i}..{i + k - 1} random", bytes(mutant)
    for k in sorted(rng.integers(0, len(blob), n)):
        yield f"truncated to {k} bytes", blob[:k]


@pytest.mark.parametrize("compress", [True, False])
def test_fuzz_every_damaged_idx_file_is_a_clean_error_or_the_same_arrays(tmp_path, compress):
    # gzip's CRC catches a changed pixel; in a plain IDX file one is undetectable, so there only
    # the headers (16 bytes for images, 8 for labels) and the lengths are fuzzed
    (tmp_path / "good").mkdir()
    good = fake_mnist(tmp_path / "good", n_train=20, n_test=10, compress=compress)
    want = mnist.load_mnist(good)
    rng, counts = np.random.default_rng(11), {"refused": 0, "same": 0}
    for name in sorted(p.name for p in good.iterdir()):
        blob = (good / name).read_bytes()
        head = 16 if "images" in name else 8
        for what, mutant in byte_mutants(blob if compress else blob[:head], rng, 30):
            if not compress:
                mutant += blob[head:] if len(mutant) == head else b""
            folder = tmp_path / "mutant"
            shutil.copytree(good, folder, dirs_exist_ok=True)
            (folder / name).write_bytes(mutant)
            try:
                got = mnist.load_mnist(folder)
            except InputError as e:
                assert "\n" not in str(e) and str(folder) in str(e), f"{name} {what}: {e}"
                counts["refused"] += 1
                continue
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)), \
                f"{name} {what}: other arrays"
            counts["same"] += 1
    assert counts["refused"] > 0.5 * sum(counts.values()), counts
