// BatchBALD's candidate gains on the device, as src/engine/batchbald.cpp calls them: plain C++
// (no CUDA header). The greedy loop (the picks, the batch's label configurations and their
// conditioning) stays on the host, where it costs O(S C M) a pick; the device computes what
// costs O(N S C M) a pick: every candidate's expected joint entropy over the configurations.
// Compiled only where QUARRY_BUILD_CUDA is 1.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace quarry::cuda {

class BatchBaldGains {
 public:
  /// p: the committee's probabilities [N][C][M] (members fastest); member_entropy [N]: each
  /// sample's mean member entropy; up to `max_configurations` configurations a pick. Copies
  /// both to `device` (an Error naming the sizes where they do not fit).
  BatchBaldGains(const std::vector<float>& p, const std::vector<double>& member_entropy, std::int64_t n,
                 std::int64_t c, std::int64_t m, std::int64_t max_configurations, int device);
  ~BatchBaldGains();
  BatchBaldGains(const BatchBaldGains&) = delete;
  BatchBaldGains& operator=(const BatchBaldGains&) = delete;

  /// gain[n] = sum_s a[s] H(q_s) - member_entropy[n], q_s(c) = sum_m wt[m * S + s] p[n][c][m],
  /// for every n (taken or not), S = a.size() configurations, wt member-major [M][S]. Float
  /// products and per-configuration entropies, double sums, as the CPU.
  void compute(const std::vector<float>& a, const std::vector<float>& wt, std::vector<double>& gain);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quarry::cuda
