// Per-row acquisition math, shared by the CPU backend (src/cpu) and the CUDA kernels (kernels/).
// One row of C values is read through a loader `ld(c) -> float` (committee rows through
// `ld(m, c)`), so the same code serves float32/float16/bfloat16 inputs on either backend.
// Loaders are small (a pointer) and passed by value: through a reference, GCC cannot prove the
// row pointer constant inside a loop and vectorises the loads as gathers (6x slower at C=1000).
// The definitions are docs/acquisition.md's; sums run in float blocks added in double (kSumBlock).
//
// A row is worked on by one thread or by several together, described by a `Lanes` policy:
// thread `first()` of the group handles classes first, first + step, first + 2 step, ... and
// the group combines partial results with max/min/sum/any. The CPU backend and the
// thread-per-row CUDA kernels use Serial (the whole row, no combining, loops the compiler
// vectorises); the warp- and block-per-row CUDA kernels use the splits of kernels/lanes.cuh.
// Every combine is reached by all threads of a group (no early exit before one), and a thread
// writes scratch (committee pbar/votes) only for the classes it owns, so the math below is the
// same code on both backends.
#pragma once

#include <cmath>

#include "quarry/acquisition.hpp"
#include "quarry/detail/fastmath.hpp"
#include "quarry/detail/hd.hpp"

namespace quarry::detail {

/// One thread holds the whole row.
struct Serial {
  QUARRY_HD int first() const { return 0; }
  QUARRY_HD int step() const { return 1; }
  QUARRY_HD bool owns(int) const { return true; }
  QUARRY_HD float max(float v) const { return v; }
  QUARRY_HD float sum(float v) const { return v; }
  QUARRY_HD int sum(int v) const { return v; }
  QUARRY_HD int min(int v) const { return v; }
  QUARRY_HD unsigned any(unsigned v) const { return v; }
};

// What a row pass must compute (compile-time, so unused work is not done).
enum : unsigned { kNeedEntropy = 1u, kNeedTop2 = 2u, kNeedSquares = 4u, kNeedArgmax = 8u };

/// A probability row in terms of its unnormalised weights w_c: w = p for probability input,
/// w = exp(z - max z) for logits. Then p_c = w_c / s and H = log s - t / s.
struct RowStats {
  float s = 0.0f;     // sum w
  float t = 0.0f;     // sum w log w
  float u = 0.0f;     // sum w^2
  float w1 = 0.0f;    // largest weight
  float w2 = 0.0f;    // second largest weight (0 when C = 1)
  float zmax = 0.0f;  // logits: max z
  int i1 = 0;         // argmax, lowest class index among equal maxima (with kNeedArgmax)
  bool valid = true;  // every value finite (and >= 0 for probabilities)
};

/// Row problems, reported by the backends with the row (and member) index.
enum RowError : int { kRowOk = 0, kRowNonFinite = 1, kRowBadSum = 2 };

/// z - max z, clamped at -100 (where exp is 0 in float) so that huge finite logits never make
/// -inf, and w (z - max z) stays 0 rather than 0 * -inf.
QUARRY_HD float logit_offset(float z, float zmax) {
  const float d = z - zmax;
  return d > -100.0f ? d : -100.0f;
}

/// The two largest values of a row (w1 >= w2; equal values count twice), as passes that each
/// vectorise: the maximum, then how often it occurs and the largest value below it.
template <class Load, class Lanes = Serial>
QUARRY_HD void top2(Load ld, int C, RowStats* st, Lanes L = {}) {
  const int c0 = L.first(), dc = L.step();
  float a = -kFloatMax;
  QUARRY_SIMD(reduction(max : a))
  for (int c = c0; c < C; c += dc) a = ld(c) > a ? ld(c) : a;
  a = L.max(a);
  float b = -kFloatMax;
  int count = 0;
  QUARRY_SIMD(reduction(max : b) reduction(+ : count))
  for (int c = c0; c < C; c += dc) {
    const float x = ld(c);
    count += x == a ? 1 : 0;
    b = (x < a && x > b) ? x : b;
  }
  count = L.sum(count);
  b = L.max(b);
  st->w1 = a;
  st->w2 = count > 1 ? a : b;
}

/// top2 and the argmax (the lowest index among equal maxima).
template <class Load, class Lanes = Serial>
QUARRY_HD void top2_argmax(Load ld, int C, RowStats* st, Lanes L = {}) {
  top2(ld, C, st, L);
  const float a = st->w1;
  const int c0 = L.first(), dc = L.step();
  int first = C;
  QUARRY_SIMD(reduction(min : first))
  for (int c = c0; c < C; c += dc) first = (ld(c) == a && c < first) ? c : first;
  first = L.min(first);
  st->i1 = first < C ? first : 0;
}

// Sums over classes run in blocks of kSumBlock steps of a lane: each block is summed in float
// from zero (vectorised on the host), and the block sums are added in double. A float sum of n
// terms in one run is off by up to n * 2^-24 of its magnitude, and rows whose terms are all
// alike (a uniform row of 65537 classes) come close to that bound; in blocks the error grows
// with kSumBlock / (vector width) + C / kSumBlock instead. The host runs a row in one lane; a
// GPU lane takes every 32nd or 256th class, so up to 8192 classes its sum is one block, as a
// single float run was. Exact sums that cancel (kl-max of equal members, bald of a uniform
// committee) then cancel on both backends to within their tolerances.
constexpr int kSumBlock = 256;
QUARRY_HD int block_end(int b, int dc, int C) {
  const long long e = static_cast<long long>(b) + static_cast<long long>(dc) * kSumBlock;
  return e < C ? static_cast<int>(e) : C;
}

template <unsigned Need, class Load, class Lanes = Serial>
QUARRY_HD RowStats row_stats(Load ld, int C, bool logits, Lanes L = {}) {
  RowStats st;
  const int c0 = L.first(), dc = L.step();
  unsigned bad = 0;
  if (!logits) {
    double s = 0.0, t = 0.0, u = 0.0;
    for (int b = c0; b < C; b = block_end(b, dc, C)) {
      const int e = block_end(b, dc, C);
      float bs = 0.0f, bt = 0.0f, bu = 0.0f;
      QUARRY_SIMD(reduction(+ : bs, bt, bu) reduction(| : bad))
      for (int c = b; c < e; c += dc) {
        const float x = ld(c);
        bad |= out_of_range(x, 0.0f);
        bs += x;
        if (Need & kNeedEntropy) bt += xlogx(x);
        if (Need & kNeedSquares) bu += x * x;
      }
      s += bs, t += bt, u += bu;
    }
    st.s = L.sum(static_cast<float>(s));
    st.t = (Need & kNeedEntropy) ? L.sum(static_cast<float>(t)) : 0.0f;
    st.u = (Need & kNeedSquares) ? L.sum(static_cast<float>(u)) : 0.0f;
    if (Need & kNeedArgmax) {
      top2_argmax(ld, C, &st, L);
    } else if (Need & kNeedTop2) {
      top2(ld, C, &st, L);
    }
    st.w1 = st.w1 < 0.0f ? 0.0f : st.w1;  // C = 1: no second value
    st.w2 = st.w2 < 0.0f ? 0.0f : st.w2;
  } else {
    float zmax = -kFloatMax;
    QUARRY_SIMD(reduction(max : zmax) reduction(| : bad))
    for (int c = c0; c < C; c += dc) {
      const float x = ld(c);
      bad |= out_of_range(x, -kFloatMax);
      zmax = x > zmax ? x : zmax;
    }
    zmax = L.max(zmax);
    double s = 0.0, t = 0.0, u = 0.0;
    for (int b = c0; b < C; b = block_end(b, dc, C)) {
      const int e = block_end(b, dc, C);
      float bs = 0.0f, bt = 0.0f, bu = 0.0f;
      QUARRY_SIMD(reduction(+ : bs, bt, bu))
      for (int c = b; c < e; c += dc) {
        const float d = logit_offset(ld(c), zmax);
        const float w = fast_exp_nonpos(d);
        bs += w;
        if (Need & kNeedEntropy) bt += w * d;  // w log w, exactly, without a log
        if (Need & kNeedSquares) bu += w * w;
      }
      s += bs, t += bt, u += bu;
    }
    st.s = L.sum(static_cast<float>(s));
    st.t = (Need & kNeedEntropy) ? L.sum(static_cast<float>(t)) : 0.0f;
    st.u = (Need & kNeedSquares) ? L.sum(static_cast<float>(u)) : 0.0f;
    st.zmax = zmax;
    if (Need & (kNeedTop2 | kNeedArgmax)) {
      // The top two logits z1 >= z2 give w1 = 1 and w2 = exp(z2 - z1).
      if (Need & kNeedArgmax) {
        top2_argmax(ld, C, &st, L);
      } else {
        top2(ld, C, &st, L);
      }
      st.w2 = C > 1 ? fast_exp_nonpos(logit_offset(st.w2, zmax)) : 0.0f;
      st.w1 = 1.0f;
    }
  }
  st.valid = L.any(bad) == 0;
  return st;
}

/// Entropy (nats) of the distribution p = w / s.
QUARRY_HD float stats_entropy(const RowStats& st) {
  const bool pos = st.s >= 1.17549435e-38f;
  const float s = pos ? st.s : 1.0f;
  const float h = fast_log(s) - st.t / s;  // branch-free, so that a loop over rows vectorises
  return (pos && h > 0.0f) ? h : 0.0f;
}

/// Validates a row; for probabilities the sum must be 1 within `tol`.
QUARRY_HD int check_row(const RowStats& st, bool logits, float tol) {
  if (!st.valid) return kRowNonFinite;
  if (!logits && !(st.s >= 1.0f - tol && st.s <= 1.0f + tol)) return kRowBadSum;
  return kRowOk;
}

/// What a single-model acquisition needs from its row pass.
constexpr unsigned single_model_need(Acquisition a) {
  switch (a) {
    case Acquisition::least_confidence:
    case Acquisition::margin:
    case Acquisition::ratio: return kNeedTop2;
    case Acquisition::entropy:
    case Acquisition::consensus_entropy: return kNeedEntropy;
    case Acquisition::egl:
    case Acquisition::badge_norm: return kNeedSquares | kNeedArgmax;
    default: return kNeedEntropy | kNeedTop2;
  }
}

/// The final score of a single-model acquisition from the row's stats. `ld` is read again only
/// by egl (the sum over labels). `hnorm` is ||h|| of the sample's embedding (egl, badge-norm).
template <class Load, class Lanes = Serial>
QUARRY_HD float single_model_score(Acquisition a, const RowStats& st, Load ld, int C,
                                   bool logits, float hnorm, Lanes L = {}) {
  const float inv_s = 1.0f / st.s;
  // Formed from the weights directly: a sum of non-negative floats is >= each term, so
  // s - w1 >= 0 and the scores stay in range (1 - w1 * (1/s) can round below 0).
  const float rest = st.s - st.w1;
  switch (a) {
    case Acquisition::least_confidence: return rest / st.s;
    case Acquisition::margin: {
      const float m = (rest + st.w2) / st.s;
      return m < 1.0f ? m : 1.0f;
    }
    case Acquisition::ratio: return st.w1 > 0.0f ? st.w2 / st.w1 : 0.0f;
    case Acquisition::entropy:
    case Acquisition::consensus_entropy: return stats_entropy(st);
    case Acquisition::egl:
    case Acquisition::badge_norm: {
      // ||p - e_y||^2 = sum_c p_c^2 - 2 p_y + 1 cancels catastrophically when p_y ~ 1, so for
      // the argmax y1 it is formed from the other classes instead:
      //   ||p - e_y1||^2 = (sum_{c != y1} w_c^2 + (sum_{c != y1} w_c)^2) / s^2.
      // For every other y, p_y <= 1/2 and the first form is accurate.
      // The weight of class c, with the logits test outside the loops so that they vectorise.
      const float zmax = st.zmax;
      auto weight = [ld, zmax](int c, bool from_logits) {
        return from_logits ? fast_exp_nonpos(logit_offset(ld(c), zmax)) : ld(c);
      };
      const int c0 = L.first(), dc = L.step();
      double rest_d = 0.0, rest2_d = 0.0;
      for (int b = c0; b < C; b = block_end(b, dc, C)) {
        const int e = block_end(b, dc, C);
        float br = 0.0f, br2 = 0.0f;
        if (logits) {
          QUARRY_SIMD(reduction(+ : br, br2))
          for (int c = b; c < e; c += dc) {
            const float keep = c == st.i1 ? 0.0f : weight(c, true);
            br += keep;
            br2 += keep * keep;
          }
        } else {
          QUARRY_SIMD(reduction(+ : br, br2))
          for (int c = b; c < e; c += dc) {
            const float keep = c == st.i1 ? 0.0f : weight(c, false);
            br += keep;
            br2 += keep * keep;
          }
        }
        rest_d += br, rest2_d += br2;
      }
      const float rest = L.sum(static_cast<float>(rest_d));
      const float rest2 = L.sum(static_cast<float>(rest2_d));
      const float g_top = std::sqrt(rest2 + rest * rest) * inv_s;
      if (a == Acquisition::badge_norm) return hnorm * g_top;
      const float s2 = st.u * inv_s * inv_s;
      double acc_d = 0.0;
      auto term = [&](int y, float w) {  // p_y ||p - e_y|| for y != y1
        const float py = w * inv_s;
        const float g2 = s2 - 2.0f * py + 1.0f;
        return y == st.i1 ? 0.0f : py * std::sqrt(g2 > 0.0f ? g2 : 0.0f);
      };
      for (int b = c0; b < C; b = block_end(b, dc, C)) {
        const int e = block_end(b, dc, C);
        float ba = 0.0f;
        if (logits) {
          QUARRY_SIMD(reduction(+ : ba))
          for (int y = b; y < e; y += dc) ba += term(y, weight(y, true));
        } else {
          QUARRY_SIMD(reduction(+ : ba))
          for (int y = b; y < e; y += dc) ba += term(y, weight(y, false));
        }
        acc_d += ba;
      }
      const float acc = st.w1 * inv_s * g_top + L.sum(static_cast<float>(acc_d));
      return hnorm * acc;
    }
    default: return 0.0f;  // committee scores are not single-model scores
  }
}

/// Result of a committee row: an error code (RowError) and the member that caused it.
struct CommitteeCheck {
  int error = kRowOk;
  int member = 0;
  float sum = 1.0f;
};

/// Scores one sample of a committee [M, N, C] (ld(m, c) reads member m's row of this sample).
/// `pbar` and `votes` are caller-provided scratch of C floats each (shared by the group of
/// lanes; each lane touches only its own classes). Single-model acquisitions are computed on
/// the committee mean pbar.
template <class LoadM, class Lanes = Serial>
QUARRY_HD CommitteeCheck committee_score(Acquisition a, LoadM ld, int M, int C,
                                         bool logits, float tol, float hnorm, float* pbar,
                                         float* votes, float* out, Lanes L = {}) {
  CommitteeCheck chk;
  const int c0 = L.first(), dc = L.step();
  const bool vote_based = a == Acquisition::vote_entropy || a == Acquisition::variation_ratio;
  for (int c = c0; c < C; c += dc) {
    pbar[c] = 0.0f;
    votes[c] = 0.0f;
  }
  float sum_h = 0.0f;
  for (int m = 0; m < M; ++m) {
    auto row = [&](int c) { return ld(m, c); };
    const RowStats st = row_stats<kNeedEntropy | kNeedArgmax>(row, C, logits, L);
    const int e = check_row(st, logits, tol);
    if (e != kRowOk) {  // the same on every lane: st is combined
      chk.error = e;
      chk.member = m;
      chk.sum = st.s;
      return chk;
    }
    if (L.owns(st.i1)) votes[st.i1] += 1.0f;
    sum_h += stats_entropy(st);
    if (!vote_based) {
      const float scale = 1.0f / (st.s * static_cast<float>(M));
      QUARRY_SIMD()
      for (int c = c0; c < C; c += dc) {
        const float w = logits ? fast_exp_nonpos(logit_offset(ld(m, c), st.zmax)) : ld(m, c);
        pbar[c] += w * scale;
      }
    }
  }
  const float inv_m = 1.0f / static_cast<float>(M);
  switch (a) {
    case Acquisition::vote_entropy: {
      float h = 0.0f;
      for (int c = c0; c < C; c += dc) h -= xlogx(votes[c] / static_cast<float>(M));
      h = L.sum(h);
      *out = h > 0.0f ? h : 0.0f;
      return chk;
    }
    case Acquisition::variation_ratio: {
      float best = 0.0f;
      for (int c = c0; c < C; c += dc) best = votes[c] > best ? votes[c] : best;
      best = L.max(best);
      *out = (static_cast<float>(M) - best) / static_cast<float>(M);  // exact: 0 when all agree
      return chk;
    }
    case Acquisition::bald: {
      auto pb = [&](int c) { return pbar[c]; };
      const float h = stats_entropy(row_stats<kNeedEntropy>(pb, C, false, L));
      const float mi = h - sum_h * inv_m;
      *out = (M > 1 && mi > 0.0f) ? mi : 0.0f;  // one member: no disagreement, exactly
      return chk;
    }
    case Acquisition::kl_max: {
      if (M == 1) {  // a member against itself: exactly 0, not rounding noise
        *out = 0.0f;
        return chk;
      }
      for (int c = c0; c < C; c += dc) pbar[c] = pbar[c] >= 1.17549435e-38f ? fast_log(pbar[c]) : 0.0f;
      float best = 0.0f;
      for (int m = 0; m < M; ++m) {
        auto row = [&](int c) { return ld(m, c); };
        const RowStats st = row_stats<kNeedEntropy>(row, C, logits, L);
        double cross_d = 0.0;  // sum_c w_c log pbar_c
        for (int b = c0; b < C; b = block_end(b, dc, C)) {
          const int e = block_end(b, dc, C);
          float bc = 0.0f;
          QUARRY_SIMD(reduction(+ : bc))
          for (int c = b; c < e; c += dc) {
            const float w = logits ? fast_exp_nonpos(logit_offset(ld(m, c), st.zmax)) : ld(m, c);
            bc += w * pbar[c];
          }
          cross_d += bc;
        }
        const float cross = L.sum(static_cast<float>(cross_d));
        // KL(p_m || pbar) = sum p log p - sum p log pbar = -H(p_m) - cross / s
        const float kl = -stats_entropy(st) - cross / st.s;
        best = kl > best ? kl : best;
      }
      *out = best;
      return chk;
    }
    default: {
      auto pb = [&](int c) { return pbar[c]; };
      const RowStats st =
          row_stats<kNeedEntropy | kNeedTop2 | kNeedArgmax | kNeedSquares>(pb, C, false, L);
      *out = single_model_score(a, st, pb, C, false, hnorm, L);
      return chk;
    }
  }
}

}  // namespace quarry::detail
