// Internal to the io readers: streaming gzip decompression of a file held in memory (IDX and
// NIfTI files ending in .gz).
#pragma once

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <string>
#include <vector>

#include "quarry/error.hpp"

namespace quarry::io {

// Streaming gzip decompression of an in-memory file; concatenated gzip members are joined.
class Gunzip {
 public:
  Gunzip(const unsigned char* data, std::size_t size, const std::string& name)
      : next_(data), left_(size), name_(name) {
    if (inflateInit2(&z_, 15 + 16) != Z_OK) QUARRY_FAIL(name_, ": cannot initialise zlib");
  }
  ~Gunzip() { inflateEnd(&z_); }
  Gunzip(const Gunzip&) = delete;
  Gunzip& operator=(const Gunzip&) = delete;

  /// Appends up to n (< 4 GiB) decompressed bytes to `out`; fewer only at the end of the stream.
  void read(std::vector<unsigned char>& out, std::size_t n) {
    const std::size_t old = out.size();
    out.resize(old + n);
    z_.next_out = out.data() + old;
    z_.avail_out = static_cast<uInt>(n);
    while (z_.avail_out > 0 && !done_) step();
    out.resize(old + n - z_.avail_out);
  }

 private:
  void step() {
    if (z_.avail_in == 0) {
      if (left_ == 0) QUARRY_FAIL(name_, ": truncated gzip stream");
      const std::size_t feed = std::min<std::size_t>(left_, UINT_MAX);
      z_.next_in = const_cast<Bytef*>(next_);
      z_.avail_in = static_cast<uInt>(feed);
      next_ += feed;
      left_ -= feed;
    }
    const int rc = inflate(&z_, Z_NO_FLUSH);
    if (rc == Z_STREAM_END) {
      end_of_member();
    } else if (rc != Z_OK && !(rc == Z_BUF_ERROR && z_.avail_in == 0)) {
      QUARRY_FAIL(name_, ": corrupt gzip stream: ", z_.msg ? z_.msg : zError(rc));
    }
  }

  // At the end of a gzip member: the end of the file, another member, or garbage.
  void end_of_member() {
    const std::size_t remaining = z_.avail_in + left_;  // the input is one contiguous buffer
    if (remaining == 0) {
      done_ = true;
    } else if (remaining >= 2 && z_.next_in[0] == 0x1f && z_.next_in[1] == 0x8b) {
      inflateReset(&z_);
    } else {
      QUARRY_FAIL(name_, ": corrupt gzip stream: ", remaining, " unexpected bytes after its end");
    }
  }

  z_stream z_{};
  const unsigned char* next_;
  std::size_t left_;
  const std::string& name_;
  bool done_ = false;
};

}  // namespace quarry::io
