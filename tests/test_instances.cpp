// Detections (quarry::score_boxes) and multi-label outputs (quarry::score_multilabel) against a
// double-precision reference written here from docs/detections.md and docs/acquisition.md:
// every box's score from its probability row (times its objectness), every label's from the
// binary distribution (p, 1 - p), the committee scores from the members' label probabilities,
// and every reduction, empty image and bad input.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "quarry/detail/hd.hpp"
#include "quarry/detections.hpp"
#include "quarry/error.hpp"

namespace {

using quarry::Acquisition;
using quarry::ArrayView;
using quarry::DType;
using quarry::Reduction;

const std::vector<Acquisition> kSingle = {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                                          Acquisition::entropy};
const std::vector<Acquisition> kCommittee = {Acquisition::consensus_entropy, Acquisition::bald,
                                             Acquisition::vote_entropy, Acquisition::kl_max,
                                             Acquisition::variation_ratio};
const std::vector<Reduction> kReductions = {Reduction::mean, Reduction::max, Reduction::sum};

// Values stored in a dtype, and the exact values the library reads from them (in double).
struct Values {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<double> vals;
  std::vector<float> f32;
  std::vector<double> f64;
  std::vector<std::uint16_t> u16;
  ArrayView view() const {
    const void* p = dtype == DType::f32 ? static_cast<const void*>(f32.data())
                    : dtype == DType::f64 ? static_cast<const void*>(f64.data())
                                          : static_cast<const void*>(u16.data());
    return ArrayView(p, dtype, shape);
  }
  void set(std::size_t i, double x) {
    if (dtype == DType::f32) {
      f32[i] = static_cast<float>(x);
      vals[i] = f32[i];
    } else if (dtype == DType::f64) {
      f64[i] = x;
      vals[i] = x;
    } else if (dtype == DType::f16) {
      u16[i] = quarry::detail::float_to_half(static_cast<float>(x));
      vals[i] = quarry::detail::half_to_float(u16[i]);
    } else {  // bfloat16: the top half of the float32 bits (truncated)
      const float f = static_cast<float>(x);
      std::uint32_t bits;
      std::memcpy(&bits, &f, 4);
      u16[i] = static_cast<std::uint16_t>(bits >> 16);
      vals[i] = quarry::detail::bfloat16_to_float(u16[i]);
    }
  }
};

Values make_values(const std::vector<double>& x, std::vector<std::int64_t> shape, DType dtype) {
  Values v;
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.vals.resize(x.size());
  if (dtype == DType::f32) v.f32.resize(x.size());
  else if (dtype == DType::f64) v.f64.resize(x.size());
  else v.u16.resize(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) v.set(i, x[i]);
  return v;
}

// ------------------------------------------------------------------ the double reference

double xlogx(double x) { return x > 0.0 ? x * std::log(x) : 0.0; }

// A box's row: normalised probabilities, or the softmax of logits.
std::vector<double> row_probs(const double* x, std::int64_t C, bool logits) {
  std::vector<double> p(x, x + C);
  if (logits) {
    const double mx = *std::max_element(p.begin(), p.end());
    for (double& v : p) v = std::exp(v - mx);
  }
  const double s = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& v : p) v /= s;
  return p;
}

double single_ref(Acquisition a, std::vector<double> p) {
  std::sort(p.begin(), p.end(), std::greater<double>());
  const double p1 = p[0], p2 = p.size() > 1 ? p[1] : 0.0;
  switch (a) {
    case Acquisition::least_confidence: return 1.0 - p1;
    case Acquisition::margin: return 1.0 - (p1 - p2);
    case Acquisition::ratio: return p2 / p1;
    default: {
      double h = 0.0;
      for (double v : p) h -= xlogx(v);
      return h;
    }
  }
}

double reduce_ref(const std::vector<double>& v, Reduction r, double empty) {
  if (v.empty()) return empty;
  if (r == Reduction::max) return *std::max_element(v.begin(), v.end());
  const double s = std::accumulate(v.begin(), v.end(), 0.0);
  return r == Reduction::sum ? s : s / static_cast<double>(v.size());
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }
double h2(double p) { return -xlogx(p) - xlogx(1.0 - p); }

// One label's score from the members' values x_m (probabilities, or logits).
double label_ref(Acquisition a, const std::vector<double>& x, bool logits) {
  const std::size_t M = x.size();
  std::vector<double> p(M);
  for (std::size_t m = 0; m < M; ++m) p[m] = logits ? sigmoid(x[m]) : x[m];
  double pbar = 0.0, mean_h = 0.0, votes = 0.0;
  for (std::size_t m = 0; m < M; ++m) {
    pbar += p[m] / static_cast<double>(M);
    mean_h += h2(p[m]) / static_cast<double>(M);
    votes += (logits ? x[m] >= 0.0 : p[m] >= 0.5) ? 1.0 : 0.0;  // positive wins a tie
  }
  const double v = votes / static_cast<double>(M);
  switch (a) {
    case Acquisition::least_confidence: return 1.0 - std::max(pbar, 1.0 - pbar);
    case Acquisition::margin: return 1.0 - std::fabs(2.0 * pbar - 1.0);
    case Acquisition::ratio: return std::min(pbar, 1.0 - pbar) / std::max(pbar, 1.0 - pbar);
    case Acquisition::entropy:
    case Acquisition::consensus_entropy: return h2(pbar);
    case Acquisition::bald: return std::max(0.0, h2(pbar) - mean_h);
    case Acquisition::vote_entropy: return h2(v);
    case Acquisition::variation_ratio: return 1.0 - std::max(v, 1.0 - v);
    case Acquisition::kl_max: {
      double best = 0.0;
      for (double q : p) {
        double kl = 0.0;
        if (q > 0) kl += q * std::log(q / pbar);
        if (q < 1) kl += (1.0 - q) * std::log((1.0 - q) / (1.0 - pbar));
        best = std::max(best, kl);
      }
      return best;
    }
    default: return std::numeric_limits<double>::quiet_NaN();
  }
}

void expect_close(const std::vector<float>& got, const std::vector<double>& ref, const std::string& what,
                  double atol = 3e-5, double rtol = 1e-4) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (std::size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(got[i], ref[i], atol + rtol * std::fabs(ref[i])) << what << ": output " << i;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const quarry::UsageError& e) {
    return std::string("usage: ") + e.what();
  } catch (const quarry::Error& e) {
    return e.what();
  }
  return "no error";
}

// ------------------------------------------------------------------ detections

struct Dets {
  std::vector<std::int64_t> offsets;
  Values probs, objectness;
  std::int64_t C = 0;
};

// N images with 0..max_boxes boxes each (image 1 and the last always empty where N > 2).
Dets make_dets(std::uint64_t seed, std::int64_t N, std::int64_t C, int max_boxes, bool logits, DType dtype) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> nb(0, max_boxes);
  std::normal_distribution<double> z(0.0, 2.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Dets d;
  d.C = C;
  d.offsets.push_back(0);
  for (std::int64_t i = 0; i < N; ++i) {
    const int b = (N > 2 && (i == 1 || i == N - 1)) ? 0 : nb(rng);
    d.offsets.push_back(d.offsets.back() + b);
  }
  const std::int64_t B = d.offsets.back();
  std::vector<double> x(static_cast<std::size_t>(B * C));
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<double> row(static_cast<std::size_t>(C));
    for (double& v : row) v = z(rng);
    if (!logits) row = row_probs(row.data(), C, true);
    std::copy(row.begin(), row.end(), x.begin() + b * C);
  }
  d.probs = make_values(x, {B, C}, dtype);
  std::vector<double> o(static_cast<std::size_t>(B));
  for (double& v : o) v = u(rng);
  if (B > 0) o[0] = 1.0;
  if (B > 1) o[1] = 0.0;
  d.objectness = make_values(o, {B}, DType::f32);
  return d;
}

std::vector<double> box_reference(const Dets& d, Acquisition a, bool logits, bool objectness) {
  const std::int64_t B = d.offsets.back();
  std::vector<double> out(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    // The values as the library reads them: float16/bfloat16 decoded, float64 rounded to float.
    std::vector<double> row(static_cast<std::size_t>(d.C));
    for (std::int64_t c = 0; c < d.C; ++c) {
      const double v = d.probs.vals[static_cast<std::size_t>(b * d.C + c)];
      row[static_cast<std::size_t>(c)] = static_cast<float>(v);
    }
    out[static_cast<std::size_t>(b)] = single_ref(a, row_probs(row.data(), d.C, logits)) *
                                       (objectness ? d.objectness.vals[static_cast<std::size_t>(b)] : 1.0);
  }
  return out;
}

std::vector<double> image_reference(const Dets& d, const std::vector<double>& box, Reduction r, double empty) {
  std::vector<double> out;
  for (std::size_t i = 0; i + 1 < d.offsets.size(); ++i)
    out.push_back(reduce_ref(std::vector<double>(box.begin() + d.offsets[i], box.begin() + d.offsets[i + 1]), r, empty));
  return out;
}

ArrayView offsets_view(const Dets& d) {
  return ArrayView(d.offsets.data(), DType::i64, {static_cast<std::int64_t>(d.offsets.size())});
}

TEST(Boxes, EveryAcquisitionReductionObjectnessAndLogitsMatchTheReference) {
  std::uint64_t seed = 1;
  for (bool logits : {false, true})
    for (std::int64_t C : {2, 5, 40})
      for (bool obj : {false, true}) {
        const Dets d = make_dets(seed++, 37, C, 6, logits, DType::f32);
        const ArrayView objv = d.objectness.view();
        for (Acquisition a : kSingle) {
          const std::vector<double> box = box_reference(d, a, logits, obj);
          for (Reduction r : kReductions) {
            quarry::BoxOptions o;
            o.reduce = r;
            o.logits = logits;
            std::vector<float> box_scores(static_cast<std::size_t>(d.offsets.back()), -1.0f);
            o.box_scores = box_scores.data();
            const std::vector<float> got =
                quarry::score_boxes(offsets_view(d), d.probs.view(), obj ? &objv : nullptr, a, o);
            const std::string what = std::string(quarry::acquisition_name(a)) + " C=" + std::to_string(C) +
                                     (logits ? " logits" : "") + (obj ? " objectness" : "") + " " +
                                     quarry::reduction_name({r, 0});
            expect_close(got, image_reference(d, box, r, 0.0), what);
            expect_close(box_scores, box, what + " (box scores)");
          }
        }
      }
}

TEST(Boxes, HalfBfloatAndDoubleInputs) {
  for (DType t : {DType::f16, DType::bf16, DType::f64}) {
    for (bool logits : {false, true}) {
      const Dets d = make_dets(77, 20, 4, 5, logits, t);
      for (Acquisition a : kSingle) {
        quarry::BoxOptions o;
        o.logits = logits;
        o.reduce = Reduction::sum;
        o.sum_tolerance = 0.05;  // bfloat16 rounding of a row can reach 1e-2
        const auto got = quarry::score_boxes(offsets_view(d), d.probs.view(), nullptr, a, o);
        expect_close(got, image_reference(d, box_reference(d, a, logits, false), Reduction::sum, 0.0),
                     std::string(quarry::acquisition_name(a)) + " " + quarry::dtype_name(t), 1e-4, 1e-3);
      }
    }
  }
}

TEST(Boxes, EmptyImagesGetTheEmptyScore) {
  // Images 1 and 3 have no box; so does the whole pool in the second call.
  std::vector<std::int64_t> off = {0, 2, 2, 3, 3};
  std::vector<float> p = {0.5f, 0.5f, 0.9f, 0.1f, 1.0f, 0.0f};
  for (Reduction r : kReductions) {
    quarry::BoxOptions o;
    o.reduce = r;
    auto got = quarry::score_boxes(ArrayView(off.data(), DType::i64, {5}), ArrayView(p.data(), DType::f32, {3, 2}),
                                   nullptr, Acquisition::least_confidence, o);
    ASSERT_EQ(got.size(), 4u);
    EXPECT_EQ(got[1], 0.0f);
    EXPECT_EQ(got[3], 0.0f);
    EXPECT_EQ(got[2], 0.0f);  // a certain box
    o.empty_score = 7.5f;
    got = quarry::score_boxes(ArrayView(off.data(), DType::i64, {5}), ArrayView(p.data(), DType::f32, {3, 2}), nullptr,
                              Acquisition::least_confidence, o);
    EXPECT_EQ(got[1], 7.5f);
    EXPECT_EQ(got[3], 7.5f);
    EXPECT_NEAR(got[0], r == Reduction::max ? 0.5 : r == Reduction::sum ? 0.6 : 0.3, 1e-6);
  }
  // No boxes at all: probs [0, C]; and no images: offsets [1] = {0}.
  std::vector<std::int32_t> none = {0, 0, 0};
  auto got = quarry::score_boxes(ArrayView(none.data(), DType::i32, {3}), ArrayView(p.data(), DType::f32, {0, 2}),
                                 nullptr, Acquisition::entropy, {});
  EXPECT_EQ(got, std::vector<float>({0.0f, 0.0f}));
  got = quarry::score_boxes(ArrayView(none.data(), DType::i32, {1}), ArrayView(p.data(), DType::f32, {0, 2}), nullptr,
                            Acquisition::entropy, {});
  EXPECT_TRUE(got.empty());
}

TEST(Boxes, OffsetsOfAnyIntegerDtype) {
  const Dets d = make_dets(5, 9, 3, 3, false, DType::f32);
  const auto want = quarry::score_boxes(offsets_view(d), d.probs.view(), nullptr, Acquisition::margin, {});
  std::vector<std::uint8_t> u8(d.offsets.begin(), d.offsets.end());
  std::vector<std::int16_t> i16(d.offsets.begin(), d.offsets.end());
  std::vector<std::int32_t> i32(d.offsets.begin(), d.offsets.end());
  const std::int64_t n = static_cast<std::int64_t>(d.offsets.size());
  EXPECT_EQ(quarry::score_boxes(ArrayView(u8.data(), DType::u8, {n}), d.probs.view(), nullptr, Acquisition::margin, {}), want);
  EXPECT_EQ(quarry::score_boxes(ArrayView(i16.data(), DType::i16, {n}), d.probs.view(), nullptr, Acquisition::margin, {}), want);
  EXPECT_EQ(quarry::score_boxes(ArrayView(i32.data(), DType::i32, {n}), d.probs.view(), nullptr, Acquisition::margin, {}), want);
}

TEST(Boxes, BadOffsetsAreErrorsNamingTheImage) {
  std::vector<float> p(5 * 2, 0.5f);
  const ArrayView probs(p.data(), DType::f32, {5, 2});
  auto err = [&](std::vector<std::int64_t> off) {
    return error_of([&] {
      quarry::BoxOptions o;
      o.input_name = "dets.npz";
      quarry::score_boxes(ArrayView(off.data(), DType::i64, {static_cast<std::int64_t>(off.size())}), probs, nullptr,
                          Acquisition::entropy, o);
    });
  };
  EXPECT_NE(err({0, 3, 1, 5}).find("dets.npz: offsets: image 1: offsets[2] = 1 is below offsets[1] = 3"), std::string::npos)
      << err({0, 3, 1, 5});
  EXPECT_NE(err({0, 2, 9, 5}).find("dets.npz: offsets: image 1: offsets[2] = 9 is beyond the 5 boxes of probs"),
            std::string::npos);
  EXPECT_NE(err({0, 2, 4}).find("dets.npz: offsets: offsets[2] (the last) is 4, expected the number of boxes, 5"),
            std::string::npos);
  EXPECT_NE(err({1, 2, 5}).find("dets.npz: offsets: offsets[0] is 1, expected 0"), std::string::npos);
  EXPECT_NE(err({}).find("dets.npz: offsets: expected N + 1 integers"), std::string::npos);
  EXPECT_NE(err({0, -1, 5}).find("offsets[1] = -1 is below offsets[0] = 0"), std::string::npos);
  // Not integers; not one axis.
  std::vector<float> foff = {0, 5};
  EXPECT_NE(error_of([&] {
              quarry::score_boxes(ArrayView(foff.data(), DType::f32, {2}), probs, nullptr, Acquisition::entropy, {});
            }).find("offsets: expected integers, got float32"),
            std::string::npos);
  std::vector<std::int64_t> off2 = {0, 5};
  EXPECT_NE(error_of([&] {
              quarry::score_boxes(ArrayView(off2.data(), DType::i64, {1, 2}), probs, nullptr, Acquisition::entropy, {});
            }).find("offsets: expected N + 1 integers"),
            std::string::npos);
  // probs not [B, C], or not float.
  EXPECT_NE(error_of([&] {
              quarry::score_boxes(ArrayView(off2.data(), DType::i64, {2}), ArrayView(p.data(), DType::f32, {10}), nullptr,
                                  Acquisition::entropy, {});
            }).find("probs: expected the class probabilities of every box, [B, C], got shape [10]"),
            std::string::npos);
  std::vector<std::int32_t> ip(10, 0);
  EXPECT_NE(error_of([&] {
              quarry::score_boxes(ArrayView(off2.data(), DType::i64, {2}), ArrayView(ip.data(), DType::i32, {5, 2}),
                                  nullptr, Acquisition::entropy, {});
            }).find("probs: expected float32, float16, bfloat16 or float64, got int32"),
            std::string::npos);
}

TEST(Boxes, BadRowsAndObjectnessNameImageAndBox) {
  // Images: 0 (2 boxes), 1 (none), 2 (3 boxes): row 3 is image 2, box 1.
  std::vector<std::int64_t> off = {0, 2, 2, 5};
  const ArrayView offv(off.data(), DType::i64, {4});
  auto row_err = [&](int row, std::vector<float> vals, bool logits, double tol = -1) {
    std::vector<float> p = {0.2f, 0.8f, 0.5f, 0.5f, 0.1f, 0.9f, 0.3f, 0.7f, 0.6f, 0.4f};
    p[row * 2] = vals[0];
    p[row * 2 + 1] = vals[1];
    return error_of([&] {
      quarry::BoxOptions o;
      o.input_name = "dets.npz";
      o.logits = logits;
      o.sum_tolerance = tol;
      quarry::score_boxes(offv, ArrayView(p.data(), DType::f32, {5, 2}), nullptr, Acquisition::entropy, o);
    });
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  EXPECT_NE(row_err(3, {nan, 0.5f}, false).find("dets.npz: probs: image 2, box 1 (row 3): probabilities contain NaN"),
            std::string::npos);
  EXPECT_NE(row_err(2, {-0.1f, 1.1f}, false).find("probs: image 2, box 0 (row 2): probabilities contain NaN, Inf or a negative"),
            std::string::npos);
  const std::string sum = row_err(4, {0.7f, 0.7f}, false);
  EXPECT_NE(sum.find("probs: image 2, box 2 (row 4): probabilities sum to 1.4, expected 1 within 0.001 (pass --logits"),
            std::string::npos)
      << sum;
  EXPECT_EQ(row_err(4, {0.7f, 0.7f}, false, 0.5), "no error");  // within --tolerance
  EXPECT_NE(row_err(1, {inf, 0.0f}, true).find("probs: image 0, box 1 (row 1): logits contain NaN or Inf"),
            std::string::npos);
  EXPECT_EQ(row_err(1, {3.0f, 9.0f}, true), "no error");
  // The lowest bad box is named, whatever the thread count.
  std::vector<float> big(2 * 100000, 0.5f);
  big[2 * 70000] = nan;
  big[2 * 90000] = nan;
  std::vector<std::int64_t> offb = {0, 50000, 100000};
  for (int threads : {1, 3}) {
    omp_set_num_threads(threads);
    EXPECT_NE(error_of([&] {
                quarry::score_boxes(ArrayView(offb.data(), DType::i64, {3}), ArrayView(big.data(), DType::f32, {100000, 2}),
                                    nullptr, Acquisition::margin, {});
              }).find("image 1, box 20000 (row 70000)"),
              std::string::npos);
  }
  omp_set_num_threads(omp_get_num_procs());
  // Objectness outside [0, 1], NaN, or of the wrong length.
  std::vector<float> p = {0.2f, 0.8f, 0.5f, 0.5f, 0.1f, 0.9f, 0.3f, 0.7f, 0.6f, 0.4f};
  auto obj_err = [&](std::vector<float> obj) {
    return error_of([&] {
      quarry::BoxOptions o;
      o.input_name = "dets.npz";
      const ArrayView ov(obj.data(), DType::f32, {static_cast<std::int64_t>(obj.size())});
      quarry::score_boxes(offv, ArrayView(p.data(), DType::f32, {5, 2}), &ov, Acquisition::entropy, o);
    });
  };
  EXPECT_NE(obj_err({1, 1, 1, 1.5f, 1}).find("dets.npz: objectness: image 2, box 1 (row 3): objectness 1.5, expected a value in [0, 1]"),
            std::string::npos);
  EXPECT_NE(obj_err({-0.5f, 1, 1, 1, 1}).find("objectness: image 0, box 0 (row 0): objectness -0.5"), std::string::npos);
  EXPECT_NE(obj_err({1, 1, 1, 1, nan}).find("image 2, box 2 (row 4): objectness nan"), std::string::npos);
  EXPECT_NE(obj_err({1, 1, 1}).find("dets.npz: objectness: expected one value per box, [5], got shape [3]"),
            std::string::npos);
  EXPECT_EQ(obj_err({0, 1, 0.25f, 1, 0}), "no error");
}

TEST(Boxes, UsageErrors) {
  const Dets d = make_dets(3, 5, 3, 2, false, DType::f32);
  auto err = [&](Acquisition a, Reduction r, float empty = 0.0f) {
    return error_of([&] {
      quarry::BoxOptions o;
      o.reduce = r;
      o.empty_score = empty;
      quarry::score_boxes(offsets_view(d), d.probs.view(), nullptr, a, o);
    });
  };
  for (Acquisition a : kCommittee) {
    const std::string e = err(a, Reduction::mean);
    EXPECT_EQ(e.rfind("usage: ", 0), 0u) << e;
    EXPECT_NE(e.find("committee detections are not supported"), std::string::npos) << e;
    EXPECT_NE(e.find("least-confidence, margin, ratio or entropy"), std::string::npos) << e;
  }
  for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm})
    EXPECT_EQ(err(a, Reduction::mean).rfind("usage: ", 0), 0u);
  for (Reduction r : {Reduction::topq, Reduction::foreground_mean})
    EXPECT_NE(err(Acquisition::entropy, r).find("usage: detections are reduced by mean, max or sum"), std::string::npos);
  EXPECT_EQ(err(Acquisition::entropy, Reduction::mean, std::numeric_limits<float>::quiet_NaN()).rfind("usage: ", 0), 0u);
}

// ------------------------------------------------------------------ multi-label

Values make_labels(std::uint64_t seed, std::int64_t M, std::int64_t N, std::int64_t L, bool logits, DType dtype) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> z(0.0, 2.5);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::int64_t MM = M > 0 ? M : 1;
  std::vector<double> x(static_cast<std::size_t>(MM * N * L));
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = logits ? z(rng) : u(rng);
    if (!logits && i % 17 == 3) x[i] = i % 2 ? 0.0 : 1.0;  // exactly certain labels too
  }
  std::vector<std::int64_t> shape = {N, L};
  if (M > 0) shape.insert(shape.begin(), M);
  return make_values(x, shape, dtype);
}

std::vector<double> multilabel_reference(const Values& v, Acquisition a, bool logits, Reduction r) {
  const bool committee = v.shape.size() == 3;
  const std::int64_t M = committee ? v.shape[0] : 1, N = v.shape[committee ? 1 : 0], L = v.shape[committee ? 2 : 1];
  std::vector<double> out;
  for (std::int64_t n = 0; n < N; ++n) {
    std::vector<double> labels;
    for (std::int64_t l = 0; l < L; ++l) {
      std::vector<double> x(static_cast<std::size_t>(M));
      for (std::int64_t m = 0; m < M; ++m)
        x[static_cast<std::size_t>(m)] = static_cast<float>(v.vals[static_cast<std::size_t>((m * N + n) * L + l)]);
      labels.push_back(label_ref(a, x, logits));
    }
    out.push_back(reduce_ref(labels, r, 0.0));
  }
  return out;
}

TEST(Multilabel, SingleModelEveryAcquisitionAndReduction) {
  for (bool logits : {false, true})
    for (std::int64_t L : {1, 7, 300}) {
      const Values v = make_labels(11 + L, 0, 23, L, logits, DType::f32);
      for (Acquisition a : kSingle)
        for (Reduction r : kReductions) {
          quarry::MultilabelOptions o;
          o.logits = logits;
          o.reduce = r;
          expect_close(quarry::score_multilabel(v.view(), a, o), multilabel_reference(v, a, logits, r),
                       std::string(quarry::acquisition_name(a)) + " L=" + std::to_string(L) + (logits ? " logits " : " ") +
                           quarry::reduction_name({r, 0}));
        }
    }
}

TEST(Multilabel, CommitteeEveryAcquisitionAndReduction) {
  for (bool logits : {false, true})
    for (std::int64_t M : {1, 2, 5}) {
      const Values v = make_labels(40 + M, M, 19, 9, logits, DType::f32);
      std::vector<Acquisition> all = kSingle;
      all.insert(all.end(), kCommittee.begin(), kCommittee.end());
      for (Acquisition a : all)
        for (Reduction r : kReductions) {
          quarry::MultilabelOptions o;
          o.logits = logits;
          o.reduce = r;
          expect_close(quarry::score_multilabel(v.view(), a, o), multilabel_reference(v, a, logits, r),
                       std::string(quarry::acquisition_name(a)) + " M=" + std::to_string(M) + (logits ? " logits " : " ") +
                           quarry::reduction_name({r, 0}));
        }
    }
}

TEST(Multilabel, HalfBfloatAndDouble) {
  for (DType t : {DType::f16, DType::bf16, DType::f64})
    for (bool logits : {false, true}) {
      const Values v = make_labels(9, 3, 12, 5, logits, t);
      for (Acquisition a : {Acquisition::entropy, Acquisition::bald, Acquisition::margin}) {
        quarry::MultilabelOptions o;
        o.logits = logits;
        expect_close(quarry::score_multilabel(v.view(), a, o), multilabel_reference(v, a, logits, Reduction::mean),
                     std::string(quarry::acquisition_name(a)) + " " + quarry::dtype_name(t));
      }
    }
}

TEST(Multilabel, KnownValues) {
  // p = 0.5: every uncertainty at its maximum; p = 0 or 1: every one 0. Margin 1 - |2p - 1|.
  std::vector<float> p = {0.5f, 0.0f, 1.0f, 0.25f};
  const ArrayView v(p.data(), DType::f32, {1, 4});
  quarry::MultilabelOptions o;
  o.reduce = Reduction::max;
  EXPECT_NEAR(quarry::score_multilabel(v, Acquisition::entropy, o)[0], std::log(2.0), 1e-6);
  EXPECT_NEAR(quarry::score_multilabel(v, Acquisition::margin, o)[0], 1.0, 1e-6);
  EXPECT_NEAR(quarry::score_multilabel(v, Acquisition::least_confidence, o)[0], 0.5, 1e-6);
  EXPECT_NEAR(quarry::score_multilabel(v, Acquisition::ratio, o)[0], 1.0, 1e-6);
  o.reduce = Reduction::sum;
  EXPECT_NEAR(quarry::score_multilabel(v, Acquisition::margin, o)[0], 1.0 + 0.5, 1e-6);
  EXPECT_NEAR(quarry::score_multilabel(v, Acquisition::ratio, o)[0], 1.0 + 1.0 / 3.0, 1e-6);
  // No labels: 0.
  EXPECT_EQ(quarry::score_multilabel(ArrayView(p.data(), DType::f32, {4, 0}), Acquisition::entropy, {}),
            std::vector<float>(4, 0.0f));
}

TEST(Multilabel, BadValuesNameRowMemberAndLabel) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  auto err = [&](std::vector<std::int64_t> shape, std::size_t at, float x, bool logits, Acquisition a = Acquisition::entropy) {
    std::int64_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> p(static_cast<std::size_t>(n), 0.25f);
    p[at] = x;
    return error_of([&] {
      quarry::MultilabelOptions o;
      o.input_name = "labels.npy";
      o.logits = logits;
      quarry::score_multilabel(ArrayView(p.data(), DType::f32, shape), a, o);
    });
  };
  EXPECT_NE(err({4, 5}, 2 * 5 + 3, 1.2f, false).find("labels.npy: row 2, label 3: probability 1.2, expected a value in [0, 1]"),
            std::string::npos);
  EXPECT_NE(err({4, 5}, 5, -0.5f, false).find("labels.npy: row 1, label 0: probability -0.5"), std::string::npos);
  EXPECT_NE(err({4, 5}, 19, nan, false).find("labels.npy: row 3, label 4: probability nan"), std::string::npos);
  // Committee [3, 4, 5]: member 2, row 1, label 0.
  EXPECT_NE(err({3, 4, 5}, (2 * 4 + 1) * 5, 7.0f, false, Acquisition::bald)
                .find("labels.npy: row 1 of committee member 2, label 0: probability 7"),
            std::string::npos);
  EXPECT_NE(err({4, 5}, 7, inf, true).find("labels.npy: row 1, label 2: logit inf, expected a finite number"),
            std::string::npos);
  EXPECT_EQ(err({4, 5}, 7, 40.0f, true), "no error");
  // The lowest row is reported, whatever the thread count.
  std::vector<float> big(200000 * 3, 0.5f);
  big[150000 * 3 + 1] = 2.0f;
  big[120000 * 3 + 2] = 2.0f;
  for (int threads : {1, 4}) {
    omp_set_num_threads(threads);
    EXPECT_NE(error_of([&] { quarry::score_multilabel(ArrayView(big.data(), DType::f32, {200000, 3}), Acquisition::entropy, {}); })
                  .find("row 120000, label 2"),
              std::string::npos);
  }
  omp_set_num_threads(omp_get_num_procs());
}

TEST(Multilabel, AcceptedAcquisitionsShapesAndUsage) {
  std::vector<float> p(2 * 3 * 4, 0.3f);
  const ArrayView two(p.data(), DType::f32, {6, 4}), three(p.data(), DType::f32, {2, 3, 4});
  for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm}) {
    const std::string e = error_of([&] { quarry::score_multilabel(three, a, {}); });
    EXPECT_EQ(e.rfind("usage: ", 0), 0u) << e;
    EXPECT_NE(e.find("least-confidence, margin, ratio or entropy, and with a committee [M, N, L] also consensus-entropy, bald"),
              std::string::npos)
        << e;
  }
  // A committee score of an [N, L] input: an Error (a data error, as for quarry::score).
  const std::string e = error_of([&] { quarry::score_multilabel(two, Acquisition::bald, {}); });
  EXPECT_NE(e.find("bald needs a committee [M, N, L]"), std::string::npos) << e;
  EXPECT_NE(e.rfind("usage: ", 0), 0u);
  for (Reduction r : {Reduction::topq, Reduction::foreground_mean}) {
    quarry::MultilabelOptions o;
    o.reduce = r;
    EXPECT_NE(error_of([&] { quarry::score_multilabel(two, Acquisition::entropy, o); })
                  .find("usage: multi-label outputs are reduced by mean, max or sum"),
              std::string::npos);
  }
  EXPECT_NE(error_of([&] { quarry::score_multilabel(ArrayView(p.data(), DType::f32, {24}), Acquisition::entropy, {}); })
                .find("expected multi-label outputs [N, L] or a committee [M, N, L], got shape [24]"),
            std::string::npos);
  std::vector<std::uint8_t> u(6, 0);
  EXPECT_NE(error_of([&] { quarry::score_multilabel(ArrayView(u.data(), DType::u8, {2, 3}), Acquisition::entropy, {}); })
                .find("expected float32, float16, bfloat16 or float64, got uint8"),
            std::string::npos);
  EXPECT_TRUE(quarry::acquisition_is_multilabel(Acquisition::bald, true));
  EXPECT_FALSE(quarry::acquisition_is_multilabel(Acquisition::bald, false));
  EXPECT_FALSE(quarry::acquisition_is_box(Acquisition::bald));
  EXPECT_TRUE(quarry::acquisition_is_box(Acquisition::ratio));
}

TEST(Instances, ScoresDoNotDependOnTheThreadCount) {
  const Dets d = make_dets(99, 3000, 7, 30, true, DType::f32);
  const Values ml = make_labels(98, 4, 5000, 13, false, DType::f32);
  const ArrayView objv = d.objectness.view();
  std::vector<std::vector<float>> box, lab;
  for (int threads : {1, 2, 5}) {
    omp_set_num_threads(threads);
    quarry::BoxOptions bo;
    bo.logits = true;
    bo.reduce = Reduction::sum;
    box.push_back(quarry::score_boxes(offsets_view(d), d.probs.view(), &objv, Acquisition::entropy, bo));
    quarry::MultilabelOptions mo;
    mo.reduce = Reduction::mean;
    lab.push_back(quarry::score_multilabel(ml.view(), Acquisition::bald, mo));
  }
  omp_set_num_threads(omp_get_num_procs());
  for (std::size_t i = 1; i < box.size(); ++i) {
    EXPECT_EQ(std::memcmp(box[i].data(), box[0].data(), box[0].size() * 4), 0);
    EXPECT_EQ(std::memcmp(lab[i].data(), lab[0].data(), lab[0].size() * 4), 0);
  }
}

}  // namespace
