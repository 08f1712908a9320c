// quarry::select_topk, select_power and score_and_select: validate the call (k, beta,
// exclusions) and run it on the backend the device spec resolves to.
#include <cmath>
#include <vector>

#include "core/resident.hpp"
#include "core/rows.hpp"
#include "core/score_call.hpp"
#include "cpu/cpu_backend.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/cuda_backend.hpp"
#endif
#include "quarry/detail/hd.hpp"
#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace quarry {
namespace {

// Validates n and k against the exclusions and returns the exclusion mask (empty: none).
std::vector<std::uint8_t> prepare(std::int64_t n, std::int64_t k,
                                  const std::vector<std::int64_t>& exclude) {
  QUARRY_EXPECTS(n >= 0, "pool size must be non-negative, got ", n);
  QUARRY_USAGE_EXPECTS(k >= 0, "k must be non-negative, got ", k);
  std::vector<std::uint8_t> mask;
  std::int64_t excluded = 0;
  if (!exclude.empty()) {
    mask.assign(static_cast<std::size_t>(n), 0);
    for (std::int64_t i : exclude) {
      QUARRY_EXPECTS(i >= 0 && i < n, "excluded index ", i, " is outside the pool [0, ", n, ")");
      excluded += mask[i] == 0;
      mask[i] = 1;
    }
  }
  QUARRY_USAGE_EXPECTS(k <= n - excluded, "asked for k = ", k, " samples but only ", n - excluded,
                 " are selectable (pool of ", n, ", ", excluded, " excluded)");
  return mask;
}

Selection with_scores(std::vector<std::int64_t> index, const float* scores) {
  Selection sel;
  sel.index = std::move(index);
  sel.score.reserve(sel.index.size());
  for (std::int64_t i : sel.index) sel.score.push_back(scores[i]);
  return sel;
}


void expect_beta(double beta) {
  QUARRY_USAGE_EXPECTS(std::isfinite(beta) && beta > 0 && beta <= 1e30,
                       "power sampling needs a finite beta > 0 (at most 1e30), got ", beta);
}

// The device a selection runs on; for CUDA also its index.
bool on_cuda(const DeviceSpec& requested, int* index) {
  const DeviceSpec d = resolve_device(requested);
  *index = d.index;
  return d.kind == DeviceKind::cuda;
}

// CPU power sampling: the Gumbel keys, then their top k.
std::vector<std::int64_t> cpu_power(const float* scores, std::int64_t n, std::int64_t k,
                                    double beta, std::uint64_t seed,
                                    const std::vector<std::uint8_t>& mask) {
  FloatBuffer keys(static_cast<std::size_t>(n));
  cpu::gumbel_keys(scores, n, static_cast<float>(beta), seed, keys.data());
  return cpu::topk(keys.data(), n, k, mask);
}

}  // namespace

Selection select_topk(const float* scores, std::int64_t n, std::int64_t k,
                      const std::vector<std::int64_t>& exclude, const DeviceSpec& device) {
  const std::vector<std::uint8_t> mask = prepare(n, k, exclude);
  int index = 0;
  const bool cuda = on_cuda(device, &index);
  if (k == 0) return {};
#if QUARRY_BUILD_CUDA
  if (cuda) return with_scores(cuda::topk(scores, n, k, mask, index), scores);
#endif
  (void)cuda;
  return with_scores(cpu::topk(scores, n, k, mask), scores);
}

Selection select_power(const float* scores, std::int64_t n, std::int64_t k, double beta,
                       std::uint64_t seed, const std::vector<std::int64_t>& exclude,
                       const DeviceSpec& device) {
  expect_beta(beta);
  const std::vector<std::uint8_t> mask = prepare(n, k, exclude);
  int index = 0;
  const bool cuda = on_cuda(device, &index);
  if (k == 0) return {};
#if QUARRY_BUILD_CUDA
  if (cuda)
    return with_scores(cuda::power(scores, n, k, static_cast<float>(beta), seed, mask, index), scores);
#endif
  (void)cuda;
  return with_scores(cpu_power(scores, n, k, beta, seed, mask), scores);
}

namespace {
// Scores [N] float32, contiguous, on the device it selects on.
const float* score_vector(const ArrayView& scores, Array* holder, const DeviceSpec& requested,
                          DeviceSpec* device) {
  static const std::string name = "scores";
  QUARRY_USAGE_EXPECTS(scores.rank() == 1, "scores: expected a vector [N], got shape ",
                       shape_string(scores.shape));
  QUARRY_USAGE_EXPECTS(scores.dtype == DType::f32, "scores: expected float32, got ",
                       dtype_name(scores.dtype));
  *device = device_for(scores, requested, name);
  return contiguous_view(scores, holder, name).as<float>();
}
}  // namespace

Selection select_topk(const ArrayView& scores, std::int64_t k, const std::vector<std::int64_t>& exclude,
                      const DeviceSpec& requested, void* stream) {
  Array holder;
  DeviceSpec device;
  const float* p = score_vector(scores, &holder, requested, &device);
  if (!scores.on_cuda()) return select_topk(p, scores.shape[0], k, exclude, device);
  const std::vector<std::uint8_t> mask = prepare(scores.shape[0], k, exclude);
  if (k == 0) return {};
  Selection out;
#if QUARRY_BUILD_CUDA
  out.index = cuda::topk(p, scores.shape[0], k, mask, device.index, {true, false, stream}, &out.score);
#else
  (void)stream;
#endif
  return out;
}

Selection select_power(const ArrayView& scores, std::int64_t k, double beta, std::uint64_t seed,
                       const std::vector<std::int64_t>& exclude, const DeviceSpec& requested, void* stream) {
  Array holder;
  DeviceSpec device;
  const float* p = score_vector(scores, &holder, requested, &device);
  if (!scores.on_cuda()) return select_power(p, scores.shape[0], k, beta, seed, exclude, device);
  expect_beta(beta);
  const std::vector<std::uint8_t> mask = prepare(scores.shape[0], k, exclude);
  if (k == 0) return {};
  Selection out;
#if QUARRY_BUILD_CUDA
  out.index = cuda::power(p, scores.shape[0], k, static_cast<float>(beta), seed, mask, device.index, 0,
                          {true, false, stream}, &out.score);
#else
  (void)stream;
#endif
  return out;
}

Selection score_and_select(const ArrayView& input_raw, Acquisition acquisition,
                           const ScoreOptions& so, const SelectOptions& sel,
                           const ArrayView* emb_raw) {
  const ScoreArrays arrays(input_raw, emb_raw, so);
  const ArrayView& input = arrays.input;
  ScoreCall call = make_score_call(input, acquisition, so, arrays.embeddings());
  if (sel.power) expect_beta(sel.beta);
  const std::vector<std::uint8_t> mask = prepare(call.n, sel.k, sel.exclude);
  const DeviceSpec device = device_for(input, so.device, so.input_name);
  if (device.kind == DeviceKind::cuda) {
#if QUARRY_BUILD_CUDA
    Selection out;
    out.index = cuda::score_select(call, sel.k, sel.power, static_cast<float>(sel.beta), sel.seed,
                                   mask, device.index, &out.score, {input.on_cuda(), false, so.stream});
    return out;
#endif
  }
  // The CPU: every row is scored (bad rows are errors even for k = 0), then selected.
  FloatBuffer scores(static_cast<std::size_t>(call.n));  // uninitialised, huge pages: few page faults
  call.out = scores.data();
  cpu::score(call);
  if (sel.k == 0) return {};
  return with_scores(sel.power ? cpu_power(scores.data(), call.n, sel.k, sel.beta, sel.seed, mask)
                               : cpu::topk(scores.data(), call.n, sel.k, mask),
                     scores.data());
}

}  // namespace quarry
