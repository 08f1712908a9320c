// Backend-neutral row helpers (src/core/rows.hpp).
#include "core/rows.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/parallel.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/error.hpp"

namespace quarry {

namespace {
constexpr std::size_t kHugePage = std::size_t{2} << 20;
}  // namespace

FloatBuffer::FloatBuffer(std::size_t n) : n_(n) {
  const std::size_t bytes = std::max<std::size_t>(n, 1) * sizeof(float);
  const bool huge = bytes >= kHugePage;
  const std::size_t align = huge ? kHugePage : 64;
  void* p = std::aligned_alloc(align, (bytes + align - 1) / align * align);
  if (!p) QUARRY_FAIL("out of memory allocating ", bytes, " bytes for scores");
  if (huge) (void)::madvise(p, (bytes + align - 1) / align * align, MADV_HUGEPAGE);  // a hint only
  p_.reset(static_cast<float*>(p));
}

void FloatBuffer::Free::operator()(float* p) const { std::free(p); }

FloatRows float_rows(const ArrayView& e, const std::string& name) {
  FloatRows out;
  out.n = e.shape[0];
  out.d = e.shape[1];
  const std::int64_t n = out.n, d = out.d;
  if (e.dtype == DType::f32) {
    out.data = e.as<float>();
  } else {
    out.storage.resize(static_cast<std::size_t>(n * d));
    out.data = out.storage.data();
  }
  float* dst = e.dtype == DType::f32 ? nullptr : out.storage.data();
  std::vector<std::int64_t> bad(static_cast<std::size_t>(max_threads()), -1);
  parallel_chunks(n, std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(d, 1)), n * d,
                  [&](std::int64_t b, std::int64_t en, int t) {
    for (std::int64_t i = b; i < en; ++i) {
      unsigned any = 0;
      for (std::int64_t j = 0; j < d; ++j) {
        const std::int64_t k = i * d + j;
        float v;
        switch (e.dtype) {
          case DType::f32: v = e.as<float>()[k]; break;
          case DType::f64: v = static_cast<float>(e.as<double>()[k]); break;
          case DType::f16: v = detail::half_to_float(e.as<std::uint16_t>()[k]); break;
          default: v = detail::bfloat16_to_float(e.as<std::uint16_t>()[k]); break;
        }
        any |= detail::out_of_range(v, -detail::kFloatMax);
        if (dst) dst[k] = v;
      }
      if (any && (bad[t] < 0 || i < bad[t])) bad[t] = i;
    }
  });
  std::int64_t first = -1;
  for (std::int64_t b : bad)
    if (b >= 0 && (first < 0 || b < first)) first = b;
  QUARRY_EXPECTS(first < 0, name, ": row ", first, ": embedding contains NaN or Inf",
                 e.dtype == DType::f64 ? " (or a value beyond the float32 range)" : "",
                 "; embeddings must be finite");
  return out;
}

FloatRows gather_rows(const FloatRows& x, const std::vector<std::int64_t>& index) {
  FloatRows out;
  out.n = static_cast<std::int64_t>(index.size());
  out.d = x.d;
  out.storage.resize(static_cast<std::size_t>(out.n * out.d));
  parallel_chunks(out.n, 1024, out.n * x.d, [&](std::int64_t b, std::int64_t e, int) {
    for (std::int64_t r = b; r < e; ++r)
      std::memcpy(out.storage.data() + r * x.d, x.row(index[r]), static_cast<std::size_t>(x.d) * sizeof(float));
  });
  out.data = out.storage.data();
  return out;
}

}  // namespace quarry
