// Internal to the io readers: a read-only memory map of a whole file, and a helper for
// quoting file content in error messages.
#pragma once

#include <cstddef>
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

/// Maps `path`; throws quarry::Error "cannot open PATH: REASON" when it cannot.
MappedFile map_file(const std::string& path);

/// At most `max` characters of `text` with non-printable bytes written as \xNN, and "..."
/// when cut: file content safe to quote in an error message.
std::string printable(std::string_view text, std::size_t max = 60);

/// Reads an IDX file (raw or gzip) that is already mapped; `path` names it in errors.
Array parse_idx(const MappedFile& file, const std::string& path);

/// "a, b, c" ("none" for an empty list): names listed in error messages.
std::string join_names(const std::vector<std::string>& names);

}  // namespace quarry::io
