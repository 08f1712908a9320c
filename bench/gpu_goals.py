#!/usr/bin/env python3
"""The GPU goals of one scripts/gpu_check.sh run, read from the files it wrote, as one table.

    gpu_goals.py DIR [--commit C] [--json OUT.json]

DIR holds what gpu_check.sh leaves there: environment.txt, the GoogleTest JSON of each parity
test (test_*.json), the sanitizer logs (memcheck*.log, racecheck*.log) and the benchmark JSON
(bench_cuda.json, bench_stream_cuda.json, bench_diversity_cuda.json, compare_torch.json). A file
that is missing or cut short (a step stopped at its deadline) makes its goals "not run" rather
than failing the table. Prints one line per goal (PASS, MISS, FAIL or not run) and writes every
figure to --json. Uses only the standard library: runs on the GPU machine and here.
"""
import argparse
import datetime
import glob
import json
import os
import re
import sys


def load_json(path):
    """A JSON file, or None. Google Benchmark's reporter writes its runs as they finish, so a
    run stopped midway leaves a file without its closing brackets: those are added back."""
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return None
    for tail in ("", "]}", "\n  ]\n}", "}]}", "}\n  ]\n}"):
        try:
            return json.loads(text + tail)
        except ValueError:
            continue
    # Cut inside a run: keep the runs before the last complete one.
    cut = text.rfind("\n    },")
    if cut > 0:
        try:
            return json.loads(text[:cut] + "\n    }\n  ]\n}")
        except ValueError:
            pass
    return None


def read_text(path):
    try:
        return open(path, errors="replace").read()
    except OSError:
        return ""


def runs(bench):
    """name -> list of iteration runs (errors kept) of a Google Benchmark JSON."""
    out = {}
    for b in (bench or {}).get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        out.setdefault(re.sub(r"/(manual|real)_time$", "", b["name"]), []).append(b)
    return out


def median_run(rs):
    ok = [r for r in rs if not r.get("error_occurred")]
    if not ok:
        return None
    return sorted(ok, key=lambda r: r.get("real_time", 0))[len(ok) // 2]


def seconds(r):
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[r.get("time_unit", "ns")]
    return r["real_time"] * unit


def gtest_result(path):
    j = load_json(path)
    if j is None:
        return {"status": "not run", "detail": f"no result ({os.path.basename(path)} missing or unreadable)"}
    tests = failures = skipped = 0
    failed = []
    for suite in j.get("testsuites", []):
        if suite.get("name") == "CudaUnavailable":
            continue  # the errors where no GPU is visible: skipped, rightly, where one is
        for t in suite.get("testsuite", []):
            tests += 1
            if t.get("failures"):
                failures += 1
                failed.append(f"{suite.get('name')}.{t.get('name')}")
            if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                skipped += 1
    status = "PASS" if tests > 0 and failures == 0 and skipped == 0 else ("FAIL" if failures else "MISS")
    return {"status": status, "tests": tests, "failures": failures, "skipped": skipped, "failed": failed[:20],
            "detail": f"{tests} tests, {failures} failed, {skipped} skipped"}


def sanitizer_result(path):
    text = read_text(path)
    if not text:
        return {"status": "not run", "detail": f"{os.path.basename(path)} missing"}
    if "not run" in text[:200]:
        return {"status": "not run", "detail": text.strip().splitlines()[0]}
    m = re.findall(r"(ERROR|RACECHECK) SUMMARY: (\d+) (?:errors?|hazards?)[^\n]*", text)
    passed = re.search(r"\[  PASSED  \] (\d+) tests?", text)
    failed = re.search(r"\[  FAILED  \] (\d+) tests?", text)
    if not m:
        return {"status": "not run", "detail": "no summary (stopped at its deadline?)"}
    errors = sum(int(n) for _, n in m)
    detail = f"{errors} errors/hazards; " + (f"{passed.group(1)} tests passed" if passed else "tests did not finish")
    if failed:
        detail += f", {failed.group(1)} failed"
    status = "PASS" if errors == 0 and passed and not failed else "FAIL"
    return {"status": status, "errors": errors, "detail": detail}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--commit", default=os.environ.get("QUARRY_COMMIT", "unknown"))
    ap.add_argument("--json")
    a = ap.parse_args()
    d = a.dir
    env = {}
    for line in read_text(os.path.join(d, "environment.txt")).splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            env.setdefault(k.strip(), v.strip())
    goals = []

    def goal(name, status, detail, **fig):
        goals.append({"goal": name, "status": status, "detail": detail, **fig})

    # Correctness.
    for t in ("test_cuda", "test_diversity_cuda", "test_stream", "test_batchbald"):
        r = gtest_result(os.path.join(d, t + ".json"))
        goal(f"parity: {t}", r.pop("status"), r.pop("detail"), **r)
    for p in sorted(glob.glob(os.path.join(d, "memcheck*.log")) + glob.glob(os.path.join(d, "racecheck*.log"))):
        r = sanitizer_result(p)
        goal("sanitizer: " + os.path.basename(p)[:-4], r.pop("status"), r.pop("detail"), **r)

    # Fused scores against the device-to-device copy bandwidth (bench_cuda).
    bench = load_json(os.path.join(d, "bench_cuda.json"))
    br = runs(bench)
    copy = None
    if bench:
        try:
            copy = float(bench.get("context", {}).get("copy_GB/s"))
        except (TypeError, ValueError):
            copy = None
    fused = []
    for name, rs in br.items():
        m = re.match(r"score/([^/]+)/([^/]+)(/logits)?/N:10000000/C:(\d+)$", name)
        if not m:
            continue
        r = median_run(rs)
        if r is None:
            fused.append({"benchmark": name, "error": rs[0].get("error_message", "error")})
            continue
        fused.append({"benchmark": name, "GBps": r.get("GB/s"), "of_copy_bw": r.get("of_copy_bw"),
                      "ms": seconds(r) * 1e3})
    if fused:
        ok = [f for f in fused if f.get("of_copy_bw") is not None]
        miss = [f for f in ok if f["of_copy_bw"] < 0.8]
        err = [f for f in fused if "error" in f]
        worst = min(ok, key=lambda f: f["of_copy_bw"]) if ok else None
        detail = (f"{len(ok) - len(miss)}/{len(fused)} at >= 0.80 of {copy:.0f} GB/s copy" if copy else "")
        if worst:
            detail += f"; lowest {worst['of_copy_bw']:.2f} ({worst['benchmark']})"
        if err:
            detail += f"; {len(err)} errors: {err[0]['benchmark']}: {err[0]['error'][:120]}"
        goal("fused scores >= 80% of copy bandwidth, N=1e7", "FAIL" if err else ("MISS" if miss else "PASS"),
             detail, copy_GBps=copy, cases=fused)
    else:
        goal("fused scores >= 80% of copy bandwidth, N=1e7", "not run", "no bench_cuda.json")
    # Dense outputs (kernels/dense.cu): 64 cases of 2 x 128^3 float16, entropy, against the copy.
    for red, want in (("mean", 0.8), ("max", 0.8), ("topq:0.01", 0.6)):
        name = f"dense {red}, 64 x 2 x 128^3 f16 >= {want:.0%} of copy bandwidth"
        rs = next((v for k, v in br.items() if re.match(r"dense/entropy/" + re.escape(red) + r"/float16/C:2/N:64/D:128", k)), None)
        if rs is None:
            goal(name, "not run", "no result in bench_cuda.json")
            continue
        r = median_run(rs)
        if r is None:
            goal(name, "FAIL", rs[0].get("error_message", "error")[:200])
            continue
        f = r.get("of_copy_bw")
        goal(name, "PASS" if f is not None and f >= want else "MISS",
             f"{f:.2f} of copy ({r.get('GB/s', 0):.0f} GB/s, {seconds(r) * 1e3:.2f} ms)" if f is not None else "no figure",
             of_copy_bw=f, GBps=r.get("GB/s"), ms=seconds(r) * 1e3)
    errors = [(n, rs[0].get("error_message", "")) for n, rs in br.items() if median_run(rs) is None]
    if bench is not None:
        goal("bench_cuda: every benchmark verified against the CPU", "FAIL" if errors else "PASS",
             f"{len(br)} benchmarks, {len(errors)} errors" + (f": {errors[0][0]}: {errors[0][1][:160]}" if errors else ""),
             errors=[{"benchmark": n, "error": e} for n, e in errors])

    # Speed-ups over PyTorch eager (compare_torch.py).
    torch = load_json(os.path.join(d, "compare_torch.json"))
    if torch:
        for g in torch.get("goals", []):
            sp = g.get("speedup")
            st = "not run" if sp is None else ("PASS" if sp >= g["want_speedup"] else "MISS")
            det = "no figure" if sp is None else (f"{sp:.2f}x (quarry {g['quarry_s'] * 1e3:.2f} ms, "
                                                   f"torch {g['torch_s'] * 1e3:.2f} ms)")
            goal(f"{g['goal']} >= {g['want_speedup']:.0f}x torch", st, det, speedup=sp)
    else:
        goal("speed-ups over PyTorch eager", "not run", "no compare_torch.json")

    # Streaming from pinned memory against the pinned host-to-device copy.
    stream = runs(load_json(os.path.join(d, "bench_stream_cuda.json")))
    h2d, st = median_run(stream.get("BM_PinnedHostToDevice", [])), median_run(stream.get("BM_StreamScore", []))
    if h2d and st:
        f = st["bytes_per_second"] / h2d["bytes_per_second"]
        goal("streaming 2 GB f16 (512 MiB budget) >= 80% of H2D", "PASS" if f >= 0.8 else "MISS",
             f"{st['bytes_per_second'] / 1e9:.1f} GB/s of {h2d['bytes_per_second'] / 1e9:.1f} GB/s = {f:.2f}",
             fraction=f, stream_GBps=st["bytes_per_second"] / 1e9, h2d_GBps=h2d["bytes_per_second"] / 1e9)
    else:
        e = next((r[0].get("error_message") for r in stream.values() if r and r[0].get("error_occurred")), None)
        goal("streaming 2 GB f16 (512 MiB budget) >= 80% of H2D", "FAIL" if e else "not run", e or "no result")

    # BADGE and k-center, N = 1e6, D = 512, k = 1000.
    div = runs(load_json(os.path.join(d, "bench_diversity_cuda.json")))
    if div:
        for name, rs in div.items():
            r = median_run(rs)
            label = (rs[0].get("label") or name)
            if r is None:
                goal(f"diversity {name}", "FAIL", rs[0].get("error_message", "error")[:200])
                continue
            s = seconds(r)
            goal(f"diversity {label} {name.split('/', 1)[-1]} < 2 s", "PASS" if s < 2.0 else "MISS", f"{s:.3f} s",
                 seconds=s)
    else:
        goal("BADGE and k-center N=1e6 D=512 k=1000 < 2 s", "not run", "no bench_diversity_cuda.json")

    goal("LibTorch loop on CUDA (cnn >= 20k images/s, simulate 5x the CPU)", "not run",
         "scripts/gpu_loop_check.sh (the next device call): builds the loop against the machine's PyTorch")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    res = {"what": "gpu_check", "date": stamp, "commit": a.commit, "environment": env, "goals": goals}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print(f"\n== GPU goals ({a.commit}; {env.get('gpu', 'no GPU')})")
    for g in goals:
        print(f"  {g['status']:8s} {g['goal']:60s} {g['detail']}")
    counts = {s: sum(g["status"] == s for g in goals) for s in ("PASS", "MISS", "FAIL", "not run")}
    print("  " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
