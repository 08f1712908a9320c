// Internal to the io readers: a read-only memory map of a whole file, and a helper for
// quoting file content in error messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/array.hpp"

namespace quarry::io {

/// A whole file mapped read-only. `owner` unmaps it when the last reference goes away.
/// An empty file is valid and maps to nothing: data is null and size is 0.
struct MappedFile {
  std::shared_ptr<const void> owner;
  const unsigned char* data = nullptr;
  std::size_t size = 0;
};

/// Maps `path` (opened by open_input) and guards the mapping against the file shrinking while it
/// is read (see check_mapped_inputs); throws quarry::Error "cannot open PATH: REASON" when it cannot.
MappedFile map_file(const std::string& path);

/// Opens `path` for reading without ever blocking, and only when it is a regular file: a folder,
/// a FIFO, a device or a socket is an Error that says which. Notes the file's identity among the
/// inputs this process read (input_read_as). The caller closes the descriptor.
int open_input(const std::string& path);

/// "a folder", "a pipe (FIFO)", "a character device", ...: what a path is, for messages.
std::string file_type_name(unsigned mode);

/// Where the data of an NPY image starts (magic, version, header length and header), or 0 while
/// the first `size` bytes do not tell yet.
std::size_t npy_data_offset(const unsigned char* p, std::size_t size);
/// The bytes of data the header of an NPY image describes; `size` (>= npy_data_offset) bytes of
/// its start are given. Errors name `name`.
std::uint64_t npy_data_bytes(const unsigned char* p, std::size_t size, const std::string& name);

/// Bytes of memory available to this process (MemAvailable), or 0 when unknown.
std::uint64_t available_memory();

/// Registers a mapping of `path` with the SIGBUS guard; returns the slot for unguard_mapping.
int guard_mapping(const void* data, std::size_t size, const std::string& path);
void unguard_mapping(int slot);

/// At most `max` characters of `text` with non-printable bytes written as \xNN, and "..."
/// when cut: file content safe to quote in an error message.
std::string printable(std::string_view text, std::size_t max = 60);

/// Reads an IDX file (raw or gzip) that is already mapped; `path` names it in errors.
Array parse_idx(const MappedFile& file, const std::string& path);

/// "a, b, c" ("none" for an empty list): names listed in error messages.
std::string join_names(const std::vector<std::string>& names);

}  // namespace quarry::io
