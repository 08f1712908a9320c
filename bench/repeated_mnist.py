#!/usr/bin/env python3
"""Repeated MNIST (after Kirsch et al. 2019): a pool in which every image comes in copies.

Takes UNIQUE images of the MNIST training split, writes each COPIES times with its own Gaussian
pixel noise (standard deviation NOISE on the [0, 1] scale, clipped to [0, 1]; the default 0.0308
is the paper's 0.1 on normalised MNIST, whose pixel standard deviation is 0.3081), keeps VAL other
training images (one copy, no noise) for validation and MNIST's own test split for testing, and
writes them as a MedMNIST-layout .npz (float32 images in [0, 1]) that `quarry simulate --dataset
npz:FILE` reads. On such a pool top-k acquisition takes the copies of its best samples together,
which is what joint batch acquisition (BatchBALD) is meant to avoid.

Usage: bench/repeated_mnist.py OUT.npz [--data DIR] [--unique 6667] [--copies 3] [--noise 0.0308]
                               [--val 2000] [--seed 0]
Standard library only (no NumPy); deterministic for a seed.
"""
import argparse
import array
import gzip
import os
import random
import struct
import sys
import zipfile


def read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    got, n = struct.unpack(">II", data[:8])
    if got != magic:
        sys.exit(f"repeated_mnist.py: {path}: magic {got}, expected {magic}")
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        if (rows, cols) != (28, 28) or len(data) != 16 + n * 784:
            sys.exit(f"repeated_mnist.py: {path}: expected {n} images of 28x28")
        return n, data[16:]
    if len(data) != 8 + n:
        sys.exit(f"repeated_mnist.py: {path}: expected {n} labels")
    return n, data[8:]


def npy_bytes(dtype, shape, payload):
    """A version 1.0 .npy file: header padded so that the data starts on a 64-byte boundary."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        dtype, "".join(f"{d}," for d in shape) if len(shape) == 1 else ", ".join(str(d) for d in shape))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + payload


def floats(pixels):
    """uint8 pixels as little-endian float32 in [0, 1]."""
    out = array.array("f", (p / 255.0 for p in pixels))
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "mnist"))
    ap.add_argument("--unique", type=int, default=6667)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.0308)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.unique < 1 or a.copies < 1 or a.val < 0 or not 0 <= a.noise <= 1:
        ap.error("--unique and --copies must be >= 1, --val >= 0, --noise in [0, 1]")
    if os.path.exists(a.out):
        ap.error(f"{a.out} exists: give a new file")

    n, images = read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"), 2051)
    _, labels = read_idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz"), 2049)
    if a.unique + a.val > n:
        ap.error(f"--unique + --val must be at most the {n} training images")
    tn, test_images = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz"), 2051)
    _, test_labels = read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz"), 2049)

    rng = random.Random(a.seed)
    order = list(range(n))
    rng.shuffle(order)
    pool, val = order[:a.unique], order[a.unique:a.unique + a.val]

    train = array.array("f")
    train_labels = array.array("q")
    for i in pool:
        img = images[i * 784:(i + 1) * 784]
        for _ in range(a.copies):
            train.extend(min(1.0, max(0.0, p / 255.0 + rng.gauss(0.0, a.noise))) for p in img)
            train_labels.append(labels[i])
    if sys.byteorder != "little":
        train.byteswap()
        train_labels.byteswap()
    val_labels = array.array("q", (labels[i] for i in val))
    test_lab = array.array("q", list(test_labels))  # (bytes would be read as raw int64)
    if sys.byteorder != "little":
        val_labels.byteswap()
        test_lab.byteswap()

    tmp = a.out + ".partial"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        m = a.unique * a.copies
        z.writestr("train_images.npy", npy_bytes("<f4", (m, 28, 28), train.tobytes()))
        z.writestr("train_labels.npy", npy_bytes("<i8", (m,), train_labels.tobytes()))
        z.writestr("val_images.npy", npy_bytes("<f4", (len(val), 28, 28),
                                                floats(b"".join(images[i * 784:(i + 1) * 784] for i in val))))
        z.writestr("val_labels.npy", npy_bytes("<i8", (len(val),), val_labels.tobytes()))
        z.writestr("test_images.npy", npy_bytes("<f4", (tn, 28, 28), floats(test_images)))
        z.writestr("test_labels.npy", npy_bytes("<i8", (tn,), test_lab.tobytes()))
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {a.unique} x {a.copies} pool images (noise {a.noise}), {len(val)} validation, "
          f"{tn} test")


if __name__ == "__main__":
    main()
