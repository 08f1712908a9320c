// IDX (the MNIST format): big-endian header and data, optionally gzip-compressed.
#include <zlib.h>

#include "gunzip.hpp"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

namespace {

constexpr std::uint64_t kMaxDataBytes = std::uint64_t{1} << 40;
constexpr std::size_t kMaxHeaderBytes = 4 + 4 * 8;
constexpr std::size_t kMinChunk = std::size_t{1} << 20;
constexpr std::size_t kMaxChunk = std::size_t{1} << 30;  // what one zlib call can take, and then some

struct IdxHeader {
  DType dtype = DType::u8;
  std::vector<std::int64_t> shape;
  std::size_t header_bytes = 0;  // 4 + 4 * rank
  std::size_t data_bytes = 0;
};

DType idx_dtype(unsigned code, const std::string& name) {
  switch (code) {
    case 0x08: return DType::u8;
    case 0x09: return DType::i8;
    case 0x0B: return DType::i16;
    case 0x0C: return DType::i32;
    case 0x0D: return DType::f32;
    case 0x0E: return DType::f64;
  }
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02x", code);
  QUARRY_FAIL(name, ": unknown IDX type code ", hex,
              " (supported: 0x08 uint8, 0x09 int8, 0x0b int16, 0x0c int32, 0x0d float32, 0x0e float64)");
}

std::uint32_t read_be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Parses the header from the first `size` bytes of the (decompressed) file.
IdxHeader parse_header(const unsigned char* p, std::size_t size, const std::string& name) {
  if (size == 0) QUARRY_FAIL(name, ": empty file, not an IDX file");
  if (size < 4) QUARRY_FAIL(name, ": truncated IDX header (", size, " bytes)");
  if (p[0] != 0 || p[1] != 0)
    QUARRY_FAIL(name, ": not an IDX file (bad magic: the first two bytes are not zero)");
  IdxHeader h;
  h.dtype = idx_dtype(p[2], name);
  const int rank = p[3];
  if (rank < 1 || rank > 8) QUARRY_FAIL(name, ": IDX rank ", rank, " is not supported (1 to 8)");
  h.header_bytes = 4 + 4 * static_cast<std::size_t>(rank);
  if (size < h.header_bytes)
    QUARRY_FAIL(name, ": truncated IDX header: rank ", rank, " needs ", h.header_bytes, " bytes, found ",
                size);
  std::uint64_t bytes = dtype_size(h.dtype);
  bool too_large = false;
  for (int i = 0; i < rank; ++i) {
    const std::uint32_t d = read_be32(p + 4 + 4 * i);
    h.shape.push_back(d);
    too_large = too_large || __builtin_mul_overflow(bytes, std::uint64_t{d}, &bytes);
  }
  if (too_large || bytes > kMaxDataBytes)
    QUARRY_FAIL(name, ": IDX shape ", shape_string(h.shape), " ", dtype_name(h.dtype),
                " is too large (more than 2^40 bytes)");
  h.data_bytes = static_cast<std::size_t>(bytes);
  return h;
}

// Converts big-endian elements to the (little-endian) host order into a new heap array.
Array to_array(const IdxHeader& h, const unsigned char* data, const std::string& name) {
  Array a = Array::allocate(h.dtype, h.shape, name);
  auto* out = static_cast<unsigned char*>(a.mutable_data());
  const std::size_t elem = dtype_size(h.dtype);
  if (elem == 1) {
    std::memcpy(out, data, h.data_bytes);
  } else {
    for (std::size_t i = 0; i < h.data_bytes; i += elem)
      for (std::size_t b = 0; b < elem; ++b) out[i + b] = data[i + elem - 1 - b];
  }
  return a;
}

Array read_raw(const io::MappedFile& file, const std::string& path) {
  const IdxHeader h = parse_header(file.data, file.size, path);
  const std::size_t available = file.size - h.header_bytes;
  if (available != h.data_bytes)
    QUARRY_FAIL(path, available < h.data_bytes ? ": truncated data" : ": trailing data",
                ": header says shape ", shape_string(h.shape), " ", dtype_name(h.dtype), " = ", h.data_bytes,
                " bytes, file has ", available, " bytes after the header");
  return to_array(h, file.data + h.header_bytes, path);
}

// Decompresses no more than the header announces (plus one byte, to detect trailing data),
// in chunks, so that a header that lies cannot make us allocate what the stream does not hold.
// Before inflating the data, the header's size is checked against what the file can hold
// (deflate expands at most 1032 times) and against the memory available. (The gzip trailer's
// size is not: a file of concatenated members records only the last member's.)
Array read_gzip(const io::MappedFile& file, const std::string& path) {
  io::Gunzip gz(file.data, file.size, path);
  std::vector<unsigned char> buf;
  gz.read(buf, kMaxHeaderBytes);
  const IdxHeader h = parse_header(buf.data(), buf.size(), path);
  const std::size_t total = h.header_bytes + h.data_bytes;
  const std::string claim = "the header says shape " + shape_string(h.shape) + " " + dtype_name(h.dtype) + " = " +
                            std::to_string(total) + " bytes";
  if (total / 1032 > file.size)
    QUARRY_FAIL(path, ": ", claim, ", more than a gzip file of ", file.size,
                " bytes can hold (deflate expands at most 1032 times): not inflated");
  const std::uint64_t available = io::available_memory();
  if (available > 0 && total > available)
    QUARRY_FAIL(path, ": ", claim, ", more than the ", available, " bytes of memory available: not inflated");
  while (buf.size() <= total) {
    const std::size_t before = buf.size();
    const std::size_t want = std::min({total + 1 - before, std::max(before, kMinChunk), kMaxChunk});
    gz.read(buf, want);
    if (buf.size() < before + want) break;
  }
  if (buf.size() != total)
    QUARRY_FAIL(path, buf.size() < total ? ": truncated data" : ": trailing data", ": header says shape ",
                shape_string(h.shape), " ", dtype_name(h.dtype), " = ", h.data_bytes,
                " bytes, the decompressed file has ",
                buf.size() < total ? std::to_string(buf.size() - h.header_bytes) : "more",
                " bytes after the header");
  return to_array(h, buf.data() + h.header_bytes, path);
}

}  // namespace

Array io::parse_idx(const MappedFile& file, const std::string& path) {
  const bool gzip = file.size >= 2 && file.data[0] == 0x1f && file.data[1] == 0x8b;
  return gzip ? read_gzip(file, path) : read_raw(file, path);
}

Array read_idx(const std::string& path) { return io::parse_idx(io::map_file(path), path); }

}  // namespace quarry
