// Format detection from magic bytes, and read_array over every supported format.
#include <sys/stat.h>

#include <cstring>

#include "files.hpp"
#include "mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

namespace {

bool starts_with(const io::MappedFile& f, const char* magic, std::size_t n) {
  return f.size >= n && std::memcmp(f.data, magic, n) == 0;
}

FileKind kind_of(const io::MappedFile& f) {
  if (starts_with(f, "\x93NUMPY", 6)) return FileKind::npy;
  if (starts_with(f, "PK\x03\x04", 4) || starts_with(f, "PK\x05\x06", 4)) return FileKind::npz;
  if (starts_with(f, "\x1f\x8b", 2)) return FileKind::idx_gz;
  if (f.size >= 4 && f.data[0] == 0 && f.data[1] == 0 && f.data[3] >= 1 && f.data[3] <= 8)
    return FileKind::idx;
  return FileKind::unknown;
}

}  // namespace

FileKind detect_file_kind(const std::string& path) {
  return kind_of(io::map_file(path));
}

Array read_array(const std::string& spec) {
  // "x.npz:member" names a member only when x.npz exists; any other ':' is part of a path.
  if (npz_member_spec(spec)) {
    const std::size_t colon = spec.rfind(':');
    return read_npz_member(spec.substr(0, colon), spec.substr(colon + 1));
  }
  if (is_nifti_path(spec)) return read_nifti(spec);
  const io::MappedFile file = io::map_file(spec);  // mapped once: detected, then parsed
  switch (kind_of(file)) {
    case FileKind::npy: return parse_npy(file.owner, file.data, file.size, spec);
    case FileKind::idx:
    case FileKind::idx_gz: return io::parse_idx(file, spec);
    case FileKind::npz:
      QUARRY_FAIL(spec, ": an NPZ archive needs a member name, as ", spec,
                  ":MEMBER (members: ", io::join_names(npz_members(spec)), ")");
    case FileKind::unknown: break;
  }
  if (file.size == 0) QUARRY_FAIL(spec, ": empty file");
  QUARRY_FAIL(spec,
              ": unknown file format (supported: .npy, .npz as FILE.npz:MEMBER, IDX raw or gzip-compressed, NIfTI .nii/.nii.gz)");
}

}  // namespace quarry
