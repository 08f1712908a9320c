// The greedy state of BADGE, k-means++ seeding and the unpruned k-center reference: Coverage,
// every sample's canonical distance to its nearest centre, kept up to date pick by pick (pruned
// by the triangle inequality), and the exact D² draws over it (D2Tree; d2_sample in
// coverage_cpu.cpp). Canonical arithmetic: include only from files compiled without FP
// contraction (QUARRY_NO_CONTRACTION in CMakeLists.txt). The metrics are in diversity_metrics.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "cpu/diversity_internal.hpp"

namespace quarry::cpu::diversity_detail {

// ---------------------------------------------------------------------------- D² sampling

// q_i = ceil(w_i 2^s) of diversity_math.hpp. Multiplying by an exact power of two is ldexp
// (both round the same way); ldexp itself is a library call per element.
class Quantiser {
 public:
  explicit Quantiser(int s) : s_(s), fast_(s > -1000 && s < 1000), scale_(fast_ ? std::ldexp(1.0, s) : 0.0) {}
  std::uint64_t operator()(double w) const {
    if (!(w > 0.0)) return 0;
    return static_cast<std::uint64_t>(std::ceil(fast_ ? w * scale_ : std::ldexp(w, s_)));
  }

 private:
  int s_;
  bool fast_;
  double scale_;
};

// The O(n) form of the D² draw (coverage_cpu.cpp): the smallest i with q_0 + ... + q_i >
// floor(r Q / 2^64), r = draw `draw` of (seed, stream).
std::int64_t d2_sample(const std::vector<double>& w, double w_max, std::uint64_t seed,
                       std::uint32_t stream, std::uint64_t draw);

// The same draw in O(log n): a Fenwick tree over the q_i in index order, updated for the few
// samples a pick changes, rebuilt when the largest weight changes its power of two (which
// changes s, and so every q_i).
class D2Tree {
 public:
  int scale() const { return s_; }
  void rebuild(const std::vector<double>& w, int s) {
    s_ = s;
    const Quantiser q(s);
    const std::int64_t n = static_cast<std::int64_t>(w.size());
    q_.resize(static_cast<std::size_t>(n));
    tree_.assign(static_cast<std::size_t>(n + 1), 0);
    parallel_chunks(n, 8192, n * 4, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t i = b; i < e; ++i) q_[i] = q(w[i]);
    });
    for (std::int64_t i = 1; i <= n; ++i) {
      tree_[i] += q_[i - 1];
      const std::int64_t j = i + (i & -i);
      if (j <= n) tree_[j] += tree_[i];
    }
  }
  void set(std::int64_t i, double w) {
    const std::uint64_t v = Quantiser(s_)(w);
    const std::uint64_t delta = v - q_[i];  // modulo 2^64: the sums stay exact
    q_[i] = v;
    const std::int64_t n = static_cast<std::int64_t>(q_.size());
    for (std::int64_t j = i + 1; j <= n; j += j & -j) tree_[j] += delta;
  }
  // The smallest i with q_0 + ... + q_i > floor(r Q / 2^64).
  std::int64_t draw(std::uint64_t seed, std::uint32_t stream, std::uint64_t counter) const {
    const std::int64_t n = static_cast<std::int64_t>(q_.size());
    std::uint64_t total = 0;
    for (std::int64_t j = n; j > 0; j -= j & -j) total += tree_[j];
    std::uint64_t t = detail::mulhi64(detail::random_u64(seed, stream, counter), total);
    std::int64_t pos = 0, step = 1;
    while (step * 2 <= n) step *= 2;
    for (; step > 0; step /= 2)
      if (pos + step <= n && tree_[pos + step] <= t) {
        pos += step;
        t -= tree_[pos];
      }
    return pos;
  }

 private:
  int s_ = std::numeric_limits<int>::min();
  std::vector<std::uint64_t> q_, tree_;  // tree_ is 1-based
};

// ---------------------------------------------------------------------------- the greedy state

struct PassStats {
  ArgMax best;  // the largest mind2 of a selectable sample, lowest index on ties
};

// mind2 (the canonical squared distance to the nearest centre) and owner (that centre's slot)
// of every sample against a growing set of centres ("slots"). Taken samples (centres,
// exclusions) have mind2 = kTaken and are never picked. The state is kept by position (see the
// metrics above): idx_[p] is the index at position p, pos_[i] the position of index i.
//
// Pruned (the default), every slot keeps the positions of its members, their largest mind2
// (r2) and their best member; a new centre visits only the members of the slots that the
// triangle inequality cannot rule out as a whole, and computes the distances of only those it
// cannot rule out one by one, so a pick costs what it can change rather than O(N). At 16, 64,
// 256, ... slots the positions are relaid out slot by slot: later slots split earlier ones, so
// their members stay together in memory. Unpruned, every pick computes every distance in index
// order: the reference the tests compare with.
template <class Metric>
class Coverage {
 public:
  Coverage(Metric& m, bool prune, bool sampling)
      : m_(m), prune_(prune), sampling_(sampling), mind2_(static_cast<std::size_t>(m.n()), kInf),
        owner_(static_cast<std::size_t>(m.n()), -1), idx_(static_cast<std::size_t>(m.n())),
        pos_(static_cast<std::size_t>(m.n())) {
    std::iota(idx_.begin(), idx_.end(), 0);
    std::iota(pos_.begin(), pos_.end(), 0);
  }

  /// A sample that is never picked and is not a centre.
  void take(std::int64_t i) { mind2_[pos_[i]] = kTaken; }
  double mind2(std::int64_t i) const { return mind2_[pos_[i]]; }

  /// Initial centres whose distances are already known (kcenter's labeled set: `d2` and `slot`
  /// by index, from nearest_rows; `rows` the slots' indices).
  PassStats set_initial(const std::vector<std::int64_t>& rows, const std::vector<double>& d2,
                        const std::vector<std::int32_t>& slot) {
    slot_row_ = rows;
    for (std::int64_t i = 0; i < m_.n(); ++i) {
      mind2_[pos_[i]] = d2[i];
      owner_[pos_[i]] = slot[i];
    }
    for (std::size_t s = 0; s < rows.size(); ++s) {
      mind2_[pos_[rows[s]]] = kTaken;
      owner_[pos_[rows[s]]] = static_cast<std::int32_t>(s);
    }
    if (!prune_) return full_pass(-1);
    members_.assign(rows.size(), {});
    r2_.assign(rows.size(), 0.0);
    best_.assign(rows.size(), ArgMax{});
    for (std::int64_t p = 0; p < m_.n(); ++p)
      if (mind2_[p] >= 0) members_[owner_[p]].push_back(static_cast<std::int32_t>(p));
    parallel_chunks(slots(), 16, m_.n() * 8, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t a = b; a < e; ++a) {
        sort_members(members_[a]);
        refresh(a);
      }
    });
    return finish({});
  }

  /// Makes index c a centre (taken) and updates every mind2; returns the stats of the result.
  PassStats add_centre(std::int64_t c) {
    const std::int32_t old = owner_[pos_[c]];
    slot_row_.push_back(c);
    mind2_[pos_[c]] = kTaken;
    owner_[pos_[c]] = static_cast<std::int32_t>(slot_row_.size() - 1);
    if (!prune_) return full_pass(c);
    members_.emplace_back();
    r2_.push_back(0.0);
    best_.emplace_back();
    if (slots() == 1) return first_centre(c);
    if (slots() == next_relayout_) relayout();
    return list_pass(c, old);
  }

  /// Draw `draw` of D² sampling over the current mind2 (st: the stats that came with them;
  /// st.best.value > 0).
  std::int64_t sample(const PassStats& st, std::uint64_t seed, std::uint32_t stream, std::uint64_t draw) const {
    if (!sampling_ || !prune_) return d2_sample(mind2_, st.best.value, seed, stream, draw);  // by index
    return tree_.draw(seed, stream, draw);
  }

 private:
  std::int64_t slots() const { return static_cast<std::int64_t>(slot_row_.size()); }

  // ------------------------------------------------ unpruned: every distance, O(N) per pick
  // (positions are indices here: there is no relayout)
  PassStats full_pass(std::int64_t c) {
    const int nt = max_threads();
    std::vector<ArgMax> part(static_cast<std::size_t>(nt));
    const std::int32_t s = static_cast<std::int32_t>(slots() - 1);
    parallel_chunks(m_.n(), kPassChunk, m_.n() * 64, [&](std::int64_t b, std::int64_t e, int t) {
      ArgMax best = part[t];
      for (std::int64_t i = b; i < e; ++i) {
        if (mind2_[i] < 0) continue;
        if (c >= 0) {
          const double d = m_.exact(i, c);
          if (d < mind2_[i]) {
            mind2_[i] = d;
            owner_[i] = s;
          }
        }
        best.take(mind2_[i], i);
      }
      part[t] = best;
    });
    PassStats out;
    for (const ArgMax& a : part) out.best.take(a);
    return out;
  }

  // ------------------------------------------------ pruned
  // Every slot's members are kept in decreasing mind2 (then increasing position): a member's
  // mind2 changes only when it moves to a new slot, so the order holds, and a pass over a slot
  // can stop at the first member whose distance the slot's bound already rules out.
  void sort_members(std::vector<std::int32_t>& mem) const {
    std::sort(mem.begin(), mem.end(), [&](std::int32_t a, std::int32_t b) {
      return mind2_[a] != mind2_[b] ? mind2_[a] > mind2_[b] : a < b;
    });
  }

  // Drops the members of slot a that left it among its first `limit` (the only ones a pass can
  // have moved), keeping the order; then r2 (the first member's mind2) and the best member
  // (the lowest index among those equal to r2).
  void refresh(std::int64_t a, std::size_t limit) {
    auto& mem = members_[a];
    limit = std::min(limit, mem.size());
    std::size_t keep = 0;
    for (std::size_t j = 0; j < limit; ++j) {
      const std::int32_t p = mem[j];
      if (mind2_[p] >= 0 && owner_[p] == a) mem[keep++] = p;
    }
    if (keep < limit) mem.erase(mem.begin() + static_cast<std::ptrdiff_t>(keep), mem.begin() + static_cast<std::ptrdiff_t>(limit));
    ArgMax best;
    r2_[a] = mem.empty() ? 0.0 : mind2_[mem.front()];
    for (std::size_t j = 0; j < mem.size() && mind2_[mem[j]] == r2_[a]; ++j) best.take(r2_[a], idx_[mem[j]]);
    best_[a] = best;
  }
  void refresh(std::int64_t a) { refresh(a, members_[a].size()); }

  PassStats first_centre(std::int64_t c) {
    const std::int64_t n = m_.n();
    parallel_chunks(n, kPassChunk, n * 64, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t p = b; p < e; ++p)
        if (mind2_[p] >= 0) {
          mind2_[p] = m_.exact(idx_[p], c);
          owner_[p] = 0;
        }
    });
    auto& mem = members_[0];
    for (std::int64_t p = 0; p < n; ++p)
      if (mind2_[p] >= 0) mem.push_back(static_cast<std::int32_t>(p));
    sort_members(mem);
    refresh(0);
    return finish({});
  }

  // New positions: the members of each slot together (in their current order), then the rest.
  void relayout() {
    next_relayout_ *= 4;
    const std::int64_t n = m_.n();
    std::vector<std::int32_t> order;  // order[q]: the old position of new position q
    order.reserve(static_cast<std::size_t>(n));
    std::vector<std::int32_t> moved(static_cast<std::size_t>(n), -1);  // old position -> new
    for (auto& mem : members_)
      for (std::int32_t& p : mem) {
        moved[p] = static_cast<std::int32_t>(order.size());
        order.push_back(p);
        p = moved[p];
      }
    for (std::int64_t p = 0; p < n; ++p)
      if (moved[p] < 0) {
        moved[p] = static_cast<std::int32_t>(order.size());
        order.push_back(static_cast<std::int32_t>(p));
      }
    m_.relayout(order);
    permute(mind2_, order);
    permute(owner_, order);
    permute(idx_, order);
    for (std::int64_t q = 0; q < n; ++q) pos_[idx_[q]] = static_cast<std::int32_t>(q);
  }

  // Lower bound on the true squared distance from slot a's centre to c, or +inf when no member
  // of the slot can move (r2 = 0): the norm bound when it already rules out every member, else
  // the canonical distance minus its error bound.
  double slot_bound(std::int64_t a, std::int64_t c) const {
    const double r2 = r2_[a];
    if (r2 <= 0.0) return kInf;
    const double g = std::fabs(m_.rho(pos_[slot_row_[a]]) - m_.rho(pos_[c])) - m_.eta;
    const double nb2 = g > 0 ? g * g : 0.0;
    if (nb2 >= 4.0 * (r2 + m_.E) * kSlack) return nb2;
    return std::max(nb2, m_.exact(slot_row_[a], c) - m_.E);
  }

  PassStats list_pass(std::int64_t c, std::int32_t old_owner) {
    const std::int64_t s = slots() - 1;
    const std::int64_t pc = pos_[c];
    const double E = m_.E, eta = m_.eta, rc = m_.rho(pc);
    // The slots c can take members from: d(a, c) < 2 r_a (with the error bounds).
    lb2_.assign(static_cast<std::size_t>(s), kInf);
    parallel_chunks(s, 64, s * 64, [&](std::int64_t b, std::int64_t e, int) {
      for (std::int64_t a = b; a < e; ++a) lb2_[a] = slot_bound(a, c);
    });
    // The slots to visit, each in chunks; a chunk records how far into the slot it had to go.
    struct Item {
      std::int32_t slot;
      std::int64_t begin, end, reach;
    };
    std::vector<Item> items;
    std::int64_t work = 0;
    for (std::int64_t a = 0; a < s; ++a) {
      if (!(lb2_[a] < 4.0 * (r2_[a] + E) * kSlack)) continue;
      const std::int64_t size = static_cast<std::int64_t>(members_[a].size());
      for (std::int64_t b = 0; b < size; b += kPassChunk)
        items.push_back({static_cast<std::int32_t>(a), b, std::min(size, b + kPassChunk), b});
      work += size * 16;
    }
    movers_.resize(static_cast<std::size_t>(max_threads()));
    for (auto& v : movers_) v.clear();
    const std::int32_t snew = static_cast<std::int32_t>(s);
    parallel_chunks(static_cast<std::int64_t>(items.size()), 1, work, [&](std::int64_t b, std::int64_t e, int t) {
      std::int32_t todo[kPassChunk];
      for (std::int64_t it = b; it < e; ++it) {
        Item& item = items[it];
        const std::int32_t* mem = members_[item.slot].data();
        const double lb2 = lb2_[item.slot];
        // First the members whose distance to c the bounds cannot rule out, then those
        // distances, with the rows a few members ahead prefetched. The members come in
        // decreasing mind2: once d(owner, c) >= 2 d(p, owner) holds, it holds for the rest.
        int count = 0;
        std::int64_t j = item.begin;
        for (; j < item.end; ++j) {
          const std::int32_t p = mem[j];
          const double m = mind2_[p];
          if (m < 0) continue;                                // c itself
          if (m == 0 || lb2 >= 4.0 * (m + E) * kSlack) break;  // d(owner, c) >= 2 d(p, owner)
          const double g = std::fabs(m_.rho(p) - rc) - eta;
          if (g > 0 && g * g >= (m + E) * kSlack) continue;   // | |x_p| - |x_c| | >= d(p, owner)
          todo[count++] = p;
        }
        item.reach = j;
        // The screen on the copies, then the canonical distance of those it cannot settle
        // (the rows of the caller's array, prefetched the same way).
        int left = 0;
        for (int j = 0; j < std::min(count, kAhead); ++j) m_.prefetch(todo[j]);
        for (int j = 0; j < count; ++j) {
          if (j + kAhead < count) m_.prefetch(todo[j + kAhead]);
          const std::int32_t p = todo[j];
          if (!m_.at_least(p, pc, mind2_[p])) todo[left++] = p;
        }
        for (int j = 0; j < std::min(left, kAhead); ++j) m_.prefetch_exact(idx_[todo[j]]);
        for (int j = 0; j < left; ++j) {
          if (j + kAhead < left) m_.prefetch_exact(idx_[todo[j + kAhead]]);
          const std::int32_t p = todo[j];
          const double m = mind2_[p];
          const double d = m_.exact(idx_[p], c);
          if (d < m) {
            mind2_[p] = d;
            owner_[p] = snew;
            movers_[t].push_back(p);
          }
        }
      }
    });
    // The visited slots lose the members that moved (all within how far their chunks went),
    // and c's old slot loses c (anywhere in it).
    std::vector<std::pair<std::int64_t, std::int64_t>> dirty;  // (slot, prefix to compact)
    for (const Item& item : items) {
      if (dirty.empty() || dirty.back().first != item.slot) dirty.emplace_back(item.slot, 0);
      dirty.back().second = std::max(dirty.back().second, item.reach);
    }
    if (old_owner >= 0 && old_owner < s) {
      auto it = std::find_if(dirty.begin(), dirty.end(), [&](const auto& dl) { return dl.first == old_owner; });
      if (it == dirty.end()) it = dirty.insert(dirty.end(), {old_owner, 0});
      it->second = static_cast<std::int64_t>(members_[old_owner].size());
    }
    for (const auto& [a, limit] : dirty) refresh(a, static_cast<std::size_t>(limit));
    auto& mem = members_[s];
    for (const auto& v : movers_) mem.insert(mem.end(), v.begin(), v.end());
    sort_members(mem);
    refresh(s);
    std::vector<std::int32_t> changed(mem.begin(), mem.end());
    changed.push_back(static_cast<std::int32_t>(pc));
    return finish(changed);
  }

  // The global stats from the slots', and the sampling tree brought up to date for the
  // `changed` positions (or rebuilt, when the scale moved).
  PassStats finish(const std::vector<std::int32_t>& changed) {
    PassStats out;
    for (const ArgMax& b : best_) out.best.take(b);
    if (sampling_ && out.best.value > 0) {
      const std::int64_t n = m_.n();
      const int s = detail::d2_scale_exponent(out.best.value, n);
      if (s != tree_.scale()) {
        std::vector<double> w(static_cast<std::size_t>(n));
        for (std::int64_t i = 0; i < n; ++i) w[i] = mind2_[pos_[i]];
        tree_.rebuild(w, s);
      } else {
        for (std::int32_t p : changed) tree_.set(idx_[p], mind2_[p]);
      }
    }
    return out;
  }

  Metric& m_;
  bool prune_, sampling_;
  std::vector<double> mind2_;         // by position
  std::vector<std::int32_t> owner_;   // by position
  std::vector<std::int32_t> idx_, pos_;
  std::vector<std::int64_t> slot_row_;  // the centres' indices
  // pruned only
  std::vector<std::vector<std::int32_t>> members_;  // positions
  std::vector<double> r2_, lb2_;
  std::vector<ArgMax> best_;
  std::vector<std::vector<std::int32_t>> movers_;
  std::int64_t next_relayout_ = 16;
  D2Tree tree_;
};

}  // namespace quarry::cpu::diversity_detail
