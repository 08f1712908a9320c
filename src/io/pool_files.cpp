// Pool files (include/quarry/pool_files.hpp): shards found by glob or list, checked to agree,
// memory-mapped where the format allows, with page advice for the rows a stream has done with.
#include "quarry/pool_files.hpp"

#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>

#include "io/mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "files.hpp"

namespace quarry {

// ------------------------------------------------------------------ PoolFiles
std::vector<std::string> expand_spec(const std::string& spec) {
  QUARRY_EXPECTS(!spec.empty(), "an empty file name was given for a pool");
  if (spec.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    const int rc = ::glob(spec.c_str(), GLOB_ERR, nullptr, &g);
    std::vector<std::string> out;
    if (rc == 0)
      for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
    globfree(&g);
    QUARRY_EXPECTS(!out.empty(), spec, ": no file matches this pattern");
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = spec.find(',', start);
    const std::string part = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    QUARRY_EXPECTS(!part.empty(), spec, ": an empty file name in the list");
    out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::size_t page_size() {
  static const std::size_t p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

void advise(const void* begin, std::size_t bytes, int advice) {
  if (bytes == 0) return;
  const std::size_t ps = page_size();
  const auto a = reinterpret_cast<std::uintptr_t>(begin);
  const std::uintptr_t lo = a / ps * ps, hi = (a + bytes + ps - 1) / ps * ps;
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, advice);  // a hint: failure changes nothing
}

PoolFiles PoolFiles::open(const std::string& spec) {
  std::vector<Array> parts;
  std::vector<bool> mapped;
  const std::vector<std::string> paths = expand_spec(spec);
  // A shard named twice (twice in a list, or as a link to another) would count its rows twice.
  expect_distinct_files(paths, spec, "shard");
  for (const std::string& path : paths) {
    // Pages may be dropped (MADV_DONTNEED) only where the data lies in a file mapping: an NPY whose
    // data parse_npy had to copy (misaligned), an NPZ member or an IDX file is heap memory.
    if (std::filesystem::is_regular_file(path) && detect_file_kind(path) == FileKind::npy) {
      io::MappedFile f = io::map_file(path);
      const unsigned char* base = f.data;
      const std::size_t size = f.size;
      parts.push_back(parse_npy(std::move(f.owner), base, size, path));
      const auto* d = static_cast<const unsigned char*>(parts.back().data());
      mapped.push_back(d >= base && d < base + size);
    } else {
      parts.push_back(read_array(path));
      mapped.push_back(false);
    }
  }
  PoolFiles p = of(std::move(parts), spec);
  p.mapped_ = std::move(mapped);
  return p;
}

PoolFiles PoolFiles::of(std::vector<Array> parts, const std::string& name) {
  QUARRY_EXPECTS(!parts.empty(), name, ": a pool needs at least one array");
  PoolFiles p;
  p.spec_ = name;
  for (Array& a : parts) {
    const std::string& path = a.source();
    QUARRY_EXPECTS(a.rank() >= 1 && a.rank() <= 3, path, ": expected an array of rank 1 to 3, got shape ",
                   shape_string(a.shape()));
    if (!p.files_.empty()) {
      const Array& f = p.files_.front();
      QUARRY_EXPECTS(a.dtype() == f.dtype(), path, ": dtype ", dtype_name(a.dtype()), " differs from ",
                     dtype_name(f.dtype()), " of ", f.source(), " (the shards of ", name, " must agree)");
      bool same = a.rank() == f.rank();
      for (int d = 0; same && d < a.rank(); ++d) same = d == p.sample_axis() || a.shape()[d] == f.shape()[d];
      QUARRY_EXPECTS(same, path, ": shape ", shape_string(a.shape()), " does not continue ", f.source(),
                     "'s ", shape_string(f.shape()), " (shards may differ only in the number of samples)");
    }
    p.starts_.push_back(p.n_);
    p.n_ += a.shape()[a.rank() == 3 ? 1 : 0];
    p.files_.push_back(std::move(a));
    p.mapped_.push_back(false);
  }
  p.starts_.push_back(p.n_);
  return p;
}

std::vector<std::int64_t> PoolFiles::shape() const {
  std::vector<std::int64_t> s = files_.front().shape();
  s[static_cast<std::size_t>(sample_axis())] = n_;
  return s;
}

std::size_t PoolFiles::file_of(std::int64_t row) const {
  const auto it = std::upper_bound(starts_.begin(), starts_.end() - 1, row);
  return static_cast<std::size_t>(it - starts_.begin()) - 1;
}

std::size_t PoolFiles::sample_bytes() const {
  const std::vector<std::int64_t>& s = files_.front().shape();
  std::size_t per = dtype_size(dtype());
  for (int d = 0; d < rank(); ++d)
    if (d != sample_axis()) per *= static_cast<std::size_t>(s[static_cast<std::size_t>(d)]);
  return per;
}

ArrayView PoolFiles::whole() const {
  QUARRY_EXPECTS(files_.size() == 1, spec_, ": a single array was expected, got ", files_.size(), " files");
  return files_.front().view();
}

// Bytes of one sample of one member (the contiguous unit): C * size, or D * size, or size.
static std::size_t member_row_bytes(const Array& a) {
  return a.rank() == 1 ? dtype_size(a.dtype()) : static_cast<std::size_t>(a.shape().back()) * dtype_size(a.dtype());
}

const void* PoolFiles::row_pointer(std::int64_t row) const {
  const std::size_t f = file_of(row);
  return static_cast<const unsigned char*>(files_[f].data()) +
         static_cast<std::size_t>(row - starts_[f]) * member_row_bytes(files_[f]);
}

std::int64_t PoolFiles::member_stride(std::int64_t row) const {
  const Array& a = files_[file_of(row)];
  return a.rank() == 3 ? a.shape()[1] * a.shape()[2] : 0;
}

void PoolFiles::advise_rows(std::int64_t begin, std::int64_t end, int advice) const {
  if (begin >= end || !mapped_[file_of(begin)]) return;  // DONTNEED on heap memory would zero it
  const Array& a = files_[file_of(begin)];
  const std::int64_t members = a.rank() == 3 ? a.shape()[0] : 1;
  const std::size_t rb = member_row_bytes(a), bytes = static_cast<std::size_t>(end - begin) * rb;
  for (std::int64_t m = 0; m < members; ++m)
    advise(static_cast<const unsigned char*>(row_pointer(begin)) + m * member_stride(begin) * dtype_size(a.dtype()),
           bytes, advice);
}

void PoolFiles::prefetch(std::int64_t begin, std::int64_t end) const { advise_rows(begin, end, MADV_WILLNEED); }
void PoolFiles::release(std::int64_t begin, std::int64_t end) const { advise_rows(begin, end, MADV_DONTNEED); }

Array PoolFiles::gather(const std::vector<std::int64_t>& rows) const {
  std::vector<std::int64_t> shape = files_.front().shape();
  shape[static_cast<std::size_t>(sample_axis())] = static_cast<std::int64_t>(rows.size());
  Array out = Array::allocate(dtype(), shape, spec_);
  const std::int64_t members = rank() == 3 ? shape[0] : 1;
  const std::size_t rb = member_row_bytes(files_.front()), es = dtype_size(dtype());
  auto* dst = static_cast<unsigned char*>(out.mutable_data());
  for (std::int64_t m = 0; m < members; ++m)
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const std::int64_t r = rows[i];
      QUARRY_EXPECTS(r >= 0 && r < n_, spec_, ": row ", r, " is outside the pool [0, ", n_, ")");
      std::memcpy(dst + (m * static_cast<std::int64_t>(rows.size()) + static_cast<std::int64_t>(i)) * rb,
                  static_cast<const unsigned char*>(row_pointer(r)) + m * member_stride(r) * es, rb);
    }
  return out;
}

// ------------------------------------------------------------------ sizes
std::int64_t parse_bytes(std::string_view text) {
  // Digits, an optional fraction, an optional unit: no sign, exponent, hexadecimal or NaN.
  const std::string t(text);
  std::size_t i = 0;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
  std::size_t digits = i;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i, ++digits;
  }
  std::string unit = t.substr(i);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  const double v = digits > 0 && i <= 40 ? std::strtod(t.substr(0, i).c_str(), nullptr) : 0.0;
  QUARRY_USAGE_EXPECTS(scale > 0 && digits > 0 && i <= 40 && v * scale >= 1 && v * scale < 9e18, "memory budget '",
                       quote_input(t), "': expected a positive size such as 512M, 2G or 1000000 (K, M, G, T: powers of 1024)");
  return static_cast<std::int64_t>(v * scale);
}

}  // namespace quarry
