// CPU backend of quarry::score_dense. A case is worked on in blocks of kBlock voxels; a block
// reads the case one class map at a time (contiguous for channel-first inputs) and keeps the
// streaming statistics of its voxels (include/quarry/detail/voxel_math.hpp) in arrays, so the
// updates vectorise across voxels. Each block reduces its own voxel scores at once (sum, count,
// max) into a partial of its own; the partials are added in block order, so the result does not
// depend on the thread count. Top-q and slices keep the voxel scores of the case in a buffer
// and reduce from there.
#include "cpu/dense_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <functional>
#include <limits>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/elem.hpp"
#include "quarry/detail/voxel_math.hpp"
#include "quarry/error.hpp"

namespace quarry::cpu {
namespace {

using detail::kFloatMax;
using detail::RowStats;

constexpr int kBlock = 1024;
// A committee's block keeps the members' mean and votes per class and voxel: with many classes
// the block is shorter, so that this scratch stays within kCommitteeScratch bytes per thread.
constexpr std::int64_t kCommitteeScratch = std::int64_t{2} << 20;
int block_size(std::int64_t classes, bool committee) {
  if (!committee) return kBlock;
  return static_cast<int>(std::clamp<std::int64_t>(kCommitteeScratch / (8 * std::max<std::int64_t>(classes, 1)), 1, kBlock));
}
constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();

// The first bad voxel of a block, case or call.
struct Fault {
  std::int64_t kase = kNone, voxel = kNone;
  int member = 0, code = detail::kRowOk;
  float sum = 0.0f;
  bool before(const Fault& o) const { return kase != o.kase ? kase < o.kase : voxel < o.voxel; }
};

// A block's reduction: its counted voxels' score sum, count and largest score.
struct Partial {
  double sum = 0.0;
  std::int64_t count = 0;
  float max = 0.0f;
};

// Per-thread working memory of one block.
struct Scratch {
  std::vector<float> s, t, w1, w2, scale, sumh, score, best;
  std::vector<int> i1, pred;
  std::vector<unsigned> bad;
  std::vector<unsigned char> ignored;
  std::vector<double> sd, td;       // class sums across blocks of kSumBlock classes
  std::vector<float> pbar, votes;  // committee: C * stride, class-major
  int stride = kBlock;              // voxels of a block (block_size)
  // The streaming statistics of the first B voxels back to their start.
  void reset(int B) {
    for (int b = 0; b < B; ++b) {
      s[b] = t[b] = 0.0f;
      w1[b] = w2[b] = -kFloatMax;
      i1[b] = 0;
      bad[b] = 0;
    }
  }
  void init(std::int64_t C, bool committee) {
    stride = block_size(C, committee);
    for (auto* v : {&s, &t, &w1, &w2, &scale, &sumh, &score, &best}) v->assign(kBlock, 0.0f);
    sd.assign(kBlock, 0.0);
    td.assign(kBlock, 0.0);
    i1.assign(kBlock, 0);
    pred.assign(kBlock, 0);
    bad.assign(kBlock, 0);
    ignored.assign(kBlock, 0);
    if (committee) {
      pbar.assign(static_cast<std::size_t>(C) * stride, 0.0f);
      votes.assign(static_cast<std::size_t>(C) * stride, 0.0f);
    }
  }
};

template <class T>
void nonzero_block(const T* p, int B, unsigned char* out) {
  for (int b = 0; b < B; ++b) out[b] = p[b] != T(0);
}

// ignored[b] = 1 where the mask is nonzero at voxel v0 + b of case n.
void mask_block(const ArrayView* mask, std::int64_t first, int B, unsigned char* out) {
  if (!mask) {
    std::fill(out, out + B, 0);
    return;
  }
  switch (mask->dtype) {
    case DType::u8: return nonzero_block(mask->as<std::uint8_t>() + first, B, out);
    case DType::i8: return nonzero_block(mask->as<std::int8_t>() + first, B, out);
    case DType::i16: return nonzero_block(mask->as<std::int16_t>() + first, B, out);
    case DType::i32: return nonzero_block(mask->as<std::int32_t>() + first, B, out);
    case DType::i64: return nonzero_block(mask->as<std::int64_t>() + first, B, out);
    case DType::f32: return nonzero_block(mask->as<float>() + first, B, out);
    case DType::f64: return nonzero_block(mask->as<double>() + first, B, out);
    case DType::f16:
    case DType::bf16: {  // nonzero unless +0 or -0
      const std::uint16_t* p = mask->as<std::uint16_t>() + first;
      for (int b = 0; b < B; ++b) out[b] = (p[b] & 0x7fffu) != 0;
      return;
    }
  }
}

template <DType D, bool Last>
class Kernel {
 public:
  using E = Elem<D>;
  using T = typename E::T;

  Kernel(const DenseCall& c)
      : call_(c), M_(c.layout.members), N_(c.layout.cases), C_(static_cast<int>(c.layout.classes)),
        V_(c.layout.voxels) {}

  // Scores voxels [v0, v0 + B) of case n into sc.score (after class weights) and sc.pred;
  // returns the block's first bad voxel, if any.
  Fault block(std::int64_t n, std::int64_t v0, int B, Scratch& sc) const {
    Fault f;
    if (!call_.committee) {
      member_pass(0, n, v0, B, sc);
      finish_member(0, n, v0, B, sc, &f);
      if (f.code != detail::kRowOk) return f;
      if (call_.logits) {
        single<true>(B, sc);
      } else {
        single<false>(B, sc);
      }
    } else {
      committee(n, v0, B, sc, &f);
      if (f.code != detail::kRowOk) return f;
    }
    if (call_.weights) {
      for (int b = 0; b < B; ++b) sc.score[b] *= call_.weights[sc.pred[b]];
    }
    return f;
  }

  // Member m's value of class c at voxel v of case n, as stored (float64 not narrowed).
  double value(std::int64_t m, std::int64_t n, int c, std::int64_t v) const {
    const T* p = row_base(m, n) + (Last ? v * C_ + c : c * V_ + v);
    if constexpr (D == DType::f64) {
      return *p;
    } else {
      return E::get(p, 0);
    }
  }
  int classes() const { return C_; }

 private:
  const T* row_base(std::int64_t m, std::int64_t n) const {
    return static_cast<const T*>(call_.data) + ((m * N_ + n) * C_) * V_;
  }

  // The class sums s and t of the block's voxels, as a row's are summed (row_math.hpp): in
  // float over blocks of kSumBlock classes, the blocks added in double. add(c0, c1) adds classes
  // [c0, c1) to sc.s and sc.t.
  template <class Add>
  void class_sums(int B, Scratch& sc, Add add) const {
    if (C_ <= detail::kSumBlock) {
      add(0, C_);
      return;
    }
    std::fill(sc.sd.begin(), sc.sd.begin() + B, 0.0);
    std::fill(sc.td.begin(), sc.td.begin() + B, 0.0);
    for (int c0 = 0; c0 < C_; c0 += detail::kSumBlock) {
      std::fill(sc.s.begin(), sc.s.begin() + B, 0.0f);
      std::fill(sc.t.begin(), sc.t.begin() + B, 0.0f);
      add(c0, std::min(C_, c0 + detail::kSumBlock));
      for (int b = 0; b < B; ++b) {
        sc.sd[b] += sc.s[b];
        sc.td[b] += sc.t[b];
      }
    }
    for (int b = 0; b < B; ++b) {
      sc.s[b] = static_cast<float>(sc.sd[b]);
      sc.t[b] = static_cast<float>(sc.td[b]);
    }
  }

  // Streaming statistics of member m's voxels [v0, v0 + B) of case n.
  void member_pass(std::int64_t m, std::int64_t n, std::int64_t v0, int B, Scratch& sc) const {
    const T* base = row_base(m, n);
    const std::int64_t cs = Last ? 1 : V_, vs = Last ? C_ : 1;
    sc.reset(B);
    float *s = sc.s.data(), *t = sc.t.data(), *w1 = sc.w1.data(), *w2 = sc.w2.data();
    int* i1 = sc.i1.data();
    unsigned* bad = sc.bad.data();
    if (!call_.logits) {
      class_sums(B, sc, [&](int c0, int c1) {
        for (int c = c0; c < c1; ++c) {
          const T* p = base + c * cs + v0 * vs;
          QUARRY_SIMD()
          for (int b = 0; b < B; ++b) detail::voxel_prob_add(E::get(p, b * vs), c, s[b], t[b], w1[b], w2[b], i1[b], bad[b]);
        }
      });
    } else {
      for (int c = 0; c < C_; ++c) {
        const T* p = base + c * cs + v0 * vs;
        QUARRY_SIMD()
        for (int b = 0; b < B; ++b) detail::voxel_logit_max(E::get(p, b * vs), c, w1[b], w2[b], i1[b], bad[b]);
      }
      class_sums(B, sc, [&](int c0, int c1) {
        for (int c = c0; c < c1; ++c) {
          const T* p = base + c * cs + v0 * vs;
          QUARRY_SIMD()
          for (int b = 0; b < B; ++b) detail::voxel_logit_add(E::get(p, b * vs), w1[b], s[b], t[b]);
        }
      });
    }
  }

  // Checks every voxel of the block (first bad one into *f).
  void finish_member(std::int64_t m, std::int64_t n, std::int64_t v0, int B, Scratch& sc, Fault* f) const {
    // A vectorised check first (check_row's conditions, written without branches); the scan
    // for the voxel only where one is bad.
    unsigned any = 0;
    const float lo = 1.0f - call_.tol, hi = 1.0f + call_.tol;
    const float* s = sc.s.data();
    const unsigned* bad = sc.bad.data();
    if (call_.logits) {
      QUARRY_SIMD(reduction(| : any))
      for (int b = 0; b < B; ++b) any |= bad[b];
    } else {
      QUARRY_SIMD(reduction(| : any))
      for (int b = 0; b < B; ++b) any |= bad[b] | static_cast<unsigned>(!(s[b] >= lo)) | static_cast<unsigned>(!(s[b] <= hi));
    }
    if (!any) return;
    for (int b = 0; b < B; ++b) {
      const RowStats st = detail::voxel_stats(sc.s[b], sc.t[b], sc.w1[b], sc.w2[b], sc.i1[b], sc.bad[b], C_, call_.logits);
      const int code = detail::check_row(st, call_.logits, call_.tol);
      if (code != detail::kRowOk) {
        f->kase = n;
        f->voxel = v0 + b;
        f->member = static_cast<int>(m);
        f->code = code;
        f->sum = st.s;
        return;
      }
    }
  }

  template <bool Logits>
  void single(int B, Scratch& sc) const {
    switch (call_.acquisition) {
      case Acquisition::least_confidence: return single<Acquisition::least_confidence, Logits>(B, sc);
      case Acquisition::margin: return single<Acquisition::margin, Logits>(B, sc);
      case Acquisition::ratio: return single<Acquisition::ratio, Logits>(B, sc);
      default: return single<Acquisition::entropy, Logits>(B, sc);
    }
  }
  template <Acquisition A, bool Logits>
  void single(int B, Scratch& sc) const {
    const float *s = sc.s.data(), *t = sc.t.data(), *w1 = sc.w1.data(), *w2 = sc.w2.data();
    const int* i1 = sc.i1.data();
    float* score = sc.score.data();
    int* pred = sc.pred.data();
    const int C = C_;
    QUARRY_SIMD()
    for (int b = 0; b < B; ++b) {
      score[b] = detail::voxel_score<A, Logits>(s[b], t[b], w1[b], w2[b], C);
      pred[b] = i1[b];
    }
  }

  // The weight of member m's class value for voxel b: the probability, or exp(z - zmax).
  void add_to_mean(std::int64_t m, std::int64_t n, std::int64_t v0, int B, Scratch& sc) const {
    const T* base = row_base(m, n);
    const std::int64_t cs = Last ? 1 : V_, vs = Last ? C_ : 1;
    const float* scale = sc.scale.data();
    const float* zmax = sc.w1.data();
    for (int c = 0; c < C_; ++c) {
      const T* p = base + c * cs + v0 * vs;
      float* pb = sc.pbar.data() + static_cast<std::size_t>(c) * sc.stride;
      if (call_.logits) {
        QUARRY_SIMD()
        for (int b = 0; b < B; ++b)
          pb[b] += detail::fast_exp_nonpos(detail::logit_offset(E::get(p, b * vs), zmax[b])) * scale[b];
      } else {
        QUARRY_SIMD()
        for (int b = 0; b < B; ++b) pb[b] += E::get(p, b * vs) * scale[b];
      }
    }
  }

  // A committee [M, N, C, voxels]: the members' statistics, their mean pbar and votes, then the
  // score; the predicted class is the argmax of pbar.
  void committee(std::int64_t n, std::int64_t v0, int B, Scratch& sc, Fault* f) const {
    const Acquisition a = call_.acquisition;
    const float inv_m = 1.0f / static_cast<float>(M_);
    std::fill(sc.pbar.begin(), sc.pbar.end(), 0.0f);
    std::fill(sc.votes.begin(), sc.votes.end(), 0.0f);
    std::fill(sc.sumh.begin(), sc.sumh.end(), 0.0f);
    for (std::int64_t m = 0; m < M_; ++m) {
      member_pass(m, n, v0, B, sc);
      finish_member(m, n, v0, B, sc, f);
      if (f->code != detail::kRowOk) return;
      for (int b = 0; b < B; ++b) {
        const RowStats st = detail::voxel_stats(sc.s[b], sc.t[b], sc.w1[b], sc.w2[b], sc.i1[b], 0u, C_, call_.logits);
        sc.sumh[b] += detail::stats_entropy(st);
        sc.votes[static_cast<std::size_t>(sc.i1[b]) * sc.stride + b] += 1.0f;
        sc.scale[b] = 1.0f / (sc.s[b] * static_cast<float>(M_));
      }
      add_to_mean(m, n, v0, B, sc);
    }
    // Statistics of pbar (probabilities; w1/w2/i1 its top two and argmax).
    sc.reset(B);
    float *s = sc.s.data(), *t = sc.t.data(), *w1 = sc.w1.data(), *w2 = sc.w2.data();
    int* i1 = sc.i1.data();
    unsigned* bad = sc.bad.data();
    class_sums(B, sc, [&](int c0, int c1) {
      for (int c = c0; c < c1; ++c) {
        const float* pb = sc.pbar.data() + static_cast<std::size_t>(c) * sc.stride;
        QUARRY_SIMD()
        for (int b = 0; b < B; ++b) detail::voxel_prob_add(pb[b], c, s[b], t[b], w1[b], w2[b], i1[b], bad[b]);
      }
    });
    for (int b = 0; b < B; ++b) sc.pred[b] = i1[b];
    switch (a) {
      case Acquisition::bald:
      case Acquisition::consensus_entropy:
        for (int b = 0; b < B; ++b) {
          const float h = detail::stats_entropy(detail::voxel_stats(s[b], t[b], w1[b], w2[b], i1[b], 0u, C_, false));
          const float mi = h - sc.sumh[b] * inv_m;
          sc.score[b] = a == Acquisition::consensus_entropy ? h : (M_ > 1 && mi > 0.0f) ? mi : 0.0f;
        }
        return;
      case Acquisition::vote_entropy:
      case Acquisition::variation_ratio:
        for (int b = 0; b < B; ++b) {
          float h = 0.0f, most = 0.0f;
          for (int c = 0; c < C_; ++c) {
            const float v = sc.votes[static_cast<std::size_t>(c) * sc.stride + b];
            h -= detail::xlogx(v * inv_m);
            most = v > most ? v : most;
          }
          sc.score[b] = a == Acquisition::vote_entropy ? (h > 0.0f ? h : 0.0f)
                                                       : (static_cast<float>(M_) - most) / static_cast<float>(M_);
        }
        return;
      case Acquisition::kl_max: kl_max(n, v0, B, sc); return;
      default:  // a single-model score of the committee mean
        for (int b = 0; b < B; ++b) {
          const RowStats st = detail::voxel_stats(s[b], t[b], w1[b], w2[b], i1[b], 0u, C_, false);
          sc.score[b] = detail::voxel_score(a, st, C_, false);
        }
        return;
    }
  }

  // max over members of KL(p_m || pbar) = -H(p_m) - sum_c w_c log pbar_c / s_m.
  void kl_max(std::int64_t n, std::int64_t v0, int B, Scratch& sc) const {
    std::fill(sc.score.begin(), sc.score.begin() + B, 0.0f);
    if (M_ == 1) return;  // a member against itself: exactly 0
    for (float& x : sc.pbar) x = x >= 1.17549435e-38f ? detail::fast_log(x) : 0.0f;
    std::fill(sc.best.begin(), sc.best.end(), 0.0f);
    const std::int64_t cs = Last ? 1 : V_, vs = Last ? C_ : 1;
    for (std::int64_t m = 0; m < M_; ++m) {
      member_pass(m, n, v0, B, sc);
      float* cross = sc.scale.data();
      std::fill(cross, cross + B, 0.0f);
      const T* base = row_base(m, n);
      // In float over blocks of kSumBlock classes, the blocks added in double (sd is free here).
      std::fill(sc.sd.begin(), sc.sd.begin() + B, 0.0);
      for (int c0 = 0; c0 < C_; c0 += detail::kSumBlock) {
        for (int c = c0; c < std::min(C_, c0 + detail::kSumBlock); ++c) {
          const T* p = base + c * cs + v0 * vs;
          const float* lp = sc.pbar.data() + static_cast<std::size_t>(c) * sc.stride;
          if (call_.logits) {
            QUARRY_SIMD()
            for (int b = 0; b < B; ++b)
              cross[b] += detail::fast_exp_nonpos(detail::logit_offset(E::get(p, b * vs), sc.w1[b])) * lp[b];
          } else {
            QUARRY_SIMD()
            for (int b = 0; b < B; ++b) cross[b] += E::get(p, b * vs) * lp[b];
          }
        }
        if (C_ <= detail::kSumBlock) break;
        for (int b = 0; b < B; ++b) {
          sc.sd[b] += cross[b];
          cross[b] = 0.0f;
        }
      }
      if (C_ > detail::kSumBlock)
        for (int b = 0; b < B; ++b) cross[b] = static_cast<float>(sc.sd[b]);
      for (int b = 0; b < B; ++b) {
        const RowStats st = detail::voxel_stats(sc.s[b], sc.t[b], sc.w1[b], sc.w2[b], sc.i1[b], 0u, C_, call_.logits);
        const float kl = -detail::stats_entropy(st) - cross[b] / st.s;
        sc.best[b] = kl > sc.best[b] ? kl : sc.best[b];
      }
    }
    std::copy(sc.best.begin(), sc.best.begin() + B, sc.score.begin());
  }

  const DenseCall& call_;
  std::int64_t M_, N_;
  int C_;
  std::int64_t V_;
};

// Mean of the m largest values of v (values < 0 are voxels not counted; there are >= m others).
double top_mean(std::vector<float>& v, std::int64_t m) {
  if (m <= 0) return 0.0;
  std::nth_element(v.begin(), v.begin() + (m - 1), v.end(), std::greater<float>());
  double sum = 0.0;
  for (std::int64_t i = 0; i < m; ++i) sum += v[i];
  return sum / static_cast<double>(m);
}

// The mean of the m largest of a case's voxel scores (v: the scores of the voxels counted, -1
// for the others; `count` of them counted), on every thread where `parallel`. A strided sample of the scores
// gives a threshold a little below the m-th largest; one pass collects the scores at or above
// it (about 1.2 m of them), and nth_element over those finds the m largest exactly. Should the
// sample have put the threshold too high (fewer than m collected), the pass is repeated with
// every counted score. Parts are collected in order: the result does not depend on the thread
// count.
double top_mean_sampled(const std::vector<float>& v, std::int64_t m, std::int64_t count, bool parallel) {
  if (m <= 0) return 0.0;
  const auto n = static_cast<std::int64_t>(v.size());
  float threshold = 0.0f;  // every counted score (they are >= 0)
  constexpr std::int64_t kStride = 32;
  if (m < count / 4 && n >= 64 * kStride) {
    std::vector<float> sample;
    sample.reserve(static_cast<std::size_t>(n / kStride + 1));
    for (std::int64_t i = 0; i < n; i += kStride)
      if (v[static_cast<std::size_t>(i)] >= 0.0f) sample.push_back(v[static_cast<std::size_t>(i)]);
    const auto ns = static_cast<std::int64_t>(sample.size());
    // The rank in the sample of the m-th largest, with a margin of 20% and 3 standard deviations.
    const double ms = static_cast<double>(m) * static_cast<double>(ns) / static_cast<double>(count);
    const auto r = static_cast<std::int64_t>(std::ceil(ms * 1.2 + 3.0 * std::sqrt(ms) + 8.0));
    if (r < ns) {
      std::nth_element(sample.begin(), sample.begin() + (r - 1), sample.end(), std::greater<float>());
      threshold = sample[static_cast<std::size_t>(r - 1)];
    }
  }
  constexpr std::int64_t kPart = 1 << 16;
  const std::int64_t parts = (n + kPart - 1) / kPart;
  std::vector<std::vector<float>> kept(static_cast<std::size_t>(parts));
  const auto collect = [&](float at_least) {
    const auto body = [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t part = b; part < e; ++part) {
        std::vector<float>& out = kept[static_cast<std::size_t>(part)];
        out.clear();
        const float* x = v.data() + part * kPart;
        const std::int64_t len = std::min(n, (part + 1) * kPart) - part * kPart;
        // 64 scores at a time: a vectorised test says whether any is to be kept.
        std::int64_t i = 0;
        for (; i + 64 <= len; i += 64) {
          int any = 0;
          QUARRY_SIMD(reduction(| : any))
          for (int j = 0; j < 64; ++j) any |= x[i + j] >= at_least;
          if (!any) continue;
          for (int j = 0; j < 64; ++j)
            if (x[i + j] >= at_least) out.push_back(x[i + j]);
        }
        for (; i < len; ++i)
          if (x[i] >= at_least) out.push_back(x[i]);
      }
    };
    if (parallel) {
      parallel_chunks(parts, 1, n, body);
    } else {
      body(0, parts, 0);
    }
    std::vector<float> all;
    for (const auto& k : kept) all.insert(all.end(), k.begin(), k.end());
    return all;
  };
  std::vector<float> top = collect(threshold);
  if (static_cast<std::int64_t>(top.size()) < m) top = collect(0.0f);
  std::nth_element(top.begin(), top.begin() + (m - 1), top.end(), std::greater<float>());
  double sum = 0.0;
  for (std::int64_t i = 0; i < m; ++i) sum += top[static_cast<std::size_t>(i)];
  return sum / static_cast<double>(m);
}

std::int64_t top_count(double q, std::int64_t n) { return detail::top_count(q, n); }

// " (class 3 is -inf)", " (class 0 is 1e+300, beyond the float32 range that scores are computed in)".
std::string fmt_value(int c, double x) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  std::string s = std::string(" (class ") + std::to_string(c) + " is " + buf;
  if (std::isfinite(x) && std::fabs(x) > 3.4028234663852886e38) s += ", beyond the float32 range that scores are computed in";
  return s + ")";
}

float reduce_values(const ReduceSpec& r, double sum, std::int64_t count, float max) {
  switch (r.how) {
    case Reduction::max: return max;
    case Reduction::sum: return static_cast<float>(sum);
    default: return count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.0f;
  }
}

constexpr std::int64_t kCaseBuffers = std::int64_t{256} << 20;

template <DType D, bool Last>
class Driver {
 public:
  Driver(const DenseCall& c, float* out) : call_(c), kernel_(c), out_(out) {
    const DenseLayout& l = c.layout;
    // Slices are regions too: the whole grid but one voxel along the slice axis.
    if (c.slice_axis >= 0) {
      tile_ = l.spatial;
      tile_[static_cast<std::size_t>(c.slice_axis)] = 1;
    } else {
      tile_ = c.patch;
    }
    S_ = l.patches(tile_);
    keep_scores_ = c.reduce.how == Reduction::topq || !tile_.empty();
  }

  void run() {
    const DenseLayout& l = call_.layout;
    const int threads = max_threads();
    std::vector<Scratch> scratch(static_cast<std::size_t>(threads));
    const std::int64_t work_per_case = l.voxels * l.classes * l.members;
    Fault first;
    // Small cases (2D images), or many cases whose score buffers (top-q, slices, patches) fit in
    // kCaseBuffers for all threads at once: one thread per case, each with its own buffers, so
    // that the serial steps of a case (top-q's selection) overlap. Otherwise the blocks of one
    // case at a time run on every thread. The scores are the same either way.
    const bool by_case = work_per_case * 4 < kParallelWork ||
                         (l.cases >= 2 * threads &&
                          (!keep_scores_ || threads * l.voxels * static_cast<std::int64_t>(sizeof(float)) <= kCaseBuffers));
    if (by_case) {
      std::vector<std::vector<float>> bufs(static_cast<std::size_t>(threads));
      std::vector<Fault> faults(static_cast<std::size_t>(threads));
      parallel_chunks(l.cases, 1, l.cases * work_per_case, [&](std::int64_t b, std::int64_t e, int t) {
        Scratch& sc = scratch[static_cast<std::size_t>(t)];
        if (sc.s.empty()) sc.init(l.classes, call_.committee);
        for (std::int64_t n = b; n < e; ++n) {
          const Fault f = one_case(n, &sc, bufs[static_cast<std::size_t>(t)], false);
          if (f.before(faults[static_cast<std::size_t>(t)])) faults[static_cast<std::size_t>(t)] = f;
        }
      });
      for (const Fault& f : faults)
        if (f.before(first)) first = f;
    } else {
      std::vector<float> buf;
      for (auto& sc : scratch) sc.init(l.classes, call_.committee);
      for (std::int64_t n = 0; n < l.cases && first.kase == kNone; ++n) first = one_case(n, scratch.data(), buf, true);
    }
    if (first.kase != kNone) raise(first);
  }

 private:
  // One case: its blocks (in parallel where `parallel`), then its reduction(s).
  Fault one_case(std::int64_t n, Scratch* scratch, std::vector<float>& buf, bool parallel) {
    const DenseLayout& l = call_.layout;
    const std::int64_t V = l.voxels;
    const int block = block_size(l.classes, call_.committee);
    const std::int64_t blocks = (V + block - 1) / block;
    std::vector<Partial> parts(static_cast<std::size_t>(blocks));
    std::vector<Fault> faults(static_cast<std::size_t>(blocks));
    if (keep_scores_) buf.resize(static_cast<std::size_t>(V));
    const bool fg = call_.reduce.how == Reduction::foreground_mean;
    auto body = [&](std::int64_t bb, std::int64_t be, int t) {
      Scratch& sc = scratch[parallel ? t : 0];
      for (std::int64_t blk = bb; blk < be; ++blk) {
        const std::int64_t v0 = blk * block;
        const int B = static_cast<int>(std::min<std::int64_t>(block, V - v0));
        const Fault f = kernel_.block(n, v0, B, sc);
        if (f.code != detail::kRowOk) {
          faults[static_cast<std::size_t>(blk)] = f;
          continue;
        }
        mask_block(call_.ignore, n * V + v0, B, sc.ignored.data());
        float bs = 0.0f, bm = 0.0f;
        int cnt = 0;
        const float* score = sc.score.data();
        const int* pred = sc.pred.data();
        const unsigned char* ign = sc.ignored.data();
        const int bg = fg ? call_.background : -1;  // no class is -1: every voxel is foreground
        float* kept = keep_scores_ ? buf.data() + v0 : sc.best.data();  // unused scratch without
        QUARRY_SIMD(reduction(+ : bs, cnt) reduction(max : bm))
        for (int b = 0; b < B; ++b) {
          const float x = score[b];
          const bool counted = (ign[b] == 0) & (pred[b] != bg);
          bs += counted ? x : 0.0f;
          cnt += counted ? 1 : 0;
          bm = counted && x > bm ? x : bm;
          kept[b] = counted ? x : -1.0f;
        }
        if (call_.voxel_map) {
          float* map = call_.voxel_map + n * V + v0;
          for (int b = 0; b < B; ++b) map[b] = ign[b] ? 0.0f : score[b];
        }
        parts[static_cast<std::size_t>(blk)] = Partial{bs, cnt, bm};
      }
    };
    if (parallel) {
      parallel_chunks(blocks, 1, V * l.classes * l.members, body);
    } else {
      body(0, blocks, 0);
    }
    Fault first;
    for (const Fault& f : faults)
      if (f.before(first)) first = f;
    if (first.kase != kNone) return first;

    if (!tile_.empty()) {
      regions(n, buf, parallel);
      return first;
    }
    double sum = 0.0;
    std::int64_t count = 0;
    float mx = 0.0f;
    for (const Partial& p : parts) {
      sum += p.sum;
      count += p.count;
      mx = std::max(mx, p.max);
    }
    out_[n] = call_.reduce.how == Reduction::topq
                  ? static_cast<float>(top_mean_sampled(buf, top_count(call_.reduce.q, count), count, parallel))
                  : reduce_values(call_.reduce, sum, count, mx);
    return first;
  }

  // The reductions of case n's regions (tile_: slices or patches), from its voxel scores:
  // region r's voxels in row-major order, a run along the last axis at a time.
  void regions(std::int64_t n, const std::vector<float>& buf, bool parallel) {
    const std::vector<std::int64_t>& dims = call_.layout.spatial;
    const std::vector<std::int64_t>& size = tile_;
    const std::size_t A = dims.size();
    auto body = [&](std::int64_t b, std::int64_t e, int) {
      std::vector<float> vals;
      std::vector<std::int64_t> lo(A), hi(A), at(A);
      for (std::int64_t r = b; r < e; ++r) {
        lo = patch_origin(dims, size, r);
        for (std::size_t a = 0; a < A; ++a) hi[a] = std::min(dims[a], lo[a] + size[a]);
        vals.clear();
        double sum = 0.0;
        float mx = 0.0f;
        at = lo;
        while (true) {
          std::int64_t v = 0;  // the voxel at `at`
          for (std::size_t a = 0; a < A; ++a) v = v * dims[a] + at[a];
          const float* p = buf.data() + v;
          for (std::int64_t i = 0; i < hi[A - 1] - lo[A - 1]; ++i) {
            if (p[i] < 0.0f) continue;
            vals.push_back(p[i]);
            sum += p[i];
            mx = std::max(mx, p[i]);
          }
          // The next run: advance the axes before the last, odometer-wise.
          std::size_t a = A - 1;
          while (a-- > 0) {
            if (++at[a] < hi[a]) break;
            at[a] = lo[a];
          }
          if (a == static_cast<std::size_t>(-1)) break;
        }
        const auto count = static_cast<std::int64_t>(vals.size());
        out_[n * S_ + r] = call_.reduce.how == Reduction::topq
                               ? static_cast<float>(top_mean(vals, top_count(call_.reduce.q, count)))
                               : reduce_values(call_.reduce, sum, count, mx);
      }
    };
    if (parallel) {
      parallel_chunks(S_, 1, call_.layout.voxels, body);
    } else {
      body(0, S_, 0);
    }
  }

  [[noreturn]] void raise(const Fault& f) const {
    const DenseLayout& l = call_.layout;
    std::string at = "[";
    std::int64_t rest = f.voxel;
    std::vector<std::int64_t> coord(l.spatial.size());
    for (std::size_t a = l.spatial.size(); a-- > 0;) {
      coord[a] = rest % l.spatial[a];
      rest /= l.spatial[a];
    }
    for (std::size_t a = 0; a < coord.size(); ++a) at += (a ? ", " : "") + std::to_string(coord[a]);
    at += "]";
    const std::string where = call_.input_name + ": case " + std::to_string(f.kase) + ", voxel " + at +
                              (call_.committee ? " of committee member " + std::to_string(f.member) : "");
    if (f.code == detail::kRowBadSum)
      QUARRY_FAIL(where, ": probabilities sum to ", f.sum, ", expected 1 within ", call_.tol,
                  " (pass --logits if the input holds logits)");
    // The first bad class value, as stored: scores are computed in float32, so a float64 value
    // beyond its range (3.4e38) is as bad as an Inf.
    std::string which;
    for (int c = 0; c < kernel_.classes(); ++c) {
      const double x = kernel_.value(f.member, f.kase, c, f.voxel);
      if (std::isnan(x) || std::fabs(x) > 3.4028234663852886e38 || (!call_.logits && x < 0.0)) {
        which = fmt_value(c, x);
        break;
      }
    }
    if (call_.logits) QUARRY_FAIL(where, ": logits contain NaN or Inf", which);
    QUARRY_FAIL(where, ": probabilities contain NaN, Inf or a negative value", which);
  }

  const DenseCall& call_;
  Kernel<D, Last> kernel_;
  float* out_;
  std::vector<std::int64_t> tile_;  // the region size per spatial axis (empty: per case)
  std::int64_t S_ = 1;               // regions per case
  bool keep_scores_ = false;
};

template <DType D>
void run_typed(const DenseCall& c, float* out) {
  if (c.layout.channels_last) {
    Driver<D, true>(c, out).run();
  } else {
    Driver<D, false>(c, out).run();
  }
}

}  // namespace

void score_dense(const DenseCall& c, float* out) {
  switch (c.dtype) {
    case DType::f32: return run_typed<DType::f32>(c, out);
    case DType::f64: return run_typed<DType::f64>(c, out);
    case DType::f16: return run_typed<DType::f16>(c, out);
    case DType::bf16: return run_typed<DType::bf16>(c, out);
    default: QUARRY_FAIL(c.input_name, ": dense scores need float32, float64, float16 or bfloat16, got ", dtype_name(c.dtype));
  }
}

}  // namespace quarry::cpu
