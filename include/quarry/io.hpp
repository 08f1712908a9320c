// File formats: NPY (memory-mapped), NPZ (stored or deflated members), IDX (gzip or raw).
// Every reader validates the whole header against the file size before touching data and
// throws quarry::Error naming the file and what was wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/array.hpp"

namespace quarry {

/// Reads an .npy file by memory-mapping it: no copy of the data is made.
/// Supported: float16/32/64, uint8, int8, int16, int32, int64, little-endian, C order.
Array read_npy(const std::string& path);

/// Parses an .npy image held in memory (an NPZ member, a fuzzer input). `name` is used in
/// errors. The returned Array shares ownership of `owner`.
Array parse_npy(std::shared_ptr<const void> owner, const void* bytes, std::size_t size,
                const std::string& name);

/// Writes an .npy file (format 1.0), atomically: a temporary file in the same directory is
/// written, flushed and renamed over `path`.
void write_npy(const std::string& path, const ArrayView& array);

/// Writes the concatenation of `parts` to `path` atomically: "<path>.tmp.<pid>" in the same
/// folder is written, fsync'd and renamed over `path`, and the folder fsync'd. On failure it is removed, `path` is
/// untouched, and the Error names `path` and the reason. Every writer of quarry uses it.
/// `may_replace_input`: see AtomicFile.
void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts,
                       bool may_replace_input = false);
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

/// The header of an .npy file (format 1.0) holding `shape` of `dtype`; the data follows it.
/// `path` names the file in errors.
std::string npy_header(DType dtype, const std::vector<std::int64_t>& shape, const std::string& path);

/// fsyncs the folder holding `path` (so that a rename or a new file in it is durable); false
/// (errno set) when the folder cannot be opened or synced.
bool fsync_parent_folder(const std::string& path);

/// The member names of an .npz archive (without the ".npy" suffix).
std::vector<std::string> npz_members(const std::string& path);
/// Reads one member of an .npz archive (stored or deflated) into memory.
Array read_npz_member(const std::string& path, const std::string& member);

/// Reads an IDX file (MNIST family), gzip-compressed or not (detected from the content).
/// The result has the IDX dtype (uint8, int8, int16, int32, float32, float64) and shape.
Array read_idx(const std::string& path);

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

/// Bytes of memory available to this process (MemAvailable), or 0 when unknown.
std::uint64_t available_memory();

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

/// Kind of a file, from its content (magic bytes), not its name.
enum class FileKind { npy, npz, idx, idx_gz, unknown };
FileKind detect_file_kind(const std::string& path);

/// Reads an array from any supported file: "x.npy", "x.npz:member", "x-idx3-ubyte[.gz]".
/// An .npz without a member name is an error listing the members.
Array read_array(const std::string& spec);

/// Reads a list of pool indices: an integer .npy (any rank, flattened) or a text file with one
/// index per line (blank lines and lines starting with '#' ignored; a CSV whose header has an
/// `index` column is read from that column). Errors name the file and the line.
std::vector<std::int64_t> read_index_list(const std::string& path);

/// The files a dataset spec of the loop reads (idx:DIR: its four IDX files; npz:FILE; npy:X,Y;
/// pool:X; none for synthetic), those that exist; unknown specs give none.
std::vector<std::string> dataset_files(const std::string& spec);

}  // namespace quarry
