#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "files.hpp"

namespace quarry {

std::string write_target(const std::string& path) {
  std::string p = path;
  for (int hop = 0; hop < 40; ++hop) {
    if (p.rfind("/proc/", 0) == 0) return p;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    std::string buf(4096, '\0');
    const ssize_t n = ::readlink(p.c_str(), &buf[0], buf.size());
    if (n <= 0 || static_cast<std::size_t>(n) >= buf.size()) return p;
    buf.resize(static_cast<std::size_t>(n));
    if (buf[0] != '/') {
      const auto slash = p.find_last_of('/');
      buf = (slash == std::string::npos ? std::string() : p.substr(0, slash + 1)) + buf;
    }
    p = buf;
  }
  QUARRY_FAIL("cannot write ", path, ": too many levels of symbolic links");
}

namespace {

// The descriptor of this process that `path` (or where its links lead) names: /dev/stdout,
// /dev/stderr, /dev/fd/N, /proc/self/fd/N, /proc/<this pid>/fd/N; -1 for any other path.
// Writing through a duplicate keeps the descriptor's own mode and offset: `-o /dev/stdout
// >> log` appends, where reopening the path would write over the file from its start.
int own_descriptor(const std::string& path, const std::string& target) {
  for (const std::string& p : {path, target}) {
    if (p == "/dev/stdout") return 1;
    if (p == "/dev/stderr") return 2;
    for (const std::string& prefix :
         {std::string("/dev/fd/"), std::string("/proc/self/fd/"), "/proc/" + std::to_string(::getpid()) + "/fd/"}) {
      if (p.size() <= prefix.size() || p.compare(0, prefix.size(), prefix) != 0 || p.size() - prefix.size() > 9) continue;
      int fd = 0;
      for (std::size_t i = prefix.size(); i < p.size(); ++i) {
        if (p[i] < '0' || p[i] > '9') return -1;
        fd = fd * 10 + (p[i] - '0');
      }
      return fd;
    }
  }
  return -1;
}

}  // namespace

AtomicFile::AtomicFile(std::string path, bool may_replace_input) : path_(std::move(path)) {
  // A symbolic link stays a link: its target is what is replaced, from a temporary file beside it.
  const std::string target = write_target(path_);
  // An existing path that is not a regular file (/dev/null, /dev/stdout, a pipe) is written in
  // place: renaming over it would replace the device or the pipe with a file.
  struct stat st {};
  const bool exists = ::stat(target.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) throw UsageError(concat_error("cannot write ", path_, ": it is a folder"));
  if (exists && !may_replace_input && refusing_input_overwrites()) {
    const FileIdentity id{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
    if (const auto input = input_read_as(id))
      throw UsageError(concat_error("refusing to write ", path_, ": it is ",
                                    *input == path_ ? std::string("an input of this command")
                                                    : "the same file as the input " + *input,
                                    "; write the output to another file"));
  }
  if (const int own = own_descriptor(path_, target); own >= 0) {
    fd_ = ::fcntl(own, F_DUPFD_CLOEXEC, 0);
  } else if ((exists && !S_ISREG(st.st_mode)) || target.rfind("/proc/", 0) == 0 || target.rfind("/dev/fd/", 0) == 0) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
  } else {
    tmp_ = target + ".tmp." + std::to_string(::getpid());
    target_ = target;
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    // A replaced file keeps its permissions.
    if (fd_ >= 0 && exists) (void)::fchmod(fd_, st.st_mode & 07777);
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
  check_mapped_inputs();  // nothing read from a file that shrank is published
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
  if (::rename(tmp_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    QUARRY_FAIL("cannot write ", path_, ": ", std::strerror(err));
  }
  committed_ = true;
  (void)fsync_parent_folder(target_);  // best effort: the file itself is whole and renamed
}

void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts, bool may_replace_input) {
  AtomicFile f(path, may_replace_input);
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
