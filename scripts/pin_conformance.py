"""Pin the conformance suite's answers: write refimpl/conformance_pins.json.

    python scripts/pin_conformance.py
    python scripts/pin_conformance.py --values tests/data/conformance_values.npz

Writes the suite into a temporary folder, and pins the sha256 of every input and answer and a
fingerprint of every answer (`revlearn.conformance.pins_of`). It refuses to change the pinned
answers of a suite version: a change of any answer is a new version of the suite, so raise
SUITE_VERSION in refimpl/conformance.py, say in docs/conformance.md what changed and why, and run
this again.

With --values, it writes instead every entry of every answer (the large case's traces excepted,
7 MB) as this machine computes them, and what computed them (`conformance.products`): where a
machine's matrix products round otherwise than the pins', the tests compare every entry with these
(tests/test_conformance.py).
"""

import argparse
import io
import json
import re
import sys
import tempfile

import numpy as np

from revlearn import conformance, trace
from revlearn.atomic import atomic_write_bytes


def changed(old, new):
    """The (case, key) pairs whose pinned digests differ between two pins documents."""
    out = []
    for name in sorted(set(old["cases"]) | set(new["cases"])):
        a, b = old["cases"].get(name), new["cases"].get(name)
        if a is None or b is None:
            out.append((name, "added" if a is None else "removed"))
            continue
        if a["inputs_sha256"] != b["inputs_sha256"]:
            out.append((name, "inputs"))
        for key in sorted(set(a["answers"]) | set(b["answers"])):
            if a["answers"].get(key, {}).get("sha256") != b["answers"].get(key, {}).get("sha256"):
                out.append((name, key))
    return out


def values_of(records):
    """{"NAME/KEY": array} of every answer, the large cases' traces excepted, and "products"."""
    out = {f"{r['name']}/{k}": a for r in records for k, a in r["arrays"].items()
           if not (r["large"] and k in trace.KEYS)}
    out["products"] = np.array(json.dumps(conformance.products()))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", help="write every answer's entries to this .npz instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        records = conformance.write_suite(f"{folder}/suite")
    if args.values:
        buf = io.BytesIO()
        np.savez_compressed(buf, **values_of(records))
        atomic_write_bytes(args.values, buf.getvalue())
        print(f"wrote {args.values}")
        return
    new = conformance.pins_of(records)
    if conformance.PINS.exists():
        old = conformance.load_pins()
        diffs = changed(old, new)
        if old["suite_version"] == new["suite_version"] and not diffs:
            print(f"unchanged: {conformance.PINS} already pins these answers")
            return
        if old["suite_version"] == new["suite_version"]:
            shown = ", ".join(f"{n} {k}" for n, k in diffs[:6])
            other = conformance.same_products(old["products"], new["products"])
            sys.exit(f"the answers of suite version {old['suite_version']} changed ({shown}"
                     f"{' ...' if len(diffs) > 6 else ''}); raise SUITE_VERSION in "
                     "refimpl/conformance.py and say why in docs/conformance.md"
                     + ("" if other is None else f" (this machine's matrix products also differ "
                        f"from the pins': {other}; pin where they do not)"))
    text = json.dumps(new, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m[1].split()) + "]", text)
    conformance.PINS.write_text(text + "\n")
    print(f"wrote {conformance.PINS} (suite version {new['suite_version']})")


if __name__ == "__main__":
    main()
