// Opening inputs safely, and knowing which files a command read:
//  - open_input: never blocks (O_NONBLOCK: a FIFO without a writer, a tty) and takes regular
//    files only, with an error that says what the path is instead;
//  - read_text_file: a whole text file, bounded by its size at open and by kMaxTextBytes (read
//    with read_full, files.hpp, which the label journal also uses);
//  - the inputs registry: the identity (device, inode) of every file opened for reading, so that
//    an output that would replace one is refused (AtomicFile);
//  - the mapping guard: a memory-mapped input that shrinks while it is read raises SIGBUS on the
//    pages past its new end. The handler maps zeros over them, notes the file, and the program
//    goes on; check_mapped_inputs() then throws an Error naming the file, before any output is
//    published (AtomicFile::commit calls it) or the command reports success.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "files.hpp"
#include "mmap_file.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

namespace io {

std::string file_type_name(unsigned mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a pipe (FIFO)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

namespace {

std::mutex& inputs_mutex() {
  static std::mutex m;
  return m;
}
std::vector<std::pair<FileIdentity, std::string>>& inputs_read() {
  static std::vector<std::pair<FileIdentity, std::string>> v;
  return v;
}

}  // namespace

int open_input(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    struct stat st {};
    if (err == ENXIO && ::stat(path.c_str(), &st) == 0)  // a socket, or a FIFO on some systems
      QUARRY_FAIL("cannot read ", path, ": it is ", file_type_name(st.st_mode), ", not a regular file");
    QUARRY_FAIL("cannot open ", path, ": ", std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    QUARRY_FAIL("cannot stat ", path, ": ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    QUARRY_FAIL("cannot read ", path, ": it is ", file_type_name(st.st_mode), ", not a regular file");
  }
  // Reads of a regular file do not block anyway; clear the flag for plain semantics.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  {
    std::lock_guard<std::mutex> lock(inputs_mutex());
    const FileIdentity id{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
    bool known = false;
    for (const auto& [seen, name] : inputs_read()) known = known || seen == id;
    if (!known) inputs_read().emplace_back(id, path);
  }
  return fd;
}

}  // namespace io

std::optional<FileIdentity> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileIdentity{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

namespace {
std::atomic<bool> g_refuse_input_overwrites{false};
}  // namespace

void refuse_input_overwrites(bool on) { g_refuse_input_overwrites.store(on); }
bool refusing_input_overwrites() { return g_refuse_input_overwrites.load(); }

std::optional<std::string> input_read_as(const FileIdentity& id) {
  std::lock_guard<std::mutex> lock(io::inputs_mutex());
  for (const auto& [seen, name] : io::inputs_read())
    if (seen == id) return name;
  return std::nullopt;
}

void expect_regular_file(const std::string& path) { ::close(io::open_input(path)); }

std::size_t io::read_full(int fd, char* buf, std::size_t n, int* err) {
  *err = 0;
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      *err = r < 0 ? errno : 0;
      break;
    }
    got += static_cast<std::size_t>(r);
  }
  return got;
}

std::string read_text_file(const std::string& path, std::size_t max_bytes) {
  const int fd = io::open_input(path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    QUARRY_FAIL("cannot stat ", path, ": ", std::strerror(err));
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > max_bytes) {
    ::close(fd);
    QUARRY_FAIL(path, ": ", size, " bytes, more than the ", max_bytes,
                " bytes a text file (CSV, JSON, list) may have here");
  }
  // The size at open is what is read: a file that grows meanwhile is not followed.
  std::string data(static_cast<std::size_t>(size), '\0');
  int err = 0;
  if (io::read_full(fd, data.data(), data.size(), &err) < data.size()) {
    ::close(fd);
    QUARRY_FAIL("cannot read ", path, ": ", err != 0 ? std::strerror(err) : "it shrank while it was being read");
  }
  ::close(fd);
  return data;
}

std::uint64_t io::available_memory() {
  // /proc files report a size of 0: read as a stream, not with read_text_file.
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  std::uint64_t kib = 0;
  while (meminfo >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : 0;
}

std::uint64_t available_memory() { return io::available_memory(); }

// ------------------------------------------------------------------ the mapping guard

namespace io {
namespace {

constexpr int kGuardSlots = 4096;

struct GuardSlot {
  std::atomic<std::uintptr_t> begin{0}, end{0};
  std::atomic<int> faulted{0};
  bool reported = false;  // under g_guard_mutex
};

GuardSlot g_slots[kGuardSlots];
std::string g_slot_path[kGuardSlots];          // under g_guard_mutex
std::vector<std::string> g_shrunk;             // files that shrank, not yet reported, after their map is gone
std::vector<std::string> g_ever_shrunk;        // every file that shrank in this process
std::mutex g_guard_mutex;
std::atomic<int> g_any_fault{0};
std::uintptr_t g_page = 4096;
struct sigaction g_previous {};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
  for (GuardSlot& s : g_slots) {
    const std::uintptr_t b = s.begin.load(std::memory_order_acquire);
    if (b == 0 || addr < b) continue;
    const std::uintptr_t e = s.end.load(std::memory_order_acquire);
    if (addr >= e) continue;
    // Zeros over the rest of the mapping: the file ends before all of it.
    const std::uintptr_t page = addr & ~(g_page - 1);
    void* p = ::mmap(reinterpret_cast<void*>(page), e - page, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (p != MAP_FAILED) {
      s.faulted.store(1, std::memory_order_release);
      g_any_fault.store(1, std::memory_order_release);
      return;  // the read is retried, and now sees zeros
    }
    break;
  }
  // Not a guarded mapping: what would have happened without the guard.
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) return g_previous.sa_sigaction(sig, info, context);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN && g_previous.sa_handler) {
    return g_previous.sa_handler(sig);
  }
  ::signal(SIGBUS, SIG_DFL);  // the faulting read is retried and ends the process as before
}

void install_guard() {
  static std::once_flag once;
  std::call_once(once, [] {
    const long page = ::sysconf(_SC_PAGESIZE);
    if (page > 0) g_page = static_cast<std::uintptr_t>(page);
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    (void)::sigaction(SIGBUS, &sa, &g_previous);
  });
}

}  // namespace

int guard_mapping(const void* data, std::size_t size, const std::string& path) {
  install_guard();
  std::lock_guard<std::mutex> lock(g_guard_mutex);
  for (int i = 0; i < kGuardSlots; ++i) {
    GuardSlot& s = g_slots[i];
    if (s.begin.load(std::memory_order_relaxed) != 0) continue;
    g_slot_path[i] = path;
    s.reported = false;
    s.faulted.store(0, std::memory_order_relaxed);
    s.end.store(reinterpret_cast<std::uintptr_t>(data) + size, std::memory_order_release);
    s.begin.store(reinterpret_cast<std::uintptr_t>(data), std::memory_order_release);
    return i;
  }
  return -1;  // more mappings at once than slots: this one is not guarded
}

void unguard_mapping(int slot) {
  if (slot < 0) return;
  std::lock_guard<std::mutex> lock(g_guard_mutex);
  GuardSlot& s = g_slots[slot];
  s.begin.store(0, std::memory_order_release);
  s.end.store(0, std::memory_order_release);
  if (s.faulted.load(std::memory_order_acquire)) {
    if (!s.reported) g_shrunk.push_back(g_slot_path[slot]);
    g_ever_shrunk.push_back(g_slot_path[slot]);
  }
  g_slot_path[slot].clear();
}

}  // namespace io

void check_mapped_inputs(bool all) {
  if (!io::g_any_fault.load(std::memory_order_acquire)) return;
  std::vector<std::string> files;
  {
    std::lock_guard<std::mutex> lock(io::g_guard_mutex);
    files = all ? io::g_ever_shrunk : io::g_shrunk;
    io::g_shrunk.clear();
    for (int i = 0; i < io::kGuardSlots; ++i) {
      io::GuardSlot& s = io::g_slots[i];
      if (!s.begin.load(std::memory_order_acquire) || !s.faulted.load(std::memory_order_acquire)) continue;
      if (all || !s.reported) files.push_back(io::g_slot_path[i]);
      s.reported = true;
    }
  }
  if (files.empty()) return;
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  std::string names;
  for (const auto& f : files) names += (names.empty() ? "" : ", ") + f;
  QUARRY_FAIL(names, ": the file shrank while it was being read (truncated or rewritten by another program); "
              "what was read is incomplete, so nothing was written");
}

void expect_distinct_files(const std::vector<std::string>& paths, const std::string& spec, const char* what) {
  std::vector<std::pair<FileIdentity, std::string>> seen;
  for (const std::string& path : paths)
    if (const auto id = file_identity(path)) {
      for (const auto& [other, name] : seen)
        QUARRY_USAGE_EXPECTS(!(other == *id), quote_input(spec, 200), ": ", path, " is the same file as ", name,
                             "; each ", what, " may be listed once");
      seen.emplace_back(*id, path);
    }
}

bool npz_member_spec(const std::string& spec) {
  const std::size_t colon = spec.rfind(':');
  if (colon == std::string::npos) return false;
  const std::string archive = spec.substr(0, colon);
  struct stat st {};
  return archive.size() > 4 && archive.compare(archive.size() - 4, 4, ".npz") == 0 &&
         ::stat(archive.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace quarry
