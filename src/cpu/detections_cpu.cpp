// CPU backend of quarry::score_boxes and quarry::score_multilabel. Every box row and every label
// goes through the shared per-row math of include/quarry/detail/row_math.hpp: a box is a
// probability row of C classes; a label is the two-class row (p, 1 - p), or for logits the row
// (z, 0), whose softmax is (sigmoid z, 1 - sigmoid z). Loops run over boxes, images or samples
// in contiguous blocks per thread (OpenMP); each image's or sample's reduction is summed by one
// thread in a fixed order, so the results do not depend on the number of threads. A block stops
// at its first bad value, and the lowest over the blocks is reported.
#include "cpu/detections_cpu.hpp"

#include <algorithm>
#include <limits>
#include <tuple>

#include "core/parallel.hpp"
#include "cpu/elem.hpp"
#include "quarry/detail/row_math.hpp"

namespace quarry::cpu {
namespace {

using detail::RowStats;

// Below this many values a call runs on the calling thread.
constexpr std::int64_t kWork = 1 << 15;
constexpr unsigned kNeed = detail::kNeedEntropy | detail::kNeedTop2;

float load_float(const void* p, DType t, std::int64_t i) {
  switch (t) {
    case DType::f32: return Elem<DType::f32>::get(static_cast<const float*>(p), i);
    case DType::f64: return Elem<DType::f64>::get(static_cast<const double*>(p), i);
    case DType::f16: return Elem<DType::f16>::get(static_cast<const std::uint16_t*>(p), i);
    case DType::bf16: return Elem<DType::bf16>::get(static_cast<const std::uint16_t*>(p), i);
    default: return std::numeric_limits<float>::quiet_NaN();  // rejected before the loop
  }
}

void take(InstanceFault& into, const InstanceFault& f) {
  if (!f.found()) return;
  if (!into.found() || std::tie(f.row, f.member, f.label) < std::tie(into.row, into.member, into.label)) into = f;
}

template <DType D>
InstanceFault box_rows(const BoxCall& c, float* out) {
  using E = Elem<D>;
  using T = typename E::T;
  const T* base = static_cast<const T*>(c.probs);
  const int C = static_cast<int>(c.classes);
  InstanceFault fault;
  parallel_blocks(c.boxes, c.boxes * c.classes >= kWork, [&](std::int64_t b0, std::int64_t b1) {
    InstanceFault local;
    for (std::int64_t b = b0; b < b1; ++b) {
      const T* row = base + b * C;
      auto ld = [row](int j) { return E::get(row, j); };
      const RowStats st = detail::row_stats<kNeed>(ld, C, c.logits);
      const int code = detail::check_row(st, c.logits, c.tol);
      if (code != detail::kRowOk) {
        local.row = b;
        local.code = code == detail::kRowBadSum ? InstanceFault::bad_sum : InstanceFault::nonfinite;
        local.value = st.s;
        break;
      }
      float s = detail::single_model_score(c.acquisition, st, ld, C, c.logits, 1.0f);
      if (c.objectness) {
        const float o = load_float(c.objectness, c.objectness_dtype, b);
        if (!(o >= 0.0f && o <= 1.0f)) {
          local.row = b;
          local.code = InstanceFault::objectness;
          local.value = o;
          break;
        }
        s *= o;
      }
      out[b] = s;
    }
#pragma omp critical(quarry_box_fault)
    take(fault, local);
  });
  return fault;
}

// The score of one label of sample n: (p, 1 - p) or, for logits, (z, 0).
template <DType D>
float label_score(const MultilabelCall& c, const typename Elem<D>::T* col, std::int64_t member_stride) {
  using E = Elem<D>;
  const bool logits = c.logits;
  float s = 0.0f;
  if (c.members == 0) {
    const float x = E::get(col, 0);
    auto ld = [x, logits](int j) { return j == 0 ? x : (logits ? 0.0f : 1.0f - x); };
    const RowStats st = detail::row_stats<kNeed>(ld, 2, logits);
    return detail::single_model_score(c.acquisition, st, ld, 2, logits, 1.0f);
  }
  auto ld = [col, member_stride, logits](int m, int j) {
    const float x = E::get(col, m * member_stride);
    return j == 0 ? x : (logits ? 0.0f : 1.0f - x);
  };
  float pbar[2], votes[2];
  // The values are validated before (in [0, 1], or finite logits): the two-class rows sum to 1
  // within a few ulp, far inside the tolerance.
  detail::committee_score(c.acquisition, ld, static_cast<int>(c.members), 2, logits, 1e-3f, 1.0f, pbar, votes, &s);
  return s;
}

template <DType D>
InstanceFault multilabel_typed(const MultilabelCall& c, float* out) {
  using E = Elem<D>;
  using T = typename E::T;
  const T* base = static_cast<const T*>(c.data);
  const std::int64_t N = c.rows, L = c.labels, MM = c.members > 0 ? c.members : 1;
  InstanceFault fault;
  parallel_blocks(N, N * L * MM >= kWork, [&](std::int64_t n0, std::int64_t n1) {
    InstanceFault local;
    for (std::int64_t n = n0; n < n1 && !local.found(); ++n) {
      for (std::int64_t m = 0; m < MM && !local.found(); ++m) {
        const T* row = base + (m * N + n) * L;
        for (std::int64_t l = 0; l < L; ++l) {
          const float x = E::get(row, l);
          const bool bad = c.logits ? !(x >= -detail::kFloatMax && x <= detail::kFloatMax) : !(x >= 0.0f && x <= 1.0f);
          if (bad) {
            local.row = n;
            local.member = c.members > 0 ? m : -1;
            local.label = l;
            local.code = c.logits ? InstanceFault::nonfinite : InstanceFault::out_of_unit;
            local.value = x;
            break;
          }
        }
      }
      if (local.found()) break;
      double sum = 0.0;
      float best = 0.0f;
      for (std::int64_t l = 0; l < L; ++l) {
        const float s = label_score<D>(c, base + n * L + l, N * L);
        sum += s;
        best = s > best ? s : best;
      }
      out[n] = L == 0                         ? 0.0f
               : c.reduce == Reduction::max ? best
               : c.reduce == Reduction::sum ? static_cast<float>(sum)
                                             : static_cast<float>(sum / static_cast<double>(L));
    }
#pragma omp critical(quarry_multilabel_fault)
    take(fault, local);
  });
  return fault;
}

}  // namespace

InstanceFault score_box_rows(const BoxCall& call, float* out) {
  switch (call.dtype) {
    case DType::f32: return box_rows<DType::f32>(call, out);
    case DType::f64: return box_rows<DType::f64>(call, out);
    case DType::f16: return box_rows<DType::f16>(call, out);
    case DType::bf16: return box_rows<DType::bf16>(call, out);
    default: return {};  // rejected by the engine
  }
}

void reduce_images(const std::int64_t* offsets, std::int64_t images, const float* box, Reduction how, float empty,
                   float* out) {
  const std::int64_t work = images > 0 ? offsets[images] + images : 0;
  parallel_blocks(images, work >= kWork, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      const std::int64_t lo = offsets[i], hi = offsets[i + 1];
      if (lo == hi) {
        out[i] = empty;
        continue;
      }
      if (how == Reduction::max) {
        float best = box[lo];
        for (std::int64_t b = lo + 1; b < hi; ++b) best = box[b] > best ? box[b] : best;
        out[i] = best;
        continue;
      }
      double sum = 0.0;
      for (std::int64_t b = lo; b < hi; ++b) sum += box[b];
      out[i] = static_cast<float>(how == Reduction::sum ? sum : sum / static_cast<double>(hi - lo));
    }
  });
}

InstanceFault score_multilabel(const MultilabelCall& call, float* out) {
  switch (call.dtype) {
    case DType::f32: return multilabel_typed<DType::f32>(call, out);
    case DType::f64: return multilabel_typed<DType::f64>(call, out);
    case DType::f16: return multilabel_typed<DType::f16>(call, out);
    case DType::bf16: return multilabel_typed<DType::bf16>(call, out);
    default: return {};
  }
}

}  // namespace quarry::cpu
