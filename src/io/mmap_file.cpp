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
  const int fd = open_input(path);
  FdGuard guard{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) QUARRY_FAIL("cannot stat ", path, ": ", std::strerror(errno));

  MappedFile file;
  file.size = static_cast<std::size_t>(st.st_size);
  if (file.size == 0) return file;

  void* p = ::mmap(nullptr, file.size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) QUARRY_FAIL("cannot map ", path, ": ", std::strerror(errno));
  // Pools are read front to back: ask for aggressive read-ahead (a hint; failure is harmless).
  ::madvise(p, file.size, MADV_SEQUENTIAL);
  const std::size_t size = file.size;
  const int slot = guard_mapping(p, size, path);
  file.owner = std::shared_ptr<const void>(p, [size, slot](const void* q) {
    unguard_mapping(slot);
    ::munmap(const_cast<void*>(q), size);
  });
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

}  // namespace quarry::io

namespace quarry {
std::string quote_input(std::string_view text, std::size_t max) {
  std::string out = io::printable(text, max);
  if (text.size() > max) out += " (" + std::to_string(text.size()) + " bytes)";
  return out;
}
}  // namespace quarry

namespace quarry::io {

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none" : out;
}

}  // namespace quarry::io
