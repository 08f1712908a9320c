// CPU backend of quarry::score: one parallel pass over the rows, each row through the shared
// per-row math in include/quarry/detail/row_math.hpp. Called by src/engine/score.cpp.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/cpu_backend.hpp"
#include "cpu/elem.hpp"

#include "core/rows.hpp"
#include "quarry/detail/row_math.hpp"
#include "quarry/error.hpp"

namespace quarry::cpu {
namespace {

using detail::RowStats;

template <DType D>
float row_norm(const void* base, std::int64_t n, std::int64_t d, bool* finite) {
  using E = Elem<D>;
  const typename E::T* row = static_cast<const typename E::T*>(base) + n * d;
  double s = 0.0;  // double: a float sum of squares overflows for |h| > 1.8e19
  unsigned bad = 0;
  QUARRY_SIMD(reduction(+ : s) reduction(| : bad))
  for (std::int64_t j = 0; j < d; ++j) {
    const float x = E::get(row, j);
    bad |= detail::out_of_range(x, -detail::kFloatMax);
    s += static_cast<double>(x) * x;
  }
  const float norm = static_cast<float>(std::sqrt(s));
  *finite = bad == 0 && norm <= detail::kFloatMax;
  return norm;
}

// ||h_n|| of an embedding row, for egl and badge-norm (1 when there are no embeddings).
float embedding_norm(const ArrayView* emb, std::int64_t n, bool* finite) {
  *finite = true;
  if (!emb) return 1.0f;
  const std::int64_t d = emb->shape[1];
  switch (emb->dtype) {
    case DType::f32: return row_norm<DType::f32>(emb->data, n, d, finite);
    case DType::f64: return row_norm<DType::f64>(emb->data, n, d, finite);
    case DType::f16: return row_norm<DType::f16>(emb->data, n, d, finite);
    case DType::bf16: return row_norm<DType::bf16>(emb->data, n, d, finite);
    default: return 1.0f;  // rejected before the loop
  }
}

// The first bad row a thread saw; merged to the lowest row after the loop.
struct RowFault {
  std::int64_t row = std::numeric_limits<std::int64_t>::max();
  int member = -1;  // committee member, or -1
  int code = detail::kRowOk;
  float sum = 0.0f;
  bool embedding = false;
  void take(std::int64_t r, int m, int c, float s, bool e) {
    if (r < row) *this = {r, m, c, s, e};
  }
};

// Below this many input values a pool is scored on one thread: waking threads costs more.
constexpr std::int64_t kParallelWork = 1 << 15;

using Job = ScoreCall;

// Rows with few classes (C < kSmallC) are too short for a vector loop per row: they are scored
// a tile of rows at a time, with the per-element work (load, validity, x log x, exp, squares)
// done as one flat vector loop over the tile and only short sums per row. The results are the
// RowStats that detail::row_stats computes, finished by the same shared functions.
constexpr int kSmallC = 16;
constexpr int kTileRows = 256;


// Per-tile scratch: the tile's values (x), the element transforms (a, b), and the stats of each
// row as structure-of-arrays so that the per-row finishing loop vectorises too.
struct Tile {
  std::vector<float> x, a, b;
  float s[kTileRows] = {}, t[kTileRows] = {}, w1[kTileRows] = {}, w2[kTileRows] = {};
  float zmax[kTileRows] = {};
  int i1[kTileRows] = {};
  int err[kTileRows] = {};
  explicit Tile(std::int64_t c) : x(static_cast<std::size_t>(kTileRows * c)), a(x.size()), b(x.size()) {}
};

// out[r] = sum_c v[r C + c] for nr rows, a column at a time: the loop over rows vectorises.
void row_sums(const float* v, int nr, int C, float* out) {
  for (int r = 0; r < nr; ++r) out[r] = 0.0f;
  for (int c = 0; c < C; ++c) {
    QUARRY_SIMD()
    for (int r = 0; r < nr; ++r) out[r] += v[r * C + c];
  }
}

float entropy_of(float s, float t) {
  RowStats st;
  st.s = s;
  st.t = t;
  return detail::stats_entropy(st);
}

// The stats of a tile of nr rows (see Tile); returns the rows' weights (p, or exp(z - max z)).
template <unsigned Need, DType D>
const float* tile_stats(const typename Elem<D>::T* rows, int nr, int C, bool logits, Tile& tile) {
  const int m = nr * C;
  float* a = tile.a.data();
  float* b = tile.b.data();
  // Load and validate: probabilities in [0, FLT_MAX], logits finite; NaN fails every
  // comparison. Bitwise, not &&, so that the loop has no branch and vectorises. float32
  // probabilities are read in place; everything else is converted into the tile.
  const bool in_place = D == DType::f32 && !logits;
  float* x = in_place ? nullptr : tile.x.data();
  const float lo = logits ? -detail::kFloatMax : 0.0f;
  unsigned bad = 0;
  if (in_place) {
    const float* v = reinterpret_cast<const float*>(rows);
    QUARRY_SIMD(reduction(| : bad))
    for (int i = 0; i < m; ++i)
      bad |= detail::out_of_range(v[i], lo);
  } else {
    QUARRY_SIMD(reduction(| : bad))
    for (int i = 0; i < m; ++i) {
      const float v = Elem<D>::get(rows, i);
      x[i] = v;
      bad |= detail::out_of_range(v, lo);
    }
  }
  const float* xs = in_place ? reinterpret_cast<const float*>(rows) : x;  // the values
  if (logits) {  // x <- z - max z, per row
    for (int r = 0; r < nr; ++r) {
      float zmax = -detail::kFloatMax;
      for (int c = 0; c < C; ++c) zmax = std::max(zmax, x[r * C + c]);
      for (int c = 0; c < C; ++c) x[r * C + c] = detail::logit_offset(x[r * C + c], zmax);
      tile.zmax[r] = zmax;
    }
    QUARRY_SIMD()
    for (int i = 0; i < m; ++i) {
      const float wi = detail::fast_exp_nonpos(x[i]);
      a[i] = wi;
      b[i] = wi * x[i];  // w log w, exactly
    }
  } else if (Need & detail::kNeedEntropy) {
    QUARRY_SIMD()
    for (int i = 0; i < m; ++i) b[i] = detail::xlogx(xs[i]);
  }
  const float* w = logits ? a : xs;  // the weights
  row_sums(w, nr, C, tile.s);
  if (Need & detail::kNeedEntropy) row_sums(b, nr, C, tile.t);
  if (Need & detail::kNeedArgmax) {  // the first largest value's class, a column at a time
    for (int r = 0; r < nr; ++r) {
      tile.w1[r] = -detail::kFloatMax;
      tile.i1[r] = 0;
    }
    for (int c = 0; c < C; ++c) {
      QUARRY_SIMD()
      for (int r = 0; r < nr; ++r) {
        const float v = xs[r * C + c];
        const bool more = v > tile.w1[r];  // strict: ties keep the lower class
        tile.i1[r] = more ? c : tile.i1[r];
        tile.w1[r] = more ? v : tile.w1[r];
      }
    }
  }
  if (Need & detail::kNeedTop2) {  // the two largest values, also a column at a time
    for (int r = 0; r < nr; ++r) tile.w1[r] = tile.w2[r] = -detail::kFloatMax;
    for (int c = 0; c < C; ++c) {
      QUARRY_SIMD()
      for (int r = 0; r < nr; ++r) {
        const float v = xs[r * C + c];
        const float low = tile.w1[r] < v ? tile.w1[r] : v;
        tile.w2[r] = tile.w2[r] > low ? tile.w2[r] : low;
        tile.w1[r] = tile.w1[r] > v ? tile.w1[r] : v;
      }
    }
    QUARRY_SIMD()
    for (int r = 0; r < nr; ++r) {
      if (logits) {  // on z - max z: w1 = 1, w2 = exp(z2 - z1); C = 1 has no second value
        tile.w1[r] = 1.0f;
        tile.w2[r] = C > 1 ? detail::fast_exp_nonpos(tile.w2[r]) : 0.0f;
      } else {
        tile.w1[r] = tile.w1[r] > 0.0f ? tile.w1[r] : 0.0f;
        tile.w2[r] = tile.w2[r] > 0.0f ? tile.w2[r] : 0.0f;
      }
    }
  }
  for (int r = 0; r < nr; ++r) tile.err[r] = detail::kRowOk;
  if (bad) {  // rare: find which rows hold the bad values
    for (int r = 0; r < nr; ++r)
      for (int c = 0; c < C; ++c)
        if (detail::out_of_range(Elem<D>::get(rows, r * C + c), lo)) tile.err[r] = detail::kRowNonFinite;
  }
  return w;
}

template <Acquisition A, DType D>
void score_small_c(const Job& job, RowFault& fault) {
  constexpr unsigned Need = detail::single_model_need(A);
  using E = Elem<D>;
  const auto* base = static_cast<const typename E::T*>(job.input);
  const int C = static_cast<int>(job.c);
  const bool logits = job.logits;
  const float tol = job.tol;
  const std::int64_t tiles = (job.n + kTileRows - 1) / kTileRows;
  parallel_blocks(tiles, job.work() > kParallelWork, [&](std::int64_t first, std::int64_t last) {
    RowFault local;
    Tile tile(job.c);
    for (std::int64_t ti = first; ti < last; ++ti) {
      const std::int64_t r0 = ti * kTileRows;
      const int nr = static_cast<int>(std::min<std::int64_t>(kTileRows, job.n - r0));
      tile_stats<Need, D>(base + r0 * job.c, nr, C, logits, tile);
      float* out = job.out + r0;
      auto none = [](int) { return 0.0f; };  // these scores do not read the row again
      // No per-row branch: auto-vectorised (an omp simd pragma here would privatise `st` as a
      // per-lane array, which does not vectorise).
      for (int r = 0; r < nr; ++r) {
        RowStats st;
        st.s = tile.s[r];
        st.t = tile.t[r];
        st.w1 = tile.w1[r];
        st.w2 = tile.w2[r];
        out[r] = detail::single_model_score(A, st, none, C, logits, 1.0f);
      }
      for (int r = 0; r < nr; ++r) {
        RowStats st;
        st.s = tile.s[r];
        st.valid = tile.err[r] == detail::kRowOk;
        const int e = detail::check_row(st, logits, tol);
        if (e != detail::kRowOk) {
          local.take(r0 + r, -1, e, st.s, false);
          out[r] = std::numeric_limits<float>::quiet_NaN();
        }
      }
    }
#pragma omp critical(quarry_score_fault)
    fault.take(local.row, local.member, local.code, local.sum, local.embedding);
  });
}

template <unsigned Need, DType D>
void score_single(const Job& job, RowFault& fault) {
  using E = Elem<D>;
  const auto* base = static_cast<const typename E::T*>(job.input);
  const int C = static_cast<int>(job.c);
  parallel_blocks(job.n, job.work() > kParallelWork, [&](std::int64_t first, std::int64_t last) {
    RowFault local;
    for (std::int64_t n = first; n < last; ++n) {
      const typename E::T* row = base + n * job.c;
      auto ld = [row](int c) { return E::get(row, c); };
      const RowStats st = detail::row_stats<Need>(ld, C, job.logits);
      const int e = detail::check_row(st, job.logits, job.tol);
      bool finite = true;
      const float h = embedding_norm(job.emb, n, &finite);
      if (e != detail::kRowOk || !finite) {
        local.take(n, -1, e != detail::kRowOk ? e : detail::kRowNonFinite, st.s, e == detail::kRowOk);
        job.out[n] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      job.out[n] = detail::single_model_score(job.acq, st, ld, C, job.logits, h);
    }
#pragma omp critical(quarry_score_fault)
    fault.take(local.row, local.member, local.code, local.sum, local.embedding);
  });
}

template <DType D>
void score_committee(const Job& job, RowFault& fault) {
  using E = Elem<D>;
  const auto* base = static_cast<const typename E::T*>(job.input);
  const int C = static_cast<int>(job.c), M = static_cast<int>(job.m);
  const std::int64_t member_stride = job.stride_m();
  parallel_blocks(job.n, job.work() > kParallelWork, [&](std::int64_t first, std::int64_t last) {
    RowFault local;
    std::vector<float> pbar(static_cast<std::size_t>(job.c)), votes(static_cast<std::size_t>(job.c));
    for (std::int64_t n = first; n < last; ++n) {
      const typename E::T* row0 = base + n * job.c;
      auto ld = [row0, member_stride](int m, int c) { return E::get(row0 + m * member_stride, c); };
      bool finite = true;
      const float h = embedding_norm(job.emb, n, &finite);
      float s = 0.0f;
      const detail::CommitteeCheck chk = detail::committee_score(
          job.acq, ld, M, C, job.logits, job.tol, h, pbar.data(), votes.data(), &s);
      if (chk.error != detail::kRowOk || !finite) {
        local.take(n, chk.error != detail::kRowOk ? chk.member : -1,
                   chk.error != detail::kRowOk ? chk.error : detail::kRowNonFinite, chk.sum,
                   chk.error == detail::kRowOk);
        job.out[n] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      job.out[n] = s;
    }
#pragma omp critical(quarry_score_fault)
    fault.take(local.row, local.member, local.code, local.sum, local.embedding);
  });
}

// Committee scores for C < kSmallC, a tile of samples at a time. Member m's rows of a tile are
// contiguous ((m N + r0) C), so each member is one single-model tile pass (tile_stats), and the
// committee's quantities accumulate per sample: the mean pbar (or the votes) and the sum of the
// members' entropies. kl-max reads the members a second time, against log pbar.
template <DType D>
void score_committee_small_c(const Job& job, RowFault& fault) {
  using E = Elem<D>;
  const auto* base = static_cast<const typename E::T*>(job.input);
  const int C = static_cast<int>(job.c), M = static_cast<int>(job.m);
  const float fm = static_cast<float>(M);
  const Acquisition acq = job.acq;
  const bool vote_based = acq == Acquisition::vote_entropy || acq == Acquisition::variation_ratio;
  const std::int64_t tiles = (job.n + kTileRows - 1) / kTileRows;
  parallel_blocks(tiles, job.work() > kParallelWork, [&](std::int64_t first, std::int64_t last) {
    RowFault local;
    Tile tile(job.c);
    std::vector<float> acc(static_cast<std::size_t>(kTileRows * C)), tmp(acc.size());
    float hsum[kTileRows], best[kTileRows], sums[kTileRows], terms[kTileRows];
    int bad_code[kTileRows], bad_member[kTileRows];
    float bad_sum[kTileRows];
    auto member_rows = [&](int m, std::int64_t r0) { return base + m * job.stride_m() + r0 * job.c; };
    for (std::int64_t ti = first; ti < last; ++ti) {
      const std::int64_t r0 = ti * kTileRows;
      const int nr = static_cast<int>(std::min<std::int64_t>(kTileRows, job.n - r0));
      const int nv = nr * C;
      std::fill(acc.begin(), acc.begin() + nv, 0.0f);
      for (int r = 0; r < nr; ++r) hsum[r] = 0.0f, bad_code[r] = detail::kRowOk;
      for (int m = 0; m < M; ++m) {
        const float* w = vote_based
            ? tile_stats<detail::kNeedArgmax, D>(member_rows(m, r0), nr, C, job.logits, tile)
            : tile_stats<detail::kNeedEntropy, D>(member_rows(m, r0), nr, C, job.logits, tile);
        for (int r = 0; r < nr; ++r) {
          RowStats st;
          st.s = tile.s[r];
          st.valid = tile.err[r] == detail::kRowOk;
          const int e = detail::check_row(st, job.logits, job.tol);
          if (e != detail::kRowOk && bad_code[r] == detail::kRowOk) {
            bad_code[r] = e;
            bad_member[r] = m;
            bad_sum[r] = st.s;
          }
        }
        if (vote_based) {
          for (int r = 0; r < nr; ++r) acc[r * C + tile.i1[r]] += 1.0f;
          continue;
        }
        for (int r = 0; r < nr; ++r) {
          hsum[r] += entropy_of(tile.s[r], tile.t[r]);
          const float scale = 1.0f / (tile.s[r] * fm);
          for (int c = 0; c < C; ++c) acc[r * C + c] += w[r * C + c] * scale;
        }
      }
      float* out = job.out + r0;
      switch (acq) {
        case Acquisition::vote_entropy: {
          QUARRY_SIMD()
          for (int i = 0; i < nv; ++i) tmp[i] = detail::xlogx(acc[i] / fm);
          row_sums(tmp.data(), nr, C, terms);
          for (int r = 0; r < nr; ++r) out[r] = terms[r] < 0.0f ? -terms[r] : 0.0f;
          break;
        }
        case Acquisition::variation_ratio:
          for (int r = 0; r < nr; ++r) {
            float most = 0.0f;
            for (int c = 0; c < C; ++c) most = std::max(most, acc[r * C + c]);
            out[r] = (fm - most) / fm;  // exact: 0 when all agree
          }
          break;
        case Acquisition::consensus_entropy:
        case Acquisition::bald: {
          QUARRY_SIMD()
          for (int i = 0; i < nv; ++i) tmp[i] = detail::xlogx(acc[i]);
          row_sums(acc.data(), nr, C, sums);
          row_sums(tmp.data(), nr, C, terms);
          for (int r = 0; r < nr; ++r) {
            const float h = entropy_of(sums[r], terms[r]);
            const float mi = h - hsum[r] / fm;
            out[r] = acq == Acquisition::consensus_entropy ? h : (M > 1 && mi > 0.0f) ? mi : 0.0f;
          }
          break;
        }
        default: {  // kl-max: max_m KL(p_m || pbar) = max_m (-H(p_m) - sum_c p_mc log pbar_c)
          QUARRY_SIMD()
          for (int i = 0; i < nv; ++i) acc[i] = acc[i] >= 1.17549435e-38f ? detail::fast_log(acc[i]) : 0.0f;
          for (int r = 0; r < nr; ++r) best[r] = 0.0f;
          for (int m = 0; M > 1 && m < M; ++m) {
            const float* w = tile_stats<detail::kNeedEntropy, D>(member_rows(m, r0), nr, C, job.logits, tile);
            QUARRY_SIMD()
            for (int i = 0; i < nv; ++i) tmp[i] = w[i] * acc[i];
            row_sums(tmp.data(), nr, C, terms);
            for (int r = 0; r < nr; ++r) {
              const float kl = -entropy_of(tile.s[r], tile.t[r]) - terms[r] / tile.s[r];
              best[r] = kl > best[r] ? kl : best[r];
            }
          }
          for (int r = 0; r < nr; ++r) out[r] = best[r];
          break;
        }
      }
      for (int r = 0; r < nr; ++r) {
        if (bad_code[r] != detail::kRowOk) {
          local.take(r0 + r, bad_member[r], bad_code[r], bad_sum[r], false);
          out[r] = std::numeric_limits<float>::quiet_NaN();
        }
      }
    }
#pragma omp critical(quarry_score_fault)
    fault.take(local.row, local.member, local.code, local.sum, local.embedding);
  });
}

template <DType D>
void score_typed(const Job& job, RowFault& fault) {
  if (job.m > 0) {
    if (job.c < kSmallC && acquisition_needs_committee(job.acq)) return score_committee_small_c<D>(job, fault);
    return score_committee<D>(job, fault);
  }
  if (job.c < kSmallC) {
    switch (job.acq) {
      case Acquisition::least_confidence: return score_small_c<Acquisition::least_confidence, D>(job, fault);
      case Acquisition::margin: return score_small_c<Acquisition::margin, D>(job, fault);
      case Acquisition::ratio: return score_small_c<Acquisition::ratio, D>(job, fault);
      case Acquisition::entropy: return score_small_c<Acquisition::entropy, D>(job, fault);
      default: break;  // egl, badge-norm: per row, beside the embedding row they read
    }
  }
  switch (detail::single_model_need(job.acq)) {
    case detail::kNeedTop2: return score_single<detail::kNeedTop2, D>(job, fault);
    case detail::kNeedEntropy: return score_single<detail::kNeedEntropy, D>(job, fault);
    default: return score_single<detail::kNeedSquares | detail::kNeedArgmax, D>(job, fault);
  }
}

[[noreturn]] void raise(const RowFault& f, const Job& job) {
  if (f.embedding)
    QUARRY_FAIL(*job.embeddings_name, ": row ", f.row + job.row_offset, ": embedding contains NaN or Inf, or its norm overflows float");
  const std::string where = *job.input_name + ": row " + std::to_string(f.row + job.row_offset) +
                            (f.member >= 0 ? " of committee member " + std::to_string(f.member) : "");
  if (f.code == detail::kRowBadSum)
    QUARRY_FAIL(where, ": probabilities sum to ", f.sum, ", expected 1 within ", job.tol,
                " (pass --logits if the input holds logits)");
  if (job.logits) QUARRY_FAIL(where, ": logits contain NaN or Inf");
  QUARRY_FAIL(where, ": probabilities contain NaN, Inf or a negative value");
}

}  // namespace

void score(const ScoreCall& job) {
  RowFault fault;
  switch (job.dtype) {
    case DType::f32: score_typed<DType::f32>(job, fault); break;
    case DType::f64: score_typed<DType::f64>(job, fault); break;
    case DType::f16: score_typed<DType::f16>(job, fault); break;
    case DType::bf16: score_typed<DType::bf16>(job, fault); break;
    default: QUARRY_FAIL(*job.input_name, ": unsupported dtype ", dtype_name(job.dtype));
  }
  if (fault.code != detail::kRowOk) raise(fault, job);
}

void explain_row(const ScoreCall& call, std::int64_t row) {
  // The row alone (every member's), scored by this backend: the same checks, the same message.
  const std::size_t es = dtype_size(call.dtype);
  const std::int64_t members = call.m > 0 ? call.m : 1;
  const std::size_t row_bytes = static_cast<std::size_t>(call.c) * es;
  std::vector<unsigned char> rows(static_cast<std::size_t>(members) * row_bytes);
  for (std::int64_t m = 0; m < members; ++m)
    std::memcpy(rows.data() + m * row_bytes,
                static_cast<const unsigned char*>(call.input) + (m * call.stride_m() + row * call.c) * es, row_bytes);
  std::vector<unsigned char> emb_row;
  ArrayView emb_view;
  if (call.emb) {
    const std::size_t eb = static_cast<std::size_t>(call.emb->shape[1]) * dtype_size(call.emb->dtype);
    emb_row.assign(static_cast<const unsigned char*>(call.emb->data) + row * eb,
                   static_cast<const unsigned char*>(call.emb->data) + (row + 1) * eb);
    emb_view = ArrayView{emb_row.data(), call.emb->dtype, {1, call.emb->shape[1]}};
  }
  ScoreCall one = call;
  float out = 0.0f;
  one.input = rows.data();
  one.n = 1;
  one.member_stride = 0;  // the member rows were gathered contiguously
  one.emb = call.emb ? &emb_view : nullptr;
  one.out = &out;
  RowFault fault;
  switch (call.dtype) {
    case DType::f32: score_typed<DType::f32>(one, fault); break;
    case DType::f64: score_typed<DType::f64>(one, fault); break;
    case DType::f16: score_typed<DType::f16>(one, fault); break;
    case DType::bf16: score_typed<DType::bf16>(one, fault); break;
    default: break;
  }
  if (fault.code != detail::kRowOk) {
    fault.row = row;
    raise(fault, call);
  }
  // Another backend flagged a row this one accepts: a sum at the very edge of the tolerance.
  QUARRY_FAIL(*call.input_name, ": row ", row + call.row_offset, ": rejected by the ", "GPU backend (a probability ",
              "sum at the edge of the tolerance ", call.tol, ", or a value out of range)");
}

}  // namespace quarry::cpu

namespace quarry {
void diagnose_row(const ScoreCall& call, std::int64_t row) { cpu::explain_row(call, row); }
}  // namespace quarry

