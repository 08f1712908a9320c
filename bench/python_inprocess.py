#!/usr/bin/env python3
"""quarry from Python against torch eager and NumPy, in one process, side by side.

    PYTHONPATH=build/python python3 bench/python_inprocess.py [--n 10000000] [--c 10] [--k 1000]

  select    entropy + top-k (k = 1000) over one N x C float32 CPU torch tensor (N = 1e7, C = 10):
              quarry   quarry.score_and_select(t, "entropy", k)            (reads t in place)
              torch    torch.topk(-(t * t.log()).sum(1), k)                (eager)
              numpy    a = t.numpy(); s = -(a * np.log(a)).sum(1); argpartition, sort the k
            Goals: quarry >= 3x torch eager and >= 4x NumPy. Runs interleaved (quarry, torch,
            numpy, quarry, ...), medians of --repeats; every top-k is checked against quarry's
            (as index sets: float32 rounding may swap near-ties at the k-th place; >= 99% shared).
  overhead  quarry.score_and_select on a 100 x 10 tensor, k = 10: the median of 2000 calls.
            Goal: under 20 us.
Writes bench/results/cpu-<UTC>-<commit>-python.json (or --out).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import numpy as np
import torch

import quarry


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--c", type=int, default=10)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    torch.manual_seed(0)
    t = torch.rand(args.n, args.c) + 1e-3  # no exact zeros: 0 log 0 would be NaN for torch and NumPy
    t /= t.sum(1, keepdim=True)
    a = t.numpy()
    k = args.k

    def run_quarry():
        return quarry.score_and_select(t, "entropy", k).index.numpy()

    def run_torch():
        return torch.topk(-(t * t.log()).sum(1), k).indices.numpy()

    def run_numpy():
        s = -(a * np.log(a)).sum(1)
        idx = np.argpartition(-s, k)[:k]
        return idx[np.argsort(-s[idx], kind="stable")]

    runs = {"quarry": run_quarry, "torch": run_torch, "numpy": run_numpy}
    times = {name: [] for name in runs}
    shared = {}
    for name, fn in runs.items():  # warm-up, and the check
        _, idx = timed(fn)
        if name == "quarry":
            ref = set(idx.tolist())
        else:
            overlap = len(ref & set(idx.tolist()))
            # float32 rounding differs (quarry sums rows in double): near-ties at the k-th place may swap.
            assert overlap >= 0.99 * k, f"{name}'s top-k differs from quarry's ({overlap} of {k} shared)"
            shared[name] = overlap
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn)[0])
    med = {name: statistics.median(v) for name, v in times.items()}

    small = t[:100].clone()
    for _ in range(200):
        quarry.score_and_select(small, "entropy", 10)
    calls = []
    for _ in range(2000):
        start = time.perf_counter()
        quarry.score_and_select(small, "entropy", 10)
        calls.append(time.perf_counter() - start)
    small_np = small.numpy()
    calls_np = []
    for _ in range(2000):
        start = time.perf_counter()
        quarry.score_and_select(small_np, "entropy", 10)
        calls_np.append(time.perf_counter() - start)
    overhead_us = statistics.median(calls) * 1e6
    overhead_np_us = statistics.median(calls_np) * 1e6

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    result = {
        "what": "quarry.score_and_select vs torch eager vs NumPy, one process (bench/python_inprocess.py)",
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads()},
        "commit": commit,
        "utc": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pool": {"n": args.n, "c": args.c, "k": k, "dtype": "float32", "bytes": args.n * args.c * 4},
        "seconds": {name: {"median": med[name], "runs": times[name]} for name in runs},
        "topk_shared_with_quarry": shared,
        "speedup": {"vs_torch": med["torch"] / med["quarry"], "vs_numpy": med["numpy"] / med["quarry"]},
        "overhead_us": {"torch_100x10": overhead_us, "numpy_100x10": overhead_np_us},
        "goals": {"vs_torch >= 3": med["torch"] / med["quarry"] >= 3, "vs_numpy >= 4": med["numpy"] / med["quarry"] >= 4,
                  "overhead < 20 us": overhead_us < 20},
    }
    print(f"entropy + top-{k} over {args.n} x {args.c} float32 ({args.repeats} runs, medians): "
          f"quarry {med['quarry'] * 1e3:.1f} ms, torch {med['torch'] * 1e3:.1f} ms "
          f"({result['speedup']['vs_torch']:.1f}x), numpy {med['numpy'] * 1e3:.1f} ms "
          f"({result['speedup']['vs_numpy']:.1f}x)")
    print(f"call overhead, 100 x 10: {overhead_us:.1f} us (torch tensor), {overhead_np_us:.1f} us (NumPy)")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"cpu-{datetime.datetime.utcnow().strftime('%Y%m%dT%H%M%SZ')}-{commit}-python.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
