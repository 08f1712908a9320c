#!/usr/bin/env bash
# Inference throughput of the `cnn` model over a whole pool (MNIST's 54,000 training images after
# the held-out validation split; DATASET=spec for another, synthetic:54000 where MNIST is absent): trains a model on 2,000 labels once, then times
# `quarry infer` (probabilities, embeddings, and with --committee mc:10 the MC-dropout samples)
# REPEATS times, and saves the medians as JSON in bench/results/infer-<UTC time>-<commit>.json.
# The issue's goal: >= 20,000 images/s on a GPU (--device cuda).
# Usage: BUILD=build DEVICE=auto REPEATS=5 bench/run_infer.sh
#   (BUILD: a folder under the repository or an absolute path; RESULTS: where the JSON goes)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
case "${BUILD:-build}" in /*) build="$BUILD" ;; *) build="$root/${BUILD:-build}" ;; esac
device="${DEVICE:-auto}"
repeats="${REPEATS:-5}"
mnist="$(cd "$root/.." && pwd)/shared/data/mnist"
# MNIST where ../shared/data has it (not on the device machine), else the synthetic pool.
if [ -d "$mnist" ]; then dataset="${DATASET:-idx:$mnist}"; else dataset="${DATASET:-synthetic:54000}"; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
seq 0 1999 > "$work/labeled.txt"
"$build/quarry" train --dataset "$dataset" --labeled "$work/labeled.txt" --epochs 5 --device "$device" \
  --out "$work/model.pt" > "$work/train.txt"
rates_plain=() rates_mc=()
for _ in $(seq "$repeats"); do
  rates_plain+=("$("$build/quarry" infer --dataset "$dataset" --model "$work/model.pt" --device "$device" \
    --committee none --out "$work/out" | sed -n 's/.*s (\([0-9]*\) samples\/s).*/\1/p')")
  rates_mc+=("$("$build/quarry" infer --dataset "$dataset" --model "$work/model.pt" --device "$device" \
    --committee mc:10 --out "$work/out" | sed -n 's/.*s (\([0-9]*\) samples\/s).*/\1/p')")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# QUARRY_COMMIT names the commit where the copy has no .git (the GPU machine).
commit="${QUARRY_COMMIT:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}"
stamp="$(date -u +%Y%m%dT%H%M%SZ)-${commit:0:7}"
results="${RESULTS:-$root/bench/results}"
out="$results/infer-$stamp.json"
mkdir -p "$results"
gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)"
cat > "$out" <<JSON
{
  "benchmark": "quarry infer, cnn, the training split of $dataset (1x28x28 images)",
  "commit": "$commit",
  "device_flag": "$device",
  "model": "$(sed -n 's/^model: //p' "$work/train.txt")",
  "gpu": "${gpu}",
  "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs",
  "repeats": $repeats,
  "images_per_second_plain": [$(IFS=,; echo "${rates_plain[*]}")],
  "images_per_second_mc10": [$(IFS=,; echo "${rates_mc[*]}")],
  "median_images_per_second_plain": $(median "${rates_plain[@]}"),
  "median_images_per_second_mc10": $(median "${rates_mc[@]}")
}
JSON
cat "$out"
