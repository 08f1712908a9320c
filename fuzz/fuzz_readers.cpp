// libFuzzer target: every file reader over one input. Each reader must either return an array
// whose bytes can all be read, or throw quarry::Error; anything else (a crash, a sanitizer
// report, another exception) is a finding.
//
//   fuzz_readers --make-seeds DIR   writes a few small valid npy/npz/idx/index-list files to DIR
//   fuzz_readers [libFuzzer flags] CORPUS_DIR [SEED_DIR...]
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace {

// ---------------------------------------------------------------- seeds

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string idx_file(int type, const std::vector<std::uint32_t>& dims, const std::string& data) {
  std::string s = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (std::uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>((d >> shift) & 0xff);
  return s + data;
}

void write_npz(const std::string& path, const std::string& a, const std::string& b) {
  int err = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (!z) throw std::runtime_error("cannot create " + path);
  const std::pair<const char*, const std::string*> members[] = {{"a.npy", &a}, {"b.npy", &b}};
  for (const auto& [name, data] : members) {
    zip_source_t* src = zip_source_buffer(z, data->data(), data->size(), 0);
    const zip_int64_t i = zip_file_add(z, name, src, ZIP_FL_OVERWRITE);
    zip_set_file_compression(z, static_cast<zip_uint64_t>(i), name[0] == 'a' ? ZIP_CM_STORE : ZIP_CM_DEFLATE,
                             0);
  }
  if (zip_close(z) != 0) throw std::runtime_error("cannot write " + path);
}

void write_gzip(const std::string& path, const std::string& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
  gzclose(f);
}

void make_seeds(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const std::vector<float> f32 = {1, -2, 3.5f, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const std::vector<std::int64_t> i64 = {3, 1, 4, 1, 5};
  const std::vector<std::uint8_t> u8 = {0, 1, 2, 250, 255};
  const double scalar = 2.5;
  const std::string f = dir + "/f32.npy", i = dir + "/i64.npy";
  quarry::write_npy(f, quarry::ArrayView{f32.data(), quarry::DType::f32, {3, 4}});
  quarry::write_npy(i, quarry::ArrayView{i64.data(), quarry::DType::i64, {5}});
  quarry::write_npy(dir + "/u8.npy", quarry::ArrayView{u8.data(), quarry::DType::u8, {1, 5}});
  quarry::write_npy(dir + "/scalar.npy", quarry::ArrayView{&scalar, quarry::DType::f64, {}});
  write_npz(dir + "/two.npz", read_file(f), read_file(i));
  const std::string idx_u8 = idx_file(0x08, {2, 3}, "abcdef");
  write_file(dir + "/u8.idx", idx_u8);
  write_file(dir + "/i32.idx",
             idx_file(0x0C, {2, 2}, std::string("\0\0\0\1\xff\xff\xff\xfe\0\0\1\0\x7f\0\0\0", 16)));
  write_gzip(dir + "/u8.idx.gz", idx_u8);
  write_file(dir + "/list.txt", "# labeled\n3\n17\n\n0\n");
  write_file(dir + "/list.csv", "id,index,score\na,4,0.5\nb,2,0.25\n");
}

// ---------------------------------------------------------------- the target

// Reads every byte of the array, so that the sanitizers see a view past its storage.
void touch(const quarry::Array& a) {
  const auto* p = static_cast<const unsigned char*>(a.data());
  volatile unsigned sum = 0;
  for (std::size_t i = 0; i < a.nbytes(); ++i) sum = sum + p[i];
}

void expect_error_or_array(const std::function<quarry::Array()>& read) {
  try {
    touch(read());
  } catch (const quarry::Error&) {
  }
}

// Where each input is written: a file of this process in $TMPDIR (scripts/fuzz.sh points that
// into the build folder). The name ends in .npz so that "PATH:a" names a member when the content
// is an archive.
const std::string& input_path() {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("quarry_fuzz_" + std::to_string(::getpid()) + ".npz"))
          .string();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  for (int i = 1; i + 1 < *argc; ++i) {
    if (std::strcmp((*argv)[i], "--make-seeds") == 0) {
      make_seeds((*argv)[i + 1]);
      std::exit(0);
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = input_path();
  write_file(path, std::string(reinterpret_cast<const char*>(data), size));

  expect_error_or_array([&] { return quarry::read_array(path); });
  expect_error_or_array([&] { return quarry::read_array(path + ":a"); });
  expect_error_or_array([&] { return quarry::read_idx(path); });
  try {
    for (const std::string& m : quarry::npz_members(path))
      expect_error_or_array([&] { return quarry::read_npz_member(path, m); });
  } catch (const quarry::Error&) {
  }
  try {
    quarry::read_index_list(path);
  } catch (const quarry::Error&) {
  }
  // An exact-size heap copy: any read past its end is an AddressSanitizer report.
  auto copy = std::make_shared<std::vector<std::uint8_t>>(data, data + size);
  expect_error_or_array([&] { return quarry::parse_npy(copy, copy->data(), copy->size(), "input"); });
  return 0;
}
