// BatchBALD (quarry::select_batchbald) against a brute-force reference written here in double:
// the joint entropy of a batch's labels by enumerating every configuration of them, and the
// greedy choice that maximises H(y_batch) - sum over the batch of the members' mean entropy.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "quarry/batchbald.hpp"
#include "quarry/device.hpp"
#include "quarry/error.hpp"

namespace {

struct Committee {
  std::int64_t M, N, C;
  std::vector<float> p;  // [M, N, C]
  double at(std::int64_t m, std::int64_t n, std::int64_t c) const { return p[static_cast<std::size_t>((m * N + n) * C + c)]; }
  quarry::ArrayView view() const { return quarry::ArrayView(p.data(), quarry::DType::f32, {M, N, C}); }
};

Committee random_committee(std::uint64_t seed, std::int64_t M, std::int64_t N, std::int64_t C) {
  Committee k{M, N, C, std::vector<float>(static_cast<std::size_t>(M * N * C))};
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  for (std::int64_t n = 0; n < N; ++n) {
    std::vector<double> shared(static_cast<std::size_t>(C));
    for (auto& x : shared) x = 2.0 * g(rng);
    for (std::int64_t m = 0; m < M; ++m) {
      std::vector<double> z(static_cast<std::size_t>(C));
      double sum = 0.0;
      for (std::int64_t c = 0; c < C; ++c) sum += z[static_cast<std::size_t>(c)] = std::exp(shared[static_cast<std::size_t>(c)] + 1.5 * g(rng));
      for (std::int64_t c = 0; c < C; ++c) k.p[static_cast<std::size_t>((m * N + n) * C + c)] = static_cast<float>(z[static_cast<std::size_t>(c)] / sum);
    }
  }
  return k;
}

// H(y_batch) by enumerating its C^|batch| label configurations.
double joint_entropy(const Committee& k, const std::vector<std::int64_t>& batch) {
  const auto t = batch.size();
  std::size_t configs = 1;
  for (std::size_t i = 0; i < t; ++i) configs *= static_cast<std::size_t>(k.C);
  double h = 0.0;
  for (std::size_t code = 0; code < configs; ++code) {
    double prob = 0.0;
    for (std::int64_t m = 0; m < k.M; ++m) {
      double pm = 1.0;
      std::size_t rest = code;
      for (std::size_t i = 0; i < t; ++i) {
        pm *= k.at(m, batch[i], static_cast<std::int64_t>(rest % static_cast<std::size_t>(k.C)));
        rest /= static_cast<std::size_t>(k.C);
      }
      prob += pm / static_cast<double>(k.M);
    }
    if (prob > 0) h -= prob * std::log(prob);
  }
  return h;
}

double member_entropy(const Committee& k, std::int64_t n) {
  double h = 0.0;
  for (std::int64_t m = 0; m < k.M; ++m)
    for (std::int64_t c = 0; c < k.C; ++c)
      if (k.at(m, n, c) > 0) h -= k.at(m, n, c) * std::log(k.at(m, n, c));
  return h / static_cast<double>(k.M);
}

struct Greedy {
  std::vector<std::int64_t> index;
  std::vector<double> gain;
};

Greedy reference(const Committee& k, std::int64_t picks) {
  Greedy g;
  double h_batch = 0.0;
  for (std::int64_t step = 0; step < picks; ++step) {
    std::int64_t best = -1;
    double best_gain = 0.0;
    for (std::int64_t n = 0; n < k.N; ++n) {
      if (std::find(g.index.begin(), g.index.end(), n) != g.index.end()) continue;
      std::vector<std::int64_t> b = g.index;
      b.push_back(n);
      const double gain = joint_entropy(k, b) - h_batch - member_entropy(k, n);
      if (best < 0 || gain > best_gain) best = n, best_gain = gain;
    }
    g.index.push_back(best);
    g.gain.push_back(best_gain);
    h_batch += best_gain + member_entropy(k, best);
  }
  return g;
}

TEST(BatchBald, ExactConfigurationsMatchTheBruteForceGreedy) {
  for (std::uint64_t seed : {1, 2, 3}) {
    const Committee k = random_committee(seed, 6, 12, 3);
    const Greedy want = reference(k, 4);
    quarry::BatchBaldOptions o;
    o.samples = 81;  // 3^4: every configuration of 4 labels, exactly
    o.restart = 0.0;  // one joint batch: the paper's greedy
    const quarry::Selection got = quarry::select_batchbald(k.view(), 4, {}, o);
    ASSERT_EQ(got.index, want.index) << "seed " << seed;
    for (std::size_t i = 0; i < want.gain.size(); ++i) EXPECT_NEAR(got.score[i], want.gain[i], 2e-4) << "pick " << i;
  }
}

TEST(BatchBald, TheFirstPickIsBaldsAndExcludedSamplesAreNeverChosen) {
  const Committee k = random_committee(7, 5, 40, 4);
  const Greedy want = reference(k, 1);
  const quarry::Selection got = quarry::select_batchbald(k.view(), 1, {});
  EXPECT_EQ(got.index, want.index);
  const quarry::Selection without = quarry::select_batchbald(k.view(), 5, {want.index[0]});
  for (std::int64_t i : without.index) EXPECT_NE(i, want.index[0]);
}

TEST(BatchBald, SampledConfigurationsEstimateTheGainsAndDoNotDependOnThreads) {
  const Committee k = random_committee(11, 8, 10, 6);
  const Greedy exact = reference(k, 4);
  quarry::BatchBaldOptions o;
  o.samples = 200;  // exact for 1, 6 and 36 configurations; 200 drawn instead of the 216 of three labels
  o.seed = 5;
  o.restart = 0.0;
  omp_set_num_threads(1);
  const quarry::Selection one = quarry::select_batchbald(k.view(), 4, {}, o);
  omp_set_num_threads(2);
  const quarry::Selection two = quarry::select_batchbald(k.view(), 4, {}, o);
  omp_set_num_threads(omp_get_num_procs());
  EXPECT_EQ(one.index, two.index);
  EXPECT_EQ(one.score, two.score);
  for (std::size_t i = 0; i < 3; ++i) {
    ASSERT_EQ(one.index[i], exact.index[i]);
    EXPECT_NEAR(one.score[i], exact.gain[i], 2e-4);
  }
  // The fourth gain is estimated from 200 drawn configurations: within sampling error of the
  // exact one (its standard error here is about 0.02).
  if (one.index[3] == exact.index[3]) EXPECT_NEAR(one.score[3], exact.gain[3], 0.1);
  o.seed = 6;  // another seed, other draws: the first three picks are exact either way
  const quarry::Selection other = quarry::select_batchbald(k.view(), 4, {}, o);
  EXPECT_EQ(std::vector<std::int64_t>(other.index.begin(), other.index.begin() + 3),
            std::vector<std::int64_t>(exact.index.begin(), exact.index.begin() + 3));
}

double bald(const Committee& k, std::int64_t n) { return joint_entropy(k, {n}) - member_entropy(k, n); }

// The greedy with restarts, by enumeration: a candidate's score is the smaller of its gain given
// the current joint batch and its bound (BALD, lowered to its gain given each earlier pick
// alone); where the best score is below restart x the best bound, a new joint batch starts with
// the best bound's sample.
Greedy reference_restarts(const Committee& k, std::int64_t picks, double restart, int* batches) {
  Greedy g;
  std::vector<double> bound(static_cast<std::size_t>(k.N));
  for (std::int64_t n = 0; n < k.N; ++n) bound[static_cast<std::size_t>(n)] = bald(k, n);
  std::vector<std::int64_t> chunk;
  const auto clamp = [](double x) { return x < 1e-6 ? 0.0 : x; };
  *batches = 0;
  for (std::int64_t step = 0; step < picks; ++step) {
    const double h_chunk = chunk.empty() ? 0.0 : joint_entropy(k, chunk);
    std::int64_t best = -1, fresh = -1;
    double best_score = 0.0;
    for (std::int64_t n = 0; n < k.N; ++n) {
      if (std::find(g.index.begin(), g.index.end(), n) != g.index.end()) continue;
      std::vector<std::int64_t> b = chunk;
      b.push_back(n);
      const double joint = clamp(joint_entropy(k, b) - h_chunk - member_entropy(k, n));
      const double score = std::min(joint, bound[static_cast<std::size_t>(n)]);
      if (best < 0 || score > best_score) best = n, best_score = score;
      if (fresh < 0 || bound[static_cast<std::size_t>(n)] > bound[static_cast<std::size_t>(fresh)]) fresh = n;
    }
    if (chunk.empty() || best_score < restart * bound[static_cast<std::size_t>(fresh)]) {
      if (!chunk.empty()) best = fresh, best_score = bound[static_cast<std::size_t>(fresh)];
      chunk.clear();
      ++*batches;
    }
    chunk.push_back(best);
    g.index.push_back(best);
    g.gain.push_back(best_score);
    const double h_best = joint_entropy(k, {best});
    for (std::int64_t n = 0; n < k.N; ++n)
      bound[static_cast<std::size_t>(n)] = std::min(
          bound[static_cast<std::size_t>(n)], clamp(joint_entropy(k, {best, n}) - h_best - member_entropy(k, n)));
  }
  return g;
}

// A committee of M members holds at most log M nats about the model: a small one saturates after
// a few picks, and the paper's greedy then chooses by gains near 0. With restarts the batch is
// a run of joint batches, each candidate bounded by its gain given every earlier pick alone.
TEST(BatchBald, JointBatchesRestartOnceTheirGainsVanish) {
  const Committee k = random_committee(31, 3, 60, 4);
  const std::int64_t picks = 20;
  quarry::BatchBaldOptions o;
  o.samples = 4096;  // 4^6: exact for joint batches of up to 6 picks
  o.restart = 0.0;
  const quarry::Selection joint = quarry::select_batchbald(k.view(), picks, {}, o);
  double total = 0.0;  // the first four picks' gains are exact
  for (std::size_t i = 0; i < 4; ++i) total += joint.score[i];
  EXPECT_LE(total, std::log(3.0) + 1e-4) << "one joint batch gains at most log M in all";
  EXPECT_LT(joint.score[10], 0.05) << "the committee should saturate";

  for (double restart : {0.5, 1.0}) {
    int batches = 0;
    const Greedy want = reference_restarts(k, picks, restart, &batches);
    o.restart = restart;
    const quarry::Selection got = quarry::select_batchbald(k.view(), picks, {}, o);
    ASSERT_EQ(got.index, want.index) << "restart " << restart;
    for (std::size_t i = 0; i < want.gain.size(); ++i) EXPECT_NEAR(got.score[i], want.gain[i], 2e-4) << "pick " << i;
    if (restart == 0.5) {
      EXPECT_GE(batches, 3) << "joint batches should restart";
      EXPECT_LT(batches, picks) << "some joint batch should hold more than one pick";
    }
  }
  o.restart = 1.5;
  EXPECT_THROW(quarry::select_batchbald(k.view(), 2, {}, o), quarry::UsageError);
}

// A pool holding each sample three times (as the paper's Repeated MNIST), of 12 members that
// each vote one class for sure: once a pick's label is known, the members left agree on its
// copies, so a copy tells the model nothing new, and no joint batch, however it restarts, takes
// one while an informative sample is left. (With unsure members a second label of the same
// sample does inform, and may rightly be taken.) Sampled configurations restart cleanly.
TEST(BatchBald, RestartsNeverTakeACopyOfAnEarlierPick) {
  const std::int64_t M = 12, base = 20, C = 3;
  Committee k{M, 3 * base, C, std::vector<float>(static_cast<std::size_t>(M * 3 * base * C))};
  std::mt19937_64 rng(41);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < base; ++n) {
      const auto vote = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(C));
      for (int copy = 0; copy < 3; ++copy)
        for (std::int64_t c = 0; c < C; ++c)
          k.p[static_cast<std::size_t>((m * k.N + copy * base + n) * C + c)] = c == vote ? 1.0f - 2e-6f : 1e-6f;
    }
  for (std::int64_t samples : {512, 2}) {  // 2: drawn from the second pick of every joint batch on
    quarry::BatchBaldOptions o;
    o.samples = samples;
    const quarry::Selection got = quarry::select_batchbald(k.view(), 15, {}, o);
    // Once every informative sample is taken, the rest gain 0 and any is as good (the lowest index).
    std::vector<int> seen(static_cast<std::size_t>(base), 0);
    int informative = 0;
    for (std::size_t j = 0; j < got.index.size() && got.score[j] > 1e-3f; ++j, ++informative)
      EXPECT_EQ(seen[static_cast<std::size_t>(got.index[j] % base)]++, 0) << "pick " << j << ": sample " << got.index[j];
    EXPECT_GE(informative, 8) << "samples " << samples;
    omp_set_num_threads(1);
    EXPECT_EQ(quarry::select_batchbald(k.view(), 15, {}, o).index, got.index);
    omp_set_num_threads(omp_get_num_procs());
  }
}

// The candidates' gains on CUDA against the CPU: exact configurations for the first picks,
// sampled ones after (their draws are made on the host from the picks, so equal picks give
// equal configurations), a pool large enough for many blocks per multiprocessor.
// QUARRY_CUDA_TEST_QUICK=1 (the compute-sanitizer runs of scripts/gpu_check.sh): a small case.
TEST(BatchBald, CudaGainsMatchTheCpu) {
  if (quarry::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: the CUDA/CPU BatchBALD parity is not checked";
  const char* quick_env = std::getenv("QUARRY_CUDA_TEST_QUICK");
  const bool quick = quick_env && std::string(quick_env) == "1";
  const std::int64_t n = quick ? 600 : 6000, picks = quick ? 12 : 40;
  for (std::uint64_t seed : {21, 22}) {
    const Committee k = random_committee(seed, 10, n, 10);
    quarry::BatchBaldOptions o;
    o.samples = 512;  // exact for 1, 10 and 100 configurations, then 512 drawn
    o.seed = seed;
    o.restart = seed == 21 ? 0.0 : 0.5;  // one joint batch (drawn configurations), or restarts
    o.device = {quarry::DeviceKind::cpu, 0};
    const quarry::Selection cpu = quarry::select_batchbald(k.view(), picks, {3, 17}, o);
    o.device = {quarry::DeviceKind::cuda, 0};
    const quarry::Selection gpu = quarry::select_batchbald(k.view(), picks, {3, 17}, o);
    ASSERT_EQ(cpu.index.size(), gpu.index.size());
    // Each configuration's float entropy is the CPU's to the bit; only the double sum over the
    // configurations runs in another order (relative differences near 1e-15).
    for (std::size_t i = 0; i < cpu.index.size(); ++i) {
      ASSERT_EQ(cpu.index[i], gpu.index[i]) << "seed " << seed << ", pick " << i << ": gains " << cpu.score[i] << " (CPU) and "
                                            << gpu.score[i] << " (CUDA)";
      EXPECT_NEAR(cpu.score[i], gpu.score[i], 1e-5 * std::max(1.0f, std::fabs(cpu.score[i]))) << "pick " << i;
    }
  }
}

// Named like tests/test_cuda_devices.cpp's: bench/gpu_goals.py expects this suite to skip on a GPU.
TEST(CudaUnavailable, BatchBaldIsAClearError) {
  if (quarry::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible";
  const Committee k = random_committee(3, 2, 5, 3);
  quarry::BatchBaldOptions o;
  o.device = {quarry::DeviceKind::cuda, 0};
  try {
    quarry::select_batchbald(k.view(), 2, {}, o);
    FAIL() << "no error";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda"), std::string::npos) << e.what();
  }
  o.device = {};  // auto: the CPU, whatever the machine has
  EXPECT_EQ(quarry::select_batchbald(k.view(), 2, {}, o).index.size(), 2u);
}

TEST(BatchBald, BadInputsAreNamed) {
  Committee k = random_committee(3, 2, 5, 3);
  k.p[7] = -0.5f;
  try {
    quarry::select_batchbald(k.view(), 2, {});
    FAIL() << "no error";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("member 0, row 2"), std::string::npos) << e.what();
  }
  const Committee ok = random_committee(3, 2, 5, 3);
  EXPECT_THROW(quarry::select_batchbald(ok.view(), 6, {}), quarry::UsageError);
  EXPECT_THROW(quarry::select_batchbald(ok.view(), 1, {9}), quarry::Error);
  const quarry::ArrayView flat(ok.p.data(), quarry::DType::f32, {10, 3});
  EXPECT_THROW(quarry::select_batchbald(flat, 1, {}), quarry::Error);
}

}  // namespace
