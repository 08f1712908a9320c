// DLPack interop (dmlc/dlpack, Debian's libdlpack-dev): tensors of PyTorch, CuPy, JAX, NumPy and
// any other DLPack producer become ArrayViews without a copy, in host or CUDA memory, and results
// leave as DLPack tensors. Not part of quarry/quarry.hpp, so that the engine's headers need no
// DLPack; include it where tensors are exchanged.
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <string>
#include <vector>

#include "quarry/array.hpp"

namespace quarry {

/// The view of a DLTensor's memory, without a copy: dtype (float16/bfloat16/float32/float64,
/// int8/16/32/64, uint8; one lane), shape, strides (kept as given: contiguous rows are read in
/// place, other layouts are copied once by the function that receives them), byte_offset, and
/// location (kDLCPU and kDLCUDAHost are host memory, kDLCUDA is CUDA device `device_id`).
/// Anything else is an Error naming `source` and what was found.
ArrayView view_of(const DLTensor& tensor, const std::string& source = "tensor");

/// Owns an imported DLManagedTensor: view() reads its memory in place for as long as this object
/// lives, and the producer's deleter runs when it goes away.
class DLPackArray {
 public:
  DLPackArray() = default;
  /// Takes ownership of `tensor` (which may be null: an empty array). A tensor the view cannot
  /// describe is an Error; its deleter still runs.
  explicit DLPackArray(DLManagedTensor* tensor, const std::string& source = "tensor");
  ~DLPackArray();
  DLPackArray(DLPackArray&& other) noexcept;
  DLPackArray& operator=(DLPackArray&& other) noexcept;
  DLPackArray(const DLPackArray&) = delete;
  DLPackArray& operator=(const DLPackArray&) = delete;

  const ArrayView& view() const { return view_; }
  /// Gives the tensor back without running its deleter.
  DLManagedTensor* release();

 private:
  DLManagedTensor* tensor_ = nullptr;
  ArrayView view_;
};

/// Results as DLPack tensors in host memory (kDLCPU), owning their storage: scores [N] float32 and
/// selected indices [k] int64. The consumer calls `deleter` once (as DLPack requires).
DLManagedTensor* to_dlpack(std::vector<float>&& values);
DLManagedTensor* to_dlpack(std::vector<std::int64_t>&& values);

}  // namespace quarry
