#!/usr/bin/env python3
"""quarry against what users write today in NumPy, on the same pool file.

NumPy paths (as in modAL and baal): entropy as a separate log / multiply / sum, then
  argsort:      np.argsort(-s)[:k]                         (sort the whole pool)
  argpartition: np.argpartition(-s, k)[:k], then sort the k (the better ones)
quarry path: `quarry select --input pool.npy -a entropy -k K -v`, timed by the tool itself
(scoring of the memory-mapped file + top-k; process start and CSV writing excluded) and as a
whole command. The memory-read ceiling comes from bench_cpu's BM_MemoryRead in the same run.
Medians over --repeats runs; NumPy runs single-threaded as users run it.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def median_time(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def numpy_entropy(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(p * np.log(p)).sum(1)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quarry", default=os.path.join(root, "build", "quarry"))
    ap.add_argument("--bench", default=os.path.join(root, "build", "bench", "bench_cpu"))
    ap.add_argument("-n", type=int, default=10_000_000)
    ap.add_argument("-c", type=int, default=10)
    ap.add_argument("-k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pool = os.path.join(tmp, "pool.npy")
        subprocess.run([a.quarry, "generate", "-n", str(a.n), "-c", str(a.c), "--seed", "0", "-o", pool], check=True)
        nbytes = os.path.getsize(pool)

        # quarry: the tool's own timing of score + select, and the whole command.
        q_inner, q_wall = [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            r = subprocess.run([a.quarry, "select", "--input", pool, "-a", "entropy", "-k", str(a.k), "-v",
                                "-o", os.path.join(tmp, "sel.csv")], check=True, capture_output=True, text=True)
            q_wall.append(time.perf_counter() - t0)
            score_s = float(re.search(r"by entropy in ([0-9.]+) s", r.stderr).group(1))
            select_s = float(re.search(r"\) in ([0-9.]+) s", r.stderr.splitlines()[-1]).group(1))
            q_inner.append(score_s + select_s)
        q_idx = np.loadtxt(os.path.join(tmp, "sel.csv"), delimiter=",", skiprows=1, usecols=1, dtype=np.int64)

        p = np.load(pool)  # NumPy users load the array into memory
        t_ent, s = median_time(lambda: numpy_entropy(p), a.repeats)
        t_sort, idx_sort = median_time(lambda: np.argsort(-numpy_entropy(p), kind="stable")[: a.k], a.repeats)

        def partition():
            s = numpy_entropy(p)
            part = np.argpartition(-s, a.k)[: a.k]
            return part[np.argsort(-s[part], kind="stable")]

        t_part, idx_part = median_time(partition, a.repeats)

    bw = None
    if os.path.exists(a.bench):
        r = subprocess.run([a.bench, "--benchmark_filter=BM_MemoryRead", "--benchmark_format=json"],
                           check=True, capture_output=True, text=True)
        bw = json.loads(r.stdout)["benchmarks"][0]["mem_bw_GB/s"]

    q = statistics.median(q_inner)
    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "numpy": np.__version__, "python": platform.python_version()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "n": a.n, "c": a.c, "k": a.k, "repeats": a.repeats, "input_bytes": nbytes,
        "quarry_score_select_s": q, "quarry_command_s": statistics.median(q_wall),
        "numpy_entropy_s": t_ent, "numpy_entropy_argsort_s": t_sort, "numpy_entropy_argpartition_s": t_part,
        "speedup_vs_argpartition": t_part / q, "speedup_vs_argsort": t_sort / q,
        "same_top_k_as_numpy": float(len(set(q_idx.tolist()) & set(idx_part.tolist()))) / a.k,
        "mem_bw_GBps": bw,
        "one_read_s": nbytes / (bw * 1e9) if bw else None,
        "quarry_over_one_read": q / (nbytes / (bw * 1e9)) if bw else None,
    }
    print(f"pool: N={a.n:,} C={a.c} float32 ({nbytes / 1e9:.2f} GB), k={a.k}, median of {a.repeats}")
    print(f"  quarry score+select          {q * 1e3:9.1f} ms   (whole command {res['quarry_command_s'] * 1e3:.1f} ms)")
    print(f"  numpy entropy                {t_ent * 1e3:9.1f} ms")
    print(f"  numpy entropy + argpartition {t_part * 1e3:9.1f} ms   quarry is {res['speedup_vs_argpartition']:.1f}x faster")
    print(f"  numpy entropy + argsort      {t_sort * 1e3:9.1f} ms   quarry is {res['speedup_vs_argsort']:.1f}x faster")
    if bw:
        print(f"  one read of the input at {bw:.1f} GB/s: {res['one_read_s'] * 1e3:.1f} ms;"
              f" quarry takes {res['quarry_over_one_read']:.2f}x that")
    print(f"  top-{a.k} overlap with NumPy's float32 entropy: {res['same_top_k_as_numpy']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print("saved", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
