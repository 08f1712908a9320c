// Helpers shared by the reader tests (test_io.cpp, test_dataset.cpp): per-test folders, whole
// files in and out, little- and big-endian bytes, hand-written gzip streams, zip archives and
// IDX files, and checks of quarry::Error messages.
//
// The tests link neither zlib nor libzip: the gzip streams and zip archives they need are
// written here by hand (stored blocks and fixed-Huffman deflate, CRC-32), which also lets
// them write archives whose headers lie.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "quarry/error.hpp"

namespace quarry_test {

// ---------------------------------------------------------------- files

// A fresh folder per test, so that tests can run in parallel: QUARRY_TEST_TMP/area/Suite.Name,
// or `file` inside it.
inline std::string test_tmp(const std::string& area, const std::string& file = "") {
  namespace fs = std::filesystem;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir =
      fs::path(QUARRY_TEST_TMP) / area / (std::string(info->test_suite_name()) + "." + info->name());
  fs::create_directories(dir);
  return file.empty() ? dir.string() : (dir / file).string();
}

// Writes `bytes` to `path`, creating its folder where missing.
inline void write_file(const std::string& path, const std::string& bytes) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream os;
  os << f.rdbuf();
  return os.str();
}

// The low `n` bytes of `v`, least significant first.
inline std::string le(std::uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

inline std::string be32(std::uint32_t v) {
  std::string s;
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// ---------------------------------------------------------------- gzip and zip by hand

inline std::uint32_t crc32(const std::string& s) {
  std::uint32_t c = 0xffffffffu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// Deflate with one fixed-Huffman block of literals (RFC 1951 3.2.6).
inline std::string deflate_fixed(const std::string& data) {
  std::string out;
  std::uint32_t acc = 0;
  int nbits = 0;
  auto put = [&](std::uint32_t bit) {
    acc |= bit << nbits;
    if (++nbits == 8) {
      out += static_cast<char>(acc);
      acc = 0;
      nbits = 0;
    }
  };
  auto code = [&](std::uint32_t c, int len) {
    for (int i = len - 1; i >= 0; --i) put((c >> i) & 1u);
  };
  put(1);  // final block
  put(1);  // BTYPE = 01, least significant bit first
  put(0);
  for (unsigned char b : data) {
    if (b < 144)
      code(0x30u + b, 8);
    else
      code(0x190u + (b - 144u), 9);
  }
  code(0, 7);  // end of block
  if (nbits) out += static_cast<char>(acc);
  return out;
}

// Deflate with stored (uncompressed) blocks of at most 65535 bytes (RFC 1951 3.2.4).
inline std::string deflate_stored(const std::string& data) {
  std::string out;
  std::size_t pos = 0;
  do {
    const std::size_t n = std::min<std::size_t>(data.size() - pos, 65535);
    out += static_cast<char>(pos + n == data.size() ? 1 : 0);  // BFINAL, BTYPE = 00
    out += le(n, 2) + le(~n & 0xffff, 2) + data.substr(pos, n);
    pos += n;
  } while (pos < data.size());
  return out;
}

// A gzip stream (RFC 1952) around `deflated`, the deflate stream of `data`.
inline std::string gzip_of(const std::string& data, const std::string& deflated) {
  return std::string("\x1f\x8b\x08\0\0\0\0\0\0\x03", 10) + deflated + le(crc32(data), 4) + le(data.size(), 4);
}

// A gzip stream of one fixed-Huffman block.
inline std::string gzip(const std::string& data) { return gzip_of(data, deflate_fixed(data)); }

// A gzip stream of stored blocks (more than one past 65535 bytes).
inline std::string gzip_stored(const std::string& data) { return gzip_of(data, deflate_stored(data)); }

struct ZipMember {
  std::string name;
  std::string data;
  bool deflate = false;             // fixed-Huffman deflate; otherwise stored
  std::int64_t declared_size = -1;  // >= 0: lie about the uncompressed size
  bool bad_crc = false;
};

// A zip archive of `members`, in order.
inline std::string zip(const std::vector<ZipMember>& members) {
  std::string local, central;
  for (const ZipMember& m : members) {
    const std::string body = m.deflate ? deflate_fixed(m.data) : m.data;
    const std::uint64_t size =
        m.declared_size >= 0 ? static_cast<std::uint64_t>(m.declared_size) : m.data.size();
    const std::string common = le(20, 2) + le(0, 2) + le(m.deflate ? 8 : 0, 2) + le(0, 2) + le(0x21, 2) +
                               le(crc32(m.data) ^ (m.bad_crc ? 1u : 0u), 4) + le(body.size(), 4) +
                               le(size, 4) + le(m.name.size(), 2) + le(0, 2);
    central += le(0x02014b50, 4) + le(20, 2) + common + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) +
               le(local.size(), 4) + m.name;
    local += le(0x04034b50, 4) + common + m.name + body;
  }
  return local + central + le(0x06054b50, 4) + le(0, 2) + le(0, 2) + le(members.size(), 2) +
         le(members.size(), 2) + le(central.size(), 4) + le(local.size(), 4) + le(0, 2);
}

// An IDX file: type code, dims, and the data already in big-endian order.
inline std::string idx(int type, const std::vector<std::uint32_t>& dims, const std::string& data) {
  std::string s{'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (std::uint32_t d : dims) s += be32(d);
  return s + data;
}

// ---------------------------------------------------------------- checks

// The message of the quarry::Error that f throws; "" when it throws none.
inline std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const quarry::Error& e) {
    return e.what();
  }
  return "";
}

// f must throw quarry::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string msg = message_of(f);
  EXPECT_FALSE(msg.empty()) << "no quarry::Error; expected one mentioning " << parts.front();
  for (const std::string& p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

}  // namespace quarry_test
