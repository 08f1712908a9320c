// Backend parity (as ggml's test-backend-ops): the CUDA backend against the CPU backend, through
// the public API only (quarry::score with ScoreOptions::device, select_topk / select_power with a
// device, score_and_select), on seeded random inputs of many shapes and on hard cases.
//
// What is compared, and how exactly:
//  - Scores: GPU against CPU within a per-score tolerance (tolerance() in cuda_parity.hpp says
//    why each one is what it is). Every output buffer is poisoned with a NaN bit pattern before
//    each run and checked for unwritten elements; the GPU runs twice and must agree with itself
//    bit for bit (a moving result is a race).
//  - Top-k and power sampling: indices and scores EXACTLY equal to the CPU's (same tie rule,
//    same Philox stream), including all-equal scores, k = n, k = 1, exclusions and k = 1e6.
//  - Bad rows and bad scores: the same quarry::Error message as the CPU's.
//
// Tests that need a GPU skip with a message where none is visible (CI, the development
// machines); the CudaUnavailable tests are the ones that run there and check that asking for
// CUDA without it is a clear error, from the library and from the command line.
//
// Environment: QUARRY_CUDA_TEST_QUICK=1 trims the case lists to a few cases per kernel path (for
// the compute-sanitizer runs of scripts/gpu_check.sh, where every launch is slow).
// QUARRY_CUDA_TEST_ON_CPU=1 runs the "GPU" side on the CPU backend: a self-check of this
// harness (generators, tolerances, expectations) on machines without a GPU; every comparison
// must then hold exactly.
//
// This file: scores and bad rows. Top-k, power sampling and score_and_select are in
// test_cuda_select.cpp; devices, CUDA unavailable and the command line in test_cuda_devices.cpp;
// the shared harness in cuda_parity.hpp.
#include <gtest/gtest.h>

#include "cuda_parity.hpp"

namespace cuda_test {
namespace {

// ------------------------------------------------------------------ scores: GPU vs CPU

TEST(CudaScores, SingleModelEveryAcquisitionEveryClassCount) {
  REQUIRE_GPU();
  // Class counts across every launch shape (thread per row up to 32, warp up to 1024, block
  // above; 65537 float32 rows do not fit in shared memory) and its edges.
  const auto cs = pick<std::int64_t>({1, 2, 3, 10, 31, 32, 33, 100, 1000, 1024, 1025, 4097, 32768, 65537},
                                     {1, 3, 32, 33, 1000, 1025, 65537});
  const auto dtypes = pick<DType>({DType::f32, DType::f16, DType::bf16, DType::f64}, {DType::f32, DType::bf16});
  std::uint64_t seed = 11;
  for (std::int64_t C : cs)
    for (DType t : dtypes)
      for (bool logits : {false, true}) {
        if (C > 32768 && t != DType::f32 && t != DType::f64) continue;
        Shape s;
        s.c = C;
        s.n = rows_for(quick() ? 300000 / C : 2000000 / C, 9, 3001);
        s.d = 24;
        s.dtype = t;
        s.logits = logits;
        s.seed = seed++;
        const Pool p = make_pool(s);
        for (Acquisition a : acquisitions_for(s)) expect_parity(p, a);
      }
}

TEST(CudaScores, CommitteeEveryAcquisition) {
  REQUIRE_GPU();
  const auto cs = pick<std::int64_t>({1, 2, 3, 10, 32, 33, 100, 1000, 1025, 4097}, {2, 33, 1025});
  const auto ms = pick<std::int64_t>({1, 2, 20}, {1, 20});
  const auto dtypes = pick<DType>({DType::f32, DType::f16, DType::bf16}, {DType::f32, DType::f16});
  std::uint64_t seed = 101;
  for (std::int64_t C : cs)
    for (std::int64_t M : ms)
      for (DType t : dtypes)
        for (bool logits : {false, true}) {
          Shape s;
          s.m = M;
          s.c = C;
          s.n = rows_for((quick() ? 100000 : 1000000) / (M * C), 7, 2001);
          s.d = 16;
          s.dtype = t;
          s.logits = logits;
          s.seed = seed++;
          const Pool p = make_pool(s);
          for (Acquisition a : acquisitions_for(s)) expect_parity(p, a);
        }
}

// C = 32768: the committee's mean and votes (2C floats) do not fit in shared memory and live in
// a global scratch buffer; the single-model row fits only in float16/bfloat16 or float32.
TEST(CudaScores, CommitteeWithThirtyTwoThousandClasses) {
  REQUIRE_GPU();
  for (std::int64_t M : {2, 20})
    for (bool logits : {false, true}) {
      Shape s;
      s.m = M;
      s.c = 32768;
      s.n = M == 2 ? 9 : 3;
      s.d = 8;
      s.dtype = M == 2 ? DType::f32 : DType::bf16;
      s.logits = logits;
      s.seed = 7 + M + logits;
      const Pool p = make_pool(s);
      for (Acquisition a : acquisitions_for(s)) expect_parity(p, a);
    }
}

// egl and badge-norm read [N,D] embeddings in the same pass: wide rows, half embeddings.
TEST(CudaScores, EmbeddingsWideAndInHalfPrecision) {
  REQUIRE_GPU();
  struct Case { std::int64_t m, c, d; DType emb; };
  const std::vector<Case> cases = pick<Case>(
      {{0, 10, 1000, DType::f32}, {0, 100, 1000, DType::f16}, {0, 3, 1, DType::f32},
       {0, 2000, 1000, DType::bf16}, {4, 10, 1000, DType::f32}, {0, 31, 4097, DType::f64}},
      {{0, 10, 1000, DType::f32}, {4, 100, 257, DType::f16}});
  std::uint64_t seed = 301;
  for (const Case& k : cases)
    for (bool logits : {false, true}) {
      Shape s;
      s.m = k.m;
      s.c = k.c;
      s.d = k.d;
      s.emb_dtype = k.emb;
      s.n = rows_for(4000000 / (k.d + k.c * std::max<std::int64_t>(k.m, 1)), 7, 3001);
      s.logits = logits;
      s.seed = seed++;
      const Pool p = make_pool(s);
      expect_parity(p, Acquisition::egl);
      expect_parity(p, Acquisition::badge_norm);
    }
}

// Pool sizes that are no multiple of any block size (tiles of 128 rows, 4 warps, grid strides).
TEST(CudaScores, PoolSizesNotAMultipleOfTheBlock) {
  REQUIRE_GPU();
  const auto ns = pick<std::int64_t>({1, 7, 127, 128, 129, 4095, 65537, 1000003}, {1, 129, 65537});
  std::uint64_t seed = 501;
  for (std::int64_t N : ns)
    for (std::int64_t C : {10, 100, 2000}) {
      if (N * C > 20000000) continue;
      Shape s;
      s.n = N;
      s.c = C;
      s.seed = seed++;
      s.logits = (seed % 2) == 0;
      const Pool p = make_pool(s);
      expect_parity(p, Acquisition::entropy);
      expect_parity(p, Acquisition::margin);
      Shape cm = s;
      cm.m = 3;
      cm.n = std::min<std::int64_t>(N, 200003);
      const Pool q = make_pool(cm);
      expect_parity(q, Acquisition::bald);
      expect_parity(q, Acquisition::vote_entropy);
    }
}

// Hand-written rows: each row a hard case, in every dtype, so no generator quirk can hide them.
TEST(CudaScores, HandWrittenHardRows) {
  REQUIRE_GPU();
  const float tiny = 1e-40f;  // a float32 denormal
  const std::vector<std::vector<double>> rows = {
      {1, 0, 0, 0, 0},            // one-hot
      {0, 0, 0, 0, 1},            // one-hot, last class
      {0.2, 0.2, 0.2, 0.2, 0.2},  // uniform
      {0.4, 0.4, 0.1, 0.1, 0.0},  // tie at the top, an exact zero
      {0.5, 0.5, 0, 0, 0},        // tie, three zeros
      {1 - 4 * tiny, tiny, tiny, tiny, tiny},
      {0.25, 0.25, 0.25, 0.25, 0},
      {0.9999, 0.0001, 0, 0, 0},
  };
  const std::int64_t C = 5, N = static_cast<std::int64_t>(rows.size());
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::f64}) {
    Pool p;
    p.shape.n = N;
    p.shape.c = C;
    p.shape.dtype = t;
    p.shape.seed = 0;
    p.input = Buf(t, {N, C});
    for (std::int64_t i = 0; i < N; ++i)
      for (std::int64_t c = 0; c < C; ++c) p.input.set(i * C + c, rows[i][c]);
    for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                          Acquisition::entropy})
      expect_parity(p, a);
    // As a committee of M = 2: member 1 is the rows shifted by one (disagreement, ties of votes).
    Pool q = p;
    q.shape.m = 2;
    q.input = Buf(t, {2, N, C});
    for (std::int64_t i = 0; i < N; ++i)
      for (std::int64_t c = 0; c < C; ++c) {
        q.input.set(i * C + c, rows[i][c]);
        q.input.set((N + i) * C + c, rows[(i + 1) % N][c]);
      }
    for (Acquisition a : acquisitions_for(q.shape)) expect_parity(q, a);
  }
  // Logits at the edges of float: huge finite values, all equal, a lone maximum.
  const double big = 3.0e38;
  const std::vector<std::vector<double>> lrows = {
      {big, -big, 0, 1, 2}, {-big, -big, -big, -big, -big}, {7, 7, 7, 7, 7},
      {1e30, 1e30, -1e30, 0, 0}, {0, 0, 0, 0, 100}, {-1e-30, 1e-30, 0, 0, 0}};
  Pool l;
  l.shape.n = static_cast<std::int64_t>(lrows.size());
  l.shape.c = C;
  l.shape.logits = true;
  l.input = Buf(DType::f32, {l.shape.n, C});
  for (std::int64_t i = 0; i < l.shape.n; ++i)
    for (std::int64_t c = 0; c < C; ++c) l.input.set(i * C + c, lrows[i][c]);
  for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                        Acquisition::entropy})
    expect_parity(l, a);
}

TEST(CudaScores, EmptyPoolWritesNothing) {
  REQUIRE_GPU();
  Buf in(DType::f32, {0, 10});
  std::vector<float> out = poisoned(1);
  quarry::ScoreOptions o;
  o.device = kGpu;
  EXPECT_NO_THROW(quarry::score(in.view(), Acquisition::entropy, out.data(), o));
  EXPECT_EQ(quarry::detail::float_to_bits(out[0]), kPoison);
}

// ------------------------------------------------------------------ bad rows: the CPU's message

TEST(CudaErrors, BadRowsGiveTheCpuMessage) {
  REQUIRE_GPU();
  struct Bad { const char* what; double value; bool logits, add; };
  const std::vector<Bad> bads = {{"NaN", std::nan(""), false, false},
                                 {"+Inf", HUGE_VAL, false, false},
                                 {"negative", -0.25, false, false},
                                 {"sum 1.5", 0.5, false, true},  // added to a class: the row sums to 1.5
                                 {"NaN logit", std::nan(""), true, false},
                                 {"-Inf logit", -HUGE_VAL, true, false}};
  std::uint64_t seed = 701;
  for (std::int64_t M : {0, 3})
    for (std::int64_t C : pick<std::int64_t>({2, 10, 100, 4097}, {10, 4097}))
      for (DType t : {DType::f32, DType::f16, DType::bf16})
        for (const Bad& b : bads) {
          Shape s;
          s.m = M;
          s.c = C;
          s.n = C > 1000 ? 40 : 3001;
          s.dtype = t;
          s.logits = b.logits;
          s.seed = seed++;
          Pool p = make_pool(s);
          // Two bad rows: the lower one is reported; in a committee, in member M - 1.
          const std::int64_t member = M > 0 ? M - 1 : 0;
          for (std::int64_t row : {s.n - 2, s.n / 2 + 1}) {
            const std::int64_t at = (member * s.n + row) * C + (row % C);
            p.input.set(at, b.add ? p.input.at(at) + b.value : b.value);
          }
          SCOPED_TRACE(std::string(b.what) + " in " + s.str());
          for (Acquisition a : {Acquisition::entropy, Acquisition::margin, Acquisition::bald}) {
            if (a == Acquisition::bald && M == 0) continue;
            const std::string cpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kCpu)); });
            const std::string gpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kGpu)); });
            EXPECT_NE(cpu, "(no error)");
            EXPECT_NE(cpu.find("row " + std::to_string(s.n / 2 + 1)), std::string::npos) << cpu;
            EXPECT_EQ(gpu, cpu) << quarry::acquisition_name(a);
            quarry::SelectOptions so;
            so.k = 5;
            const std::string sel = error_of([&] {
              quarry::score_and_select(p.input.view(), a, options(p, kGpu), so);
            });
            EXPECT_EQ(sel, cpu) << "score_and_select, " << quarry::acquisition_name(a);
          }
        }
}

TEST(CudaErrors, BadEmbeddingGivesTheCpuMessage) {
  REQUIRE_GPU();
  Shape s;
  s.n = 1001;
  s.c = 10;
  s.d = 100;
  Pool p = make_pool(s);
  p.emb.set(500 * s.d + 17, std::nan(""));
  p.emb.set(900 * s.d + 3, HUGE_VAL);
  for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm}) {
    const std::string cpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kCpu), p.emb_view()); });
    const std::string gpu = error_of([&] { quarry::score(p.input.view(), a, options(p, kGpu), p.emb_view()); });
    EXPECT_NE(cpu.find("row 500"), std::string::npos) << cpu;
    EXPECT_EQ(gpu, cpu);
  }
}

}  // namespace
}  // namespace cuda_test
