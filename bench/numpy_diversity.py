#!/usr/bin/env python3
"""quarry's BADGE and k-center against NumPy implementations written the way DISTIL and
scikit-activeml write them, on the same pool.

The pool is `quarry generate -n N -c C -d D --seed 0` (probabilities [N, C] and embeddings
[N, D], float32): the data bench_diversity generates in memory for the same N, C, D.

NumPy references (the algorithms of the published code, vectorised where the originals loop
in Python, which only favours NumPy):
  badge    as DISTIL's BADGE / Ash et al.'s init_centers: the gradient embeddings
           (p - e_yhat) (x) h are materialised as an N x (C D) float32 matrix; the first centre
           is the largest norm; every pick computes the Euclidean distances of the whole pool
           to the newest centre (sklearn's pairwise_distances: ||x||² - 2 x.c + ||c||², the
           row norms computed once), keeps the minimum, and draws the next centre with
           probability D² / sum D² (numpy's Generator.choice instead of scipy's rv_discrete).
  kcenter  as scikit-activeml's / DISTIL's core-set greedy: the first centre nearest the pool
           mean (as quarry, no labeled set), then per pick the distances of the whole pool to
           the new centre, an elementwise minimum and an argmax.
quarry's figures are the medians of bench_diversity's BM_Diversity runs for the same shapes
(--gbench-json, or run here). NumPy runs with whatever BLAS and threads it has (printed).
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


def numpy_blas():
    """The BLAS library NumPy's process has mapped (Debian's numpy uses libblas.so.3's
    alternative: OpenBLAS when libopenblas is installed, else the reference BLAS)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and ".so" in line}
        return sorted(os.path.realpath(x) for x in libs)
    except OSError:
        return []


def sq_dist_to(x, x_norm2, c):
    """sklearn's euclidean_distances(X, c[None]) squared, clamped at 0 (row norms given)."""
    d = x_norm2 - 2.0 * (x @ c) + float(c @ c)
    np.maximum(d, 0.0, out=d)
    return d


def numpy_badge(p, h, k, seed):
    n, c = p.shape
    d = h.shape[1]
    yhat = p.argmax(1)
    a = p.copy()
    a[np.arange(n), yhat] -= 1.0
    g = (a[:, :, None] * h[:, None, :]).reshape(n, c * d)  # materialised: N x (C D) float32
    g_norm2 = np.einsum("ij,ij->i", g, g)
    rng = np.random.default_rng(seed)
    first = int(np.argmax(g_norm2))
    picks = [first]
    chosen = np.zeros(n, dtype=bool)
    chosen[first] = True
    d2 = sq_dist_to(g, g_norm2, g[first])
    for _ in range(1, k):
        prob = d2.astype(np.float64)  # D(x)² (BADGE squares the distances)
        prob[chosen] = 0.0
        total = prob.sum()
        if total > 0:
            idx = int(rng.choice(n, p=prob / total))
        else:
            idx = int(np.flatnonzero(~chosen)[0])
        picks.append(idx)
        chosen[idx] = True
        np.minimum(d2, sq_dist_to(g, g_norm2, g[idx]), out=d2)
    return picks, g.nbytes


def numpy_kcenter(h, k):
    h_norm2 = np.einsum("ij,ij->i", h, h)
    mean = h.mean(0, dtype=np.float64).astype(np.float32)
    first = int(np.argmin(sq_dist_to(h, h_norm2, mean)))
    picks = [first]
    min_d = sq_dist_to(h, h_norm2, h[first])
    min_d[first] = -1.0
    for _ in range(1, k):
        idx = int(np.argmax(min_d))
        picks.append(idx)
        np.minimum(min_d, sq_dist_to(h, h_norm2, h[idx]), out=min_d)
        min_d[idx] = -1.0
    return picks


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def gbench_medians(path):
    """strategy label -> median real time in seconds of the goal-shape BM_Diversity runs."""
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        name = b["name"]
        if "labeled:0/" not in name or "clusters:0/" not in name:
            continue
        if b.get("aggregate_name") not in (None, "median"):
            continue
        if b.get("run_type") == "iteration" and any(x.get("aggregate_name") == "median" for x in data["benchmarks"]):
            continue
        unit = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[b["time_unit"]]
        out[b["label"]] = b["real_time"] * unit
    return out


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(root, "build"), help="quarry build folder")
    ap.add_argument("--gbench-json", help="bench_diversity results (JSON) to compare with; else run it here")
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("-c", type=int, default=10)
    ap.add_argument("-d", type=int, default=256)
    ap.add_argument("-k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--badge-repeats", type=int, default=None, help="default: --repeats")
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()
    quarry = os.path.join(a.build, "quarry")
    bench = os.path.join(a.build, "bench", "bench_diversity")

    gb_path = a.gbench_json
    if not gb_path:
        gb_path = os.path.join(tempfile.mkdtemp(), "gbench.json")
        subprocess.run([bench, "--benchmark_filter=BM_Diversity/strategy:[01]/.*labeled:0/",
                        "--benchmark_repetitions=" + str(a.repeats), "--benchmark_report_aggregates_only=true",
                        "--benchmark_out=" + gb_path, "--benchmark_out_format=json"], check=True)
    q = gbench_medians(gb_path)

    with tempfile.TemporaryDirectory() as tmp:
        pf, hf = os.path.join(tmp, "P.npy"), os.path.join(tmp, "H.npy")
        subprocess.run([quarry, "generate", "-n", str(a.n), "-c", str(a.c), "--seed", "0", "-o", pf,
                        "--embeddings", hf, "-d", str(a.d)], check=True)
        p, h = np.load(pf), np.load(hf)
        # quarry's k-center picks (deterministic) to compare with NumPy's float32 ones.
        sel = os.path.join(tmp, "kcenter.csv")
        r = subprocess.run([quarry, "select", "--embeddings", hf, "--strategy", "kcenter", "-k", str(a.k),
                            "--device", "cpu", "-o", sel], capture_output=True, text=True)
        q_kc = (np.loadtxt(sel, delimiter=",", skiprows=1, usecols=1, dtype=np.int64).tolist()
                if r.returncode == 0 else None)

    t_kc, kc_all, kc_picks = timed(lambda: numpy_kcenter(h, a.k), a.repeats)
    t_bg, bg_all, (bg_picks, g_bytes) = timed(lambda: numpy_badge(p, h, a.k, 1), a.badge_repeats or a.repeats)

    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "numpy": np.__version__, "python": platform.python_version(), "numpy_blas": numpy_blas(),
                    "load_average": os.getloadavg()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "n": a.n, "c": a.c, "d": a.d, "k": a.k, "repeats": a.repeats, "gbench_json": os.path.abspath(gb_path),
        "numpy_badge_gradient_embeddings_bytes": g_bytes,
        "numpy_kcenter_s": t_kc, "numpy_kcenter_runs_s": kc_all,
        "numpy_badge_s": t_bg, "numpy_badge_runs_s": bg_all,
        "quarry_kcenter_s": q.get("kcenter"), "quarry_badge_s": q.get("badge"),
    }
    if q_kc is not None:
        # NumPy's distances are float32 (||x||² - 2 x.c + ||c||²): where two candidates are
        # within its rounding of each other it may pick the other one, and diverge from there.
        res["kcenter_same_picks_as_numpy_prefix"] = next(
            (i for i, (x, y) in enumerate(zip(kc_picks, q_kc)) if x != y), min(len(kc_picks), len(q_kc)))
        res["kcenter_same_set_as_numpy"] = len(set(kc_picks) & set(q_kc)) / a.k
    res["speedup_kcenter"] = t_kc / q["kcenter"] if q.get("kcenter") else None
    res["speedup_badge"] = t_bg / q["badge"] if q.get("badge") else None
    print(f"pool: N={a.n:,} C={a.c} D={a.d} float32, k={a.k}; NumPy BLAS: {', '.join(res['machine']['numpy_blas']) or '?'}")
    print(f"  {'':10} {'quarry':>10} {'NumPy':>10} {'ratio':>8}")
    for name, t in (("badge", t_bg), ("kcenter", t_kc)):
        qt = q.get(name)
        print(f"  {name:10} {qt if qt else float('nan'):9.3f}s {t:9.3f}s {t / qt if qt else float('nan'):7.1f}x")
    print(f"  NumPy BADGE materialised {g_bytes / 1e9:.2f} GB of gradient embeddings; quarry keeps O(N (C + D)).")
    if q_kc is not None:
        print(f"  k-center: the first {res['kcenter_same_picks_as_numpy_prefix']} picks equal NumPy's (float32); "
              f"{res['kcenter_same_set_as_numpy']:.3f} of the batch in common")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
