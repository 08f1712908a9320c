// Dense outputs (quarry::score_dense) against a double-precision reference written here: every
// voxel's score is the per-row reference of scores_reference.hpp on that voxel's class values,
// and every reduction (mean, max, sum, top-q, foreground-mean), mask, class weight and slice
// is recomputed in double from those voxel scores.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "quarry/dense.hpp"
#include "quarry/detail/voxel_math.hpp"
#include "quarry/error.hpp"
#include "scores_reference.hpp"

namespace {

using quarry::DenseOptions;
using quarry::Reduction;
using quarry::ReduceSpec;
using scores_test::Tensor;

// The voxel rows [M?, N * V, C] of a random input, and the same values as a dense tensor.
struct Dense {
  Tensor rows;   // [N*V, C] or [M, N*V, C]: one row per voxel, as the row reference reads them
  Tensor dense;  // [N, C, spatial...] / [M, N, C, spatial...], or classes last
  std::int64_t M, N, C, V;
  std::vector<std::int64_t> spatial;
};

Dense make_dense(std::uint64_t seed, std::int64_t M, std::int64_t N, std::int64_t C,
                 std::vector<std::int64_t> spatial, const scores_test::Variant& v, bool last = false) {
  Dense d;
  d.M = M, d.N = N, d.C = C, d.spatial = spatial;
  d.V = 1;
  for (auto e : spatial) d.V *= e;
  d.rows = scores_test::random_input(seed, M, N * d.V, C, v);
  const std::int64_t MM = M == 0 ? 1 : M;
  std::vector<double> x(d.rows.vals.size());
  for (std::int64_t m = 0; m < MM; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = 0; c < C; ++c)
        for (std::int64_t vx = 0; vx < d.V; ++vx) {
          const double val = d.rows.vals[((m * N + n) * d.V + vx) * C + c];
          const std::int64_t at = last ? ((m * N + n) * d.V + vx) * C + c : ((m * N + n) * C + c) * d.V + vx;
          x[at] = val;
        }
  std::vector<std::int64_t> shape;
  if (M > 0) shape.push_back(M);
  shape.push_back(N);
  if (!last) shape.push_back(C);
  shape.insert(shape.end(), spatial.begin(), spatial.end());
  if (last) shape.push_back(C);
  // The values are already representable in the dtype (they came from one), so this is exact.
  d.dense = scores_test::make_tensor(x, shape, v.dtype);
  return d;
}

// Per voxel: the reference score and the predicted class (argmax of the committee mean).
struct VoxelRef {
  std::vector<double> score;
  std::vector<std::int64_t> pred;
};

VoxelRef voxel_reference(const Dense& d, quarry::Acquisition a, bool logits) {
  VoxelRef r;
  r.score = scores_test::reference(d.rows, a, logits);
  r.pred.resize(r.score.size());
  for (std::size_t i = 0; i < r.score.size(); ++i)
    r.pred[i] = scores_test::ref_argmax(scores_test::ref_member_probs(d.rows, static_cast<std::int64_t>(i), logits).pbar);
  return r;
}

double reduce_ref(std::vector<double> vals, const ReduceSpec& r) {
  const auto n = static_cast<std::int64_t>(vals.size());
  if (n == 0) return 0.0;
  switch (r.how) {
    case Reduction::max: return *std::max_element(vals.begin(), vals.end());
    case Reduction::sum: return std::accumulate(vals.begin(), vals.end(), 0.0);
    case Reduction::topq: {
      std::sort(vals.begin(), vals.end(), std::greater<double>());
      // ceil(q n), where q n within rounding of an integer is that integer (0.01 * 300 = 3).
      const long double x = static_cast<long double>(r.q) * n, fl = std::floor(x);
      const auto whole = static_cast<std::int64_t>(x - fl <= 1e-13L * x ? fl : fl + 1);
      const auto m = std::min(n, std::max<std::int64_t>(1, whole));
      return std::accumulate(vals.begin(), vals.begin() + m, 0.0) / static_cast<double>(m);
    }
    default: return std::accumulate(vals.begin(), vals.end(), 0.0) / static_cast<double>(n);
  }
}

// The reference of a whole call: per case, or per slice along `axis`.
std::vector<double> case_reference(const Dense& d, const VoxelRef& vr, const DenseOptions& o,
                                   const std::vector<unsigned char>* ignore) {
  std::int64_t S = o.slice_axis >= 0 ? d.spatial[o.slice_axis] : 1;
  std::int64_t inner = 1;
  for (std::size_t a = o.slice_axis + 1; o.slice_axis >= 0 && a < d.spatial.size(); ++a) inner *= d.spatial[a];
  // Patches: the patch of a voxel from its coordinates, tiles counted row-major.
  std::vector<std::int64_t> tiles;
  for (std::size_t a = 0; a < o.patch.size(); ++a) tiles.push_back((d.spatial[a] + o.patch[a] - 1) / o.patch[a]);
  if (!o.patch.empty()) S = std::accumulate(tiles.begin(), tiles.end(), std::int64_t{1}, std::multiplies<>());
  const auto region = [&](std::int64_t v) -> std::int64_t {
    if (o.patch.empty()) return (v / inner) % S;
    std::vector<std::int64_t> coord(d.spatial.size());
    for (std::size_t a = d.spatial.size(); a-- > 0;) {
      coord[a] = v % d.spatial[a];
      v /= d.spatial[a];
    }
    std::int64_t r = 0;
    for (std::size_t a = 0; a < coord.size(); ++a) r = r * tiles[a] + coord[a] / o.patch[a];
    return r;
  };
  std::vector<double> out;
  for (std::int64_t n = 0; n < d.N; ++n) {
    std::vector<std::vector<double>> per(S);
    for (std::int64_t v = 0; v < d.V; ++v) {
      const std::int64_t i = n * d.V + v;
      if (ignore && (*ignore)[i]) continue;
      if (o.reduce.how == Reduction::foreground_mean && vr.pred[i] == o.background) continue;
      const double w = o.class_weights.empty() ? 1.0 : o.class_weights[vr.pred[i]];
      per[region(v)].push_back(vr.score[i] * w);
    }
    for (auto& p : per) out.push_back(reduce_ref(p, o.reduce));
  }
  return out;
}

void expect_matches(const std::vector<float>& got, const std::vector<double>& ref, const std::string& what,
                    double rtol = 1e-4) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (std::size_t i = 0; i < ref.size(); ++i)
    EXPECT_NEAR(got[i], ref[i], 3e-5 + rtol * std::fabs(ref[i])) << what << ": output " << i;
}

const std::vector<ReduceSpec>& reductions() {
  static const std::vector<ReduceSpec> r = {{Reduction::mean, 0},  {Reduction::max, 0},
                                            {Reduction::sum, 0},   {Reduction::topq, 0.01},
                                            {Reduction::topq, 0.3}, {Reduction::foreground_mean, 0}};
  return r;
}

DenseOptions options(const ReduceSpec& r, bool logits) {
  DenseOptions o;
  o.reduce = r;
  o.logits = logits;
  return o;
}

TEST(Dense, SingleModelEveryReductionMatchesTheReference) {
  const std::vector<quarry::Acquisition> acqs = {quarry::Acquisition::least_confidence, quarry::Acquisition::margin,
                                                 quarry::Acquisition::ratio, quarry::Acquisition::entropy};
  int variant = 0;
  for (const auto& v : scores_test::variants()) {
    ++variant;
    for (const auto& spatial : std::vector<std::vector<std::int64_t>>{{6, 7}, {3, 5, 4}}) {
      for (std::int64_t C : {1, 2, 5}) {
        const Dense d = make_dense(100 + variant * 7 + C, 0, 3, C, spatial, v);
        for (auto a : acqs) {
          const VoxelRef vr = voxel_reference(d, a, v.logits);
          for (const auto& r : reductions()) {
            const DenseOptions o = options(r, v.logits);
            const std::string what = std::string(v.name) + " " + quarry::acquisition_name(a) + " C=" +
                                     std::to_string(C) + " " + quarry::reduction_name(r) + " rank " +
                                     std::to_string(spatial.size());
            expect_matches(quarry::score_dense(d.dense.view(), a, o), case_reference(d, vr, o, nullptr), what);
          }
        }
      }
    }
  }
}

TEST(Dense, ClassesLastEqualsClassesFirst) {
  const auto& v = scores_test::variants()[3];  // logits*3/f32
  const Dense first = make_dense(7, 0, 2, 4, {5, 6, 3}, v, false);
  const Dense last = make_dense(7, 0, 2, 4, {5, 6, 3}, v, true);
  for (const auto& r : reductions()) {
    DenseOptions o = options(r, true);
    const auto a = quarry::score_dense(first.dense.view(), quarry::Acquisition::entropy, o);
    o.channels_last = true;
    const auto b = quarry::score_dense(last.dense.view(), quarry::Acquisition::entropy, o);
    EXPECT_EQ(a, b) << quarry::reduction_name(r);
    expect_matches(b, case_reference(last, voxel_reference(last, quarry::Acquisition::entropy, true), o, nullptr),
                   "classes last " + quarry::reduction_name(r));
  }
}

TEST(Dense, CommitteeScoresMatchTheReference) {
  const std::vector<quarry::Acquisition> acqs = {
      quarry::Acquisition::bald, quarry::Acquisition::consensus_entropy, quarry::Acquisition::kl_max,
      quarry::Acquisition::vote_entropy, quarry::Acquisition::variation_ratio, quarry::Acquisition::entropy,
      quarry::Acquisition::margin};
  for (const auto& v : scores_test::variants()) {
    for (std::int64_t M : {1, 4}) {
      const Dense d = make_dense(900 + M, M, 2, 3, {4, 5, 6}, v);
      // Votes are discontinuous: voxels whose members' top two classes are within rounding of
      // each other are left out through the ignore mask (so the mask is tested too).
      const std::vector<char> amb = scores_test::ambiguous_vote_rows(d.rows, v.logits);
      std::vector<unsigned char> ignore(amb.begin(), amb.end());
      // So are voxels whose predicted class (the argmax of the members' mean) is a near tie
      // (peaked members that disagree, two each way, give pbar = [0.5, 0.5] up to rounding).
      for (std::size_t i = 0; i < ignore.size(); ++i) {
        double p1 = 0, p2 = 0;
        scores_test::ref_top2(scores_test::ref_member_probs(d.rows, static_cast<std::int64_t>(i), v.logits).pbar, p1, p2);
        if (p1 - p2 <= 1e-4) ignore[i] = 1;
      }
      const quarry::ArrayView mask(ignore.data(), quarry::DType::u8, {d.N, 4, 5, 6});
      for (auto a : acqs) {
        const VoxelRef vr = voxel_reference(d, a, v.logits);
        for (const auto& r : reductions()) {
          DenseOptions o = options(r, v.logits);
          o.committee = true;
          o.ignore = &mask;
          const std::string what = std::string(v.name) + " M=" + std::to_string(M) + " " +
                                   quarry::acquisition_name(a) + " " + quarry::reduction_name(r);
          expect_matches(quarry::score_dense(d.dense.view(), a, o), case_reference(d, vr, o, &ignore), what, 2e-4);
        }
      }
    }
  }
}

// A committee with many classes works in short blocks (its per-class scratch is bounded): the
// same scores as the reference, over several blocks.
TEST(Dense, CommitteeWithManyClassesMatchesTheReference) {
  const scores_test::Variant& v = scores_test::variants().front();
  const Dense d = make_dense(77, 3, 2, 2000, {300}, v);
  for (auto a : {quarry::Acquisition::bald, quarry::Acquisition::entropy, quarry::Acquisition::kl_max}) {
    const VoxelRef vr = voxel_reference(d, a, v.logits);
    for (const auto& r : {ReduceSpec{Reduction::mean, 0}, ReduceSpec{Reduction::topq, 0.1}}) {
      DenseOptions o = options(r, v.logits);
      o.committee = true;
      expect_matches(quarry::score_dense(d.dense.view(), a, o), case_reference(d, vr, o, nullptr),
                     std::string(quarry::acquisition_name(a)) + " " + quarry::reduction_name(r), 2e-4);
    }
  }
}

TEST(Dense, PatchesOf2DImagesAndVolumes) {
  const auto& v = scores_test::variants()[0];
  for (const auto& [spatial, patch] : std::vector<std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>>>{
           {{10, 7}, {4, 3}}, {{10, 7}, {10, 7}}, {{10, 7}, {1, 1}}, {{5, 6, 7}, {2, 4, 3}}, {{9}, {4}}}) {
    const Dense d = make_dense(55, 0, 3, 3, spatial, v);
    const VoxelRef vr = voxel_reference(d, quarry::Acquisition::margin, false);
    std::vector<unsigned char> ignore(static_cast<std::size_t>(d.N * d.V), 0);
    for (std::size_t i = 0; i < ignore.size(); ++i) ignore[i] = (i * 31) % 7 == 0;
    std::vector<std::int64_t> mshape = {d.N};
    mshape.insert(mshape.end(), spatial.begin(), spatial.end());
    const quarry::ArrayView mask(ignore.data(), quarry::DType::u8, mshape);
    for (const auto& r : reductions()) {
      DenseOptions o = options(r, false);
      o.patch = patch;
      o.ignore = &mask;
      const std::string what = "grid " + quarry::shape_string(spatial) + " patch " + quarry::shape_string(patch) + " " +
                               quarry::reduction_name(r);
      expect_matches(quarry::score_dense(d.dense.view(), quarry::Acquisition::margin, o),
                     case_reference(d, vr, o, &ignore), what);
    }
  }
  EXPECT_EQ(quarry::patch_origin({10, 7}, {4, 3}, 0), (std::vector<std::int64_t>{0, 0}));
  EXPECT_EQ(quarry::patch_origin({10, 7}, {4, 3}, 4), (std::vector<std::int64_t>{4, 3}));  // 3 patches per row
  EXPECT_EQ(quarry::patch_origin({10, 7}, {4, 3}, 8), (std::vector<std::int64_t>{8, 6}));
  // A patch per axis, not both patches and slices.
  const Dense d = make_dense(56, 0, 2, 2, {4, 4}, v);
  DenseOptions o;
  o.patch = {2, 2, 2};
  EXPECT_THROW(quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o), quarry::UsageError);
  o.patch = {2, 0};
  EXPECT_THROW(quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o), quarry::UsageError);
  o.patch = {2, 2};
  o.slice_axis = 0;
  EXPECT_THROW(quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o), quarry::UsageError);
}

TEST(Dense, TopCountIsCeilOfQTimesN) {
  using quarry::detail::top_count;
  EXPECT_EQ(top_count(0.01, 300), 3);         // 0.01 * 300 is 3.0000000000000004 in double
  EXPECT_EQ(top_count(0.1, 30), 3);
  EXPECT_EQ(top_count(0.5000000001, 2), 2);   // just above an integer: one more
  EXPECT_EQ(top_count(0.3333333333, 3), 1);
  EXPECT_EQ(top_count(1e-9, 5), 1);           // at least one
  EXPECT_EQ(top_count(1.0, 7), 7);
  EXPECT_EQ(top_count(0.25, 0), 0);
  EXPECT_EQ(quarry::reduction_name(quarry::parse_reduction("topq:1e-9")), "topq:1e-09");
  EXPECT_EQ(quarry::reduction_name(quarry::parse_reduction("topq:0.01")), "topq:0.01");
}

TEST(Dense, MaskWeightsBackgroundAndSlices) {
  const auto& v = scores_test::variants()[0];
  const Dense d = make_dense(31, 0, 3, 3, {4, 6, 5}, v);
  const VoxelRef vr = voxel_reference(d, quarry::Acquisition::entropy, false);
  std::vector<unsigned char> ignore(static_cast<std::size_t>(d.N * d.V), 0);
  for (std::size_t i = 0; i < ignore.size(); ++i) ignore[i] = (i * 7919) % 5 == 0;
  std::vector<float> ignore_f(ignore.begin(), ignore.end());  // any dtype: float32 here
  const quarry::ArrayView mask(ignore_f.data(), quarry::DType::f32, {d.N, 1, 4, 6, 5});
  for (int axis = -1; axis < 3; ++axis) {
    for (int bg : {0, 2}) {
      for (const auto& r : reductions()) {
        DenseOptions o = options(r, false);
        o.ignore = &mask;
        o.class_weights = {0.5f, 2.0f, 0.0f};
        o.background = bg;
        o.slice_axis = axis;
        std::vector<float> map(static_cast<std::size_t>(d.N * d.V), -1.0f);
        o.voxel_map = map.data();
        const std::string what = "axis " + std::to_string(axis) + " background " + std::to_string(bg) + " " +
                                 quarry::reduction_name(r);
        const auto got = quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o);
        EXPECT_EQ(static_cast<std::int64_t>(got.size()), d.N * (axis < 0 ? 1 : d.spatial[axis])) << what;
        expect_matches(got, case_reference(d, vr, o, &ignore), what);
        for (std::size_t i = 0; i < map.size(); ++i)
          ASSERT_NEAR(map[i], ignore[i] ? 0.0 : vr.score[i] * o.class_weights[vr.pred[i]], 3e-5) << what << " voxel " << i;
      }
    }
  }
}

TEST(Dense, EmptyCasesScoreZero) {
  const auto& v = scores_test::variants()[0];
  const Dense d = make_dense(5, 0, 2, 2, {3, 3}, v);
  std::vector<unsigned char> all(18, 1);
  const quarry::ArrayView mask(all.data(), quarry::DType::u8, {2, 3, 3});
  for (const auto& r : reductions()) {
    DenseOptions o = options(r, false);
    o.ignore = &mask;
    EXPECT_EQ(quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o), (std::vector<float>{0.0f, 0.0f}));
  }
}

TEST(Dense, LargeCasesRunInParallelIndependentlyOfTheThreadCount) {
  // 2 x 64 x 64 x 40 voxels per case: blocks of one case run on every thread.
  const auto& v = scores_test::variants()[5];  // logits*3/f16
  const Dense d = make_dense(77, 0, 2, 2, {40, 64, 64}, v);
  const VoxelRef vr = voxel_reference(d, quarry::Acquisition::entropy, true);
  for (const auto& r : reductions()) {
    DenseOptions o = options(r, true);
    omp_set_num_threads(1);
    const auto one = quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o);
    omp_set_num_threads(3);
    const auto three = quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o);
    omp_set_num_threads(omp_get_num_procs());
    EXPECT_EQ(one, three) << quarry::reduction_name(r);
    expect_matches(one, case_reference(d, vr, o, nullptr), "large " + quarry::reduction_name(r));
    o.patch = {16, 30, 64};  // patches of the parallel path, edges cut
    expect_matches(quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, o),
                   case_reference(d, vr, o, nullptr), "large, patches " + quarry::reduction_name(r));
  }
}

TEST(Dense, BadVoxelsAreNamedByCaseAndCoordinates) {
  const auto& v = scores_test::variants()[0];
  Dense d = make_dense(9, 0, 3, 2, {4, 5}, v);
  // Case 2, voxel [3, 1] (= 16), class 1: NaN. Then a sum off 1 at case 1, voxel [0, 2].
  d.dense.set(((2 * 2 + 1) * 20) + 16, std::nan(""));
  try {
    quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, options({}, false));
    FAIL() << "no error";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("case 2, voxel [3, 1]: probabilities contain NaN"), std::string::npos) << e.what();
  }
  d.dense.set(((1 * 2 + 0) * 20) + 2, 3.0);
  try {
    quarry::score_dense(d.dense.view(), quarry::Acquisition::entropy, options({}, false));
    FAIL() << "no error";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("case 1, voxel [0, 2]: probabilities sum to"), std::string::npos) << e.what();
  }
}

TEST(Dense, UsageErrors) {
  const auto& v = scores_test::variants()[0];
  const Dense d = make_dense(3, 0, 2, 3, {4, 4}, v);
  auto fails = [&](DenseOptions o, quarry::Acquisition a, const char* text) {
    try {
      quarry::score_dense(d.dense.view(), a, o);
      ADD_FAILURE() << "no error for " << text;
    } catch (const quarry::Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  DenseOptions o;
  fails(o, quarry::Acquisition::egl, "not defined per voxel");
  o.slice_axis = 2;
  fails(o, quarry::Acquisition::entropy, "slice axis 2");
  o = {};
  o.class_weights = {1, 2};
  fails(o, quarry::Acquisition::entropy, "class weights: 2 given");
  o = {};
  o.background = 3;
  fails(o, quarry::Acquisition::entropy, "background class 3");
  const quarry::ArrayView three(d.dense.f32.data(), quarry::DType::f32, {2, 3, 16});
  try {
    quarry::score_dense(three, quarry::Acquisition::bald, {});
    ADD_FAILURE() << "no error for a committee of rows";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[M, N, C, spatial...]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quarry::parse_reduction("topq:0"), quarry::UsageError);
  EXPECT_THROW(quarry::parse_reduction("topq:1.5"), quarry::UsageError);
  EXPECT_THROW(quarry::parse_reduction("median"), quarry::UsageError);
  EXPECT_EQ(quarry::reduction_name(quarry::parse_reduction("topq:0.05")), "topq:0.05");
  const quarry::ArrayView rows(d.dense.f32.data(), quarry::DType::f32, {2, 48});
  EXPECT_THROW(quarry::score_dense(rows, quarry::Acquisition::entropy, {}), quarry::Error);
}

TEST(Dense, SliceSelectionHonoursTheCapAndTies) {
  // 3 cases x 4 slices.
  const std::vector<float> s = {0.9f, 0.8f, 0.7f, 0.1f,   // case 0
                                0.5f, 0.95f, 0.5f, 0.2f,  // case 1
                                0.3f, 0.3f, 0.3f, 0.3f};  // case 2
  auto sel = quarry::select_slices(s, 4, 5, 2);
  ASSERT_EQ(sel.size(), 5);
  EXPECT_EQ(sel.case_index, (std::vector<std::int64_t>{1, 0, 0, 1, 2}));
  EXPECT_EQ(sel.slice, (std::vector<std::int64_t>{1, 0, 1, 0, 0}));
  sel = quarry::select_slices(s, 4, 3, 0, {1});
  EXPECT_EQ(sel.case_index, (std::vector<std::int64_t>{0, 0, 0}));
  EXPECT_EQ(sel.slice, (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_THROW(quarry::select_slices(s, 4, 7, 2), quarry::UsageError);
  EXPECT_EQ(quarry::select_slices(s, 4, 6, 2).size(), 6);
}

}  // namespace
