// Backend parity of dense scores (quarry::score_dense with DenseOptions::device): the CUDA
// backend (kernels/dense.cu) against the CPU backend, on seeded maps and volumes whose voxels are
// the hard rows of cuda_parity.hpp (peaked, one-hot, uniform, ties, zeros, tiny values), every
// acquisition defined per voxel, every reduction, slices along every axis, ignore masks of every
// dtype, class weights, committees, channels-last, logits, the four float dtypes, the voxel map,
// sizes that are not multiples of the kernels' tiles, and bad voxels (the same Error text).
//
// Scores are compared within the per-voxel tolerance of cuda_parity.hpp (a sum: that times the
// voxels); the GPU runs twice and must agree with itself bit for bit; outputs are poisoned and
// checked for unwritten elements. Under QUARRY_CUDA_TEST_ON_CPU=1 the "GPU" is the CPU backend
// and every comparison must hold exactly.
#include <gtest/gtest.h>

#include "cuda_parity.hpp"
#include "quarry/dense.hpp"

namespace cuda_test {
namespace {

using quarry::DenseOptions;
using quarry::Reduction;
using quarry::ReduceSpec;

struct DenseShape {
  std::int64_t m = 0;  // committee members (0: a single model)
  std::int64_t n = 1, c = 2;
  std::vector<std::int64_t> spatial{4, 4};
  DType dtype = DType::f32;
  bool logits = false, last = false;
  std::uint64_t seed = 1;
  std::int64_t voxels() const {
    std::int64_t v = 1;
    for (auto e : spatial) v *= e;
    return v;
  }
  std::string str() const {
    std::ostringstream os;
    os << (m > 0 ? "[M=" + std::to_string(m) + ", " : "[") << "N=" << n << ", C=" << c << ", spatial "
       << quarry::shape_string(spatial) << "] " << dname(dtype) << (logits ? " logits" : " probabilities")
       << (last ? ", classes last" : "") << ", seed " << seed;
    return os.str();
  }
};

// Voxel rows of the kinds of cuda_parity.hpp (voxel i of the whole input has kind (i + seed) %
// kKinds), members disagreeing as make_pool's do, in the dense layout.
Buf make_dense(const DenseShape& s) {
  const std::int64_t M = s.m > 0 ? s.m : 1, V = s.voxels();
  std::vector<std::int64_t> shape;
  if (s.m > 0) shape.push_back(s.m);
  shape.push_back(s.n);
  if (!s.last) shape.push_back(s.c);
  shape.insert(shape.end(), s.spatial.begin(), s.spatial.end());
  if (s.last) shape.push_back(s.c);
  Buf b(s.dtype, shape);
  b.bf16_truncate = (s.seed % 2) == 1;
  Rng rng(s.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(s.c));
  std::vector<double> base, z, row;
  const double lim = logit_limit(s.dtype);
  for (std::int64_t n = 0; n < s.n; ++n)
    for (std::int64_t v = 0; v < V; ++v) {
      const std::int64_t i = n * V + v;
      const auto kind = static_cast<RowKind>((i + static_cast<std::int64_t>(s.seed)) % kKinds);
      logit_row(kind, s.c, rng, base);
      const bool exact = kind == kUniform || kind == kTie || kind == kOneHot;
      const double spread = (s.m == 0 || exact || i % 3 == 0) ? 0.0 : (i % 3 == 1) ? 0.05 : 2.0;
      for (std::int64_t m = 0; m < M; ++m) {
        z = base;
        if (spread > 0)
          for (auto& x : z) x += spread * rng.normal();
        if (!s.logits) to_probs(kind, z, row);
        for (std::int64_t c = 0; c < s.c; ++c) {
          const std::int64_t at =
              s.last ? ((m * s.n + n) * V + v) * s.c + c : ((m * s.n + n) * s.c + c) * V + v;
          b.set(at, s.logits ? std::max(-lim, std::min(lim, z[c])) : row[c]);
        }
      }
    }
  return b;
}

// A mask [N, spatial...] (or [N, 1, spatial...]) of `dtype`, nonzero on about a third of the
// voxels (whole cases of it in some cases), with values that are nonzero only in their sign or
// low bits where the dtype allows.
struct Mask {
  std::vector<std::int64_t> shape;
  std::vector<double> storage;
  DType dtype = DType::u8;
  quarry::ArrayView view() const { return quarry::ArrayView{const_cast<double*>(storage.data()), dtype, shape}; }
};

Mask make_mask(const DenseShape& s, DType t, bool with_one_axis, std::uint64_t seed) {
  Mask k;
  k.dtype = t;
  k.shape.push_back(s.n);
  if (with_one_axis) k.shape.push_back(1);
  k.shape.insert(k.shape.end(), s.spatial.begin(), s.spatial.end());
  const std::int64_t total = s.n * s.voxels();
  k.storage.assign((static_cast<std::size_t>(total) * quarry::dtype_size(t) + 7) / 8, 0.0);
  Rng rng(seed);
  for (std::int64_t i = 0; i < total; ++i) {
    const std::int64_t n = i / s.voxels();
    const bool on = n % 5 == 4 ? true : rng.uniform() < 0.33;  // case 4 wholly ignored
    void* p = k.storage.data();
    switch (t) {
      case DType::u8: static_cast<std::uint8_t*>(p)[i] = on ? 7 : 0; break;
      case DType::i8: static_cast<std::int8_t*>(p)[i] = on ? -1 : 0; break;
      case DType::i16: static_cast<std::int16_t*>(p)[i] = on ? 256 : 0; break;
      case DType::i32: static_cast<std::int32_t*>(p)[i] = on ? 65536 : 0; break;
      case DType::i64: static_cast<std::int64_t*>(p)[i] = on ? (std::int64_t{1} << 40) : 0; break;
      case DType::f32: static_cast<float*>(p)[i] = on ? 1e-40f : (i % 2 ? -0.0f : 0.0f); break;
      case DType::f64: static_cast<double*>(p)[i] = on ? -2.5 : (i % 2 ? -0.0 : 0.0); break;
      case DType::f16:
      case DType::bf16: static_cast<std::uint16_t*>(p)[i] = on ? 0x0001 : (i % 2 ? 0x8000 : 0); break;
    }
  }
  return k;
}

struct DenseRun {
  ReduceSpec reduce{};
  int slice_axis = -1;
  int background = 0;
  std::vector<float> weights;
  const Mask* mask = nullptr;
  bool voxel_map = false;
};

std::string reduce_str(const DenseRun& r) {
  std::string s = quarry::reduction_name(r.reduce);
  if (r.slice_axis >= 0) s += ", slices along " + std::to_string(r.slice_axis);
  if (r.reduce.how == Reduction::foreground_mean) s += ", background " + std::to_string(r.background);
  if (!r.weights.empty()) s += ", class weights";
  if (r.mask) s += std::string(", mask ") + dname(r.mask->dtype) + " " + quarry::shape_string(r.mask->shape);
  if (r.voxel_map) s += ", voxel map";
  return s;
}

DenseOptions dense_options(const DenseShape& s, const DenseRun& r, const DeviceSpec& device, quarry::ArrayView* mask,
                           float* map) {
  DenseOptions o;
  o.reduce = r.reduce;
  o.logits = s.logits;
  o.channels_last = s.last;
  o.committee = s.m > 0;
  o.background = r.background;
  o.class_weights = r.weights;
  o.ignore = r.mask ? mask : nullptr;
  o.slice_axis = r.slice_axis;
  o.voxel_map = map;
  o.input_name = "volumes";
  o.device = device;
  return o;
}

// Scores on both backends and compares; returns the GPU's scores.
std::vector<float> expect_dense_parity(const DenseShape& s, const Buf& in, Acquisition a, const DenseRun& r) {
  SCOPED_TRACE(std::string(quarry::acquisition_name(a)) + ", " + reduce_str(r) + " on " + s.str());
  const std::int64_t V = s.voxels();
  const std::int64_t S = r.slice_axis >= 0 ? s.spatial[static_cast<std::size_t>(r.slice_axis)] : 1;
  const std::int64_t out_n = s.n * S;
  quarry::ArrayView mask = r.mask ? r.mask->view() : quarry::ArrayView{};
  std::vector<float> cpu_map = poisoned(r.voxel_map ? s.n * V : 0), gpu_map = cpu_map, again_map = cpu_map;
  std::vector<float> cpu, gpu, again;
  try {
    cpu = quarry::score_dense(in.view(), a, dense_options(s, r, kCpu, &mask, r.voxel_map ? cpu_map.data() : nullptr));
  } catch (const quarry::Error& e) {
    ADD_FAILURE() << "the CPU rejected a valid input: " << e.what();
    return {};
  }
  try {
    gpu = quarry::score_dense(in.view(), a, dense_options(s, r, kGpu, &mask, r.voxel_map ? gpu_map.data() : nullptr));
    again = quarry::score_dense(in.view(), a, dense_options(s, r, kGpu, &mask, r.voxel_map ? again_map.data() : nullptr));
  } catch (const quarry::Error& e) {
    ADD_FAILURE() << "the GPU failed where the CPU did not: " << e.what();
    return {};
  }
  EXPECT_EQ(static_cast<std::int64_t>(gpu.size()), out_n);
  EXPECT_EQ(unwritten_or_nan(cpu), "") << "CPU output";
  EXPECT_EQ(unwritten_or_nan(gpu), "") << "GPU output";
  EXPECT_EQ(gpu.size(), again.size());
  EXPECT_EQ(std::memcmp(gpu.data(), again.data(), std::min(gpu.size(), again.size()) * sizeof(float)), 0)
      << "two GPU runs on the same input differ (a race?)";
  double wmax = 1.0;
  for (float w : r.weights) wmax = std::max<double>(wmax, w);
  const std::int64_t M = s.m;
  std::int64_t bad = 0;
  std::ostringstream first;
  for (std::size_t i = 0; i < gpu.size() && i < cpu.size(); ++i) {
    // Per voxel the row tolerance (scaled by the largest class weight); a sum adds up to V of
    // those; a mean, max or top-q mean stays within one.
    const double per = tolerance(a, s.c, M, 1.0, cpu[i]) * wmax + 1e-6 * std::fabs(cpu[i]);
    const double tol = r.reduce.how == Reduction::sum ? per * static_cast<double>(V) : per;
    const double diff = std::fabs(static_cast<double>(gpu[i]) - cpu[i]);
    if (!(diff <= tol)) {
      if (bad < 5) first << "\n  score " << i << ": cpu " << cpu[i] << " gpu " << gpu[i] << " |diff| " << diff << " > tol " << tol;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << bad << " of " << gpu.size() << " scores out of tolerance:" << first.str();
  if (r.voxel_map) {
    EXPECT_EQ(unwritten_or_nan(gpu_map), "") << "GPU voxel map";
    EXPECT_EQ(std::memcmp(gpu_map.data(), again_map.data(), gpu_map.size() * sizeof(float)), 0)
        << "two GPU voxel maps differ";
    std::int64_t mbad = 0;
    std::ostringstream mfirst;
    for (std::size_t i = 0; i < gpu_map.size(); ++i) {
      const double tol = tolerance(a, s.c, M, 1.0, cpu_map[i]) * wmax;
      const double diff = std::fabs(static_cast<double>(gpu_map[i]) - cpu_map[i]);
      if (!(diff <= tol)) {
        if (mbad < 5) mfirst << "\n  voxel " << i << ": cpu " << cpu_map[i] << " gpu " << gpu_map[i];
        ++mbad;
      }
    }
    EXPECT_EQ(mbad, 0) << mbad << " voxel map values out of tolerance:" << mfirst.str();
  }
  return gpu;
}

std::vector<Acquisition> dense_acquisitions(const DenseShape& s) {
  std::vector<Acquisition> v;
  for (Acquisition a : quarry::all_acquisitions()) {
    if (!quarry::acquisition_is_dense(a)) continue;
    if (quarry::acquisition_needs_committee(a) && s.m == 0) continue;
    v.push_back(a);
  }
  return v;
}

const std::vector<ReduceSpec> kReductions = {{Reduction::mean, 0.0},  {Reduction::max, 0.0},
                                             {Reduction::sum, 0.0},   {Reduction::topq, 0.01},
                                             {Reduction::topq, 0.3},  {Reduction::topq, 1.0},
                                             {Reduction::foreground_mean, 0.0}};

// ------------------------------------------------------------------ scores and reductions

TEST(CudaDense, SingleModelEveryAcquisitionEveryReduction) {
  REQUIRE_GPU();
  struct Geo { std::int64_t n, c; std::vector<std::int64_t> spatial; };
  // Tiles are 1024 voxels and blocks 256 threads: one voxel, a partial tile, exactly one tile,
  // one voxel past it, many tiles, 2D and 3D.
  const std::vector<Geo> geos = pick<Geo>(
      {{3, 2, {1}}, {5, 3, {7, 5}}, {2, 1, {33, 31}}, {4, 4, {32, 32}}, {3, 5, {1025}}, {2, 2, {3, 33, 31}},
       {2, 17, {9, 8, 7}}, {1, 3, {40, 50, 60}}},
      {{3, 2, {1}}, {2, 3, {1025}}, {2, 4, {5, 9, 11}}});
  const auto dtypes = pick<DType>({DType::f32, DType::f16, DType::bf16, DType::f64}, {DType::f32, DType::f16});
  std::uint64_t seed = 1001;
  for (const Geo& g : geos)
    for (DType t : dtypes)
      for (bool logits : {false, true}) {
        DenseShape s;
        s.n = g.n;
        s.c = g.c;
        s.spatial = g.spatial;
        s.dtype = t;
        s.logits = logits;
        s.last = (seed % 3) == 0;
        s.seed = seed++;
        const Buf in = make_dense(s);
        for (Acquisition a : dense_acquisitions(s))
          for (const ReduceSpec& r : kReductions) {
            DenseRun run;
            run.reduce = r;
            run.background = static_cast<int>(s.seed % static_cast<std::uint64_t>(s.c));
            expect_dense_parity(s, in, a, run);
          }
      }
}

TEST(CudaDense, CommitteeEveryAcquisitionEveryReduction) {
  REQUIRE_GPU();
  struct Geo { std::int64_t m, n, c; std::vector<std::int64_t> spatial; };
  const std::vector<Geo> geos = pick<Geo>(
      {{1, 2, 3, {5, 7}}, {2, 3, 2, {1}}, {5, 2, 4, {33, 31}}, {3, 2, 10, {3, 9, 40}}, {20, 1, 3, {1025}}},
      {{1, 2, 3, {5, 7}}, {5, 2, 4, {33, 31}}});
  const auto dtypes = pick<DType>({DType::f32, DType::f16, DType::bf16, DType::f64}, {DType::f32, DType::bf16});
  std::uint64_t seed = 2001;
  for (const Geo& g : geos)
    for (DType t : dtypes)
      for (bool logits : {false, true}) {
        DenseShape s;
        s.m = g.m;
        s.n = g.n;
        s.c = g.c;
        s.spatial = g.spatial;
        s.dtype = t;
        s.logits = logits;
        s.last = (seed % 2) == 0;
        s.seed = seed++;
        const Buf in = make_dense(s);
        for (Acquisition a : dense_acquisitions(s))
          for (const ReduceSpec& r : kReductions) {
            DenseRun run;
            run.reduce = r;
            expect_dense_parity(s, in, a, run);
          }
      }
}

// Many small cases (2D thumbnails) and one large volume (many tiles of one case; top-q of many
// thousands of voxels, where uniform and tied voxels give long runs of equal scores).
TEST(CudaDense, ManyCasesAndOneLargeVolume) {
  REQUIRE_GPU();
  {
    DenseShape s;
    s.n = quick() ? 200 : 2000;
    s.c = 3;
    s.spatial = {6, 5};
    s.seed = 3001;
    const Buf in = make_dense(s);
    for (const ReduceSpec& r : kReductions) {
      DenseRun run;
      run.reduce = r;
      expect_dense_parity(s, in, Acquisition::entropy, run);
      expect_dense_parity(s, in, Acquisition::margin, run);
    }
  }
  {
    DenseShape s;
    s.n = 2;
    s.c = 2;
    s.spatial = quick() ? std::vector<std::int64_t>{17, 64, 61} : std::vector<std::int64_t>{40, 128, 129};
    s.dtype = DType::f16;
    s.seed = 3002;
    const Buf in = make_dense(s);
    for (const ReduceSpec& r : kReductions) {
      DenseRun run;
      run.reduce = r;
      expect_dense_parity(s, in, Acquisition::entropy, run);
    }
    DenseRun run;
    run.reduce = {Reduction::topq, 1e-6};  // one voxel: the largest
    expect_dense_parity(s, in, Acquisition::least_confidence, run);
  }
}

// ------------------------------------------------------------------ slices, masks, weights, map

TEST(CudaDense, SlicesAlongEveryAxisEveryReduction) {
  REQUIRE_GPU();
  std::uint64_t seed = 4001;
  for (bool committee : {false, true})
    for (const std::vector<std::int64_t>& spatial : {std::vector<std::int64_t>{7, 9}, std::vector<std::int64_t>{5, 33, 31},
                                                     std::vector<std::int64_t>{1, 3, 1}}) {
      DenseShape s;
      s.m = committee ? 3 : 0;
      s.n = 3;
      s.c = 3;
      s.spatial = spatial;
      s.last = seed % 2 == 1;
      s.logits = seed % 3 == 1;
      s.dtype = committee ? DType::bf16 : DType::f32;
      s.seed = seed++;
      const Buf in = make_dense(s);
      for (int axis = 0; axis < static_cast<int>(spatial.size()); ++axis)
        for (const ReduceSpec& r : kReductions) {
          DenseRun run;
          run.reduce = r;
          run.slice_axis = axis;
          run.background = 1;
          expect_dense_parity(s, in, committee ? Acquisition::bald : Acquisition::entropy, run);
        }
    }
}

TEST(CudaDense, IgnoreMasksOfEveryDtypeWeightsAndVoxelMap) {
  REQUIRE_GPU();
  DenseShape s;
  s.n = 6;  // case 4 is wholly ignored
  s.c = 4;
  s.spatial = {9, 37, 5};
  s.dtype = DType::f16;
  s.seed = 5001;
  const Buf in = make_dense(s);
  DenseShape sc = s;
  sc.m = 4;
  sc.dtype = DType::f32;
  sc.logits = true;
  const Buf inc = make_dense(sc);
  std::uint64_t seed = 5100;
  for (DType t : {DType::u8, DType::i8, DType::i16, DType::i32, DType::i64, DType::f32, DType::f64, DType::f16,
                  DType::bf16}) {
    const Mask mask = make_mask(s, t, seed % 2 == 0, seed);
    ++seed;
    for (const ReduceSpec& r : kReductions) {
      DenseRun run;
      run.reduce = r;
      run.mask = &mask;
      run.background = 2;
      run.voxel_map = r.how == Reduction::mean || r.how == Reduction::topq;
      expect_dense_parity(s, in, Acquisition::entropy, run);
      run.weights = {0.5f, 2.0f, 0.0f, 1.25f};
      expect_dense_parity(s, in, Acquisition::ratio, run);
      expect_dense_parity(sc, inc, Acquisition::kl_max, run);
      run.slice_axis = 1;
      expect_dense_parity(sc, inc, Acquisition::vote_entropy, run);
    }
  }
}

// ------------------------------------------------------------------ bad voxels

// The same Error text on both devices: case, voxel coordinates, member, value.
TEST(CudaDense, BadVoxelSameErrorAsCpu) {
  REQUIRE_GPU();
  struct Bad {
    std::int64_t m;
    bool logits, last;
    DType t;
    std::int64_t at_case, at_voxel, member;
    int cls;
    double value;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const std::vector<Bad> bads = {
      {0, false, false, DType::f32, 3, 1500, 0, 1, nan},   {0, false, true, DType::f16, 0, 0, 0, 0, -0.25},
      {0, false, false, DType::f64, 4, 2047, 0, 2, 0.75},  {0, true, false, DType::f32, 1, 77, 0, 0, inf},
      {0, true, false, DType::f64, 2, 5, 0, 1, 1e300},     {0, false, false, DType::bf16, 4, 3000, 0, 0, nan},
      {3, false, false, DType::f32, 2, 1030, 2, 1, nan},   {3, true, true, DType::f16, 1, 3, 1, 2, -inf},
      {3, false, false, DType::f32, 0, 900, 1, 0, 0.5}};
  std::uint64_t seed = 6001;
  for (const Bad& b : bads) {
    DenseShape s;
    s.m = b.m;
    s.n = 5;
    s.c = 3;
    s.spatial = {3, 33, 31};
    s.dtype = b.t;
    s.logits = b.logits;
    s.last = b.last;
    s.seed = seed++;
    Buf in = make_dense(s);
    const std::int64_t V = s.voxels();
    auto at = [&](std::int64_t m, std::int64_t n, std::int64_t v, std::int64_t c) {
      return s.last ? ((m * s.n + n) * V + v) * s.c + c : ((m * s.n + n) * s.c + c) * V + v;
    };
    in.set(at(b.member, b.at_case, b.at_voxel, b.cls), b.value);
    // A second bad voxel later in the same case and one in a later case: the first is reported.
    in.set(at(0, b.at_case, V - 1, 0), nan);
    if (b.at_case + 1 < s.n) in.set(at(0, b.at_case + 1, 0, 0), nan);
    for (Reduction how : {Reduction::mean, Reduction::topq}) {
      DenseRun run;
      run.reduce = {how, 0.1};
      run.slice_axis = how == Reduction::topq ? 1 : -1;
      quarry::ArrayView none;
      const Acquisition a = b.m > 0 ? Acquisition::bald : Acquisition::entropy;
      const std::string cpu = error_of([&] { quarry::score_dense(in.view(), a, dense_options(s, run, kCpu, &none, nullptr)); });
      const std::string gpu = error_of([&] { quarry::score_dense(in.view(), a, dense_options(s, run, kGpu, &none, nullptr)); });
      SCOPED_TRACE(s.str());
      EXPECT_NE(cpu, "(no error)");
      EXPECT_NE(cpu.find("case " + std::to_string(b.at_case)), std::string::npos) << cpu;
      EXPECT_EQ(gpu, cpu);
    }
  }
}

// score_dense_files reads groups of cases within a memory budget; each group goes to the device.
TEST(CudaDense, GroupsOfAFileWithinAMemoryBudget) {
  REQUIRE_GPU();
  DenseShape s;
  s.n = 7;
  s.c = 3;
  s.spatial = {11, 13};
  s.dtype = DType::f32;
  s.seed = 7001;
  const Buf in = make_dense(s);
  const fs::path dir = fs::path(QUARRY_TEST_TMP) / "cuda_dense";
  fs::create_directories(dir);
  const std::string path = (dir / "volumes.npy").string();
  quarry::write_npy(path, in.view());
  for (const ReduceSpec& r : kReductions) {
    std::vector<float> per_device[2];
    int k = 0;
    for (const DeviceSpec& d : {kCpu, kGpu}) {
      quarry::DenseFiles files = quarry::DenseFiles::open(path, false);
      DenseOptions o;
      o.reduce = r;
      o.device = d;
      const std::int64_t budget = 2 * s.c * s.voxels() * 4;  // two cases a group
      per_device[k++] = quarry::score_dense_files(files, Acquisition::margin, o, budget).score;
    }
    ASSERT_EQ(per_device[0].size(), per_device[1].size());
    for (std::size_t i = 0; i < per_device[0].size(); ++i)
      EXPECT_NEAR(per_device[1][i], per_device[0][i],
                  tolerance(Acquisition::margin, s.c, 0, 1.0, per_device[0][i]) * (r.how == Reduction::sum ? s.voxels() : 1))
          << quarry::reduction_name(r) << " case " << i;
  }
}

// ------------------------------------------------------------------ without CUDA

// Where CUDA is not available, asking for it for dense outputs is the same Error as for the
// other scores (this one runs everywhere but on a GPU machine).
TEST(CudaDenseUnavailable, CudaDeviceIsAClearError) {
  if (quarry::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible";
  DenseShape s;
  const Buf in = make_dense(s);
  DenseOptions o;
  o.device = kCuda;
  const std::string e = error_of([&] { quarry::score_dense(in.view(), Acquisition::entropy, o); });
  EXPECT_NE(e.find("--device cuda"), std::string::npos) << e;
  quarry::ScoreOptions so;
  so.device = kCuda;
  const Buf rows(DType::f32, {2, 2});
  const std::string rows_error = error_of([&] { quarry::score(rows.view(), Acquisition::entropy, so); });
  EXPECT_EQ(e, rows_error);
}

}  // namespace
}  // namespace cuda_test
