// The label journal: append-only, one checksummed line per import.
//   <crc32 of the JSON, 8 lowercase hex digits> <JSON>\n
// A record is whole when its line ends with '\n', the checksum matches and the JSON is a record
// with the next sequence number. Only the last record may be broken (a torn write: the process
// died during the append); anything else is corruption, reported and never skipped silently.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/project.hpp"

namespace quarry {
namespace {

std::uint32_t crc_of(std::string_view text) {
  return static_cast<std::uint32_t>(
      ::crc32(0L, reinterpret_cast<const Bytef*>(text.data()), static_cast<uInt>(text.size())));
}

// Parses one line (without its '\n'); returns an empty string when good, else why not.
std::string parse_line(std::string_view line, std::int64_t expected_seq, JournalRecord* out) {
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
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    struct stat st;
    QUARRY_EXPECTS(::stat(path.c_str(), &st) != 0 && errno == ENOENT, path, ": cannot read the label journal: ",
                   std::strerror(errno));
    return journal;  // no labels yet
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string data = buffer.str();
  std::size_t pos = 0;
  std::int64_t line_no = 0;
  while (pos < data.size()) {
    ++line_no;
    const std::size_t nl = data.find('\n', pos);
    JournalRecord r;
    std::string why;
    if (nl == std::string::npos)
      why = "incomplete last line (no newline)";
    else
      why = parse_line(std::string_view(data).substr(pos, nl - pos),
                       static_cast<std::int64_t>(journal.records_.size()) + 1, &r);
    if (!why.empty()) {
      // Torn only if nothing whole follows: a crash cuts the end of the file, never the middle.
      const bool last = nl == std::string::npos || nl + 1 >= data.size();
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
    pos = nl + 1;
    journal.valid_bytes_ = pos;
  }
  return journal;
}

std::map<std::int64_t, std::int32_t> LabelJournal::labels() const {
  std::map<std::int64_t, std::int32_t> out;
  for (const auto& r : records_)
    for (const auto& [index, label] : r.labels) out[index] = label;
  return out;
}

void LabelJournal::append(const std::string& path, JournalRecord record) {
  record.seq = static_cast<std::int64_t>(records_.size()) + 1;
  const std::string line = journal_line(record);
  struct stat st;
  const bool existed = ::stat(path.c_str(), &st) == 0;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  QUARRY_EXPECTS(fd >= 0, path, ": cannot open the label journal for writing: ", std::strerror(errno));
  auto fail = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    QUARRY_FAIL(path, ": ", what, ": ", std::strerror(err), " (the labels of this import were not saved)");
  };
  // Cut a torn tail off (and anything a failed append left), then append at the end.
  if (::ftruncate(fd, static_cast<off_t>(valid_bytes_)) != 0) fail("cannot cut the torn tail");
  if (::lseek(fd, static_cast<off_t>(valid_bytes_), SEEK_SET) < 0) fail("cannot seek");
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(fd, line.data() + done, line.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = EIO;
      const int err = errno;
      (void)::ftruncate(fd, static_cast<off_t>(valid_bytes_));  // leave no partial record behind
      errno = err;
      fail("cannot append");
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) fail("cannot fsync");
  if (::close(fd) != 0) {
    const int err = errno;
    QUARRY_FAIL(path, ": cannot close the label journal: ", std::strerror(err),
                " (the labels of this import may not be saved)");
  }
  if (!existed) fsync_parent_folder(path);
  valid_bytes_ += line.size();
  records_.push_back(std::move(record));
}

}  // namespace quarry
