// quarry::score_dense and friends: validates a dense call (layout, options, mask) and runs it
// on the CPU backend (src/cpu/dense_cpu.cpp). Slice selection under a per-case cap.
#include "quarry/dense.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>

#include "cpu/dense_cpu.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/cuda_backend.hpp"
#endif
#include "quarry/error.hpp"

namespace quarry {

ReduceSpec parse_reduction(std::string_view text) {
  ReduceSpec r;
  if (text == "mean") return r;
  if (text == "max") return {Reduction::max, 0.0};
  if (text == "sum") return {Reduction::sum, 0.0};
  if (text == "foreground-mean") return {Reduction::foreground_mean, 0.0};
  if (text.substr(0, 5) == "topq:") {
    const std::string q(text.substr(5));
    char* end = nullptr;
    const double v = q.empty() ? 0.0 : std::strtod(q.c_str(), &end);
    QUARRY_USAGE_EXPECTS(!q.empty() && end && *end == '\0' && v > 0.0 && v <= 1.0, "reduction '", std::string(text),
                         "': topq:Q takes a fraction Q in (0, 1], e.g. topq:0.01 (the mean of the top 1% of voxel scores)");
    return {Reduction::topq, v};
  }
  QUARRY_USAGE_FAIL("reduction '", std::string(text), "': expected mean, max, sum, topq:Q or foreground-mean");
}

std::string reduction_name(const ReduceSpec& r) {
  switch (r.how) {
    case Reduction::mean: return "mean";
    case Reduction::max: return "max";
    case Reduction::sum: return "sum";
    case Reduction::topq: {
      // The shortest text that reads back as q: 0.01, 1e-09.
      char buf[32];
      for (int digits = 1; digits <= 17; ++digits) {
        std::snprintf(buf, sizeof buf, "%.*g", digits, r.q);
        if (std::strtod(buf, nullptr) == r.q) break;
      }
      return std::string("topq:") + buf;
    }
    case Reduction::foreground_mean: return "foreground-mean";
  }
  return "mean";
}

namespace {
// Patches of size `size` along an axis of `extent` voxels (no overflow for huge sizes).
std::int64_t tiles(std::int64_t extent, std::int64_t size) {
  if (size <= 0) return 1;  // not tiled (sizes are checked before use)
  return extent <= 0 ? 0 : 1 + (extent - 1) / size;
}

// One size for every axis, or one per axis.
std::vector<std::int64_t> patch_sizes(const std::vector<std::int64_t>& patch, std::size_t rank) {
  return patch.size() == 1 ? std::vector<std::int64_t>(rank, patch[0]) : patch;
}
}  // namespace

std::int64_t DenseLayout::patches(const std::vector<std::int64_t>& given) const {
  const std::vector<std::int64_t> patch = patch_sizes(given, spatial.size());
  if (patch.empty() || patch.size() != spatial.size()) return 1;
  std::int64_t r = 1;
  for (std::size_t a = 0; a < patch.size(); ++a) r *= tiles(spatial[a], patch[a]);
  return r;
}

std::vector<std::int64_t> patch_origin(const std::vector<std::int64_t>& spatial, const std::vector<std::int64_t>& given,
                                       std::int64_t r) {
  const std::vector<std::int64_t> patch = patch_sizes(given, spatial.size());
  QUARRY_USAGE_EXPECTS(patch.size() == spatial.size(), "patch size ", shape_string(given), ": the grid ",
                       shape_string(spatial), " has ", spatial.size(), " axes");
  std::int64_t total = 1;
  for (std::size_t a = 0; a < patch.size(); ++a) {
    QUARRY_USAGE_EXPECTS(patch[a] >= 1, "patch size ", shape_string(given), ": sizes must be >= 1");
    total *= tiles(spatial[a], patch[a]);
  }
  QUARRY_USAGE_EXPECTS(r >= 0 && r < total, "patch ", r, ": the grid ", shape_string(spatial), " has ", total,
                       " patches of ", shape_string(patch), total > 0 ? " (0.." + std::to_string(total - 1) + ")" : "");
  std::vector<std::int64_t> at(spatial.size(), 0);
  for (std::size_t a = spatial.size(); a-- > 0;) {
    const std::int64_t g = tiles(spatial[a], patch[a]);
    at[a] = (r % g) * patch[a];
    r /= g;
  }
  return at;
}

std::int64_t DenseLayout::slices(int axis) const {
  return axis >= 0 && static_cast<std::size_t>(axis) < spatial.size() ? spatial[static_cast<std::size_t>(axis)] : 1;
}

DenseLayout dense_layout(const ArrayView& input, bool committee, bool channels_last, const std::string& name) {
  const int lead = committee ? 2 : 1;  // [M,] N before the classes (or the grid)
  QUARRY_EXPECTS(input.rank() >= lead + 2, name, name.empty() ? "" : ": ", "dense outputs are ", committee ? "[M, N, C, spatial...]" : "[N, C, spatial...]",
                 channels_last ? " with classes last" : "", " (at least one spatial axis); got shape ",
                 shape_string(input.shape), input.rank() == lead + 1 ? ": that is a pool of rows, scored without --reduce" : "");
  DenseLayout l;
  l.members = committee ? input.shape[0] : 1;
  l.cases = input.shape[static_cast<std::size_t>(lead - 1)];
  l.channels_last = channels_last;
  const std::size_t class_axis = channels_last ? input.shape.size() - 1 : static_cast<std::size_t>(lead);
  l.classes = input.shape[class_axis];
  for (std::size_t a = static_cast<std::size_t>(lead); a < input.shape.size(); ++a)
    if (a != class_axis) l.spatial.push_back(input.shape[a]);
  l.voxels = 1;
  for (std::int64_t e : l.spatial) l.voxels *= e;
  return l;
}

bool acquisition_is_dense(Acquisition a) { return !acquisition_needs_embeddings(a); }

std::vector<float> score_dense(const ArrayView& input, Acquisition acquisition, const DenseOptions& o) {
  const char* name = acquisition_name(acquisition);
  QUARRY_USAGE_EXPECTS(acquisition_is_dense(acquisition), name,
                       " is not defined per voxel (it reads an embedding of the whole sample); dense outputs take ",
                       "least-confidence, margin, ratio, entropy and the committee scores");
  QUARRY_EXPECTS(!input.on_cuda(), o.input_name,
                 ": dense outputs are scored on the CPU in this version; pass host memory");
  const bool committee = o.committee || acquisition_needs_committee(acquisition);
  DenseLayout l = dense_layout(input, committee, o.channels_last, o.input_name);
  QUARRY_EXPECTS(l.classes >= 1 && l.classes <= std::numeric_limits<int>::max(), o.input_name,
                 ": the number of classes must be between 1 and 2^31-1, got ", l.classes, " (shape ",
                 shape_string(input.shape), o.channels_last ? ", classes last" : ", classes on axis " + std::to_string(committee ? 2 : 1), ")");
  QUARRY_EXPECTS(l.members >= 1, o.input_name, ": a committee needs at least one member, got shape ", shape_string(input.shape));
  QUARRY_EXPECTS(input.dtype == DType::f32 || input.dtype == DType::f16 || input.dtype == DType::bf16 ||
                     input.dtype == DType::f64,
                 o.input_name, ": expected float32, float16, bfloat16 or float64, got ", dtype_name(input.dtype));
  QUARRY_USAGE_EXPECTS(o.slice_axis >= -1 && o.slice_axis < static_cast<int>(l.spatial.size()), "slice axis ",
                       o.slice_axis, ": ", o.input_name, " has ", l.spatial.size(), " spatial axes (",
                       shape_string(l.spatial), "), numbered from 0");
  QUARRY_USAGE_EXPECTS(o.patch.empty() || o.slice_axis < 0, "patches and slices: give one of the two");
  QUARRY_USAGE_EXPECTS(o.patch.size() <= 1 || o.patch.size() == l.spatial.size(), "patch size ",
                       shape_string(o.patch), ": ", o.input_name, " has ", l.spatial.size(), " spatial axes (",
                       shape_string(l.spatial), "), give one size per axis (or one for all)");
  for (std::int64_t e : o.patch) QUARRY_USAGE_EXPECTS(e >= 1, "patch size ", shape_string(o.patch), ": sizes must be >= 1");
  QUARRY_USAGE_EXPECTS(o.background >= 0 && o.background < l.classes, "background class ", o.background,
                       ": ", o.input_name, " has ", l.classes, " classes, expected 0..", l.classes - 1);
  QUARRY_USAGE_EXPECTS(o.class_weights.empty() || static_cast<std::int64_t>(o.class_weights.size()) == l.classes,
                       "class weights: ", o.class_weights.size(), " given, ", o.input_name, " has ", l.classes, " classes");
  for (std::size_t c = 0; c < o.class_weights.size(); ++c)
    QUARRY_USAGE_EXPECTS(std::isfinite(o.class_weights[c]) && o.class_weights[c] >= 0.0f, "class weight ", c, " is ",
                         o.class_weights[c], ": expected a finite number >= 0");
  QUARRY_USAGE_EXPECTS(o.reduce.how != Reduction::topq || (o.reduce.q > 0.0 && o.reduce.q <= 1.0),
                       "topq: the fraction must be in (0, 1], got ", o.reduce.q);

  // Where it runs (cuda where this build or machine has none is the Error every score gives).
  const DeviceSpec device = resolve_device(o.device);
  QUARRY_USAGE_EXPECTS(o.patch.empty() || device.kind != DeviceKind::cuda,
                       "patches are scored on the CPU in this version: give --device cpu (slices run on CUDA too)");
  const std::int64_t out_n = l.cases * l.regions(o.slice_axis, o.patch);
  std::vector<float> out(static_cast<std::size_t>(out_n), 0.0f);
  if (l.cases == 0 || l.voxels == 0) return out;

  Array in_copy, mask_copy;
  const ArrayView* in = &input;
  ArrayView in_view;
  if (!input.contiguous()) {
    in_copy = contiguous_copy(input, o.input_name);
    in_view = in_copy.view();
    in = &in_view;
  }
  ArrayView mask_view;
  if (o.ignore) {
    const ArrayView& m = *o.ignore;
    QUARRY_EXPECTS(!m.on_cuda(), o.ignore_name, ": expected host memory");
    // The mask's grid is the cases' grid, axes of size 1 aside ([N, 1, H, W] for [N, C, H, W]; a
    // NIfTI mask of a 2D case): a transposed mask of the same size is an error, not a reshape.
    const auto squeezed = [](std::vector<std::int64_t> d) {
      d.erase(std::remove(d.begin(), d.end(), std::int64_t{1}), d.end());
      return d;
    };
    const std::vector<std::int64_t> grid(m.shape.begin() + (m.rank() >= 1 ? 1 : 0), m.shape.end());
    QUARRY_EXPECTS(m.rank() >= 1 && m.shape[0] == l.cases && squeezed(grid) == squeezed(l.spatial), o.ignore_name,
                   ": expected one value per voxel, [", l.cases, ", ", [&] {
                     std::string s = shape_string(l.spatial);
                     return s.substr(1, s.size() - 2);
                   }(), "] (the grid of ", o.input_name, "), got ", shape_string(m.shape));
    if (!m.contiguous()) {
      mask_copy = contiguous_copy(m, o.ignore_name);
      mask_view = mask_copy.view();
    } else {
      mask_view = m;
    }
  }
  cpu::DenseCall call;
  call.data = in->data;
  call.dtype = in->dtype;
  call.layout = l;
  call.committee = committee;
  call.acquisition = acquisition;
  call.logits = o.logits;
  const bool half = input.dtype == DType::f16 || input.dtype == DType::bf16;
  call.tol = static_cast<float>(o.sum_tolerance >= 0 ? o.sum_tolerance : half ? 1e-2 : 1e-3);
  call.reduce = o.reduce;
  call.background = o.background;
  call.weights = o.class_weights.empty() ? nullptr : o.class_weights.data();
  call.ignore = o.ignore ? &mask_view : nullptr;
  call.slice_axis = o.slice_axis;
  call.patch = patch_sizes(o.patch, l.spatial.size());
  call.voxel_map = o.voxel_map;
  call.input_name = o.input_name;
  if (device.kind == DeviceKind::cuda) {
#if QUARRY_BUILD_CUDA
    cuda::score_dense(call, out.data(), device.index);
    return out;
#endif
  }
  cpu::score_dense(call, out.data());
  return out;
}

SliceSelection select_slices(const std::vector<float>& scores, std::int64_t S, std::int64_t k, std::int64_t per_case,
                             const std::vector<std::int64_t>& exclude_cases) {
  QUARRY_USAGE_EXPECTS(S >= 1, "slices per case must be >= 1, got ", S);
  QUARRY_EXPECTS(static_cast<std::int64_t>(scores.size()) % S == 0, "slice scores: ", scores.size(),
                 " values are not a whole number of cases of ", S, " slices");
  QUARRY_USAGE_EXPECTS(k >= 0 && per_case >= 0, "k and the per-case cap must be >= 0");
  const std::int64_t N = static_cast<std::int64_t>(scores.size()) / S;
  std::vector<unsigned char> excluded(static_cast<std::size_t>(N), 0);
  for (std::int64_t e : exclude_cases) {
    QUARRY_EXPECTS(e >= 0 && e < N, "excluded case ", e, " is not in 0..", N - 1);
    excluded[static_cast<std::size_t>(e)] = 1;
  }
  std::vector<std::int64_t> order;
  order.reserve(scores.size());
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(scores.size()); ++i) {
    QUARRY_EXPECTS(!std::isnan(scores[static_cast<std::size_t>(i)]), "slice score of case ", i / S, ", slice ", i % S, " is NaN");
    if (!excluded[static_cast<std::size_t>(i / S)]) order.push_back(i);
  }
  const std::int64_t cap = per_case > 0 ? std::min(per_case, S) : S;
  std::int64_t selectable = 0;
  for (std::int64_t n = 0; n < N; ++n) selectable += excluded[static_cast<std::size_t>(n)] ? 0 : cap;
  QUARRY_USAGE_EXPECTS(k <= selectable, "-k ", k, ": only ", selectable, " slices or patches can be selected (", N,
                       " cases, at most ", cap, " each", exclude_cases.empty() ? "" : ", excluded cases left out", ")");
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    return scores[static_cast<std::size_t>(a)] > scores[static_cast<std::size_t>(b)];
  });
  SliceSelection sel;
  std::vector<std::int64_t> taken(static_cast<std::size_t>(N), 0);
  for (std::int64_t i : order) {
    if (sel.size() == k) break;
    const std::int64_t n = i / S;
    if (taken[static_cast<std::size_t>(n)] >= cap) continue;
    ++taken[static_cast<std::size_t>(n)];
    sel.case_index.push_back(n);
    sel.slice.push_back(i % S);
    sel.score.push_back(scores[static_cast<std::size_t>(i)]);
  }
  return sel;
}

}  // namespace quarry
