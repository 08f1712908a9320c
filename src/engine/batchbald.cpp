// quarry::select_batchbald. The committee's rows are read once into float32
// probabilities laid out [N][C][M] (a candidate's values together, the members fastest). The
// batch's label configurations are kept as a weight a_s each and the members' posterior weights
// w_s,m (normalised per configuration): exactly, every configuration of the batch's labels with
// its probability, while they number at most `samples`; beyond, `samples` configurations drawn
// from the committee's joint distribution of the batch's labels (ancestral sampling, each new
// label drawn given the configuration's labels so far), each weighing 1 / samples.
//
// The gain of a candidate n: sum_s a_s H(q_s), q_s(c) = sum_m w_s,m p_m,n,c (the distribution
// of y_n given configuration s), minus the members' mean entropy of n. The gains of all the picks
// of one joint batch add up to at most log M; with restarts, once the best score (the smaller of
// the gain and the candidate's pairwise bound) is below options.restart times the best bound,
// the configurations start afresh: a new joint batch. Candidates are scored
// independently (in parallel); the draws are sequential: the batch does not depend on the
// thread count. On CUDA (options.device) the candidates' gains are computed on the device
// (kernels/batchbald.cu) and the rest stays here: the same arithmetic in another order, so
// gains agree to float rounding and picks differ only between candidates whose gains do.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "core/parallel.hpp"
#include "cpu/elem.hpp"
#include "quarry/detail/row_math.hpp"
#include "quarry/batchbald.hpp"
#include "quarry/device.hpp"
#include "quarry/error.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/batchbald_cuda.hpp"
#endif

namespace quarry {
namespace {

double xlogx(double x) { return x > 0.0 ? x * std::log(x) : 0.0; }

template <DType D>
void load_rows(const ArrayView& v, std::vector<float>& out) {
  using E = cpu::Elem<D>;
  const auto* p = static_cast<const typename E::T*>(v.data);
  const std::int64_t n = v.numel();
  for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = E::get(p, i);
}

// [M, N, C] in any float dtype -> probabilities [N][C][M], every row checked (softmax of logits).
std::vector<float> probabilities(const ArrayView& in_view, const BatchBaldOptions& o) {
  Array copy;
  ArrayView in = in_view;
  if (!in.contiguous()) {
    copy = contiguous_copy(in_view, o.input_name);
    in = copy.view();
  }
  const std::int64_t M = in.shape[0], N = in.shape[1], C = in.shape[2];
  std::vector<float> raw(static_cast<std::size_t>(in.numel()));
  switch (in.dtype) {
    case DType::f32: load_rows<DType::f32>(in, raw); break;
    case DType::f64: load_rows<DType::f64>(in, raw); break;
    case DType::f16: load_rows<DType::f16>(in, raw); break;
    case DType::bf16: load_rows<DType::bf16>(in, raw); break;
    default:
      QUARRY_FAIL("batchbald: ", o.input_name, ": expected float32, float16, bfloat16 or float64 outputs, got ",
                  dtype_name(in.dtype));
  }
  const bool half = in.dtype == DType::f16 || in.dtype == DType::bf16;
  const double tol = o.sum_tolerance >= 0 ? o.sum_tolerance : half ? 1e-2 : 1e-3;
  std::vector<float> p(raw.size());
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      const float* r = raw.data() + (m * N + n) * C;
      double zmax = -std::numeric_limits<double>::infinity(), sum = 0.0;
      for (std::int64_t c = 0; c < C; ++c) {
        QUARRY_EXPECTS(std::isfinite(r[c]) && (o.logits || r[c] >= 0.0f), "batchbald: ", o.input_name,
                       ": committee member ", m, ", row ", n, ", class ", c, ": ", r[c],
                       o.logits ? " is not a finite logit" : " is not a probability");
        zmax = std::max(zmax, static_cast<double>(r[c]));
      }
      for (std::int64_t c = 0; c < C; ++c) sum += o.logits ? std::exp(r[c] - zmax) : r[c];
      QUARRY_EXPECTS(o.logits || std::fabs(sum - 1.0) <= tol, "batchbald: ", o.input_name, ": committee member ", m,
                     ", row ", n,
                     ": probabilities sum to ", sum, ", expected 1 within ", tol, " (pass --logits for logits)");
      for (std::int64_t c = 0; c < C; ++c) {
        const double v = o.logits ? std::exp(r[c] - zmax) / sum : r[c] / sum;
        p[static_cast<std::size_t>((n * C + c) * M + m)] = static_cast<float>(v);
      }
    }
  return p;
}

}  // namespace

Selection select_batchbald(const ArrayView& committee, std::int64_t k, const std::vector<std::int64_t>& exclude,
                           const BatchBaldOptions& o) {
  QUARRY_EXPECTS(!committee.on_cuda(), "batchbald: the committee's outputs are read from host memory");
  QUARRY_EXPECTS(committee.rank() == 3, "batchbald: ", o.input_name,
                 ": expected a committee [M, N, C] (members, samples, classes), got shape ",
                 shape_string(committee.shape));
  const std::int64_t M = committee.shape[0], N = committee.shape[1], C = committee.shape[2];
  QUARRY_EXPECTS(M >= 1 && C >= 1, "batchbald: ", o.input_name, ": a committee needs members and classes, got shape ",
                 shape_string(committee.shape));
  QUARRY_USAGE_EXPECTS(o.samples >= 1 && o.samples <= (std::int64_t{1} << 24), "batchbald: samples must be in 1..",
                       std::int64_t{1} << 24, ", got ", o.samples);
  QUARRY_USAGE_EXPECTS(o.restart >= 0.0 && o.restart <= 1.0, "batchbald: restart must be in [0, 1], got ", o.restart);
  std::vector<unsigned char> taken(static_cast<std::size_t>(N), 0);
  for (std::int64_t e : exclude) {
    QUARRY_EXPECTS(e >= 0 && e < N, "batchbald: excluded index ", e, " is not in 0..", N - 1);
    taken[static_cast<std::size_t>(e)] = 1;
  }
  const auto selectable = static_cast<std::int64_t>(std::count(taken.begin(), taken.end(), 0));
  QUARRY_USAGE_EXPECTS(k >= 0 && k <= selectable, "-k ", k, ": only ", selectable, " samples can be selected (", N,
                       " in the pool", exclude.empty() ? "" : ", excluded ones left out", ")");
  // `auto` stays on the CPU until the CUDA path has been checked on a GPU (as dense outputs do);
  // an explicit cuda[:N] runs it, and is refused up front where there is none.
  const DeviceSpec device =
      o.device.kind == DeviceKind::automatic ? DeviceSpec{DeviceKind::cpu, 0} : resolve_device(o.device);
  const std::vector<float> p = probabilities(committee, o);
  const auto at = [&](std::int64_t n, std::int64_t c) { return p.data() + (n * C + c) * M; };

  // The members' mean entropy of each sample.
  std::vector<double> member_entropy(static_cast<std::size_t>(N), 0.0);
  for (std::int64_t n = 0; n < N; ++n) {
    double h = 0.0;
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t m = 0; m < M; ++m) h -= xlogx(at(n, c)[m]);
    member_entropy[static_cast<std::size_t>(n)] = h / static_cast<double>(M);
  }

#if QUARRY_BUILD_CUDA
  // The device holds the candidates alone (balanced:batchbald excludes most of the pool):
  // candidate j is sample rows[j], its gain scattered back to gain[rows[j]].
  std::unique_ptr<cuda::BatchBaldGains> on_device;
  std::vector<std::int64_t> rows;
  std::vector<double> row_gain;
  if (device.kind == DeviceKind::cuda && k > 0) {
    for (std::int64_t n = 0; n < N; ++n)
      if (!taken[static_cast<std::size_t>(n)]) rows.push_back(n);
    const auto R = static_cast<std::int64_t>(rows.size());
    std::vector<float> rp;
    std::vector<double> rh(static_cast<std::size_t>(R));
    if (R < N) rp.resize(static_cast<std::size_t>(R * C * M));
    for (std::int64_t j = 0; j < R; ++j) {
      const std::int64_t n = rows[static_cast<std::size_t>(j)];
      rh[static_cast<std::size_t>(j)] = member_entropy[static_cast<std::size_t>(n)];
      if (R < N) std::copy(at(n, 0), at(n, 0) + C * M, rp.data() + j * C * M);
    }
    on_device = std::make_unique<cuda::BatchBaldGains>(R < N ? rp : p, rh, R, C, M, std::max(o.samples, C),
                                                       device.index);
  }
#endif

  // gains[n] of every candidate over S configurations (weights af[s], member weights wt[m * S + s],
  // member-major: q_s below is summed across s in lanes). Gains below 1e-6 nats are 0: a committee
  // whose members agree gives rounding noise there, and 0 leaves the tie to the lower index.
  const auto noise_free = [](double g) { return g < 1e-6 ? 0.0 : g; };
  const auto gains = [&](const std::vector<float>& af, const std::vector<float>& wt, std::vector<double>& out) {
    const auto S = static_cast<std::int64_t>(af.size());
#if QUARRY_BUILD_CUDA
    if (on_device) {
      on_device->compute(af, wt, row_gain);
      for (std::size_t j = 0; j < rows.size(); ++j) out[static_cast<std::size_t>(rows[j])] = noise_free(row_gain[j]);
      return;
    }
#endif
    parallel_chunks(N, 16, N * S * M * C, [&](std::int64_t b, std::int64_t e, int) {
      std::vector<float> q(static_cast<std::size_t>(S)), hs(static_cast<std::size_t>(S));
      for (std::int64_t n = b; n < e; ++n) {
        if (taken[static_cast<std::size_t>(n)]) continue;
        std::fill(hs.begin(), hs.end(), 0.0f);
        for (std::int64_t c = 0; c < C; ++c) {
          const float* pc = at(n, c);
          float* qv = q.data();
          std::fill(q.begin(), q.end(), 0.0f);
          for (std::int64_t m = 0; m < M; ++m) {  // q_s(c) = sum_m w_s,m p_m,n,c
            const float pm = pc[m];
            const float* wm = wt.data() + m * S;
            QUARRY_SIMD()
            for (std::int64_t s2 = 0; s2 < S; ++s2) qv[s2] += pm * wm[s2];
          }
          float* hv = hs.data();
          QUARRY_SIMD()
          for (std::int64_t s2 = 0; s2 < S; ++s2) hv[s2] -= detail::xlogx(qv[s2]);
        }
        double h = 0.0;
        for (std::int64_t s2 = 0; s2 < S; ++s2) h += static_cast<double>(af[static_cast<std::size_t>(s2)]) * hs[static_cast<std::size_t>(s2)];
        out[static_cast<std::size_t>(n)] = noise_free(h - member_entropy[static_cast<std::size_t>(n)]);
      }
    });
  };
  const auto argmax = [&](const std::vector<double>& v) {
    std::int64_t b = -1;
    for (std::int64_t n = 0; n < N; ++n)
      if (!taken[static_cast<std::size_t>(n)] && (b < 0 || v[static_cast<std::size_t>(n)] > v[static_cast<std::size_t>(b)]))
        b = n;
    return b;
  };

  // Configurations: a[s], and w[s * M + m].
  std::vector<double> a = {1.0};
  std::vector<float> w(static_cast<std::size_t>(M), 1.0f / static_cast<float>(M));
  bool sampled = false;
  std::mt19937_64 rng(o.seed ^ 0x62617463686261ULL);
  std::uniform_real_distribution<double> unit(0.0, 1.0);

  Selection sel;
  std::vector<double> gain(static_cast<std::size_t>(N), 0.0), pair(static_cast<std::size_t>(N), 0.0);
  // With restarts: bound[n] = min(BALD of n, min over the picks j of I(y_n; model | y_j)), an
  // upper bound of n's gain given the whole batch that does not saturate as the joint batch
  // does, and remembers the picks of earlier joint batches (a copy of a pick gains ~0 by it).
  std::vector<double> bound;
  std::int64_t chunk = 0;  // picks in the current joint batch
  for (std::int64_t step = 0; step < k; ++step) {
    auto S = static_cast<std::int64_t>(a.size());  // configurations (1 again where a joint batch restarts)
    {
      std::vector<float> wt(static_cast<std::size_t>(M * S));
      for (std::int64_t s2 = 0; s2 < S; ++s2)
        for (std::int64_t m = 0; m < M; ++m) wt[static_cast<std::size_t>(m * S + s2)] = w[static_cast<std::size_t>(s2 * M + m)];
      gains(std::vector<float>(a.begin(), a.end()), wt, gain);
    }
    std::int64_t best = -1;
    if (o.restart > 0.0) {
      if (step == 0) bound = gain;  // BALD
      for (std::int64_t n = 0; n < N; ++n)
        gain[static_cast<std::size_t>(n)] = std::min(gain[static_cast<std::size_t>(n)], bound[static_cast<std::size_t>(n)]);
      best = argmax(gain);
      // The joint gain of M members' labels is capped at log M nats in all: once the best one is
      // below `restart` of the best a fresh joint batch could gain, a new joint batch starts.
      const std::int64_t fresh = argmax(bound);
      if (chunk > 0 && gain[static_cast<std::size_t>(best)] < o.restart * bound[static_cast<std::size_t>(fresh)]) {
        best = fresh;
        gain[static_cast<std::size_t>(best)] = bound[static_cast<std::size_t>(best)];
        a = {1.0};
        w.assign(static_cast<std::size_t>(M), 1.0f / static_cast<float>(M));
        S = 1;
        sampled = false;
        chunk = 0;
      }
    } else {
      best = argmax(gain);
    }
    ++chunk;
    taken[static_cast<std::size_t>(best)] = 1;
    sel.index.push_back(best);
    sel.score.push_back(static_cast<float>(gain[static_cast<std::size_t>(best)]));
    if (step + 1 == k) break;

    if (o.restart > 0.0) {  // the pairwise gains given the new pick's label: C configurations
      std::vector<float> pa, pwt(static_cast<std::size_t>(M * C), 0.0f);
      for (std::int64_t c = 0; c < C; ++c) {
        const float* pc = at(best, c);
        double q = 0.0;
        for (std::int64_t m = 0; m < M; ++m) q += pc[m];
        q /= static_cast<double>(M);
        pa.push_back(static_cast<float>(q));
        if (q > 0.0)
          for (std::int64_t m = 0; m < M; ++m)
            pwt[static_cast<std::size_t>(m * C + c)] = static_cast<float>(pc[m] / (static_cast<double>(M) * q));
      }
      gains(pa, pwt, pair);
      for (std::int64_t n = 0; n < N; ++n)
        bound[static_cast<std::size_t>(n)] = std::min(bound[static_cast<std::size_t>(n)], pair[static_cast<std::size_t>(n)]);
    }

    // Condition the configurations on the new sample's label.
    const auto child = [&](std::int64_t s, std::int64_t c, float* out) {  // w' of (s, c); returns q_s(c)
      const float* ws = w.data() + s * M;
      const float* pc = at(best, c);
      double sum = 0.0;
      for (std::int64_t m = 0; m < M; ++m) sum += static_cast<double>(ws[m]) * pc[m];
      if (out && sum > 0.0)
        for (std::int64_t m = 0; m < M; ++m) out[m] = static_cast<float>(ws[m] * pc[m] / sum);
      return sum;
    };
    std::vector<double> a2;
    std::vector<float> w2;
    if (!sampled && S * C <= o.samples) {  // exact: every (configuration, label) with probability > 0
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t c = 0; c < C; ++c) {
          const double qc = child(s, c, nullptr);
          if (!(qc > 0.0)) continue;
          a2.push_back(a[static_cast<std::size_t>(s)] * qc);
          w2.resize(w2.size() + static_cast<std::size_t>(M));
          child(s, c, w2.data() + w2.size() - static_cast<std::size_t>(M));
        }
    } else {  // sampled: `samples` draws, each a configuration (by its weight) and a label given it
      std::vector<double> cum(static_cast<std::size_t>(S));
      double total = 0.0;
      for (std::int64_t s = 0; s < S; ++s) cum[static_cast<std::size_t>(s)] = total += a[static_cast<std::size_t>(s)];
      const std::int64_t draws = o.samples;
      a2.assign(static_cast<std::size_t>(draws), 1.0 / static_cast<double>(draws));
      w2.resize(static_cast<std::size_t>(draws * M));
      for (std::int64_t d = 0; d < draws; ++d) {
        std::int64_t s = d;  // sampled already: each configuration extends itself
        if (!sampled) {
          const double u = unit(rng) * total;
          s = std::min<std::int64_t>(S - 1, std::upper_bound(cum.begin(), cum.end(), u) - cum.begin());
        }
        // The label, drawn by q_s (a label of probability 0 is never drawn).
        std::vector<double> qs(static_cast<std::size_t>(C));
        double qsum = 0.0;
        for (std::int64_t j = 0; j < C; ++j) qsum += qs[static_cast<std::size_t>(j)] = child(s, j, nullptr);
        const double u = unit(rng) * qsum;
        double acc = 0.0;
        std::int64_t c = -1;
        for (std::int64_t j = 0; j < C; ++j) {
          if (!(qs[static_cast<std::size_t>(j)] > 0.0)) continue;
          c = j;
          acc += qs[static_cast<std::size_t>(j)];
          if (u < acc) break;
        }
        QUARRY_EXPECTS(c >= 0, "batchbald: a configuration of probability 0 (sample ", best, ")");
        child(s, c, w2.data() + d * M);
      }
      sampled = true;
    }
    a.swap(a2);
    w.swap(w2);
  }
  return sel;
}

}  // namespace quarry
