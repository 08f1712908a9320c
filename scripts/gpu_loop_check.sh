#!/usr/bin/env bash
# The LibTorch loop on CUDA in one call of the `device` tool, the step after scripts/gpu_check.sh
# (issue 18's last goals), within a deadline (default 450 s):
#   1. builds quarry and quarry-loop there against the machine's own PyTorch (its LibTorch CMake
#      package; scripts/gpu_build_there.sh with TORCH_PREFIX, from carry/deps), unless BUILD names
#      a build folder that has them;
#   2. the cnn's inference throughput: `quarry infer` over 54,000 28x28 images (synthetic:54000),
#      plain and with --committee mc:10, after training on 2,000 labels (bench/run_infer.sh);
#   3. PneumoniaMNIST rounds: `quarry simulate --strategies bald`, 200 initial labels and 3 rounds
#      of 100, one repeat: the seconds of each round that selects (train, eval, infer, score, select;
#      the last round only trains and evaluates) from rounds.jsonl;
#   4. `quarry project init --device D` on the synthetic pool, `next`, `label`, `next`: the
#      labeling project's retraining and scoring on the device;
#   5. the Python package, built for the machine's python3 and torch where it has pybind11 and
#      Python's headers: the CUDA tests of python/tests/test_engine.py (torch CUDA tensors scored
#      in place) and bench/python_cuda.py (entropy + top-1000 over N = 1e7, C = 10 and 100, quarry
#      on the tensor in place against torch eager, in one process);
#   6. the goals table, against the same script's figures on the CPU machine (LOOP_BASELINE, default
#      the newest bench/results/loop-cpu-*.json).
# Run here with DEVICE=cpu it measures that baseline: the figures of the 2-core development machine.
#
#   scripts/gpu_prepare.sh                       (here: stages carry/, PneumoniaMNIST in carry/data)
#   device call: DEADLINE=450 bash scripts/gpu_loop_check.sh 2>&1     (carry: ["carry"])
#   here: DEVICE=cpu BUILD=build OUT=/tmp/loop-cpu scripts/gpu_loop_check.sh   (the CPU baseline)
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
deadline="${DEADLINE:-450}"
device="${DEVICE:-cuda}"
out="${OUT:-$root/build-gpu-loop-check}"
work="$(mktemp -d)"
logs="$work/logs"
mkdir -p "$logs" "$out"
trap 'rm -rf "$work"' EXIT
commit="${QUARRY_COMMIT:-$(git -C "$root" describe --always --dirty --abbrev=7 2>/dev/null || cat "$root/carry/gpu/COMMIT" 2>/dev/null || echo unknown)}"
export QUARRY_COMMIT="$commit"
say() { printf '[gpu_loop_check %4ds] %s\n' "$((SECONDS - start))" "$*" | tee -a "$logs/steps.txt"; }
left() { echo $((deadline - (SECONDS - start))); }
# step NAME SECONDS COMMAND...: runs it with a time limit (its share, never past the deadline).
step() {
  local name="$1" limit="$2"
  shift 2
  [ "$limit" -gt "$(left)" ] && limit="$(left)"
  if [ "$limit" -le 5 ]; then
    say "$name: not run (the deadline)"
    return 124
  fi
  say "$name ($limit s at most)"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  say "$name: rc $rc in $((SECONDS - t0)) s"
  [ $rc -ne 0 ] && tail -15 "$logs/$name.log" | sed 's/^/    /'
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
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$logs/environment.txt"
sed 's/^/  /' "$logs/environment.txt"

# ------------------------------------------------------------------ 1. the build
case "${BUILD:-}" in "") build="" ;; /*) build="$BUILD" ;; *) build="$root/$BUILD" ;; esac
build_rc=0
if [ -z "$build" ]; then
  torch_prefix="${TORCH_PREFIX:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)}"
  build="$root/build-gpu-loop"
  if [ -z "$torch_prefix" ]; then
    say "build: no LibTorch (python3 has no torch and TORCH_PREFIX is not set)"
    build_rc=2
  else
    # The Python modules too where python3 has pybind11 and Python.h (configured here, built in
    # step 5: a failure there leaves the commands' figures).
    py_args=""
    pybind11_dir="${PYBIND11_DIR:-$(python3 -m pybind11 --cmakedir 2>/dev/null)}"
    if [ -n "$pybind11_dir" ] && python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
      py="$(command -v python3)"
      py_args="-DQUARRY_PYTHON=ON -Dpybind11_DIR=$pybind11_dir -DPYTHON_EXECUTABLE=$py -DPython_EXECUTABLE=$py"
    else
      py_args="-DQUARRY_PYTHON=OFF"
      say "python: not built (python3 lacks pybind11 or Python.h)"
    fi
    # Every core; CUDA only for the device's architecture. A warm machine keeps the folder.
    # No test or benchmark programs: GoogleTest and Google Benchmark are not built either.
    step build "$(($(left) - 150))" env BUILD_DIR="$build" OUT="$logs/build" TORCH_PREFIX="$torch_prefix" \
      TEST_DEPS=0 CMAKE_ARGS="-DQUARRY_TESTS=OFF -DQUARRY_BENCH=OFF $py_args" "$root/scripts/gpu_build_there.sh" quarry_cli
    build_rc=$?
  fi
fi
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$root/carry/deps/prefix/lib:$root/carry/deps/prefix/lib/fallback"
q="$build/quarry"
if [ $build_rc -eq 0 ] && [ -x "$q" ] && [ -x "$build/quarry-loop" ]; then
  "$q" --version >"$logs/version.txt" 2>&1
  sed 's/^/  /' "$logs/version.txt"
else
  say "no quarry-loop in $build: nothing to measure"
  [ $build_rc -eq 0 ] && build_rc=1
fi

# ------------------------------------------------------------------ 2. cnn inference throughput
infer_rc=124
if [ $build_rc -eq 0 ]; then
  step infer 150 env BUILD="$build" DEVICE="$device" REPEATS="${REPEATS:-3}" DATASET=synthetic:54000 \
    RESULTS="$work" "$root/bench/run_infer.sh"
  infer_rc=$?
fi

# ------------------------------------------------------------------ 3. PneumoniaMNIST rounds
data="${DATA:-}"
if [ -z "$data" ]; then
  for d in "$root/carry/data" "$root/../shared/data/pneumoniamnist"; do
    [ -f "$d/pneumoniamnist.npz" ] && { data="$d"; break; }
  done
fi
sim_rc=124
if [ $build_rc -eq 0 ] && [ -n "$data" ] && [ -f "$data/pneumoniamnist.npz" ]; then
  step simulate 240 "$q" simulate --dataset "npz:$data/pneumoniamnist.npz" --strategies bald --seed-size 200 \
    --batch 100 --rounds 3 --repeats 1 --threads 0 --device "$device" --out "$work/simulate"
  sim_rc=$?
elif [ $build_rc -eq 0 ]; then
  say "simulate: not run (no pneumoniamnist.npz: DATA, carry/data or ../shared/data/pneumoniamnist)"
fi

# ------------------------------------------------------------------ 4. a labeling project on the device
project_rc=124
if [ $build_rc -eq 0 ]; then
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
  export -f project_check
  export q work device
  step project 90 bash -c project_check
  project_rc=$?
fi

# ------------------------------------------------------------------ 5. Python: torch tensors in place
python_rc=124
if [ $build_rc -eq 0 ] && ninja -C "$build" -t targets all 2>/dev/null | grep -q "^quarry_py_core:" &&
  [ "$(left)" -gt 20 ]; then
  python_check() {
    set -e
    ninja -C "$build" quarry_py_core quarry_py_loop
    export PYTHONPATH="$build/python" QUARRY_BIN="$q" PYTHONDONTWRITEBYTECODE=1
    python3 -m pytest -q -p no:cacheprovider -rs "$root/python/tests/test_engine.py" -k "cuda or in_place"
    if [ "$device" = cpu ]; then
      python3 "$root/bench/python_cuda.py" --device cpu --n 1000000 --repeats 5 --out "$work/python-cuda.json"
    else
      python3 "$root/bench/python_cuda.py" --device "$device" --out "$work/python-cuda.json"
    fi
  }
  export -f python_check
  export build root
  step python "$(($(left) - 10))" bash -c python_check
  python_rc=$?
elif [ $build_rc -eq 0 ]; then
  say "python: not run (no Python package configured, or the deadline)"
fi

# ------------------------------------------------------------------ 6. the results and the goals
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
summary="$out/loop-$device-$stamp-$commit.json"
baseline="${LOOP_BASELINE:-$(ls "$root"/bench/results/loop-cpu-*.json 2>/dev/null | sort | tail -1)}"
python3 - "$summary" "$logs/environment.txt" "$work" "$baseline" "$device" "$build_rc" "$infer_rc" "$sim_rc" "$project_rc" "$python_rc" <<'EOF'
import glob, json, os, statistics, sys
summary, env_file, work, baseline_file, device = sys.argv[1:6]
build_rc, infer_rc, sim_rc, project_rc, python_rc = (int(x) for x in sys.argv[6:11])
env = dict(line.rstrip("\n").split(": ", 1) for line in open(env_file) if ": " in line)
r = {"what": "scripts/gpu_loop_check.sh: the LibTorch loop (cnn inference, PneumoniaMNIST simulate rounds, "
             "a labeling project) on " + device, "device": device, "environment": env,
     "rc": {"build": build_rc, "infer": infer_rc, "simulate": sim_rc, "project": project_rc, "python": python_rc}}
infer = sorted(glob.glob(os.path.join(work, "infer-*.json")))
if infer_rc == 0 and infer:
    r["infer"] = json.load(open(infer[-1]))
rounds_file = os.path.join(work, "simulate", "rounds.jsonl")
if sim_rc == 0 and os.path.exists(rounds_file):
    rounds = [json.loads(l) for l in open(rounds_file) if l.strip()]
    last = max(x["round"] for x in rounds)
    selecting = [x for x in rounds if x["round"] < last]  # the last round trains and evaluates only
    r["simulate"] = {
        "data": "PneumoniaMNIST (npz), bald with mc:10, 200 initial labels, 3 rounds of 100, 1 repeat",
        "rounds": [{"round": x["round"], "labels": x["labels"], "epochs": x["epochs"], "accuracy": x["accuracy"],
                    "seconds": x["seconds"]} for x in rounds],
        "median_round_seconds": statistics.median(x["seconds"]["round"] for x in selecting),
        "median_train_seconds_per_epoch": statistics.median(x["seconds"]["train"] / max(1, x["epochs"]) for x in rounds),
        "median_infer_seconds": statistics.median(x["seconds"]["infer"] for x in selecting),
    }
p = os.path.join(work, "project_next_seconds")
if project_rc == 0 and os.path.exists(p):
    r["project"] = {"next_seconds_after_labeling": float(open(p).read())}
base = json.load(open(baseline_file)) if baseline_file and os.path.exists(baseline_file) else None
if base:
    r["baseline"] = {"file": os.path.basename(baseline_file), "environment": base.get("environment"),
                     "simulate": base.get("simulate"), "infer": base.get("infer"), "project": base.get("project")}
goals = []
def goal(name, status, figure):
    goals.append({"goal": name, "status": status, "figure": figure})
rate = r.get("infer", {}).get("median_images_per_second_plain")
if rate is None:
    goal("cnn inference >= 20,000 images/s", "not run", f"infer rc {infer_rc}" if build_rc == 0 else f"build rc {build_rc}")
else:
    mc = r["infer"].get("median_images_per_second_mc10")
    goal("cnn inference >= 20,000 images/s", "PASS" if rate >= 20000 else "MISS", f"{rate:.0f} images/s (mc:10: {mc:.0f})")
sim = r.get("simulate")
if sim is None:
    goal("PneumoniaMNIST simulate round >= 5x the 2-core CPU", "not run", f"simulate rc {sim_rc}")
elif not base or not base.get("simulate"):
    goal("PneumoniaMNIST simulate round >= 5x the 2-core CPU", "not compared",
         f"median round {sim['median_round_seconds']:.2f} s (no CPU baseline: bench/results/loop-cpu-*.json)")
else:
    b = base["simulate"]
    ratio = b["median_round_seconds"] / sim["median_round_seconds"]
    per_epoch = b["median_train_seconds_per_epoch"] / sim["median_train_seconds_per_epoch"]
    goal("PneumoniaMNIST simulate round >= 5x the 2-core CPU", "PASS" if ratio >= 5 else "MISS",
         f"median round {sim['median_round_seconds']:.2f} s vs {b['median_round_seconds']:.2f} s: {ratio:.1f}x "
         f"(training per epoch {per_epoch:.1f}x)")
proj = r.get("project")
goal("project init/next/label/next on " + device, "PASS" if proj else ("not run" if project_rc == 124 else "FAIL"),
     f"next after labeling {proj['next_seconds_after_labeling']:.2f} s" if proj else f"project rc {project_rc}")
pyfile = os.path.join(work, "python-cuda.json")
py = json.load(open(pyfile)) if os.path.exists(pyfile) else None
if py is not None:
    r["python"] = py
name = "Python: tensors in place; entropy + top-1000, C = 100: >= 4x torch eager"
if python_rc != 0 or py is None:
    goal(name, "not run" if python_rc == 124 else "FAIL", f"python rc {python_rc} (tests, then bench/python_cuda.py)")
elif py.get("skipped"):
    goal(name, "not run", py["skipped"])
else:
    figs = ", ".join(f"C = {c['c']}: {c['seconds']['quarry']['median'] * 1e3:.2f} vs {c['seconds']['torch']['median'] * 1e3:.2f} ms, "
                     f"{c['speedup_vs_torch']:.2f}x" for c in py["cases"])
    c100 = [c for c in py["cases"] if c["c"] == 100 and c["n"] >= 10_000_000]
    status = ("PASS" if c100[0]["speedup_vs_torch"] >= 4 else "MISS") if c100 and device != "cpu" else "measured"
    goal(name, status, f"tests passed; N = {py['cases'][0]['n']}: {figs}")
r["goals"] = goals
json.dump(r, open(summary, "w"), indent=1)
print(f"\n== loop goals ({env.get('commit')}; {env.get('gpu')})")
for g in goals:
    print(f"  {g['status']:<12} {g['goal']:<52} {g['figure']}")
EOF
cp "$work"/infer-*.json "$work"/python-cuda.json "$logs/" 2>/dev/null
[ -f "$work/simulate/rounds.jsonl" ] && cp "$work/simulate/rounds.jsonl" "$logs/simulate-rounds.jsonl"
tar -czf "$out/loop-logs.tar.gz" -C "$work" logs
say "results in $out: $(cd "$out" && ls | tr '\n' ' ')"
