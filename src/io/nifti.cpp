// NIfTI-1 and NIfTI-2 single files (.nii, and .nii.gz through zlib), either byte order. The
// header is validated in full against the file before any data is read; an uncompressed file
// in this machine's byte order and without intensity scaling is memory-mapped, not copied.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gunzip.hpp"
#include "mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {
namespace {

constexpr std::size_t kNifti1Header = 348, kNifti2Header = 540;

struct Header {
  int version = 1;
  bool swap = false;
  std::vector<std::int64_t> dim;  // dim[1..dim[0]]: x, y, z, t, u, ...
  int datatype = 0;
  std::int64_t vox_offset = 0;
  double slope = 0.0, inter = 0.0;
  DType stored = DType::f32;  // the dtype of the bytes in the file
  DType dtype = DType::f32;   // the dtype of the array returned
  std::size_t data_bytes = 0;
};

template <class T>
T load(const unsigned char* p, std::size_t off, bool swap) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, p + off, sizeof(T));
  if (swap) std::reverse(b, b + sizeof(T));
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

// NIfTI datatype codes: the dtype held in the file, and the one quarry reads it as.
bool datatype_of(int code, DType* stored, DType* as) {
  switch (code) {
    case 2: *stored = *as = DType::u8; return true;
    case 4: *stored = *as = DType::i16; return true;
    case 8: *stored = *as = DType::i32; return true;
    case 16: *stored = *as = DType::f32; return true;
    case 64: *stored = *as = DType::f64; return true;
    case 256: *stored = *as = DType::i8; return true;
    case 512: *stored = DType::i16, *as = DType::i32; return true;  // uint16, widened
    case 768: *stored = DType::i32, *as = DType::i64; return true;  // uint32, widened
    case 1024: *stored = *as = DType::i64; return true;
    default: return false;
  }
}

Header parse_header(const unsigned char* p, std::size_t size, const std::string& path) {
  QUARRY_EXPECTS(size >= 4, path, ": not a NIfTI file (", size, " bytes; a header has 348 or 540)");
  Header h;
  const auto native = load<std::int32_t>(p, 0, false), swapped = load<std::int32_t>(p, 0, true);
  if (native == 348 || native == 540) {
    h.version = native == 348 ? 1 : 2;
  } else if (swapped == 348 || swapped == 540) {
    h.version = swapped == 348 ? 1 : 2;
    h.swap = true;
  } else {
    QUARRY_FAIL(path, ": not a NIfTI-1 or NIfTI-2 file (the header size field is ", native,
                ", expected 348 or 540)");
  }
  const std::size_t need = h.version == 1 ? kNifti1Header : kNifti2Header;
  QUARRY_EXPECTS(size >= need, path, ": truncated NIfTI-", h.version, " header (", size, " of ", need, " bytes)");
  int ndim = 0;
  if (h.version == 1) {
    const char* magic = reinterpret_cast<const char*>(p + 344);
    QUARRY_EXPECTS(std::memcmp(magic, "ni1\0", 4) != 0, path,
                   ": a NIfTI-1 header of a .hdr/.img pair; quarry reads single .nii files (convert the pair)");
    QUARRY_EXPECTS(std::memcmp(magic, "n+1\0", 4) == 0, path, ": bad NIfTI-1 magic \"",
                   io::printable(std::string_view(magic, 4)), "\" (expected \"n+1\")");
    ndim = load<std::int16_t>(p, 40, h.swap);
    QUARRY_EXPECTS(ndim >= 1 && ndim <= 7, path, ": dim[0] is ", ndim, ", expected 1 to 7");
    for (int i = 1; i <= ndim; ++i) h.dim.push_back(load<std::int16_t>(p, 40 + 2 * i, h.swap));
    h.datatype = load<std::int16_t>(p, 70, h.swap);
    const float off = load<float>(p, 108, h.swap);
    QUARRY_EXPECTS(std::isfinite(off) && off >= 0 && off < 9e15 && off == std::floor(off), path,
                   ": vox_offset ", off, " is not a byte offset");
    h.vox_offset = static_cast<std::int64_t>(off);
    h.slope = load<float>(p, 112, h.swap);
    h.inter = load<float>(p, 116, h.swap);
  } else {
    QUARRY_EXPECTS(std::memcmp(p + 4, "n+2\0\r\n\032\n", 8) == 0, path, ": bad NIfTI-2 magic \"",
                   io::printable(std::string_view(reinterpret_cast<const char*>(p + 4), 8)), "\" (expected \"n+2\")");
    h.datatype = load<std::int16_t>(p, 12, h.swap);
    const auto nd = load<std::int64_t>(p, 16, h.swap);
    QUARRY_EXPECTS(nd >= 1 && nd <= 7, path, ": dim[0] is ", nd, ", expected 1 to 7");
    ndim = static_cast<int>(nd);
    for (int i = 1; i <= ndim; ++i) h.dim.push_back(load<std::int64_t>(p, 16 + 8 * i, h.swap));
    h.vox_offset = load<std::int64_t>(p, 168, h.swap);
    h.slope = load<double>(p, 176, h.swap);
    h.inter = load<double>(p, 184, h.swap);
  }
  QUARRY_EXPECTS(h.vox_offset >= static_cast<std::int64_t>(need), path, ": vox_offset ", h.vox_offset,
                 " points into the header (", need, " bytes)");
  QUARRY_EXPECTS(datatype_of(h.datatype, &h.stored, &h.dtype), path, ": NIfTI datatype ", h.datatype,
                 " is not supported (uint8, int8, int16, uint16, int32, uint32, int64, float32, float64 are)");
  std::uint64_t count = 1;
  for (int i = 0; i < ndim; ++i) {
    QUARRY_EXPECTS(h.dim[i] >= 1, path, ": dim[", i + 1, "] is ", h.dim[i], ", expected >= 1");
    QUARRY_EXPECTS(!__builtin_mul_overflow(count, static_cast<std::uint64_t>(h.dim[i]), &count) && count < (1ull << 56),
                   path, ": the dimensions overflow");
  }
  h.data_bytes = static_cast<std::size_t>(count) * dtype_size(h.stored);
  QUARRY_EXPECTS(std::isfinite(h.slope) && std::isfinite(h.inter), path, ": scl_slope/scl_inter are not finite");
  const bool scaled = h.slope != 0.0 && !(h.slope == 1.0 && h.inter == 0.0);
  if (scaled) h.dtype = h.dtype == DType::f64 ? DType::f64 : DType::f32;
  return h;
}

std::vector<std::int64_t> c_order_shape(const Header& h) {
  return std::vector<std::int64_t>(h.dim.rbegin(), h.dim.rend());  // x varies fastest: [.., z, y, x]
}

template <class T>
void convert(const unsigned char* src, std::size_t n, bool swap, double slope, double inter, bool scaled, DType as,
             void* dst, int code) {
  for (std::size_t i = 0; i < n; ++i) {
    const T v = load<T>(src, i * sizeof(T), swap);
    if (scaled) {
      const double raw = code == 512   ? static_cast<double>(static_cast<std::uint16_t>(v))
                         : code == 768 ? static_cast<double>(static_cast<std::uint32_t>(v))
                         : code == 256 ? static_cast<double>(static_cast<std::int8_t>(v))
                                       : static_cast<double>(v);
      const double x = raw * slope + inter;
      if (as == DType::f64) {
        static_cast<double*>(dst)[i] = x;
      } else {
        static_cast<float*>(dst)[i] = static_cast<float>(x);
      }
    } else if (as == DType::i32 && sizeof(T) == 2) {  // uint16
      static_cast<std::int32_t*>(dst)[i] = static_cast<std::uint16_t>(v);
    } else if (as == DType::i64 && sizeof(T) == 4) {  // uint32
      static_cast<std::int64_t*>(dst)[i] = static_cast<std::uint32_t>(v);
    } else {
      std::memcpy(static_cast<unsigned char*>(dst) + i * sizeof(T), &v, sizeof(T));
    }
  }
}

// The data at `src` (the file's bytes) as an array, in place where nothing needs converting.
Array make_array(const Header& h, std::shared_ptr<const void> owner, const unsigned char* src, const std::string& path) {
  const std::size_t n = h.data_bytes / dtype_size(h.stored);
  const bool scaled = h.slope != 0.0 && !(h.slope == 1.0 && h.inter == 0.0);
  const bool aligned = reinterpret_cast<std::uintptr_t>(src) % dtype_size(h.stored) == 0;
  if (!h.swap && !scaled && h.stored == h.dtype && aligned)
    return Array(std::move(owner), src, h.dtype, c_order_shape(h), path);
  Array a = Array::allocate(h.dtype, c_order_shape(h), path);
  void* dst = a.mutable_data();
  switch (h.stored) {
    case DType::u8:
    case DType::i8: convert<std::uint8_t>(src, n, false, h.slope, h.inter, scaled, h.dtype, dst, h.datatype); break;
    case DType::i16: convert<std::int16_t>(src, n, h.swap, h.slope, h.inter, scaled, h.dtype, dst, h.datatype); break;
    case DType::i32: convert<std::int32_t>(src, n, h.swap, h.slope, h.inter, scaled, h.dtype, dst, h.datatype); break;
    case DType::i64: convert<std::int64_t>(src, n, h.swap, h.slope, h.inter, scaled, h.dtype, dst, h.datatype); break;
    case DType::f32: convert<float>(src, n, h.swap, h.slope, h.inter, scaled, h.dtype, dst, h.datatype); break;
    case DType::f64: convert<double>(src, n, h.swap, h.slope, h.inter, scaled, h.dtype, dst, h.datatype); break;
    default: QUARRY_FAIL(path, ": unsupported stored dtype");
  }
  return a;
}

std::string claim(const Header& h) {
  return "the header says " + shape_string(c_order_shape(h)) + " " + dtype_name(h.stored) + " at byte " +
         std::to_string(h.vox_offset) + " (" + std::to_string(h.data_bytes) + " bytes of data)";
}

}  // namespace

bool is_nifti_path(const std::string& path) {
  auto ends = [&](const char* s) {
    const std::size_t n = std::strlen(s);
    return path.size() >= n && path.compare(path.size() - n, n, s) == 0;
  };
  return ends(".nii") || ends(".nii.gz");
}

Array read_nifti(const std::string& path) {
  const io::MappedFile file = io::map_file(path);
  const bool gzip = file.size >= 2 && file.data[0] == 0x1f && file.data[1] == 0x8b;
  if (!gzip) {
    const Header h = parse_header(file.data, file.size, path);
    const std::size_t end = static_cast<std::size_t>(h.vox_offset) + h.data_bytes;
    QUARRY_EXPECTS(file.size >= end, path, ": truncated: ", claim(h), ", the file has ", file.size, " bytes");
    return make_array(h, file.owner, file.data + h.vox_offset, path);
  }
  io::Gunzip gz(file.data, file.size, path);
  auto buf = std::make_shared<std::vector<unsigned char>>();
  gz.read(*buf, kNifti2Header);
  const Header h = parse_header(buf->data(), buf->size(), path);
  const std::size_t total = static_cast<std::size_t>(h.vox_offset) + h.data_bytes;
  QUARRY_EXPECTS(total / 1032 <= file.size, path, ": ", claim(h), ", more than a gzip file of ", file.size,
                 " bytes can hold (deflate expands at most 1032 times): not inflated");
  const std::uint64_t available = io::available_memory();
  QUARRY_EXPECTS(available == 0 || total <= available, path, ": ", claim(h), ", more than the ", available,
                 " bytes of memory available: not inflated");
  buf->reserve(total);  // one allocation: growing in steps would need up to twice the size at peak
  while (buf->size() < total) {
    const std::size_t before = buf->size();
    const std::size_t want = std::min<std::size_t>(total - before, std::size_t{1} << 30);
    gz.read(*buf, want);
    if (buf->size() < before + want) break;
  }
  QUARRY_EXPECTS(buf->size() >= total, path, ": truncated: ", claim(h), ", the decompressed file has ",
                 buf->size(), " bytes");
  const unsigned char* src = buf->data() + h.vox_offset;
  return make_array(h, std::shared_ptr<const void>(buf, buf->data()), src, path);
}

}  // namespace quarry
