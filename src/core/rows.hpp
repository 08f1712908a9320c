// Backend-neutral types of the engine's insides, shared by the CPU backend (src/cpu/), the
// CUDA backend (kernels/) and the dispatchers (src/engine/): a float matrix of rows, the picks
// of a greedy strategy, progress reports, and the diagnosis of a row a backend rejected.
// Neither backend includes the other's headers; both include this one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/score_call.hpp"
#include "quarry/array.hpp"
#include "quarry/progress.hpp"
#include "quarry/select.hpp"

namespace quarry {

/// A row-major float32 matrix [n, d] (borrowed or owned).
struct FloatRows {
  const float* data = nullptr;
  std::int64_t n = 0, d = 0;
  std::vector<float> storage;  // the converted copy, when the input was not float32
  const float* row(std::int64_t i) const { return data + i * d; }
};

/// Embeddings [N, D] of any float dtype as float32: borrowed when already float32, else
/// converted once. A NaN or Inf (or a float64 beyond the float32 range) is an Error naming the
/// row and `name`.
FloatRows float_rows(const ArrayView& embeddings, const std::string& name);

/// Copies rows `index` of `x` into a new matrix, in that order.
FloatRows gather_rows(const FloatRows& x, const std::vector<std::int64_t>& index);

/// An uninitialised float buffer for a chunk's scores or keys. Nothing zeroes it: its pages are
/// first touched by the threads that write them, and a large one asks for 2 MiB pages
/// (MADV_HUGEPAGE), which saves most of the page faults of a fresh 40 MB buffer.
class FloatBuffer {
 public:
  explicit FloatBuffer(std::size_t n);
  float* data() { return p_.get(); }
  const float* data() const { return p_.get(); }
  std::size_t size() const { return n_; }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> p_;
  std::size_t n_;
};

// Progress (quarry/progress.hpp) is reported by the backends between steps, outside any
// parallel region: the callback may throw.

/// k-means labels and centroids, as both backends return them.
struct KMeansOut {
  std::vector<std::int32_t> labels;
  std::vector<float> centroids;
  int iterations = 0;
  bool converged = false;
};

/// Throws the Error the CPU backend raises for row `row` of a host-resident call: another
/// backend found that row bad and reports it in the CPU's words (src/cpu/score_cpu.cpp).
[[noreturn]] void diagnose_row(const ScoreCall& call, std::int64_t row);

}  // namespace quarry
