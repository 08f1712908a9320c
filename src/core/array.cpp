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

bool ArrayView::contiguous() const {
  if (strides.empty()) return true;
  if (strides.size() != shape.size()) return false;
  std::int64_t expect = 1;
  for (int a = rank() - 1; a >= 0; --a) {
    if (shape[a] != 1 && strides[a] != expect) return false;
    expect *= shape[a];
  }
  return true;
}

std::string location_string(const Location& l) {
  return l.on_cuda() ? "cuda:" + std::to_string(l.device) : std::string("host");
}

Array contiguous_copy(const ArrayView& v, const std::string& source) {
  QUARRY_EXPECTS(!v.on_cuda(), source, ": a strided array in CUDA memory (", location_string(v.location),
                 ") must be made contiguous first (tensor.contiguous())");
  QUARRY_EXPECTS(v.strides.size() == v.shape.size(), source, ": ", v.strides.size(),
                 " strides for a shape of rank ", v.rank());
  Array out = Array::allocate(v.dtype, v.shape, source);
  const std::size_t es = dtype_size(v.dtype);
  const std::int64_t total = v.numel();
  const int r = v.rank();
  auto* dst = static_cast<unsigned char*>(out.mutable_data());
  const auto* src = static_cast<const unsigned char*>(v.data);
  std::vector<std::int64_t> idx(static_cast<std::size_t>(r), 0);
  // Innermost axis as a run: a strided row is copied element by element, a contiguous one at once.
  const std::int64_t inner = r ? v.shape[r - 1] : 1;
  const std::int64_t inner_stride = r ? v.strides[r - 1] : 1;
  for (std::int64_t done = 0; done < total; done += inner) {
    std::int64_t off = 0;
    for (int a = 0; a + 1 < r; ++a) off += idx[a] * v.strides[a];
    if (inner_stride == 1) {
      std::memcpy(dst, src + off * static_cast<std::int64_t>(es), static_cast<std::size_t>(inner) * es);
      dst += inner * static_cast<std::int64_t>(es);
    } else {
      for (std::int64_t j = 0; j < inner; ++j, dst += es)
        std::memcpy(dst, src + (off + j * inner_stride) * static_cast<std::int64_t>(es), es);
    }
    for (int a = r - 2; a >= 0; --a) {  // next row index, odometer style
      if (++idx[a] < v.shape[a]) break;
      idx[a] = 0;
    }
  }
  return out;
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
             std::vector<std::int64_t> shape, std::string source, Location location)
    : owner_(std::move(owner)), data_(data), dtype_(dtype), shape_(std::move(shape)),
      source_(std::move(source)), location_(location) {}

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
