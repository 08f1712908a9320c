// The append-only label journal of a labeling project (internal to quarry::loop): one record per
// import, each a line "<CRC-32 of the JSON text, 8 hex digits> <JSON text>\n", fsync'd on append.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "quarry/project.hpp"

namespace quarry {

/// zlib's CRC-32 of `bytes` bytes, continuing `crc` (0 to start): any size (zlib takes at most
/// 4 GiB a call). The project's checksums (journal records, the label manifest, the pool's
/// fingerprint, the cold start's embeddings) all use it.
std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t bytes);

/// One import: the labels it set (pool index -> class id), in file order.
struct JournalRecord {
  std::int64_t seq = 0;  // 1, 2, ...
  std::string time;      // UTC, ISO 8601
  std::string source;    // the imported file, as given
  std::vector<std::pair<std::int64_t, std::int32_t>> labels;
};

/// The append-only label journal. Each record is one line: the CRC-32 of the JSON text in
/// 8 hex digits, a space, the JSON text, a newline.
class LabelJournal {
 public:
  /// Reads `path` (a missing file is an empty journal). A last record that is incomplete or
  /// fails its checksum is a torn write: it is ignored and described in `torn` (empty when the
  /// journal is whole). A bad record followed by good ones is not a crash artefact: an Error
  /// naming the file, the line and the byte offset.
  static LabelJournal read(const std::string& path, std::string* torn = nullptr);
  const std::vector<JournalRecord>& records() const { return records_; }
  /// The label of every labeled index, the last record winning.
  std::map<std::int64_t, std::int32_t> labels() const;
  /// Bytes of the whole records (where a torn tail starts).
  std::uint64_t valid_bytes() const { return valid_bytes_; }
  /// Whether the file exists (a missing journal reads as empty).
  bool exists() const { return exists_; }
  /// The mark after every whole record, and after the first `records` (none past the end).
  JournalMark mark() const;
  std::optional<JournalMark> mark_at(std::int64_t records) const;
  /// Appends one record (seq = last + 1) and fsyncs the file (and, for a new file, its folder).
  /// A torn tail is cut off first. The caller holds the project's lock.
  void append(const std::string& path, JournalRecord record);

 private:
  std::vector<JournalRecord> records_;
  std::vector<JournalMark> marks_;  // after each record
  std::uint64_t valid_bytes_ = 0, file_bytes_ = 0;
  std::uint32_t crc_ = 0;
  bool exists_ = true;
};

/// The journal line of a record (with its checksum and newline).
std::string journal_line(const JournalRecord& record);

}  // namespace quarry
