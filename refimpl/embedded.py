"""Data sets shipped inside the package (`datasets/NAME.xz` and `datasets/NAME.json`).

The .xz file is one xz stream of uint8 arrays stored back to back; the manifest gives each array's
name and shape, the sha256 of the decompressed payload (checked at every load), and the
provenance the build script recorded. Build scripts (`scripts/build_*_subset.py`) write both with
`write`; the loaders read them with `load`. NumPy and the standard library only.
"""

import hashlib
import json
import lzma
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).resolve().parent / "datasets"


def pack(arrays):
    """(payload, manifest): the uint8 arrays' bytes back to back, and each one's name and shape
    with the payload's sha256."""
    payload = b"".join(np.asarray(a, dtype=np.uint8).tobytes() for a in arrays.values())
    layout = [{"name": k, "shape": list(np.shape(a))} for k, a in arrays.items()]
    return payload, {"arrays": layout, "payload_sha256": hashlib.sha256(payload).hexdigest()}


def unpack(payload, manifest, name="embedded data"):
    """The arrays `pack` put in `payload`, after checking its checksum."""
    if hashlib.sha256(payload).hexdigest() != manifest["payload_sha256"]:
        raise RuntimeError(f"the {name} shipped with revlearn is damaged (checksum mismatch); "
                           "reinstall revlearn")
    out, start = {}, 0
    for entry in manifest["arrays"]:
        size = int(np.prod(entry["shape"]))
        out[entry["name"]] = np.frombuffer(payload, np.uint8, size, start).reshape(entry["shape"])
        start += size
    return out


def write(name, arrays, folder=FOLDER, **provenance):
    """Write datasets/NAME.xz (xz preset 9e) and NAME.json (layout, checksums, provenance); the
    manifest. Packing the same arrays again gives the same payload checksum."""
    payload, manifest = pack(arrays)
    packed = lzma.compress(payload, preset=9 | lzma.PRESET_EXTREME)
    manifest.update(provenance, file_sha256=hashlib.sha256(packed).hexdigest(),
                    file_bytes=len(packed))
    folder = Path(folder)
    (folder / f"{name}.xz").write_bytes(packed)
    (folder / f"{name}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


@cache
def load(name):
    """(arrays, manifest) of the data set NAME shipped inside the installed package."""
    folder = resources.files("revlearn") / "datasets"
    manifest = json.loads((folder / f"{name}.json").read_text())
    payload = lzma.decompress((folder / f"{name}.xz").read_bytes())
    return unpack(payload, manifest, name), manifest
