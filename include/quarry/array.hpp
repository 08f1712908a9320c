// Arrays: a non-owning ArrayView (pointer, dtype, C-order shape) and Array, which keeps
// its storage (a memory-mapped file or a heap buffer) alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quarry {

enum class DType : std::uint8_t { f16, bf16, f32, f64, u8, i8, i16, i32, i64 };

std::size_t dtype_size(DType t);
const char* dtype_name(DType t);  // "float32", "float16", ...
bool dtype_is_float(DType t);

/// A C-order (row-major), contiguous, read-only view.
struct ArrayView {
  const void* data = nullptr;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;

  int rank() const { return static_cast<int>(shape.size()); }
  std::int64_t numel() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  template <class T>
  const T* as() const { return static_cast<const T*>(data); }
};

/// "[3, 28, 28]"
std::string shape_string(const std::vector<std::int64_t>& shape);

/// An array that owns (or shares ownership of) its storage.
class Array {
 public:
  Array() = default;
  Array(std::shared_ptr<const void> owner, const void* data, DType dtype,
        std::vector<std::int64_t> shape, std::string source);
  /// A zero-initialised heap array.
  static Array allocate(DType dtype, std::vector<std::int64_t> shape, std::string source = "");

  ArrayView view() const { return {data_, dtype_, shape_}; }
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
};

}  // namespace quarry
