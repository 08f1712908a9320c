#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

AtomicFile::AtomicFile(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp." + std::to_string(::getpid())) {
  // An existing path that is not a regular file (/dev/null, /dev/stdout, a pipe) is written in
  // place: renaming over it would replace the device or the pipe with a file.
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
    tmp_.clear();
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
  } else {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  }
  QUARRY_EXPECTS(fd_ >= 0, "cannot write ", path_, ": ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::fail(int err) {
  ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  QUARRY_FAIL("cannot write ", path_, ": ", std::strerror(err));
}

void AtomicFile::write(std::string_view part) {
  QUARRY_EXPECTS(fd_ >= 0 && !committed_, "cannot write ", path_, ": the file is closed");
  std::size_t done = 0;
  while (done < part.size()) {
    const ssize_t w = ::write(fd_, part.data() + done, part.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(w < 0 ? errno : EIO);
    done += static_cast<std::size_t>(w);
  }
  written_ += part.size();
}

void AtomicFile::commit() {
  QUARRY_EXPECTS(fd_ >= 0 && !committed_, "cannot write ", path_, ": the file is closed");
  if (tmp_.empty()) {  // a device or a pipe, written in place
    const int fd = fd_;
    fd_ = -1;
    committed_ = true;
    QUARRY_EXPECTS(::close(fd) == 0, "cannot write ", path_, ": ", std::strerror(errno));
    return;
  }
  if (::fsync(fd_) != 0) fail(errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    QUARRY_FAIL("cannot write ", path_, ": ", std::strerror(err));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    QUARRY_FAIL("cannot write ", path_, ": ", std::strerror(err));
  }
  committed_ = true;
  (void)fsync_parent_folder(path_);  // best effort: the file itself is whole and renamed
}

void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts) {
  AtomicFile f(path);
  for (std::string_view part : parts) f.write(part);
  f.commit();
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
