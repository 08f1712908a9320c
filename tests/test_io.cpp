// Readers and writers of src/io: round trips, hand-written headers, NPZ/IDX/index lists,
// a corpus of corrupt files (each must throw quarry::Error naming the file, never crash),
// truncation and byte-flip sweeps, and the real data sets where present.
//
// The test does not link zlib or libzip: the zip archives and gzip streams it needs are
// written by hand (fixed-Huffman deflate, CRC-32; file_builders.hpp), which also lets it
// write archives whose headers lie.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "file_builders.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "io/files.hpp"

namespace fs = std::filesystem;
using quarry::Array;
using quarry::ArrayView;
using quarry::DType;
using namespace std::string_literals;
using namespace quarry_test;

namespace {

// ---------------------------------------------------------------- files

// A fresh folder per test, under QUARRY_TEST_TMP/io.
std::string tmp(const std::string& file) { return test_tmp("io", file); }

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s += static_cast<char>(x);
  return s;
}

template <class T>
std::string raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <class T>
std::string big_endian(const std::vector<T>& v) {
  std::string s = raw(v);
  for (std::size_t i = 0; i < s.size(); i += sizeof(T))
    std::reverse(s.begin() + i, s.begin() + i + sizeof(T));
  return s;
}

// An NPY file with the given header dict text, padded as numpy pads it.
std::string npy(const std::string& dict, const std::string& data, int major = 1) {
  const std::size_t preamble = major == 1 ? 10 : 12;
  std::string h = dict;
  h.append((64 - (preamble + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  out += le(h.size(), major == 1 ? 2 : 4);
  return out + h + data;
}

std::string dict(const std::string& descr, const std::string& shape, const std::string& fortran = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
}

// ---------------------------------------------------------------- checks

// Reads every byte of the array (so that the sanitizers see any out-of-bounds view).
unsigned checksum(const ArrayView& v) {
  const auto* p = static_cast<const unsigned char*>(v.data);
  unsigned sum = 0;
  for (std::size_t i = 0; i < v.nbytes(); ++i) sum += p[i];
  return sum;
}

bool mapped_from(const void* p, std::size_t n, const std::string& path) {
  const std::string real = fs::canonical(path).string();
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream is(line);
    std::string range, perms, offset, dev, inode, file;
    is >> range >> perms >> offset >> dev >> inode;
    std::getline(is >> std::ws, file);
    const std::size_t dash = range.find('-');
    const std::uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16);
    const std::uintptr_t hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (addr >= lo && addr < hi) return addr + n <= hi && file == real;
  }
  return false;
}

std::string pattern(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

const DType kNpyTypes[] = {DType::f16, DType::f32, DType::f64, DType::u8,
                           DType::i8,  DType::i16, DType::i32, DType::i64};

// ================================================================ NPY

TEST(Npy, RoundTripEveryDtypeAndRank) {
  const std::vector<std::vector<std::int64_t>> shapes = {{},        {5},          {3, 4}, {2, 3, 4},
                                                         {2, 0, 3}, {2, 3, 1, 2}, {0}};
  unsigned seed = 1;
  for (DType t : kNpyTypes) {
    for (const auto& shape : shapes) {
      ArrayView v{nullptr, t, shape};
      const std::string data = pattern(v.nbytes(), seed++);
      v.data = data.data();
      const std::string path =
          tmp(std::string("rt_") + quarry::dtype_name(t) + "_" + std::to_string(seed) + ".npy");
      quarry::write_npy(path, v);
      const std::string file = read_file(path);
      const std::size_t offset =
          10 + static_cast<unsigned char>(file[8]) + 256u * static_cast<unsigned char>(file[9]);
      EXPECT_EQ(offset % 64, 0u);
      EXPECT_EQ(file.size(), offset + data.size());
      for (const Array& a : {quarry::read_npy(path), quarry::read_array(path)}) {
        SCOPED_TRACE(path);
        EXPECT_EQ(a.dtype(), t);
        EXPECT_EQ(a.shape(), shape);
        EXPECT_EQ(a.source(), path);
        ASSERT_EQ(a.nbytes(), data.size());
        EXPECT_EQ(std::memcmp(a.data(), data.data(), data.size()), 0);
      }
    }
  }
}

TEST(Npy, WriterHeaderText) {
  const std::vector<float> x = {1, 2, 3, 4, 5};
  quarry::write_npy(tmp("a.npy"), ArrayView{x.data(), DType::f32, {5}});
  EXPECT_NE(read_file(tmp("a.npy")).find("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"),
            std::string::npos);
  quarry::write_npy(tmp("b.npy"), ArrayView{x.data(), DType::f32, {}});
  EXPECT_NE(read_file(tmp("b.npy")).find("'shape': (), }"), std::string::npos);
  quarry::write_npy(tmp("c.npy"), ArrayView{x.data(), DType::u8, {1, 5}});
  EXPECT_NE(read_file(tmp("c.npy")).find("{'descr': '|u1', 'fortran_order': False, 'shape': (1, 5), }"),
            std::string::npos);
}

TEST(Npy, WriteIsAtomicAndReportsErrors) {
  const std::vector<std::int32_t> a = {1, 2, 3}, b = {7, 8};
  const std::string path = tmp("x.npy");
  quarry::write_npy(path, ArrayView{a.data(), DType::i32, {3}});
  const Array before = quarry::read_npy(path);  // keeps the old file mapped
  quarry::write_npy(path, ArrayView{b.data(), DType::i32, {2}});
  EXPECT_EQ(before.as<std::int32_t>()[2], 3);  // the old mapping is untouched by the rename
  const Array after = quarry::read_npy(path);
  ASSERT_EQ(after.shape(), std::vector<std::int64_t>{2});
  EXPECT_EQ(after.as<std::int32_t>()[1], 8);
  for (const auto& entry : fs::directory_iterator(fs::path(path).parent_path()))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();

  const std::string missing = tmp("no/such/dir/y.npy");
  expect_error(
      [&] {
        quarry::write_npy(missing, ArrayView{a.data(), DType::i32, {3}});
      },
      {missing, "No such file or directory"});
  expect_error(
      [&] {
        quarry::write_npy(tmp("bf.npy"), ArrayView{a.data(), DType::bf16, {3}});
      },
      {tmp("bf.npy"), "bfloat16"});
  expect_error(
      [&] {
        quarry::write_npy(tmp("neg.npy"), ArrayView{a.data(), DType::i32, {-3}});
      },
      {tmp("neg.npy"), "negative"});
  const std::string dir = tmp("a_directory");
  fs::create_directories(dir);
  expect_error([&] { quarry::write_npy(dir, ArrayView{a.data(), DType::i32, {3}}); }, {dir});
  EXPECT_FALSE(fs::exists(dir + ".tmp." + std::to_string(::getpid())));
}

TEST(Npy, ReadIsZeroCopyFromTheMapping) {
  std::vector<double> x(1000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.5 * static_cast<double>(i);
  const std::string path = tmp("mapped.npy");
  quarry::write_npy(path, ArrayView{x.data(), DType::f64, {10, 100}});
  const Array a = quarry::read_npy(path);
  const Array b = quarry::read_npy(path);
  EXPECT_TRUE(mapped_from(a.data(), a.nbytes(), path));
  EXPECT_TRUE(mapped_from(b.data(), b.nbytes(), path));
  EXPECT_NE(a.data(), b.data());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data()) % 64, 0u);
  EXPECT_EQ(a.as<double>()[999], 499.5);
}

TEST(Npy, HandWrittenHeaders) {
  const std::vector<float> x = {1.5f, -2.0f, 3.25f, 4.0f, 5.0f, 6.0f};
  const std::vector<std::pair<std::string, std::vector<std::int64_t>>> headers = {
      {"{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", {2, 3}},
      {"{\"descr\": \"<f4\", \"shape\": (6,), \"fortran_order\": False}", {6}},
      {"{ 'fortran_order' : False , 'descr' : '=f4' , 'shape' : ( 3 , 2 , ) , }", {3, 2}},
      {"{'descr':'<f4','fortran_order':False,'shape':(1,2,3)}", {1, 2, 3}},
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (6,), }", {6}},  // same layout as C order
  };
  int i = 0;
  for (const auto& [header, shape] : headers) {
    const std::string path = tmp("h" + std::to_string(i++) + ".npy");
    write_file(path, npy(header, raw(x)));
    const Array a = quarry::read_npy(path);
    EXPECT_EQ(a.dtype(), DType::f32) << header;
    EXPECT_EQ(a.shape(), shape) << header;
    EXPECT_EQ(a.as<float>()[2], 3.25f) << header;
  }
  write_file(tmp("scalar.npy"), npy(dict("<f8", "()"), raw(std::vector<double>{2.5})));
  const Array s = quarry::read_npy(tmp("scalar.npy"));
  EXPECT_EQ(s.rank(), 0);
  EXPECT_EQ(s.as<double>()[0], 2.5);
  write_file(tmp("u1.npy"), npy(dict("<u1", "(2,)"), "ab"));
  EXPECT_EQ(quarry::read_npy(tmp("u1.npy")).dtype(), DType::u8);
}

TEST(Npy, FormatVersions2And3) {
  const std::vector<std::int16_t> x = {-1, 2, -3, 4};
  for (int major : {2, 3}) {
    const std::string path = tmp("v" + std::to_string(major) + ".npy");
    write_file(path, npy(dict("<i2", "(2, 2)"), raw(x), major));
    const Array a = quarry::read_array(path);
    EXPECT_EQ(a.dtype(), DType::i16);
    EXPECT_EQ(a.shape(), (std::vector<std::int64_t>{2, 2}));
    EXPECT_EQ(a.as<std::int16_t>()[2], -3);
    EXPECT_EQ(quarry::detect_file_kind(path), quarry::FileKind::npy);
  }
}

TEST(Npy, ParseMisalignedBufferCopies) {
  const std::vector<double> x = {1.0, 2.0, 3.0};
  const std::string file = npy(dict("<f8", "(3,)"), raw(x));
  auto buf = std::make_shared<std::vector<char>>(file.size() + 1);
  std::memcpy(buf->data() + 1, file.data(), file.size());
  const Array a = quarry::parse_npy(buf, buf->data() + 1, file.size(), "mem.npz:x");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data()) % alignof(double), 0u);
  EXPECT_EQ(a.as<double>()[2], 3.0);
  EXPECT_EQ(a.source(), "mem.npz:x");
}

// ================================================================ NPZ

std::string npz_sample(const std::string& path) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};
  const std::vector<std::int64_t> b = {10, 20, 30};
  const std::string bytes = zip({{"a.npy", npy(dict("<f4", "(2, 3)"), raw(a)), false},
                                 {"labels.npy", npy(dict("<i8", "(3,)"), raw(b)), true}});
  write_file(path, bytes);
  return bytes;
}

TEST(Npz, StoredAndDeflatedMembers) {
  if (!QUARRY_HAVE_NPZ) GTEST_SKIP() << "built with QUARRY_NPZ=OFF: no NPZ reader";
  const std::string path = tmp("s.npz");
  npz_sample(path);
  EXPECT_EQ(quarry::detect_file_kind(path), quarry::FileKind::npz);
  EXPECT_EQ(quarry::npz_members(path), (std::vector<std::string>{"a", "labels"}));
  const Array a = quarry::read_npz_member(path, "a");
  EXPECT_EQ(a.shape(), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(a.as<float>()[5], 6.0f);
  EXPECT_EQ(a.source(), path + ":a");
  const Array b = quarry::read_npz_member(path, "labels.npy");
  EXPECT_EQ(b.dtype(), DType::i64);
  EXPECT_EQ(b.as<std::int64_t>()[2], 30);
  EXPECT_EQ(quarry::read_array(path + ":labels").as<std::int64_t>()[1], 20);
  expect_error([&] { quarry::read_array(path); }, {path, "member", "a, labels"});
  expect_error([&] { quarry::read_npz_member(path, "zz"); }, {path, "'zz'", "a, labels"});
}

TEST(Npz, ColonInPlainPath) {
  const std::vector<std::uint8_t> x = {1, 2, 3};
  const std::string path = tmp("odd:name.npy");
  quarry::write_npy(path, ArrayView{x.data(), DType::u8, {3}});
  EXPECT_EQ(quarry::read_array(path).numel(), 3);
  expect_error([&] { quarry::read_array(tmp("absent.npz:a")); },
               {"cannot open " + tmp("absent.npz:a") + ": No such file or directory"});
}

// ================================================================ IDX

TEST(Idx, RawAndGzipEveryType) {
  const std::vector<std::int16_t> i16 = {1, -2, 300, -32768, 32767, 0};
  const std::vector<std::int32_t> i32 = {1, -2, 70000, -7, 0, 2147483647};
  const std::vector<float> f32 = {1.5f, -2.25f, 0, 1e30f, -1e-30f, 7};
  const std::vector<double> f64 = {1.5, -2.25, 0, 1e300, -1e-300, 7};
  const std::vector<std::int8_t> i8 = {-1, 2, -3, 4, -5, 6};
  struct Case {
    int type;
    DType dtype;
    std::string native;
    std::string big;
  };
  const Case cases[] = {
      {0x08, DType::u8, "abcdef", "abcdef"},         {0x09, DType::i8, raw(i8), raw(i8)},
      {0x0B, DType::i16, raw(i16), big_endian(i16)}, {0x0C, DType::i32, raw(i32), big_endian(i32)},
      {0x0D, DType::f32, raw(f32), big_endian(f32)}, {0x0E, DType::f64, raw(f64), big_endian(f64)}};
  for (const Case& c : cases) {
    const std::string file = idx(c.type, {2, 3}, c.big);
    for (bool gz : {false, true}) {
      const std::string path = tmp("t" + std::to_string(c.type) + (gz ? ".idx.gz" : ".idx"));
      write_file(path, gz ? gzip(file) : file);
      EXPECT_EQ(quarry::detect_file_kind(path), gz ? quarry::FileKind::idx_gz : quarry::FileKind::idx);
      for (const Array& a : {quarry::read_idx(path), quarry::read_array(path)}) {
        SCOPED_TRACE(path);
        EXPECT_EQ(a.dtype(), c.dtype);
        EXPECT_EQ(a.shape(), (std::vector<std::int64_t>{2, 3}));
        ASSERT_EQ(a.nbytes(), c.native.size());
        EXPECT_EQ(std::memcmp(a.data(), c.native.data(), c.native.size()), 0);
      }
    }
  }
}

TEST(Idx, ConcatenatedGzipMembersAndEmptyDims) {
  const std::string file = idx(0x08, {4, 0, 2}, "");
  write_file(tmp("empty.idx"), file);
  EXPECT_EQ(quarry::read_idx(tmp("empty.idx")).shape(), (std::vector<std::int64_t>{4, 0, 2}));
  const std::string full = idx(0x08, {5}, "hello");
  write_file(tmp("two.gz"), gzip(full.substr(0, 6)) + gzip(full.substr(6)));
  const Array a = quarry::read_idx(tmp("two.gz"));
  EXPECT_EQ(std::string(a.as<char>(), 5), "hello");
}

// ================================================================ index lists

TEST(IndexList, Npy) {
  const std::vector<std::int32_t> i32 = {4, 0, 9};
  const std::vector<std::int64_t> i64 = {5, 1, 2, 3};
  const std::vector<std::uint8_t> u8 = {7, 8};
  quarry::write_npy(tmp("i32.npy"), ArrayView{i32.data(), DType::i32, {3}});
  quarry::write_npy(tmp("i64.npy"), ArrayView{i64.data(), DType::i64, {2, 2}});
  quarry::write_npy(tmp("u8.npy"), ArrayView{u8.data(), DType::u8, {2}});
  EXPECT_EQ(quarry::read_index_list(tmp("i32.npy")), (std::vector<std::int64_t>{4, 0, 9}));
  EXPECT_EQ(quarry::read_index_list(tmp("i64.npy")), i64);
  EXPECT_EQ(quarry::read_index_list(tmp("u8.npy")), (std::vector<std::int64_t>{7, 8}));

  const std::vector<float> f = {1, 2};
  quarry::write_npy(tmp("f.npy"), ArrayView{f.data(), DType::f32, {2}});
  expect_error([&] { quarry::read_index_list(tmp("f.npy")); }, {tmp("f.npy"), "integers", "float32"});
  const std::vector<std::int16_t> neg = {1, -4};
  quarry::write_npy(tmp("neg.npy"), ArrayView{neg.data(), DType::i16, {2}});
  expect_error([&] { quarry::read_index_list(tmp("neg.npy")); }, {tmp("neg.npy"), "negative index -4"});
}

TEST(IndexList, Text) {
  write_file(tmp("l.txt"), "# labeled so far\n3\n\n  17  \r\n# more\n0 # the first\n12");
  EXPECT_EQ(quarry::read_index_list(tmp("l.txt")), (std::vector<std::int64_t>{3, 17, 0, 12}));
  write_file(tmp("empty.txt"), "");
  EXPECT_TRUE(quarry::read_index_list(tmp("empty.txt")).empty());
  write_file(tmp("only_header.txt"), "index\n5\n6\n");
  EXPECT_EQ(quarry::read_index_list(tmp("only_header.txt")), (std::vector<std::int64_t>{5, 6}));
  write_file(tmp("l.csv"), "# export\nid,index,score\na,4,0.5\n\"b\", 2 ,0.25\n\nc,\"9\",1\n");
  EXPECT_EQ(quarry::read_index_list(tmp("l.csv")), (std::vector<std::int64_t>{4, 2, 9}));

  write_file(tmp("labeled.txt"), "1\n2\n# c\nabc\n");
  expect_error([&] { quarry::read_index_list(tmp("labeled.txt")); },
               {tmp("labeled.txt") + ":4: expected a non-negative integer index, found 'abc'"});
  write_file(tmp("neg.txt"), "1\n-2\n");
  expect_error([&] { quarry::read_index_list(tmp("neg.txt")); }, {tmp("neg.txt") + ":2:", "'-2'"});
  write_file(tmp("big.txt"), "99999999999999999999\n");
  expect_error([&] { quarry::read_index_list(tmp("big.txt")); }, {tmp("big.txt") + ":1:", "out of range"});
  write_file(tmp("float.txt"), "1.5\n");
  expect_error([&] { quarry::read_index_list(tmp("float.txt")); }, {tmp("float.txt") + ":1:", "'1.5'"});
  write_file(tmp("noheader.csv"), "1,2\n3,4\n");
  expect_error([&] { quarry::read_index_list(tmp("noheader.csv")); },
               {tmp("noheader.csv") + ":1:", "'index'"});
  write_file(tmp("short.csv"), "a,index\n1,2\n3\n");
  expect_error([&] { quarry::read_index_list(tmp("short.csv")); }, {tmp("short.csv") + ":3:", "columns"});
  write_file(tmp("two.txt"), "1 2\n");
  expect_error([&] { quarry::read_index_list(tmp("two.txt")); }, {tmp("two.txt") + ":1:", "'1 2'"});
}

// ================================================================ corrupt corpus

struct Bad {
  std::string file;
  std::string bytes;
  std::string expect;  // part of the message
};

void check_corpus(const std::vector<Bad>& corpus,
                  const std::vector<std::function<void(const std::string&)>>& readers) {
  for (const Bad& b : corpus) {
    const std::string path = tmp(b.file);
    write_file(path, b.bytes);
    for (const auto& read : readers) {
      SCOPED_TRACE(b.file);
      expect_error([&] { read(path); }, {path, b.expect});
    }
  }
}

TEST(Corrupt, Npy) {
  const std::string f4x10 = raw(std::vector<float>(10, 1.0f));
  std::string past_eof = npy(dict("<f4", "(10,)"), f4x10);
  past_eof[8] = '\xff';
  past_eof[9] = '\x0f';
  std::vector<Bad> corpus = {
      {"empty.npy", "", "empty"},
      {"magic.npy", "\x93NUMPX\x01\x00\x10\x00{}"s, "bad magic"},
      {"garbage.npy", pattern(300, 7), "bad magic"},
      {"short1.npy", "\x93NUMPY", "truncated"},
      {"short2.npy", "\x93NUMPY\x01\x00\x40"s, "truncated NPY header (9 bytes)"},
      {"short3.npy", "\x93NUMPY\x02\x00\x40\x00"s, "truncated NPY header (10 bytes)"},
      {"version.npy", npy(dict("<f4", "(10,)"), f4x10, 4), "version 4.0"},
      {"past_eof.npy", past_eof, "past the end"},
      {"header_cut.npy", npy(dict("<f4", "(10,)"), f4x10).substr(0, 40), "past the end"},
      {"trunc_data.npy", npy(dict("<f4", "(10,)"), f4x10.substr(0, 36)),
       "truncated data: header says shape [10] float32 = 40 bytes, file has 36 bytes after the header"},
      {"shape_big.npy", npy(dict("<f4", "(11,)"), f4x10), "truncated data"},
      {"shape_small.npy", npy(dict("<f4", "(9,)"), f4x10), "trailing data"},
      {"huge.npy", npy(dict("<f4", "(4611686018427387904, 4611686018427387904)"), f4x10), "too large"},
      {"huge2.npy", npy(dict("<f8", "(4611686018427387904, 2)"), f4x10), "too large"},
      {"huge3.npy", npy(dict("<f8", "(1099511627776, 1048576)"), f4x10), "truncated data"},
      {"longdim.npy", npy(dict("<f4", "(99999999999999999999,)"), f4x10), "too large"},
      {"negative.npy", npy(dict("<f4", "(-10,)"), f4x10), "negative dimension"},
      {"negative2.npy", npy(dict("<f4", "(-2, -5)"), f4x10), "negative dimension"},
      {"fortran.npy", npy(dict("<f4", "(2, 5)", "True"), f4x10), "Fortran order is not supported"},
      {"c8.npy", npy(dict("<c8", "(5,)"), f4x10), "unsupported dtype '<c8'"},
      {"bigendian.npy", npy(dict(">f4", "(10,)"), f4x10), "big-endian"},
      {"object.npy", npy(dict("|O", "(5,)"), f4x10), "unsupported dtype '|O'"},
      {"object2.npy", npy(dict("O", "(5,)"), f4x10), "unsupported dtype"},
      {"unicode.npy", npy(dict("<U3", "(5,)"), f4x10), "unsupported dtype '<U3'"},
      {"bytes.npy", npy(dict("|S4", "(10,)"), f4x10), "supported: <f2 <f4"},
      {"u8big.npy", npy(dict("<u8", "(5,)"), std::string(39, '\0') + "\x80"), "element 4 is 9223372036854775808"},
      {"pipe_f4.npy", npy(dict("|f4", "(10,)"), f4x10), "unsupported dtype"},
      {"list.npy", npy("[1, 2, 3]", f4x10), "not a dict"},
      {"nokey.npy", npy("{'descr': '<f4', 'shape': (10,)}", f4x10), "fortran_order"},
      {"noshape.npy", npy("{'descr': '<f4', 'fortran_order': False}", f4x10), "shape"},
      {"dupkey.npy", npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (10,)}", f4x10),
       "duplicate"},
      {"extrakey.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (10,), 'x': 1}", f4x10),
       "unexpected key"},
      {"unterminated.npy", npy("{'descr: <f4, 'fortran_order': False, 'shape': (10,)}", f4x10), "header"},
      {"badbool.npy", npy(dict("<f4", "(10,)", "0"), f4x10), "True or False"},
      {"badshape.npy", npy(dict("<f4", "[10]"), f4x10), "expected '('"},
      {"shapetext.npy", npy(dict("<f4", "(a,)"), f4x10), "expected an integer"},
      {"structured.npy", npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (10,)}", f4x10),
       "structured"},
      {"after.npy", npy(dict("<f4", "(10,)") + " x", f4x10), "unexpected text"},
      {"unclosed.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (10,)", f4x10), "malformed"},
  };
  check_corpus(corpus, {[](const std::string& p) { quarry::read_npy(p); }});
  // By content the first three are not NPY files: other readers see them differently.
  corpus.erase(corpus.begin(), corpus.begin() + 3);
  check_corpus(corpus, {[](const std::string& p) { quarry::read_array(p); },
                        [](const std::string& p) { quarry::read_index_list(p); }});
}

// bool is read as uint8 in place; uint16/32/64 widened into int32/int64 (masks, label maps).
TEST(Npy, BoolAndUnsignedTypes) {
  const std::string dir = testing::TempDir();
  const auto write = [&](const std::string& name, const std::string& descr, const std::string& shape,
                         const std::string& bytes) {
    const std::string path = dir + "/" + name;
    write_file(path, npy(dict(descr, shape), bytes));
    return quarry::read_npy(path);
  };
  const quarry::Array b = write("b1.npy", "|b1", "(4,)", std::string("\0\1\1\0", 4));
  EXPECT_EQ(b.dtype(), DType::u8);
  EXPECT_EQ(b.as<std::uint8_t>()[1], 1);
  EXPECT_EQ(b.as<std::uint8_t>()[3], 0);
  const std::uint16_t u2[3] = {0, 40000, 65535};
  const quarry::Array a2 = write("u2.npy", "<u2", "(3,)", std::string(reinterpret_cast<const char*>(u2), 6));
  ASSERT_EQ(a2.dtype(), DType::i32);
  EXPECT_EQ(a2.as<std::int32_t>()[1], 40000);
  EXPECT_EQ(a2.as<std::int32_t>()[2], 65535);
  const std::uint32_t u4[2] = {7, 4000000000u};
  const quarry::Array a4 = write("u4.npy", "<u4", "(2,)", std::string(reinterpret_cast<const char*>(u4), 8));
  ASSERT_EQ(a4.dtype(), DType::i64);
  EXPECT_EQ(a4.as<std::int64_t>()[1], 4000000000LL);
  const std::uint64_t u8[2] = {3, 9223372036854775807ULL};
  const quarry::Array a8 = write("u8.npy", "<u8", "(1, 2)", std::string(reinterpret_cast<const char*>(u8), 16));
  ASSERT_EQ(a8.dtype(), DType::i64);
  EXPECT_EQ(a8.shape(), (std::vector<std::int64_t>{1, 2}));
  EXPECT_EQ(a8.as<std::int64_t>()[1], 9223372036854775807LL);
}

TEST(Corrupt, Npz) {
  if (!QUARRY_HAVE_NPZ) GTEST_SKIP() << "built with QUARRY_NPZ=OFF: no NPZ reader";
  const std::string good = npy(dict("<f4", "(2,)"), raw(std::vector<float>{1, 2}));
  const std::string sample = zip({{"a.npy", good, false}, {"b.npy", good, true}});
  const std::vector<Bad> corpus = {
      {"empty.npz", "", "empty"},
      {"notzip.npz", "PK\x03\x04 this is not a zip archive at all", "not a valid NPZ"},
      {"garbage.npz", pattern(500, 3), "not a valid NPZ"},
      {"cut.npz", sample.substr(0, sample.size() / 2), "not a valid NPZ"},
      {"notnpy.npz", zip({{"a.npy", "hello, world", false}}), ":a: not an NPY file"},
      {"notnpy2.npz", zip({{"a.npy", "hello, world", true}}), ":a: not an NPY file"},
      // A header that disagrees with the member's declared size is refused before the rest is inflated.
      {"badnpy.npz", zip({{"a.npy", npy(dict("<f4", "(3,)"), raw(std::vector<float>{1, 2})), true}}),
       ":a: its NPY header describes 12 bytes of data after 128 header bytes, but the archive declares 136"},
      {"bigger.npz", zip({{"a.npy", good, false, 1000}}), ":a"},
      {"smaller.npz", zip({{"a.npy", good, true, 10}}), ":a: member is longer than the 10 bytes"},
      // More than deflate can expand its compressed bytes to: refused before inflating.
      {"huge.npz", zip({{"a.npy", good, true, 0xfffffffe}}),
       ":a: member declares 4294967294 bytes, more than its 138 compressed bytes can hold"},
      {"huge-stored.npz", zip({{"a.npy", good, false, 0xfffffffe}}), ":a: member"},
      {"zip64.npz", zip({{"a.npy", good, true, 0xffffffff}}), "not a valid NPZ"},
      {"crc.npz", zip({{"a.npy", good, true, -1, true}}), ":a"},
      {"crc2.npz", zip({{"a.npy", good, false, -1, true}}), ":a"},
      {"missing.npz", zip({{"b.npy", good, false}}), "no member 'a' (members: b)"},
      {"nomembers.npz", zip({}), "no member 'a' (members: none)"},
  };
  check_corpus(corpus, {[](const std::string& p) { quarry::read_npz_member(p, "a"); },
                        [](const std::string& p) { quarry::read_array(p + ":a"); }});
}

TEST(Corrupt, Idx) {
  const std::string data = "abcdef";
  const std::string good = idx(0x08, {2, 3}, data);
  const std::string gz = gzip(good);
  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 6] ^= 1;
  const std::vector<Bad> corpus = {
      {"empty.idx", "", "empty"},
      {"short.idx", bytes({0, 0, 8}), "truncated"},
      {"magic.idx", bytes({1, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3}) + data, "bad magic"},
      {"type7.idx", idx(0x07, {2, 3}, data), "unknown IDX type code 0x07"},
      {"rank0.idx", idx(0x08, {}, data), "rank 0"},
      {"rank9.idx", idx(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 6}, data), "rank 9"},
      {"header_cut.idx", good.substr(0, 9), "truncated IDX header"},
      {"overflow.idx", idx(0x0E, {0xffffffffu, 0xffffffffu, 0xffffffffu}, data), "too large"},
      {"terabytes.idx", idx(0x08, {1u << 20, 1u << 20, 2}, data), "too large"},
      {"trunc.idx", good.substr(0, good.size() - 1),
       "truncated data: header says shape [2, 3] uint8 = 6 bytes"},
      {"trailing.idx", good + "x", "trailing data"},
      {"gz_trunc.gz", gzip(good.substr(0, good.size() - 1)), "truncated data"},
      {"gz_trailing.gz", gzip(good + "xy"), "trailing data"},
      {"gz_corrupt.gz", bytes({0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff, 0xff, 0, 1, 2}),
       "corrupt gzip"},
      {"gz_badmethod.gz", bytes({0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 3, 0, 0}), "corrupt gzip"},
      {"gz_cut.gz", gz.substr(0, gz.size() / 2), "truncated gzip"},
      {"gz_nofooter.gz", gz.substr(0, gz.size() - 4), "truncated gzip"},
      {"gz_crc.gz", bad_crc, "corrupt gzip"},
      {"gz_garbage.gz", gz + "junk", "unexpected bytes"},
      {"gz_magic.gz", gzip(bytes({1, 2, 8, 1, 0, 0, 0, 1, 9})), "bad magic"},
      {"gz_empty.gz", gzip(""), "empty"},
  };
  check_corpus(corpus, {[](const std::string& p) { quarry::read_idx(p); }});
}

TEST(Corrupt, ReadArrayAndIndexList) {
  const std::string missing = tmp("nothing_here.npy");
  expect_error([&] { quarry::read_array(missing); },
               {"cannot open " + missing + ": No such file or directory"});
  expect_error([&] { quarry::read_index_list(missing); },
               {"cannot open " + missing + ": No such file or directory"});
  expect_error([&] { quarry::detect_file_kind(missing); }, {"cannot open " + missing});
  const std::string dir = tmp("adir");
  fs::create_directories(dir);
  expect_error([&] { quarry::read_array(dir); }, {dir, "is a folder"});
  write_file(tmp("text.bin"), "hello world\n");
  expect_error([&] { quarry::read_array(tmp("text.bin")); },
               {tmp("text.bin"), "unknown file format", ".npy"});
  EXPECT_EQ(quarry::detect_file_kind(tmp("text.bin")), quarry::FileKind::unknown);
  write_file(tmp("empty.bin"), "");
  expect_error([&] { quarry::read_array(tmp("empty.bin")); }, {tmp("empty.bin"), "empty"});
  write_file(tmp("binary.txt"), pattern(64, 5));
  expect_error([&] { quarry::read_index_list(tmp("binary.txt")); }, {tmp("binary.txt")});
}

// ================================================================ truncation and byte flips

using Reader = std::function<std::vector<Array>(const std::string&)>;

// Reading must give either quarry::Error or arrays whose bytes can all be read and that are no
// larger than the file (times `expansion` for compressed formats).
void survive(const Reader& read, const std::string& path, std::size_t file_size, std::size_t expansion) {
  try {
    for (const Array& a : read(path)) {
      EXPECT_LE(a.nbytes(), file_size * expansion) << path;
      volatile unsigned sink = checksum(a.view());
      (void)sink;
    }
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

void sweep(const std::string& name, const std::string& good, const Reader& read, std::size_t expansion = 1) {
  const std::string path = tmp(name);
  for (std::size_t n = 0; n <= good.size(); ++n) {
    write_file(path, good.substr(0, n));
    survive(read, path, n, expansion);
  }
  std::mt19937 rng(12345);
  for (int round = 0; round < 400; ++round) {
    std::string s = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) s[rng() % s.size()] ^= static_cast<char>(1 + rng() % 255);
    write_file(path, s);
    survive(read, path, s.size(), expansion);
  }
}

// parse_npy over an exact-size heap copy, so that any read past the end is caught by ASan.
std::vector<Array> parse_copy(const std::string& path) {
  const std::string s = read_file(path);
  auto buf = std::make_shared<std::vector<unsigned char>>(s.begin(), s.end());
  std::vector<Array> out;
  out.push_back(quarry::parse_npy(buf, buf->empty() ? nullptr : buf->data(), buf->size(), path));
  return out;
}

std::vector<Array> read_any_and_list(const std::string& path) {
  std::vector<Array> out;
  try {
    quarry::read_index_list(path);
  } catch (const quarry::Error&) {
  }
  out.push_back(quarry::read_array(path));
  return out;
}

TEST(Sweep, Npy) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const std::string good = npy(dict("<f4", "(3, 5)"), raw(x));
  sweep("f4.npy", good, read_any_and_list);
  sweep("f4_mem.npy", good, parse_copy);
  const std::vector<std::int16_t> y = {1, 2, 3, 4, 5, 6, 7, 8};
  sweep("i2_v2.npy", npy(dict("<i2", "(2, 2, 2)"), raw(y), 2), parse_copy);
}

TEST(Sweep, Npz) {
  if (!QUARRY_HAVE_NPZ) GTEST_SKIP() << "built with QUARRY_NPZ=OFF: no NPZ reader";
  const std::string good = npz_sample(tmp("sample.npz"));
  sweep(
      "s.npz", good,
      [](const std::string& p) {
        std::vector<Array> out;
        for (const std::string& m : quarry::npz_members(p)) {
          try {
            out.push_back(quarry::read_npz_member(p, m));
          } catch (const quarry::Error& e) {
            EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
          }
        }
        out.push_back(quarry::read_array(p + ":labels"));
        return out;
      },
      1032);
}

TEST(Sweep, Idx) {
  const std::vector<std::int32_t> x = {1, -2, 3, -4, 5, -6};
  const std::string good = idx(0x0C, {3, 2}, big_endian(x));
  sweep("i4.idx", good, read_any_and_list);
  sweep("i4.idx.gz", gzip(good), read_any_and_list, 1032);
}

TEST(Sweep, IndexListText) {
  const std::string good = "# c\nid,index\na,1\nb,22\n\nc,333\n";
  const std::string path = tmp("l.csv");
  for (std::size_t n = 0; n <= good.size(); ++n) {
    write_file(path, good.substr(0, n));
    try {
      for (std::int64_t i : quarry::read_index_list(path)) EXPECT_GE(i, 0);
    } catch (const quarry::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
}

// ================================================================ real data

const std::string kData = QUARRY_SHARED_DATA;

TEST(RealData, Mnist) {
  const std::string images = kData + "/mnist/train-images-idx3-ubyte.gz";
  const std::string labels = kData + "/mnist/train-labels-idx1-ubyte.gz";
  if (!fs::exists(images) || !fs::exists(labels)) GTEST_SKIP() << "MNIST under " << kData << " is absent";
  EXPECT_EQ(quarry::detect_file_kind(images), quarry::FileKind::idx_gz);
  const Array x = quarry::read_array(images);
  EXPECT_EQ(x.dtype(), DType::u8);
  EXPECT_EQ(x.shape(), (std::vector<std::int64_t>{60000, 28, 28}));
  const Array y = quarry::read_idx(labels);
  ASSERT_EQ(y.shape(), std::vector<std::int64_t>{60000});
  std::array<int, 10> counts{};
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    ASSERT_LT(y.as<std::uint8_t>()[i], 10);
    ++counts[y.as<std::uint8_t>()[i]];
  }
  EXPECT_EQ(counts, (std::array<int, 10>{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}));

  EXPECT_EQ(quarry::read_idx(kData + "/mnist/t10k-images-idx3-ubyte.gz").shape(),
            (std::vector<std::int64_t>{10000, 28, 28}));
  EXPECT_EQ(quarry::read_idx(kData + "/mnist/t10k-labels-idx1-ubyte.gz").shape(),
            std::vector<std::int64_t>{10000});
}

TEST(RealData, PneumoniaMnist) {
  if (!QUARRY_HAVE_NPZ) GTEST_SKIP() << "built with QUARRY_NPZ=OFF: no NPZ reader";
  const std::string path = kData + "/pneumoniamnist/pneumoniamnist.npz";
  if (!fs::exists(path)) GTEST_SKIP() << "PneumoniaMNIST under " << kData << " is absent";
  const std::vector<std::string> members = quarry::npz_members(path);
  for (const char* m : {"train_images", "train_labels", "val_images", "test_labels"})
    EXPECT_NE(std::find(members.begin(), members.end(), m), members.end()) << m;
  const Array x = quarry::read_npz_member(path, "train_images");
  EXPECT_EQ(x.dtype(), DType::u8);
  EXPECT_EQ(x.shape(), (std::vector<std::int64_t>{3882, 28, 28}));
  const Array y = quarry::read_array(path + ":train_labels");
  ASSERT_EQ(y.shape(), (std::vector<std::int64_t>{3882, 1}));
  ASSERT_EQ(y.dtype(), DType::u8);
  EXPECT_EQ(std::count(y.as<std::uint8_t>(), y.as<std::uint8_t>() + y.numel(), 0), 388);
}

// An output that exists and is not a regular file (a pipe, /dev/null, /dev/stdout) is written in
// place; renaming a temporary file over it would replace the device or the pipe.
TEST(AtomicFile, WritesIntoAPipeWithoutReplacingIt) {
  const std::string fifo = tmp("out.fifo");
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << fifo << ": " << std::strerror(errno);
  std::string got;
  std::thread reader([&] {
    std::ifstream in(fifo, std::ios::binary);
    got.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  });
  quarry::write_file_atomic(fifo, {"rank,index\n", "1,7\n"});
  reader.join();
  EXPECT_EQ(got, "rank,index\n1,7\n");
  EXPECT_TRUE(fs::is_fifo(fifo)) << "the pipe was replaced by a file";
  for (const auto& e : fs::directory_iterator(fs::path(fifo).parent_path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "temporary left: " << e.path();
}

// `-o /dev/stdout >> log` appends: a descriptor of this process is written through a duplicate,
// keeping its mode and offset (reopening /proc/self/fd/N would write over the log's start).
TEST(AtomicFile, WritesThroughAnOpenDescriptorWithItsModeAndOffset) {
  const std::string log = tmp("append.log");
  std::ofstream(log) << "line 1\nline 2\n";
  const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  for (const std::string& name : {"/dev/fd/" + std::to_string(fd), "/proc/self/fd/" + std::to_string(fd)})
    quarry::write_file_atomic(name, {"out\n"});
  ::close(fd);
  std::ifstream in(log);
  const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, "line 1\nline 2\nout\nout\n");
  // A closed descriptor is an error naming the path, not a write elsewhere.
  EXPECT_THROW(quarry::write_file_atomic("/dev/fd/" + std::to_string(fd), {"x"}), quarry::Error);
}

}  // namespace
