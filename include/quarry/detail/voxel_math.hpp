// Per-voxel acquisition math for dense outputs, shared by the CPU backend (src/cpu/dense_cpu.cpp)
// and a CUDA kernel. A voxel's C class values are far apart in memory (channel-first), so its
// row is read one class at a time: the statistics of row_math.hpp's RowStats are accumulated in
// a streaming form (one update per class value), and the final score is row_math's
// single_model_score on them. On the host, the updates run over a block of voxels at once (one
// class after the other), which vectorises across voxels.
#pragma once

#include "quarry/detail/row_math.hpp"

namespace quarry::detail {

/// Probabilities: one class value x of class c. s = sum, t = sum x log x, w1 >= w2 the two
/// largest values (equal values count twice), i1 the lowest class holding w1.
QUARRY_HD void voxel_prob_add(float x, int c, float& s, float& t, float& w1, float& w2, int& i1,
                              unsigned& bad) {
  bad |= out_of_range(x, 0.0f);
  s += x;
  t += xlogx(x);
  const float lo = x < w1 ? x : w1;
  w2 = lo > w2 ? lo : w2;
  i1 = x > w1 ? c : i1;
  w1 = x > w1 ? x : w1;
}

/// Logits, first pass: the largest logit (and the two largest, and the argmax).
QUARRY_HD void voxel_logit_max(float z, int c, float& w1, float& w2, int& i1, unsigned& bad) {
  bad |= out_of_range(z, -kFloatMax);
  const float lo = z < w1 ? z : w1;
  w2 = lo > w2 ? lo : w2;
  i1 = z > w1 ? c : i1;
  w1 = z > w1 ? z : w1;
}

/// Logits, second pass: w = exp(z - zmax); s = sum w, t = sum w log w.
QUARRY_HD void voxel_logit_add(float z, float zmax, float& s, float& t) {
  const float d = logit_offset(z, zmax);
  const float w = fast_exp_nonpos(d);
  s += w;
  t += w * d;
}

/// The RowStats of a voxel from its accumulated values (probabilities: w1, w2 as accumulated;
/// logits: w1, w2 are the two largest logits, turned into weights here).
QUARRY_HD RowStats voxel_stats(float s, float t, float w1, float w2, int i1, unsigned bad, int C, bool logits) {
  RowStats st;
  st.s = s;
  st.t = t;
  st.i1 = i1;
  st.valid = bad == 0;
  if (logits) {
    st.zmax = w1;
    st.w1 = 1.0f;
    st.w2 = C > 1 ? fast_exp_nonpos(logit_offset(w2, w1)) : 0.0f;
  } else {
    st.w1 = w1 < 0.0f ? 0.0f : w1;
    st.w2 = (C > 1) & (w2 > 0.0f) ? w2 : 0.0f;
  }
  return st;
}

/// A single-model score of a voxel (least-confidence, margin, ratio, entropy).
QUARRY_HD float voxel_score(Acquisition a, const RowStats& st, int C, bool logits) {
  auto none = [](int) { return 0.0f; };  // read only by egl, which is not defined per voxel
  return single_model_score(a, st, none, C, logits, 1.0f);
}

/// The same from the accumulated values, with the acquisition fixed at compile time and no
/// branch, so that a loop over voxels vectorises (GCC keeps the switch of single_model_score and
/// the RowStats of voxel_stats as control flow). The formulas are those two functions';
/// tests/test_dense.cpp holds the results to the double reference.
template <Acquisition A, bool Logits>
QUARRY_HD float voxel_score(float s, float t, float w1, float w2, int C) {
  if constexpr (Logits) {
    w2 = C > 1 ? fast_exp_nonpos(logit_offset(w2, w1)) : 0.0f;
    w1 = 1.0f;
  } else {
    w1 = w1 < 0.0f ? 0.0f : w1;
    w2 = w2 > 0.0f ? w2 : 0.0f;  // C = 1 leaves w2 at -kFloatMax
  }
  const float rest = s - w1;
  if constexpr (A == Acquisition::least_confidence) {
    return rest / s;
  } else if constexpr (A == Acquisition::margin) {
    const float m = (rest + w2) / s;
    return m < 1.0f ? m : 1.0f;
  } else if constexpr (A == Acquisition::ratio) {
    const float d = w1 > 0.0f ? w1 : 1.0f;
    return w1 > 0.0f ? w2 / d : 0.0f;
  } else {
    const bool pos = s >= 1.17549435e-38f;
    const float sp = pos ? s : 1.0f;
    const float h = fast_log(sp) - t / sp;
    return pos & (h > 0.0f) ? h : 0.0f;
  }
}

// How many voxel scores topq:q averages over n counted voxels: ceil(q n), at least 1 of a
// non-empty set, at most n. q n is computed in double; a product within 4 units in the last
// place above an integer is that integer (0.01 * 300 is 3.0000000000000004 in double, and 3
// voxels are meant), anything further above counts one more.
QUARRY_HD long long top_count(double q, long long n) {
  if (n <= 0) return 0;
  const double x = q * static_cast<double>(n);
  auto m = static_cast<long long>(x);  // floor: x >= 0
  if (static_cast<double>(m) < x && x - static_cast<double>(m) > x * 4.0 * 2.220446049250313e-16) ++m;
  return m < 1 ? 1 : m > n ? n : m;
}

}  // namespace quarry::detail
