#!/usr/bin/env bash
# The LibTorch loop on CUDA in one call of the `device` tool, the step after scripts/gpu_check.sh
# (issue 18's last goals), within a deadline (default 420 s):
#   1. builds quarry and quarry-loop there against the machine's own PyTorch (its LibTorch CMake
#      package; scripts/gpu_build_there.sh with TORCH_PREFIX, from carry/deps), unless BUILD names
#      a build folder that has them;
#   2. PneumoniaMNIST rounds: `quarry simulate --strategies bald`, 200 initial labels and 3 rounds
#      of 100, one repeat: the seconds of each round that selects (train, eval, infer, score, select;
#      the last round only trains and evaluates) from rounds.jsonl;
#   3. the cnn's inference throughput: `quarry infer` over 54,000 28x28 images (synthetic:54000),
#      plain and with --committee mc:10, after training on 2,000 labels (bench/run_infer.sh);
#   4. `quarry project init --device D` on the synthetic pool, `next`, `label`, `next`: the
#      labeling project's retraining and scoring on the device;
#   5. the Python package, built for the machine's python3 and torch where it has pybind11 and
#      Python's headers: the CUDA tests of python/tests/test_engine.py (torch CUDA tensors scored
#      in place), then bench/python_cuda.py (entropy + top-1000 over N = 1e7, C = 10 and 100, quarry
#      on the tensor in place against torch eager, in one process) whatever the tests said;
#   6. the goals table, against the same script's figures on the CPU machine (LOOP_BASELINE, default
#      the newest bench/results/loop-cpu-*.json by name).
# Each step has its own time limit (4 times longer with DEVICE=cpu). A step is "not run" when the
# deadline or something it needs (the build, the data) left it out, and FAIL when it failed or
# was stopped at its limit; the exit status is 1 when any step failed.
# Run here with DEVICE=cpu it measures that baseline: the figures of the 2-core development machine.
#
#   scripts/gpu_prepare.sh                       (here: stages carry/, PneumoniaMNIST in carry/data)
#   device call: QUARRY_COMMIT=abc1234 DEADLINE=420 bash scripts/gpu_loop_check.sh 2>&1   (carry: ["carry"])
#   here: docs/gpu.md gives the dry run, which is also the CPU baseline
#
# Results in $OUT (default build-gpu-loop-check/): loop-<device>-<stamp>-<commit>.json (every
# figure, the environment, the goals) and loop-logs.tar.gz. Environment: OUT, DEADLINE, DEVICE
# (default cuda), BUILD, TORCH_PREFIX (default: python3's torch.utils.cmake_prefix_path),
# DATA (a folder holding pneumoniamnist.npz; default carry/data, else ../shared/data/pneumoniamnist),
# LOOP_BASELINE, QUARRY_COMMIT (names the results; the copy on the GPU machine has no .git), REPEATS
# (of infer, default 3), PYBIND11_DIR (default: python3 -m pybind11 --cmakedir).
set -uo pipefail
start=$SECONDS
root="$(cd "$(dirname "$0")/.." && pwd)"
deadline="${DEADLINE:-420}"
device="${DEVICE:-cuda}"
out="${OUT:-$root/build-gpu-loop-check}"
work="$(mktemp -d)"
logs="$work/logs"
mkdir -p "$logs" "$out"
trap 'rm -rf "$work"' EXIT
say() { printf '[gpu_loop_check %4ds] %s\n' "$((SECONDS - start))" "$*" | tee -a "$logs/steps.txt"; }
left() { echo $((deadline - (SECONDS - start))); }
slow=1
[ "$device" = cpu ] && slow=4  # the dry run: the CPU takes longer
if [ -n "${QUARRY_COMMIT:-}" ]; then
  commit="$QUARRY_COMMIT"
elif commit="$(git -C "$root" describe --always --dirty --abbrev=7 2>/dev/null)"; then
  :
else
  # No .git (the copy on the GPU machine): the commit gpu_prepare.sh staged, marked as a guess.
  commit="$(cat "$root/carry/gpu/COMMIT" 2>/dev/null || echo unknown)-unsure"
  say "no .git and no QUARRY_COMMIT: the results are named $commit"
fi
export QUARRY_COMMIT="$commit"

# Every step leaves rc-NAME (its exit status; 125: not run) and, when not run, why-NAME.
skip() {  # NAME WHY
  echo 125 >"$work/rc-$1"
  echo "$2" >"$work/why-$1"
  say "$1: not run ($2)"
}
step() {  # NAME SECONDS COMMAND...: runs it with a time limit (its share, never past the deadline)
  local name="$1" limit="$2"
  shift 2
  [ "$limit" -gt "$(left)" ] && limit="$(left)"
  if [ "$limit" -le 5 ]; then
    skip "$name" "the deadline"
    return 125
  fi
  say "$name ($limit s at most)"
  echo "$limit" >"$work/limit-$name"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  echo $rc >"$work/rc-$name"
  say "$name: rc $rc in $((SECONDS - t0)) s"
  [ $rc -ne 0 ] && tail -25 "$logs/$name.log" | sed 's/^/    /'
  return $rc
}

# ------------------------------------------------------------------ the machine
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $commit"
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  if command -v nvidia-smi >/dev/null; then
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  else
    echo "gpu: none (no nvidia-smi)"
  fi
  echo "python3: $(command -v python3) $(python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)"
  echo "numpy, pytest: $(python3 -c 'import numpy; print(numpy.__version__)' 2>&1 | tail -1), $(python3 -c 'import pytest; print(pytest.__version__)' 2>&1 | tail -1)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$logs/environment.txt"
sed 's/^/  /' "$logs/environment.txt"

# ------------------------------------------------------------------ 1. the build
case "${BUILD:-}" in "") build="" ;; /*) build="$BUILD" ;; *) build="$root/$BUILD" ;; esac
built=0
if [ -z "$build" ]; then
  torch_prefix="${TORCH_PREFIX:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)}"
  build="$root/build-gpu-loop"
  if [ -z "$torch_prefix" ]; then
    skip build "python3 has no torch and TORCH_PREFIX is not set"
  else
    # The Python modules too where python3 has pybind11 and Python.h (configured here, built in
    # step 5: a failure there leaves the commands' figures).
    pybind11_dir="${PYBIND11_DIR:-$(python3 -m pybind11 --cmakedir 2>/dev/null)}"
    if [ -n "$pybind11_dir" ] && python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
      py="$(command -v python3)"
      py_args="-DQUARRY_PYTHON=ON -Dpybind11_DIR=$pybind11_dir -DPYTHON_EXECUTABLE=$py -DPython_EXECUTABLE=$py"
    else
      py_args="-DQUARRY_PYTHON=OFF"
      say "python: not configured (python3 lacks pybind11 or Python.h)"
    fi
    # Every core; CUDA only for the device's architecture. A warm machine keeps the folder. No
    # test or benchmark programs, so GoogleTest and Google Benchmark are not built either. What
    # is left after the build is kept for the measurements (200 s, 800 s on the CPU).
    step build "$(($(left) - 200 * slow))" env BUILD_DIR="$build" OUT="$logs/build" TORCH_PREFIX="$torch_prefix" \
      TEST_DEPS=0 CMAKE_ARGS="-DQUARRY_TESTS=OFF -DQUARRY_BENCH=OFF $py_args" "$root/scripts/gpu_build_there.sh" quarry_cli &&
      built=1
  fi
elif [ -x "$build/quarry" ] && [ -x "$build/quarry-loop" ]; then
  built=1
else
  skip build "BUILD=$build has no quarry and quarry-loop"
fi
# The libraries the carried ones load (OpenSSL, Brotli, bzip2) only where the image has none.
missing="$("$root/scripts/missing_libs.sh" "$root/carry/deps/prefix/lib/fallback" "$work/missing-libs")"
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$root/carry/deps/prefix/lib:$missing"
q="$build/quarry"
if [ $built = 1 ]; then
  "$q" --version >"$logs/version.txt" 2>&1
  sed 's/^/  /' "$logs/version.txt"
fi
needs_build() {  # NAME: true where the build is there, else the step is not run
  [ $built = 1 ] && return 0
  skip "$1" "no build"
  return 1
}

# ------------------------------------------------------------------ 2. PneumoniaMNIST rounds
data="${DATA:-}"
if [ -z "$data" ]; then
  for d in "$root/carry/data" "$root/../shared/data/pneumoniamnist"; do
    [ -f "$d/pneumoniamnist.npz" ] && { data="$d"; break; }
  done
fi
if needs_build simulate; then
  if [ -n "$data" ] && [ -f "$data/pneumoniamnist.npz" ]; then
    step simulate $((120 * slow)) "$q" simulate --dataset "npz:$data/pneumoniamnist.npz" --strategies bald \
      --seed-size 200 --batch 100 --rounds 3 --repeats 1 --threads 0 --device "$device" --out "$work/simulate"
  else
    skip simulate "no pneumoniamnist.npz in ${DATA:-carry/data or ../shared/data/pneumoniamnist}"
  fi
fi

# ------------------------------------------------------------------ 3. cnn inference throughput
if needs_build infer; then
  step infer $((100 * slow)) env BUILD="$build" DEVICE="$device" REPEATS="${REPEATS:-3}" DATASET=synthetic:54000 \
    RESULTS="$work" "$root/bench/run_infer.sh"
fi

# ------------------------------------------------------------------ 4. a labeling project on the device
project_check() {
  set -e
  local p="$work/project"
  "$q" project init "$p" --dataset synthetic --classes ring,cross,square,bar --strategy bald --device "$device" --threads 0
  "$q" project next "$p" -k 100
  # A made-up oracle (index mod 4): the labels only have to make the next call retrain.
  { echo "index,label"; tail -n +2 "$p/batches/0001.csv" | awk -F, '{print $1","($1%4)}'; } >"$work/labels.csv"
  "$q" project label "$p" "$work/labels.csv"
  local t0 t1
  t0=$(date +%s.%N)
  "$q" project next "$p" -k 100
  t1=$(date +%s.%N)
  test "$(tail -n +2 "$p/batches/0002.csv" | wc -l)" -eq 100
  awk "BEGIN {print $t1 - $t0}" >"$work/project_next_seconds"
}
if needs_build project; then
  export -f project_check
  export q work device
  step project $((60 * slow)) bash -c project_check
fi

# ------------------------------------------------------------------ 5. Python: torch tensors in place
python_check() {  # the tests (where python3 has pytest) and the benchmark, each run whatever the other did
  ninja -C "$build" quarry_py_core quarry_py_loop || return 3
  export PYTHONPATH="$build/python" QUARRY_BIN="$q" PYTHONDONTWRITEBYTECODE=1
  if python3 -c 'import pytest' 2>/dev/null; then
    python3 -m pytest -q -p no:cacheprovider -rs "$root/python/tests/test_engine.py" -k "cuda or in_place"
    echo $? >"$work/pytest-rc"
  else
    echo none >"$work/pytest-rc"
  fi
  local bench=(--device "$device")
  [ "$device" = cpu ] && bench=(--device cpu --n 1000000 --repeats 5)
  python3 "$root/bench/python_cuda.py" "${bench[@]}" --out "$work/python-cuda.json"
  local rc=$?
  [[ "$(cat "$work/pytest-rc")" =~ ^(0|none)$ ]] && [ $rc = 0 ]
}
if needs_build python; then
  if ! grep -q "^build quarry_py_core:" "$build/build.ninja" 2>/dev/null; then
    skip python "the build has no Python modules (python3 lacks pybind11 or Python.h)"
  elif ! python3 -c 'import numpy, torch' 2>/dev/null; then
    skip python "python3 lacks numpy or torch (environment.txt)"
  else
    export -f python_check
    export build root work device q
    step python "$(($(left) - 10))" bash -c python_check
  fi
fi

# ------------------------------------------------------------------ 6. the results and the goals
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
summary="$out/loop-$device-$stamp-$commit.json"
baseline="${LOOP_BASELINE:-$(ls "$root"/bench/results/loop-cpu-*.json 2>/dev/null | sort | tail -1)}"
python3 - "$summary" "$logs/environment.txt" "$work" "$baseline" "$device" <<'EOF'
import glob, json, os, statistics, sys, traceback
summary, env_file, work, baseline_file, device = sys.argv[1:6]
env = dict(line.rstrip("\n").split(": ", 1) for line in open(env_file) if ": " in line)
steps = ("build", "simulate", "infer", "project", "python")
def read(name, default=None):
    p = os.path.join(work, name)
    return open(p).read().strip() if os.path.exists(p) else default
rc = {s: int(read("rc-" + s, "125")) for s in steps}
why = {s: read("why-" + s) for s in steps}
r = {"what": "scripts/gpu_loop_check.sh: the LibTorch loop (PneumoniaMNIST simulate rounds, cnn inference, "
             "a labeling project, the Python package) on " + device,
     "device": device, "environment": env, "rc": rc, "not_run": {s: w for s, w in why.items() if w}, "errors": {}}
goals = []
def goal(name, status, figure):
    goals.append({"goal": name, "status": status, "figure": figure})
def outcome(s):
    """None where the step ran to rc 0, else (status, figure) saying what happened."""
    if rc[s] == 0:
        return None
    if rc[s] == 125:
        w = why[s] or "not started"
        return ("not run", w if s == "build" or w != "no build" else
                f"no build ({why['build'] or 'build rc %d, log build.log' % rc['build']})")
    if rc[s] in (124, 137):
        return ("FAIL", f"stopped at its limit of {read('limit-' + s, '?')} s (log {s}.log)")
    return ("FAIL", f"rc {rc[s]} (log {s}.log)")
def section(name, fn):
    try:
        fn()
    except Exception:
        r["errors"][name] = traceback.format_exc(limit=2)
        goal(name, "FAIL", "the results could not be read: " + traceback.format_exc(limit=0).strip())
base = None
if baseline_file and os.path.exists(baseline_file):
    try:
        base = json.load(open(baseline_file))
        r["baseline"] = {"file": os.path.basename(baseline_file), "environment": base.get("environment"),
                         "simulate": base.get("simulate"), "infer": base.get("infer"), "project": base.get("project")}
    except Exception:
        r["errors"]["baseline"] = traceback.format_exc(limit=2)

def simulate():
    name = "PneumoniaMNIST simulate round >= 5x the 2-core CPU"
    o = outcome("simulate")
    if o:
        return goal(name, *o)
    rounds = [json.loads(l) for l in open(os.path.join(work, "simulate", "rounds.jsonl")) if l.strip()]
    last = max(x["round"] for x in rounds)
    selecting = [x for x in rounds if x["round"] < last]  # the last round trains and evaluates only
    sim = r["simulate"] = {
        "data": "PneumoniaMNIST (npz), bald with mc:10, 200 initial labels, 3 rounds of 100, 1 repeat",
        "rounds": [{"round": x["round"], "labels": x["labels"], "epochs": x["epochs"], "accuracy": x["accuracy"],
                    "seconds": x["seconds"]} for x in rounds],
        "median_round_seconds": statistics.median(x["seconds"]["round"] for x in selecting),
        "median_train_seconds_per_epoch": statistics.median(x["seconds"]["train"] / max(1, x["epochs"]) for x in rounds),
        "median_infer_seconds": statistics.median(x["seconds"]["infer"] for x in selecting),
    }
    b = (base or {}).get("simulate")
    if not b:
        return goal(name, "measured", f"median round {sim['median_round_seconds']:.2f} s (no CPU baseline to compare)")
    ratio = b["median_round_seconds"] / sim["median_round_seconds"]
    per_epoch = b["median_train_seconds_per_epoch"] / sim["median_train_seconds_per_epoch"]
    status = "measured" if device == "cpu" else ("PASS" if ratio >= 5 else "MISS")
    goal(name, status, f"median round {sim['median_round_seconds']:.2f} s vs {b['median_round_seconds']:.2f} s: "
                       f"{ratio:.1f}x (training per epoch {per_epoch:.1f}x)")

def infer():
    name = "cnn inference >= 20,000 images/s"
    o = outcome("infer")
    if o:
        return goal(name, *o)
    inf = r["infer"] = json.load(open(sorted(glob.glob(os.path.join(work, "infer-*.json")))[-1]))
    rate, mc = inf["median_images_per_second_plain"], inf["median_images_per_second_mc10"]
    status = "measured" if device == "cpu" else ("PASS" if rate >= 20000 else "MISS")
    goal(name, status, f"{rate:.0f} images/s (mc:10: {mc:.0f})")

def project():
    name = "project init/next/label/next on " + device
    o = outcome("project")
    if o:
        return goal(name, *o)
    r["project"] = {"next_seconds_after_labeling": float(read("project_next_seconds"))}
    goal(name, "PASS", f"next after labeling {r['project']['next_seconds_after_labeling']:.2f} s")

def python():
    name = "Python: tensors in place; entropy + top-1000, C = 100: >= 4x torch eager"
    pytest_rc = read("pytest-rc")
    if os.path.exists(os.path.join(work, "python-cuda.json")):
        r["python"] = json.load(open(os.path.join(work, "python-cuda.json")))
    py = r.get("python")
    tests = {None: "tests not run", "0": "tests passed", "none": "no pytest: tests not run"}.get(pytest_rc, f"pytest rc {pytest_rc}")
    if py is None or not py.get("cases"):
        o = outcome("python") or ("not run", "no figures")
        return goal(name, o[0], f"{o[1]}; {tests}" + (f"; {py['skipped']}" if py and py.get("skipped") else ""))
    figs = ", ".join(f"C = {c['c']}: {c['seconds']['quarry']['median'] * 1e3:.2f} vs "
                     f"{c['seconds']['torch']['median'] * 1e3:.2f} ms, {c['speedup_vs_torch']:.2f}x" for c in py["cases"])
    c100 = [c for c in py["cases"] if c["c"] == 100 and c["n"] >= 10_000_000]
    status = ("PASS" if c100[0]["speedup_vs_torch"] >= 4 else "MISS") if c100 and device != "cpu" else "measured"
    if pytest_rc not in ("0", "none"):
        status = "FAIL"
    goal(name, status, f"{tests}; N = {py['cases'][0]['n']}: {figs}")

for n, fn in (("simulate", simulate), ("infer", infer), ("project", project), ("python", python)):
    section(n, fn)
r["goals"] = goals
json.dump(r, open(summary, "w"), indent=1)
print(f"\n== loop goals ({env.get('commit')}; {env.get('gpu')})")
for g in goals:
    print(f"  {g['status']:<9} {g['goal']:<52} {g['figure']}")
if rc["build"] not in (0, 125):
    print(f"  the build failed: rc {rc['build']} (logs build/, in loop-logs.tar.gz)")
failed = any(g["status"] == "FAIL" for g in goals) or rc["build"] not in (0, 125)
nothing = device != "cpu" and not any(g["status"] in ("PASS", "MISS", "measured") for g in goals)
if nothing:
    print("  nothing was measured")
sys.exit(1 if failed or nothing else 0)
EOF
status=$?
cp "$work"/infer-*.json "$work"/python-cuda.json "$logs/" 2>/dev/null
[ -f "$work/simulate/rounds.jsonl" ] && cp "$work/simulate/rounds.jsonl" "$logs/simulate-rounds.jsonl"
tar -czf "$out/loop-logs.tar.gz" -C "$work" logs
say "results in $out: $(cd "$out" && ls | tr '\n' ' ')"
exit $status
