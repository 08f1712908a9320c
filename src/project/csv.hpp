// A small RFC 4180 CSV reader and writer for the project's interchange files (manifests, label
// imports, batches): quoted fields with "" escapes, commas and newlines inside quotes, CRLF or
// LF line ends, a UTF-8 byte-order mark. Each row keeps the line it starts on, for errors.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace quarry::csv {

struct Row {
  std::int64_t line = 0;            // 1-based line where the row starts
  std::vector<std::string> fields;
};

/// Parses `text`; blank lines are skipped. An unterminated quote is an Error naming `name` and
/// the line it opened on.
std::vector<Row> parse(std::string_view text, const std::string& name);

/// A field quoted where needed (commas, quotes, line breaks, leading/trailing spaces).
std::string field(std::string_view value);

/// The position of `name` in a header row (case-sensitive, spaces trimmed), or -1.
int column(const Row& header, std::string_view name);

}  // namespace quarry::csv
