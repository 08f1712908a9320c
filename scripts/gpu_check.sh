#!/usr/bin/env bash
# The whole GPU check in one call of the `device` tool, within a deadline (default 450 s):
#   1. the machine: nvidia-smi, driver, toolkit, PyTorch (environment.txt);
#   2. correctness, in parallel: the CUDA parity tests (test_cuda with the dense ones, test_diversity_cuda,
#      test_stream, test_batchbald) and compute-sanitizer (memcheck on test_cuda's quick case list and on the
#      CUDA streaming tests; racecheck on the top-k / power and the diversity kernels);
#   3. the benchmarks, one at a time on an idle GPU: bench_cuda (every fused score, top-k, power,
#      dense mean / max / topq:0.01 over 64 x 2 x 128^3 float16, the copy bandwidth), bench_stream_cuda (streaming from pinned memory), bench_diversity_cuda
#      (BADGE and k-center, N = 1e6, D = 512), bench/compare_torch.py (PyTorch eager, same data);
#   4. the goals table (bench/gpu_goals.py), printed last.
# It runs the programs that scripts/gpu_prepare.sh built and staged in carry/gpu/ on the
# development machine; where they do not load, it builds them here (scripts/gpu_build_there.sh,
# ~3 minutes of the deadline). Every step has its own time limit; a step stopped at its limit
# leaves its goals "not run", never a hang.
#
#   scripts/gpu_check.sh          (docs/gpu.md: the device call, and a dry run without a GPU)
#
# Results go to $OUT (default build-gpu-check/), at most 8 files, as the device tool brings back:
#   gpu-<stamp>-<commit>-summary.json  the goals, each figure, the environment
#   bench_cuda.json, bench_stream_cuda.json, bench_diversity_cuda.json, compare_torch.json
#   logs.tar.gz                        every log, the parity tests' JSON, ptxas.log
# Environment: OUT, DEADLINE (seconds, default 450), QUARRY_COMMIT (names the results; the copy
# on the GPU machine has no .git), CHECK_STEPS (default "parity sanitizers bench stream diversity
# torch profile": a subset runs only those), CORR_SECONDS (the correctness step's limit),
# SANITIZERS (e.g. "racecheck-topk memcheck-test_cuda": only those sanitizer runs), BENCH_ARGS (extra bench_cuda flags), TORCH_ARGS.
set -uo pipefail
start=$SECONDS
root="$(cd "$(dirname "$0")/.." && pwd)"
deadline="${DEADLINE:-450}"
out="${OUT:-$root/build-gpu-check}"
logs="$root/build-gpu-logs/logs"  # outside $OUT: the device tool brings back 8 files
rm -rf "$logs"
mkdir -p "$logs" "$out"
steps=" ${CHECK_STEPS:-parity sanitizers bench stream diversity torch profile} "
stage="$root/carry/gpu"

say() { printf '[gpu_check %4ds] %s\n' "$((SECONDS - start))" "$*"; }
left() { echo $((deadline - (SECONDS - start))); }
want() { [[ "$steps" == *" $1 "* ]]; }
commit="${QUARRY_COMMIT:-$(cat "$stage/COMMIT" 2>/dev/null || git -C "$root" describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)}"
export QUARRY_COMMIT="$commit"

# ------------------------------------------------------------------ the toolkit and the programs
nvcc="$(command -v nvcc || true)"
[ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
cuda_home=/usr/local/cuda
[ -n "$nvcc" ] && cuda_home="$(dirname "$(dirname "$(readlink -f "$nvcc")")")"
export PATH="$cuda_home/bin:$PATH"
sanitizer="$(command -v compute-sanitizer || true)"
for c in "$cuda_home/bin/compute-sanitizer" "$cuda_home/compute-sanitizer/compute-sanitizer"; do
  [ -z "$sanitizer" ] && [ -x "$c" ] && sanitizer="$c"
done

# The staged programs name their build folder by the absolute path they were built at (the
# quarry command the tests run, their scratch folder, the quarry libraries' RPATH): make that path lead
# to the carried copy, unless it is the real build folder (a dry run on the development machine).
bin=""
if [ -f "$stage/BUILD_DIR" ]; then
  baked="$(cat "$stage/BUILD_DIR")"
  if [ -x "$baked/tests/test_cuda" ]; then
    bin="$baked"
  elif [ ! -e "$baked" ] || [ -L "$baked" ]; then
    mkdir -p "$(dirname "$baked")" && ln -sfn "$stage/build-gpu" "$baked" && bin="$baked"
  else
    bin="$stage/build-gpu"
    say "WARNING: $baked exists and is not the staged build: the command-line tests may fail"
  fi
  mkdir -p "$bin/tests/tmp"
fi
# The staged libraries only where the image has none of that name (its own OpenSSL, zlib or
# OpenMP stay the ones its Python and tools load).
staged="$("$root/scripts/missing_libs.sh" "$stage/lib" "$root/build-gpu-logs/staged-libs")"
export LD_LIBRARY_PATH="$staged:${bin:-.}:$cuda_home/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Libraries the loader still misses (cuBLAS where the toolkit keeps it elsewhere, say): look for them.
missing_libs() { ldd "$bin/tests/test_cuda" "$bin/bench/bench_cuda" 2>/dev/null | awk '/not found/ {print $1}' | sort -u; }
if [ -n "$bin" ]; then
  for lib in $(missing_libs); do
    found="$(find /usr/local /usr/lib /opt -name "$lib" 2>/dev/null | head -1)"
    [ -n "$found" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$found")" && say "found $lib in $(dirname "$found")"
  done
fi
if [ -z "$bin" ] || ! "$bin/tests/test_cuda" --gtest_list_tests >"$logs/load.log" 2>&1; then
  say "the staged programs do not load here ($(head -c 300 "$logs/load.log" 2>/dev/null)); building them here"
  [ -n "$bin" ] && ldd "$bin/tests/test_cuda" >>"$logs/load.log" 2>&1
  bin="$root/build-gpu-there"
  BUILD_DIR="$bin" OUT="$logs/build" "$root/scripts/gpu_build_there.sh" test_cuda test_diversity_cuda test_stream test_batchbald \
    bench_cuda bench_stream_cuda bench_diversity_cuda quarry_cli || { say "the build failed too"; }
  export LD_LIBRARY_PATH="$root/carry/deps/prefix/lib:$bin:$LD_LIBRARY_PATH"
fi
[ -f "$stage/ptxas.log" ] && cp "$stage/ptxas.log" "$logs/"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $commit"
  echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
  grep -m1 PRETTY_NAME /etc/os-release 2>/dev/null
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,clocks.sm,temperature.gpu,power.draw \
      --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  else
    echo "gpu: none (no nvidia-smi)"
  fi
  echo "nvcc: $([ -n "$nvcc" ] && "$nvcc" --version | tail -2 | tr '\n' ' ')"
  echo "compute-sanitizer: ${sanitizer:-none} $([ -n "$sanitizer" ] && "$sanitizer" --version 2>/dev/null | tail -1)"
  echo "python3: $(command -v python3) $(python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)"
  echo "programs: $bin"
  echo "LD_LIBRARY_PATH: $LD_LIBRARY_PATH"
  echo "ldd test_cuda: $(ldd "$bin/tests/test_cuda" 2>&1 | awk '{print $1 "=" $3}' | tr '\n' ' ')"
} >"$logs/environment.txt" 2>&1
sed 's/^/  /' "$logs/environment.txt" | cut -c1-400

# ------------------------------------------------------------------ 2. correctness, in parallel
# Wall-clock budget of the correctness step (CORR_SECONDS): by default what is left, less about
# 4 minutes of benchmarks, between 60 and 160 s.
corr=$(( $(left) - 260 ))
[ "$corr" -gt 160 ] && corr=160
[ "$corr" -lt 60 ] && corr=60
corr="${CORR_SECONDS:-$corr}"
run_limited() {  # seconds log command... (stopped at its limit, then killed 5 s later)
  local s="$1" log="$2"
  shift 2
  timeout --kill-after=5 "$s" "$@" >"$log" 2>&1
  local rc=$?
  { [ $rc = 124 ] || [ $rc = 137 ]; } && echo "STOPPED at its limit of ${s}s" >>"$log"
  return $rc
}
pids=()
if want parity; then
  say "parity tests (${corr}s at most), in parallel with each other and the sanitizers"
  for t in test_cuda test_diversity_cuda test_stream test_batchbald; do
    ( run_limited "$corr" "$logs/$t.log" "$bin/tests/$t" --gtest_output="json:$logs/$t.json"
      echo "$t: rc $? at $((SECONDS - start))s" >>"$logs/parity-rc.txt" ) &
    pids+=($!)
  done
fi
sanitize() {  # tool name program filter (SANITIZERS: the tool-name pairs to run, default all)
  local tool="$1" name="$2" prog="$3" filter="$4"
  [ -n "${SANITIZERS:-}" ] && [[ " $SANITIZERS " != *" $tool-$name "* ]] && return
  local log="$logs/$tool-$name.log"
  if [ -z "$sanitizer" ]; then echo "not run: no compute-sanitizer" >"$log"; return; fi
  QUARRY_CUDA_TEST_QUICK=1 run_limited "$corr" "$log" "$sanitizer" --tool "$tool" --error-exitcode 86 \
    --print-limit 50 "$bin/tests/$prog" --gtest_filter="$filter"
}
if want sanitizers; then
  say "compute-sanitizer memcheck and racecheck (${corr}s at most each, in parallel)"
  # No --leak-check: the per-device contexts (stream, cuBLAS handle, memory pool) live until exit.
  sanitize memcheck test_cuda test_cuda "-CudaCommandLine.*:CudaUnavailable.*:CudaPower.*:CudaTopk.EqualsTheCpuExactly:CudaDense*" & pids+=($!)
  # Dense scores (kernels/dense.cu): its own runs, a few tests each (every launch is slow here).
  sanitize memcheck dense test_cuda "CudaDense.BadVoxelSameErrorAsCpu:CudaDense.GroupsOfAFileWithinAMemoryBudget:CudaDense.ManyCasesAndOneLargeVolume" & pids+=($!)
  sanitize racecheck dense test_cuda "CudaDense.GroupsOfAFileWithinAMemoryBudget:CudaDense.BadVoxelSameErrorAsCpu" & pids+=($!)
  sanitize memcheck test_stream test_stream "Stream.EveryAcquisition*:Stream.Sharded*" & pids+=($!)
  sanitize racecheck scores test_cuda "CudaScores.HandWrittenHardRows:CudaScores.PoolSizesNotAMultipleOfTheBlock" & pids+=($!)
  sanitize racecheck topk test_cuda "CudaTopk.*:CudaPower.*" & pids+=($!)
  sanitize racecheck diversity test_diversity_cuda "DiversityCuda.ProgressIsReported:DiversityCuda.KMeans*" & pids+=($!)
  sanitize memcheck batchbald test_batchbald "BatchBald.CudaGainsMatchTheCpu" & pids+=($!)
  sanitize racecheck batchbald test_batchbald "BatchBald.CudaGainsMatchTheCpu" & pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p"; done
for f in "$logs"/test_*.log "$logs"/memcheck-*.log "$logs"/racecheck-*.log; do
  [ -f "$f" ] || continue
  summary="$(grep -hE "^\[  (PASSED|FAILED)  \]|SUMMARY:|STOPPED|^not run" "$f" | head -3 | tr '\n' ' ')"
  say "  $(basename "$f" .log): ${summary:-no summary}"
  grep -hE "^\[  FAILED  \] [A-Za-z]" "$f" | head -8 | sed 's/^/      /'
done

# ------------------------------------------------------------------ 3. benchmarks, one at a time
bench_step() {  # name limit args...
  local name="$1" limit="$2"
  shift 2
  local s=$(( $(left) - 20 ))
  [ "$s" -gt "$limit" ] && s="$limit"
  if [ "$s" -lt 20 ]; then
    say "$name: not run (${s}s left)"
    echo "not run: no time left" >"$logs/$name.log"
    return
  fi
  say "$name (${s}s at most)"
  run_limited "$s" "$logs/$name.log" "$@"
  say "$name: rc $? in $((SECONDS - start))s"
}
if want bench; then
  # shellcheck disable=SC2086
  bench_step bench_cuda 170 "$bin/bench/bench_cuda" --benchmark_min_time=0.1 \
    --benchmark_out="$out/bench_cuda.json" --benchmark_out_format=json ${BENCH_ARGS:-}
fi
if want stream; then
  bench_step bench_stream_cuda 70 "$bin/bench/bench_stream_cuda" --benchmark_repetitions=3 \
    --benchmark_out="$out/bench_stream_cuda.json" --benchmark_out_format=json
fi
if want diversity; then
  bench_step bench_diversity_cuda 80 "$bin/bench/bench_diversity_cuda" \
    --benchmark_out="$out/bench_diversity_cuda.json" --benchmark_out_format=json
fi
if want torch && [ -s "$out/bench_cuda.json" ]; then
  # With little time left, only the goals' cases.
  only=()
  [ "$(left)" -lt 140 ] && only=(--only 'topk|score/bald/float32/M:20/N:10000000/C:10$')
  # shellcheck disable=SC2086
  PYTHONUNBUFFERED=1 bench_step compare_torch 200 python3 "$root/bench/compare_torch.py" \
    --quarry-json "$out/bench_cuda.json" --json "$out/compare_torch.json" --warmup 1 --repeats 5 \
    "${only[@]}" ${TORCH_ARGS:-}
fi

# Nsight Compute on the kernels of a few benchmarks (the first launch of each; --clock-control
# none leaves the card's clocks as they are): achieved bandwidth, occupancy, launch shape.
if want profile; then
  ncu="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu "$cuda_home"/bin/ncu 2>/dev/null | head -1)"
  if [ -z "$ncu" ]; then
    echo "not run: no ncu" >"$logs/ncu.log"
  else
    # Benchmark names end in /manual_time: the filters end in '/'.
    for f in score/entropy/float32/N:10000000/C:10/ score/least-confidence/float16/N:10000000/C:10/ \
             score/entropy/float32/N:10000000/C:100/ score/entropy/float16/N:10000000/C:100/ \
             score/entropy/float32/N:10000000/C:1000/ score/bald/float32/M:20/N:10000000/C:10/ \
             score/bald/float32/M:20/N:2000000/C:100/ topk/float32/N:100000000/k:1000/; do
      [ "$(left)" -lt 40 ] && break
      k='regex:^(score_|committee_)'; n=1
      [[ "$f" == topk* ]] && k='regex:radix|collect|decode' && n=6
      echo "=== $f" >>"$logs/ncu.log"
      timeout 60 "$ncu" --clock-control none -k "$k" --launch-count "$n" --section SpeedOfLight \
        --section Occupancy --section LaunchStats --section SchedulerStats --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section MemoryWorkloadAnalysis_Tables --print-summary none \
        "$bin/bench/bench_cuda" --benchmark_filter="$f" --benchmark_min_time=0.001 >>"$logs/ncu.log" 2>&1
      say "ncu $f: rc $?"
    done
  fi
fi

# ------------------------------------------------------------------ 4. the goals
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
summary="$out/gpu-$stamp-$commit-summary.json"
for f in bench_cuda bench_stream_cuda bench_diversity_cuda compare_torch; do
  [ -f "$out/$f.json" ] && cp "$out/$f.json" "$logs/"
done
nvidia-smi >"$logs/nvidia-smi.txt" 2>&1
tar -czf "$out/logs.tar.gz" -C "$(dirname "$logs")" logs
python3 "$root/bench/gpu_goals.py" "$logs" --commit "$commit" --json "$summary"
rc=$?
echo "  results in $out: $(cd "$out" && ls -- *.json *.tar.gz 2>/dev/null | tr '\n' ' '); total $((SECONDS - start))s"
exit $rc
