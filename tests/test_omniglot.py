"""The embedded Omniglot subset: its ten tasks, and that the build script reproduces it."""

import json
from pathlib import Path

import numpy as np
import pytest

from revlearn import omniglot

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "omniglot"


def test_ten_tasks_of_28x28_images_with_their_rotations():
    o = omniglot.tasks()
    assert o.images.shape == (2 * 2720, 784) and len(o.task_names) == 10
    assert np.array_equal(np.bincount(o.task), [480, 440, 480, 800, 520] * 2)
    assert 0.0 <= o.images.min() and o.images.max() <= 1.0
    assert np.bincount(o.drawing).tolist() == [2 * 136] * omniglot.DRAWINGS
    half = len(o.task) // 2
    first = o.images[0].reshape(28, 28)
    assert np.array_equal(o.images[half].reshape(28, 28), np.rot90(first))
    assert not np.array_equal(np.rot90(first), first)
    assert 0.03 < o.images.mean() < 0.2  # ink is 1 on a background of 0, strokes are thin


def test_shipped_file_is_small_and_credited():
    folder = REPO / "refimpl" / "datasets"
    manifest = json.loads((folder / "omniglot_subset.json").read_text())
    assert manifest["licence"] == "MIT" and "Lake" in manifest["source"]
    assert (folder / f"{omniglot.SUBSET}.xz").stat().st_size == manifest["file_bytes"] < 2_000_000


@pytest.mark.skipif(not SHARED.is_dir(), reason="the Omniglot zips are in ../shared only")
def test_build_script_reproduces_the_shipped_payload(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("build", REPO / "scripts" /
                                                  "build_omniglot_subset.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    monkeypatch.setattr(build, "OUT", tmp_path)
    build.main([str(SHARED)])
    shipped = json.loads((REPO / "refimpl" / "datasets" / "omniglot_subset.json").read_text())
    rebuilt = json.loads((tmp_path / "omniglot_subset.json").read_text())
    assert rebuilt["payload_sha256"] == shipped["payload_sha256"]


def test_area_down_sampling_preserves_the_mean():
    import importlib.util
    spec = importlib.util.spec_from_file_location("build", REPO / "scripts" /
                                                  "build_omniglot_subset.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    R = build.area_matrix(105, 28)
    assert np.allclose(R.sum(axis=1), 1.0)
    img = np.random.default_rng(0).random((105, 105))
    assert np.isclose((R @ img @ R.T).mean(), img.mean())
