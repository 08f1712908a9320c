// The warp- and block-per-row CUDA kernels run the shared per-row math (include/quarry/detail/
// row_math.hpp) with its classes split over the threads of a group (a `Lanes` policy). This
// test runs exactly that split on the CPU, so it is checked without a GPU: G std::threads play
// the G lanes, each runs the same QUARRY_HD function with its own lane number, and the
// combines (max/min/sum/any) meet at a barrier, as shuffles do on the device. Every lane's
// result must equal the one-thread (Serial) result up to the reordering of float sums, and the
// committee scratch (pbar, votes), shared by the lanes, must only be touched by its owners
// (otherwise the results differ between runs and lane counts).
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/detail/row_math.hpp"

namespace {

using quarry::Acquisition;
namespace detail = quarry::detail;

// G lanes meeting at combines: each writes its value, waits for all, folds them in lane
// order, then waits again so that the slots can be reused.
class Meeting {
 public:
  explicit Meeting(int lanes) : lanes_(lanes), slots_(static_cast<std::size_t>(lanes)) {}
  int lanes() const { return lanes_; }

  template <class V, class Op>
  V combine(int lane, V v, Op op) {
    slots_[static_cast<std::size_t>(lane)] = static_cast<double>(v);
    wait();
    V r = static_cast<V>(slots_[0]);
    for (int i = 1; i < lanes_; ++i) r = op(r, static_cast<V>(slots_[static_cast<std::size_t>(i)]));
    wait();
    return r;
  }

 private:
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const long gen = generation_;
    if (++arrived_ == lanes_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }
  int lanes_;
  std::vector<double> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  long generation_ = 0;
};

// A Lanes policy like kernels/lanes.cuh's, over emulated lanes.
struct EmulatedLanes {
  Meeting* m;
  int lane;
  int first() const { return lane; }
  int step() const { return m->lanes(); }
  bool owns(int c) const { return c % m->lanes() == lane; }
  float max(float v) const { return m->combine(lane, v, [](float a, float b) { return b > a ? b : a; }); }
  float sum(float v) const { return m->combine(lane, v, [](float a, float b) { return a + b; }); }
  int sum(int v) const { return m->combine(lane, v, [](int a, int b) { return a + b; }); }
  int min(int v) const { return m->combine(lane, v, [](int a, int b) { return b < a ? b : a; }); }
  unsigned any(unsigned v) const { return m->combine(lane, v, [](unsigned a, unsigned b) { return a | b; }); }
};

// Runs body(lanes) on G threads; returns each lane's result.
template <class R>
std::vector<R> run_lanes(int G, const std::function<R(EmulatedLanes)>& body) {
  Meeting meeting(G);
  std::vector<R> out(static_cast<std::size_t>(G));
  std::vector<std::thread> threads;
  for (int l = 0; l < G; ++l)
    threads.emplace_back([&, l] { out[static_cast<std::size_t>(l)] = body(EmulatedLanes{&meeting, l}); });
  for (auto& t : threads) t.join();
  return out;
}

// A probability row (peaked, flat, with exact zeros and ties) or a logit row.
std::vector<float> make_row(std::mt19937& rng, int C, bool logits, int kind) {
  std::vector<float> r(static_cast<std::size_t>(C));
  std::normal_distribution<float> z(0.0f, kind == 0 ? 1.0f : 6.0f);
  for (auto& x : r) x = z(rng);
  if (kind == 2 && C > 3) r[1] = r[2] = r[0] + 1.0f;  // a tie at the top
  if (logits) return r;
  float s = 0.0f;
  for (auto& x : r) s += (x = std::exp(x));
  for (auto& x : r) x /= s;
  if (kind == 3 && C > 4) {  // exact zeros, renormalised
    r[0] = r[3] = 0.0f;
    s = 0.0f;
    for (float x : r) s += x;
    for (auto& x : r) x /= s;
  }
  return r;
}

void expect_close(float got, float want, const char* what, int C, int G) {
  const float tol = 2e-5f * (1.0f + std::fabs(want)) * (1.0f + std::log(static_cast<float>(C)));
  EXPECT_NEAR(got, want, tol) << what << " C=" << C << " lanes=" << G;
}

const int kClasses[] = {1, 2, 3, 5, 33, 100, 1000};
const int kLanes[] = {1, 3, 32};

TEST(Lanes, RowStatsMatchSerial) {
  std::mt19937 rng(7);
  for (int C : kClasses)
    for (int G : kLanes)
      for (int logits = 0; logits < 2; ++logits)
        for (int kind = 0; kind < 4; ++kind) {
          const std::vector<float> row = make_row(rng, C, logits, kind);
          auto ld = [&row](int c) { return row[static_cast<std::size_t>(c)]; };
          constexpr unsigned kAll = detail::kNeedEntropy | detail::kNeedTop2 | detail::kNeedSquares | detail::kNeedArgmax;
          const detail::RowStats want = detail::row_stats<kAll>(ld, C, logits != 0);
          const auto got = run_lanes<detail::RowStats>(
              G, [&](EmulatedLanes L) { return detail::row_stats<kAll>(ld, C, logits != 0, L); });
          for (const detail::RowStats& st : got) {
            expect_close(st.s, want.s, "s", C, G);
            expect_close(st.t, want.t, "t", C, G);
            expect_close(st.u, want.u, "u", C, G);
            EXPECT_EQ(st.w1, want.w1) << "C=" << C << " lanes=" << G;  // max: exact
            EXPECT_EQ(st.w2, want.w2) << "C=" << C << " lanes=" << G;
            EXPECT_EQ(st.i1, want.i1) << "C=" << C << " lanes=" << G;
            EXPECT_EQ(st.zmax, want.zmax);
            EXPECT_EQ(st.valid, want.valid);
          }
        }
}

TEST(Lanes, BadValueSeenByEveryLane) {
  for (int G : kLanes) {
    std::vector<float> row(50, 0.02f);
    row[37] = std::nanf("");
    auto ld = [&row](int c) { return row[static_cast<std::size_t>(c)]; };
    const auto got = run_lanes<int>(G, [&](EmulatedLanes L) {
      return detail::check_row(detail::row_stats<detail::kNeedEntropy>(ld, 50, false, L), false, 1e-3f);
    });
    for (int e : got) EXPECT_EQ(e, detail::kRowNonFinite) << "lanes=" << G;
  }
}

TEST(Lanes, SingleModelScoresMatchSerial) {
  std::mt19937 rng(11);
  const Acquisition single[] = {Acquisition::least_confidence, Acquisition::margin, Acquisition::ratio,
                                Acquisition::entropy, Acquisition::egl, Acquisition::badge_norm};
  for (int C : kClasses)
    for (int G : kLanes)
      for (int logits = 0; logits < 2; ++logits)
        for (int kind = 0; kind < 4; ++kind) {
          const std::vector<float> row = make_row(rng, C, logits, kind);
          auto ld = [&row](int c) { return row[static_cast<std::size_t>(c)]; };
          for (Acquisition a : single) {
            constexpr unsigned kAll = detail::kNeedEntropy | detail::kNeedTop2 | detail::kNeedSquares | detail::kNeedArgmax;
            const detail::RowStats st = detail::row_stats<kAll>(ld, C, logits != 0);
            const float want = detail::single_model_score(a, st, ld, C, logits != 0, 1.5f);
            const auto got = run_lanes<float>(G, [&](EmulatedLanes L) {
              const detail::RowStats s = detail::row_stats<kAll>(ld, C, logits != 0, L);
              return detail::single_model_score(a, s, ld, C, logits != 0, 1.5f, L);
            });
            for (float g : got) expect_close(g, want, quarry::acquisition_name(a), C, G);
          }
        }
}

TEST(Lanes, CommitteeScoresMatchSerial) {
  std::mt19937 rng(13);
  for (int C : {1, 2, 3, 5, 33, 100})
    for (int G : kLanes)
      for (int M : {1, 3})
        for (int logits = 0; logits < 2; ++logits) {
          std::vector<std::vector<float>> members;
          for (int m = 0; m < M; ++m) members.push_back(make_row(rng, C, logits, m % 4));
          auto ld = [&members](int m, int c) {
            return members[static_cast<std::size_t>(m)][static_cast<std::size_t>(c)];
          };
          for (Acquisition a : quarry::all_acquisitions()) {
            std::vector<float> pbar(static_cast<std::size_t>(C)), votes(static_cast<std::size_t>(C));
            float want = 0.0f;
            const detail::CommitteeCheck wc = detail::committee_score(
                a, ld, M, C, logits != 0, 1e-3f, 2.0f, pbar.data(), votes.data(), &want);
            ASSERT_EQ(wc.error, detail::kRowOk);
            // One scratch shared by all lanes, as a warp's or block's shared memory.
            std::vector<float> spbar(static_cast<std::size_t>(C), -1.0f), svotes(spbar);
            const auto got = run_lanes<float>(G, [&](EmulatedLanes L) {
              float out = -1.0f;
              const detail::CommitteeCheck chk = detail::committee_score(
                  a, ld, M, C, logits != 0, 1e-3f, 2.0f, spbar.data(), svotes.data(), &out, L);
              return chk.error == detail::kRowOk ? out : std::nanf("");
            });
            for (float g : got) expect_close(g, want, quarry::acquisition_name(a), C, G);
          }
        }
}

}  // namespace
