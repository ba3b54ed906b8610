"""Build the MNIST subset embedded in revlearn from the four canonical IDX files.

    python scripts/build_mnist_subset.py MNIST_DIR      # writes refimpl/datasets/mnist_subset.*

Takes the first 20,000 canonical training images (the paper's 10,000 training and 10,000
validation images) and every other canonical test image (5,000), stores them as uint8 back to
back, compressed with xz (preset 9e), and writes a manifest with provenance and checksums. Running
it again on the same files gives the same payload checksum.
"""

import argparse
import hashlib
from pathlib import Path

from revlearn import embedded, mnist

OUT = embedded.FOLDER


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist_dir", help="folder with the four canonical MNIST IDX files")
    args = parser.parse_args(argv)
    full = mnist.load_mnist(args.mnist_dir)
    n = mnist.N_TRAIN + mnist.N_VALID
    manifest = embedded.write(
        mnist.SUBSET,
        {"train_images": full.train_images[:n], "train_labels": full.train_labels[:n],
         "test_images": full.test_images[::2], "test_labels": full.test_labels[::2]},
        folder=OUT,
        source="MNIST by Yann LeCun, Corinna Cortes and Christopher Burges, "
               "redistributed under CC BY-SA 3.0",
        selection="train: canonical training images 0-19999 (revlearn uses 0-9999 for training "
                  "and 10000-19999 for validation); test: canonical t10k images 0, 2, ..., 9998",
        source_md5_uncompressed={
            name: hashlib.md5(mnist.read_bytes(mnist._find(Path(args.mnist_dir), name))).hexdigest()
            for name in mnist.FILES.values()})
    print(f"wrote {OUT / mnist.SUBSET}.xz: {manifest['file_bytes']} bytes, payload sha256 "
          f"{manifest['payload_sha256']}")

if __name__ == "__main__":
    main()
