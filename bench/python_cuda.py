#!/usr/bin/env python3
"""quarry on torch CUDA tensors, read in place, against torch eager in the same process.

    PYTHONPATH=build/python python3 bench/python_cuda.py [--n 10000000] [--c 10,100] [--k 1000]

For each C: an N x C float32 tensor of probabilities on the device, then, interleaved (quarry,
torch, quarry, ...) for --repeats runs, each timed with the device synchronized before and after:
  quarry   quarry.score_and_select(t, "entropy", k)      (reads t where it is; the picks stay there)
  torch    torch.topk(-(t * t.log()).sum(1), k)          (eager)
Medians, their ratio, and the picks checked: on t's device, >= 99 % of torch's (float32 rounding
differs: quarry sums rows in double, so near-ties at the k-th place may swap). The goal of the
issue: entropy + top-1000, N = 1e7, C = 100: quarry >= 4x torch eager.
--device cpu runs the same on the CPU (a check of this script where there is no GPU). Writes JSON
to --out (default bench/results/gpu-<UTC>-<commit>-python.json); without a CUDA device and with
--device cuda it writes the reason and exits 0.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import torch

import quarry


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--c", default="10,100")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    commit = os.environ.get("QUARRY_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here).stdout.strip() or "unknown"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or os.path.join(here, "results", f"gpu-{stamp}-{commit}-python.json")
    dev = torch.device(args.device)
    result = {
        "what": "quarry.score_and_select on torch tensors in place vs torch eager, one process (bench/python_cuda.py)",
        "commit": commit,
        "utc": stamp,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                    "device": args.device,
                    "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" and torch.cuda.is_available() else None,
                    "quarry_cuda_devices": quarry._core.cuda_device_count()},
        "cases": [],
    }
    if dev.type == "cuda" and (not torch.cuda.is_available() or quarry._core.cuda_device_count() == 0):
        result["skipped"] = "no CUDA device visible to torch and quarry"
        print(result["skipped"])
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        return

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(fn):
        sync()
        start = time.perf_counter()
        r = fn()
        sync()
        return time.perf_counter() - start, r

    k = args.k
    for c in (int(x) for x in args.c.split(",")):
        torch.manual_seed(0)
        t = torch.rand(args.n, c, device=dev) + 1e-3  # no exact zeros: 0 log 0 is NaN for torch
        t /= t.sum(1, keepdim=True)
        runs = {
            "quarry": lambda: quarry.score_and_select(t, "entropy", k).index,
            "torch": lambda: torch.topk(-(t * t.log()).sum(1), k).indices,
        }
        _, qi = timed(runs["quarry"])
        _, ti = timed(runs["torch"])
        assert qi.device == t.device, f"quarry's picks are on {qi.device}, the tensor on {t.device}"
        shared = len(set(qi.cpu().tolist()) & set(ti.cpu().tolist()))
        assert shared >= 0.99 * k, f"C = {c}: quarry's top-{k} shares only {shared} with torch's"
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn)[0])
        med = {name: statistics.median(v) for name, v in times.items()}
        case = {"n": args.n, "c": c, "k": k, "dtype": "float32", "bytes": args.n * c * 4,
                "seconds": {name: {"median": med[name], "runs": times[name]} for name in runs},
                "topk_shared_with_torch": shared, "speedup_vs_torch": med["torch"] / med["quarry"]}
        result["cases"].append(case)
        print(f"entropy + top-{k}, {args.n} x {c} float32 on {args.device} ({args.repeats} runs, medians): "
              f"quarry {med['quarry'] * 1e3:.2f} ms, torch eager {med['torch'] * 1e3:.2f} ms, "
              f"{case['speedup_vs_torch']:.2f}x; {shared} of {k} picks shared")
        del t
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
