// Acquisition scores: one public function, a dispatcher that picks the backend.
// The exact definition of every score is in docs/acquisition.md ("The acquisition contract").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/array.hpp"
#include "quarry/device.hpp"

namespace quarry {

enum class Acquisition : int {
  least_confidence,
  margin,
  ratio,
  entropy,
  consensus_entropy,
  bald,
  vote_entropy,
  kl_max,
  variation_ratio,
  egl,
  badge_norm,
};

/// "entropy" -> Acquisition::entropy; an unknown name is an Error listing the valid names.
Acquisition parse_acquisition(std::string_view name);
const char* acquisition_name(Acquisition a);
const std::vector<Acquisition>& all_acquisitions();
/// True for the scores that take a committee [M,N,C].
bool acquisition_needs_committee(Acquisition a);
/// True for the scores that also read embeddings [N,D].
bool acquisition_needs_embeddings(Acquisition a);

struct ScoreOptions {
  /// The input holds logits; a stable softmax is taken in the same pass.
  bool logits = false;
  /// Probability rows must sum to 1 within this tolerance; negative means the default for the
  /// input's dtype (1e-3 for float32/float64, 1e-2 for float16).
  double sum_tolerance = -1.0;
  /// Where it runs: cpu, cuda[:N] or auto (CUDA where this build has it and a device is
  /// visible). An input in CUDA memory runs on its own device (auto or that device).
  DeviceSpec device{};
  /// The caller's CUDA stream (a cudaStream_t) for inputs in device memory: the work is queued
  /// after what the caller has queued on it. Null: the caller has synchronised already.
  void* stream = nullptr;
  /// Used in error messages ("pool.npy: row 17: ...").
  std::string input_name = "input";
  std::string embeddings_name = "embeddings";
};

/// Scores every sample. `input` is [N,C] (or, for committee scores, [M,N,C]; a rank-3 input
/// is read as a committee for every score, and the single-model scores then use the committee
/// mean). `embeddings` is [N,D] and is needed by egl and badge-norm. Writes N floats to `out`,
/// which is memory where the input lives: host memory for a host input; for an input in CUDA
/// memory, memory on the same device (the scores never leave it). Strided host inputs are
/// copied once into a contiguous buffer; a strided CUDA input is an Error.
/// Probabilities are normalised by their row sum, which must be 1 within the tolerance; a row
/// with NaN, Inf or a negative probability is an Error naming the row.
void score(const ArrayView& input, Acquisition acquisition, float* out,
           const ScoreOptions& options = {}, const ArrayView* embeddings = nullptr);

/// As above, the scores in host memory (for a CUDA input, copied back once).
std::vector<float> score(const ArrayView& input, Acquisition acquisition,
                         const ScoreOptions& options = {}, const ArrayView* embeddings = nullptr);

/// The number of samples N of an input of rank 2 ([N,C]) or 3 ([M,N,C]).
std::int64_t pool_size(const ArrayView& input);

}  // namespace quarry
