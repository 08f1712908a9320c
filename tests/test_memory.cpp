// Scoring a memory-mapped pool adds O(N) memory (the scores), never a copy of the input.
// This executable replaces the global operator new/delete to track the peak of live heap
// bytes; libquarry's allocations (std::vector, std::string, ...) go through it too.
#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>

#include "quarry/acquisition.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/io.hpp"
#include "quarry/select.hpp"
#include "quarry/stream.hpp"
#include "engine/stream_parts.hpp"

namespace {
std::atomic<std::size_t> g_live{0}, g_peak{0};

void* counted_alloc(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  const std::size_t live = g_live += malloc_usable_size(p);
  std::size_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  return p;
}
void counted_free(void* p) noexcept {
  if (!p) return;
  g_live -= malloc_usable_size(p);
  std::free(p);
}
}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }

namespace {

namespace fs = std::filesystem;

// Writes an [rows..., c] pool of valid probabilities (uniform rows) with the given dtype.
std::string write_pool(const std::string& name, std::vector<std::int64_t> shape, quarry::DType dt) {
  const std::string path = std::string(QUARRY_TEST_TMP) + "/" + name;
  const quarry::Array a = quarry::Array::allocate(dt, shape, name);  // aligned_alloc: not counted
  const std::int64_t c = shape.back(), n = a.numel();
  const float p = 1.0f / static_cast<float>(c);
  for (std::int64_t i = 0; i < n; ++i) {
    if (dt == quarry::DType::f16)
      static_cast<std::uint16_t*>(const_cast<void*>(a.data()))[i] = quarry::detail::float_to_half(p);
    else
      static_cast<float*>(const_cast<void*>(a.data()))[i] = p;
  }
  quarry::write_npy(path, a.view());
  return path;
}

// Peak heap growth while scoring the mapped file and selecting from it.
std::size_t peak_growth(const std::string& path, quarry::Acquisition acq) {
  const quarry::Array pool = quarry::read_npy(path);
  const std::size_t base = g_live.load();
  g_peak = base;
  const std::vector<float> s = quarry::score(pool.view(), acq);
  const quarry::Selection sel = quarry::select_topk(s.data(), static_cast<std::int64_t>(s.size()), 1000);
  EXPECT_EQ(sel.size(), 1000);
  return g_peak.load() - base;
}

void expect_o_n(const std::string& path, std::int64_t n, quarry::Acquisition acq) {
  const std::size_t input = static_cast<std::size_t>(fs::file_size(path));
  const std::size_t growth = peak_growth(path, acq);
  const std::size_t allowed = static_cast<std::size_t>(n) * 4 * 2 + (16u << 20);  // scores (+ top-k) + 16 MiB
  EXPECT_LE(growth, allowed) << path << ": input " << input << " bytes";
  EXPECT_LT(growth, input / 2) << "scoring copied the input";
  std::cout << path << ": input " << input / 1e6 << " MB, peak heap growth " << growth / 1e6 << " MB\n";
  fs::remove(path);
}

TEST(Memory, ScoringAMappedPoolAddsOnlyTheScores) {
  expect_o_n(write_pool("mem_f32.npy", {1000000, 50}, quarry::DType::f32), 1000000, quarry::Acquisition::entropy);
  expect_o_n(write_pool("mem_f16.npy", {1000000, 100}, quarry::DType::f16), 1000000, quarry::Acquisition::margin);
  expect_o_n(write_pool("mem_bigc.npy", {50000, 1000}, quarry::DType::f32), 50000, quarry::Acquisition::entropy);
  expect_o_n(write_pool("mem_committee.npy", {5, 400000, 20}, quarry::DType::f32), 400000, quarry::Acquisition::bald);
}

// Streamed, the heap holds one chunk's scores and the running top-k, not N scores: a 4 MB pool
// under a 64 KiB budget grows the heap by well under the N * 4 bytes of its scores.
TEST(Memory, StreamingHoldsOneChunkNotThePool) {
  const std::int64_t n = 400000;
  const std::string path = write_pool("mem_stream.npy", {n, 10}, quarry::DType::f32);
  const quarry::PoolFiles pool = quarry::PoolFiles::open(path);
  quarry::StreamOptions so;
  so.memory_budget = 64 << 10;
  quarry::SelectOptions sel;
  sel.k = 100;
  const std::size_t base = g_live.load();
  g_peak = base;
  quarry::StreamStats st;
  const quarry::Ranked best = quarry::stream_score_select(pool, quarry::Acquisition::entropy, {}, sel, nullptr, so, &st);
  const std::size_t growth = g_peak.load() - base;
  EXPECT_EQ(best.size(), 100);
  EXPECT_GT(st.chunks, 100);
  EXPECT_LT(growth, static_cast<std::size_t>(n) * 4 / 8) << "the streamed selection held O(N) memory";
  std::cout << "streamed " << n << " rows in " << st.chunks << " chunks: peak heap growth " << growth << " bytes\n";
  fs::remove(path);
}

}  // namespace
