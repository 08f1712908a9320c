// k-center greedy on the CPU (cpu::kcenter): LazyKCenter, which brings a sample up to date only
// when it reaches the top of a max-heap of stale bounds, and the unpruned reference through
// Coverage (coverage_cpu.hpp). Canonical arithmetic: compiled without FP contraction
// (QUARRY_NO_CONTRACTION in CMakeLists.txt); its float screen is in distance_screen_cpu.cpp.
#include "cpu/diversity_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/coverage_cpu.hpp"
#include "cpu/diversity_internal.hpp"
#include "cpu/diversity_metrics.hpp"
#include "quarry/detail/diversity_math.hpp"

namespace quarry::cpu {

using namespace diversity_detail;

namespace {

// The pool mean in double: fixed chunks of rows (their size depends only on n), each summed in
// index order, then the chunk sums in chunk order.
std::vector<double> pool_mean(const FloatRows& x) {
  const std::int64_t n = x.n, d = x.d;
  const std::int64_t chunk = std::max<std::int64_t>(1024, (n + 1023) / 1024);
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<double> part(static_cast<std::size_t>(chunks * d), 0.0);
  parallel_chunks(chunks, 1, n * d, [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t ch = b; ch < e; ++ch) {
      double* p = part.data() + ch * d;
      for (std::int64_t i = ch * chunk; i < std::min(n, (ch + 1) * chunk); ++i) {
        const float* r = x.row(i);
        for (std::int64_t j = 0; j < d; ++j) p[j] += static_cast<double>(r[j]);
      }
    }
  });
  std::vector<double> mean(static_cast<std::size_t>(d), 0.0);
  for (std::int64_t ch = 0; ch < chunks; ++ch)
    for (std::int64_t j = 0; j < d; ++j) mean[j] += part[ch * d + j];
  for (double& v : mean) v /= static_cast<double>(n);
  return mean;
}

// ---------------------------------------------------------------------------- strategies: k-center

// Greedy k-center only ever needs the largest mind2, and mind2 only decreases as centres are
// added. So every sample keeps its mind2 against the centres up to upto[i], an upper bound of
// its current value, in a max-heap ordered by (value desc, index asc). A pick pops the top
// entries, brings them up to date against the centres added since, and pushes them back,
// until the top entry is up to date: that sample is the exact argmax, lowest index on ties,
// since every other entry's bound (hence its value) is smaller, or equal with a larger index.
// Most samples sit below the covering radius and are rarely brought up to date, so a pick
// costs a few hundred distances to recent centres, held in cache, instead of a pass over the
// pool; the values, and so the picks, are those of the eager update.
//
// Bringing sample p up to date against a new centre s is skipped when a lower bound on
// d(owner_p, s)² (kept for every pair of picks, as a float table, while it fits in
// kPairTableBytes) is >= 4 (mind2_p + E): then d(p, s) >= d(p, owner_p) by the triangle
// inequality. Otherwise a float screen with its error bound, four centres at a time, and the
// canonical distance of what it cannot settle.
class LazyKCenter {
 public:
  explicit LazyKCenter(const FloatRows& x)
      : x_(x), d_(x.d), mind2_(static_cast<std::size_t>(x.n), kInf), upto_(static_cast<std::size_t>(x.n), 0),
        owner_(static_cast<std::size_t>(x.n), -1) {
    std::vector<double> part(static_cast<std::size_t>(max_threads()), 0.0);
    parallel_chunks(x.n, 4096, x.n * x.d, [&](std::int64_t b, std::int64_t e, int t) {
      for (std::int64_t i = b; i < e; ++i) part[t] = std::max(part[t], dot_canonical(x.row(i), x.row(i), d_));
    });
    const double xmax2 = *std::max_element(part.begin(), part.end()) * (1 + 1e-9);
    E_ = 4.1 * static_cast<double>(d_ + 8) * kEps * xmax2;  // as Euclid::E
    screen_ = 4.0 * xmax2 < 1e36;                            // no overflow in float
    gamma_ = detail::sqdist_f32_rel_error(d_ + kScreenExtra);
    factor_ = (1.0 + gamma_) * (1.0 + 4.0 * detail::sqdist_rel_error(d_) + 1e-12);
    abs_ = subnormal_slack(d_ + kScreenExtra);
  }

  /// Labeled samples as the first centres, with every other sample's distance to the nearest
  /// (d2, by index).
  void start(const std::vector<std::int64_t>& labeled, std::vector<double> d2) {
    mind2_ = std::move(d2);
    for (std::int64_t l : labeled) mind2_[l] = kTaken;
    labeled_ = static_cast<std::int64_t>(labeled.size());
    std::fill(upto_.begin(), upto_.end(), static_cast<std::int32_t>(labeled_));
    build_heap();  // owners stay -1: no pair bounds with labeled centres
  }
  /// One first centre c: every distance to it.
  void start(std::int64_t c) {
    const std::int64_t n = x_.n;
    parallel_chunks(n, kPassChunk, n * d_, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) mind2_[i] = sqdist_canonical(x_.row(i), x_.row(c), d_);
    });
    labeled_ = 0;
    add(c);
    std::fill(upto_.begin(), upto_.end(), 1);
    std::fill(owner_.begin(), owner_.end(), 0);
    mind2_[c] = kTaken;
    build_heap();
  }

  /// The next pick: the sample farthest from its nearest centre (value: that squared distance),
  /// made a centre.
  ArgMax next() {
    const std::int32_t now = static_cast<std::int32_t>(centres());
    for (;;) {
      if (upto_[heap_.front().i] == now) {
        std::pop_heap(heap_.begin(), heap_.end());
        const Entry top = heap_.back();
        heap_.pop_back();
        add(top.i);
        ArgMax out;
        out.take(top.v, top.i);
        return out;
      }
      // The stale entries on top, brought up to date together (in parallel when worth it).
      batch_.clear();
      std::int64_t work = 0;
      while (!heap_.empty() && static_cast<int>(batch_.size()) < kBatch && upto_[heap_.front().i] != now) {
        std::pop_heap(heap_.begin(), heap_.end());
        batch_.push_back(heap_.back().i);
        work += (now - upto_[heap_.back().i]) * d_;
        heap_.pop_back();
      }
      parallel_chunks(static_cast<std::int64_t>(batch_.size()), 1, work / 4, [&](std::int64_t b, std::int64_t e, int) {
        for (std::int64_t j = b; j < e; ++j) refresh(batch_[j], now);
      });
      for (std::int32_t i : batch_) {
        heap_.push_back({mind2_[i], i});
        std::push_heap(heap_.begin(), heap_.end());
      }
    }
  }

 private:
  struct Entry {
    double v;
    std::int32_t i;
    bool operator<(const Entry& o) const { return v != o.v ? v < o.v : i > o.i; }  // max-heap
  };
  static constexpr int kBatch = 16;
  static constexpr std::int64_t kPairTableBytes = std::int64_t{256} << 20;

  std::int64_t picks() const { return static_cast<std::int64_t>(picked_.size()) / d_; }
  std::int64_t centres() const { return labeled_ + picks(); }
  const float* pick_row(std::int64_t j) const { return picked_.data() + j * d_; }

  // Pick c joins the centres; its row of pair bounds: lower bounds on the true d(c, j)² for
  // every earlier pick j (the float distance divided by its error factor, rounded down).
  void add(std::int64_t c) {
    const std::int64_t j = picks();
    picked_.insert(picked_.end(), x_.row(c), x_.row(c) + d_);
    if (!screen_ || (pairs_.size() + static_cast<std::size_t>(j)) * sizeof(float) > kPairTableBytes) return;
    pair_start_.push_back(static_cast<std::int64_t>(pairs_.size()));
    pairs_.resize(pairs_.size() + static_cast<std::size_t>(j));
    float* row = pairs_.data() + pair_start_.back();
    parallel_chunks((j + 3) / 4, 64, j * d_, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t q = b * 4; q < std::min(j, e * 4); q += 4) {
        const float* cs[4];
        float f[4];
        for (int u = 0; u < 4; ++u) cs[u] = pick_row(std::min(q + u, j - 1));
        sqdist_f32_x4(x_.row(c), cs, d_, f);
        for (int u = 0; u < 4 && q + u < j; ++u) {
          const double lb = (static_cast<double>(f[u]) - abs_) / (1.0 + gamma_) * (1.0 - 1e-6);
          row[q + u] = lb > 0 ? static_cast<float>(lb) : 0.0f;
        }
      }
    });
  }
  // Lower bound on the true d(pick a, pick s)², a < s; 0 where the table stops.
  float pair_bound(std::int64_t s, std::int64_t a) const {
    return s < static_cast<std::int64_t>(pair_start_.size()) ? pairs_[static_cast<std::size_t>(pair_start_[s] + a)] : 0.0f;
  }
  void build_heap() {
    heap_.clear();
    for (std::int64_t i = 0; i < x_.n; ++i)
      if (mind2_[i] >= 0) heap_.push_back({mind2_[i], static_cast<std::int32_t>(i)});
    std::make_heap(heap_.begin(), heap_.end());
  }
  // mind2 of i against the centres upto[i] .. now-1 (all picks, in a contiguous cache-held
  // copy). f >= m (1 + gamma)(1 + 4 delta) + abs proves the canonical distance >= m.
  void refresh(std::int32_t i, std::int32_t now) {
    const float* r = x_.row(i);
    double m = mind2_[i];
    std::int32_t owner = owner_[i];
    const float* cs[4];
    std::int32_t js[4];
    int queued = 0;
    auto settle = [&](int count) {
      float f[4];
      if (screen_) {
        for (int u = count; u < 4; ++u) cs[u] = cs[0];
        sqdist_f32_x4(r, cs, d_, f);
      }
      for (int u = 0; u < count; ++u) {
        if (screen_ && f[u] >= m * factor_ + abs_) continue;
        const double e = sqdist_canonical(r, cs[u], d_);
        if (e < m) {
          m = e;
          owner = js[u];
        }
      }
    };
    for (std::int64_t s = upto_[i] - labeled_; s < now - labeled_; ++s) {
      // d(owner, s) >= 2 sqrt(m + E): s cannot be nearer than the owner.
      if (owner >= 0 && pair_bound(s, owner) >= 4.0 * (m + E_) * kSlack) continue;
      cs[queued] = pick_row(s);
      js[queued] = static_cast<std::int32_t>(s);
      if (++queued == 4) {
        settle(4);
        queued = 0;
      }
    }
    if (queued > 0) settle(queued);
    mind2_[i] = m;
    owner_[i] = owner;
    upto_[i] = now;
  }

  const FloatRows& x_;
  std::int64_t d_;
  std::vector<double> mind2_;
  std::vector<std::int32_t> upto_;
  std::vector<std::int32_t> owner_;  // the pick nearest each sample, -1 for a labeled one
  std::vector<float> picked_;        // rows of the picks, in pick order
  std::vector<float> pairs_;         // pair bounds, row s at pair_start_[s] (s entries)
  std::vector<std::int64_t> pair_start_;
  std::int64_t labeled_ = 0;
  std::vector<Entry> heap_;
  std::vector<std::int32_t> batch_;
  bool screen_ = true;
  double E_ = 0, gamma_ = 0, factor_ = 1, abs_ = 0;
};

}  // namespace

Selection kcenter(const FloatRows& x, const std::vector<std::int64_t>& labeled, std::int64_t k,
              const ProgressFn& progress, const GreedyOptions& opt) {
  Selection out;
  const std::int64_t n = x.n;
  std::vector<double> d2;
  std::vector<std::int32_t> slot;
  std::int64_t first = -1;
  if (!labeled.empty()) {
    // The distance of every sample to the nearest labeled one, in GEMM blocks.
    FloatRows centres = gather_rows(x, labeled);
    std::vector<std::uint8_t> skip(static_cast<std::size_t>(n), 0);
    for (std::int64_t l : labeled) skip[l] = 1;
    nearest_rows(x, centres, skip, &d2, &slot, progress, "labeled distances");
  } else {
    // No labels: the sample nearest the pool mean (ties to the lower index) starts.
    const std::vector<double> mean = pool_mean(x);
    const ArgMax near = parallel_argmax(n, n * x.d, [&](std::int64_t i) {
      return -sqdist_canonical(x.row(i), mean.data(), x.d);
    });
    first = near.index;
    out.index.push_back(first);
    out.score.push_back(static_cast<float>(std::sqrt(-near.value)));
    report(progress, "picking", 1, k);
  }
  if (opt.prune) {
    LazyKCenter lazy(x);
    if (first >= 0) {
      if (k > 1) lazy.start(first);
    } else {
      lazy.start(labeled, std::move(d2));
    }
    for (std::int64_t t = static_cast<std::int64_t>(out.index.size()); t < k; ++t) {
      const ArgMax pick = lazy.next();
      out.index.push_back(pick.index);
      out.score.push_back(static_cast<float>(std::sqrt(std::max(pick.value, 0.0))));
      report(progress, "picking", t + 1, k);
    }
    return out;
  }
  // The reference: every distance to every new centre, in index order.
  Euclid metric(x);
  Coverage<Euclid> cov(metric, false, false);
  PassStats st;
  if (first >= 0) {
    if (k > 1) st = cov.add_centre(first);
  } else {
    st = cov.set_initial(labeled, d2, slot);
  }
  for (std::int64_t t = static_cast<std::int64_t>(out.index.size()); t < k; ++t) {
    const std::int64_t pick = st.best.index;
    out.index.push_back(pick);
    out.score.push_back(static_cast<float>(std::sqrt(std::max(st.best.value, 0.0))));
    if (t + 1 < k) st = cov.add_centre(pick);
    report(progress, "picking", t + 1, k);
  }
  return out;
}

}  // namespace quarry::cpu
