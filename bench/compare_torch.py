#!/usr/bin/env python3
"""quarry's CUDA backend against what users write today in PyTorch eager, on the same GPU and data.

For every benchmark of bench_cuda (read from its JSON output, or run here), the PyTorch eager
equivalent runs on the same device over the same pool: bench_cuda and this script generate it
with the same counter-based hash (see bench/bench_cuda.cu), so the values agree up to float
rounding. PyTorch is timed with CUDA events, median of --repeats runs after --warmup runs;
quarry's times are bench_cuda's (CUDA events, mean of its iterations). The PyTorch paths are the
idioms of modAL / baal / BatchBALD code: `-(p * p.log()).sum(1)`, `p.topk(2)`, `P.mean(0)`,
`log_softmax` for logits, a scatter_add of argmax votes, then `torch.topk`.

Prints the ratio table of the issue's goals and writes one JSON (--json) with the device, driver,
torch version, commit and every figure.
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

import torch

M32 = 0xFFFFFFFF
EMB_OFFSET = 1 << 40
SCORE_OFFSET = 1 << 41
EMB_DIM = 64  # bench_cuda's kEmbDim
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------- the shared pools

def mul32(x, k):
    """(x * k) mod 2^32 for x in [0, 2^32) without int64 overflow: k split into 16-bit halves."""
    return (x * (k & 0xFFFF) + (((x * (k >> 16)) & 0xFFFF) << 16)) & M32


def lowbias32(x):
    """bench_cuda's lowbias32 on an int64 tensor of values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = mul32(x, 0x846CA68B)
    x = x ^ (x >> 16)
    return x


def unit(i):
    """bench_cuda's unit(i) for an int64 tensor i (read as uint64): (0, 1], exact in float32."""
    h = lowbias32((i & M32) ^ lowbias32((i >> 32) & M32))
    return ((h >> 8) + 1).to(torch.float32) * (1.0 / 16777216.0)


def make_pool(m, n, c, dtype, logits, dev):
    rows = max(m, 1) * n
    out = torch.empty(rows, c, dtype=dtype, device=dev)
    cls = torch.arange(c, device=dev, dtype=torch.int64)
    chunk = max(1, (1 << 25) // c)
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        r = torch.arange(r0, r1, device=dev, dtype=torch.int64)
        w = unit(r[:, None] * c + cls[None, :])
        peak = torch.where(unit(~r) < 0.7, 20.0, 1.0)
        w += (cls[None, :] == ((r % n) % c)[:, None]).to(torch.float32) * peak[:, None]
        out[r0:r1] = (w * 4.0 if logits else w / w.sum(1, keepdim=True)).to(dtype)
        del r, w, peak
    return out.view(m, n, c) if m > 0 else out


def make_uniform(n, offset, scale, shift, dev):
    out = torch.empty(n, dtype=torch.float32, device=dev)
    chunk = 1 << 26
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        out[i0:i1] = unit(torch.arange(i0, i1, device=dev, dtype=torch.int64) + offset) * scale + shift
    return out


# ----------------------------------------------------------------------------- PyTorch eager scores

def entropy(p, dim=-1):
    return -(p * p.log()).sum(dim)


def entropy_logits(z, dim=-1):
    lp = z.log_softmax(dim)
    return -(lp.exp() * lp).sum(dim)


def votes(P):
    """Vote shares [N, C] of a committee P [M, N, C]: argmax per member, scatter-added."""
    M, N, C = P.shape
    v = P.argmax(2).t()  # [N, M]
    counts = torch.zeros(N, C, device=P.device, dtype=torch.float32)
    counts.scatter_add_(1, v, torch.ones_like(v, dtype=torch.float32))
    return counts / M


def egl(p, h):
    sq = (p * p).sum(1, keepdim=True)
    g = (sq - 2 * p + 1).clamp_min(0).sqrt()  # ||p - e_y|| for every y
    return (p * g).sum(1) * h.norm(dim=1)


def badge_norm(p, h):
    sq = (p * p).sum(1)
    py = p.max(1).values
    return (sq - 2 * py + 1).clamp_min(0).sqrt() * h.norm(dim=1)


def top2(p):
    # torch.topk on a CUDA tensor of 2^31 elements or more makes an illegal memory access (torch
    # 2.11, seen on an H200 with [1e7, 1000] float32), which ends the process's CUDA context: such
    # tensors go through it in row blocks under 2^31 elements, as a user would have to.
    if p.numel() < 2**31:
        return p.topk(2, dim=1).values
    rows = max(1, (2**31 - 1) // p.shape[1])
    return torch.cat([b.topk(2, dim=1).values for b in p.split(rows)])


def single_model(acq, x, logits, h=None):
    if acq == "entropy" and logits:
        return entropy_logits(x, 1)
    p = x.softmax(1) if logits else x
    if acq == "least-confidence":
        return 1 - p.max(1).values
    if acq == "margin":
        t = top2(p)
        return 1 - (t[:, 0] - t[:, 1])
    if acq == "ratio":
        t = top2(p)
        return t[:, 1] / t[:, 0]
    if acq == "entropy":
        return entropy(p, 1)
    if acq == "egl":
        return egl(p, h)
    if acq == "badge-norm":
        return badge_norm(p, h)
    raise ValueError(acq)


def committee(acq, x, logits):
    P = x.softmax(2) if logits else x
    if acq == "consensus-entropy":
        return entropy(P.mean(0), 1)
    if acq == "bald":
        return entropy(P.mean(0), 1) - entropy(P, 2).mean(0)
    if acq == "kl-max":
        pbar = P.mean(0)
        return (P * (P.log() - pbar.log())).sum(2).max(0).values
    if acq == "vote-entropy":
        v = votes(P)
        return -torch.special.xlogy(v, v).sum(1)
    if acq == "variation-ratio":
        return 1 - votes(P).max(1).values
    raise ValueError(acq)


# Temporaries of each PyTorch path at its peak, in multiples of the input (p.log() and p * p.log()
# live together; logits add the softmax); out of memory is caught anyway.
MEM_FACTOR = {"least-confidence": 0.3, "margin": 0.3, "ratio": 0.3, "vote-entropy": 0.5, "variation-ratio": 0.5}


# ----------------------------------------------------------------------------- timing

def time_cuda(fn, warmup, repeats):
    for _ in range(warmup):
        out = fn()
        del out
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        out = fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
        del out
    return statistics.median(times)


def torch_copy_bandwidth(dev, warmup, repeats):
    """Device-to-device copy of 2 GiB: bytes read + written per second, as bench_cuda counts it."""
    n = (2 << 30) // 4
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    t = time_cuda(lambda: dst.copy_(src), warmup, repeats)
    del src, dst
    return 2.0 * n * 4 / t / 1e9


# ----------------------------------------------------------------------------- bench_cuda's names

NAME = re.compile(
    r"^(?P<kind>score|entropy_topk|bald_topk)/(?:(?P<acq>[a-z-]+)/)?(?P<dtype>float32|float16|bfloat16)"
    r"(?P<logits>/logits)?(?:/M:(?P<m>\d+))?/N:(?P<n>\d+)/C:(?P<c>\d+)(?:/k:(?P<k>\d+))?")
SELECT = re.compile(r"^(?P<kind>topk|power)/float32/N:(?P<n>\d+)/k:(?P<k>\d+)")


def parse(name):
    """A bench_cuda benchmark name -> the case it measures (None for copy_bandwidth and unknowns)."""
    base = name.replace("/manual_time", "")
    m = NAME.match(base)
    if m:
        kind = m["kind"]
        acq = m["acq"] if kind == "score" else ("entropy" if kind == "entropy_topk" else "bald")
        return {"name": base, "kind": kind, "acq": acq, "dtype": m["dtype"], "logits": bool(m["logits"]),
                "m": int(m["m"] or 0), "n": int(m["n"]), "c": int(m["c"]), "k": int(m["k"] or 0)}
    m = SELECT.match(base)
    if m:
        return {"name": base, "kind": m["kind"], "n": int(m["n"]), "k": int(m["k"])}
    return None


def run_bench_cuda(path, filt, out_json):
    cmd = [path, "--benchmark_format=json", "--benchmark_out=" + out_json, "--benchmark_out_format=json"]
    if filt:
        cmd.append("--benchmark_filter=" + filt)
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out_json) as f:
        return json.load(f)


def seconds(b):
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
    return b["real_time"] * scale


# ----------------------------------------------------------------------------- one case in PyTorch

class Pools:
    """Keeps the last pool (and embeddings) while the next case uses the same shape."""

    def __init__(self, dev):
        self.dev, self.key, self.x, self.h, self.s = dev, None, None, None, None

    def drop(self):
        self.key = self.x = self.h = self.s = None
        torch.cuda.empty_cache()

    def pool(self, case):
        key = (case["m"], case["n"], case["c"], case["dtype"], case["logits"])
        if key != self.key:
            self.drop()
            self.x = make_pool(case["m"], case["n"], case["c"], DTYPES[case["dtype"]], case["logits"], self.dev)
            self.key = key
        return self.x

    def emb(self, n):
        if self.h is None or self.h.shape[0] != n:
            self.h = make_uniform(n * EMB_DIM, EMB_OFFSET, 1.0, -0.5, self.dev).view(n, EMB_DIM)
        return self.h

    def scores(self, n):
        if self.s is None or self.s.shape[0] != n:
            self.drop()
            self.s = make_uniform(n, SCORE_OFFSET, 2.3, 0.0, self.dev)
        return self.s


def input_bytes(case):
    if case["kind"] in ("topk", "power"):
        return 4.0 * case["n"]
    size = torch.tensor([], dtype=DTYPES[case["dtype"]]).element_size()
    b = float(max(case["m"], 1) * case["n"] * case["c"] * size)
    if case["kind"] == "score" and case["acq"] in ("egl", "badge-norm"):
        b += 4.0 * case["n"] * EMB_DIM
    return b


def torch_fn(case, pools):
    kind = case["kind"]
    if kind in ("topk", "power"):
        s = pools.scores(case["n"])
        k = case["k"]
        if kind == "topk":
            return lambda: torch.topk(s, k)
        # Gumbel-top-k with beta = 1: log s + Gumbel noise, then the top k.
        return lambda: torch.topk(s.log() - torch.log(-torch.log(torch.rand_like(s))), k)
    x = pools.pool(case)
    acq, logits = case["acq"], case["logits"]
    if case["m"] > 0:
        score = lambda: committee(acq, x, logits)
    else:
        h = pools.emb(case["n"]) if acq in ("egl", "badge-norm") else None
        score = lambda: single_model(acq, x, logits, h)
    if kind == "score":
        return score
    k = case["k"]
    return lambda: torch.topk(score(), k)


def fits(case, pools):
    free, _ = torch.cuda.mem_get_info()
    held = sum(t.numel() * t.element_size() for t in (pools.x, pools.h, pools.s) if t is not None)
    if case["kind"] in ("topk", "power"):
        factor = 2.0
    else:
        factor = MEM_FACTOR.get(case["acq"], 2.2) + (1.0 if case["logits"] else 0.0)
    need = input_bytes(case) * (1.0 + factor) + (1 << 30)
    return need <= free + held, need, free + held


# ----------------------------------------------------------------------------- main

def git_commit(root):
    env = os.environ.get("QUARRY_COMMIT")
    if env:
        return env
    r = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty", "--abbrev=7"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def driver_version():
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        return r.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - best effort
        return "unknown"


GOALS = [
    # (label, quarry benchmark, goal speed-up over PyTorch)
    ("entropy + top-1000, N=1e7, C=100, float32", "entropy_topk/float32/N:10000000/C:100/k:1000", 4.0),
    ("BALD M=20 + top-1000, N=1e7, C=10", "bald_topk/float32/M:20/N:10000000/C:10/k:1000", 5.0),
    ("BALD M=20 + top-1000, N=2e6, C=100", "bald_topk/float32/M:20/N:2000000/C:100/k:1000", 5.0),
    ("BALD M=20 score only, N=1e7, C=10", "score/bald/float32/M:20/N:10000000/C:10", 5.0),
    ("top-k k=1000 of 1e8 vs torch.topk", "topk/float32/N:100000000/k:1000", 2.0),
    ("top-k k=100000 of 1e8 vs torch.topk", "topk/float32/N:100000000/k:100000", 2.0),
]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", default=os.path.join(root, "build", "bench", "bench_cuda"),
                    help="bench_cuda binary (run when --quarry-json is not given)")
    ap.add_argument("--quarry-json", help="bench_cuda's --benchmark_out JSON from this run")
    ap.add_argument("--filter", default="", help="--benchmark_filter for bench_cuda (when run here)")
    ap.add_argument("--only", default="", help="regex: PyTorch cases to run (default: all)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()

    if not torch.cuda.is_available():
        print("compare_torch: PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    dev = torch.device("cuda:0")
    if a.quarry_json:
        with open(a.quarry_json) as f:
            qj = json.load(f)
    else:
        qj = run_bench_cuda(a.bench, a.filter, (a.json or "bench_cuda") + ".bench_cuda.json")

    # One entry per benchmark: with --benchmark_repetitions, the repetition of median time.
    runs = {}
    for b in qj.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        runs.setdefault(b["name"].replace("/manual_time", ""), []).append(b)
    quarry = {}
    for base, bs in runs.items():
        ok = [b for b in bs if not b.get("error_occurred")]
        quarry[base] = sorted(ok, key=seconds)[len(ok) // 2] if ok else bs[0]
    props = torch.cuda.get_device_properties(dev)
    copy_t = torch_copy_bandwidth(dev, a.warmup, a.repeats)
    ctx = qj.get("context", {})
    copy_q = float(ctx.get("copy_GB/s", "nan")) if ctx.get("copy_GB/s") else float("nan")
    print(f"device: {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB; "
          f"driver {driver_version()}; torch {torch.__version__} (CUDA {torch.version.cuda})")
    print(f"device-to-device copy: {copy_q:.0f} GB/s (bench_cuda), {copy_t:.0f} GB/s (torch), read + written")

    only = re.compile(a.only) if a.only else None
    pools = Pools(dev)
    cases = []
    for base, b in quarry.items():
        case = parse(base)
        if case is None or (only and not only.search(base)):
            continue
        rec = {"name": base, "input_bytes": input_bytes(case)}
        if b.get("error_occurred"):
            rec["quarry_error"] = b.get("error_message", "error")
        else:
            rec["quarry_s"] = seconds(b)
            rec["quarry_GBps"] = b.get("GB/s")
            rec["quarry_of_copy_bw"] = b.get("of_copy_bw")
        ok, need, free = fits(case, pools)
        if not ok:
            rec["torch_skipped"] = f"needs ~{need / 1e9:.1f} GB of device memory, {free / 1e9:.1f} GB free"
        else:
            try:
                rec["torch_s"] = time_cuda(torch_fn(case, pools), a.warmup, a.repeats)
                rec["torch_GBps"] = rec["input_bytes"] / rec["torch_s"] / 1e9
                rec["torch_of_copy_bw"] = rec["torch_GBps"] / copy_t
            except torch.cuda.OutOfMemoryError as e:
                pools.drop()
                rec["torch_skipped"] = "out of memory: " + str(e).splitlines()[0]
            except Exception as e:  # noqa: BLE001 - one broken case must not end the comparison
                pools.drop()
                rec["torch_error"] = f"{type(e).__name__}: {e}"
                print(f"  {base}: PyTorch failed: {rec['torch_error']}", file=sys.stderr)
        if "torch_s" in rec and "quarry_s" in rec:
            rec["speedup"] = rec["torch_s"] / rec["quarry_s"]
        cases.append(rec)
        q = f"{rec['quarry_s'] * 1e3:9.2f} ms" if "quarry_s" in rec else "    error   "
        t = f"{rec['torch_s'] * 1e3:9.2f} ms" if "torch_s" in rec else "  skipped   "
        sp = f"{rec['speedup']:6.1f}x" if "speedup" in rec else "      "
        print(f"  {base:58s} quarry {q}  torch {t}  {sp}", flush=True)
    pools.drop()

    by_name = {c["name"]: c for c in cases}
    goals = []
    print("\nGoals (PyTorch eager time / quarry time, same device, same data):")
    for label, name, want in GOALS:
        c = by_name.get(name, {})
        sp = c.get("speedup")
        status = "n/a" if sp is None else ("PASS" if sp >= want else "MISS")
        goals.append({"goal": label, "benchmark": name, "want_speedup": want, "speedup": sp, "status": status,
                      "quarry_s": c.get("quarry_s"), "torch_s": c.get("torch_s")})
        sps = f"{sp:6.1f}x" if sp is not None else "   n/a"
        print(f"  {label:45s} {sps}  (goal >= {want:.0f}x)  {status}")
    print("\nFused scores at >= 80% of the copy bandwidth (N = 1e7, each input byte once):")
    bw_goal = []
    for base, b in quarry.items():
        case = parse(base)
        if not case or case["kind"] != "score" or case["n"] != 10000000 or case["m"] != 0 or b.get("error_occurred"):
            continue
        f = b.get("of_copy_bw")
        if f is None:
            continue
        st = "PASS" if f >= 0.8 else "MISS"
        bw_goal.append({"benchmark": base, "of_copy_bw": f, "GBps": b.get("GB/s"), "status": st})
        print(f"  {base:58s} {b.get('GB/s', float('nan')):7.0f} GB/s  {f:5.2f} of copy  {st}")

    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(root),
        "device": {"name": props.name, "sms": props.multi_processor_count, "memory_bytes": props.total_memory,
                   "driver": driver_version(), "cuda_runtime_torch": torch.version.cuda},
        "torch": torch.__version__, "python": platform.python_version(),
        "bench_cuda_context": ctx,
        "copy_GBps_bench_cuda": copy_q, "copy_GBps_torch": copy_t,
        "warmup": a.warmup, "repeats": a.repeats,
        "goals": goals, "bandwidth_goal": bw_goal, "cases": cases,
    }
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
        print("wrote", a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
