// BatchBALD's candidate gains (kernels/batchbald_cuda.hpp): one block per candidate (grid-
// stride), its threads over the configurations s; each thread forms q_s(c) from the candidate's
// C x M probabilities (read by every thread of the block: L1 hits after the first) and the
// member weights of its s (member-major, so a warp's reads are coalesced), sums -q log q over
// c in float, and weighs it by a_s in double; a block reduction gives the gain. The float part
// is the CPU's arithmetic in the CPU's order (the same detail::xlogx; this file and
// src/engine/batchbald.cpp are compiled without contraction), so each configuration's entropy
// is the CPU's to the bit and a gain differs only by the order of its double sum over s.
#include <algorithm>

#include "kernels/batchbald_cuda.hpp"
#include "kernels/context.cuh"
#include "quarry/detail/fastmath.hpp"

namespace quarry::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void gains_kernel(const float* __restrict__ p, const double* __restrict__ member_entropy,
                             const float* __restrict__ a, const float* __restrict__ wt, std::int64_t S,
                             int C, int M, std::int64_t N, double* __restrict__ gain) {
  __shared__ double part[kThreads / 32];
  for (std::int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const float* pn = p + n * C * M;
    double acc = 0.0;
    for (std::int64_t s = threadIdx.x; s < S; s += blockDim.x) {
      float h = 0.0f;
      for (int c = 0; c < C; ++c) {
        const float* pc = pn + c * M;
        float q = 0.0f;
        for (int m = 0; m < M; ++m) q += __ldg(pc + m) * __ldg(wt + m * S + s);
        h -= detail::xlogx(q);
      }
      acc += static_cast<double>(a[s]) * h;
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      double t = 0.0;
      for (int w = 0; w < kThreads / 32; ++w) t += part[w];
      gain[n] = t - member_entropy[n];
    }
    __syncthreads();  // part[] is rewritten by the block's next candidate
  }
}

}  // namespace

struct BatchBaldGains::Impl {
  Context* ctx = nullptr;
  std::int64_t n = 0, c = 0, m = 0, max_s = 0;
  DeviceBuffer<float> p, a, wt;
  DeviceBuffer<double> member_entropy, gain;
};

BatchBaldGains::BatchBaldGains(const std::vector<float>& p, const std::vector<double>& member_entropy,
                               std::int64_t n, std::int64_t c, std::int64_t m, std::int64_t max_configurations,
                               int device)
    : impl_(std::make_unique<Impl>()) {
  Impl& d = *impl_;
  d.ctx = &context(device);
  d.ctx->activate();
  d.n = n;
  d.c = c;
  d.m = m;
  d.max_s = max_configurations;
  const std::size_t bytes = p.size() * sizeof(float) + static_cast<std::size_t>(n) * 2 * sizeof(double) +
                            static_cast<std::size_t>(max_configurations * (m + 1)) * sizeof(float);
  d.ctx->expect_fits(bytes, "batchbald's committee probabilities and configurations");
  d.p = DeviceBuffer<float>(*d.ctx, p.size(), "batchbald probabilities");
  d.member_entropy = DeviceBuffer<double>(*d.ctx, static_cast<std::size_t>(n), "batchbald member entropies");
  d.gain = DeviceBuffer<double>(*d.ctx, static_cast<std::size_t>(n), "batchbald gains");
  d.a = DeviceBuffer<float>(*d.ctx, static_cast<std::size_t>(max_configurations), "batchbald configurations");
  d.wt = DeviceBuffer<float>(*d.ctx, static_cast<std::size_t>(max_configurations * m), "batchbald member weights");
  copy_to_device(*d.ctx, d.p.data(), p.data(), p.size() * sizeof(float));
  copy_to_device(*d.ctx, d.member_entropy.data(), member_entropy.data(), static_cast<std::size_t>(n) * sizeof(double));
}

BatchBaldGains::~BatchBaldGains() = default;

void BatchBaldGains::compute(const std::vector<float>& a, const std::vector<float>& wt, std::vector<double>& gain) {
  Impl& d = *impl_;
  const auto S = static_cast<std::int64_t>(a.size());
  QUARRY_EXPECTS(S >= 1 && S <= d.max_s && static_cast<std::int64_t>(wt.size()) == S * d.m && d.n >= 1,
                 "batchbald (CUDA): ", S, " configurations with ", wt.size(), " member weights, expected 1..", d.max_s,
                 " and ", d.m, " weights each");
  d.ctx->activate();
  copy_to_device(*d.ctx, d.a.data(), a.data(), a.size() * sizeof(float));
  copy_to_device(*d.ctx, d.wt.data(), wt.data(), wt.size() * sizeof(float));
  const int sms = d.ctx->props().multiProcessorCount;
  const auto blocks = static_cast<unsigned>(std::min<std::int64_t>(d.n, std::int64_t{sms} * 16));
  gains_kernel<<<blocks, kThreads, 0, d.ctx->stream()>>>(d.p.data(), d.member_entropy.data(), d.a.data(),
                                                          d.wt.data(), S, static_cast<int>(d.c),
                                                          static_cast<int>(d.m), d.n, d.gain.data());
  QUARRY_CUDA_LAUNCH_CHECK("batchbald gains_kernel");
  gain.resize(static_cast<std::size_t>(d.n));
  copy_to_host(*d.ctx, gain.data(), d.gain.data(), static_cast<std::size_t>(d.n) * sizeof(double));
}

}  // namespace quarry::cuda
