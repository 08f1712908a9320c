// The label journal: append-only, one checksummed line per import.
//   <crc32 of the JSON, 8 lowercase hex digits> <JSON>\n
// A record is whole when its line ends with '\n', the checksum matches and the JSON is a record
// with the next sequence number. Only the last record may be broken (a torn write: the process
// died during the append); anything else is corruption, reported and never skipped silently.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/files.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/project.hpp"
#include "project/journal.hpp"

namespace quarry {

std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t bytes) {
  if (bytes == 0) return crc;  // zlib's crc32(crc, NULL, 0) would return 0, not crc
  const auto* p = static_cast<const Bytef*>(data);
  do {
    const std::size_t part = std::min<std::size_t>(bytes, std::size_t{1} << 30);
    crc = static_cast<std::uint32_t>(::crc32(crc, p, static_cast<uInt>(part)));
    p += part;
    bytes -= part;
  } while (bytes > 0);
  return crc;
}

namespace {

std::uint32_t crc_of(std::string_view text) { return crc32_update(0, text.data(), text.size()); }

// Parses one line (without its '\n'); returns an empty string when good, else why not.
// `crc_ok` tells whether the checksum matched (a crash cannot make a matching bad record).
std::string parse_line(std::string_view line, std::int64_t expected_seq, JournalRecord* out, bool* crc_ok) {
  *crc_ok = false;
  if (line.size() < 10 || line[8] != ' ') return "not a journal record (expected 8 hex digits, a space, JSON)";
  std::uint32_t crc = 0;
  for (int i = 0; i < 8; ++i) {
    const char c = line[static_cast<std::size_t>(i)];
    const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return "not a journal record (expected 8 hex digits, a space, JSON)";
    crc = crc << 4 | static_cast<std::uint32_t>(v);
  }
  const std::string_view text = line.substr(9);
  if (crc_of(text) != crc) return "checksum mismatch";
  *crc_ok = true;
  try {
    const auto j = nlohmann::json::parse(text);
    JournalRecord r;
    r.seq = j.at("seq").get<std::int64_t>();
    r.time = j.value("time", "");
    r.source = j.value("source", "");
    const auto& labels = j.at("labels");
    r.labels.reserve(labels.size());
    for (const auto& p : labels) r.labels.emplace_back(p.at(0).get<std::int64_t>(), p.at(1).get<std::int32_t>());
    if (r.seq != expected_seq) return fmt::format("sequence number {} where {} was expected", r.seq, expected_seq);
    *out = std::move(r);
  } catch (const nlohmann::json::exception& e) {
    return std::string("bad record: ") + e.what();
  }
  return {};
}

}  // namespace

std::string journal_line(const JournalRecord& r) {
  nlohmann::json j;
  j["seq"] = r.seq;
  j["time"] = r.time;
  j["source"] = r.source;
  auto labels = nlohmann::json::array();
  for (const auto& [index, label] : r.labels) labels.push_back({index, label});
  j["labels"] = std::move(labels);
  const std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return fmt::format("{:08x} {}\n", crc_of(text), text);
}

LabelJournal LabelJournal::read(const std::string& path, std::string* torn) {
  if (torn) torn->clear();
  LabelJournal journal;
  // Read with plain read(2) and check the size: a read error must never look like a torn tail
  // (the next append would cut whole records off). O_NONBLOCK: a FIFO put in its place must not
  // hang the command (it is refused below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    QUARRY_EXPECTS(errno == ENOENT, path, ": cannot read the label journal: ", std::strerror(errno));
    journal.exists_ = false;
    return journal;  // no labels yet
  }
  std::string data;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    QUARRY_FAIL(path, ": cannot read the label journal: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    QUARRY_FAIL(path, ": the label journal is not a regular file (", S_ISDIR(st.st_mode) ? "a folder" : "a device or pipe",
                "); nothing was changed");
  }
  data.resize(static_cast<std::size_t>(st.st_size));
  int err = 0;
  if (io::read_full(fd, data.data(), data.size(), &err) < data.size()) {
    ::close(fd);
    QUARRY_FAIL(path, ": cannot read the label journal: ",
                err != 0 ? std::strerror(err) : "it ended before its size (changed while read?)");
  }
  ::close(fd);
  journal.file_bytes_ = data.size();
  std::size_t pos = 0;
  std::int64_t line_no = 0;
  while (pos < data.size()) {
    ++line_no;
    const std::size_t nl = data.find('\n', pos);
    JournalRecord r;
    std::string why;
    bool crc_ok = false;
    if (nl == std::string::npos)
      why = "incomplete last line (no newline)";
    else
      why = parse_line(std::string_view(data).substr(pos, nl - pos),
                       static_cast<std::int64_t>(journal.records_.size()) + 1, &r, &crc_ok);
    if (!why.empty()) {
      // Torn only if nothing whole follows (a crash cuts the end of the file, never the middle)
      // and the checksum failed (a record whose checksum matches was written whole).
      const bool last = nl == std::string::npos || nl + 1 >= data.size();
      QUARRY_EXPECTS(!crc_ok, path, ": line ", line_no, " (byte ", pos, "): ", why,
                     " in a record whose checksum matches: the journal is corrupt, not torn by a crash. "
                     "Nothing was changed; restore the file from a backup or repair that line.");
      QUARRY_EXPECTS(last, path, ": line ", line_no, " (byte ", pos, "): ", why,
                     ", and whole records follow it: the journal is corrupt, not torn by a crash. "
                     "Nothing was changed; restore the file from a backup or repair that line.");
      if (torn)
        *torn = fmt::format("{}: line {} (byte {}, {} bytes) is a torn write ({}); it is ignored, and the "
                            "next import cuts it off",
                            path, line_no, pos, data.size() - pos, why);
      break;
    }
    journal.records_.push_back(std::move(r));
    journal.crc_ = crc32_update(journal.crc_, data.data() + pos, nl + 1 - pos);
    pos = nl + 1;
    journal.valid_bytes_ = pos;
    journal.marks_.push_back({static_cast<std::int64_t>(journal.records_.size()), journal.valid_bytes_, journal.crc_});
  }
  return journal;
}

std::map<std::int64_t, std::int32_t> LabelJournal::labels() const {
  std::map<std::int64_t, std::int32_t> out;
  for (const auto& r : records_)
    for (const auto& [index, label] : r.labels) out[index] = label;
  return out;
}

JournalMark LabelJournal::mark() const { return marks_.empty() ? JournalMark{} : marks_.back(); }

std::optional<JournalMark> LabelJournal::mark_at(std::int64_t records) const {
  if (records == 0) return JournalMark{};
  if (records < 0 || records > static_cast<std::int64_t>(marks_.size())) return std::nullopt;
  return marks_[static_cast<std::size_t>(records - 1)];
}

void LabelJournal::append(const std::string& path, JournalRecord record) {
  record.seq = static_cast<std::int64_t>(records_.size()) + 1;
  const std::string line = journal_line(record);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0644);
  QUARRY_EXPECTS(fd >= 0, path, ": cannot open the label journal for writing: ", std::strerror(errno));
  auto fail = [&](const char* what, int err) {
    ::close(fd);
    QUARRY_FAIL(path, ": ", what, ": ", std::strerror(err), " (the labels of this import were not saved)");
  };
  // Only what this object read may be cut: the file must still be the size it had then.
  struct stat st;
  if (::fstat(fd, &st) != 0) fail("cannot stat", errno);
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    QUARRY_FAIL(path, ": the label journal is not a regular file; nothing was imported");
  }
  if (static_cast<std::uint64_t>(st.st_size) != file_bytes_) {
    ::close(fd);
    QUARRY_FAIL(path, ": the journal is ", st.st_size, " bytes, not the ", file_bytes_,
                " read a moment ago (written by something else?); nothing was imported");
  }
  // Cut a torn tail off, then append at the end.
  if (valid_bytes_ != file_bytes_ && ::ftruncate(fd, static_cast<off_t>(valid_bytes_)) != 0)
    fail("cannot cut the torn tail", errno);
  // Leaves no partial or unsynced record behind: a later import must never append after one.
  auto roll_back = [&](const char* what, int err) {
    if (::ftruncate(fd, static_cast<off_t>(valid_bytes_)) != 0 || ::fsync(fd) != 0) {
      ::close(fd);
      QUARRY_FAIL(path, ": ", what, ": ", std::strerror(err),
                  ", and the partial record could not be removed: nothing was imported; check the disk, then "
                  "run `quarry project status` (it ignores the partial record) before importing again");
    }
    fail(what, err);
  };
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::pwrite(fd, line.data() + done, line.size() - done, static_cast<off_t>(valid_bytes_ + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) roll_back("cannot append", w < 0 ? errno : EIO);
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) roll_back("cannot fsync", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    QUARRY_FAIL(path, ": cannot close the label journal: ", std::strerror(err),
                " (the labels of this import may not be saved)");
  }
  // The folder too, every time: a first import that died after creating the file left an entry
  // that nothing else would make durable.
  if (!fsync_parent_folder(path))
    QUARRY_FAIL(path, ": cannot fsync the project folder: ", std::strerror(errno),
                " (the labels were written; run the import again to be sure)");
  valid_bytes_ += line.size();
  file_bytes_ = valid_bytes_;
  crc_ = crc32_update(crc_, line.data(), line.size());
  records_.push_back(std::move(record));
  marks_.push_back({static_cast<std::int64_t>(records_.size()), valid_bytes_, crc_});
  exists_ = true;
}

}  // namespace quarry
