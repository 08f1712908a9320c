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
  std::vector<float> pbar, votes;  // committee: C * kBlock, class-major
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
    for (auto* v : {&s, &t, &w1, &w2, &scale, &sumh, &score, &best}) v->assign(kBlock, 0.0f);
    i1.assign(kBlock, 0);
    pred.assign(kBlock, 0);
    bad.assign(kBlock, 0);
    ignored.assign(kBlock, 0);
    if (committee) {
      pbar.assign(static_cast<std::size_t>(C) * kBlock, 0.0f);
      votes.assign(static_cast<std::size_t>(C) * kBlock, 0.0f);
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

 private:
  const T* row_base(std::int64_t m, std::int64_t n) const {
    return static_cast<const T*>(call_.data) + ((m * N_ + n) * C_) * V_;
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
      for (int c = 0; c < C_; ++c) {
        const T* p = base + c * cs + v0 * vs;
        QUARRY_SIMD()
        for (int b = 0; b < B; ++b) detail::voxel_prob_add(E::get(p, b * vs), c, s[b], t[b], w1[b], w2[b], i1[b], bad[b]);
      }
    } else {
      for (int c = 0; c < C_; ++c) {
        const T* p = base + c * cs + v0 * vs;
        QUARRY_SIMD()
        for (int b = 0; b < B; ++b) detail::voxel_logit_max(E::get(p, b * vs), c, w1[b], w2[b], i1[b], bad[b]);
      }
      for (int c = 0; c < C_; ++c) {
        const T* p = base + c * cs + v0 * vs;
        QUARRY_SIMD()
        for (int b = 0; b < B; ++b) detail::voxel_logit_add(E::get(p, b * vs), w1[b], s[b], t[b]);
      }
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
      float* pb = sc.pbar.data() + static_cast<std::size_t>(c) * kBlock;
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
        sc.votes[static_cast<std::size_t>(sc.i1[b]) * kBlock + b] += 1.0f;
        sc.scale[b] = 1.0f / (sc.s[b] * static_cast<float>(M_));
      }
      add_to_mean(m, n, v0, B, sc);
    }
    // Statistics of pbar (probabilities; w1/w2/i1 its top two and argmax).
    sc.reset(B);
    float *s = sc.s.data(), *t = sc.t.data(), *w1 = sc.w1.data(), *w2 = sc.w2.data();
    int* i1 = sc.i1.data();
    unsigned* bad = sc.bad.data();
    for (int c = 0; c < C_; ++c) {
      const float* pb = sc.pbar.data() + static_cast<std::size_t>(c) * kBlock;
      QUARRY_SIMD()
      for (int b = 0; b < B; ++b) detail::voxel_prob_add(pb[b], c, s[b], t[b], w1[b], w2[b], i1[b], bad[b]);
    }
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
            const float v = sc.votes[static_cast<std::size_t>(c) * kBlock + b];
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
      for (int c = 0; c < C_; ++c) {
        const T* p = base + c * cs + v0 * vs;
        const float* lp = sc.pbar.data() + static_cast<std::size_t>(c) * kBlock;
        if (call_.logits) {
          QUARRY_SIMD()
          for (int b = 0; b < B; ++b)
            cross[b] += detail::fast_exp_nonpos(detail::logit_offset(E::get(p, b * vs), sc.w1[b])) * lp[b];
        } else {
          QUARRY_SIMD()
          for (int b = 0; b < B; ++b) cross[b] += E::get(p, b * vs) * lp[b];
        }
      }
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

// top_mean of a case's voxel scores, with the work spread over threads: a histogram of the
// scores' top 16 bits (non-negative floats order as their bits) finds the bin holding the m-th
// largest; the scores above it are summed per block and the bin itself goes to nth_element.
// Sums are added in block order: the result does not depend on the thread count.
double top_mean_parallel(const std::vector<float>& v, std::int64_t m) {
  if (m <= 0) return 0.0;
  constexpr int kBins = 1 << 16;
  const auto n = static_cast<std::int64_t>(v.size());
  constexpr std::int64_t kPart = 1 << 16;
  const std::int64_t parts = (n + kPart - 1) / kPart;
  const int threads = max_threads();
  std::vector<std::vector<std::int64_t>> hist(static_cast<std::size_t>(threads));
  parallel_chunks(parts, 1, n, [&](std::int64_t b, std::int64_t e, int t) {
    auto& h = hist[static_cast<std::size_t>(t)];
    if (h.empty()) h.assign(kBins, 0);
    for (std::int64_t i = b * kPart; i < std::min(n, e * kPart); ++i) {
      const float x = v[static_cast<std::size_t>(i)];
      if (x >= 0.0f) ++h[detail::float_to_bits(x) >> 16];
    }
  });
  std::int64_t above = 0;
  int bin = kBins - 1;
  for (; bin >= 0; --bin) {
    std::int64_t c = 0;
    for (const auto& h : hist) c += h.empty() ? 0 : h[static_cast<std::size_t>(bin)];
    if (above + c >= m) break;
    above += c;
  }
  std::vector<double> sums(static_cast<std::size_t>(parts), 0.0);
  std::vector<std::vector<float>> edge(static_cast<std::size_t>(parts));
  const auto b16 = static_cast<std::uint32_t>(bin);
  parallel_chunks(parts, 1, n, [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t part = b; part < e; ++part) {
      double sum = 0.0;
      for (std::int64_t i = part * kPart; i < std::min(n, (part + 1) * kPart); ++i) {
        const float x = v[static_cast<std::size_t>(i)];
        if (x < 0.0f) continue;
        const std::uint32_t key = detail::float_to_bits(x) >> 16;
        if (key > b16) sum += x;
        else if (key == b16) edge[static_cast<std::size_t>(part)].push_back(x);
      }
      sums[static_cast<std::size_t>(part)] = sum;
    }
  });
  double total = 0.0;
  for (double x : sums) total += x;
  std::vector<float> rest;
  for (const auto& e : edge) rest.insert(rest.end(), e.begin(), e.end());
  const std::int64_t r = m - above;  // 1 <= r <= rest.size()
  std::nth_element(rest.begin(), rest.begin() + (r - 1), rest.end(), std::greater<float>());
  for (std::int64_t i = 0; i < r; ++i) total += rest[static_cast<std::size_t>(i)];
  return total / static_cast<double>(m);
}

// How many voxels top-q averages: ceil(q n) (at least 1 of a non-empty set, at most n). The
// 1e-9 keeps q n that is an integer up to rounding (0.01 * 300) from taking one more.
std::int64_t top_count(double q, std::int64_t n) {
  if (n == 0) return 0;
  const auto m = static_cast<std::int64_t>(std::ceil(q * static_cast<double>(n) - 1e-9));
  return std::min(n, std::max<std::int64_t>(1, m));
}

float reduce_values(const ReduceSpec& r, double sum, std::int64_t count, float max) {
  switch (r.how) {
    case Reduction::max: return max;
    case Reduction::sum: return static_cast<float>(sum);
    default: return count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.0f;
  }
}

template <DType D, bool Last>
class Driver {
 public:
  Driver(const DenseCall& c, float* out) : call_(c), kernel_(c), out_(out) {
    const DenseLayout& l = c.layout;
    S_ = l.slices(c.slice_axis);
    if (c.slice_axis >= 0) {
      inner_ = 1;
      for (std::size_t a = static_cast<std::size_t>(c.slice_axis) + 1; a < l.spatial.size(); ++a) inner_ *= l.spatial[a];
    }
    keep_scores_ = c.reduce.how == Reduction::topq || c.slice_axis >= 0;
  }

  void run() {
    const DenseLayout& l = call_.layout;
    const int threads = max_threads();
    std::vector<Scratch> scratch(static_cast<std::size_t>(threads));
    const std::int64_t work_per_case = l.voxels * l.classes * l.members;
    Fault first;
    if (work_per_case * 4 < kParallelWork) {
      // Small cases (2D images): one thread per case, each with its own buffers.
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
    const std::int64_t blocks = (V + kBlock - 1) / kBlock;
    std::vector<Partial> parts(static_cast<std::size_t>(blocks));
    std::vector<Fault> faults(static_cast<std::size_t>(blocks));
    if (keep_scores_) buf.resize(static_cast<std::size_t>(V));
    const bool fg = call_.reduce.how == Reduction::foreground_mean;
    auto body = [&](std::int64_t bb, std::int64_t be, int t) {
      Scratch& sc = scratch[parallel ? t : 0];
      for (std::int64_t blk = bb; blk < be; ++blk) {
        const std::int64_t v0 = blk * kBlock;
        const int B = static_cast<int>(std::min<std::int64_t>(kBlock, V - v0));
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

    if (call_.slice_axis >= 0) {
      slices(n, buf, parallel);
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
                  ? static_cast<float>(parallel ? top_mean_parallel(buf, top_count(call_.reduce.q, count))
                                                : top_mean(buf, top_count(call_.reduce.q, count)))
                  : reduce_values(call_.reduce, sum, count, mx);
    return first;
  }

  // The reductions of case n's slices along the slice axis, from its voxel scores.
  void slices(std::int64_t n, const std::vector<float>& buf, bool parallel) {
    const std::int64_t S = S_, inner = inner_, outer = call_.layout.voxels / (S * inner);
    auto body = [&](std::int64_t b, std::int64_t e, int) {
      std::vector<float> vals;
      for (std::int64_t s = b; s < e; ++s) {
        vals.clear();
        double sum = 0.0;
        float mx = 0.0f;
        for (std::int64_t o = 0; o < outer; ++o) {
          const float* p = buf.data() + (o * S + s) * inner;
          for (std::int64_t i = 0; i < inner; ++i) {
            if (p[i] < 0.0f) continue;
            vals.push_back(p[i]);
            sum += p[i];
            mx = std::max(mx, p[i]);
          }
        }
        const auto count = static_cast<std::int64_t>(vals.size());
        out_[n * S + s] = call_.reduce.how == Reduction::topq
                              ? static_cast<float>(top_mean(vals, top_count(call_.reduce.q, count)))
                              : reduce_values(call_.reduce, sum, count, mx);
      }
    };
    if (parallel) {
      parallel_chunks(S, 1, call_.layout.voxels, body);
    } else {
      body(0, S, 0);
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
    if (call_.logits) QUARRY_FAIL(where, ": logits contain NaN or Inf");
    QUARRY_FAIL(where, ": probabilities contain NaN, Inf or a negative value");
  }

  const DenseCall& call_;
  Kernel<D, Last> kernel_;
  float* out_;
  std::int64_t S_ = 1, inner_ = 1;
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
