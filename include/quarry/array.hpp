// Arrays: a non-owning ArrayView (pointer, dtype, shape, optional strides, and where the memory
// lives: host or a CUDA device) and Array, which keeps its host storage (a memory-mapped file or a
// heap buffer) alive. quarry/dlpack.hpp turns DLPack tensors (PyTorch, CuPy, JAX, NumPy) into
// views without a copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace quarry {

enum class DType : std::uint8_t { f16, bf16, f32, f64, u8, i8, i16, i32, i64 };

std::size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "float32", "float16", ...
bool dtype_is_float(DType t);

/// Where an array's memory lives.
enum class MemoryKind : std::uint8_t { host, cuda };

struct Location {
  MemoryKind kind = MemoryKind::host;
  int device = 0;  // the CUDA device ordinal (kind == cuda)
  bool on_cuda() const { return kind == MemoryKind::cuda; }
};

/// "host", "cuda:0".
std::string location_string(const Location& l);

/// A read-only view. Contiguous C-order (row-major) rows are the fast path and what every
/// engine function reads in place; a view with other strides is copied once into a contiguous
/// buffer by the function that receives it (host memory; a strided CUDA view is an Error that
/// says to make it contiguous first). Device views are read in place by the CUDA backend.
struct ArrayView {
  ArrayView() = default;
  ArrayView(const void* data_, DType dtype_, std::vector<std::int64_t> shape_,
            std::vector<std::int64_t> strides_ = {}, Location location_ = {})
      : data(data_), dtype(dtype_), shape(std::move(shape_)), strides(std::move(strides_)),
        location(location_) {}

  const void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  /// Per axis, in elements (not bytes); empty: C-contiguous.
  std::vector<std::int64_t> strides;
  Location location{};

  int rank() const { return static_cast<int>(shape.size()); }
  std::int64_t numel() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  /// True when the elements are laid out in C order without gaps (strides empty, or equal to
  /// the C-order strides on every axis of extent > 1).
  bool contiguous() const;
  bool on_cuda() const { return location.on_cuda(); }
  template <class T>
  const T* as() const { return static_cast<const T*>(data); }
};

/// A C-contiguous host copy of a strided host view (an Error for a CUDA view).
class Array;
Array contiguous_copy(const ArrayView& view, const std::string& source = "");

/// "[3, 28, 28]"
std::string shape_string(const std::vector<std::int64_t>& shape);

/// An array that owns (or shares ownership of) its storage: host memory, or CUDA memory where
/// `location` says so (the loop's device-resident model outputs).
class Array {
 public:
  Array() = default;
  Array(std::shared_ptr<const void> owner, const void* data, DType dtype,
        std::vector<std::int64_t> shape, std::string source, Location location = {});
  /// A zero-initialised heap array.
  static Array allocate(DType dtype, std::vector<std::int64_t> shape, std::string source = "");

  ArrayView view() const { return {data_, dtype_, shape_, {}, location_}; }
  const Location& location() const { return location_; }
  const void* data() const { return data_; }
  void* mutable_data() { return const_cast<void*>(data_); }  // only for arrays made by allocate()
  DType dtype() const { return dtype_; }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  std::int64_t numel() const { return view().numel(); }
  std::size_t nbytes() const { return view().nbytes(); }
  /// Where it came from ("pool.npy", "data.npz:train_images"); used in error messages.
  const std::string& source() const { return source_; }
  template <class T>
  const T* as() const { return static_cast<const T*>(data_); }

 private:
  std::shared_ptr<const void> owner_;
  const void* data_ = nullptr;
  DType dtype_ = DType::f32;
  std::vector<std::int64_t> shape_;
  std::string source_;
  Location location_{};
};

}  // namespace quarry
