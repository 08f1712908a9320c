// Backend parity, arrays already in CUDA memory (a torch CUDA tensor through DLPack, the loop's
// outputs kept on the device): read in place, they give exactly what the same bytes give from
// host memory on the GPU (the same kernels on the same bits), the caller's stream is honoured,
// and a bad row is named as it is for a host array. Built where the CUDA backend is (it needs
// the CUDA runtime to allocate); skips without a GPU, and in the QUARRY_CUDA_TEST_ON_CPU
// self-check too (that has no device memory). Harness in cuda_parity.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <memory>

#include "cuda_parity.hpp"
#include "quarry/diversity.hpp"

namespace cuda_test {
namespace {

#define REQUIRE_DEVICE_MEMORY() \
  if (quarry::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: arrays in device memory need one"

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

const quarry::Location kDevice0{quarry::MemoryKind::cuda, 0};

// Pool sizes, a tenth under QUARRY_CUDA_TEST_QUICK (compute-sanitizer's runs).
std::int64_t rows(std::int64_t n) { return quick() ? std::max<std::int64_t>(n / 10, 100) : n; }

// Device memory holding a copy of a host view's bytes (or `bytes` uninitialised ones).
struct DeviceCopy {
  void* p = nullptr;
  std::size_t bytes = 0;
  explicit DeviceCopy(std::size_t b) : bytes(b) { check(cudaMalloc(&p, b > 0 ? b : 1), "cudaMalloc"); }
  explicit DeviceCopy(const quarry::ArrayView& host) : DeviceCopy(host.nbytes()) {
    check(cudaMemcpy(p, host.data, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  }
  ~DeviceCopy() { cudaFree(p); }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  // The same shape and dtype as `host`, in this memory.
  quarry::ArrayView view_as(const quarry::ArrayView& host) const {
    return quarry::ArrayView{p, host.dtype, host.shape, {}, kDevice0};
  }
  std::vector<float> floats(std::int64_t n) const {
    std::vector<float> v(static_cast<std::size_t>(n));
    check(cudaMemcpy(v.data(), p, v.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy to the host");
    return v;
  }
};

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  std::size_t first = a.size();
  for (std::size_t i = 0; i < a.size() && first == a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) first = i;
  EXPECT_EQ(first, a.size()) << what << ": first difference at row " << first << ": " << a[first] << " vs "
                             << b[first];
}

void expect_same(const quarry::Selection& a, const quarry::Selection& b, const std::string& what) {
  EXPECT_EQ(a.index, b.index) << what;
  expect_same_bits(a.score, b.score, what + " (scores)");
}

// ------------------------------------------------------------------ scores

TEST(CudaResident, ScoresOfADevicePoolEqualThoseOfTheSameHostPool) {
  REQUIRE_DEVICE_MEMORY();
  Shape single{0, rows(20000), 10, 16};
  Shape wide{0, rows(4000), 100, 0, DType::f16};
  Shape committee{4, rows(5000), 10, 8};
  Shape logits{0, rows(3000), 33, 0, DType::bf16, true};
  for (const Shape& s : {single, wide, committee, logits}) {
    const Pool pool = make_pool(s);
    const DeviceCopy input(pool.input.view());
    std::unique_ptr<DeviceCopy> emb;
    quarry::ArrayView emb_view;
    if (s.d > 0) {
      emb = std::make_unique<DeviceCopy>(pool.emb.view());
      emb_view = emb->view_as(pool.emb.view());
    }
    for (Acquisition a : acquisitions_for(s)) {
      const std::string what = std::string(quarry::acquisition_name(a)) + " on " + s.str();
      SCOPED_TRACE(what);
      quarry::ScoreOptions o = options(pool, kCuda);
      const std::vector<float> host = quarry::score(pool.input.view(), a, o, pool.emb_view());
      // Into device memory (the scores never leave the device), then copied back here.
      DeviceCopy out(static_cast<std::size_t>(s.n) * sizeof(float));
      quarry::score(input.view_as(pool.input.view()), a, static_cast<float*>(out.p), o, s.d > 0 ? &emb_view : nullptr);
      expect_same_bits(out.floats(s.n), host, what + ", scores left on the device");
      // The host-vector overload, on `auto`: a device input runs on its own device.
      o.device = DeviceSpec{};
      const std::vector<float> back =
          quarry::score(input.view_as(pool.input.view()), a, o, s.d > 0 ? &emb_view : nullptr);
      expect_same_bits(back, host, what + ", scores copied back");
      if (HasFailure()) return;
    }
  }
}

TEST(CudaResident, TheCallersStreamIsHonoured) {
  REQUIRE_DEVICE_MEMORY();
  // The pool reaches the device by an asynchronous copy queued on the caller's stream, from
  // pinned memory, and score() is called at once with that stream: it must read after the copy.
  // A read before it would see zeros (rows that sum to 0: an error) or part of the pool.
  const Pool pool = make_pool(Shape{0, rows(400000), 16, 0});
  const quarry::ArrayView hv = pool.input.view();
  void* pinned = nullptr;
  check(cudaMallocHost(&pinned, hv.nbytes()), "cudaMallocHost");
  std::memcpy(pinned, hv.data, hv.nbytes());
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  quarry::ScoreOptions o = options(pool, kCuda);
  const std::vector<float> host = quarry::score(hv, Acquisition::entropy, o);
  for (int rep = 0; rep < 3; ++rep) {
    DeviceCopy dev(hv.nbytes());
    check(cudaMemset(dev.p, 0, hv.nbytes()), "cudaMemset");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    check(cudaMemcpyAsync(dev.p, pinned, hv.nbytes(), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
    o.stream = stream;
    std::vector<float> got;
    try {
      got = quarry::score(dev.view_as(hv), Acquisition::entropy, o);
    } catch (const quarry::Error& e) {
      ADD_FAILURE() << "scored before the caller's copy had landed? " << e.what();
    }
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    expect_same_bits(got, host, "entropy after an asynchronous copy on the caller's stream");
  }
  cudaStreamDestroy(stream);
  cudaFreeHost(pinned);
}

TEST(CudaResident, ABadRowOfADevicePoolIsNamedAsForAHostPool) {
  REQUIRE_DEVICE_MEMORY();
  Pool pool = make_pool(Shape{0, 9000, 12, 3});
  pool.input.set(7777 * 12 + 5, std::numeric_limits<double>::quiet_NaN());
  const DeviceCopy input(pool.input.view());
  const quarry::ScoreOptions o = options(pool, kCuda);
  const std::string host = error_of([&] { quarry::score(pool.input.view(), Acquisition::margin, o); });
  const std::string dev = error_of([&] { quarry::score(input.view_as(pool.input.view()), Acquisition::margin, o); });
  EXPECT_NE(host.find("7777"), std::string::npos) << host;
  EXPECT_EQ(dev, host);
}

// ------------------------------------------------------------------ selection

TEST(CudaResident, SelectionsOverDeviceScoresEqualTheHostOnes) {
  REQUIRE_DEVICE_MEMORY();
  const std::int64_t n = rows(300000);
  Rng rng(42);
  std::vector<float> s(static_cast<std::size_t>(n));
  for (auto& v : s) v = static_cast<float>(rng.below(5000)) / 5000.0f;  // many ties
  const quarry::ArrayView hv{s.data(), DType::f32, {n}};
  const DeviceCopy dev(hv);
  const std::vector<std::int64_t> exclude = {0, 17, 4999, n - 1};
  for (std::int64_t k : {std::int64_t{1}, std::int64_t{1000}, n / 3}) {
    const std::string what = "k = " + std::to_string(k);
    expect_same(quarry::select_topk(dev.view_as(hv), k, exclude, kCuda), quarry::select_topk(hv, k, exclude, kCuda),
                "top-k, " + what);
    expect_same(quarry::select_topk(dev.view_as(hv), k, exclude), quarry::select_topk(hv, k, exclude, kCpu),
                "top-k on auto against the CPU, " + what);
    expect_same(quarry::select_power(dev.view_as(hv), k, 2.0, 7, exclude, kCuda),
                quarry::select_power(hv, k, 2.0, 7, exclude, kCuda), "power, " + what);
  }
}

TEST(CudaResident, ScoreAndSelectReadsADevicePoolInPlace) {
  REQUIRE_DEVICE_MEMORY();
  for (const Shape& s : {Shape{0, rows(50000), 10, 5}, Shape{6, rows(20000), 10, 6}}) {
    const Pool pool = make_pool(s);
    const DeviceCopy input(pool.input.view());
    quarry::SelectOptions sel;
    sel.k = 500;
    sel.exclude = {1, 2, 3};
    for (bool power : {false, true}) {
      sel.power = power;
      sel.seed = 11;
      const Acquisition a = s.m > 0 ? Acquisition::bald : Acquisition::entropy;
      const std::string what = std::string(quarry::acquisition_name(a)) + (power ? " power" : " top-k") + " on " + s.str();
      const quarry::ScoreOptions o = options(pool, kCuda);
      expect_same(quarry::score_and_select(input.view_as(pool.input.view()), a, o, sel),
                  quarry::score_and_select(pool.input.view(), a, o, sel), what);
    }
  }
}

TEST(CudaResident, DiversityOverDeviceEmbeddingsEqualsTheHostOnes) {
  REQUIRE_DEVICE_MEMORY();
  const Pool pool = make_pool(Shape{0, 3000, 10, 0, DType::f32, false, DType::f32, 21});
  Buf emb(DType::f32, {3000, 48});
  Rng rng(5);
  for (std::int64_t i = 0; i < emb.numel(); ++i) emb.set(i, rng.normal() + (i / 48 % 7));
  const DeviceCopy demb(emb.view()), dout(pool.input.view());
  const quarry::ArrayView de = demb.view_as(emb.view()), dp = dout.view_as(pool.input.view());
  const quarry::ArrayView he = emb.view(), hp = pool.input.view();
  quarry::DiversityOptions o;
  o.k = 60;
  o.seed = 3;
  o.exclude = {4, 8, 15, 16, 23, 42};
  o.device = kCuda;
  for (auto strategy : {quarry::DiversityStrategy::badge, quarry::DiversityStrategy::kcenter}) {
    const std::string what = strategy == quarry::DiversityStrategy::badge ? "badge" : "kcenter";
    expect_same(quarry::select_diverse(strategy, de, &dp, o), quarry::select_diverse(strategy, he, &hp, o), what);
  }
}

}  // namespace
}  // namespace cuda_test
