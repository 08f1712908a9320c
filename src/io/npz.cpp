// NPZ: a zip archive of .npy members, stored or deflated, read with libzip.
#include <zip.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

namespace {

// Members declaring more than this are refused before anything is allocated.
constexpr std::uint64_t kMaxMemberBytes = std::uint64_t{64} << 30;
// Memory reserved up front for a member; a member that really is larger grows past it.
constexpr std::uint64_t kMaxReserve = std::uint64_t{64} << 20;
constexpr std::uint64_t kReadChunk = std::uint64_t{1} << 20;

// An archive opened over the memory-mapped file, which it keeps alive.
struct Archive {
  io::MappedFile file;
  std::unique_ptr<zip_t, void (*)(zip_t*)> zip{nullptr, zip_discard};
};

Archive open_archive(const std::string& path) {
  Archive a;
  a.file = io::map_file(path);
  if (a.file.size == 0) QUARRY_FAIL(path, ": empty file, not an NPZ archive");
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(a.file.data, a.file.size, 0, &error);
  zip_t* z = source ? zip_open_from_source(source, ZIP_RDONLY, &error) : nullptr;
  if (!z) {
    zip_source_free(source);
    // The source is memory already mapped: "no such file" here means a header that refers to
    // something the archive does not hold (libzip says so for a missing zip64 extra field).
    const std::string reason = zip_error_code_zip(&error) == ZIP_ER_NOENT ? "inconsistent entry headers"
                                                                          : zip_error_strerror(&error);
    zip_error_fini(&error);
    QUARRY_FAIL(path, ": not a valid NPZ (zip) archive: ", reason);
  }
  zip_error_fini(&error);
  a.zip.reset(z);
  return a;
}

std::vector<std::string> entry_names(zip_t* z) {
  std::vector<std::string> names;
  const zip_int64_t n = zip_get_num_entries(z, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    const char* name = zip_get_name(z, static_cast<zip_uint64_t>(i), 0);
    if (name) names.emplace_back(name);
  }
  return names;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_npy(const std::string& name) {
  return ends_with(name, ".npy") ? name.substr(0, name.size() - 4) : name;
}


// Index of `member` ("x" or "x.npy"); throws listing the members when there is none.
zip_uint64_t locate(zip_t* z, const std::string& path, const std::string& member) {
  zip_int64_t index = -1;
  if (!ends_with(member, ".npy")) index = zip_name_locate(z, (member + ".npy").c_str(), 0);
  if (index < 0) index = zip_name_locate(z, member.c_str(), 0);
  if (index < 0) {
    std::vector<std::string> names = entry_names(z);
    std::transform(names.begin(), names.end(), names.begin(), strip_npy);
    QUARRY_FAIL(path, ": no member '", member, "' (members: ", io::join_names(names), ")");
  }
  return static_cast<zip_uint64_t>(index);
}

// Reads a member in chunks: a size in the archive that lies can neither make us allocate
// more than what is really there nor go unnoticed.
std::shared_ptr<std::vector<unsigned char>> read_member(zip_t* z, zip_uint64_t index,
                                                        const std::string& name) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(z, index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
    QUARRY_FAIL(name, ": cannot read the member's size: ", zip_strerror(z));
  if (st.size > kMaxMemberBytes)
    QUARRY_FAIL(name, ": member declares ", st.size, " bytes, more than the limit of ", kMaxMemberBytes);
  // Checked before inflating: deflate expands at most 1032 times, and the member must fit in memory.
  if ((st.valid & ZIP_STAT_COMP_SIZE) && st.comp_size < st.size && st.size / 1032 > st.comp_size)
    QUARRY_FAIL(name, ": member declares ", st.size, " bytes, more than its ", st.comp_size,
                " compressed bytes can hold (deflate expands at most 1032 times): not inflated");
  const std::uint64_t available = io::available_memory();
  if (available > 0 && st.size > available)
    QUARRY_FAIL(name, ": member declares ", st.size, " bytes, more than the ", available,
                " bytes of memory available: not inflated");

  std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> f(zip_fopen_index(z, index, 0), zip_fclose);
  if (!f) QUARRY_FAIL(name, ": cannot open the member: ", zip_strerror(z));
  auto buf = std::make_shared<std::vector<unsigned char>>();
  buf->reserve(static_cast<std::size_t>(std::min(st.size, kMaxReserve)));
  bool header_checked = false;
  for (;;) {
    const std::uint64_t have = buf->size();
    // Up to the declared size, then one byte more to detect a member longer than declared.
    const std::uint64_t want = have < st.size ? std::min(kReadChunk, st.size - have) : 1;
    buf->resize(static_cast<std::size_t>(have + want));
    const zip_int64_t got = zip_fread(f.get(), buf->data() + have, want);
    if (got < 0) QUARRY_FAIL(name, ": cannot read the member: ", zip_file_strerror(f.get()));
    buf->resize(static_cast<std::size_t>(have + static_cast<std::uint64_t>(got)));
    if (got == 0 || buf->size() > st.size) break;
    // Once the NPY header is in, its shape must account for the declared size exactly: a
    // member whose header and size disagree is refused before the rest is inflated.
    if (!header_checked) {
      const std::size_t header_len = io::npy_data_offset(buf->data(), buf->size());
      if (header_len > 0 && buf->size() >= header_len) {
        header_checked = true;
        const std::uint64_t data = io::npy_data_bytes(buf->data(), buf->size(), name);
        if (data + header_len != st.size)
          QUARRY_FAIL(name, ": its NPY header describes ", data, " bytes of data after ", header_len,
                      " header bytes, but the archive declares ", st.size, " bytes for the member: not inflated further");
      }
    }
  }
  if (buf->size() > st.size)
    QUARRY_FAIL(name, ": member is longer than the ", st.size, " bytes the archive declares");
  if (buf->size() < st.size)
    QUARRY_FAIL(name, ": member holds only ", buf->size(), " bytes but the archive declares ", st.size);
  return buf;
}

}  // namespace

std::vector<std::string> npz_members(const std::string& path) {
  const Archive a = open_archive(path);
  std::vector<std::string> names = entry_names(a.zip.get());
  std::transform(names.begin(), names.end(), names.begin(), strip_npy);
  return names;
}

Array read_npz_member(const std::string& path, const std::string& member) {
  const Archive a = open_archive(path);
  const std::string name = path + ":" + strip_npy(member);
  const auto buf = read_member(a.zip.get(), locate(a.zip.get(), path, member), name);
  return parse_npy(buf, buf->data(), buf->size(), name);
}

}  // namespace quarry
