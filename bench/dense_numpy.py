#!/usr/bin/env python3
"""Dense outputs: `quarry score --reduce` against the NumPy users write, and against one read.

The pool: N cases of C x S^3 float16 probabilities ([N, C, S, S, S], default 64 x 2 x 128^3 =
512 MiB), written once into a scratch folder. Timed, medians over --repeats, side by side in one
run (the file is in the page cache for all of them):
  quarry:  `quarry score --input P.npy --reduce mean|topq:Q -o s.npy` as a whole process;
  numpy:   (-(p * log p).sum(1)).reshape(N, -1).mean(1) per group of cases (float16 math, as the
           array is stored; and float32, cast first), top-q by np.partition per case;
  one read: reading the file into memory once (one read() into a buffer, one thread).
Writes bench/results/dense-<time>-<commit>.json.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def numpy_mean(p, cast):
    out = []
    for n in range(p.shape[0]):  # case by case, as a memory-bounded user would
        x = p[n].astype(np.float32) if cast else p[n]
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(float((-(x * np.log(x)).sum(0)).mean()))
    return out


def numpy_topq(p, q):
    out = []
    for n in range(p.shape[0]):
        x = p[n].astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = (-(x * np.log(x)).sum(0)).ravel()
        m = int(np.ceil(q * h.size))
        out.append(float(np.partition(h, h.size - m)[h.size - m:].mean()))
    return out


def one_read(path):
    size = os.path.getsize(path)
    buf = bytearray(size)
    with open(path, "rb", buffering=0) as f:
        view = memoryview(buf)
        got = 0
        while got < size:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quarry", default="build/quarry")
    ap.add_argument("--cases", type=int, default=64)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--q", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "p.npy")
        shape = (a.cases, a.classes, a.size, a.size, a.size)
        p = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        rng = np.random.default_rng(0)
        for n in range(a.cases):
            g = rng.random((a.classes, a.size, a.size, a.size), dtype=np.float32) + 1e-3
            p[n] = g / g.sum(0)
        p.flush()
        del p
        p = np.load(path, mmap_mode="r")
        one_read(path)  # into the page cache
        out = os.path.join(tmp, "s.npy")
        results = {}

        def quarry(reduce):
            subprocess.run([a.quarry, "score", "--input", path, "--reduce", reduce, "-o", out], check=True)

        topq = f"topq:{a.q:g}"
        results["read_s"] = median_time(lambda: one_read(path), a.repeats)
        results["quarry_mean_s"] = median_time(lambda: quarry("mean"), a.repeats)
        results["quarry_topq_s"] = median_time(lambda: quarry(topq), a.repeats)
        quarry("mean")
        q_mean = np.load(out)
        results["numpy_mean_f32_s"] = median_time(lambda: numpy_mean(p, True), a.repeats)
        results["numpy_mean_f16_s"] = median_time(lambda: numpy_mean(p, False), 1)
        results["numpy_topq_s"] = median_time(lambda: numpy_topq(p, a.q), a.repeats)
        ref = numpy_mean(p, True)
        results["max_abs_diff_mean"] = float(np.max(np.abs(q_mean - np.array(ref))))
        results["speedup_mean_vs_numpy_f32"] = results["numpy_mean_f32_s"] / results["quarry_mean_s"]
        results["speedup_topq_vs_numpy"] = results["numpy_topq_s"] / results["quarry_topq_s"]
        results["mean_over_read"] = results["quarry_mean_s"] / results["read_s"]
        results["topq_over_read"] = results["quarry_topq_s"] / results["read_s"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    doc = {"benchmark": "dense", "commit": commit, "time": stamp, "machine": platform.node(),
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "pool": {"shape": list(shape), "dtype": "float16", "bytes": int(np.prod(shape)) * 2},
           "repeats": a.repeats, "results": results}
    os.makedirs(a.out, exist_ok=True)
    dest = os.path.join(a.out, f"dense-{stamp}-{commit}.json")
    with open(dest, "w") as f:
        json.dump(doc, f, indent=2)
    json.dump(doc, sys.stdout, indent=2)
    print(f"\nwrote {dest}")


if __name__ == "__main__":
    main()
