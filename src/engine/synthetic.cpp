// A deterministic synthetic pool: the logits of a fictional classifier over imbalanced classes.
// Every value depends only on (seed, sample, member, class) through the Philox stream, so the
// pool is the same for any thread count.
#include "quarry/synthetic.hpp"

#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"

namespace quarry {
namespace {

// Standard normal from two Philox uniforms (Box-Muller), in double.
double normal(std::uint64_t seed, std::uint64_t counter) {
  const detail::Philox4 r = detail::philox4x32_10(
      static_cast<std::uint32_t>(counter), static_cast<std::uint32_t>(counter >> 32), 0x5EEDu, 1u,
      static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  const double u1 = (static_cast<double>(r.v[0]) + 0.5) / 4294967296.0;
  const double u2 = (static_cast<double>(r.v[1]) + 0.5) / 4294967296.0;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

double uniform(std::uint64_t seed, std::uint64_t counter) {
  return static_cast<double>(detail::uniform_open01(seed ^ 0xA5A5A5A5ull, counter));
}

struct Sample {
  std::int64_t label, rival;
  double sharp;     // logit boost of the true class
  double rival_up;  // logit boost of the rival class (ambiguous samples)
  double spread;    // committee disagreement
};

// Kind of sample: 70% confident, 20% ambiguous between two classes, 10% near-uniform.
// Class frequencies fall off geometrically (class 0 most common).
Sample sample_of(const SyntheticSpec& s, std::int64_t n) {
  const std::uint64_t base = static_cast<std::uint64_t>(n) * 4;
  const double u_kind = uniform(s.seed, base), u_cls = uniform(s.seed, base + 1);
  const double u_riv = uniform(s.seed, base + 2);
  // P(class c) proportional to 0.7^c
  const double total = (1.0 - std::pow(0.7, static_cast<double>(s.c))) / 0.3;
  std::int64_t label = 0;
  double acc = 1.0, mass = 1.0;
  while (label + 1 < s.c && u_cls * total > acc) {
    mass *= 0.7;
    acc += mass;
    ++label;
  }
  const std::int64_t rival = s.c > 1 ? (label + 1 + static_cast<std::int64_t>(u_riv * (s.c - 1))) % s.c : 0;
  if (u_kind < 0.7) return {label, rival, 6.0, 0.0, 0.3};
  if (u_kind < 0.9) return {label, rival, 3.0, 2.8, 1.5};
  return {label, rival, 0.3, 0.0, 1.0};
}

// Writes one row of logits z (turned into probabilities in place unless `logits`).
void write_row(std::vector<double>& v, bool logits, DType dt, void* base, std::int64_t off) {
  const std::size_t c = v.size();
  if (!logits) {
    double mx = v[0];
    for (double x : v) mx = std::max(mx, x);
    double s = 0;
    for (double& x : v) s += (x = std::exp(x - mx));
    for (double& x : v) x /= s;
  }
  for (std::size_t j = 0; j < c; ++j) {
    if (dt == DType::f16)
      static_cast<std::uint16_t*>(base)[off + j] = detail::float_to_half(static_cast<float>(v[j]));
    else
      static_cast<float*>(base)[off + j] = static_cast<float>(v[j]);
  }
}

}  // namespace

Array synthetic_outputs(const SyntheticSpec& s) {
  QUARRY_EXPECTS(s.n >= 0 && s.c >= 1 && s.m >= 0, "synthetic pool: need n >= 0, c >= 1, m >= 0");
  QUARRY_EXPECTS(s.dtype == DType::f32 || s.dtype == DType::f16,
                 "synthetic pool: dtype must be float32 or float16");
  const std::int64_t members = s.m > 0 ? s.m : 1;
  std::vector<std::int64_t> shape = s.m > 0 ? std::vector<std::int64_t>{s.m, s.n, s.c}
                                            : std::vector<std::int64_t>{s.n, s.c};
  Array out = Array::allocate(s.dtype, shape, "synthetic");
  void* base = out.mutable_data();
  parallel_blocks(s.n, s.n * s.c * members > (1 << 15), [&](std::int64_t first, std::int64_t last) {
    std::vector<double> mean(static_cast<std::size_t>(s.c)), z(mean.size());  // per thread
    for (std::int64_t n = first; n < last; ++n) {
      const Sample smp = sample_of(s, n);
      for (std::int64_t c = 0; c < s.c; ++c) {
        mean[c] = 0.7 * normal(s.seed, static_cast<std::uint64_t>(n * s.c + c) * 2);
        if (c == smp.label) mean[c] += smp.sharp;
        if (c == smp.rival) mean[c] += smp.rival_up;
      }
      for (std::int64_t m = 0; m < members; ++m) {
        for (std::int64_t c = 0; c < s.c; ++c) {
          const std::uint64_t ctr = static_cast<std::uint64_t>(((m + 1) * s.n + n) * s.c + c) * 2 + 1;
          z[c] = mean[c] + (s.m > 0 ? smp.spread * normal(s.seed, ctr) : 0.0);
        }
        write_row(z, s.logits, s.dtype, base, (m * s.n + n) * s.c);
      }
    }
  });
  return out;
}

Array synthetic_embeddings(const SyntheticSpec& s) {
  QUARRY_EXPECTS(s.n >= 0 && s.d >= 1, "synthetic embeddings: need n >= 0, d >= 1");
  Array out = Array::allocate(DType::f32, {s.n, s.d}, "synthetic embeddings");
  float* h = static_cast<float*>(out.mutable_data());
  parallel_blocks(s.n, s.n * s.d > (1 << 15), [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t n = first; n < last; ++n) {
      const Sample smp = sample_of(s, n);
      for (std::int64_t j = 0; j < s.d; ++j) {
        // A class centroid (shared by all samples of the class) plus per-sample noise.
        const double centroid = normal(s.seed + 17, static_cast<std::uint64_t>(smp.label * s.d + j));
        const double noise = normal(s.seed + 29, static_cast<std::uint64_t>(n * s.d + j));
        h[n * s.d + j] = static_cast<float>(centroid + 0.5 * noise);
      }
    }
  });
  return out;
}

}  // namespace quarry
