#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  QUARRY_EXPECTS(fd >= 0, "cannot write ", path, ": ", std::strerror(errno));
  auto fail = [&](int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    QUARRY_FAIL("cannot write ", path, ": ", std::strerror(err));
  };
  for (std::string_view part : parts) {
    std::size_t done = 0;
    while (done < part.size()) {
      const ssize_t w = ::write(fd, part.data() + done, part.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail(w < 0 ? errno : EIO);
      done += static_cast<std::size_t>(w);
    }
  }
  if (::fsync(fd) != 0) fail(errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    QUARRY_FAIL("cannot write ", path, ": ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    QUARRY_FAIL("cannot write ", path, ": ", std::strerror(err));
  }
  (void)fsync_parent_folder(path);  // best effort: the file itself is whole and renamed
}

bool fsync_parent_folder(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return false;
  const bool synced = ::fsync(dfd) == 0;
  const int err = errno;
  ::close(dfd);
  errno = err;
  return synced;
}

}  // namespace quarry
