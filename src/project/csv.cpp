#include "project/csv.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "quarry/error.hpp"

namespace quarry::csv {

std::vector<Row> parse(std::string_view text, const std::string& name) {
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<Row> rows;
  Row row;
  std::string value;
  std::int64_t line = 1;
  bool in_quotes = false, quoted_field = false, row_started = false, row_quoted = false;
  std::int64_t quote_line = 0;
  row.line = 1;
  auto end_field = [&] {
    row.fields.push_back(std::move(value));
    value.clear();
    quoted_field = false;
  };
  auto end_row = [&] {
    // Blank: nothing but separators and spaces, nothing quoted (",," from a spreadsheet).
    row_quoted = row_quoted || quoted_field;
    end_field();
    const bool blank = !row_quoted && std::all_of(row.fields.begin(), row.fields.end(), [](const std::string& f) {
      return f.find_first_not_of(" \t") == std::string::npos;
    });
    row_quoted = false;
    if (!blank) rows.push_back(std::move(row));
    row = Row{};
    row_started = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!row_started) {
      row.line = line;
      row_started = true;
    }
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          value += '"';
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (c == '\n') ++line;
        value += c;
      }
      continue;
    }
    if (c == '"' && value.empty() && !quoted_field) {
      in_quotes = quoted_field = row_quoted = true;
      quote_line = line;
    } else if (c == ',') {
      end_field();
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row();
      ++line;
    } else {
      value += c;
    }
  }
  QUARRY_EXPECTS(!in_quotes, name, ": line ", quote_line, ": a quoted field is never closed");
  if (row_started) end_row();
  return rows;
}

std::string field(std::string_view v) {
  const bool quote = v.find_first_of(",\"\r\n") != std::string_view::npos ||
                     (!v.empty() && (v.front() == ' ' || v.back() == ' '));
  if (!quote) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

int column(const Row& header, std::string_view name) {
  for (std::size_t i = 0; i < header.fields.size(); ++i) {
    std::string_view f = header.fields[i];
    while (!f.empty() && f.front() == ' ') f.remove_prefix(1);
    while (!f.empty() && f.back() == ' ') f.remove_suffix(1);
    if (f == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace quarry::csv
