// Index lists: an integer .npy, or text with one index per line (optionally a CSV column).
#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

namespace {

template <class T>
void append_indices(const Array& a, std::vector<std::int64_t>& out, const std::string& path) {
  const T* p = a.as<T>();
  const std::int64_t n = a.numel();
  out.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto v = static_cast<std::int64_t>(p[i]);
    if (v < 0) QUARRY_FAIL(path, ": negative index ", v, " at position ", i);
    out.push_back(v);
  }
}

std::vector<std::int64_t> from_npy(const Array& a, const std::string& path) {
  std::vector<std::int64_t> out;
  switch (a.dtype()) {
    case DType::u8: append_indices<std::uint8_t>(a, out, path); break;
    case DType::i8: append_indices<std::int8_t>(a, out, path); break;
    case DType::i16: append_indices<std::int16_t>(a, out, path); break;
    case DType::i32: append_indices<std::int32_t>(a, out, path); break;
    case DType::i64: append_indices<std::int64_t>(a, out, path); break;
    default: QUARRY_FAIL(path, ": an index list must hold integers, found ", dtype_name(a.dtype()));
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// The line without its comment and surrounding blanks.
std::string_view content(std::string_view line) {
  return trim(line.substr(0, line.find('#')));
}

// Comma-separated fields, trimmed and without surrounding double quotes.
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  for (;;) {
    const std::size_t comma = line.find(',');
    std::string_view f = trim(line.substr(0, comma));
    if (f.size() >= 2 && f.front() == '"' && f.back() == '"') f = f.substr(1, f.size() - 2);
    fields.push_back(f);
    if (comma == std::string_view::npos) return fields;
    line.remove_prefix(comma + 1);
  }
}

bool is_index_name(std::string_view s) {
  if (s.size() != 5) return false;
  for (std::size_t i = 0; i < 5; ++i)
    if (std::tolower(static_cast<unsigned char>(s[i])) != "index"[i]) return false;
  return true;
}

std::int64_t parse_index(std::string_view s, const std::string& path, std::size_t line) {
  bool ok = !s.empty();
  std::int64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      ok = false;
      break;
    }
    if (v > (std::numeric_limits<std::int64_t>::max() - (c - '0')) / 10)
      QUARRY_FAIL(path, ":", line, ": index '", io::printable(s), "' is out of range");
    v = v * 10 + (c - '0');
  }
  if (!ok)
    QUARRY_FAIL(path, ":", line, ": expected a non-negative integer index, found '", io::printable(s), "'");
  return v;
}

std::vector<std::int64_t> from_text(std::string_view text, const std::string& path) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 byte order mark
  std::vector<std::int64_t> out;
  std::size_t column = 0;
  bool first = true;
  for (std::size_t number = 1; !text.empty(); ++number) {
    const std::size_t eol = text.find('\n');
    const std::string_view line = content(text.substr(0, eol));
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (line.empty()) continue;
    const std::vector<std::string_view> fields = split_fields(line);
    if (first) {
      first = false;
      std::size_t i = 0;
      while (i < fields.size() && !is_index_name(fields[i])) ++i;
      if (i < fields.size()) {  // a header naming the index column
        column = i;
        continue;
      }
      if (fields.size() > 1)
        QUARRY_FAIL(path, ":", number, ": a CSV index list needs a header with an 'index' column, found '",
                    io::printable(line), "'");
    }
    if (column >= fields.size())
      QUARRY_FAIL(path, ":", number, ": expected at least ", column + 1, " columns, found ", fields.size());
    out.push_back(parse_index(fields[column], path, number));
  }
  return out;
}

}  // namespace

std::vector<std::int64_t> read_index_list(const std::string& path) {
  io::MappedFile file = io::map_file(path);
  if (file.size >= 6 && std::memcmp(file.data, "\x93NUMPY", 6) == 0)
    return from_npy(parse_npy(std::move(file.owner), file.data, file.size, path), path);
  return from_text({reinterpret_cast<const char*>(file.data), file.size}, path);
}

}  // namespace quarry
