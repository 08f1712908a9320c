// Arrays that know where they live: strided views, DLPack import/export, and device arrays
// given where they cannot be read (a CPU-only build, or device cpu).
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "quarry/dlpack.hpp"
#include "quarry/quarry.hpp"

namespace {

using quarry::ArrayView;
using quarry::DType;

std::vector<float> softmax_rows(std::int64_t n, std::int64_t c, unsigned seed) {
  std::vector<float> p(static_cast<std::size_t>(n * c));
  unsigned s = seed;
  for (std::int64_t i = 0; i < n; ++i) {
    float sum = 0;
    for (std::int64_t j = 0; j < c; ++j) {
      s = s * 1664525u + 1013904223u;
      p[i * c + j] = 0.05f + static_cast<float>(s >> 8) / 16777216.0f;
      sum += p[i * c + j];
    }
    for (std::int64_t j = 0; j < c; ++j) p[i * c + j] /= sum;
  }
  return p;
}

TEST(Strides, ContiguousDetection) {
  float x[12] = {};
  EXPECT_TRUE((ArrayView{x, DType::f32, {3, 4}}).contiguous());
  EXPECT_TRUE((ArrayView{x, DType::f32, {3, 4}, {4, 1}}).contiguous());
  EXPECT_TRUE((ArrayView{x, DType::f32, {1, 4}, {99, 1}}).contiguous());  // extent-1 axes: any stride
  EXPECT_FALSE((ArrayView{x, DType::f32, {4, 3}, {1, 4}}).contiguous());  // column-major
  EXPECT_FALSE((ArrayView{x, DType::f32, {3, 2}, {4, 2}}).contiguous());  // every other column
}

TEST(Strides, StridedInputsScoreAsTheirContiguousCopy) {
  const std::int64_t n = 500, c = 6;
  const std::vector<float> p = softmax_rows(n, c, 3);
  const std::vector<float> expected = quarry::score(ArrayView{p.data(), DType::f32, {n, c}}, quarry::Acquisition::entropy);
  // Column-major (the transpose of a [C, N] buffer).
  std::vector<float> t(p.size());
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < c; ++j) t[j * n + i] = p[i * c + j];
  EXPECT_EQ(quarry::score(ArrayView{t.data(), DType::f32, {n, c}, {1, n}}, quarry::Acquisition::entropy), expected);
  // Every other column of a wider buffer, and every other row.
  std::vector<float> wide(static_cast<std::size_t>(2 * n * 2 * c), 7.0f);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < c; ++j) wide[(2 * i) * 2 * c + 2 * j] = p[i * c + j];
  const ArrayView v{wide.data(), DType::f32, {n, c}, {4 * c, 2}};
  EXPECT_EQ(quarry::score(v, quarry::Acquisition::entropy), expected);
  quarry::SelectOptions sel;
  sel.k = 10;
  const quarry::Selection a = quarry::score_and_select(v, quarry::Acquisition::entropy, {}, sel);
  const quarry::Selection b = quarry::select_topk(expected.data(), n, 10);
  EXPECT_EQ(a.index, b.index);
  // A strided score vector.
  std::vector<float> s2(static_cast<std::size_t>(2 * n));
  for (std::int64_t i = 0; i < n; ++i) s2[2 * i] = expected[i];
  EXPECT_EQ(quarry::select_topk(ArrayView{s2.data(), DType::f32, {n}, {2}}, 10).index, b.index);
}

TEST(DLPack, ImportsWithoutACopyAndRunsTheDeleter) {
  const std::int64_t n = 200, c = 4;
  std::vector<float> p = softmax_rows(n, c, 5);
  static int deleted = 0;
  deleted = 0;
  std::int64_t shape[2] = {n, c};
  auto* m = new DLManagedTensor{};
  m->dl_tensor.data = p.data();
  m->dl_tensor.device = {kDLCPU, 0};
  m->dl_tensor.ndim = 2;
  m->dl_tensor.dtype = {kDLFloat, 32, 1};
  m->dl_tensor.shape = shape;
  m->deleter = [](DLManagedTensor* self) {
    ++deleted;
    delete self;
  };
  {
    quarry::DLPackArray a(m, "logits");
    EXPECT_EQ(a.view().data, p.data());  // the producer's own memory
    EXPECT_EQ(a.view().shape, (std::vector<std::int64_t>{n, c}));
    EXPECT_FALSE(a.view().on_cuda());
    EXPECT_EQ(quarry::score(a.view(), quarry::Acquisition::margin),
              quarry::score(ArrayView{p.data(), DType::f32, {n, c}}, quarry::Acquisition::margin));
    quarry::DLPackArray moved = std::move(a);
    EXPECT_EQ(deleted, 0);
  }
  EXPECT_EQ(deleted, 1);
}

TEST(DLPack, RejectsWhatItCannotDescribeAndStillFreesIt) {
  static int deleted = 0;
  deleted = 0;
  std::int64_t shape[1] = {4};
  float data[4] = {};
  auto make = [&](DLDevice dev, DLDataType dt) {
    auto* m = new DLManagedTensor{};
    m->dl_tensor = DLTensor{data, dev, 1, dt, shape, nullptr, 0};
    m->deleter = [](DLManagedTensor* self) {
      ++deleted;
      delete self;
    };
    return m;
  };
  EXPECT_THROW(
      {
        try {
          quarry::DLPackArray a(make({kDLCPU, 0}, {kDLFloat, 32, 4}), "t");
        } catch (const quarry::UsageError& e) {
          EXPECT_NE(std::string(e.what()).find("t: vector dtypes"), std::string::npos) << e.what();
          throw;
        }
      },
      quarry::UsageError);
  EXPECT_THROW(quarry::DLPackArray(make({kDLOpenCL, 0}, {kDLFloat, 32, 1}), "t"), quarry::UsageError);
  EXPECT_THROW(quarry::DLPackArray(make({kDLCPU, 0}, {kDLComplex, 64, 1}), "t"), quarry::UsageError);
  EXPECT_EQ(deleted, 3);
  // CUDA memory is a CUDA view.
  quarry::DLPackArray cuda(make({kDLCUDA, 1}, {kDLFloat, 16, 1}), "t");
  EXPECT_TRUE(cuda.view().on_cuda());
  EXPECT_EQ(cuda.view().location.device, 1);
  EXPECT_EQ(cuda.view().dtype, DType::f16);
}

TEST(DLPack, ExportsResults) {
  DLManagedTensor* s = quarry::to_dlpack(std::vector<float>{0.5f, 0.25f});
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->dl_tensor.ndim, 1);
  EXPECT_EQ(s->dl_tensor.shape[0], 2);
  EXPECT_EQ(s->dl_tensor.dtype.code, kDLFloat);
  EXPECT_EQ(static_cast<float*>(s->dl_tensor.data)[1], 0.25f);
  s->deleter(s);
  DLManagedTensor* i = quarry::to_dlpack(std::vector<std::int64_t>{7, 3, 9});
  EXPECT_EQ(i->dl_tensor.dtype.code, kDLInt);
  EXPECT_EQ(i->dl_tensor.dtype.bits, 64);
  EXPECT_EQ(static_cast<std::int64_t*>(i->dl_tensor.data)[2], 9);
  i->deleter(i);
}

TEST(DeviceArrays, CudaViewsWhereTheyCannotBeReadAreClearErrors) {
  // A fake device pointer: never dereferenced, because every path refuses it first.
  const ArrayView dev{reinterpret_cast<const void*>(0x1000), DType::f32, {10, 3}, {}, {quarry::MemoryKind::cuda, 0}};
  quarry::ScoreOptions cpu;
  cpu.device = quarry::parse_device("cpu");
  try {
    quarry::score(dev, quarry::Acquisition::entropy, cpu);
    FAIL() << "no error";
  } catch (const quarry::UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("is in CUDA memory (cuda:0) but the CPU was asked for"), std::string::npos)
        << e.what();
  }
  if (quarry::cuda_device_count() == 0) {
    EXPECT_THROW(quarry::score(dev, quarry::Acquisition::entropy), quarry::Error);
    EXPECT_THROW(quarry::select_topk(ArrayView{dev.data, DType::f32, {10}, {}, dev.location}, 3), quarry::Error);
    quarry::DiversityOptions d;
    d.k = 2;
    EXPECT_THROW(quarry::select_diverse(quarry::DiversityStrategy::kcenter, dev, nullptr, d), quarry::Error);
  }
  // A strided CUDA view is refused before anything reads it.
  const ArrayView strided{dev.data, DType::f32, {10, 3}, {1, 10}, dev.location};
  EXPECT_THROW(quarry::score(strided, quarry::Acquisition::entropy), quarry::Error);
  // Host input with device embeddings.
  std::vector<float> p = softmax_rows(10, 3, 1);
  const ArrayView host{p.data(), DType::f32, {10, 3}};
  const ArrayView emb{dev.data, DType::f32, {10, 4}, {}, dev.location};
  EXPECT_THROW(quarry::score(host, quarry::Acquisition::egl, {}, &emb), quarry::UsageError);
}

}  // namespace
