// Internal to quarry (not installed): the file handling the readers, writers, the command line
// and the labeling project share: atomic outputs, input identities (outputs never replace an
// input), bounded text reads, mapped inputs that shrink, and reading a whole range from a file
// descriptor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/io.hpp"

namespace quarry {

/// A file written in pieces and published atomically: the pieces go to "<path>.tmp.<pid>" in
/// the same folder; commit() fsyncs it, renames it over `path` and fsyncs the folder. Destroyed
/// without commit() (an error, a failed MPI rank), the temporary file is removed and `path` is
/// untouched: a failed run never leaves a partial output.
///  - A symbolic link stays a link: its target is replaced (the temporary file beside it).
///  - A path that is not a regular file (a device, a pipe, /dev/stdout) is written in place.
///  - A folder is a UsageError. So is a file this process read as an input (input_read_as),
///    where refuse_input_overwrites is on, unless `may_replace_input` (a labeling project
///    rewriting its own state).
///  - commit() first calls check_mapped_inputs(): nothing is published from a file that shrank.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path, bool may_replace_input = false);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(std::string_view bytes);
  void commit();
  std::size_t written() const { return written_; }

 private:
  [[noreturn]] void fail(int err);
  std::string path_, tmp_, target_;
  int fd_ = -1;
  std::size_t written_ = 0;
  bool committed_ = false;
};

/// Where writing `path` lands: the end of its chain of symbolic links (relative targets taken
/// from each link's folder), which need not exist yet. Links through /proc (/dev/stdout is
/// /proc/self/fd/1) are not followed: those name open files, written in place.
std::string write_target(const std::string& path);

/// The header of an .npy file (format 1.0) holding `shape` of `dtype`; the data follows it.
/// `path` names the file in errors.
std::string npy_header(DType dtype, const std::vector<std::int64_t>& shape, const std::string& path);

/// fsyncs the folder holding `path` (so that a rename or a new file in it is durable); false
/// (errno set) when the folder cannot be opened or synced.
bool fsync_parent_folder(const std::string& path);

/// Which file a path is: its device and inode, symbolic links followed. Two paths name the same
/// file (hard links, links, "a/../b") exactly when their identities are equal.
struct FileIdentity {
  std::uint64_t dev = 0, ino = 0;
  bool operator==(const FileIdentity& o) const { return dev == o.dev && ino == o.ino; }
};
/// The identity of `path` (links followed), or nothing when it does not exist.
std::optional<FileIdentity> file_identity(const std::string& path);
/// The path under which this process opened the file `id` for reading (every reader of quarry
/// notes its inputs), or nothing when it did not.
std::optional<std::string> input_read_as(const FileIdentity& id);
/// Whether AtomicFile refuses to replace a file this process read (input_read_as). Off by
/// default: a long-lived program may well read a file and later write it again. The quarry
/// command, one command per process, turns it on.
void refuse_input_overwrites(bool on);
bool refusing_input_overwrites();

/// Largest text file (CSV, JSON, manifest, list) read_text_file takes by default: 4 GiB.
constexpr std::size_t kMaxTextBytes = std::size_t{4} << 30;
/// Reads a whole text file: a regular file only (a folder, a FIFO or a device is an Error that
/// says which, and nothing blocks), at most `max_bytes`, and no more than its size when opened.
std::string read_text_file(const std::string& path, std::size_t max_bytes = kMaxTextBytes);

/// Throws unless `path` is a regular file that can be opened for reading (without blocking; it
/// is noted among the inputs read, as by every reader).
void expect_regular_file(const std::string& path);

/// Throws an Error naming the file when a memory-mapped input shrank (was truncated or rewritten)
/// while this process read it: its missing pages read as zeros instead of killing the process
/// with SIGBUS, and this check makes the command fail instead of using them. AtomicFile::commit
/// calls it before publishing anything. Each shrink is reported once, unless `all` (the quarry
/// command's last check before it reports success).
void check_mapped_inputs(bool all = false);

/// The files of a spec: a glob ("case-*.nii.gz", sorted by name; an Error when nothing matches)
/// or a comma-separated list (in its order).
std::vector<std::string> expand_spec(const std::string& spec);
/// A UsageError when two of `paths` are the same file (listed twice, or through a link):
/// "SPEC: b is the same file as a; each WHAT may be listed once".
void expect_distinct_files(const std::vector<std::string>& paths, const std::string& spec, const char* what);
/// Whether `spec` is "ARCHIVE.npz:MEMBER" with ARCHIVE an existing regular file (read_array's
/// rule: any other ':' is part of a path).
bool npz_member_spec(const std::string& spec);
/// madvise over the pages holding [begin, begin + bytes) (a hint; failure changes nothing).
void advise(const void* begin, std::size_t bytes, int advice);
std::size_t page_size();

/// The files a dataset spec of the loop reads (idx:DIR: its four IDX files; npz:FILE; npy:X,Y;
/// pool:X; none for synthetic), those that exist; unknown specs give none.
std::vector<std::string> dataset_files(const std::string& spec);

}  // namespace quarry

namespace quarry::io {

/// Reads `n` bytes from `fd` into `buf`, retrying reads that a signal interrupted (EINTR), until
/// all are read, the file ends or a read fails. Returns the bytes read; `*err` is the errno of the
/// read that failed, or 0 (then fewer than `n` bytes means the file ended first).
std::size_t read_full(int fd, char* buf, std::size_t n, int* err);

}  // namespace quarry::io
