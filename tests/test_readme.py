"""The README's example runs and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def example():
    """The code and the printed lines of the README's "Example" section."""
    section = README[README.index("## Example"):README.index("## How it works")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    printed = re.search(r"prints[^\n]*\n\n```\n(.*?)```", section, re.S).group(1)
    return code, printed.splitlines()


def run(code):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue().splitlines()


def numbers(line):
    return [float(x) for x in re.findall(r"-?\d+\.\d+e[-+]\d+", line)]


def test_the_readme_example_prints_what_the_readme_shows():
    code, shown = example()
    got = run(code)
    assert len(got) == len(shown)
    assert got[:2] == shown[:2]  # the loss, the recovery and the buffer: exact
    for mine, theirs in zip(got[2:], shown[2:], strict=True):
        assert mine.split("analytic")[0] == theirs.split("analytic")[0]
        analytic, numeric, rel = numbers(mine)
        assert analytic == pytest.approx(numbers(theirs)[0], rel=1e-11)
        assert rel < 1e-8 and numeric == pytest.approx(analytic, rel=1e-8)


def test_a_changed_example_output_would_fail():
    # negative control: the comparison notices a wrong last digit of the validation loss
    code, shown = example()
    wrong = shown[0].replace("0.178815", "0.178816")
    assert wrong != shown[0] and run(code)[0] != wrong
