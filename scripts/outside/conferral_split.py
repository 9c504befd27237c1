#!/usr/bin/python3
"""Conferral's defender/adversary split of Fashion-MNIST, reproduced.

    conferral_split.py [--split-seed 1] [--data-dir DIR] [--part adversary]

prints the indices of the part's images in the training set, one per line,
in the order Conferral's data.Split gives them: data.SplitIndices (class-
stratified halves, shuffled from the seed by math/rand/v2's PCG-DXSM and
Lemire's bounded integers), written out bit for bit. Needs only numpy.
"""

import argparse
import gzip
import math
import os
import struct

import numpy as np

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MASK = (1 << 64) - 1

class PCG:
    """math/rand/v2.PCG: 128-bit LCG with the DXSM output function."""

    MUL = (2549297995355413924 << 64) | 4865540595714422341
    INC = (6364136223846793005 << 64) | 1442695040888963407

    def __init__(self, seed1, seed2):
        self.state = ((seed1 & MASK) << 64) | (seed2 & MASK)

    def uint64(self):
        self.state = (self.state * self.MUL + self.INC) & ((1 << 128) - 1)
        hi, lo = self.state >> 64, self.state & MASK
        hi ^= hi >> 32
        hi = (hi * 0xDA942042E4DD58B5) & MASK
        hi ^= hi >> 48
        return (hi * (lo | 1)) & MASK

    def intn(self, n):
        """data.rng.intn: Lemire's unbiased bounded integer."""
        prod = self.uint64() * n
        hi, lo = prod >> 64, prod & MASK
        if lo < n:
            thresh = ((1 << 64) - n) % n
            while lo < thresh:
                prod = self.uint64() * n
                hi, lo = prod >> 64, prod & MASK
        return hi

    def shuffle(self, s):
        for i in range(len(s) - 1, 0, -1):
            j = self.intn(i + 1)
            s[i], s[j] = s[j], s[i]


def split_indices(labels, frac=0.5, seed=1):
    """data.SplitIndices: (defender, adversary) image indices."""
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    classes = sorted(by_class)
    take, rem, given = [], [], 0
    for y in classes:
        exact = frac * len(by_class[y])
        take.append(int(math.floor(exact)))
        rem.append(exact - take[-1])
        given += take[-1]
    target = int(math.floor(frac * len(labels) + 0.5))  # Go's math.Round for positives
    for k in sorted(range(len(classes)), key=lambda k: -rem[k]):  # stable: ties in class order
        if given >= target:
            break
        if take[k] < len(by_class[classes[k]]):
            take[k] += 1
            given += 1
    r = PCG(seed, 0x5EED)
    defender, adversary = [], []
    for k, y in enumerate(classes):
        idx = list(by_class[y])
        r.shuffle(idx)
        defender += idx[:take[k]]
        adversary += idx[take[k]:]
    r.shuffle(defender)
    r.shuffle(adversary)
    return defender, adversary


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = struct.unpack(">I", raw[:4])[0]
    ndims = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError("%s: not an IDX file of unsigned bytes" % path)
    dims = struct.unpack(">" + "I" * ndims, raw[4:4 + 4 * ndims])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndims).reshape(dims)


def load(data_dir, part):
    x = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte.gz" % part))
    y = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte.gz" % part))
    return x, y.astype(np.int64)


def main():
    ap = argparse.ArgumentParser(description="Conferral's defender/adversary split of Fashion-MNIST")
    ap.add_argument("--split-seed", type=int, default=1)
    ap.add_argument("--data-dir", default=DATA_DIR)
    ap.add_argument("--part", choices=("defender", "adversary"), default="adversary")
    args = ap.parse_args()
    _, y = load(args.data_dir, "train")
    defender, adversary = split_indices(y, 0.5, args.split_seed)
    print("\n".join(str(i) for i in (defender if args.part == "defender" else adversary)))


if __name__ == "__main__":
    main()
