"""Regenerate the golden case files the tests compare against (tests/golden/*.npz).

    python scripts/make_golden_cases.py

Run it only when a change of results is intended, and say why in the commit message: the tests
exist to catch every other change.
"""

import json
from pathlib import Path

import revlearn
from revlearn import oracle

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"


def main():
    for spec_path in sorted(GOLDEN.glob("*.json")):
        case = revlearn.make_case(json.loads(spec_path.read_text()))
        oracle.write_case(spec_path.with_suffix(".npz"), case, revlearn.hypergradient(case))
        print(f"wrote {spec_path.with_suffix('.npz')}")


if __name__ == "__main__":
    main()
