#!/usr/bin/env python3
"""Active learning on MNIST with a small PyTorch model, quarry choosing each batch from tensors.

    PYTHONPATH=build/python python3 examples/pytorch_active_learning.py            # after the build
    python3 examples/pytorch_active_learning.py --data ../shared/data/mnist --strategy margin --rounds 8

Each round trains the model on the labels so far, computes the pool's softmax outputs (a torch
tensor, on the GPU where there is one) and asks quarry for the next batch: ``quarry.score_and_select``
reads the tensor in place (no copy, no NumPy round trip) and returns the k indices to label. The
labels come from the data set's own labels, as a simulated annotator. Printed: the learning curve
(test accuracy by number of labels) of the chosen acquisition and, side by side, of random picks.
"""
import argparse
import gzip
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import quarry


def read_idx(path):
    """An IDX file (gzip or not) as a NumPy array (quarry.load reads these too)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"{path}: not an IDX file of uint8")
    shape = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def train(x, y, device, steps, seed):
    """A fresh model, trained for a fixed number of steps (so that a few labels get as much
    optimisation as many) on minibatches drawn from the labeled set."""
    torch.manual_seed(seed)
    model = Net().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = len(x)
    for _ in range(steps):
        b = torch.randint(0, n, (min(64, n),), device=device)
        opt.zero_grad()
        F.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def predict(model, x, batch=4096):
    return torch.cat([F.softmax(model(x[i:i + batch]), dim=1) for i in range(0, len(x), batch)])


def run(strategy, pool_x, pool_y, test_x, test_y, args, device):
    rng = np.random.default_rng(args.seed)
    labeled = rng.choice(len(pool_x), args.initial, replace=False)
    curve = []
    for r in range(args.rounds + 1):
        idx = torch.as_tensor(labeled, device=device)
        model = train(pool_x[idx], pool_y[idx], device, args.steps, args.seed + r)
        acc = (predict(model, test_x).argmax(1) == test_y).float().mean().item()
        curve.append((len(labeled), acc))
        if r == args.rounds:
            break
        if strategy == "random":
            rest = np.setdiff1d(np.arange(len(pool_x)), labeled)
            new = rng.choice(rest, args.batch, replace=False)
        else:
            probs = predict(model, pool_x)                       # [N, 10] torch tensor
            pick = quarry.score_and_select(probs, strategy, args.batch, exclude=labeled)
            new = pick.index.cpu().numpy()                       # only the k picks leave the device
        labeled = np.concatenate([labeled, new])
    return curve


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "mnist"))
    ap.add_argument("--strategy", default="entropy", help="any quarry acquisition: entropy, margin, ...")
    ap.add_argument("--pool", type=int, default=10000, help="pool size (the first N training images)")
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300, help="training steps per round (minibatches of 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    def load(name):
        return read_idx(os.path.join(args.data, name))

    device = torch.device(args.device)
    to_x = lambda a: torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1).to(device)  # noqa: E731
    pool_x = to_x(load("train-images-idx3-ubyte.gz")[:args.pool])
    pool_y = torch.from_numpy(load("train-labels-idx1-ubyte.gz")[:args.pool].astype(np.int64)).to(device)
    test_x = to_x(load("t10k-images-idx3-ubyte.gz"))
    test_y = torch.from_numpy(load("t10k-labels-idx1-ubyte.gz").astype(np.int64)).to(device)
    torch.set_num_threads(os.cpu_count() or 1)

    start = time.perf_counter()
    curves = {s: run(s, pool_x, pool_y, test_x, test_y, args, device) for s in (args.strategy, "random")}
    print(f"MNIST, pool {len(pool_x)}, {args.rounds} rounds of {args.batch}, device {device}, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"{'labels':>7} {args.strategy:>10} {'random':>10}")
    for (n, a), (_, b) in zip(curves[args.strategy], curves["random"]):
        print(f"{n:>7} {100 * a:>9.1f}% {100 * b:>9.1f}%")


if __name__ == "__main__":
    main()
