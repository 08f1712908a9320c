#include "quarry/array.hpp"

#include <cstdlib>
#include <cstring>
#include <limits>

#include "quarry/error.hpp"

namespace quarry {

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f16:
    case DType::bf16:
    case DType::i16: return 2;
    case DType::f32:
    case DType::i32: return 4;
    case DType::f64:
    case DType::i64: return 8;
    case DType::u8:
    case DType::i8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::u8: return "uint8";
    case DType::i8: return "int8";
    case DType::i16: return "int16";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
  }
  return "?";
}

bool dtype_is_float(DType t) {
  return t == DType::f16 || t == DType::bf16 || t == DType::f32 || t == DType::f64;
}

std::int64_t ArrayView::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  // A shape of many axes (a corrupt header) is shown by its first and last ones and its rank.
  const std::size_t n = shape.size();
  const bool cut = n > 12;
  std::string s = "[";
  for (std::size_t i = 0; i < n; ++i) {
    if (cut && i == 4) {
      s += ", ...";
      i = n - 3;
    }
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]" + (cut ? " (" + std::to_string(n) + " axes)" : std::string());
}

Array::Array(std::shared_ptr<const void> owner, const void* data, DType dtype,
             std::vector<std::int64_t> shape, std::string source)
    : owner_(std::move(owner)), data_(data), dtype_(dtype), shape_(std::move(shape)),
      source_(std::move(source)) {}

Array Array::allocate(DType dtype, std::vector<std::int64_t> shape, std::string source) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    QUARRY_EXPECTS(d >= 0, "cannot allocate an array of shape ", shape_string(shape));
    QUARRY_EXPECTS(d == 0 || n <= std::numeric_limits<std::int64_t>::max() / d,
                   "array of shape ", shape_string(shape), " is too large");
    n *= d;
  }
  const std::size_t bytes = static_cast<std::size_t>(n) * dtype_size(dtype);
  // 64-byte aligned so that vector loads of any width are aligned.
  void* p = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
  if (!p) QUARRY_FAIL("out of memory allocating ", bytes, " bytes for an array of shape ", shape_string(shape));
  std::memset(p, 0, bytes);
  std::shared_ptr<const void> owner(p, [](const void* q) { std::free(const_cast<void*>(q)); });
  return Array(owner, p, dtype, std::move(shape), std::move(source));
}

}  // namespace quarry
