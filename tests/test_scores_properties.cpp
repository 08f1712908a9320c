// Acquisition scores on the CPU backend: properties (ranges, invariances, float16 against
// float32, normalisation), error messages, names and determinism across thread counts.
#include <gtest/gtest.h>
#include <omp.h>

#include "scores_reference.hpp"

namespace scores_test {
namespace {

// ================================================================== 3. properties

TEST(Properties, EntropyIsLogCAtUniformAndZeroAtOneHot) {
  for (std::int64_t C : {2, 10, 1000}) {
    for (DType dt : {DType::f32, DType::f16}) {
      const Tensor u = make_tensor(std::vector<double>(3 * C, 1.0 / C), {3, C}, dt);
      const auto s = lib_score(u, Acquisition::entropy, false);
      for (float v : s) EXPECT_NEAR(v, std::log(double(C)), tol_for(std::log(double(C)))) << C;
      const Tensor z = make_tensor(std::vector<double>(3 * C, 7.0), {3, C}, dt);
      for (float v : lib_score(z, Acquisition::entropy, true))
        EXPECT_NEAR(v, std::log(double(C)), tol_for(std::log(double(C)))) << C;
      std::vector<double> oh(3 * C, 0.0);
      oh[0] = oh[C + C / 2] = oh[2 * C + C - 1] = 1.0;
      for (float v : lib_score(make_tensor(oh, {3, C}, dt), Acquisition::entropy, false))
        EXPECT_NEAR(v, 0.0, 1e-6) << C;
    }
  }
}

TEST(Properties, BaldIsNonNegative) {
  std::int64_t rows = 0;
  for (std::int64_t M : {1, 2, 5, 20}) {
    for (std::int64_t C : {2, 3, 10, 100, 1000}) {
      for (std::size_t vi = 0; vi < variants().size(); ++vi) {
        const std::int64_t N = C == 1000 ? 60 : 300;
        const Tensor com = random_input(mix_seed(M, C, 500 + vi), M, N, C, variants()[vi]);
        const std::string what = "M=" + std::to_string(M) + " C=" + std::to_string(C) + " " +
                                 variants()[vi].name;
        const auto s = lib_score(com, Acquisition::bald, variants()[vi].logits);
        const auto k = lib_score(com, Acquisition::kl_max, variants()[vi].logits);
        Violations vb("bald >= 0 " + what), vk("kl-max >= 0 " + what);
        for (std::size_t n = 0; n < s.size(); ++n) {
          ++rows;
          auto say = [&](float x) {
            return [&, x, n] {
              std::ostringstream os;
              os << std::setprecision(9) << "row " << n << ": got " << x;
              return os.str();
            };
          };
          vb.check(s[n] >= 0.0f, say(s[n]));
          vk.check(k[n] >= 0.0f, say(k[n]));
        }
      }
    }
  }
  std::cout << "[ bald >= 0 ] checked " << rows << " rows\n";
}

TEST(Properties, InvariantUnderClassPermutation) {
  for (const Variant& v : variants()) {
    for (std::int64_t C : {3, 10, 1000}) {
      const std::int64_t M = 4, N = C == 1000 ? 50 : 500;
      const Tensor com = random_input(mix_seed(C, 9, 1), M, N, C, v);
      std::vector<std::int64_t> perm(C);
      std::iota(perm.begin(), perm.end(), 0);
      Rng rng(C);
      for (std::int64_t i = C - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
      std::vector<double> px(com.vals.size());
      for (std::int64_t r = 0; r < M * N; ++r)
        for (std::int64_t c = 0; c < C; ++c) px[r * C + c] = com.vals[r * C + perm[c]];
      const Tensor pcom = make_tensor(px, com.shape, v.dtype);
      // [N,C]: the first member.
      std::vector<double> x2(com.vals.begin(), com.vals.begin() + N * C);
      std::vector<double> p2(px.begin(), px.begin() + N * C);
      const Tensor in2 = make_tensor(x2, {N, C}, v.dtype), pin2 = make_tensor(p2, {N, C}, v.dtype);
      const Tensor emb = random_embeddings(C, N, 16, DType::f32);
      const auto amb = ambiguous_vote_rows(com, v.logits, 1e-5, /*exact_ties=*/true);
      for (const ScoreInfo& si : score_table()) {
        const Tensor& a = si.committee ? com : in2;
        const Tensor& b = si.committee ? pcom : pin2;
        const auto s1 = lib_score(a, si.acq, v.logits, &emb);
        const auto s2 = lib_score(b, si.acq, v.logits, &emb);
        std::vector<double> r1(s1.begin(), s1.end());
        const std::vector<double> hs = atol_scale_for(si.acq, &emb);
        expect_close(s2, r1, tol_for_classes(C).atol, tol_for_classes(C).rtol,
                     std::string("permuted classes ") + si.name + " " + v.name + " C=" +
                         std::to_string(C),
                     si.votes ? &amb : nullptr, hs.empty() ? nullptr : &hs);
      }
    }
  }
}

TEST(Properties, Ranges) {
  for (const Variant& v : variants()) {
    for (std::int64_t C : {1, 2, 3, 10, 1000}) {
      const std::int64_t N = C == 1000 ? 300 : 3000;
      const Tensor in = random_input(mix_seed(C, 3, 3), 0, N, C, v);
      const std::string what = std::string(v.name) + " C=" + std::to_string(C);
      const auto lc = lib_score(in, Acquisition::least_confidence, v.logits);
      const auto mg = lib_score(in, Acquisition::margin, v.logits);
      const auto rt = lib_score(in, Acquisition::ratio, v.logits);
      const auto en = lib_score(in, Acquisition::entropy, v.logits);
      // 1 - p(1) <= 1 - 1/C holds exactly for the true p; float32 rounding of p(1) = 1/C
      // (a uniform row) may put it an ulp above, hence the 1e-6.
      const double lc_max = 1 - 1.0 / C + 1e-6;
      Violations vlc("least-confidence in [0, 1-1/C] " + what), vmg("margin in [0, 1] " + what),
          vrt("ratio in [0, 1] " + what), ven("entropy in [0, log C] " + what);
      for (std::int64_t n = 0; n < N; ++n) {
        auto say = [&](float x) {
          return [&, x, n] {
            std::ostringstream os;
            os << std::setprecision(9) << "row " << n << ": got " << x << " for row "
               << row_string(in, 0, n);
            return os.str();
          };
        };
        vlc.check(lc[n] >= 0 && lc[n] <= lc_max, say(lc[n]));
        vmg.check(mg[n] >= 0 && mg[n] <= 1, say(mg[n]));
        vrt.check(rt[n] >= 0 && rt[n] <= 1, say(rt[n]));
        ven.check(en[n] >= 0 && en[n] <= std::log(double(C)) + 1e-5, say(en[n]));
      }
    }
  }
  // Committee scores: consensus-entropy in [0, log C], vote-entropy in [0, log min(M, C)],
  // variation-ratio in [0, 1 - 1/M], kl-max >= 0; egl, badge-norm >= 0.
  for (const Variant& v : variants()) {
    for (std::int64_t M : {1, 2, 5, 20}) {
      for (std::int64_t C : {2, 3, 10}) {
        const std::int64_t N = 1000;
        const Tensor com = random_input(mix_seed(M, C, 4), M, N, C, v);
        const Tensor emb = random_embeddings(M + C, N, 8, DType::f32);
        const std::string what =
            std::string(v.name) + " M=" + std::to_string(M) + " C=" + std::to_string(C);
        const double logC = std::log(double(C)), logMC = std::log(double(std::min(M, C)));
        struct Bound {
          Acquisition a;
          double lo, hi;
        };
        const std::vector<Bound> bounds = {
            {Acquisition::consensus_entropy, 0, logC + 1e-5},
            {Acquisition::vote_entropy, 0, logMC + 1e-5},
            {Acquisition::variation_ratio, 0, 1 - 1.0 / M + 1e-6},
            {Acquisition::kl_max, 0, std::numeric_limits<double>::infinity()},
            {Acquisition::egl, 0, std::numeric_limits<double>::infinity()},
            {Acquisition::badge_norm, 0, std::numeric_limits<double>::infinity()},
        };
        for (const Bound& b : bounds) {
          const auto s = lib_score(com, b.a, v.logits, &emb);
          Violations vio(std::string(info(b.a).name) + " range " + what);
          for (std::int64_t n = 0; n < N; ++n)
            vio.check(s[n] >= b.lo && s[n] <= b.hi, [&, n] {
              std::ostringstream os;
              os << std::setprecision(9) << "row " << n << ": got " << s[n] << " outside ["
                 << b.lo << ", " << b.hi << "]";
              return os.str();
            });
        }
      }
    }
  }
}

TEST(Properties, LogitsEqualSoftmaxProbabilities) {
  for (double scale : {0.1, 3.0, 30.0}) {
    for (std::int64_t C : {2, 10, 1000}) {
      const std::int64_t M = 3, N = C == 1000 ? 100 : 1000;
      const Variant v{"logits", true, scale, DType::f32};
      const Tensor lg = random_input(mix_seed(C, 1, 2), M, N, C, v);
      // softmax in double, stored as float32
      std::vector<double> px(lg.vals.size());
      for (std::int64_t r = 0; r < M * N; ++r) {
        const auto p = ref_probs(lg.vals.data() + r * C, C, true);
        std::copy(p.begin(), p.end(), px.begin() + r * C);
      }
      const Tensor pr = make_tensor(px, lg.shape);
      std::vector<double> l2(lg.vals.begin(), lg.vals.begin() + N * C);
      std::vector<double> p2(px.begin(), px.begin() + N * C);
      const Tensor lg2 = make_tensor(l2, {N, C}), pr2 = make_tensor(p2, {N, C});
      const Tensor emb = random_embeddings(4, N, 16, DType::f32);
      const auto amb = ambiguous_vote_rows(pr, false);
      for (const ScoreInfo& si : score_table()) {
        const auto a = lib_score(si.committee ? lg : lg2, si.acq, true, &emb);
        const auto b = lib_score(si.committee ? pr : pr2, si.acq, false, &emb);
        std::vector<double> rb(b.begin(), b.end());
        std::ostringstream w;
        w << "logits vs softmax probabilities " << si.name << " scale " << scale << " C=" << C;
        const std::vector<double> hs = atol_scale_for(si.acq, &emb);
        expect_close(a, rb, tol_for_classes(C).atol, tol_for_classes(C).rtol, w.str(),
                     si.votes ? &amb : nullptr, hs.empty() ? nullptr : &hs);
      }
    }
  }
}

TEST(Properties, Float16CloseToFloat32) {
  // float16 keeps 11 significant bits: each probability moves by at most 2^-11 relative, so
  // the scores (Lipschitz in p on these inputs) move by a few 1e-3 at most.
  const double tol16 = 5e-3;
  for (bool logits : {false, true}) {
    const std::int64_t M = 4, N = 1000, C = 10;
    const Variant v32{"f32", logits, 3, DType::f32};
    const Tensor a = random_input(99, M, N, C, v32);
    const Tensor b = make_tensor(a.vals, a.shape, DType::f16);
    std::vector<double> x2(a.vals.begin(), a.vals.begin() + N * C);
    const Tensor a2 = make_tensor(x2, {N, C}), b2 = make_tensor(x2, {N, C}, DType::f16);
    const Tensor emb32 = random_embeddings(98, N, 16, DType::f32);
    const Tensor emb16 = make_tensor(emb32.vals, emb32.shape, DType::f16);
    // float16 rounding (2^-11 relative; <= 0.008 absolute for these logits) can reorder or
    // merge classes closer than that: those rows are not compared for vote scores.
    const auto amb = ambiguous_vote_rows(a, logits, 2e-2, /*exact_ties=*/true);
    for (const ScoreInfo& si : score_table()) {
      const auto s32 = lib_score(si.committee ? a : a2, si.acq, logits, &emb32);
      const auto s16 = lib_score(si.committee ? b : b2, si.acq, logits, &emb16);
      std::vector<double> r(s32.begin(), s32.end());
      const std::vector<double> hs = atol_scale_for(si.acq, &emb32);
      expect_close(s16, r, tol16, tol16,
                   std::string("float16 vs float32 ") + si.name + (logits ? " logits" : " probs"),
                   si.votes ? &amb : nullptr, hs.empty() ? nullptr : &hs);
    }
  }
}

TEST(Properties, EveryRowWrittenPointerOverload) {
  const std::int64_t N = 4099;
  for (const ScoreInfo& si : score_table()) {
    for (const Variant& v : variants()) {
      const Tensor in = random_input(mix_seed(N, 5, 6), si.committee ? 3 : 0, N, 10, v);
      const Tensor emb = random_embeddings(8, N, 16, DType::f32);
      const quarry::ArrayView ev = emb.view();
      std::vector<float> out(N + 16, std::numeric_limits<float>::quiet_NaN());
      for (std::int64_t i = N; i < N + 16; ++i) out[i] = 12345.0f;  // canary past the end
      quarry::score(in.view(), si.acq, out.data(), cpu_options(v.logits),
                    si.embeddings ? &ev : nullptr);
      std::int64_t unwritten = 0;
      for (std::int64_t n = 0; n < N; ++n) unwritten += std::isnan(out[n]) ? 1 : 0;
      EXPECT_EQ(unwritten, 0) << si.name << " " << v.name;
      for (std::int64_t i = N; i < N + 16; ++i)
        EXPECT_EQ(out[i], 12345.0f) << si.name << " wrote past the end at " << i;
      const auto vec = lib_score(in, si.acq, v.logits, &emb);
      ASSERT_EQ(vec.size(), static_cast<std::size_t>(N));
      EXPECT_EQ(std::memcmp(vec.data(), out.data(), N * sizeof(float)), 0)
          << si.name << " pointer and vector overloads differ";
    }
  }
}

TEST(Properties, SumToleranceAndNormalisation) {
  // float32 default 1e-3: a row summing to 1.0005 is accepted and normalised by its sum.
  {
    const Tensor in = make_tensor({0.5, 0.5005, 0.2, 0.8}, {2, 2});
    check_all(in, false, "sum 1.0005");
    const auto s = lib_score(in, Acquisition::entropy, false);
    EXPECT_NEAR(s[0], reference(in, Acquisition::entropy, false)[0], kAtol);
  }
  // A looser sum_tolerance lets a row summing to 0.9 through; it is normalised by its sum.
  {
    const Tensor in = make_tensor({0.45, 0.45, 0.3, 0.6}, {2, 2});
    quarry::ScoreOptions o = cpu_options();
    o.sum_tolerance = 0.2;
    const auto s = quarry::score(in.view(), Acquisition::margin, o);
    EXPECT_NEAR(s[0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[1], 1 - (0.6 / 0.9 - 0.3 / 0.9), tol_for(0.67));
    const auto e = quarry::score(in.view(), Acquisition::entropy, o);
    EXPECT_NEAR(e[0], std::log(2.0), tol_for(0.7));
  }
  // float16 default 1e-2: 1.005 passes.
  {
    const Tensor in = make_tensor({0.5, 0.505, 0.25, 0.75}, {2, 2}, DType::f16);
    EXPECT_NO_THROW(lib_score(in, Acquisition::entropy, false));
    check_all(in, false, "f16 sum 1.005");
  }
  // Logits need not sum to anything.
  {
    const Tensor in = make_tensor({5, 3, -1, 2, 2, 2}, {2, 3});
    EXPECT_NO_THROW(lib_score(in, Acquisition::entropy, true));
  }
}

// ================================================================== 4. errors

// The message of the quarry::Error `f` throws ("" and a failure if it throws nothing or
// something else).
std::string error_message(const std::function<void()>& f, const std::string& what) {
  try {
    f();
  } catch (const quarry::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-quarry exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << what << ": did not throw";
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// A valid [10,4] probability input with row `row` replaced by `bad`.
Tensor ten_rows_with(std::int64_t row, std::vector<double> bad, DType dt = DType::f32,
                     bool committee = false) {
  const std::int64_t N = 10, C = 4;
  std::vector<double> x;
  const std::int64_t M = committee ? 3 : 1;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = 0; c < C; ++c)
        x.push_back((m == M - 1 && n == row) ? bad[c] : (c + 1) / 10.0);
  return make_tensor(x, committee ? std::vector<std::int64_t>{M, N, C}
                                   : std::vector<std::int64_t>{N, C},
                     dt);
}

TEST(Errors, BadProbabilityRowsNameTheRow) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    const char* what;
    std::int64_t row;
    std::vector<double> values;
  };
  const std::vector<Case> cases = {
      {"NaN", 5, {0.25, nan, 0.25, 0.25}},
      {"sum 0.9", 7, {0.3, 0.3, 0.2, 0.1}},
      {"sum 1.1", 2, {0.3, 0.3, 0.3, 0.2}},
      {"negative", 3, {0.6, -0.1, 0.3, 0.2}},
      {"+Inf", 8, {inf, 0.0, 0.0, 0.0}},
      {"-Inf", 4, {-inf, 0.5, 0.5, 0.0}},
      {"all zero", 6, {0.0, 0.0, 0.0, 0.0}},
      {"NaN in last row", 9, {nan, nan, nan, nan}},
  };
  for (const Case& c : cases) {
    for (DType dt : {DType::f32, DType::f16}) {
      for (bool committee : {false, true}) {
        const Tensor in = ten_rows_with(c.row, c.values, dt, committee);
        for (const ScoreInfo& si : score_table()) {
          if (si.committee && !committee) continue;
          const Tensor emb = ones_embeddings(10, 2);
          const std::string what = std::string(c.what) + " " + si.name +
                                   (dt == DType::f16 ? " f16" : " f32") +
                                   (committee ? " committee" : "");
          const std::string msg =
              error_message([&] { lib_score(in, si.acq, false, &emb); }, what);
          const std::string row = "row " + std::to_string(c.row);
          EXPECT_TRUE(contains(msg, row)) << what << ": message does not name " << row << ": "
                                          << msg;
        }
      }
    }
  }
}

TEST(Errors, BadLogitsNameTheRow) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {inf, -inf, nan}) {
    for (DType dt : {DType::f32, DType::f16}) {
      for (bool committee : {false, true}) {
        const Tensor in = ten_rows_with(5, {1.0, bad, -2.0, 0.0}, dt, committee);
        for (const ScoreInfo& si : score_table()) {
          if (si.committee && !committee) continue;
          const Tensor emb = ones_embeddings(10, 2);
          const std::string what = std::string("logit ") + std::to_string(bad) + " " + si.name;
          const std::string msg =
              error_message([&] { lib_score(in, si.acq, true, &emb); }, what);
          EXPECT_TRUE(contains(msg, "row 5")) << what << ": " << msg;
        }
      }
    }
  }
}

TEST(Errors, InputNameAppearsInMessage) {
  const Tensor in = ten_rows_with(5, {0.25, std::nan(""), 0.25, 0.25});
  quarry::ScoreOptions o = cpu_options();
  o.input_name = "pool_outputs.npy";
  const std::string msg =
      error_message([&] { quarry::score(in.view(), Acquisition::entropy, o); }, "input_name");
  EXPECT_TRUE(contains(msg, "pool_outputs.npy")) << msg;
  EXPECT_TRUE(contains(msg, "row 5")) << msg;
}

TEST(Errors, ShapeErrors) {
  const Tensor r2 = make_tensor(std::vector<double>(12, 0.25), {3, 4});
  const Tensor r1 = make_tensor(std::vector<double>(4, 0.25), {4});
  const Tensor r4 = make_tensor(std::vector<double>(2 * 2 * 3 * 4, 0.25), {2, 2, 3, 4});
  const Tensor emb = ones_embeddings(3, 2);
  for (const ScoreInfo& si : score_table()) {
    if (si.committee) {
      EXPECT_THROW(lib_score(r2, si.acq, false), quarry::Error) << si.name << " on [N,C]";
    }
    EXPECT_THROW(lib_score(r1, si.acq, false, &emb), quarry::Error) << si.name << " rank 1";
    EXPECT_THROW(lib_score(r4, si.acq, false, &emb), quarry::Error) << si.name << " rank 4";
  }
}

TEST(Errors, EmbeddingErrors) {
  const Tensor in = make_tensor(std::vector<double>(12, 0.25), {3, 4});
  const Tensor com = make_tensor(std::vector<double>(24, 0.25), {2, 3, 4});
  const Tensor wrong_n = ones_embeddings(4, 2);
  const Tensor wrong_n_small = ones_embeddings(2, 2);
  for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm}) {
    const std::string name = info(a).name;
    EXPECT_THROW(lib_score(in, a, false, nullptr), quarry::Error) << name << " without embeddings";
    EXPECT_THROW(lib_score(com, a, false, nullptr), quarry::Error) << name << " without embeddings";
    EXPECT_THROW(lib_score(in, a, false, &wrong_n), quarry::Error) << name << " N+1 embeddings";
    EXPECT_THROW(lib_score(in, a, false, &wrong_n_small), quarry::Error) << name << " N-1";
    EXPECT_THROW(lib_score(com, a, false, &wrong_n), quarry::Error) << name << " committee N+1";
    quarry::ScoreOptions o = cpu_options();
    o.embeddings_name = "features_h.npy";
    const quarry::ArrayView ev = wrong_n.view();
    const std::string msg = error_message(
        [&] { quarry::score(in.view(), a, o, &ev); }, name + " embeddings_name");
    EXPECT_TRUE(contains(msg, "features_h.npy")) << msg;
  }
}

TEST(Errors, UnknownAcquisitionNameListsValidNames) {
  const std::string msg =
      error_message([] { quarry::parse_acquisition("entropee"); }, "parse_acquisition");
  EXPECT_TRUE(contains(msg, "entropy")) << msg;
  for (const ScoreInfo& si : score_table()) EXPECT_TRUE(contains(msg, si.name)) << msg;
  EXPECT_THROW(quarry::parse_acquisition(""), quarry::Error);
}

// ================================================================== 5. names

TEST(Names, RoundTrip) {
  const auto& all = quarry::all_acquisitions();
  ASSERT_EQ(all.size(), score_table().size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    const ScoreInfo& si = score_table()[i];
    EXPECT_EQ(std::count(all.begin(), all.end(), si.acq), 1) << si.name;
    EXPECT_STREQ(quarry::acquisition_name(si.acq), si.name);
    EXPECT_EQ(quarry::parse_acquisition(si.name), si.acq) << si.name;
    EXPECT_EQ(quarry::parse_acquisition(quarry::acquisition_name(si.acq)), si.acq);
    EXPECT_EQ(quarry::acquisition_needs_committee(si.acq), si.committee) << si.name;
    EXPECT_EQ(quarry::acquisition_needs_embeddings(si.acq), si.embeddings) << si.name;
  }
}

TEST(Names, PoolSize) {
  const Tensor r2 = make_tensor(std::vector<double>(12, 0.25), {3, 4});
  const Tensor r3 = make_tensor(std::vector<double>(24, 0.25), {2, 3, 4});
  EXPECT_EQ(quarry::pool_size(r2.view()), 3);
  EXPECT_EQ(quarry::pool_size(r3.view()), 3);
}

// ================================================================== 6. determinism

class OmpThreads {
 public:
  OmpThreads() : saved_(omp_get_max_threads()) {}
  ~OmpThreads() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

TEST(Determinism, SameResultWithOneAndTwoThreads) {
  OmpThreads guard;
  for (const ScoreInfo& si : score_table()) {
    for (std::size_t vi : {0u, 1u, 3u}) {
      const Variant& v = variants()[vi];
      const Tensor in = random_input(mix_seed(4099, 100, vi), si.committee ? 5 : 0, 4099, 100, v);
      const Tensor emb = random_embeddings(21, 4099, 64, DType::f32);
      omp_set_num_threads(1);
      const auto one = lib_score(in, si.acq, v.logits, &emb);
      omp_set_num_threads(2);
      const auto two = lib_score(in, si.acq, v.logits, &emb);
      const auto again = lib_score(in, si.acq, v.logits, &emb);
      ASSERT_EQ(one.size(), two.size());
      EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0)
          << si.name << " " << v.name << ": 1 vs 2 threads";
      EXPECT_EQ(std::memcmp(two.data(), again.data(), two.size() * sizeof(float)), 0)
          << si.name << " " << v.name << ": two runs differ";
    }
  }
}

}  // namespace
}  // namespace scores_test
