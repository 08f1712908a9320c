// Backend parity (as ggml's test-backend-ops): the CUDA backend against the CPU backend, through
// the public API only (quarry::score with ScoreOptions::device, select_topk / select_power with a
// device, score_and_select), on seeded random inputs of many shapes and on hard cases.
//
// What is compared, and how exactly:
//  - Scores: GPU against CPU within a per-score tolerance (tolerance() below says why each one
//    is what it is). Every output buffer is poisoned with a NaN bit pattern before each run and
//    checked for unwritten elements; the GPU runs twice and must agree with itself bit for bit
//    (a moving result is a race).
//  - Top-k and power sampling: indices and scores EXACTLY equal to the CPU's (same tie rule,
//    same Philox stream), including all-equal scores, k = n, k = 1, exclusions and k = 1e6.
//  - Bad rows and bad scores: the same quarry::Error message as the CPU's.
//
// Tests that need a GPU skip with a message where none is visible (CI, the development
// machines); the CudaUnavailable tests are the ones that run there and check that asking for
// CUDA without it is a clear error, from the library and from the command line.
//
// Environment: QUARRY_CUDA_TEST_QUICK=1 trims the case lists to a few cases per kernel path (for
// the compute-sanitizer runs of scripts/gpu_check.sh, where every launch is slow).
// QUARRY_CUDA_TEST_ON_CPU=1 runs the "GPU" side on the CPU backend: a self-check of this
// harness (generators, tolerances, expectations) on machines without a GPU; every comparison
// must then hold exactly.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/device.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/select.hpp"
#include "quarry/version.hpp"

namespace {

namespace fs = std::filesystem;
using quarry::Acquisition;
using quarry::DeviceKind;
using quarry::DeviceSpec;
using quarry::DType;

bool env_flag(const char* name) {
  const char* q = std::getenv(name);
  return q != nullptr && q[0] != '\0' && q[0] != '0';
}
bool on_cpu_self_check() { return env_flag("QUARRY_CUDA_TEST_ON_CPU"); }

const DeviceSpec kCpu{DeviceKind::cpu, 0};
const DeviceSpec kCuda{DeviceKind::cuda, 0};
// The device under test: cuda:0, or the CPU in the harness self-check.
const DeviceSpec kGpu = on_cpu_self_check() ? kCpu : kCuda;
const std::string kGpuFlag = on_cpu_self_check() ? "cpu" : "cuda";

// The first statement of every test that needs a GPU.
#define REQUIRE_GPU()                                                                            \
  if (quarry::cuda_device_count() == 0 && !on_cpu_self_check())                                  \
  GTEST_SKIP() << "no CUDA device: "                                                             \
               << (quarry::build_info().cuda ? "none visible on this machine"                    \
                                             : "this quarry was built without CUDA")             \
               << "; the backend-parity tests run on a GPU machine (scripts/gpu_check.sh)"

bool quick() { return env_flag("QUARRY_CUDA_TEST_QUICK"); }

// Both lists, or the quick one under QUARRY_CUDA_TEST_QUICK.
template <class T>
std::vector<T> pick(std::vector<T> full, std::vector<T> quick_list) {
  return quick() ? quick_list : full;
}

// ------------------------------------------------------------------ poisoned outputs

// A quiet NaN with a payload no kernel computes: an element still holding it was never written.
constexpr std::uint32_t kPoison = 0x7FC0BAD5u;

std::vector<float> poisoned(std::int64_t n) {
  return std::vector<float>(static_cast<std::size_t>(n), quarry::detail::bits_to_float(kPoison));
}

// Empty when every element was written with a number; else a description of the first few.
std::string unwritten_or_nan(const std::vector<float>& v) {
  std::ostringstream os;
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const bool poison = quarry::detail::float_to_bits(v[i]) == kPoison;
    if (poison || std::isnan(v[i])) {
      if (bad < 5) os << " [" << i << "]=" << (poison ? "unwritten" : "NaN");
      ++bad;
    }
  }
  if (bad == 0) return {};
  return std::to_string(bad) + " of " + std::to_string(v.size()) + " elements bad:" + os.str();
}

// ------------------------------------------------------------------ inputs in any float dtype

std::uint16_t to_bf16(float f, bool truncate) {
  const std::uint32_t b = quarry::detail::float_to_bits(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  if (truncate) return static_cast<std::uint16_t>(b >> 16);
  return static_cast<std::uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);  // nearest even
}

// A C-order array the library reads in place; `at(i)` is the exact value it reads, as double.
struct Buf {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<double> storage;  // 8-byte aligned bytes for every dtype
  bool bf16_truncate = false;

  Buf() = default;
  Buf(DType t, std::vector<std::int64_t> s) : dtype(t), shape(std::move(s)) {
    storage.assign((numel() * quarry::dtype_size(t) + 7) / 8, 0.0);
  }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  void* data() { return storage.data(); }
  const void* data() const { return storage.data(); }
  quarry::ArrayView view() const { return quarry::ArrayView{data(), dtype, shape}; }
  void set(std::int64_t i, double x) {
    switch (dtype) {
      case DType::f64: static_cast<double*>(data())[i] = x; break;
      case DType::f32: static_cast<float*>(data())[i] = static_cast<float>(x); break;
      case DType::f16:
        static_cast<std::uint16_t*>(data())[i] = quarry::detail::float_to_half(static_cast<float>(x));
        break;
      case DType::bf16:
        static_cast<std::uint16_t*>(data())[i] = to_bf16(static_cast<float>(x), bf16_truncate);
        break;
      default: throw std::logic_error("Buf: not a float dtype");
    }
  }
  double at(std::int64_t i) const {
    switch (dtype) {
      case DType::f64: return static_cast<const double*>(data())[i];
      case DType::f32: return static_cast<const float*>(data())[i];
      case DType::f16: return quarry::detail::half_to_float(static_cast<const std::uint16_t*>(data())[i]);
      case DType::bf16: return quarry::detail::bfloat16_to_float(static_cast<const std::uint16_t*>(data())[i]);
      default: throw std::logic_error("Buf: not a float dtype");
    }
  }
};

const char* dname(DType t) { return quarry::dtype_name(t); }

// Largest magnitude a logit may have in a dtype (float16 overflows past 65504).
double logit_limit(DType t) { return t == DType::f16 ? 6.0e4 : t == DType::bf16 ? 1.0e30 : 3.0e38; }

// ------------------------------------------------------------------ rows: random and hard cases

// Kinds of rows every generated pool mixes (row r of sample kind r % kKinds, shuffled by seed).
enum RowKind {
  kRandom,       // softmax of N(0, sigma), sigma in [0.3, 6]
  kPeaked,       // one class far ahead
  kOneHot,       // exactly one class 1, the others exactly 0 (logits: one class +1e4)
  kNearUniform,  // softmax of N(0, 1e-3)
  kUniform,      // all classes exactly equal
  kZeros,        // half of the classes exactly 0 (logits: half at -1e4)
  kTie,          // the two largest exactly equal
  kTiny,         // some values tiny (denormal in float32, zero in the half types)
  kKinds
};

struct Rng {
  std::mt19937_64 g;
  explicit Rng(std::uint64_t seed) : g(seed) {}
  double normal() { return std::normal_distribution<double>(0.0, 1.0)(g); }
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(g); }
  std::int64_t below(std::int64_t n) { return std::uniform_int_distribution<std::int64_t>(0, n - 1)(g); }
};

// One row of C logits of the given kind (in double; the caller rounds to the dtype).
void logit_row(RowKind kind, std::int64_t C, Rng& rng, std::vector<double>& z) {
  z.assign(static_cast<std::size_t>(C), 0.0);
  const double sigma = 0.3 + 5.7 * rng.uniform();
  for (auto& v : z) v = sigma * rng.normal();
  const std::int64_t top = rng.below(C);
  switch (kind) {
    case kPeaked: z[top] += 12.0 + 20.0 * rng.uniform(); break;
    case kOneHot:
      std::fill(z.begin(), z.end(), 0.0);
      z[top] = 1e4;
      break;
    case kNearUniform:
      for (auto& v : z) v = 1e-3 * rng.normal();
      break;
    case kUniform: std::fill(z.begin(), z.end(), 2.5); break;
    case kZeros:
      for (std::int64_t c = 0; c < C; c += 2) z[c] = -1e4;
      break;
    case kTie:
      if (C >= 2) {
        const std::int64_t other = (top + 1 + rng.below(C - 1)) % C;
        const double hi = *std::max_element(z.begin(), z.end()) + 1.0;
        z[top] = z[other] = hi;
      }
      break;
    default: break;
  }
}

// Probabilities of a row of the given kind from its logits z: softmax, then the kind's edits.
void to_probs(RowKind kind, const std::vector<double>& z, std::vector<double>& p) {
  const auto C = static_cast<std::int64_t>(z.size());
  p.assign(z.size(), 0.0);
  if (kind == kOneHot) {
    p[std::max_element(z.begin(), z.end()) - z.begin()] = 1.0;
    return;
  }
  if (kind == kUniform) {
    std::fill(p.begin(), p.end(), 1.0 / static_cast<double>(C));
    return;
  }
  const double mx = *std::max_element(z.begin(), z.end());
  double s = 0;
  for (std::int64_t c = 0; c < C; ++c) s += (p[c] = std::exp(z[c] - mx));
  for (auto& v : p) v /= s;
  if (kind == kZeros && C > 1) {
    s = 0;
    for (std::int64_t c = 0; c < C; ++c) s += (c % 2 == 0) ? (p[c] = 0.0) : p[c];
    if (s == 0) p[1] = s = 1.0;
    for (auto& v : p) v /= s;
  }
  if (kind == kTiny && C >= 2) {
    for (std::int64_t c = 0; c < C; c += 3) p[c] = 1e-41 * static_cast<double>(1 + c % 7);  // denormal floats
    s = 0;
    for (auto& v : p) s += v;
    for (auto& v : p) v /= s;
  }
}

// A pool: input [N,C] (m = 0) or [M,N,C], and embeddings [N,D] (d > 0).
struct Shape {
  std::int64_t m = 0, n = 1, c = 1, d = 0;
  DType dtype = DType::f32;
  bool logits = false;
  DType emb_dtype = DType::f32;
  std::uint64_t seed = 1;
  std::string str() const {
    std::ostringstream os;
    os << (m > 0 ? "[M=" + std::to_string(m) + ", " : "[") << "N=" << n << ", C=" << c << "] "
       << dname(dtype) << (logits ? " logits" : " probabilities");
    if (d > 0) os << ", embeddings [N, " << d << "] " << dname(emb_dtype);
    os << ", seed " << seed;
    return os.str();
  }
};

struct Pool {
  Shape shape;
  Buf input, emb;
  std::vector<double> hnorm;  // ||h|| of each row, from the values the library reads
  mutable quarry::ArrayView ev;
  const quarry::ArrayView* emb_view() const {
    ev = emb.view();
    return shape.d > 0 ? &ev : nullptr;
  }

};

Pool make_pool(const Shape& s) {
  Pool p;
  p.shape = s;
  const std::int64_t members = s.m > 0 ? s.m : 1;
  p.input = s.m > 0 ? Buf(s.dtype, {s.m, s.n, s.c}) : Buf(s.dtype, {s.n, s.c});
  p.input.bf16_truncate = (s.seed % 2) == 1;  // both ways of making bfloat16 from float
  Rng rng(s.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(s.c));
  std::vector<double> base, z, row;
  const double lim = logit_limit(s.dtype);
  for (std::int64_t i = 0; i < s.n; ++i) {
    const auto kind = static_cast<RowKind>((i + static_cast<std::int64_t>(s.seed)) % kKinds);
    // A committee: the members share the row's kind and disagree by a noise on the logits whose
    // scale varies by sample, so that votes split on some samples and agree on others.
    logit_row(kind, s.c, rng, base);
    const bool exact = kind == kUniform || kind == kTie || kind == kOneHot;
    const double spread = (s.m == 0 || exact || i % 3 == 0) ? 0.0 : (i % 3 == 1) ? 0.05 : 2.0;
    for (std::int64_t m = 0; m < members; ++m) {
      const std::int64_t off = (m * s.n + i) * s.c;
      z = base;
      if (spread > 0)
        for (auto& v : z) v += spread * rng.normal();
      if (s.logits) {
        for (std::int64_t c = 0; c < s.c; ++c) p.input.set(off + c, std::max(-lim, std::min(lim, z[c])));
      } else {
        to_probs(kind, z, row);
        for (std::int64_t c = 0; c < s.c; ++c) p.input.set(off + c, row[c]);
      }
    }
  }
  if (s.d > 0) {
    p.emb = Buf(s.emb_dtype, {s.n, s.d});
    p.hnorm.assign(static_cast<std::size_t>(s.n), 0.0);
    for (std::int64_t i = 0; i < s.n; ++i) {
      // Some rows zero (||h|| = 0), some large, most of scale ~1.
      const double scale = (i % 11 == 5) ? 0.0 : (i % 11 == 7) ? 300.0 : 1.0;
      double ss = 0;
      for (std::int64_t j = 0; j < s.d; ++j) {
        p.emb.set(i * s.d + j, scale * rng.normal());
        ss += p.emb.at(i * s.d + j) * p.emb.at(i * s.d + j);
      }
      p.hnorm[i] = std::sqrt(ss);
    }
  }
  return p;
}

// ------------------------------------------------------------------ the tolerance per score

// |gpu - cpu| <= tolerance(...), per sample.
//
// Both backends evaluate the same float32 formulas (include/quarry/detail/row_math.hpp, the same
// fast_log/fast_exp) on the same input bits; they differ only in the order of the float sums
// over classes (the CPU: vector accumulators over blocks of 256 classes, the block sums added
// in double; the GPU: each lane's classes, then a tree over the lanes of a warp or block) and in
// FMA contraction (nvcc contracts a*b+c, the host compiler may not). A float32 sum of n terms in
// two orders differs by about sqrt(n) * 2^-24 * (sum of |terms|) in practice and at most
// n * 2^-24 * (sum of |terms|); rows of equal terms (kUniform) come near that bound, which is
// why the CPU sums in blocks (one long float run over 65537 classes was off by 2e-3 in entropy
// and 3e-4 in kl-max on the first H200 run, where the GPU's tree was right).
//  - Scores in [0, 1] built from the row sum s (least-confidence, margin, ratio): the sum's
//    rounding, relative 1e-4 of the value plus an absolute 1e-5 * (1 + ln C): at C = 32768 that
//    is 1.1e-4, several hundred times the typical sqrt(C) * 6e-8 = 1.1e-5 / 1e-5 of a sum of
//    ~1, and still 100x smaller than a missing class in a peaked row.
//  - Entropy-based scores (entropy, consensus-entropy, bald, kl-max): terms of magnitude up to
//    ln C (and ln M for the committee mean), and bald / kl-max are differences of such terms,
//    so their error is absolute, not relative to the (possibly tiny) result:
//    1e-4 * |score| + 1e-5 * (1 + ln C + ln M).
//  - egl, badge-norm: the same, scaled by ||h|| (the score is ||h|| times a probability-space
//    quantity); ||h|| is a double sum of squares on both backends.
//  - variation-ratio: exact. The votes are the argmax of each member's raw values (no rounding;
//    ties to the lower class on both backends) and the score is (M - votes) / M, one correctly
//    rounded division.
//  - vote-entropy: the votes are exact (as above); only -sum v log v over at most M classes is
//    rounded, in a different order: 1e-6 * |score| + 1e-6. Any changed vote moves the score by
//    far more than that (at least ~1/M), unless two classes swap their counts.
double tolerance(Acquisition a, std::int64_t C, std::int64_t M, double hnorm, double cpu) {
  const double scale = 1.0 + std::log(static_cast<double>(C)) + (M > 1 ? std::log(static_cast<double>(M)) : 0.0);
  switch (a) {
    case Acquisition::variation_ratio: return 0.0;
    case Acquisition::vote_entropy: return 1e-6 * std::fabs(cpu) + 1e-6;
    case Acquisition::egl:
    case Acquisition::badge_norm: return 1e-4 * std::fabs(cpu) + 1e-5 * scale * std::max(hnorm, 1e-30);
    default: return 1e-4 * std::fabs(cpu) + 1e-5 * scale;
  }
}

quarry::ScoreOptions options(const Pool& p, const DeviceSpec& device) {
  quarry::ScoreOptions o;
  o.logits = p.shape.logits;
  o.device = device;
  o.input_name = "pool";
  return o;
}

// Scores `p` on both backends and compares; returns the GPU's scores.
std::vector<float> expect_parity(const Pool& p, Acquisition a) {
  const std::string what = std::string(quarry::acquisition_name(a)) + " on " + p.shape.str();
  SCOPED_TRACE(what);
  const std::int64_t n = p.shape.n;
  std::vector<float> cpu = poisoned(n), gpu = poisoned(n), again = poisoned(n);
  try {
    quarry::score(p.input.view(), a, cpu.data(), options(p, kCpu), p.emb_view());
  } catch (const quarry::Error& e) {
    ADD_FAILURE() << "the CPU rejected a valid input: " << e.what();
    return gpu;
  }
  try {
    quarry::score(p.input.view(), a, gpu.data(), options(p, kGpu), p.emb_view());
    quarry::score(p.input.view(), a, again.data(), options(p, kGpu), p.emb_view());
  } catch (const quarry::Error& e) {
    ADD_FAILURE() << "the GPU failed where the CPU did not: " << e.what();
    return gpu;
  }
  EXPECT_EQ(unwritten_or_nan(cpu), "") << "CPU output";
  EXPECT_EQ(unwritten_or_nan(gpu), "") << "GPU output";
  EXPECT_EQ(std::memcmp(gpu.data(), again.data(), gpu.size() * sizeof(float)), 0)
      << "two GPU runs on the same input differ (a race?)";
  std::int64_t bad = 0;
  std::ostringstream first;
  double worst = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double h = p.shape.d > 0 ? p.hnorm[i] : 1.0;
    const double tol = tolerance(a, p.shape.c, p.shape.m, h, cpu[i]);
    const double diff = std::fabs(static_cast<double>(gpu[i]) - cpu[i]);
    if (tol > 0) worst = std::max(worst, diff / tol);
    if (!(diff <= tol)) {
      if (bad < 5)
        first << "\n  row " << i << " (kind " << (i + static_cast<std::int64_t>(p.shape.seed)) % kKinds
              << "): cpu " << cpu[i] << " gpu " << gpu[i] << " |diff| " << diff << " > tol " << tol;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << n << " scores out of tolerance:" << first.str();
  return gpu;
}

// All acquisitions that apply to a pool: the single-model ones on [N,C]; every one on [M,N,C];
// egl and badge-norm only with embeddings.
std::vector<Acquisition> acquisitions_for(const Shape& s) {
  std::vector<Acquisition> v;
  for (Acquisition a : quarry::all_acquisitions()) {
    if (quarry::acquisition_needs_committee(a) && s.m == 0) continue;
    if (quarry::acquisition_needs_embeddings(a) && s.d == 0) continue;
    v.push_back(a);
  }
  return v;
}

// Rows such that the pool has about `values` numbers, between lo and hi rows.
std::int64_t rows_for(std::int64_t values, std::int64_t lo, std::int64_t hi) {
  return std::max(lo, std::min(hi, values));
}

// ------------------------------------------------------------------ scores: GPU vs CPU

TEST(CudaScores, SingleModelEveryAcquisitionEveryClassCount) {
  REQUIRE_GPU();
  // Class counts across every launch shape (thread per row up to 32, warp up to 1024, block
  // above; 65537 float32 rows do not fit in shared memory) and its edges.
  const auto cs = pick<std::int64_t>({1, 2, 3, 10, 31, 32, 33, 100, 1000, 1024, 1025, 4097, 32768, 65537},
                                     {1, 3, 32, 33, 1000, 1025, 65537});
  const auto dtypes = pick<DType>({DType::f32, DType::f16, DType::bf16, DType::f64}, {DType::f32, DType::bf16});
  std::uint64_t seed = 11;
  for (std::int64_t C : cs)
    for (DType t : dtypes)
      for (bool logits : {false, true}) {
        if (C > 32768 && t != DType::f32 && t != DType::f64) continue;
        Shape s;
        s.c = C;
        s.n = rows_for(quick() ? 300000 / C : 2000000 / C, 9, 3001);
        s.d = 24;
        s.dtype = t;
        s.logits = logits;
        s.seed = seed++;
        const Pool p = make_pool(s);
        for (Acquisition a : acquisitions_for(s)) expect_parity(p, a);
      }
}

TEST(CudaScores, CommitteeEveryAcquisition) {
  REQUIRE_GPU();
  const auto cs = pick<std::int64_t>({1, 2, 3, 10, 32, 33, 100, 1000, 1025, 4097}, {2, 33, 1025});
  const auto ms = pick<std::int64_t>({1, 2, 20}, {1, 20});
  const auto dtypes = pick<DType>({DType::f32, DType::f16, DType::bf16}, {DType::f32, DType::f16});
  std::uint64_t seed = 101;
  for (std::int64_t C : cs)
    for (std::int64_t M : ms)
      for (DType t : dtypes)
        for (bool logits : {false, true}) {
          Shape s;
          s.m = M;
          s.c = C;
          s.n = rows_for((quick() ? 100000 : 1000000) / (M * C), 7, 2001);
          s.d = 16;
          s.dtype = t;
          s.logits = logits;
          s.seed = seed++;
          const Pool p = make_pool(s);
          for (Acquisition a : acquisitions_for(s)) expect_parity(p, a);
        }
}

// C = 32768: the committee's mean and votes (2C floats) do not fit in shared memory and live in
// a global scratch buffer; the single-model row fits only in float16/bfloat16 or float32.
TEST(CudaScores, CommitteeWithThirtyTwoThousandClasses) {
  REQUIRE_GPU();
  for (std::int64_t M : {2, 20})
    for (bool logits : {false, true}) {
      Shape s;
      s.m = M;
      s.c = 32768;
      s.n = M == 2 ? 9 : 3;
      s.d = 8;
      s.dtype = M == 2 ? DType::f32 : DType::bf16;
      s.logits = logits;
      s.seed = 7 + M + logits;
      const Pool p = make_pool(s);
      for (Acquisition a : acquisitions_for(s)) expect_parity(p, a);
    }
}

// egl and badge-norm read [N,D] embeddings in the same pass: wide rows, half embeddings.
TEST(CudaScores, EmbeddingsWideAndInHalfPrecision) {
  REQUIRE_GPU();
  struct Case { std::int64_t m, c, d; DType emb; };
  const std::vector<Case> cases = pick<Case>(
      {{0, 10, 1000, DType::f32}, {0, 100, 1000, DType::f16}, {0, 3, 1, DType::f32},
       {0, 2000, 1000, DType::bf16}, {4, 10, 1000, DType::f32}, {0, 31, 4097, DType::f64}},
      {{0, 10, 1000, DType::f32}, {4, 100, 257, DType::f16}});
  std::uint64_t seed = 301;
  for (const Case& k : cases)
    for (bool logits : {false, true}) {
      Shape s;
      s.m = k.m;
      s.c = k.c;
      s.d = k.d;
      s.emb_dtype = k.emb;
      s.n = rows_for(4000000 / (k.d + k.c * std::max<std::int64_t>(k.m, 1)), 7, 3001);
      s.logits = logits;
      s.seed = seed++;
      const Pool p = make_pool(s);
      expect_parity(p, Acquisition::egl);
      expect_parity(p, Acquisition::badge_norm);
    }
}

// Pool sizes that are no multiple of any block size (tiles of 128 rows, 4 warps, grid strides).
TEST(CudaScores, PoolSizesNotAMultipleOfTheBlock) {
  REQUIRE_GPU();
  const auto ns = pick<std::int64_t>({1, 7, 127, 128, 129, 4095, 65537, 1000003}, {1, 129, 65537});
  std::uint64_t seed = 501;
  for (std::int64_t N : ns)
    for (std::int64_t C : {10, 100, 2000}) {
      if (N * C > 20000000) continue;
      Shape s;
      s.n = N;
      s.c = C;
      s.seed = seed++;
      s.logits = (seed % 2) == 0;
      const Pool p = make_pool(s);
      expect_parity(p, Acquisition::entropy);
      expect_parity(p, Acquisition::margin);
      Shape cm = s;
      cm.m = 3;
      cm.n = std::min<std::int64_t>(N, 200003);
      const Pool q = make_pool(cm);
      expect_parity(q, Acquisition::bald);
      expect_parity(q, Acquisition::vote_entropy);
    }
}

// Hand-written rows: each row a hard case, in every dtype, so no generator quirk can hide them.
TEST(CudaScores, HandWrittenHardRows) {
  REQUIRE_GPU();
  const float tiny = 1e-40f;  // a float32 denormal
  const std::vector<std::vector<double>> rows = {
      {1, 0, 0, 0, 0},            // one-hot
      {0, 0, 0, 0, 1},            // one-hot, last class
      {0.2, 0.2, 0.2, 0.2, 0.2},  // uniform
      {0.4, 0.4, 0.1, 0.1, 0.0},  // tie at the top, an exact zero
      {0.5, 0.5, 0, 0, 0},        // tie, three zeros
      {1 - 4 * tiny, tiny, tiny, tiny, tiny},
      {0.25, 0.25, 0.25, 0.25, 0},
      {0.9999, 0.0001, 0, 0, 0},
  };
  const std::int64_t C = 5, N = static_cast<std::int64_t>(rows.size());
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::f64}) {
    Pool p;
    p.shape.n = N;
    p.shape.c = C;
    p.shape.dtype = t;
    p.shape.seed = 0;
    p.input = Buf(t, {N, C});
    for (std::int64_t i = 0; i < N; ++i)
      for (std::int64_t c = 0; c < C; ++c) p.input.set(i * C + c, rows[i][c]);
    for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                          Acquisition::entropy})
      expect_parity(p, a);
    // As a committee of M = 2: member 1 is the rows shifted by one (disagreement, ties of votes).
    Pool q = p;
    q.shape.m = 2;
    q.input = Buf(t, {2, N, C});
    for (std::int64_t i = 0; i < N; ++i)
      for (std::int64_t c = 0; c < C; ++c) {
        q.input.set(i * C + c, rows[i][c]);
        q.input.set((N + i) * C + c, rows[(i + 1) % N][c]);
      }
    for (Acquisition a : acquisitions_for(q.shape)) expect_parity(q, a);
  }
  // Logits at the edges of float: huge finite values, all equal, a lone maximum.
  const double big = 3.0e38;
  const std::vector<std::vector<double>> lrows = {
      {big, -big, 0, 1, 2}, {-big, -big, -big, -big, -big}, {7, 7, 7, 7, 7},
      {1e30, 1e30, -1e30, 0, 0}, {0, 0, 0, 0, 100}, {-1e-30, 1e-30, 0, 0, 0}};
  Pool l;
  l.shape.n = static_cast<std::int64_t>(lrows.size());
  l.shape.c = C;
  l.shape.logits = true;
  l.input = Buf(DType::f32, {l.shape.n, C});
  for (std::int64_t i = 0; i < l.shape.n; ++i)
    for (std::int64_t c = 0; c < C; ++c) l.input.set(i * C + c, lrows[i][c]);
  for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                        Acquisition::entropy})
    expect_parity(l, a);
}

TEST(CudaScores, EmptyPoolWritesNothing) {
  REQUIRE_GPU();
  Buf in(DType::f32, {0, 10});
  std::vector<float> out = poisoned(1);
  quarry::ScoreOptions o;
  o.device = kGpu;
  EXPECT_NO_THROW(quarry::score(in.view(), Acquisition::entropy, out.data(), o));
  EXPECT_EQ(quarry::detail::float_to_bits(out[0]), kPoison);
}

// ------------------------------------------------------------------ bad rows: the CPU's message

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const quarry::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(CudaErrors, BadRowsGiveTheCpuMessage) {
  REQUIRE_GPU();
  struct Bad { const char* what; double value; bool logits, add; };
  const std::vector<Bad> bads = {{"NaN", std::nan(""), false, false},
                                 {"+Inf", HUGE_VAL, false, false},
                                 {"negative", -0.25, false, false},
                                 {"sum 1.5", 0.5, false, true},  // added to a class: the row sums to 1.5
                                 {"NaN logit", std::nan(""), true, false},
                                 {"-Inf logit", -HUGE_VAL, true, false}};
  std::uint64_t seed = 701;
  for (std::int64_t M : {0, 3})
    for (std::int64_t C : pick<std::int64_t>({2, 10, 100, 4097}, {10, 4097}))
      for (DType t : {DType::f32, DType::f16, DType::bf16})
        for (const Bad& b : bads) {
          Shape s;
          s.m = M;
          s.c = C;
          s.n = C > 1000 ? 40 : 3001;
          s.dtype = t;
          s.logits = b.logits;
          s.seed = seed++;
          Pool p = make_pool(s);
          // Two bad rows: the lower one is reported; in a committee, in member M - 1.
          const std::int64_t member = M > 0 ? M - 1 : 0;
          for (std::int64_t row : {s.n - 2, s.n / 2 + 1}) {
            const std::int64_t at = (member * s.n + row) * C + (row % C);
            p.input.set(at, b.add ? p.input.at(at) + b.value : b.value);
          }
          SCOPED_TRACE(std::string(b.what) + " in " + s.str());
          for (Acquisition a : {Acquisition::entropy, Acquisition::margin, Acquisition::bald}) {
            if (a == Acquisition::bald && M == 0) continue;
            const std::string cpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kCpu)); });
            const std::string gpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kGpu)); });
            EXPECT_NE(cpu, "(no error)");
            EXPECT_NE(cpu.find("row " + std::to_string(s.n / 2 + 1)), std::string::npos) << cpu;
            EXPECT_EQ(gpu, cpu) << quarry::acquisition_name(a);
            quarry::SelectOptions so;
            so.k = 5;
            const std::string sel = error_of([&] {
              quarry::score_and_select(p.input.view(), a, options(p, kGpu), so);
            });
            EXPECT_EQ(sel, cpu) << "score_and_select, " << quarry::acquisition_name(a);
          }
        }
}

TEST(CudaErrors, BadEmbeddingGivesTheCpuMessage) {
  REQUIRE_GPU();
  Shape s;
  s.n = 1001;
  s.c = 10;
  s.d = 100;
  Pool p = make_pool(s);
  p.emb.set(500 * s.d + 17, std::nan(""));
  p.emb.set(900 * s.d + 3, HUGE_VAL);
  for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm}) {
    const std::string cpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kCpu), p.emb_view()); });
    const std::string gpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kGpu), p.emb_view()); });
    EXPECT_NE(cpu.find("row 500"), std::string::npos) << cpu;
    EXPECT_EQ(gpu, cpu);
  }
}

// ------------------------------------------------------------------ top-k: exactly the CPU's

// Scores of many shapes of distribution; `distinct` > 0 draws from that many values (ties).
std::vector<float> make_scores(std::int64_t n, int kind, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> s(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    float v = 0;
    switch (kind) {
      case 0: v = static_cast<float>(3.0 * rng.normal()); break;             // random, both signs
      case 1: v = static_cast<float>(rng.below(16)) * 0.125f - 1.0f; break;  // 16 values: ties
      case 2: v = 0.5f; break;                                               // all equal
      case 3: {                                                              // edges of float
        static const float edge[] = {0.0f, -0.0f, HUGE_VALF, -HUGE_VALF, 1e-45f, -1e-45f,
                                     3.4e38f, -3.4e38f, 1.0f, 1.0000001f};
        v = rng.below(3) == 0 ? edge[rng.below(10)] : static_cast<float>(rng.normal());
        break;
      }
      default: v = static_cast<float>(rng.uniform()); break;  // [0, 1): scores of acquisitions
    }
    s[static_cast<std::size_t>(i)] = v;
  }
  return s;
}
const char* kScoreKinds[] = {"normal", "16 distinct values", "all equal", "float edges", "uniform [0,1)"};

// select_topk on the GPU equals the CPU's, index for index and bit for bit.
void expect_same_topk(const std::vector<float>& s, std::int64_t k, const std::vector<std::int64_t>& ex,
                      const std::string& what) {
  SCOPED_TRACE(what + ", n " + std::to_string(s.size()) + ", k " + std::to_string(k) + ", " +
               std::to_string(ex.size()) + " excluded");
  const auto n = static_cast<std::int64_t>(s.size());
  const quarry::Selection cpu = quarry::select_topk(s.data(), n, k, ex, kCpu);
  quarry::Selection gpu;
  try {
    gpu = quarry::select_topk(s.data(), n, k, ex, kGpu);
  } catch (const quarry::Error& e) {
    FAIL() << "GPU top-k failed: " << e.what();
  }
  ASSERT_EQ(gpu.size(), k);
  std::int64_t first = -1;
  for (std::int64_t r = 0; r < k && first < 0; ++r)
    if (gpu.index[r] != cpu.index[r]) first = r;
  EXPECT_EQ(first, -1) << "first difference at rank " << first << ": gpu index "
                       << (first >= 0 ? gpu.index[first] : 0) << " cpu index "
                       << (first >= 0 ? cpu.index[first] : 0);
  EXPECT_EQ(std::memcmp(gpu.score.data(), cpu.score.data(), k * sizeof(float)), 0) << "scores differ";
  // Properties that hold whatever the CPU does: no duplicates, no excluded index, rank order.
  std::vector<std::int64_t> sorted = gpu.index;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_TRUE(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end()) << "duplicate index";
  const std::set<std::int64_t> exs(ex.begin(), ex.end());
  for (std::int64_t r = 0; r < k; ++r) {
    ASSERT_TRUE(gpu.index[r] >= 0 && gpu.index[r] < n);
    EXPECT_EQ(exs.count(gpu.index[r]), 0u) << "excluded index selected at rank " << r;
    if (r > 0) {
      const float a = s[gpu.index[r - 1]], b = s[gpu.index[r]];
      EXPECT_TRUE(a > b || (a == b && gpu.index[r - 1] < gpu.index[r])) << "rank order broken at " << r;
    }
  }
}

TEST(CudaTopk, EqualsTheCpuExactly) {
  REQUIRE_GPU();
  const auto ns = pick<std::int64_t>({1, 2, 7, 1000, 65535, 65536, 65537, 1000003}, {7, 65537, 300007});
  std::uint64_t seed = 901;
  for (std::int64_t n : ns)
    for (int kind = 0; kind < 5; ++kind) {
      const std::vector<float> s = make_scores(n, kind, seed++);
      std::set<std::int64_t> ks = {1, 2, 10, 1000, n / 3, n - 1, n};
      for (std::int64_t k : ks)
        if (k >= 1 && k <= n) expect_same_topk(s, k, {}, kScoreKinds[kind]);
    }
}

TEST(CudaTopk, AllEqualScoresTakeTheLowestIndices) {
  REQUIRE_GPU();
  const std::int64_t n = 1 << 20;
  const std::vector<float> s(static_cast<std::size_t>(n), 0.25f);
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{1000}, n / 2 + 1, n - 1, n}) {
    const quarry::Selection gpu = quarry::select_topk(s.data(), n, k, {}, kGpu);
    std::vector<std::int64_t> expect(static_cast<std::size_t>(k));
    std::iota(expect.begin(), expect.end(), 0);
    EXPECT_EQ(gpu.index, expect) << "k = " << k;
    expect_same_topk(s, k, {}, "all equal");
  }
}

TEST(CudaTopk, ExclusionsAreNeverSelected) {
  REQUIRE_GPU();
  const std::int64_t n = quick() ? 100003 : 1000003;
  Rng rng(17);
  for (int kind : {0, 1, 2}) {
    const std::vector<float> s = make_scores(n, kind, 33 + kind);
    // Every 10th index, plus the CPU's top 500 (the winners must come from below them).
    std::vector<std::int64_t> ex;
    for (std::int64_t i = 0; i < n; i += 10) ex.push_back(i);
    const quarry::Selection top = quarry::select_topk(s.data(), n, 500, {}, kCpu);
    ex.insert(ex.end(), top.index.begin(), top.index.end());
    ex.push_back(ex.front());  // a duplicate in the list is allowed
    std::set<std::int64_t> uniq(ex.begin(), ex.end());
    const std::int64_t selectable = n - static_cast<std::int64_t>(uniq.size());
    for (std::int64_t k : {std::int64_t{1}, std::int64_t{1000}, selectable / 2, selectable})
      expect_same_topk(s, k, ex, kScoreKinds[kind]);
  }
  // Everything excluded but 3 samples, k = 3.
  const std::vector<float> s = make_scores(5000, 0, 5);
  std::vector<std::int64_t> ex;
  for (std::int64_t i = 0; i < 5000; ++i)
    if (i != 17 && i != 2500 && i != 4999) ex.push_back(i);
  expect_same_topk(s, 3, ex, "all but three excluded");
}

TEST(CudaTopk, LargeKOnThreeMillion) {
  REQUIRE_GPU();
  const std::int64_t n = quick() ? 300000 : 3000000;
  for (int kind : {4, 1}) {
    const std::vector<float> s = make_scores(n, kind, 71 + kind);
    expect_same_topk(s, n / 3, {}, kScoreKinds[kind]);  // k = 1e6 on 3e6
  }
}

TEST(CudaTopk, NanScoresGiveTheCpuMessage) {
  REQUIRE_GPU();
  std::vector<float> s = make_scores(100003, 0, 3);
  s[77777] = std::nanf("");
  s[4242] = -std::nanf("");
  const std::string cpu = error_of([&] { quarry::select_topk(s.data(), 100003, 10, {}, kCpu); });
  const std::string gpu = error_of([&] { quarry::select_topk(s.data(), 100003, 10, {}, kGpu); });
  EXPECT_NE(cpu.find("4242"), std::string::npos) << cpu;
  EXPECT_EQ(gpu, cpu);
}

// ------------------------------------------------------------------ power sampling: same seed, same batch

TEST(CudaPower, EqualsTheCpuForTheSameSeed) {
  REQUIRE_GPU();
  const auto ns = pick<std::int64_t>({1, 7, 1000, 100003, 1000003}, {7, 100003});
  std::uint64_t sseed = 1201;
  for (std::int64_t n : ns) {
    std::vector<float> s = make_scores(n, 4, sseed++);
    Rng rng(n);
    std::int64_t positive = 0;
    for (auto& v : s) {
      if (rng.below(5) == 0) v = 0.0f;  // zeros: taken last, in index order
      positive += v > 0;
    }
    std::vector<std::int64_t> ex;
    for (std::int64_t i = 3; i < n; i += 13) ex.push_back(i);
    for (double beta : pick<double>({0.5, 1.0, 8.0}, {2.0}))
      for (std::uint64_t seed : pick<std::uint64_t>({0, 1, 12345678901234ull}, {12345678901234ull}))
        for (bool use_ex : {false, true}) {
          const std::vector<std::int64_t> e = use_ex ? ex : std::vector<std::int64_t>{};
          const std::int64_t selectable = n - static_cast<std::int64_t>(e.size());
          for (std::int64_t k : {std::int64_t{1}, std::int64_t{10}, positive / 2, selectable}) {
            if (k < 1 || k > selectable) continue;
            SCOPED_TRACE("n " + std::to_string(n) + " k " + std::to_string(k) + " beta " +
                         std::to_string(beta) + " seed " + std::to_string(seed) +
                         (use_ex ? " with exclusions" : ""));
            const quarry::Selection cpu = quarry::select_power(s.data(), n, k, beta, seed, e, kCpu);
            const quarry::Selection gpu = quarry::select_power(s.data(), n, k, beta, seed, e, kGpu);
            ASSERT_EQ(gpu.index, cpu.index);
            EXPECT_EQ(std::memcmp(gpu.score.data(), cpu.score.data(), k * sizeof(float)), 0);
          }
        }
  }
}

TEST(CudaPower, BadScoresGiveTheCpuMessage) {
  REQUIRE_GPU();
  for (float bad : {-0.5f, HUGE_VALF, std::nanf("")}) {
    std::vector<float> s = make_scores(50001, 4, 9);
    s[31337] = bad;
    const std::string cpu = error_of([&] { quarry::select_power(s.data(), 50001, 10, 1.0, 3, {}, kCpu); });
    const std::string gpu = error_of([&] { quarry::select_power(s.data(), 50001, 10, 1.0, 3, {}, kGpu); });
    EXPECT_NE(cpu, "(no error)");
    EXPECT_EQ(gpu, cpu) << "score " << bad;
  }
}

// ------------------------------------------------------------------ score_and_select

// On the GPU, score_and_select is exactly score() then select on the GPU (the scores never
// leave the device, and nothing else changes); against the CPU its selected scores agree rank by
// rank within the score tolerance (the indices may differ where scores are within rounding).
TEST(CudaScoreAndSelect, EqualsScoreThenSelect) {
  REQUIRE_GPU();
  std::uint64_t seed = 1301;
  for (std::int64_t M : {0, 5})
    for (std::int64_t C : pick<std::int64_t>({3, 100, 2000}, {3, 2000})) {
      Shape s;
      s.m = M;
      s.c = C;
      s.n = rows_for(4000000 / (C * std::max<std::int64_t>(M, 1)), 50, quick() ? 20003 : 200003);
      s.d = 32;
      s.logits = (seed % 2) == 1;
      s.seed = seed++;
      const Pool p = make_pool(s);
      std::vector<std::int64_t> ex;
      for (std::int64_t i = 0; i < s.n; i += 7) ex.push_back(i);
      for (Acquisition a : acquisitions_for(s)) {
        SCOPED_TRACE(std::string(quarry::acquisition_name(a)) + " on " + s.str());
        const std::vector<float> g = quarry::score(p.input.view(), a, options(p, kGpu), p.emb_view());
        const std::vector<float> c = quarry::score(p.input.view(), a, options(p, kCpu), p.emb_view());
        for (bool power : {false, true}) {
          quarry::SelectOptions so;
          so.k = std::min<std::int64_t>(100, s.n - static_cast<std::int64_t>(ex.size()));
          so.power = power;
          so.beta = 2.0;
          so.seed = 99;
          so.exclude = ex;
          const quarry::Selection one = quarry::score_and_select(p.input.view(), a, options(p, kGpu), so, p.emb_view());
          const quarry::Selection two =
              power ? quarry::select_power(g.data(), s.n, so.k, so.beta, so.seed, ex, kGpu)
                    : quarry::select_topk(g.data(), s.n, so.k, ex, kGpu);
          EXPECT_EQ(one.index, two.index) << (power ? "power" : "topk");
          EXPECT_EQ(one.score, two.score) << (power ? "power" : "topk");
          if (!power) {
            // |g_i - c_i| <= t_i for every i implies that the r-th largest of g and of c differ
            // by at most max_i t_i: compare rank by rank against that bound.
            double bound = 0;
            for (std::int64_t i = 0; i < s.n; ++i)
              bound = std::max(bound, tolerance(a, C, M, s.d > 0 ? p.hnorm[i] : 1.0, c[i]));
            const quarry::Selection cpu = quarry::select_topk(c.data(), s.n, so.k, ex, kCpu);
            for (std::int64_t r = 0; r < so.k; ++r)
              EXPECT_LE(std::fabs(static_cast<double>(one.score[r]) - cpu.score[r]), bound) << "rank " << r;
          }
        }
      }
    }
}

// ------------------------------------------------------------------ devices

TEST(CudaDevice, AutoPicksTheGpuWhereThereIsOne) {
  if (quarry::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: auto resolves to the CPU here";
  Shape s;
  s.n = 20001;
  s.c = 10;
  const Pool p = make_pool(s);
  const std::vector<float> gpu = quarry::score(p.input.view(), Acquisition::entropy, options(p, kGpu));
  const std::vector<float> au = quarry::score(p.input.view(), Acquisition::entropy,
                                              options(p, DeviceSpec{DeviceKind::automatic, 0}));
  EXPECT_EQ(std::memcmp(gpu.data(), au.data(), gpu.size() * sizeof(float)), 0);
  EXPECT_EQ(quarry::resolve_device(DeviceSpec{DeviceKind::automatic, 0}).kind, DeviceKind::cuda);
}

// Runs everywhere: a device number past the last visible one is an Error that names it.
TEST(CudaDevice, DeviceNumberPastTheLastIsAnError) {
  const int count = quarry::cuda_device_count();
  const DeviceSpec past{DeviceKind::cuda, count};
  const std::string name = "cuda:" + std::to_string(count);
  const std::vector<float> p = {0.5f, 0.5f, 0.25f, 0.75f};
  const quarry::ArrayView v{p.data(), DType::f32, {2, 2}};
  quarry::ScoreOptions o;
  o.device = past;
  const std::string e = error_of([&] { quarry::score(v, Acquisition::entropy, o); });
  EXPECT_NE(e.find(name), std::string::npos) << e;
  if (count > 0) EXPECT_NE(e.find("only " + std::to_string(count) + " CUDA device"), std::string::npos) << e;
  EXPECT_EQ(error_of([&] { quarry::select_topk(p.data(), 4, 1, {}, past); }), e);
}

// ------------------------------------------------------------------ without CUDA: clear errors

// The message resolve_device gives where CUDA cannot run: names the device asked for, why, and
// what to do instead.
void expect_no_cuda_message(const std::string& e) {
  EXPECT_NE(e.find("--device cuda:0"), std::string::npos) << e;
  if (quarry::build_info().cuda)
    EXPECT_NE(e.find("no CUDA device is visible on this machine"), std::string::npos) << e;
  else
    EXPECT_NE(e.find("this quarry was built without CUDA"), std::string::npos) << e;
  EXPECT_NE(e.find("use --device cpu"), std::string::npos) << e;
}

TEST(CudaUnavailable, EveryEntryPointIsAClearError) {
  if (quarry::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible: CUDA is available";
  const std::vector<float> p = {0.5f, 0.5f, 0.25f, 0.75f, 1.0f, 0.0f};
  const quarry::ArrayView v{p.data(), DType::f32, {3, 2}};
  quarry::ScoreOptions o;
  o.device = kCuda;
  std::vector<float> out = poisoned(3);
  const std::string e = error_of([&] { quarry::score(v, Acquisition::entropy, out.data(), o); });
  expect_no_cuda_message(e);
  for (float x : out) EXPECT_EQ(quarry::detail::float_to_bits(x), kPoison) << "output touched";
  expect_no_cuda_message(error_of([&] { quarry::select_topk(p.data(), 6, 2, {}, kCuda); }));
  expect_no_cuda_message(error_of([&] { quarry::select_power(p.data(), 6, 2, 1.0, 1, {}, kCuda); }));
  quarry::SelectOptions so;
  so.k = 2;
  expect_no_cuda_message(error_of([&] { quarry::score_and_select(v, Acquisition::margin, o, so); }));
  // The same call on the CPU, and with auto, works (auto falls back to the CPU exactly).
  o.device = kCpu;
  const std::vector<float> cpu = quarry::score(v, Acquisition::entropy, o);
  o.device = DeviceSpec{DeviceKind::automatic, 0};
  EXPECT_EQ(quarry::score(v, Acquisition::entropy, o), cpu);
  EXPECT_EQ(quarry::resolve_device(DeviceSpec{DeviceKind::automatic, 0}).kind, DeviceKind::cpu);
}

// ------------------------------------------------------------------ the command line

struct CliRun {
  int rc;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

CliRun cli(const std::string& args) {
  static int counter = 0;
  const std::string base = std::string(QUARRY_TEST_TMP) + "/cuda_cli_" + std::to_string(::getpid()) + "_" +
                           std::to_string(counter++);
  const std::string cmd = std::string(QUARRY_CLI_PATH) + " " + args + " >" + base + ".out 2>" + base + ".err";
  const int status = std::system(cmd.c_str());
  CliRun r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(base + ".out"), slurp(base + ".err")};
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

std::string tmp_dir(const std::string& name) {
  const std::string d = std::string(QUARRY_TEST_TMP) + "/cuda_" + name + "_" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(CudaUnavailable, CommandLineDeviceCudaFailsWithTheMessage) {
  if (quarry::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible: CUDA is available";
  const std::string d = tmp_dir("unavailable");
  const std::vector<float> p = {0.5f, 0.5f, 0.25f, 0.75f, 1.0f, 0.0f};
  quarry::write_npy(d + "/p.npy", quarry::ArrayView{p.data(), DType::f32, {3, 2}});
  quarry::write_npy(d + "/s.npy", quarry::ArrayView{p.data(), DType::f32, {6}});
  for (const std::string args :
       {"select --scores " + d + "/s.npy -k 2 --device cuda", "select --scores " + d + "/s.npy -k 2 --strategy power --device cuda",
        "select --input " + d + "/p.npy -a entropy -k 2 --device cuda",
        "score --input " + d + "/p.npy -a entropy --device cuda -o " + d + "/out.npy"}) {
    SCOPED_TRACE(args);
    const CliRun r = cli(args);
    EXPECT_EQ(r.rc, 1) << r.err;
    EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
    expect_no_cuda_message(r.err);
    EXPECT_EQ(r.out, "");
  }
  EXPECT_FALSE(fs::exists(d + "/out.npy"));
  // --device cpu and auto still work.
  const CliRun cpu = cli("select --scores " + d + "/s.npy -k 2 --device cpu");
  const CliRun au = cli("select --scores " + d + "/s.npy -k 2 --device auto");
  EXPECT_EQ(cpu.rc, 0) << cpu.err;
  EXPECT_EQ(au.out, cpu.out);
  fs::remove_all(d);
}

// With a GPU: the command line gives the same selection on --device cuda and --device cpu.
TEST(CudaCommandLine, SelectOnCudaEqualsCpu) {
  REQUIRE_GPU();
  const std::string d = tmp_dir("cli");
  ASSERT_EQ(cli("generate -n 200003 -c 10 --seed 5 -o " + d + "/p.npy").rc, 0);
  const CliRun sg = cli("score --input " + d + "/p.npy -a entropy --device " + kGpuFlag + " -o " + d + "/g.npy");
  const CliRun sc = cli("score --input " + d + "/p.npy -a entropy --device cpu -o " + d + "/c.npy");
  ASSERT_EQ(sg.rc, 0) << sg.err;
  ASSERT_EQ(sc.rc, 0) << sc.err;
  const quarry::Array g = quarry::read_npy(d + "/g.npy"), c = quarry::read_npy(d + "/c.npy");
  ASSERT_EQ(g.numel(), c.numel());
  for (std::int64_t i = 0; i < g.numel(); ++i)
    ASSERT_LE(std::fabs(g.as<float>()[i] - c.as<float>()[i]),
              tolerance(Acquisition::entropy, 10, 0, 1.0, c.as<float>()[i])) << "row " << i;
  for (const char* strategy : {"topk", "power"}) {
    const std::string args = "select --scores " + d + "/c.npy -k 1000 --strategy " + strategy + " --seed 4 --device ";
    const CliRun a = cli(args + kGpuFlag), b = cli(args + "cpu");
    ASSERT_EQ(a.rc, 0) << a.err;
    EXPECT_EQ(a.out, b.out) << strategy;
  }
  const CliRun one = cli("select --input " + d + "/p.npy -a entropy -k 100 --device " + kGpuFlag);
  const CliRun two = cli("select --scores " + d + "/g.npy -k 100 --device " + kGpuFlag);
  ASSERT_EQ(one.rc, 0) << one.err;
  // Same indices and scores; the "source" differs only in JSON, and this is CSV.
  EXPECT_EQ(one.out, two.out);
  fs::remove_all(d);
}

}  // namespace
