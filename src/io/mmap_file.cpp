#include "mmap_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "quarry/error.hpp"

namespace quarry::io {

namespace {

// Closes a file descriptor when it goes out of scope.
struct FdGuard {
  int fd;
  ~FdGuard() { ::close(fd); }
};

}  // namespace

MappedFile map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) QUARRY_FAIL("cannot open ", path, ": ", std::strerror(errno));
  FdGuard guard{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) QUARRY_FAIL("cannot stat ", path, ": ", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) QUARRY_FAIL("cannot open ", path, ": ", std::strerror(EISDIR));
  if (!S_ISREG(st.st_mode)) QUARRY_FAIL("cannot map ", path, ": not a regular file");

  MappedFile file;
  file.size = static_cast<std::size_t>(st.st_size);
  if (file.size == 0) return file;

  void* p = ::mmap(nullptr, file.size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) QUARRY_FAIL("cannot map ", path, ": ", std::strerror(errno));
  // Pools are read front to back: ask for aggressive read-ahead (a hint; failure is harmless).
  ::madvise(p, file.size, MADV_SEQUENTIAL);
  const std::size_t size = file.size;
  file.owner =
      std::shared_ptr<const void>(p, [size](const void* q) { ::munmap(const_cast<void*>(q), size); });
  file.data = static_cast<const unsigned char*>(p);
  return file;
}

std::string printable(std::string_view text, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (std::isprint(c)) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (text.size() > max) out += "...";
  return out;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

}  // namespace quarry::io
