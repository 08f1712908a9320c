// Acquisition scores on the CPU backend against an independent, plain double-precision
// reference written from docs/acquisition.md ("The acquisition contract") alone.
//
// The reference (scores_reference.hpp) deliberately shares no code with the library's per-row
// math: it takes the exact values the library reads (float32, or float16 decoded exactly),
// converts them to double, normalises probabilities by their row sum (or takes a max-subtracted
// softmax of logits), and evaluates every formula in the most literal way, with 0 log 0 = 0.
//
// Every input is generated from a fixed seed, so every run sees the same numbers.
//
// This file: the reference itself and random inputs against it. Hard cases are in
// test_scores_cases.cpp; properties, errors, names and determinism in test_scores_properties.cpp;
// the shared reference and helpers in scores_reference.hpp.
#include <gtest/gtest.h>

#include "scores_reference.hpp"

namespace scores_test {
namespace {

// Prints the worst error seen per score at the end of the run: worst_log() is shared by every
// file of this executable, so the report covers the hard cases and properties too.
class WorstErrorReport : public ::testing::Environment {
 public:
  void TearDown() override {
    if (worst_log().empty()) return;
    std::cout << "\n[ worst error vs the double reference, per score (all random and hard cases) ]\n";
    std::cout << std::left << std::setw(20) << "score" << std::right << std::setw(13) << "max|err|"
              << std::setw(13) << "max rel" << std::setw(13) << "err/tol" << std::setw(11)
              << "rows" << std::setw(9) << "skipped" << "\n";
    for (const auto& [name, st] : worst_log())
      std::cout << std::left << std::setw(20) << name << std::right << std::scientific
                << std::setprecision(2) << std::setw(13) << st.max_abs << std::setw(13)
                << st.max_rel << std::setw(13) << st.max_frac << std::defaultfloat
                << std::setw(11) << st.compared << std::setw(9) << st.skipped << "\n";
  }
};
const auto* const g_report = ::testing::AddGlobalTestEnvironment(new WorstErrorReport);

// ================================================================== 0. the reference itself

// The reference against values worked out by hand, so that a mistake in it cannot hide behind
// an identical mistake in the library.
TEST(Reference, HandComputedValues) {
  const double l2 = std::log(2.0), l3 = std::log(3.0);
  auto ref1 = [](std::vector<double> row, Acquisition a, bool logits = false,
                 std::vector<double> h = {1.0}) {
    const std::int64_t C = static_cast<std::int64_t>(row.size());
    const Tensor in = make_tensor(row, {1, C}, DType::f64);
    const Tensor emb = make_tensor(h, {1, static_cast<std::int64_t>(h.size())}, DType::f64);
    return reference(in, a, logits, &emb)[0];
  };
  EXPECT_NEAR(ref1({0.5, 0.25, 0.25}, Acquisition::entropy), 1.5 * l2, 1e-15);
  EXPECT_NEAR(ref1({0.6, 0.3, 0.1}, Acquisition::least_confidence), 0.4, 1e-15);
  EXPECT_NEAR(ref1({0.6, 0.3, 0.1}, Acquisition::margin), 0.7, 1e-15);
  EXPECT_NEAR(ref1({0.1, 0.3, 0.6}, Acquisition::ratio), 0.5, 1e-15);
  EXPECT_NEAR(ref1({0.5, 0.5}, Acquisition::margin), 1.0, 1e-15);
  EXPECT_NEAR(ref1({1.0}, Acquisition::margin), 0.0, 1e-15);
  EXPECT_NEAR(ref1({1.0}, Acquisition::ratio), 0.0, 1e-15);
  EXPECT_NEAR(ref1({2.0, 1.0, 1.0}, Acquisition::entropy), 1.5 * l2, 1e-15);  // sum 4: normalised
  EXPECT_NEAR(ref1({std::log(2.0), 0.0, 0.0}, Acquisition::entropy, true), 1.5 * l2, 1e-15);
  EXPECT_NEAR(ref1({1e4, -1e4, 0}, Acquisition::entropy, true), 0.0, 1e-15);
  // p = [.75,.25], ||h|| = 2: ||p - e_0|| = .25 sqrt 2, ||p - e_1|| = .75 sqrt 2.
  EXPECT_NEAR(ref1({0.75, 0.25}, Acquisition::egl, false, {0.0, -2.0}),
              2 * (0.75 * 0.25 + 0.25 * 0.75) * std::sqrt(2.0), 1e-15);
  EXPECT_NEAR(ref1({0.75, 0.25}, Acquisition::badge_norm, false, {2.0}), 0.5 * std::sqrt(2.0),
              1e-15);
  // p = [.5,.3,.2], ||h|| = 1: badge = sqrt(.25 + .09 + .04).
  EXPECT_NEAR(ref1({0.5, 0.3, 0.2}, Acquisition::badge_norm), std::sqrt(0.38), 1e-15);
  // egl = .5 sqrt(.38) + .3 sqrt(.25+.49+.04) + .2 sqrt(.25+.09+.64)
  EXPECT_NEAR(ref1({0.5, 0.3, 0.2}, Acquisition::egl),
              0.5 * std::sqrt(0.38) + 0.3 * std::sqrt(0.78) + 0.2 * std::sqrt(0.98), 1e-15);
  // Committee [[1,0],[.5,.5]]: pbar = [.75,.25]; H(pbar) = .75 log(4/3) + .25 log 4;
  // mean H = log2 / 2; KL(e_0||pbar) = log(4/3), KL([.5,.5]||pbar) = .5 log(2/3) + .5 log 2.
  {
    const Tensor com = make_tensor({1.0, 0.0, 0.5, 0.5}, {2, 1, 2}, DType::f64);
    const double hbar = 0.75 * std::log(4.0 / 3) + 0.25 * std::log(4.0);
    EXPECT_NEAR(reference(com, Acquisition::consensus_entropy, false)[0], hbar, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::bald, false)[0], hbar - l2 / 2, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::kl_max, false)[0],
                std::max(std::log(4.0 / 3), 0.5 * std::log(2.0 / 3) + 0.5 * l2), 1e-15);
    // both vote class 0 ([.5,.5] ties to the lowest index)
    EXPECT_NEAR(reference(com, Acquisition::vote_entropy, false)[0], 0.0, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::variation_ratio, false)[0], 0.0, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::entropy, false)[0], hbar, 1e-15);  // on pbar
  }
  {
    const Tensor com = make_tensor({1, 0, 0, 0, 1, 0, 0, 0, 1}, {3, 1, 3}, DType::f64);
    EXPECT_NEAR(reference(com, Acquisition::vote_entropy, false)[0], l3, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::variation_ratio, false)[0], 2.0 / 3, 1e-15);
    EXPECT_NEAR(reference(com, Acquisition::kl_max, false)[0], l3, 1e-15);
  }
  // The O(C) form of ||p - e_y|| used for C > 128 equals the literal one.
  {
    Rng rng(1);
    const auto p = random_prob_row(rng, 300, 0);
    for (std::int64_t y : {0, 17, 299}) {
      double lit = 0;
      for (std::int64_t c = 0; c < 300; ++c) lit += (p[c] - (c == y)) * (p[c] - (c == y));
      EXPECT_NEAR(ref_dist_to_onehot(p, y), std::sqrt(lit), 1e-14);
    }
  }
}

// ================================================================== 1. random inputs vs reference

class RandomVsReference : public ::testing::TestWithParam<Acquisition> {};

TEST_P(RandomVsReference, MatchesDoubleReference) {
  const Acquisition a = GetParam();
  const ScoreInfo& si = info(a);
  struct Shape {
    std::int64_t M, N, C, D;  // M = 0: [N,C]
  };
  std::vector<Shape> shapes;
  if (si.committee) {
    shapes = {{1, 1, 1, 0},    {2, 7, 1, 0},     {1, 7, 3, 0},      {2, 1000, 2, 0},
              {5, 1000, 10, 0}, {20, 1000, 10, 0}, {5, 4099, 3, 0},  {2, 4099, 100, 0},
              {5, 1000, 1000, 0}, {20, 7, 1000, 0}, {20, 1000, 100, 0}, {20, 4099, 2, 0}};
  } else if (si.embeddings) {
    shapes = {{0, 1, 1, 1},      {0, 7, 3, 16},     {0, 1000, 10, 300}, {0, 4099, 2, 16},
              {0, 1000, 1000, 16}, {0, 7, 100, 300}, {0, 4099, 10, 1},   {0, 1000, 100, 300},
              {0, 4099, 1, 16},  {5, 1000, 10, 16}, {20, 7, 1000, 16},  {2, 1000, 2, 300}};
  } else {
    shapes = {{0, 1, 1, 0},     {0, 1, 2, 0},      {0, 7, 1, 0},      {0, 7, 3, 0},
              {0, 7, 10, 0},    {0, 1000, 2, 0},   {0, 1000, 10, 0},  {0, 1000, 100, 0},
              {0, 1000, 1000, 0}, {0, 4099, 1, 0},  {0, 4099, 3, 0},   {0, 4099, 100, 0},
              {0, 7, 1000, 0},  {0, 4099, 1000, 0}, {2, 1000, 10, 0},  {5, 7, 1000, 0},
              {20, 1000, 3, 0}, {1, 4099, 100, 0}};
  }
  ErrStats total;
  for (std::size_t si_ = 0; si_ < shapes.size(); ++si_) {
    const Shape& s = shapes[si_];
    for (std::size_t vi = 0; vi < variants().size(); ++vi) {
      const Variant& v = variants()[vi];
      const Tensor in = random_input(mix_seed(s.M * 31 + s.N, s.C, vi), s.M, s.N, s.C, v);
      Tensor emb;
      if (si.embeddings)
        emb = random_embeddings(mix_seed(s.N, s.D, vi), s.N, s.D,
                                vi % 2 ? DType::f16 : DType::f32);
      std::ostringstream what;
      what << si.name << " " << v.name << " input " << shape_name(in);
      if (si.embeddings) what << " embeddings " << shape_name(emb) << "/"
                              << (emb.dtype == DType::f16 ? "f16" : "f32");
      const ErrStats st = check_against_reference(in, a, v.logits,
                                                  si.embeddings ? &emb : nullptr, what.str());
      if (std::getenv("QUARRY_TEST_VERBOSE"))  // per-case worst errors, for diagnosis
        std::cout << "  " << what.str() << std::scientific << std::setprecision(2)
                  << ": max|err| " << st.max_abs << ", err/tol " << st.max_frac
                  << std::defaultfloat << "\n";
      total.merge(st);
    }
  }
  std::ostringstream line;
  line << std::scientific << std::setprecision(2) << "max|err| " << total.max_abs << ", max rel "
       << total.max_rel << ", max err/tol " << total.max_frac << " over " << total.compared
       << " rows (" << total.skipped << " near-tied rows skipped)";
  std::cout << "[ worst ] " << si.name << ": " << line.str() << "\n";
  RecordProperty("worst_error", line.str());
  EXPECT_EQ(total.failures, 0);
}

std::string acq_param_name(const ::testing::TestParamInfo<Acquisition>& p) {
  std::string s = info(p.param).name;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

INSTANTIATE_TEST_SUITE_P(AllScores, RandomVsReference, ::testing::ValuesIn(all_scores()),
                         acq_param_name);

// float64 input is accepted (the default tolerance for it is documented) and matches too.
TEST(RandomVsReferenceF64, AllScores) {
  const Variant vp{"probs/f64", false, 0, DType::f64};
  const Variant vl{"logits*3/f64", true, 3, DType::f64};
  for (const Variant& v : {vp, vl}) {
    const Tensor in2 = random_input(101, 0, 1000, 10, v);
    const Tensor in3 = random_input(102, 5, 1000, 10, v);
    const Tensor emb = random_embeddings(103, 1000, 16, DType::f32);
    for (const ScoreInfo& si : score_table()) {
      const Tensor& in = si.committee ? in3 : in2;
      check_against_reference(in, si.acq, v.logits, si.embeddings ? &emb : nullptr,
                              std::string(si.name) + " " + v.name);
    }
  }
}

}  // namespace
}  // namespace scores_test
