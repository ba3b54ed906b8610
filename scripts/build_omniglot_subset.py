"""Build the Omniglot subset embedded in revlearn from the background-small zip.

    python scripts/build_omniglot_subset.py OMNIGLOT_DIR  # writes refimpl/datasets/omniglot_*

Reads `images_background_small1.zip` (alphabets Balinese, Early_Aramaic, Greek, Korean, Latin; 20
drawings of every character, 105x105 1-bit PNGs), decodes the PNGs with the standard library's
zlib, turns strokes into ink = 1 on background = 0, and down-samples to 28x28 by area averaging
(each output pixel is the mean of the 3.75 x 3.75 input pixels it covers, as the paper's 28x28
images). Stores them as uint8 (round(255 ink)), alphabet by alphabet, character by character,
drawing by drawing (file order), compressed with xz (preset 9e), with a manifest of provenance,
licence and checksums. The rotated tasks are made at load time (`revlearn.omniglot`). Running it
again on the same zip gives the same payload checksum.
"""

import argparse
import hashlib
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from revlearn import embedded, omniglot

OUT = embedded.FOLDER
ZIP = "images_background_small1.zip"
SRC_SIDE = 105


def decode_png_1bit(data):
    """A 1-bit greyscale, non-interlaced PNG as a (H, W) uint8 array of 0/1."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    w, h, depth, color, _, _, interlace = header
    if (depth, color, interlace) != (1, 0, 0):
        raise ValueError(f"expected a 1-bit greyscale non-interlaced PNG, got {header}")
    raw = zlib.decompress(b"".join(idat))
    stride = (w + 7) // 8
    rows, prev = [], bytearray(stride)
    for r in range(h):
        f, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for i in range(stride):  # PNG filters, with 1 byte per "pixel" at bit depth 1
            a = line[i - 1] if i else 0
            b, c = prev[i], prev[i - 1] if i else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(np.unpackbits(np.frombuffer(bytes(line), np.uint8))[:w])
        prev = line
    return np.array(rows, dtype=np.uint8)


def area_matrix(n_in, n_out):
    """R (n_out, n_in): R[i, j] = the share of input pixel j in output pixel i's interval."""
    edges = np.arange(n_out + 1) * n_in / n_out
    R = np.zeros((n_out, n_in))
    for i in range(n_out):
        for j in range(int(edges[i]), min(n_in, int(np.ceil(edges[i + 1])))):
            R[i, j] = min(j + 1, edges[i + 1]) - max(j, edges[i])
    return R / (n_in / n_out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("omniglot_dir", help=f"folder holding {ZIP}")
    args = parser.parse_args(argv)
    path = Path(args.omniglot_dir) / ZIP
    R = area_matrix(SRC_SIDE, omniglot.SIDE)
    images, labels, alphabets = [], [], []
    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png"))
        for name in names:
            _, alphabet, character, _ = name.split("/")
            if alphabet not in alphabets:
                alphabets.append(alphabet)
            ink = 1.0 - decode_png_1bit(z.read(name))  # the PNGs draw black strokes on white
            images.append(np.rint(255 * (R @ ink @ R.T)).astype(np.uint8).ravel())
            labels.append((alphabets.index(alphabet), int(character.removeprefix("character")) - 1))
    labels = np.array(labels, dtype=np.uint8)
    manifest = embedded.write(
        omniglot.SUBSET, {"images": np.array(images), "labels": labels}, folder=OUT,
        alphabets=alphabets, side=omniglot.SIDE,
        source=f"Omniglot ({ZIP}) by Brenden Lake, Ruslan Salakhutdinov and Joshua Tenenbaum, "
               "MIT licence (github.com/brendenlake/omniglot)",
        licence="MIT", selection="every drawing of every character of the five alphabets; "
        "labels = (alphabet index, character index); 105x105 -> 28x28 by area averaging, "
        "ink = 1, stored as round(255 ink)",
        source_md5=hashlib.md5(path.read_bytes()).hexdigest())
    print(f"wrote {OUT / omniglot.SUBSET}.xz: {len(images)} images, {manifest['file_bytes']} "
          f"bytes, payload sha256 {manifest['payload_sha256']}")

if __name__ == "__main__":
    main()
