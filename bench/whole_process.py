#!/usr/bin/env python3
"""quarry as users run it: whole processes, side by side in one run, medians and ratios.

Two parts:
  startup  `quarry --version`, `info`, `score` and `select` on a tiny pool (1000 x 10, 40 KB):
           the median wall time and the median peak resident memory (ru_maxrss) of each
           process. Goal: under 30 ms and 30 MiB.
  select   entropy + top-k (k = 1000) over an N x C float32 pool file in the page cache, three
           ways, each a whole process writing its k indices:
             quarry    quarry select --input pool.npy -a entropy -k K -o sel.csv
             numpy     python3: np.load, -(p * log p).sum(1), argpartition, sort the k
             modal     python3: what modAL's entropy_sampling computes, reproduced (modAL is not
                       in Debian; its entropy_sampling is scipy.stats.entropy over the
                       transposed probabilities, then multi_argmax = argpartition, then
                       X[query_idx]); needs SciPy (apt-get install python3-scipy), else skipped.
           Goals: quarry >= 3x faster than numpy and >= 10x faster than modal.
The runs of the three are interleaved (quarry, numpy, modal, quarry, ...) so that a busy machine
slows them alike. Every program's top-k is checked against quarry's.
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

NUMPY_SCRIPT = r"""
import sys
import numpy as np
pool, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = np.load(pool)
s = -(p * np.log(p)).sum(1)
idx = np.argpartition(-s, k)[:k]
idx = idx[np.argsort(-s[idx], kind="stable")]
np.save(out, idx)
"""

MODAL_SCRIPT = r"""
import sys
import numpy as np
from scipy.stats import entropy
pool, k, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
X = np.load(pool)                                # classifier.predict_proba(X) of a fitted model
e = np.transpose(entropy(np.transpose(X)))      # modAL.uncertainty.classifier_entropy
query_idx = np.argpartition(-e, k - 1)[:k]      # modAL.utils.selection.multi_argmax
chosen = X[query_idx]                           # entropy_sampling returns query_idx, X[query_idx]
np.save(out, query_idx)
"""


def run_process(argv, env=None):
    """Runs argv to completion; returns (seconds, peak RSS in MiB). Fails loudly on an error."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed with exit {proc.returncode}:\n{err}")
    return seconds, usage.ru_maxrss / 1024.0


def median_runs(argv_list, repeats):
    """Interleaves the commands `repeats` times; returns per command (median s, median MiB)."""
    times = [[] for _ in argv_list]
    rss = [[] for _ in argv_list]
    for _ in range(repeats):
        for i, argv in enumerate(argv_list):
            t, m = run_process(argv)
            times[i].append(t)
            rss[i].append(m)
    return [(statistics.median(t), statistics.median(m)) for t, m in zip(times, rss)]


def have_module(python, name):
    return subprocess.run([python, "-c", f"import {name}"], capture_output=True).returncode == 0


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quarry", default=os.path.join(root, "build", "quarry"))
    ap.add_argument("--python", default="/usr/bin/python3", help="a Python with NumPy (and SciPy for modal)")
    ap.add_argument("-n", type=int, default=10_000_000)
    ap.add_argument("-c", type=int, default=10)
    ap.add_argument("-k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5, help="runs of each select command")
    ap.add_argument("--startup-repeats", type=int, default=11)
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()
    q = a.quarry
    if not os.access(q, os.X_OK):
        sys.exit(f"{q}: no quarry executable (build first: scripts/build.sh)")

    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "kernel": platform.release()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "quarry": os.path.realpath(q),
    }
    with tempfile.TemporaryDirectory() as tmp:
        small = os.path.join(tmp, "small.npy")
        subprocess.run([q, "generate", "-n", "1000", "-c", "10", "--seed", "1", "-o", small], check=True,
                       stdout=subprocess.DEVNULL)
        startup = {
            "--version": [q, "--version"],
            "info": [q, "info", small],
            "score": [q, "score", "--input", small, "-a", "entropy", "--device", "cpu", "-o",
                      os.path.join(tmp, "s.npy")],
            "select": [q, "select", "--input", small, "-a", "entropy", "-k", "10", "--device", "cpu", "-o",
                       os.path.join(tmp, "sel-small.csv")],
        }
        figures = median_runs(list(startup.values()), a.startup_repeats)
        res["startup"] = {name: {"median_ms": t * 1e3, "max_rss_mib": m} for name, (t, m) in zip(startup, figures)}
        res["startup_repeats"] = a.startup_repeats
        print(f"start-up on a 1000 x 10 pool, median of {a.startup_repeats} whole processes:")
        for name, f in res["startup"].items():
            print(f"  quarry {name:10s} {f['median_ms']:7.1f} ms  {f['max_rss_mib']:6.1f} MiB peak RSS")

        pool = os.path.join(tmp, "pool.npy")
        subprocess.run([q, "generate", "-n", str(a.n), "-c", str(a.c), "--seed", "0", "-o", pool], check=True,
                       stdout=subprocess.DEVNULL)
        nbytes = os.path.getsize(pool)
        with open(pool, "rb") as f:  # into the page cache
            while f.read(1 << 24):
                pass
        numpy_py = os.path.join(tmp, "numpy_entropy.py")
        modal_py = os.path.join(tmp, "modal_entropy.py")
        with open(numpy_py, "w") as f:
            f.write(NUMPY_SCRIPT)
        with open(modal_py, "w") as f:
            f.write(MODAL_SCRIPT)
        sel_csv = os.path.join(tmp, "sel.csv")
        cmds = {
            "quarry": [q, "select", "--input", pool, "-a", "entropy", "-k", str(a.k), "--device", "cpu", "-o",
                       sel_csv],
            "numpy": [a.python, numpy_py, pool, str(a.k), os.path.join(tmp, "numpy.npy")],
        }
        if have_module(a.python, "scipy"):
            cmds["modal"] = [a.python, modal_py, pool, str(a.k), os.path.join(tmp, "modal.npy")]
        else:
            print("  (no SciPy in", a.python, "- the modAL comparison is skipped: apt-get install python3-scipy)")
        figures = median_runs(list(cmds.values()), a.repeats)
        sel = {name: {"median_s": t, "max_rss_mib": m} for name, (t, m) in zip(cmds, figures)}

        # The same k samples? quarry's CSV is rank,index,score.
        import numpy as np
        q_idx = set(np.loadtxt(sel_csv, delimiter=",", skiprows=1, usecols=1, dtype=np.int64).tolist())
        for name in cmds:
            if name == "quarry":
                continue
            other = set(np.load(os.path.join(tmp, name + ".npy")).tolist())
            sel[name]["same_top_k_as_quarry"] = len(q_idx & other) / a.k
            sel[name]["quarry_speedup"] = sel[name]["median_s"] / sel["quarry"]["median_s"]
        res["select"] = {"n": a.n, "c": a.c, "k": a.k, "input_bytes": nbytes, "repeats": a.repeats, **sel}
        print(f"entropy + top-{a.k} over {a.n:,} x {a.c} float32 ({nbytes / 1e9:.2f} GB, page cache),"
              f" whole processes, median of {a.repeats}:")
        for name, f in sel.items():
            extra = ""
            if name != "quarry":
                extra = (f"   quarry {f['quarry_speedup']:.1f}x faster; same top-k: "
                         f"{f['same_top_k_as_quarry']:.3f}")
            print(f"  {name:7s} {f['median_s'] * 1e3:8.0f} ms  {f['max_rss_mib']:7.0f} MiB{extra}")

    goals = {
        "startup_under_30ms": all(f["median_ms"] < 30 for f in res["startup"].values()),
        "startup_under_30mib": all(f["max_rss_mib"] < 30 for f in res["startup"].values()),
        "select_3x_numpy": res["select"]["numpy"]["quarry_speedup"] >= 3,
    }
    if "modal" in res["select"]:
        goals["select_10x_modal"] = res["select"]["modal"]["quarry_speedup"] >= 10
    res["goals"] = goals
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print("saved", a.json)
    print("goals:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
