// The CUDA top-k's radix select (kernels/topk.cu), emulated on the host with the same functions
// (include/quarry/detail/radix_select.hpp) and the same pass structure: which passes run, what
// each reads, when it compacts its candidates, what goes straight to the output, when it stops.
// Checked against the CPU backend (quarry::select_topk / select_power), so that the algorithm
// is tested in CI, where there is no GPU; test_cuda checks the kernels themselves on a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "quarry/detail/radix_select.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"
#include "quarry/select.hpp"

namespace {

namespace radix = quarry::detail::radix;

struct Trace {
  int passes = 0;                // histogram passes run
  int first_compaction = -1;     // the pass that first compacted (-1: none)
  int compactions = 0;
  std::uint64_t written_early = 0;  // composites a compacting pass wrote straight to the output
};

// As ScoreSource<4>::load in kernels/topk.cu: four elements per item, their exclusion bits from
// one word, NaN lowering nan_min.
void load_item(const float* scores, const std::uint32_t* excluded, std::uint64_t n, std::uint64_t v,
               std::uint64_t (&c)[4], bool (&valid)[4], std::uint32_t& nan_min) {
  const std::uint64_t i0 = v * 4;
  float x[4];
  for (int j = 0; j < 4; ++j) x[j] = i0 + j < n ? scores[i0 + j] : 0.0f;
  const std::uint32_t bits = excluded != nullptr ? excluded[i0 >> 5] >> (i0 & 31) : 0u;
  for (int j = 0; j < 4; ++j) {
    const std::uint64_t i = i0 + j;
    valid[j] = i < n;
    c[j] = radix::composite(x[j], static_cast<std::uint32_t>(i), ((bits >> j) & 1u) != 0);
    if (valid[j] && x[j] != x[j]) nan_min = std::min(nan_min, static_cast<std::uint32_t>(i));
  }
}

// The device algorithm of kernels/topk.cu (select_on_device), run serially. Compacted buffers
// are shuffled: on the device their order depends on the schedule, and must not matter.
std::vector<std::int64_t> emulate_topk(const float* scores, std::int64_t n_in, std::int64_t k_in,
                                       const std::vector<std::uint8_t>& mask, std::uint32_t seed,
                                       Trace* trace) {
  QUARRY_EXPECTS(n_in >= 0 && static_cast<std::uint64_t>(n_in) <= radix::kMaxN, "n too large");
  QUARRY_EXPECTS(k_in > 0 && k_in <= n_in, "bad k");
  const auto n = static_cast<std::uint64_t>(n_in), k = static_cast<std::uint64_t>(k_in);
  const std::vector<std::uint32_t> words = radix::exclusion_bitmask(mask);
  const std::uint32_t* excluded = words.empty() ? nullptr : words.data();
  std::mt19937 rng(seed);

  std::vector<std::uint64_t> out;  // capacity k, as the device's output
  auto append_out = [&](std::uint64_t c) {
    if (out.size() < k) out.push_back(c);
  };
  std::vector<std::uint64_t> cand;  // the compact source, once a pass has written one
  bool from_scores = true;
  std::uint64_t source_size = n;
  std::uint32_t nan_min = radix::kNoNan;
  std::vector<std::uint32_t> hist(radix::kMaxBuckets);

  // Calls f(c, valid) for every composite of the current source, four per item from the
  // scores (as the kernel), one at a time from a buffer.
  auto for_each_item = [&](auto&& f) {
    if (from_scores) {
      for (std::uint64_t v = 0; v < (n + 3) / 4; ++v) {
        std::uint64_t c[4];
        bool valid[4];
        load_item(scores, excluded, n, v, c, valid, nan_min);
        f(c, valid, 4);
      }
    } else {
      for (std::uint64_t c0 : cand) {
        std::uint64_t c[4] = {c0, 0, 0, 0};
        bool valid[4] = {true, false, false, false};
        f(c, valid, 1);
      }
    }
  };

  radix::State s = radix::start(n, k);
  while (!s.done) {
    const bool compact = radix::compacts(s, source_size);
    std::vector<std::uint64_t> next;
    const std::uint64_t buf_cap = compact ? s.candidates : 0;
    std::fill(hist.begin(), hist.end(), 0u);
    const int shift = radix::digit_shift(s.pass), bits = radix::digit_bits(s.pass);
    for_each_item([&](const std::uint64_t(&c)[4], const bool(&valid)[4], int w) {
      int r[4];
      for (int j = 0; j < w; ++j) r[j] = valid[j] ? radix::role(c[j], s.prefix_shift, s.prefix) : radix::kBelow;
      std::uint32_t run_digit = 0, run = 0;  // the kernel's merging of equal digits
      for (int j = 0; j < w; ++j) {
        if (r[j] != radix::kCandidate) continue;
        const std::uint32_t d = radix::digit_at(c[j], shift, bits);
        if (run != 0 && d == run_digit) {
          ++run;
        } else {
          if (run != 0) hist[run_digit] += run;
          run_digit = d;
          run = 1;
        }
      }
      if (run != 0) hist[run_digit] += run;
      if (compact) {
        for (int j = 0; j < w; ++j) {
          if (r[j] == radix::kCandidate && next.size() < buf_cap) next.push_back(c[j]);
          if (r[j] == radix::kAbove) {
            append_out(c[j]);
            ++trace->written_early;
          }
        }
      }
    });
    ++trace->passes;
    if (s.pass == 0) {
      QUARRY_EXPECTS(nan_min == radix::kNoNan, "score at index ", static_cast<std::int64_t>(nan_min),
                     " is NaN; scores must be numbers");
      const std::uint64_t selectable = radix::selectable_in_pass0(hist.data());
      QUARRY_EXPECTS(k <= selectable, "asked for k = ", k, " samples but only ", selectable,
                     " are selectable (pool of ", n, ", ", n - selectable, " excluded)");
    }
    if (compact) {
      QUARRY_EXPECTS(next.size() == s.candidates, "compacted ", next.size(), " expected ", s.candidates);
      std::shuffle(next.begin(), next.end(), rng);
      cand = std::move(next);
      from_scores = false;
      source_size = s.candidates;
      if (trace->first_compaction < 0) trace->first_compaction = s.pass;
      ++trace->compactions;
    }
    QUARRY_EXPECTS(radix::step(s, hist.data()), "radix select lost the k-th score at pass ", s.pass);
  }
  for_each_item([&](const std::uint64_t(&c)[4], const bool(&valid)[4], int w) {
    for (int j = 0; j < w; ++j)
      if (valid[j] && c[j] >= s.threshold) append_out(c[j]);
  });
  QUARRY_EXPECTS(out.size() == k, "collected ", out.size(), " expected ", k);
  std::shuffle(out.begin(), out.end(), rng);  // atomics: any order
  std::sort(out.begin(), out.end(), [](std::uint64_t a, std::uint64_t b) { return a > b; });
  std::vector<std::int64_t> index;
  index.reserve(out.size());
  for (std::uint64_t c : out) index.push_back(radix::decode_index(c));
  return index;
}

std::vector<std::uint8_t> mask_of(std::int64_t n, const std::vector<std::int64_t>& exclude) {
  if (exclude.empty()) return {};
  std::vector<std::uint8_t> m(static_cast<std::size_t>(n), 0);
  for (std::int64_t i : exclude) m[static_cast<std::size_t>(i)] = 1;
  return m;
}

Trace expect_same_as_cpu(const std::vector<float>& s, std::int64_t k,
                         const std::vector<std::int64_t>& exclude = {}) {
  const auto n = static_cast<std::int64_t>(s.size());
  Trace trace;
  const std::vector<std::int64_t> got =
      emulate_topk(s.data(), n, k, mask_of(n, exclude), static_cast<std::uint32_t>(n + k), &trace);
  const quarry::Selection ref = quarry::select_topk(s.data(), n, k, exclude);
  EXPECT_EQ(got, ref.index) << "n=" << n << " k=" << k << " excluded=" << exclude.size();
  return trace;
}

std::vector<float> normal_scores(std::int64_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> s(static_cast<std::size_t>(n));
  for (float& x : s) x = d(rng);
  return s;
}

std::vector<float> few_values(std::int64_t n, int distinct, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, distinct - 1);
  std::vector<float> s(static_cast<std::size_t>(n));
  for (float& x : s) x = static_cast<float>(d(rng)) * 0.25f - 1.0f;
  return s;
}

std::vector<std::int64_t> random_exclusions(std::int64_t n, double fraction, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution take(fraction);
  std::vector<std::int64_t> ex;
  for (std::int64_t i = 0; i < n; ++i)
    if (take(rng)) ex.push_back(i);
  return ex;
}

// ---------------------------------------------------------------- the shared functions

TEST(RadixSelect, CompositeOrdersByScoreThenLowerIndex) {
  std::mt19937 rng(7);
  const std::vector<float> values = {-std::numeric_limits<float>::infinity(), -3.5f, -1e-40f, -0.0f,
                                     0.0f, 1e-45f, 1e-38f, 0.25f, 1.0f, 3.4e38f,
                                     std::numeric_limits<float>::infinity()};
  std::uniform_int_distribution<std::uint32_t> idx(0, 0xFFFFFFFEu);
  std::uniform_int_distribution<std::size_t> pick(0, values.size() - 1);
  for (int t = 0; t < 100000; ++t) {
    const float a = values[pick(rng)], b = values[pick(rng)];
    const std::uint32_t ia = idx(rng) % (t % 2 ? 16u : 0xFFFFFFFFu), ib = idx(rng) % (t % 2 ? 16u : 0xFFFFFFFFu);
    if (ia == ib) continue;
    const bool a_first = a != b ? a > b : ia < ib;  // -0 == +0
    const std::uint64_t ca = radix::composite(a, ia, false), cb = radix::composite(b, ib, false);
    ASSERT_EQ(ca > cb, a_first) << a << "@" << ia << " vs " << b << "@" << ib;
    ASSERT_EQ(radix::decode_index(ca), ia);
    ASSERT_GT(ca, 0u);
    ASSERT_GE(radix::digit(ca, 0), 3u);  // selectable composites never fall in bucket 0 of pass 0
  }
  EXPECT_EQ(radix::composite(1.0f, 5, true), 0u);
  EXPECT_EQ(radix::order_key(-0.0f), radix::order_key(0.0f));
  EXPECT_EQ(radix::decode_index(radix::composite(2.0f, 0xFFFFFFFEu, false)), 0xFFFFFFFEu);
}

TEST(RadixSelect, DigitsTileTheComposite) {
  int shift = 64;
  for (int p = 0; p < radix::kPasses; ++p) {
    EXPECT_EQ(radix::digit_shift(p) + radix::digit_bits(p), shift) << "pass " << p;
    EXPECT_LE(radix::digit_bits(p), radix::kMaxDigitBits);
    shift = radix::digit_shift(p);
  }
  EXPECT_EQ(shift, 0);
  EXPECT_EQ(radix::digit_shift(2), 32);  // the score key and the index part split at a digit
  const std::uint64_t c = 0x0123456789ABCDEFull;
  std::uint64_t rebuilt = 0;
  for (int p = 0; p < radix::kPasses; ++p) rebuilt = (rebuilt << radix::digit_bits(p)) | radix::digit(c, p);
  EXPECT_EQ(rebuilt, c);
  EXPECT_EQ(radix::high_bits(c, 64), 0u);
  EXPECT_EQ(radix::role(c, 64, 0), radix::kCandidate);
  EXPECT_EQ(radix::role(c, 32, 0x01234567u), radix::kCandidate);
  EXPECT_EQ(radix::role(c, 32, 0x01234566u), radix::kAbove);
  EXPECT_EQ(radix::role(c, 32, 0x01234568u), radix::kBelow);
}

TEST(RadixSelect, StepPicksTheBucketAndStopsWhenItIsTaken) {
  std::vector<std::uint32_t> hist(radix::kMaxBuckets, 0);
  hist[2047] = 3;
  hist[1000] = 5;
  hist[10] = 4;
  std::uint64_t above = 0;
  EXPECT_EQ(radix::choose_bucket(hist.data(), 2048, 3, &above), 2047);
  EXPECT_EQ(above, 0u);
  EXPECT_EQ(radix::choose_bucket(hist.data(), 2048, 4, &above), 1000);
  EXPECT_EQ(above, 3u);
  EXPECT_EQ(radix::choose_bucket(hist.data(), 2048, 12, &above), 10);
  EXPECT_EQ(above, 8u);
  EXPECT_EQ(radix::choose_bucket(hist.data(), 2048, 13, &above), -1);

  radix::State s = radix::start(12, 8);  // the whole bucket 1000 is in: stop at once
  ASSERT_TRUE(radix::step(s, hist.data()));
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.threshold, 1000ull << 53);
  s = radix::start(12, 6);  // 3 of bucket 1000's 5: go on into the next digit
  ASSERT_TRUE(radix::step(s, hist.data()));
  EXPECT_FALSE(s.done);
  EXPECT_EQ(s.prefix, 1000u);
  EXPECT_EQ(s.prefix_shift, 53);
  EXPECT_EQ(s.k_rem, 3u);
  EXPECT_EQ(s.candidates, 5u);
  EXPECT_EQ(s.pass, 1);
  EXPECT_TRUE(radix::compacts(s, 80));
  EXPECT_FALSE(radix::compacts(s, 79));
  s = radix::start(12, 13);  // more than the histogram holds: an internal error
  EXPECT_FALSE(radix::step(s, hist.data()));
}

TEST(RadixSelect, ExclusionBitmask) {
  std::vector<std::uint8_t> m(70, 0);
  m[0] = m[31] = m[32] = m[69] = 1;
  const auto w = radix::exclusion_bitmask(m);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0], 0x80000001u);
  EXPECT_EQ(w[1], 1u);
  EXPECT_EQ(w[2], 1u << 5);
  for (std::uint64_t i = 0; i < 70; ++i) EXPECT_EQ(radix::excluded_bit(w.data(), i), m[i] != 0) << i;
  EXPECT_FALSE(radix::excluded_bit(nullptr, 3));
}

// ---------------------------------------------------------------- the emulated select vs the CPU

TEST(RadixSelect, RandomScores) {
  for (std::int64_t n : {1, 2, 3, 4, 5, 17, 255, 1000, 65537, 300001}) {
    const auto s = normal_scores(n, static_cast<std::uint32_t>(n));
    for (std::int64_t k : {std::int64_t{1}, std::int64_t{2}, n / 3, n / 2 + 1, n - 1, n}) {
      if (k < 1 || k > n) continue;
      expect_same_as_cpu(s, k);
    }
  }
}

TEST(RadixSelect, SmallKCompactsAndStopsEarly) {
  const auto s = normal_scores(1000003, 11);
  for (std::int64_t k : {1, 10, 100, 1000, 65536}) {
    const Trace t = expect_same_as_cpu(s, k);
    EXPECT_GE(t.compactions, 1) << "k=" << k;
    EXPECT_LE(t.passes, 4) << "k=" << k;  // distinct scores: decided within the score key
  }
}

TEST(RadixSelect, KEqualsNStopsAfterOnePass) {
  const auto s = normal_scores(100003, 5);
  const Trace t = expect_same_as_cpu(s, 100003);
  EXPECT_EQ(t.passes, 1);
  EXPECT_EQ(t.compactions, 0);
}

TEST(RadixSelect, AllEqualScoresGoOnIntoTheIndexBits) {
  const std::int64_t n = 1000003;
  const std::vector<float> s(static_cast<std::size_t>(n), 0.5f);
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{2}, std::int64_t{1000}, std::int64_t{65536},
                         n / 2, n - 1, n}) {
    const Trace t = expect_same_as_cpu(s, k);
    if (k < n) {
      EXPECT_GE(t.passes, 4) << "k=" << k;  // the ties are broken in the index part
    }
  }
  const auto ex = random_exclusions(n, 0.5, 3);
  const std::int64_t selectable = n - static_cast<std::int64_t>(ex.size());
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{4097}, selectable / 2, selectable})
    expect_same_as_cpu(s, k, ex);
}

TEST(RadixSelect, ManyTies) {
  for (int distinct : {1, 2, 3, 7, 100}) {
    const auto s = few_values(200003, distinct, static_cast<std::uint32_t>(distinct));
    for (std::int64_t k : {1, 2, 17, 1000, 66666, 100001, 200002, 200003}) expect_same_as_cpu(s, k);
  }
}

TEST(RadixSelect, SignedZerosAreEqual) {
  std::mt19937 rng(4);
  std::vector<float> s(100001);
  std::uniform_int_distribution<int> d(0, 3);
  for (float& x : s) {
    const int v = d(rng);
    x = v == 0 ? -0.0f : v == 1 ? 0.0f : v == 2 ? 1e-45f : -1e-45f;
  }
  for (std::int64_t k : {1, 10, 30000, 50000, 75000, 100001}) {
    expect_same_as_cpu(s, k);
    const quarry::Selection ref = quarry::select_topk(s.data(), static_cast<std::int64_t>(s.size()), k);
    // -0 and +0 rank as one value: the zeros taken are the lowest indices among all zeros.
    std::vector<std::int64_t> zeros;
    for (std::int64_t i : ref.index)
      if (s[static_cast<std::size_t>(i)] == 0.0f) zeros.push_back(i);
    EXPECT_TRUE(std::is_sorted(zeros.begin(), zeros.end()));
  }
}

TEST(RadixSelect, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> base = {inf, -inf, 3.4028235e38f, -3.4028235e38f, 1e-45f, -1e-45f, 1.17549435e-38f,
                             0.0f, -0.0f, 1.0f, -1.0f, inf, -inf, 0.0f};
  std::vector<float> s;
  for (int r = 0; r < 9001; ++r) s.push_back(base[static_cast<std::size_t>(r * 7) % base.size()]);
  const auto n = static_cast<std::int64_t>(s.size());
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{643}, std::int64_t{644}, std::int64_t{5000}, n})
    expect_same_as_cpu(s, k);
}

TEST(RadixSelect, Exclusions) {
  for (std::int64_t n : {1, 2, 33, 1000, 300001}) {
    const auto s = few_values(n, 5, static_cast<std::uint32_t>(n + 1));
    const auto ex = random_exclusions(n, 0.3, static_cast<std::uint32_t>(n));
    const std::int64_t selectable = n - static_cast<std::int64_t>(ex.size());
    for (std::int64_t k : {std::int64_t{1}, selectable / 2, selectable - 1, selectable}) {
      if (k < 1) continue;
      expect_same_as_cpu(s, k, ex);
    }
  }
  // Excluding the best scores: never selected.
  auto s = normal_scores(100000, 9);
  std::vector<std::int64_t> ex;
  for (std::int64_t i = 0; i < 100000; i += 97) {
    s[static_cast<std::size_t>(i)] = 100.0f;
    ex.push_back(i);
  }
  expect_same_as_cpu(s, 10, ex);
  expect_same_as_cpu(s, 100000 - static_cast<std::int64_t>(ex.size()), ex);
}

TEST(RadixSelect, KBeyondTheSelectableIsAnError) {
  const std::vector<float> s(100, 1.0f);
  std::vector<std::uint8_t> mask(100, 0);
  mask[7] = 1;
  Trace t;
  try {
    emulate_topk(s.data(), 100, 100, mask, 1, &t);
    ADD_FAILURE() << "no error";
  } catch (const quarry::Error& e) {
    EXPECT_STREQ(e.what(), "asked for k = 100 samples but only 99 are selectable (pool of 100, 1 excluded)");
  }
}

TEST(RadixSelect, SinglePool) {
  expect_same_as_cpu({-2.0f}, 1);
  expect_same_as_cpu({-0.0f}, 1);
  expect_same_as_cpu({1.0f, 2.0f}, 1, {1});
}

TEST(RadixSelect, LargeKOnLargePool) {
  const auto s = normal_scores(2000000, 21);
  const Trace t = expect_same_as_cpu(s, 1000000);
  EXPECT_GE(t.passes, 2);
  const auto ties = few_values(1000003, 9, 5);
  expect_same_as_cpu(ties, 777777);
}

TEST(RadixSelect, NaNIsAnErrorNamingTheLowestIndex) {
  for (std::int64_t n : {5, 100001}) {
    auto s = normal_scores(n, 3);
    s[static_cast<std::size_t>(n - 1)] = std::nanf("");
    s[3] = -std::nanf("");  // a NaN with the sign bit
    const std::vector<std::int64_t> ex = {3};  // excluded, and still an error (as on the CPU)
    std::string emu, cpu;
    Trace t;
    try {
      emulate_topk(s.data(), n, 2, mask_of(n, ex), 1, &t);
    } catch (const quarry::Error& e) {
      emu = e.what();
    }
    try {
      quarry::select_topk(s.data(), n, 2, ex);
    } catch (const quarry::Error& e) {
      cpu = e.what();
    }
    EXPECT_EQ(emu, "score at index 3 is NaN; scores must be numbers");
    EXPECT_EQ(emu, cpu);
  }
}

// Power sampling as cuda::power runs it: the keys of detail::gumbel_key with the validation of
// gumbel_keys_kernel, then the select over the keys.
TEST(RadixSelect, PowerSamplingMatchesCpu) {
  for (std::int64_t n : {1, 7, 1000, 200001}) {
    std::mt19937 rng(static_cast<std::uint32_t>(n));
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> s(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < s.size(); ++i) s[i] = i % 5 == 0 ? 0.0f : u(rng);  // zeros: -inf keys
    const auto ex = n > 1 ? random_exclusions(n, 0.1, 2) : std::vector<std::int64_t>{};
    const std::int64_t selectable = n - static_cast<std::int64_t>(ex.size());
    for (float beta : {1.0f, 4.0f}) {
      std::vector<float> keys(s.size());
      std::int64_t bad = -1;
      for (std::size_t i = 0; i < s.size(); ++i) {
        keys[i] = quarry::detail::gumbel_key(s[i], beta, 42, i);
        if (quarry::detail::out_of_range(s[i], 0.0f) && bad < 0) bad = static_cast<std::int64_t>(i);
      }
      ASSERT_EQ(bad, -1);
      for (std::int64_t k : {std::int64_t{1}, selectable / 2, selectable}) {
        if (k < 1) continue;
        Trace t;
        const auto got = emulate_topk(keys.data(), n, k, mask_of(n, ex), 9, &t);
        const quarry::Selection ref = quarry::select_power(s.data(), n, k, beta, 42, ex);
        EXPECT_EQ(got, ref.index) << "n=" << n << " k=" << k << " beta=" << beta;
      }
    }
  }
}

}  // namespace
