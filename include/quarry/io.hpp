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
/// `may_replace_input`: a file this process read as an input may be replaced (where the
/// program refuses that: the quarry command does, a library user by default does not).
void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts,
                       bool may_replace_input = false);

/// The member names of an .npz archive (without the ".npy" suffix).
std::vector<std::string> npz_members(const std::string& path);
/// Reads one member of an .npz archive (stored or deflated) into memory.
Array read_npz_member(const std::string& path, const std::string& member);

/// Reads an IDX file (MNIST family), gzip-compressed or not (detected from the content).
/// The result has the IDX dtype (uint8, int8, int16, int32, float32, float64) and shape.
Array read_idx(const std::string& path);

/// Reads a NIfTI-1 or NIfTI-2 file (.nii, or .nii.gz), either byte order. The array is in C
/// order with the NIfTI axes reversed: dims (x, y, z, t, u) become shape [u, t, z, y, x].
/// Intensity scaling (scl_slope, scl_inter) is applied (float32, or float64 for float64 data);
/// uint16 and uint32 are widened to int32 and int64. Uncompressed files in this machine's byte
/// order and without scaling are memory-mapped.
Array read_nifti(const std::string& path);
/// True for names ending in .nii or .nii.gz.
bool is_nifti_path(const std::string& path);

/// Bytes of memory available to this process (MemAvailable), or 0 when unknown.
std::uint64_t available_memory();

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

}  // namespace quarry
