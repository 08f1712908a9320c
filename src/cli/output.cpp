#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "cli.hpp"
#include "quarry/error.hpp"

namespace quarry::cli {

void write_text_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  QUARRY_EXPECTS(fd >= 0, "cannot write ", path, ": ", std::strerror(errno));
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t w = ::write(fd, content.data() + done, content.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      QUARRY_FAIL("cannot write ", path, ": ", std::strerror(err));
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    QUARRY_FAIL("cannot write ", path, ": ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    QUARRY_FAIL("cannot write ", path, ": ", std::strerror(err));
  }
}

std::string selection_csv(const Selection& sel) {
  std::string out = "rank,index,score\n";
  out.reserve(out.size() + sel.index.size() * 32);
  for (std::size_t r = 0; r < sel.index.size(); ++r)
    out += fmt::format("{},{},{:.9g}\n", r + 1, sel.index[r], sel.score[r]);
  return out;
}

std::string selection_json(const Selection& sel, const std::string& strategy, const std::string& source) {
  nlohmann::json j;
  j["strategy"] = strategy;
  j["source"] = source;
  j["k"] = sel.index.size();
  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t r = 0; r < sel.index.size(); ++r)
    rows.push_back({{"rank", r + 1}, {"index", sel.index[r]}, {"score", sel.score[r]}});
  j["selected"] = std::move(rows);
  return j.dump(2) + "\n";
}

}  // namespace quarry::cli
