// Shared by test_cuda.cpp, test_cuda_select.cpp, test_cuda_devices.cpp, test_cuda_dense.cpp and test_cuda_resident.cpp (one executable):
// the device under test (QUARRY_CUDA_TEST_ON_CPU, QUARRY_CUDA_TEST_QUICK), REQUIRE_GPU(),
// poisoned outputs, inputs in any float dtype, seeded pools of random and hard rows, the
// tolerance per score and expect_parity().
#pragma once

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

namespace cuda_test {

namespace fs = std::filesystem;
using quarry::Acquisition;
using quarry::DeviceKind;
using quarry::DeviceSpec;
using quarry::DType;

inline bool env_flag(const char* name) {
  const char* q = std::getenv(name);
  return q != nullptr && q[0] != '\0' && q[0] != '0';
}
inline bool on_cpu_self_check() { return env_flag("QUARRY_CUDA_TEST_ON_CPU"); }

inline const DeviceSpec kCpu{DeviceKind::cpu, 0};
inline const DeviceSpec kCuda{DeviceKind::cuda, 0};
// The device under test: cuda:0, or the CPU in the harness self-check.
inline const DeviceSpec kGpu = on_cpu_self_check() ? kCpu : kCuda;
inline const std::string kGpuFlag = on_cpu_self_check() ? "cpu" : "cuda";

// The first statement of every test that needs a GPU.
#define REQUIRE_GPU()                                                                            \
  if (quarry::cuda_device_count() == 0 && !on_cpu_self_check())                                  \
  GTEST_SKIP() << "no CUDA device: "                                                             \
               << (quarry::build_info().cuda ? "none visible on this machine"                    \
                                             : "this quarry was built without CUDA")             \
               << "; the backend-parity tests run on a GPU machine (scripts/gpu_check.sh)"

inline bool quick() { return env_flag("QUARRY_CUDA_TEST_QUICK"); }

// Both lists, or the quick one under QUARRY_CUDA_TEST_QUICK.
template <class T>
inline std::vector<T> pick(std::vector<T> full, std::vector<T> quick_list) {
  return quick() ? quick_list : full;
}

// ------------------------------------------------------------------ poisoned outputs

// A quiet NaN with a payload no kernel computes: an element still holding it was never written.
inline constexpr std::uint32_t kPoison = 0x7FC0BAD5u;

inline std::vector<float> poisoned(std::int64_t n) {
  return std::vector<float>(static_cast<std::size_t>(n), quarry::detail::bits_to_float(kPoison));
}

// Empty when every element was written with a number; else a description of the first few.
inline std::string unwritten_or_nan(const std::vector<float>& v) {
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

inline std::uint16_t to_bf16(float f, bool truncate) {
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

inline const char* dname(DType t) { return quarry::dtype_name(t); }

// Largest magnitude a logit may have in a dtype (float16 overflows past 65504).
inline double logit_limit(DType t) { return t == DType::f16 ? 6.0e4 : t == DType::bf16 ? 1.0e30 : 3.0e38; }

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
inline void logit_row(RowKind kind, std::int64_t C, Rng& rng, std::vector<double>& z) {
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
inline void to_probs(RowKind kind, const std::vector<double>& z, std::vector<double>& p) {
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

inline Pool make_pool(const Shape& s) {
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
inline double tolerance(Acquisition a, std::int64_t C, std::int64_t M, double hnorm, double cpu) {
  const double scale = 1.0 + std::log(static_cast<double>(C)) + (M > 1 ? std::log(static_cast<double>(M)) : 0.0);
  switch (a) {
    case Acquisition::variation_ratio: return 0.0;
    case Acquisition::vote_entropy: return 1e-6 * std::fabs(cpu) + 1e-6;
    case Acquisition::egl:
    case Acquisition::badge_norm: return 1e-4 * std::fabs(cpu) + 1e-5 * scale * std::max(hnorm, 1e-30);
    default: return 1e-4 * std::fabs(cpu) + 1e-5 * scale;
  }
}

inline quarry::ScoreOptions options(const Pool& p, const DeviceSpec& device) {
  quarry::ScoreOptions o;
  o.logits = p.shape.logits;
  o.device = device;
  o.input_name = "pool";
  return o;
}

// Scores `p` on both backends and compares; returns the GPU's scores.
inline std::vector<float> expect_parity(const Pool& p, Acquisition a) {
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
inline std::vector<Acquisition> acquisitions_for(const Shape& s) {
  std::vector<Acquisition> v;
  for (Acquisition a : quarry::all_acquisitions()) {
    if (quarry::acquisition_needs_committee(a) && s.m == 0) continue;
    if (quarry::acquisition_needs_embeddings(a) && s.d == 0) continue;
    v.push_back(a);
  }
  return v;
}

// Rows such that the pool has about `values` numbers, between lo and hi rows.
inline std::int64_t rows_for(std::int64_t values, std::int64_t lo, std::int64_t hi) {
  return std::max(lo, std::min(hi, values));
}

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const quarry::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace cuda_test
