// NPY: format 1.0/2.0/3.0 reader (memory-mapped, zero copy) and a 1.0 writer.
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string_view>

#include "mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "files.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the NPY reader assumes a little-endian host");

namespace quarry {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = 6;
constexpr const char* kSupported = "<f2 <f4 <f8 |b1 |u1 |i1 <i2 <i4 <i8 <u2 <u4 <u8";

struct TypeCode {
  const char* code;  // the descr without its byte-order character
  DType dtype;       // as stored (unsigned types: the signed type of the same size)
  bool widen;        // unsigned 16/32/64-bit: read into the next wider signed type (a copy)
};
// bool is stored as bytes 0 and 1: read as uint8, in place.
constexpr TypeCode kTypeCodes[] = {
    {"f2", DType::f16, false}, {"f4", DType::f32, false}, {"f8", DType::f64, false}, {"u1", DType::u8, false},
    {"b1", DType::u8, false},  {"i1", DType::i8, false},  {"i2", DType::i16, false}, {"i4", DType::i32, false},
    {"i8", DType::i64, false}, {"u2", DType::i16, true},  {"u4", DType::i32, true},  {"u8", DType::i64, true},
};

// The header dict as written: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
struct HeaderDict {
  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
};

// A hand-written parser for the small subset of Python literal syntax NPY headers use.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const std::string& name) : s_(text), name_(name) {}

  HeaderDict parse() {
    skip_ws();
    if (!eat('{')) fail("header is not a dict: '", io::printable(s_), "'");
    skip_ws();
    if (!eat('}')) {
      for (;;) {
        entry();
        skip_ws();
        if (eat('}')) break;
        expect(',');
        skip_ws();
        if (eat('}')) break;  // trailing comma
      }
    }
    skip_ws();
    if (pos_ != s_.size())
      fail("unexpected text after the header dict: '", io::printable(s_.substr(pos_)), "'");
    if (!seen_descr_) fail("header has no 'descr' key");
    if (!seen_fortran_) fail("header has no 'fortran_order' key");
    if (!seen_shape_) fail("header has no 'shape' key");
    return dict_;
  }

 private:
  template <class... Args>
  [[noreturn]] void fail(Args&&... args) const {
    QUARRY_FAIL(name_, ": ", std::forward<Args>(args)...);
  }

  void entry() {
    const std::string key = string_literal();
    skip_ws();
    expect(':');
    skip_ws();
    if (key == "descr") {
      mark_seen(seen_descr_, key);
      if (peek() != '\'' && peek() != '"') fail("structured or non-string 'descr' is not supported");
      dict_.descr = string_literal();
    } else if (key == "fortran_order") {
      mark_seen(seen_fortran_, key);
      dict_.fortran_order = boolean();
    } else if (key == "shape") {
      mark_seen(seen_shape_, key);
      dict_.shape = tuple();
    } else {
      fail("unexpected key '", io::printable(key), "' in the header");
    }
  }

  void mark_seen(bool& seen, const std::string& key) {
    if (seen) fail("duplicate key '", key, "' in the header");
    seen = true;
  }

  std::string string_literal() {
    const char quote = peek();
    if (quote != '\'' && quote != '"')
      fail("expected a quoted string in the header at '", io::printable(s_.substr(pos_)), "'");
    ++pos_;
    const std::size_t end = s_.find(quote, pos_);
    if (end == std::string_view::npos) fail("unterminated string in the header");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }

  bool boolean() {
    if (s_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (s_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("expected True or False for 'fortran_order', found '", io::printable(s_.substr(pos_)), "'");
  }

  // "()", "(5,)", "(3, 4)" and "(3, 4,)".
  std::vector<std::int64_t> tuple() {
    expect('(');
    std::vector<std::int64_t> dims;
    skip_ws();
    while (!eat(')')) {
      dims.push_back(integer());
      skip_ws();
      if (eat(')')) break;
      expect(',');
      skip_ws();
    }
    return dims;
  }

  std::int64_t integer() {
    const bool negative = eat('-');
    if (!std::isdigit(static_cast<unsigned char>(peek())))
      fail("expected an integer in 'shape', found '", io::printable(s_.substr(pos_)), "'");
    std::int64_t value = 0;
    while (std::isdigit(static_cast<unsigned char>(peek()))) {
      const int digit = s_[pos_++] - '0';
      if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10)
        fail("dimension in 'shape' is too large: '", io::printable(s_.substr(0, pos_)), "...'");
      value = value * 10 + digit;
    }
    return negative ? -value : value;
  }

  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool eat(char c) {
    if (peek() != c || pos_ >= s_.size()) return false;
    ++pos_;
    return true;
  }
  void expect(char c) {
    if (!eat(c)) fail("malformed header: expected '", c, "' at '", io::printable(s_.substr(pos_)), "'");
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  std::string_view s_;
  const std::string& name_;
  std::size_t pos_ = 0;
  HeaderDict dict_;
  bool seen_descr_ = false, seen_fortran_ = false, seen_shape_ = false;
};

DType parse_descr(const std::string& descr, const std::string& name, bool* widen = nullptr) {
  const char order = descr.empty() ? '\0' : descr[0];
  const bool has_order = order == '<' || order == '>' || order == '|' || order == '=';
  const std::string code = has_order ? descr.substr(1) : descr;
  for (const TypeCode& t : kTypeCodes) {
    if (code != t.code) continue;
    if (widen) *widen = t.widen;
    const bool one_byte = dtype_size(t.dtype) == 1;
    if (!has_order || one_byte) return t.dtype;
    if (order == '>')
      QUARRY_FAIL(name, ": big-endian dtype '", descr, "' is not supported; save with arr.astype('<", code,
                  "')");
    if (order == '|') break;  // multi-byte types always carry a byte order
    return t.dtype;
  }
  QUARRY_FAIL(name, ": unsupported dtype '", io::printable(descr), "' (supported: ", kSupported, ")");
}

// Bytes needed for `shape` of `dtype`; throws when a dimension is negative or the product overflows.
std::size_t checked_nbytes(const std::vector<std::int64_t>& shape, DType dtype, const std::string& name) {
  std::uint64_t count = 1;
  for (std::int64_t d : shape) {
    if (d < 0) QUARRY_FAIL(name, ": negative dimension ", d, " in shape ", shape_string(shape));
    if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(d), &count))
      QUARRY_FAIL(name, ": shape ", shape_string(shape), " is too large");
  }
  std::uint64_t bytes = 0;
  if (count > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
      __builtin_mul_overflow(count, static_cast<std::uint64_t>(dtype_size(dtype)), &bytes) ||
      bytes > std::numeric_limits<std::size_t>::max())
    QUARRY_FAIL(name, ": shape ", shape_string(shape), " is too large");
  return static_cast<std::size_t>(bytes);
}

std::uint32_t read_le(const unsigned char* p, int n) {
  std::uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

const char* write_descr(DType t) {
  switch (t) {
    case DType::f16: return "<f2";
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::u8: return "|u1";
    case DType::i8: return "|i1";
    case DType::i16: return "<i2";
    case DType::i32: return "<i4";
    case DType::i64: return "<i8";
    case DType::bf16: break;
  }
  return nullptr;
}

// Magic, version 1.0, header length, dict, padded with spaces and a newline so that the
// data starts at a multiple of 64 bytes.
// uint16 -> int32, uint32 -> int64, uint64 -> int64 (a value above the int64 range is an error).
Array widen_unsigned(const unsigned char* data, DType stored, const std::vector<std::int64_t>& shape,
                     const std::string& name) {
  const DType to = stored == DType::i16 ? DType::i32 : DType::i64;
  Array out = Array::allocate(to, shape, name);
  const auto n = static_cast<std::size_t>(out.numel());
  const std::size_t width = dtype_size(stored);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t v = 0;
    std::memcpy(&v, data + i * width, width);  // little-endian host, as everywhere in quarry
    if (to == DType::i32) {
      static_cast<std::int32_t*>(out.mutable_data())[i] = static_cast<std::int32_t>(v);
    } else {
      if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        QUARRY_FAIL(name, ": element ", i, " is ", v, ", above the int64 range that uint64 data is read into");
      static_cast<std::int64_t*>(out.mutable_data())[i] = static_cast<std::int64_t>(v);
    }
  }
  return out;
}

}  // namespace

std::string npy_header(DType dtype, const std::vector<std::int64_t>& dims, const std::string& path) {
  std::string shape = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) shape += std::to_string(dims[i]) + ", ";
  if (dims.size() > 1) shape.resize(shape.size() - 2);
  if (dims.size() == 1) shape.pop_back();
  shape += ")";
  std::string dict = std::string("{'descr': '") + write_descr(dtype) +
                     "', 'fortran_order': False, 'shape': " + shape + ", }";
  const std::size_t preamble = kMagicSize + 4;
  const std::size_t unpadded = preamble + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  QUARRY_EXPECTS(dict.size() <= 0xffff, "cannot write ", path, ": rank ", dims.size(),
                 " is too large for an NPY header");
  std::string header(kMagic, kMagicSize);
  header += '\x01';
  header += '\x00';
  header += static_cast<char>(dict.size() & 0xff);
  header += static_cast<char>(dict.size() >> 8);
  return header + dict;
}

std::size_t io::npy_data_offset(const unsigned char* p, std::size_t size) {
  if (size < kMagicSize + 2 || std::memcmp(p, kMagic, kMagicSize) != 0) return 0;
  const std::size_t len_bytes = p[6] == 1 ? 2 : 4;
  const std::size_t preamble = kMagicSize + 2 + len_bytes;
  if (size < preamble) return 0;
  return preamble + read_le(p + kMagicSize + 2, static_cast<int>(len_bytes));
}

std::uint64_t io::npy_data_bytes(const unsigned char* p, std::size_t size, const std::string& name) {
  const std::size_t offset = npy_data_offset(p, size);
  QUARRY_EXPECTS(offset > 0 && offset <= size, name, ": truncated NPY header (", size, " bytes)");
  // parse_npy of the header alone reports the data it expects as "truncated data".
  const int major = p[6];
  if (major < 1 || major > 3)
    QUARRY_FAIL(name, ": unsupported NPY format version ", major, ".", static_cast<int>(p[7]),
                " (supported: 1.0, 2.0, 3.0)");
  const std::size_t preamble = kMagicSize + 2 + (major == 1 ? 2 : 4);
  std::string_view text(reinterpret_cast<const char*>(p + preamble), offset - preamble);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  const HeaderDict dict = HeaderParser(text, name).parse();
  return checked_nbytes(dict.shape, parse_descr(dict.descr, name), name);
}

Array parse_npy(std::shared_ptr<const void> owner, const void* bytes, std::size_t size,
                const std::string& name) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  if (size == 0) QUARRY_FAIL(name, ": empty file, not an NPY file");
  if (size < kMagicSize || std::memcmp(p, kMagic, kMagicSize) != 0)
    QUARRY_FAIL(name, ": not an NPY file (bad magic bytes '",
                io::printable({reinterpret_cast<const char*>(p), size < 6 ? size : 6}), "')");
  if (size < kMagicSize + 2) QUARRY_FAIL(name, ": truncated NPY header (", size, " bytes)");
  const int major = p[6], minor = p[7];
  if (major < 1 || major > 3)
    QUARRY_FAIL(name, ": unsupported NPY format version ", major, ".", minor, " (supported: 1.0, 2.0, 3.0)");
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  const std::size_t preamble = kMagicSize + 2 + len_bytes;
  if (size < preamble) QUARRY_FAIL(name, ": truncated NPY header (", size, " bytes)");
  const std::size_t header_len = read_le(p + kMagicSize + 2, static_cast<int>(len_bytes));
  if (header_len > size - preamble)
    QUARRY_FAIL(name, ": header length ", header_len, " runs past the end of the file (", size, " bytes)");

  std::string_view text(reinterpret_cast<const char*>(p + preamble), header_len);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);  // padding
  const HeaderDict dict = HeaderParser(text, name).parse();
  bool widen = false;
  const DType dtype = parse_descr(dict.descr, name, &widen);
  if (dict.fortran_order && dict.shape.size() > 1)
    QUARRY_FAIL(name, ": Fortran order is not supported; save with np.ascontiguousarray");
  const std::size_t nbytes = checked_nbytes(dict.shape, dtype, name);

  const std::size_t offset = preamble + header_len;
  const std::size_t available = size - offset;
  if (nbytes != available)
    QUARRY_FAIL(name, nbytes > available ? ": truncated data" : ": trailing data", ": header says shape ",
                shape_string(dict.shape), " ", dtype_name(dtype), " = ", nbytes, " bytes, file has ",
                available, " bytes after the header");

  const unsigned char* data = p + offset;
  if (widen) return widen_unsigned(data, dtype, dict.shape, name);
  if (reinterpret_cast<std::uintptr_t>(data) % dtype_size(dtype) != 0) {
    Array copy = Array::allocate(dtype, dict.shape, name);
    std::memcpy(copy.mutable_data(), data, nbytes);
    return copy;
  }
  return Array(std::move(owner), data, dtype, dict.shape, name);
}

Array read_npy(const std::string& path) {
  io::MappedFile file = io::map_file(path);
  return parse_npy(std::move(file.owner), file.data, file.size, path);
}

void write_npy(const std::string& path, const ArrayView& array) {
  if (array.dtype == DType::bf16)
    QUARRY_FAIL("cannot write ", path, ": NPY has no bfloat16 dtype; convert to float32 first");
  const std::size_t nbytes = checked_nbytes(array.shape, array.dtype, path);
  QUARRY_EXPECTS(nbytes == 0 || array.data, "cannot write ", path, ": the array has no data");
  write_file_atomic(path, {npy_header(array.dtype, array.shape, path), {static_cast<const char*>(array.data), nbytes}});
}

}  // namespace quarry
