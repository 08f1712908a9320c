// Where an engine call's arrays live, and the contiguous views its backends read: the checks
// every public entry point makes before it dispatches (src/engine/*.cpp).
#pragma once

#include <string>

#include "quarry/acquisition.hpp"
#include "quarry/array.hpp"
#include "quarry/device.hpp"

namespace quarry {

/// `view` itself when it is contiguous; otherwise a contiguous host copy kept in *holder (a
/// strided CUDA view is an Error naming `name` that says to make it contiguous).
ArrayView contiguous_view(const ArrayView& view, Array* holder, const std::string& name);

/// The backend that runs a call on `view`: for a host view, `requested` resolved as everywhere;
/// for a CUDA view, its own device (auto or cuda, or cuda:N naming that device). A CUDA view
/// with device cpu, another device, or a build or machine without CUDA is an Error naming
/// `name` and saying what to do.
DeviceSpec device_for(const ArrayView& view, const DeviceSpec& requested, const std::string& name);

/// Both arrays of one call in the same memory; otherwise an Error naming both.
void expect_same_location(const ArrayView& a, const std::string& a_name, const ArrayView& b,
                          const std::string& b_name);

/// A scoring call's pool and embeddings as its backends read them: contiguous (strided host
/// arrays copied once into the holders) and in the same memory (else an Error naming both).
struct ScoreArrays {
  ScoreArrays(const ArrayView& input, const ArrayView* embeddings, const ScoreOptions& options);
  const ArrayView* embeddings() const { return has_embeddings ? &emb : nullptr; }
  Array input_copy, emb_copy;
  ArrayView input, emb;
  bool has_embeddings = false;
};

/// A host copy of a CUDA view (contiguous), for the functions that document one (the diversity
/// strategies); a host view is returned as is.
ArrayView host_view(const ArrayView& view, Array* holder, const std::string& name);

}  // namespace quarry
