// Acquisition scores on the CPU backend, hard cases (one-hot, uniform, zeros, C = 1 and 2,
// C = 1000, huge logits, ties, committees) against the double reference in scores_reference.hpp.
#include <gtest/gtest.h>

#include "scores_reference.hpp"

namespace scores_test {
namespace {

// ================================================================== 2. hard cases

TEST(HardCases, OneHotRows) {
  for (std::int64_t C : {1, 2, 3, 10, 1000}) {
    for (DType dt : {DType::f32, DType::f16}) {
      const std::int64_t N = std::min<std::int64_t>(C, 37);
      std::vector<double> x(static_cast<std::size_t>(N * C), 0.0);
      for (std::int64_t n = 0; n < N; ++n) x[n * C + (n * 7) % C] = 1.0;
      const Tensor in = make_tensor(x, {N, C}, dt);
      const Tensor emb = random_embeddings(5, N, 16, DType::f32);
      auto s = check_all(in, false, "one-hot C=" + std::to_string(C), &emb);
      for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                            Acquisition::entropy, Acquisition::egl, Acquisition::badge_norm})
        for (std::int64_t n = 0; n < N && s.count(a); ++n)
          EXPECT_NEAR(s[a][n], 0.0, kAtol) << info(a).name << " one-hot C=" << C << " row " << n;
    }
  }
}

TEST(HardCases, UniformRows) {
  for (std::int64_t C : {1, 2, 3, 10, 1000}) {
    const std::int64_t N = 5;
    const Tensor probs = make_tensor(std::vector<double>(N * C, 1.0 / C), {N, C});
    const Tensor logits = make_tensor(std::vector<double>(N * C, -3.25), {N, C});
    const Tensor emb = ones_embeddings(N, 4, 0.5);  // ||h|| = 1
    for (bool lg : {false, true}) {
      const Tensor& in = lg ? logits : probs;
      auto s = check_all(in, lg, std::string("uniform ") + (lg ? "logits" : "probs") +
                                     " C=" + std::to_string(C), &emb);
      const double c = static_cast<double>(C);
      const std::map<Acquisition, double> expect = {
          {Acquisition::least_confidence, 1 - 1 / c},
          {Acquisition::margin, C == 1 ? 0.0 : 1.0},
          {Acquisition::ratio, C == 1 ? 0.0 : 1.0},
          {Acquisition::entropy, std::log(c)},
          {Acquisition::egl, std::sqrt(1 - 1 / c)},
          {Acquisition::badge_norm, std::sqrt(1 - 1 / c)},
      };
      for (const auto& [a, e] : expect)
        for (std::int64_t n = 0; n < N; ++n)
          EXPECT_NEAR(s[a][n], e, tol_for(e)) << info(a).name << " uniform C=" << C;
    }
  }
}

TEST(HardCases, ExactZerosInRows) {
  const std::vector<double> x = {
      0.5, 0.0, 0.5, 0.0, 0.0,  //
      0.0, 0.0, 1.0, 0.0, 0.0,  //
      0.7, 0.3, 0.0, 0.0, 0.0,  //
      0.0, 0.0, 0.0, 0.0, 1.0,  //
      0.0, 0.2, 0.0, 0.8, 0.0,  //
      0.1, 0.2, 0.3, 0.4, 0.0,
  };
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {6, 5}, dt);
    const Tensor emb = random_embeddings(6, 6, 3, DType::f32);
    auto s = check_all(in, false, "exact zeros", &emb);
    EXPECT_NEAR(s[Acquisition::entropy][0], std::log(2.0), tol_for(std::log(2.0)));
    EXPECT_NEAR(s[Acquisition::margin][0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::entropy][1], 0.0, kAtol);
    for (auto& [a, v] : s)
      for (float f : v) EXPECT_TRUE(std::isfinite(f)) << info(a).name;
    // Committee: zeros in members, and classes no member gives mass to.
    const std::vector<double> c = {
        0.5, 0.5, 0.0, 0.0,  // member 0, sample 0
        1.0, 0.0, 0.0, 0.0,  // member 0, sample 1
        0.0, 0.5, 0.5, 0.0,  // member 1, sample 0
        1.0, 0.0, 0.0, 0.0,  // member 1, sample 1
    };
    const Tensor com = make_tensor(c, {2, 2, 4}, dt);
    auto t = check_all(com, false, "committee with zeros");
    for (auto& [a, v] : t)
      for (float f : v) EXPECT_TRUE(std::isfinite(f)) << info(a).name;
    // sample 0: pbar = [.25,.5,.25,0]: H = 1.5 log 2, mean H(p_m) = log 2, bald = 0.5 log 2.
    EXPECT_NEAR(t[Acquisition::bald][0], 0.5 * std::log(2.0), tol_for(0.35));
    EXPECT_NEAR(t[Acquisition::kl_max][0], 0.5 * std::log(2.0), tol_for(0.35));
    EXPECT_NEAR(t[Acquisition::bald][1], 0.0, kAtol);
  }
}

TEST(HardCases, SingleClass) {
  // C = 1: p = [1] always; every score is 0 (p(2) = 0), for probabilities and logits alike.
  const std::int64_t N = 9;
  std::vector<double> lg(N);
  for (std::int64_t n = 0; n < N; ++n) lg[n] = (n - 4) * 1234.5;
  const Tensor probs = make_tensor(std::vector<double>(N, 1.0), {N, 1});
  const Tensor logits = make_tensor(lg, {N, 1});
  std::vector<double> lg3;
  for (int m = 0; m < 3; ++m) lg3.insert(lg3.end(), lg.begin(), lg.end());
  const Tensor com_probs = make_tensor(std::vector<double>(3 * N, 1.0), {3, N, 1});
  const Tensor com_logits = make_tensor(lg3, {3, N, 1});
  const Tensor emb = random_embeddings(7, N, 8, DType::f32);
  for (int k = 0; k < 4; ++k) {
    const Tensor& in = k == 0 ? probs : k == 1 ? logits : k == 2 ? com_probs : com_logits;
    const bool is_logits = k % 2 == 1;
    auto s = check_all(in, is_logits, "C=1 case " + std::to_string(k), &emb);
    for (auto& [a, v] : s)
      for (std::int64_t n = 0; n < N; ++n)
        EXPECT_NEAR(v[n], 0.0, kAtol) << info(a).name << " C=1 case " << k << " row " << n;
  }
}

TEST(HardCases, TwoClasses) {
  const std::vector<double> x = {0.5, 0.5, 0.9, 0.1, 0.1, 0.9, 1.0, 0.0, 0.0, 1.0, 0.75, 0.25};
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {6, 2}, dt);
    const Tensor emb = ones_embeddings(6, 1, -2.0);  // ||h|| = 2
    auto s = check_all(in, false, "C=2", &emb);
    EXPECT_NEAR(s[Acquisition::margin][0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::ratio][0], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::least_confidence][0], 0.5, tol_for(0.5));
    EXPECT_NEAR(s[Acquisition::entropy][0], std::log(2.0), tol_for(0.7));
    // p = [.75,.25]: ||p - e_0|| = .25 sqrt 2, ||p - e_1|| = .75 sqrt 2
    const double egl = 2 * (0.75 * 0.25 * std::sqrt(2.0) + 0.25 * 0.75 * std::sqrt(2.0));
    EXPECT_NEAR(s[Acquisition::egl][5], egl, tol_for(egl));
    EXPECT_NEAR(s[Acquisition::badge_norm][5], 2 * 0.25 * std::sqrt(2.0), tol_for(0.7));
  }
  // Random committees with C = 2.
  for (const Variant& v : variants()) {
    const Tensor com = random_input(11, 3, 500, 2, v);
    check_all(com, v.logits, std::string("C=2 committee ") + v.name);
  }
}

TEST(HardCases, LargeC) {
  const std::int64_t C = 1000, N = 64;
  Rng rng(12);
  std::vector<double> x(static_cast<std::size_t>(N * C), 0.0);
  for (std::int64_t n = 0; n < N; ++n) {
    const auto p = random_prob_row(rng, C, static_cast<int>(n % 5));
    std::copy(p.begin(), p.end(), x.begin() + n * C);
  }
  // a row with one big class and 999 equal tiny ones; a row with two tied tops
  for (std::int64_t c = 0; c < C; ++c) x[c] = c == 500 ? 0.5 : 0.5 / 999;
  for (std::int64_t c = 0; c < C; ++c) x[C + c] = c == 3 || c == 997 ? 0.25 : 0.5 / 998;
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {N, C}, dt);
    const Tensor emb = random_embeddings(13, N, 300, dt);
    auto s = check_all(in, false, "C=1000", &emb);
    EXPECT_NEAR(s[Acquisition::ratio][1], 1.0, tol_for(1.0));
    EXPECT_NEAR(s[Acquisition::margin][1], 1.0, tol_for(1.0));
  }
}

TEST(HardCases, HugeFiniteLogits) {
  const double F = FLT_MAX;
  const std::vector<std::vector<double>> rows = {
      {1e4, -1e4, 0},      {-1e4, 1e4, 0},     {1e4, 1e4, -1e4},   {-1e4, -1e4, -1e4},
      {1e30, -1e30, 0},    {-1e30, -1e30, 1e30}, {1e30, 1e30, 1e30}, {-1e30, 0, -1e30},
      {1e38, -1e38, 0},    {-1e38, -1e38, -1e38}, {1e38, 1e38, -1e38}, {0, 1e-30, -1e-30},
      {88.7, 88.7, -103},  {1e4, 1e4 - 1, 0},  {-1e4, -1e4 + 1, -1e4 + 2}, {0, 0, 0},
  };
  const std::int64_t N = static_cast<std::int64_t>(rows.size()), C = 3;
  std::vector<double> x;
  for (const auto& r : rows) x.insert(x.end(), r.begin(), r.end());
  const Tensor in = make_tensor(x, {N, C});
  const Tensor emb = ones_embeddings(N, 3);
  auto s = check_all(in, true, "huge logits", &emb);
  for (auto& [a, v] : s)
    for (std::int64_t n = 0; n < N; ++n)
      EXPECT_TRUE(std::isfinite(v[n])) << info(a).name << " row " << n << " = " << v[n];
  EXPECT_NEAR(s[Acquisition::entropy][0], 0.0, kAtol);
  EXPECT_NEAR(s[Acquisition::margin][2], 1.0, tol_for(1.0));
  EXPECT_NEAR(s[Acquisition::entropy][3], std::log(3.0), tol_for(1.1));
  EXPECT_NEAR(s[Acquisition::entropy][9], std::log(3.0), tol_for(1.1));
  EXPECT_NEAR(s[Acquisition::entropy][10], std::log(2.0), tol_for(0.7));
  // The largest finite float32 logits, in their own input (so that a failure here does not
  // hide the rows above): x - max overflows to -Inf in float32 for [F, -F], which must still
  // give p = [1, 0] (exp(-Inf) = 0), not an error or NaN.
  {
    const Tensor fm = make_tensor({F, -F, 0, -F, -F, -F, F, F, -F, -F, F, -F}, {4, 3});
    const Tensor emb4 = ones_embeddings(4, 3);
    auto u = check_all(fm, true, "FLT_MAX logits", &emb4);
    EXPECT_NEAR(u[Acquisition::entropy][1], std::log(3.0), tol_for(1.1));
    EXPECT_NEAR(u[Acquisition::entropy][2], std::log(2.0), tol_for(0.7));
  }
  // committee of huge logits, members disagreeing completely
  std::vector<double> c;
  for (int m = 0; m < 4; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < C; ++k) c.push_back(rows[(n + m * 3) % N][k]);
  const Tensor com = make_tensor(c, {4, N, C});
  auto t = check_all(com, true, "huge logits committee", &emb);
  for (auto& [a, v] : t)
    for (std::int64_t n = 0; n < N; ++n)
      EXPECT_TRUE(std::isfinite(v[n])) << info(a).name << " committee row " << n;
  // float16 extremes: +-65504
  std::vector<double> h = {65504, -65504, 0, -65504, -65504, -65504, 65504, 65504, 0};
  const Tensor in16 = make_tensor(h, {3, 3}, DType::f16);
  const Tensor emb3 = ones_embeddings(3, 2);
  check_all(in16, true, "f16 huge logits", &emb3);
}

// Gradient norms of confident rows. ||p - e_y||^2 = sum_c p_c^2 - 2 p_y + 1 is exact algebra
// but, evaluated in float32 for p_y near 1, cancels catastrophically (absolute error ~1e-7 in
// a square of ~2 eps^2), so ||p - e_yhat|| comes out 0 or badly wrong. A float32 evaluation
// that keeps 1 - p_y (e.g. as the sum of the other classes, or 1 - p_y directly, exact by
// Sterbenz for p_y >= 1/2) is accurate to ~ulp(1)/eps relative: <= 6e-4 here. We allow 1e-2.
TEST(HardCases, ConfidentRowsGradientNorms) {
  for (double eps : {1e-2, 1e-3, 1e-4, 3e-5}) {
    for (std::int64_t C : {2, 3, 10}) {
      // row 0: [1 - eps, eps, 0, ...]; row 1: [eps/(C-1) ..., 1 - eps, ...] (the big class
      // in the middle); ||h|| = 1.
      std::vector<double> x(2 * C, 0.0);
      x[0] = 1 - eps;
      x[1] = eps;
      for (std::int64_t c = 0; c < C; ++c) x[C + c] = eps / static_cast<double>(C - 1);
      x[C + C / 2] = 1 - eps;
      for (bool lg : {false, true}) {
        std::vector<double> in_x = x;
        if (lg)  // logits whose softmax is (close to) the same rows
          for (auto& v : in_x) v = v > 0 ? std::log(v) : -1e4;
        const Tensor in = make_tensor(in_x, {2, C});
        const Tensor emb = ones_embeddings(2, 4, 0.5);
        for (Acquisition a : {Acquisition::egl, Acquisition::badge_norm}) {
          const auto ref = reference(in, a, lg, &emb);
          std::vector<float> got;
          ASSERT_NO_THROW(got = lib_score(in, a, lg, &emb));
          for (int n = 0; n < 2; ++n)
            EXPECT_NEAR(got[n], ref[n], 1e-2 * ref[n])
                << info(a).name << (lg ? " logits" : " probs") << " C=" << C << " eps=" << eps
                << " row " << n << " (||h|| = 1)";
        }
      }
    }
  }
}

TEST(HardCases, Ties) {
  const std::vector<double> x = {
      0.4, 0.4, 0.2, 0.0,   //
      0.25, 0.25, 0.25, 0.25, //
      0.1, 0.3, 0.3, 0.3,   //
      0.0, 0.5, 0.0, 0.5,   //
      0.3, 0.2, 0.2, 0.3,   //
  };
  for (DType dt : {DType::f32, DType::f16}) {
    const Tensor in = make_tensor(x, {5, 4}, dt);
    const Tensor emb = ones_embeddings(5, 2);
    auto s = check_all(in, false, "ties", &emb);
    for (int n : {0, 1, 2, 3, 4}) {
      EXPECT_NEAR(s[Acquisition::margin][n], 1.0, tol_for(1.0)) << "row " << n;
      EXPECT_NEAR(s[Acquisition::ratio][n], 1.0, tol_for(1.0)) << "row " << n;
    }
  }
  // Votes: tied members vote for the lowest class index.
  // member 0 = [.5,.5,0] -> votes 0; member 1 = [.2,.2,.6] -> votes 2: shares (1/2, 0, 1/2).
  // member 2 = [0,.5,.5] -> votes 1.
  {
    const Tensor com = make_tensor({0.5, 0.5, 0.0, 0.2, 0.2, 0.6}, {2, 1, 3});
    auto t = check_all(com, false, "vote ties 2 members");
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], std::log(2.0), tol_for(0.7));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 0.5, tol_for(0.5));
  }
  {
    // Three members all tied between classes 1 and 2: all vote 1 -> vote-entropy 0.
    const Tensor com = make_tensor({0.0, 0.5, 0.5, 0.1, 0.45, 0.45, 0.2, 0.4, 0.4}, {3, 1, 3});
    auto t = check_all(com, false, "vote ties all to class 1");
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], 0.0, 1e-6);
    EXPECT_EQ(t[Acquisition::variation_ratio][0], 0.0f);
  }
  {
    // [.5,.5,0] votes 0, [0,.5,.5] votes 1, [.5,0,.5] votes 0: shares (2/3, 1/3, 0).
    const Tensor com =
        make_tensor({0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.5, 0.0, 0.5}, {3, 1, 3});
    auto t = check_all(com, false, "vote ties lowest index");
    const double ve = -(2.0 / 3) * std::log(2.0 / 3) - (1.0 / 3) * std::log(1.0 / 3);
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], ve, tol_for(ve));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 1.0 / 3, tol_for(0.34));
  }
  {
    // Tied logits: [1,1,0] votes 0; [0,2,2] votes 1.
    const Tensor com = make_tensor({1, 1, 0, 0, 2, 2}, {2, 1, 3});
    auto t = check_all(com, true, "vote ties logits");
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], std::log(2.0), tol_for(0.7));
  }
}

TEST(HardCases, CommitteeAgrees) {
  for (std::int64_t M : {1, 2, 5, 20}) {
    for (std::int64_t C : {2, 10, 1000}) {
      for (const Variant& v : variants()) {
        const std::int64_t N = C == 1000 ? 20 : 200;
        const Tensor one = random_input(mix_seed(M, C, 77), 0, N, C, v);
        std::vector<double> x;
        for (std::int64_t m = 0; m < M; ++m) x.insert(x.end(), one.vals.begin(), one.vals.end());
        const Tensor com = make_tensor(x, {M, N, C}, v.dtype);
        const std::string what = "agreeing committee M=" + std::to_string(M) +
                                 " C=" + std::to_string(C) + " " + v.name;
        auto t = check_all(com, v.logits, what);
        // A unanimous committee: bald and kl-max are 0 up to rounding and never negative;
        // vote-entropy is -1 log 1 = 0; variation-ratio is 1 - M/M = 0 exactly.
        const double at = tol_for_classes(C).atol;
        Violations bald(what + " bald"), kl(what + " kl-max"), ve(what + " vote-entropy"),
            vr(what + " variation-ratio");
        for (std::int64_t n = 0; n < N; ++n) {
          const float b = t[Acquisition::bald][n], k = t[Acquisition::kl_max][n];
          const float e = t[Acquisition::vote_entropy][n], r = t[Acquisition::variation_ratio][n];
          auto say = [&](float got) {
            return [=] {
              std::ostringstream os;
              os << std::setprecision(9) << "row " << n << ": got " << got << ", expected 0";
              return os.str();
            };
          };
          bald.check(b >= 0 && b <= at, say(b));
          kl.check(k >= 0 && k <= at, say(k));
          ve.check(e >= 0 && e <= 1e-6, say(e));
          vr.check(r == 0.0f, say(r));
        }
        // Single-model scores on a committee of identical members equal those on the member.
        for (Acquisition a : {Acquisition::least_confidence, Acquisition::margin,
                              Acquisition::ratio, Acquisition::entropy}) {
          const auto a1 = lib_score(one, a, v.logits);
          const auto a2 = t[a];
          std::vector<double> r(a1.begin(), a1.end());
          expect_close(a2, r, tol_for_classes(C).atol, tol_for_classes(C).rtol,
                       what + " " + info(a).name + " vs single model");
        }
      }
    }
  }
}

TEST(HardCases, CommitteeOneHotOnDifferentClasses) {
  // M = 3, C = 3: member m is one-hot on class m. pbar uniform.
  {
    std::vector<double> x;
    for (int m = 0; m < 3; ++m)
      for (int c = 0; c < 3; ++c) x.push_back(c == m ? 1.0 : 0.0);
    for (DType dt : {DType::f32, DType::f16}) {
      const Tensor com = make_tensor(x, {3, 1, 3}, dt);
      const Tensor emb = ones_embeddings(1, 1);
      auto t = check_all(com, false, "one-hot members", &emb);
      const double l3 = std::log(3.0);
      EXPECT_NEAR(t[Acquisition::consensus_entropy][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::bald][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::vote_entropy][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::kl_max][0], l3, tol_for(l3));
      EXPECT_NEAR(t[Acquisition::variation_ratio][0], 2.0 / 3, tol_for(0.67));
      EXPECT_NEAR(t[Acquisition::entropy][0], l3, tol_for(l3));  // on pbar
      EXPECT_NEAR(t[Acquisition::least_confidence][0], 2.0 / 3, tol_for(0.67));
    }
  }
  // M = 2, C = 4, one-hot on classes 0 and 1; plus M = 5 on 5 different classes of C = 1000.
  {
    std::vector<double> x = {1, 0, 0, 0, 0, 1, 0, 0};
    const Tensor com = make_tensor(x, {2, 1, 4});
    auto t = check_all(com, false, "one-hot members M=2");
    const double l2 = std::log(2.0);
    EXPECT_NEAR(t[Acquisition::bald][0], l2, tol_for(l2));
    EXPECT_NEAR(t[Acquisition::kl_max][0], l2, tol_for(l2));
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], l2, tol_for(l2));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 0.5, tol_for(0.5));
  }
  {
    const std::int64_t M = 5, C = 1000;
    std::vector<double> x(M * C, 0.0);
    for (std::int64_t m = 0; m < M; ++m) x[m * C + m * 199] = 1.0;
    const Tensor com = make_tensor(x, {M, 1, C});
    auto t = check_all(com, false, "one-hot members M=5 C=1000");
    const double l5 = std::log(5.0);
    EXPECT_NEAR(t[Acquisition::bald][0], l5, tol_for(l5));
    EXPECT_NEAR(t[Acquisition::vote_entropy][0], l5, tol_for(l5));
    EXPECT_NEAR(t[Acquisition::variation_ratio][0], 0.8, tol_for(0.8));
    // The same with logits of +-1e4
    std::vector<double> lg(M * C, -1e4);
    for (std::int64_t m = 0; m < M; ++m) lg[m * C + m * 199] = 1e4;
    const Tensor coml = make_tensor(lg, {M, 1, C});
    auto u = check_all(coml, true, "one-hot members by logits");
    EXPECT_NEAR(u[Acquisition::bald][0], l5, tol_for(l5));
    EXPECT_NEAR(u[Acquisition::kl_max][0], l5, tol_for(l5));
  }
}

}  // namespace
}  // namespace scores_test
