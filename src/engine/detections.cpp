// quarry::score_boxes and quarry::score_multilabel: validate the call (shapes, dtypes, offsets,
// acquisition, reduction) and run it on the CPU backend (src/cpu/detections_cpu.cpp); a fault
// of the backend becomes an Error naming the member, the image and the box (or the row, member
// and label). Reading a detections .npz.
#include "quarry/detections.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/detections_cpu.hpp"
#include "io/files.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {
namespace {

bool float_dtype(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64; }

template <class T>
void widen(const void* p, std::int64_t n, std::vector<std::int64_t>& out) {
  const T* v = static_cast<const T*>(p);
  for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::int64_t>(v[i]);
}

const char* kBoxAcquisitions = "least-confidence, margin, ratio or entropy";
const char* kMultilabelAcquisitions =
    "least-confidence, margin, ratio or entropy, and with a committee [M, N, L] also consensus-entropy, bald, "
    "vote-entropy, kl-max or variation-ratio";

void expect_reduction(Reduction r, const char* what) {
  QUARRY_USAGE_EXPECTS(r == Reduction::mean || r == Reduction::max || r == Reduction::sum, what,
                       " are reduced by mean, max or sum; got ", reduction_name({r, 1.0}));
}

// A contiguous host view of `v` (a copy where it is strided).
const ArrayView& host_contiguous(const ArrayView& v, const std::string& name, Array& copy, ArrayView& view) {
  QUARRY_EXPECTS(!v.on_cuda(), name, ": detections and multi-label outputs are scored on the CPU; pass host memory");
  if (v.contiguous()) return v;
  copy = contiguous_copy(v, name);
  view = copy.view();
  return view;
}

}  // namespace

bool acquisition_is_box(Acquisition a) {
  return a == Acquisition::least_confidence || a == Acquisition::margin || a == Acquisition::ratio ||
         a == Acquisition::entropy;
}

bool acquisition_is_multilabel(Acquisition a, bool committee) {
  if (acquisition_is_box(a)) return true;
  return committee && acquisition_needs_committee(a);
}

std::vector<float> score_boxes(const ArrayView& offsets_in, const ArrayView& probs_in, const ArrayView* objectness_in,
                               Acquisition acq, const BoxOptions& o) {
  const char* name = acquisition_name(acq);
  QUARRY_USAGE_EXPECTS(!acquisition_needs_committee(acq), name,
                       ": committee detections are not supported; detections take ", kBoxAcquisitions);
  QUARRY_USAGE_EXPECTS(acquisition_is_box(acq), name, " is not defined per box (it reads an embedding of the whole "
                       "sample); detections take ", kBoxAcquisitions);
  expect_reduction(o.reduce, "detections");
  QUARRY_USAGE_EXPECTS(std::isfinite(o.empty_score), "the score of an image without boxes must be finite, got ",
                       o.empty_score);
  const std::string off_name = o.input_name + ": " + o.offsets_name, probs_name = o.input_name + ": " + o.probs_name,
                    obj_name = o.input_name + ": " + o.objectness_name;
  Array off_copy, probs_copy, obj_copy;
  ArrayView off_view, probs_view, obj_view;
  const ArrayView& offsets = host_contiguous(offsets_in, off_name, off_copy, off_view);
  const ArrayView& probs = host_contiguous(probs_in, probs_name, probs_copy, probs_view);
  const ArrayView* objectness = objectness_in ? &host_contiguous(*objectness_in, obj_name, obj_copy, obj_view) : nullptr;

  // probs [B, C]
  QUARRY_EXPECTS(probs.rank() == 2, probs_name, ": expected the class probabilities of every box, [B, C], got shape ",
                 shape_string(probs.shape));
  QUARRY_EXPECTS(float_dtype(probs.dtype), probs_name, ": expected float32, float16, bfloat16 or float64, got ",
                 dtype_name(probs.dtype));
  const std::int64_t B = probs.shape[0], C = probs.shape[1];
  QUARRY_EXPECTS(C >= 1 && C <= std::numeric_limits<int>::max(), probs_name,
                 ": the number of classes must be between 1 and 2^31-1, got ", C, " (shape ", shape_string(probs.shape), ")");

  // offsets [N + 1]: integers, 0, non-decreasing, ending at B.
  QUARRY_EXPECTS(offsets.rank() == 1 && offsets.shape[0] >= 1, off_name,
                 ": expected N + 1 integers (image i has the boxes offsets[i] .. offsets[i+1] of ", o.probs_name,
                 "), got shape ", shape_string(offsets.shape));
  QUARRY_EXPECTS(!dtype_is_float(offsets.dtype), off_name, ": expected integers, got ", dtype_name(offsets.dtype));
  const std::int64_t N = offsets.shape[0] - 1;
  std::vector<std::int64_t> off(static_cast<std::size_t>(N + 1));
  switch (offsets.dtype) {
    case DType::u8: widen<std::uint8_t>(offsets.data, N + 1, off); break;
    case DType::i8: widen<std::int8_t>(offsets.data, N + 1, off); break;
    case DType::i16: widen<std::int16_t>(offsets.data, N + 1, off); break;
    case DType::i32: widen<std::int32_t>(offsets.data, N + 1, off); break;
    default: widen<std::int64_t>(offsets.data, N + 1, off); break;
  }
  QUARRY_EXPECTS(off[0] == 0, off_name, ": offsets[0] is ", off[0], ", expected 0");
  for (std::int64_t i = 0; i < N; ++i) {
    const std::int64_t a = off[static_cast<std::size_t>(i)], b = off[static_cast<std::size_t>(i + 1)];
    QUARRY_EXPECTS(b >= a, off_name, ": image ", i, ": offsets[", i + 1, "] = ", b, " is below offsets[", i, "] = ", a,
                   " (offsets must be non-decreasing)");
    QUARRY_EXPECTS(b <= B, off_name, ": image ", i, ": offsets[", i + 1, "] = ", b, " is beyond the ", B, " boxes of ",
                   o.probs_name, " (shape ", shape_string(probs.shape), ")");
  }
  QUARRY_EXPECTS(off[static_cast<std::size_t>(N)] == B, off_name, ": offsets[", N, "] (the last) is ",
                 off[static_cast<std::size_t>(N)], ", expected the number of boxes, ", B, " (the rows of ", o.probs_name,
                 ", shape ", shape_string(probs.shape), ")");
  if (objectness) {
    const bool column = objectness->rank() == 2 && objectness->shape[1] == 1;
    QUARRY_EXPECTS((objectness->rank() == 1 || column) && objectness->shape[0] == B, obj_name,
                   ": expected one value per box, [", B, "], got shape ", shape_string(objectness->shape));
    QUARRY_EXPECTS(float_dtype(objectness->dtype), obj_name, ": expected float32, float16, bfloat16 or float64, got ",
                   dtype_name(objectness->dtype));
  }

  std::vector<float> box(static_cast<std::size_t>(B), 0.0f);
  cpu::BoxCall call;
  call.probs = probs.data;
  call.dtype = probs.dtype;
  call.boxes = B;
  call.classes = C;
  call.objectness = objectness ? objectness->data : nullptr;
  call.objectness_dtype = objectness ? objectness->dtype : DType::f32;
  call.acquisition = acq;
  call.logits = o.logits;
  const bool half = probs.dtype == DType::f16 || probs.dtype == DType::bf16;
  call.tol = static_cast<float>(o.sum_tolerance >= 0 ? o.sum_tolerance : half ? 1e-2 : 1e-3);
  const cpu::InstanceFault f = cpu::score_box_rows(call, box.data());
  if (f.found()) {
    // The image holding box row f.row: the last i with off[i] <= row (empty images before it skipped).
    const std::int64_t image = (std::upper_bound(off.begin(), off.end(), f.row) - off.begin()) - 1;
    const std::string at = ": image " + std::to_string(image) + ", box " +
                           std::to_string(f.row - off[static_cast<std::size_t>(image)]) + " (row " +
                           std::to_string(f.row) + ")";
    if (f.code == cpu::InstanceFault::objectness)
      QUARRY_FAIL(obj_name, at, ": objectness ", f.value, ", expected a value in [0, 1]");
    if (f.code == cpu::InstanceFault::bad_sum)
      QUARRY_FAIL(probs_name, at, ": probabilities sum to ", f.value, ", expected 1 within ", call.tol,
                  " (pass --logits if the input holds logits)");
    if (o.logits) QUARRY_FAIL(probs_name, at, ": logits contain NaN or Inf");
    QUARRY_FAIL(probs_name, at, ": probabilities contain NaN, Inf or a negative value");
  }
  if (o.box_scores) std::copy(box.begin(), box.end(), o.box_scores);
  std::vector<float> out(static_cast<std::size_t>(N), 0.0f);
  cpu::reduce_images(off.data(), N, box.data(), o.reduce, o.empty_score, out.data());
  return out;
}

Detections read_detections(const std::string& path) {
  QUARRY_USAGE_EXPECTS(!npz_member_spec(path), path, ": detections are the whole archive (its members offsets, probs ",
                       "and objectness): give the .npz without :MEMBER");
  const std::vector<std::string> members = npz_members(path);
  auto has = [&](const char* m) { return std::find(members.begin(), members.end(), m) != members.end(); };
  if (!has("offsets") || !has("probs")) {
    std::string list;
    for (const std::string& m : members) list += (list.empty() ? "" : ", ") + m;
    QUARRY_FAIL(path, ": detections need the members offsets ([N + 1] integers) and probs ([B, C]), and optionally ",
                "objectness ([B]); the archive has ", list.empty() ? std::string("no members") : list);
  }
  Detections d;
  d.offsets = read_npz_member(path, "offsets");
  d.probs = read_npz_member(path, "probs");
  d.has_objectness = has("objectness");
  if (d.has_objectness) d.objectness = read_npz_member(path, "objectness");
  return d;
}

std::vector<float> score_multilabel(const ArrayView& input_in, Acquisition acq, const MultilabelOptions& o) {
  const char* name = acquisition_name(acq);
  QUARRY_USAGE_EXPECTS(acquisition_is_multilabel(acq, true), name,
                       " is not defined per label (it reads an embedding of the whole sample); multi-label outputs take ",
                       kMultilabelAcquisitions);
  expect_reduction(o.reduce, "multi-label outputs");
  Array copy;
  ArrayView view;
  const ArrayView& input = host_contiguous(input_in, o.input_name, copy, view);
  QUARRY_EXPECTS(input.rank() == 2 || input.rank() == 3, o.input_name,
                 ": expected multi-label outputs [N, L] or a committee [M, N, L], got shape ", shape_string(input.shape));
  QUARRY_EXPECTS(float_dtype(input.dtype), o.input_name, ": expected float32, float16, bfloat16 or float64, got ",
                 dtype_name(input.dtype));
  const bool committee = input.rank() == 3;
  QUARRY_EXPECTS(committee || !acquisition_needs_committee(acq), name, " needs a committee [M, N, L] (ensemble ",
                 "members or MC-dropout samples); ", o.input_name, " has shape ", shape_string(input.shape));
  cpu::MultilabelCall call;
  call.data = input.data;
  call.dtype = input.dtype;
  call.members = committee ? input.shape[0] : 0;
  call.rows = input.shape[committee ? 1 : 0];
  call.labels = input.shape[committee ? 2 : 1];
  call.acquisition = acq;
  call.logits = o.logits;
  call.reduce = o.reduce;
  QUARRY_EXPECTS(!committee || (call.members >= 1 && call.members <= std::numeric_limits<int>::max()), o.input_name,
                 ": a committee needs between 1 and 2^31-1 members, got shape ", shape_string(input.shape));
  std::vector<float> out(static_cast<std::size_t>(call.rows), 0.0f);
  const cpu::InstanceFault f = cpu::score_multilabel(call, out.data());
  if (f.found()) {
    const std::string at = o.input_name + ": row " + std::to_string(f.row) +
                           (f.member >= 0 ? " of committee member " + std::to_string(f.member) : std::string()) +
                           ", label " + std::to_string(f.label);
    if (o.logits) QUARRY_FAIL(at, ": logit ", f.value, ", expected a finite number");
    QUARRY_FAIL(at, ": probability ", f.value, ", expected a value in [0, 1] (pass --logits if the input holds logits)");
  }
  return out;
}

}  // namespace quarry
