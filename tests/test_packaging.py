"""Packaging as people expect: one version, a typed package, licences stated, runs ignored."""

import importlib.metadata
import re
from pathlib import Path

import pytest

import revlearn

ROOT = Path(__file__).resolve().parent.parent


def pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_single_sourced():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.?(dev|a|b|rc)\d+)?", revlearn.__version__)
    project = pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "revlearn.__version__"}
    # the installed metadata was built from it (reinstall after changing the version)
    assert importlib.metadata.version("revlearn") == revlearn.__version__


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (Path(revlearn.__file__).parent / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["revlearn"]


def test_licences_are_stated_for_the_code_and_the_shipped_data():
    project = pyproject()
    assert project["project"]["license"] == "MIT AND CC-BY-SA-3.0"
    assert project["project"]["license-files"] == ["LICENSE", "NOTICE"]
    setuptools = re.search(r"setuptools>=(\d+)", " ".join(project["build-system"]["requires"]))
    assert setuptools and int(setuptools.group(1)) >= 77  # PEP 639 license fields
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    notice = " ".join((ROOT / "NOTICE").read_text().split())
    for credit in ("Yann LeCun, Corinna Cortes and Christopher J. C. Burges",
                   "Creative Commons Attribution-ShareAlike 3.0", "Brenden M. Lake",
                   "Copyright (c) 2015 Brenden Lake", "MIT License"):
        assert credit in notice, credit


def test_run_folders_are_ignored_by_git():
    assert "revlearn-runs/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_conformance_pins_and_the_exact_vectors_ship_with_the_package():
    folder = Path(revlearn.__file__).parent
    shipped = pyproject()["tool"]["setuptools"]["package-data"]["revlearn"]
    for name in ("conformance_pins.json", "exact_vectors.json"):
        assert (folder / name).is_file() and name in shipped, name
