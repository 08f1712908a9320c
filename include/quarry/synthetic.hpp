// A built-in synthetic pool: deterministic model outputs for demos, tests and benchmarks.
#pragma once

#include <cstdint>

#include "quarry/array.hpp"

namespace quarry {

struct SyntheticSpec {
  std::int64_t n = 100000;   // samples
  std::int64_t c = 10;       // classes
  std::int64_t m = 0;        // committee members (0: an [N,C] output)
  std::int64_t d = 0;        // embedding width (0: none)
  bool logits = false;       // write logits instead of probabilities
  DType dtype = DType::f32;  // f32 or f16
  std::uint64_t seed = 0;
};

/// Probabilities (or logits) [N,C] or [M,N,C] of a fictional classifier: most samples are
/// confident, some are ambiguous between two classes, some are near-uniform, and committee
/// members disagree more on the ambiguous ones. Deterministic for a seed, any thread count.
Array synthetic_outputs(const SyntheticSpec& spec);
/// Embeddings [N,D] for the same pool (float32).
Array synthetic_embeddings(const SyntheticSpec& spec);

}  // namespace quarry
