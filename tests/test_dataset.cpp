// Dataset readers (src/train/dataset.cpp) and the synthetic image pool
// (src/train/synthetic_images.cpp): every reader on files written here (IDX raw and gzipped,
// NPZ, NPY), the held-out splits, the pool limit, every error path, and the real data sets
// where present.
//
// Like test_io.cpp, the test links neither zlib nor libzip: gzip streams (stored deflate
// blocks) and zip archives (stored members) are written by hand (file_builders.hpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "file_builders.hpp"
#include "quarry/dataset.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace fs = std::filesystem;
using quarry::ArrayView;
using quarry::Dataset;
using quarry::DatasetOptions;
using quarry::DType;
using quarry::Split;
using namespace quarry_test;

namespace {

// ---------------------------------------------------------------- files

// A fresh folder per test, under QUARRY_TEST_TMP/dataset.
std::string tmp(const std::string& file = "") { return test_tmp("dataset", file); }

std::string idx_u8(const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& v) {
  return idx(0x08, dims, std::string(v.begin(), v.end()));
}

std::string idx_i32(const std::vector<std::int32_t>& v) {
  std::string data;
  for (std::int32_t x : v) data += be32(static_cast<std::uint32_t>(x));
  return idx(0x0C, {static_cast<std::uint32_t>(v.size())}, data);
}

// The bytes of an .npy file holding `v` (written by quarry::write_npy).
template <class T>
std::string npy(DType t, const std::vector<std::int64_t>& shape, const std::vector<T>& v) {
  const std::string path = tmp("member.tmp.npy");
  quarry::write_npy(path, ArrayView{v.data(), t, shape});
  const std::string bytes = read_file(path);
  fs::remove(path);
  return bytes;
}

// ---------------------------------------------------------------- test images

// Pixel (channel c, row y, column x) of image i: a pattern whose first pixel is the image id,
// so that a sample of a (shuffled) split can be traced back to its row in the file.
std::uint8_t pixel(int i, int c, int y, int x, int w) {
  if (c == 0 && y == 0 && x == 0) return static_cast<std::uint8_t>(i);
  return static_cast<std::uint8_t>((i * 31 + (y * w + x) * 7 + c * 50) % 256);
}

// n images [n, h, w] (channels 1) or [n, h, w, 3], uint8, row-major as the files hold them.
std::vector<std::uint8_t> images(int n, int h, int w, int channels, int first_id = 0) {
  std::vector<std::uint8_t> v;
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int c = 0; c < channels; ++c) v.push_back(pixel(first_id + i, c, y, x, w));
  return v;
}

int label_of(int id, int classes) { return (id * 7) % classes; }

std::vector<std::uint8_t> labels(int n, int classes, int first_id = 0) {
  std::vector<std::uint8_t> v;
  for (int i = 0; i < n; ++i) v.push_back(static_cast<std::uint8_t>(label_of(first_id + i, classes)));
  return v;
}

// The ids of a split's samples; checks every value of each sample (channels first, /255) and
// its label against the pattern.
std::vector<int> check_images(const Split& s, int channels, int h, int w, int classes) {
  const std::size_t numel = static_cast<std::size_t>(channels * h * w);
  EXPECT_EQ(s.x.size(), s.y.size() * numel);
  std::vector<int> ids;
  for (std::size_t k = 0; k < s.y.size(); ++k) {
    const float* x = s.x.data() + k * numel;
    const int id = static_cast<int>(std::lround(x[0] * 255));
    ids.push_back(id);
    EXPECT_EQ(s.y[k], label_of(id, classes)) << "sample " << k;
    for (int c = 0; c < channels; ++c)
      for (int y = 0; y < h; ++y)
        for (int xx = 0; xx < w; ++xx) {
          const float want = pixel(id, c, y, xx, w) / 255.0f;
          const float got = x[(c * h + y) * w + xx];
          if (got != want) {
            ADD_FAILURE() << "sample " << k << " (id " << id << ") c " << c << " y " << y << " x " << xx
                          << ": " << got << " != " << want;
            return ids;
          }
        }
  }
  return ids;
}

// ---------------------------------------------------------------- checks

bool ascending(const std::vector<int>& v) {
  return std::is_sorted(v.begin(), v.end()) && std::adjacent_find(v.begin(), v.end()) == v.end();
}

std::vector<int> merged(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end());
  return a;
}

std::vector<int> range(int first, int last) {
  std::vector<int> v(static_cast<std::size_t>(last - first));
  std::iota(v.begin(), v.end(), first);
  return v;
}

bool same(const Split& a, const Split& b) { return a.x == b.x && a.y == b.y; }

// An MNIST-layout folder: 50 train images and 12 test images of 4x5, 3 classes.
std::string write_idx_folder(const std::string& dir, bool gz_train, bool gz_test) {
  auto put = [&](const std::string& name, const std::string& bytes, bool gz) {
    write_file(dir + "/" + name + (gz ? ".gz" : ""), gz ? gzip_stored(bytes) : bytes);
  };
  put("train-images-idx3-ubyte", idx_u8({50, 4, 5}, images(50, 4, 5, 1)), gz_train);
  put("train-labels-idx1-ubyte", idx_u8({50}, labels(50, 3)), gz_train);
  put("t10k-images-idx3-ubyte", idx_u8({12, 4, 5}, images(12, 4, 5, 1, 100)), gz_test);
  put("t10k-labels-idx1-ubyte", idx_u8({12}, labels(12, 3, 100)), gz_test);
  return dir;
}

// ================================================================ Dataset

TEST(Dataset, SampleNumelDescribeClassCounts) {
  Dataset d;
  d.sample_shape = {3, 4, 5};
  d.num_classes = 3;
  d.train.y = {0, 2, 2, 1, 2};
  d.val.y = {1};
  d.test.y = {0, 0};
  EXPECT_TRUE(d.is_image());
  EXPECT_EQ(d.sample_numel(), 60);
  EXPECT_EQ(d.describe(), "5 train / 1 val / 2 test, 3x4x5, 3 classes");
  EXPECT_EQ(d.class_counts(d.train), (std::vector<std::int64_t>{1, 1, 3}));
  EXPECT_EQ(d.class_counts(d.val), (std::vector<std::int64_t>{0, 1, 0}));

  d.sample_shape = {7};
  EXPECT_FALSE(d.is_image());
  EXPECT_EQ(d.sample_numel(), 7);
  EXPECT_EQ(d.describe(), "5 train / 1 val / 2 test, 7 features, 3 classes");

  d.name = "toy";
  d.train.y[3] = 5;
  expect_error([&] { d.class_counts(d.train); }, {"toy", "label 5", "row 3"});
}

// ================================================================ IDX

TEST(Idx, GrayscaleRawAndGzip) {
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    const std::string dir =
        write_idx_folder(tmp("v" + std::to_string(variant) + "/toy"), variant >= 1, variant == 2);
    DatasetOptions o;
    o.val_fraction = 0.2;
    const Dataset d = quarry::load_dataset("idx:" + dir, o);
    EXPECT_EQ(d.spec, "idx:" + dir);
    EXPECT_EQ(d.name, "toy");
    EXPECT_EQ(d.sample_shape, (std::vector<std::int64_t>{1, 4, 5}));
    EXPECT_EQ(d.num_classes, 3);
    EXPECT_EQ(d.train.size(), 40);
    EXPECT_EQ(d.val.size(), 10);
    EXPECT_EQ(d.test.size(), 12);
    EXPECT_EQ(d.describe(), "40 train / 10 val / 12 test, 1x4x5, 3 classes");
    const std::vector<int> train = check_images(d.train, 1, 4, 5, 3), val = check_images(d.val, 1, 4, 5, 3);
    EXPECT_TRUE(ascending(train));
    EXPECT_TRUE(ascending(val));
    EXPECT_EQ(merged(train, val), range(0, 50));  // disjoint, and together the whole file
    EXPECT_EQ(check_images(d.test, 1, 4, 5, 3), range(100, 112));
  }
  // A trailing separator does not change the name; the held-out split is the same.
  const std::string dir = tmp("v0/toy");
  EXPECT_EQ(quarry::load_dataset("idx:" + dir + "/").name, "toy");
  EXPECT_TRUE(same(quarry::load_dataset("idx:" + dir + "/").val, quarry::load_dataset("idx:" + dir).val));
}

TEST(Idx, RgbBecomesChannelsFirst) {
  const std::string dir = tmp("rgb");
  write_file(dir + "/train-images-idx3-ubyte.gz", gzip_stored(idx_u8({30, 3, 4, 3}, images(30, 3, 4, 3))));
  write_file(dir + "/train-labels-idx1-ubyte.gz", gzip_stored(idx_u8({30}, labels(30, 4))));
  write_file(dir + "/t10k-images-idx3-ubyte", idx_u8({5, 3, 4, 3}, images(5, 3, 4, 3, 200)));
  write_file(dir + "/t10k-labels-idx1-ubyte", idx_u8({5}, labels(5, 4, 200)));
  const Dataset d = quarry::load_dataset("idx:" + dir);
  EXPECT_EQ(d.sample_shape, (std::vector<std::int64_t>{3, 3, 4}));
  EXPECT_EQ(d.describe(), "27 train / 3 val / 5 test, 3x3x4, 4 classes");
  EXPECT_EQ(merged(check_images(d.train, 3, 3, 4, 4), check_images(d.val, 3, 3, 4, 4)), range(0, 30));
  EXPECT_EQ(check_images(d.test, 3, 3, 4, 4), range(200, 205));
}

TEST(Idx, MissingFolderOrFile) {
  expect_error([&] { quarry::load_dataset("idx:" + tmp("absent")); }, {tmp("absent"), "not a folder"});
  const std::string dir = write_idx_folder(tmp("toy"), false, true);
  fs::remove(dir + "/t10k-labels-idx1-ubyte.gz");
  expect_error([&] { quarry::load_dataset("idx:" + dir); },
               {dir, "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"});
  expect_error([&] { quarry::load_dataset("idx:"); }, {"idx:DIR"});
}

TEST(Idx, LengthMismatchNamesBothFiles) {
  const std::string dir = write_idx_folder(tmp("toy"), true, false);
  write_file(dir + "/train-labels-idx1-ubyte.gz", gzip_stored(idx_u8({49}, labels(49, 3))));
  expect_error([&] { quarry::load_dataset("idx:" + dir); }, {dir + "/train-labels-idx1-ubyte.gz", "49 labels",
                                                             "train-images-idx3-ubyte.gz has 50 images"});
}

TEST(Idx, LabelOutsideRangeNamesFileAndRow) {
  const std::string dir = write_idx_folder(tmp("toy"), false, false);
  const std::string path = dir + "/t10k-labels-idx1-ubyte";
  std::vector<std::int32_t> y(12, 1);
  y[7] = -1;
  write_file(path, idx_i32(y));
  expect_error([&] { quarry::load_dataset("idx:" + dir); }, {path, "label -1", "row 7", "[0, 65535]"});
  y[7] = 65536;
  write_file(path, idx_i32(y));
  expect_error([&] { quarry::load_dataset("idx:" + dir); }, {path, "label 65536", "row 7"});
  // 65535 is the largest label; int32 labels are fine. A class without training samples counts.
  y[7] = 65535;
  write_file(path, idx_i32(y));
  const Dataset d = quarry::load_dataset("idx:" + dir);
  EXPECT_EQ(d.num_classes, 65536);
  EXPECT_EQ(d.class_counts(d.test)[65535], 1);
  EXPECT_EQ(d.class_counts(d.train)[65535], 0);
}

TEST(Idx, BadImageShapes) {
  const std::string dir = write_idx_folder(tmp("toy"), false, false);
  const std::string path = dir + "/train-images-idx3-ubyte";
  write_file(path, idx_u8({50, 4, 5, 2}, std::vector<std::uint8_t>(50 * 40, 1)));
  expect_error([&] { quarry::load_dataset("idx:" + dir); }, {path, "[N, H, W]", "[50, 4, 5, 2]"});
  write_file(path, idx_u8({50, 20}, std::vector<std::uint8_t>(50 * 20, 1)));
  expect_error([&] { quarry::load_dataset("idx:" + dir); }, {path, "[50, 20]"});
  // Train and test images of different sizes.
  write_file(path, idx_u8({50, 5, 4}, images(50, 5, 4, 1)));
  expect_error([&] { quarry::load_dataset("idx:" + dir); },
               {dir + "/t10k-images-idx3-ubyte", "4x5", "1x5x4", "train-images-idx3-ubyte"});
}

// ================================================================ NPZ

#define SKIP_WITHOUT_NPZ() \
  if (!QUARRY_HAVE_NPZ) GTEST_SKIP() << "built with QUARRY_NPZ=OFF: no NPZ reader"

using Members = std::vector<ZipMember>;

// Members of an NPZ split: `n` images of h x w (x3 when rgb) with ids from `first_id`.
void add_split(Members& m, const std::string& split, int n, int h, int w, bool rgb, int first_id, int classes,
               bool column_labels) {
  const std::vector<std::int64_t> shape =
      rgb ? std::vector<std::int64_t>{n, h, w, 3} : std::vector<std::int64_t>{n, h, w};
  m.push_back({split + "_images.npy", npy(DType::u8, shape, images(n, h, w, rgb ? 3 : 1, first_id))});
  std::vector<std::int64_t> y;
  for (std::uint8_t v : labels(n, classes, first_id)) y.push_back(v);
  m.push_back(
      {split + "_labels.npy",
       npy(DType::i64, column_labels ? std::vector<std::int64_t>{n, 1} : std::vector<std::int64_t>{n}, y)});
}

TEST(Npz, GrayscaleWithColumnLabels) {
  SKIP_WITHOUT_NPZ();
  Members m;
  add_split(m, "train", 40, 6, 5, false, 0, 2, true);
  add_split(m, "val", 8, 6, 5, false, 100, 2, true);
  add_split(m, "test", 9, 6, 5, false, 150, 2, false);
  const std::string path = tmp("tinymnist.npz");
  write_file(path, zip(m));
  const Dataset d = quarry::load_dataset("npz:" + path);
  EXPECT_EQ(d.spec, "npz:" + path);
  EXPECT_EQ(d.name, "tinymnist");
  EXPECT_EQ(d.describe(), "40 train / 8 val / 9 test, 1x6x5, 2 classes");
  EXPECT_EQ(check_images(d.train, 1, 6, 5, 2), range(0, 40));  // the file's own val: nothing held out
  EXPECT_EQ(check_images(d.val, 1, 6, 5, 2), range(100, 108));
  EXPECT_EQ(check_images(d.test, 1, 6, 5, 2), range(150, 159));
}

TEST(Npz, RgbWithoutValidationHoldsItOut) {
  SKIP_WITHOUT_NPZ();
  Members m;
  add_split(m, "train", 60, 3, 3, true, 0, 5, true);
  add_split(m, "test", 7, 3, 3, true, 200, 5, true);
  const std::string path = tmp("rgb.npz");
  write_file(path, zip(m));
  DatasetOptions o;
  o.val_fraction = 0.25;
  const Dataset d = quarry::load_dataset("npz:" + path, o);
  EXPECT_EQ(d.name, "rgb");
  EXPECT_EQ(d.describe(), "45 train / 15 val / 7 test, 3x3x3, 5 classes");
  const std::vector<int> train = check_images(d.train, 3, 3, 3, 5), val = check_images(d.val, 3, 3, 3, 5);
  EXPECT_TRUE(ascending(train));
  EXPECT_TRUE(ascending(val));
  EXPECT_EQ(merged(train, val), range(0, 60));
  EXPECT_EQ(check_images(d.test, 3, 3, 3, 5), range(200, 207));
}

TEST(Npz, FloatImages) {
  SKIP_WITHOUT_NPZ();
  const std::vector<std::int64_t> y = {0, 1, 0, 1};
  auto write = [&](const std::vector<float>& train, const std::vector<float>& test) {
    const std::string path = tmp("f.npz");
    write_file(path, zip({{"train_images.npy", npy(DType::f32, {4, 1, 2}, train)},
                          {"train_labels.npy", npy(DType::i64, {4}, y)},
                          {"test_images.npy", npy(DType::f32, {1, 1, 2}, test)},
                          {"test_labels.npy", npy(DType::i64, {1}, std::vector<std::int64_t>{1})}}));
    return "npz:" + path;
  };
  // All in [0, 1]: taken as they are.
  const std::vector<float> unit = {0, 0.5f, 1, 0.25f, 0.75f, 0.125f, 1, 0};
  Dataset d = quarry::load_dataset(write(unit, {0.5f, 0.5f}));
  EXPECT_EQ(d.train.size() + d.val.size(), 4);
  EXPECT_EQ(d.test.x, (std::vector<float>{0.5f, 0.5f}));
  // Any value above 1 in any split: every split is divided by 255.
  d = quarry::load_dataset(write(unit, {255, 51}));
  EXPECT_EQ(d.test.x, (std::vector<float>{1.0f, 51 / 255.0f}));
  for (float v : d.train.x) EXPECT_LE(v, 1 / 255.0f);
  // Outside [0, 255], or NaN: an error naming the member and the image.
  expect_error(
      [&] {
        quarry::load_dataset(write(unit, {-0.5f, 0}));
      },
      {"f.npz:test_images", "image 0", "-0.5"});
  expect_error(
      [&] {
        quarry::load_dataset(write({0, 0, 0, 0, 0, 300, 0, 0}, {0, 0}));
      },
      {"f.npz:train_images", "image 2", "300"});
  expect_error(
      [&] {
        quarry::load_dataset(write(unit, {0, std::nanf("")}));
      },
      {"f.npz:test_images", "image 0"});
}

TEST(Npz, Errors) {
  SKIP_WITHOUT_NPZ();
  expect_error([&] { quarry::load_dataset("npz:" + tmp("absent.npz")); }, {tmp("absent.npz")});
  const std::string path = tmp("e.npz");
  // No test split.
  Members m;
  add_split(m, "train", 10, 2, 2, false, 0, 2, false);
  write_file(path, zip(m));
  expect_error([&] { quarry::load_dataset("npz:" + path); },
               {path, "test_images", "train_images, train_labels"});
  // val_images without val_labels.
  add_split(m, "test", 3, 2, 2, false, 50, 2, false);
  Members half = m;
  half.push_back({"val_images.npy", npy(DType::u8, {2, 2, 2}, images(2, 2, 2, 1))});
  write_file(path, zip(half));
  expect_error([&] { quarry::load_dataset("npz:" + path); }, {path, "val_images but no val_labels"});
  // Labels of another length; labels [N, 2]; float labels.
  Members bad = m;
  bad[1].data = npy(DType::i64, {9}, std::vector<std::int64_t>(9, 0));
  write_file(path, zip(bad));
  expect_error([&] { quarry::load_dataset("npz:" + path); },
               {path + ":train_labels", "9 labels", "e.npz:train_images has 10 images"});
  bad[1].data = npy(DType::i64, {10, 2}, std::vector<std::int64_t>(20, 0));
  write_file(path, zip(bad));
  expect_error([&] { quarry::load_dataset("npz:" + path); },
               {path + ":train_labels", "[N] or [N, 1]", "[10, 2]"});
  bad[1].data = npy(DType::f32, {10}, std::vector<float>(10, 0));
  write_file(path, zip(bad));
  expect_error([&] { quarry::load_dataset("npz:" + path); }, {path + ":train_labels", "integers", "float32"});
  // RGB test images with grayscale training images.
  bad = m;
  bad[2].data = npy(DType::u8, {3, 2, 2, 3}, images(3, 2, 2, 3));
  write_file(path, zip(bad));
  expect_error([&] { quarry::load_dataset("npz:" + path); }, {path + ":test_images", "3x2x2", "1x2x2"});
}

// ================================================================ NPY

// X [100, 3] float64 whose first feature is the row; y = row % 4 (int64).
std::string write_features(const std::string& dir, int n = 100) {
  std::vector<double> x;
  std::vector<std::int64_t> y;
  for (int r = 0; r < n; ++r) {
    for (int c = 0; c < 3; ++c) x.push_back(r + c / 10.0);
    y.push_back(r % 4);
  }
  quarry::write_npy(dir + "/X.npy", ArrayView{x.data(), DType::f64, {n, 3}});
  quarry::write_npy(dir + "/y.npy", ArrayView{y.data(), DType::i64, {n}});
  return "npy:" + dir + "/X.npy," + dir + "/y.npy";
}

std::vector<int> feature_rows(const Split& s) {
  std::vector<int> rows;
  for (std::int64_t k = 0; k < s.size(); ++k) {
    const int r = static_cast<int>(s.x[static_cast<std::size_t>(k * 3)]);
    rows.push_back(r);
    EXPECT_EQ(s.y[static_cast<std::size_t>(k)], r % 4);
    EXPECT_EQ(s.x[static_cast<std::size_t>(k * 3 + 2)], static_cast<float>(r + 0.2));
  }
  return rows;
}

TEST(Npy, FeaturesWithHeldOutSplits) {
  const std::string spec = write_features(tmp());
  const Dataset d = quarry::load_dataset(spec);  // test 20%, then val 10% of the rest
  EXPECT_EQ(d.spec, spec);
  EXPECT_EQ(d.name, "X");
  EXPECT_EQ(d.sample_shape, std::vector<std::int64_t>{3});
  EXPECT_EQ(d.describe(), "72 train / 8 val / 20 test, 3 features, 4 classes");
  const std::vector<int> train = feature_rows(d.train), val = feature_rows(d.val),
                         test = feature_rows(d.test);
  EXPECT_TRUE(ascending(train) && ascending(val) && ascending(test));
  EXPECT_EQ(merged(merged(train, val), test), range(0, 100));
  // source_row maps every sample back to its row of X.npy, also after a pool limit.
  for (const Split* s : {&d.train, &d.val, &d.test})
    for (std::int64_t k = 0; k < s->size(); ++k)
      EXPECT_EQ(s->source_row(k), feature_rows(*s)[static_cast<std::size_t>(k)]);
  DatasetOptions limited;
  limited.pool_limit = 30;
  const Dataset l = quarry::load_dataset(spec, limited);
  ASSERT_EQ(l.train.size(), 30);
  for (std::int64_t k = 0; k < 30; ++k)
    EXPECT_EQ(l.train.source_row(k), feature_rows(l.train)[static_cast<std::size_t>(k)]);

  DatasetOptions o;
  o.test_fraction = 0.5;
  o.val_fraction = 0;
  EXPECT_EQ(quarry::load_dataset(spec, o).describe(), "50 train / 0 val / 50 test, 3 features, 4 classes");
}

TEST(Npy, IntegerFeaturesAndColumnLabels) {
  const std::string dir = tmp();
  const std::vector<std::int16_t> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const std::vector<std::uint8_t> y = {0, 1, 1, 0, 2};
  quarry::write_npy(dir + "/feat.npy", ArrayView{x.data(), DType::i16, {5, 2}});
  quarry::write_npy(dir + "/lab.npy", ArrayView{y.data(), DType::u8, {5, 1}});
  DatasetOptions o;
  o.test_fraction = 0;
  o.val_fraction = 0;
  const Dataset d = quarry::load_dataset("npy:" + dir + "/feat.npy," + dir + "/lab.npy", o);
  EXPECT_EQ(d.name, "feat");
  EXPECT_EQ(d.num_classes, 3);
  EXPECT_EQ(d.train.x, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(d.train.y, (std::vector<std::int32_t>{0, 1, 1, 0, 2}));
}

TEST(Npy, Errors) {
  const std::string dir = tmp();
  const std::string spec = write_features(dir);
  const std::string xp = dir + "/X.npy", yp = dir + "/y.npy";
  auto load = [&] { quarry::load_dataset(spec); };
  // Non-finite features name the row.
  std::vector<float> x(40, 1.0f);
  x[2 * 4 + 1] = std::nanf("");
  quarry::write_npy(xp, ArrayView{x.data(), DType::f32, {10, 4}});
  std::vector<std::int32_t> y(10, 0);
  quarry::write_npy(yp, ArrayView{y.data(), DType::i32, {10}});
  expect_error(load, {xp, "row 2", "column 1", "NaN"});
  x[2 * 4 + 1] = 0;
  x[9 * 4 + 3] = -std::numeric_limits<float>::infinity();
  quarry::write_npy(xp, ArrayView{x.data(), DType::f32, {10, 4}});
  expect_error(load, {xp, "row 9", "infinite"});
  std::vector<double> big(40, 1.0);
  big[5 * 4] = 1e300;  // finite in float64, not in float32
  quarry::write_npy(xp, ArrayView{big.data(), DType::f64, {10, 4}});
  expect_error(load, {xp, "row 5", "float32"});
  x[9 * 4 + 3] = 0;
  quarry::write_npy(xp, ArrayView{x.data(), DType::f32, {10, 4}});
  // Bad labels name the row.
  y[6] = -3;
  quarry::write_npy(yp, ArrayView{y.data(), DType::i32, {10}});
  expect_error(load, {yp, "label -3", "row 6"});
  y[6] = 70000;
  quarry::write_npy(yp, ArrayView{y.data(), DType::i32, {10}});
  expect_error(load, {yp, "label 70000", "row 6", "[0, 65535]"});
  // Lengths, ranks, dtypes, files.
  quarry::write_npy(yp, ArrayView{y.data(), DType::i32, {9}});
  expect_error(load, {yp, "9 labels", "X.npy has 10 rows"});
  quarry::write_npy(yp, ArrayView{x.data(), DType::f32, {10}});
  expect_error(load, {yp, "integers"});
  quarry::write_npy(xp, ArrayView{x.data(), DType::f32, {40}});
  expect_error(load, {xp, "2-D", "[40]"});
  quarry::write_npy(xp, ArrayView{x.data(), DType::f32, {2, 5, 4}});
  expect_error(load, {xp, "2-D", "[2, 5, 4]"});
  fs::remove(xp);
  expect_error(load, {"cannot open " + xp});
  expect_error([&] { quarry::load_dataset("npy:" + yp); }, {"npy:X.npy,y.npy"});
  expect_error([&] { quarry::load_dataset("npy:," + yp); }, {"npy:X.npy,y.npy"});
}

// ================================================================ specs and options

TEST(Spec, UnknownPrefixListsTheForms) {
  expect_error([] { quarry::load_dataset("csv:data.csv"); },
               {"unknown dataset 'csv:data.csv'", "idx:DIR", "npz:FILE", "npy:X.npy,y.npy", "synthetic:N"});
  expect_error([] { quarry::load_dataset(""); }, {"unknown dataset ''"});
  expect_error([] { quarry::load_dataset("synthetics"); }, {"unknown dataset"});
  expect_error([] { quarry::load_dataset("synthetic:99"); }, {"synthetic:99", "N from 100 to 10000000", "99"});
  expect_error([] { quarry::load_dataset("synthetic:12x"); }, {"synthetic:12x", "whole number"});
  expect_error([] { quarry::load_dataset("synthetic:"); }, {"whole number"});
  expect_error([] { quarry::load_dataset("synthetic:-200"); }, {"whole number"});
}

TEST(Spec, OptionsAreChecked) {
  DatasetOptions o;
  o.val_fraction = 1;
  expect_error([&] { quarry::load_dataset("synthetic:100", o); }, {"val_fraction", "[0, 1)"});
  o = {};
  o.test_fraction = -0.1;
  expect_error([&] { quarry::load_dataset("synthetic:100", o); }, {"test_fraction"});
  o = {};
  o.pool_limit = -1;
  expect_error([&] { quarry::load_dataset("synthetic:100", o); }, {"pool_limit"});
}

TEST(Options, SameSeedSameSplitsOtherSeedOthers) {
  const std::string spec = write_features(tmp(), 400);
  DatasetOptions o;
  o.seed = 11;
  const Dataset a = quarry::load_dataset(spec, o), b = quarry::load_dataset(spec, o);
  EXPECT_TRUE(same(a.train, b.train) && same(a.val, b.val) && same(a.test, b.test));
  o.seed = 12;
  const Dataset c = quarry::load_dataset(spec, o);
  EXPECT_EQ(c.test.size(), a.test.size());
  EXPECT_FALSE(same(a.test, c.test));
  EXPECT_FALSE(same(a.val, c.val));
}

TEST(Options, PoolLimitKeepsASeededSubsetInFileOrder) {
  const std::string dir = write_idx_folder(tmp("toy"), true, true);
  DatasetOptions o;
  o.seed = 5;
  const Dataset full = quarry::load_dataset("idx:" + dir, o);
  o.pool_limit = 20;
  const Dataset d = quarry::load_dataset("idx:" + dir, o);
  EXPECT_EQ(d.train.size(), 20);
  EXPECT_TRUE(same(d.val, full.val));  // validation is held out before the limit
  EXPECT_TRUE(same(d.test, full.test));
  EXPECT_EQ(d.num_classes, 3);
  const std::vector<int> ids = check_images(d.train, 1, 4, 5, 3), all = check_images(full.train, 1, 4, 5, 3);
  EXPECT_TRUE(ascending(ids));
  EXPECT_TRUE(std::includes(all.begin(), all.end(), ids.begin(), ids.end()));
  EXPECT_TRUE(same(quarry::load_dataset("idx:" + dir, o).train, d.train));
  o.seed = 6;
  EXPECT_FALSE(same(quarry::load_dataset("idx:" + dir, o).train, d.train));
  // A limit at or above the pool's size keeps it whole.
  o.seed = 5;
  o.pool_limit = 45;
  EXPECT_TRUE(same(quarry::load_dataset("idx:" + dir, o).train, full.train));
}

// ================================================================ synthetic images

TEST(Synthetic, SizesClassesAndValues) {
  const Dataset d = quarry::synthetic_images(4000, 3);
  EXPECT_EQ(d.name, "synthetic");
  EXPECT_EQ(d.spec, "synthetic:4000");
  EXPECT_EQ(d.sample_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(d.num_classes, 4);
  EXPECT_EQ(d.describe(), "4000 train / 500 val / 1000 test, 1x28x28, 4 classes");
  for (const Split* s : {&d.train, &d.val, &d.test}) {
    ASSERT_EQ(s->x.size(), s->y.size() * 784);
    EXPECT_TRUE(std::all_of(s->x.begin(), s->x.end(), [](float v) { return v >= 0 && v <= 1; }));
  }
  // About 50/25/15/10 percent (4000 samples: a few standard deviations of slack).
  const std::vector<std::int64_t> counts = d.class_counts(d.train);
  const double share[4] = {0.50, 0.25, 0.15, 0.10};
  for (int c = 0; c < 4; ++c)
    EXPECT_NEAR(static_cast<double>(counts[c]) / 4000.0, share[c], 0.03) << "class " << c;
  // Images are not blank: every one has some bright pixels and some dark ones.
  for (std::int64_t i = 0; i < d.train.size(); i += 97) {
    const auto first = d.train.x.begin() + i * 784;
    const auto [lo, hi] = std::minmax_element(first, first + 784);
    EXPECT_LT(*lo, 0.3f) << i;
    EXPECT_GT(*hi - *lo, 0.15f) << i;
  }
}

TEST(Synthetic, DeterministicForASeed) {
  const Dataset a = quarry::synthetic_images(500, 42), b = quarry::synthetic_images(500, 42);
  EXPECT_TRUE(same(a.train, b.train) && same(a.val, b.val) && same(a.test, b.test));
  const Dataset c = quarry::synthetic_images(500, 43);
  EXPECT_FALSE(same(a.train, c.train));
  EXPECT_FALSE(same(a.test, c.test));
  // Each image depends only on (seed, split, index): a larger pool starts with the same images.
  const Dataset big = quarry::synthetic_images(800, 42);
  EXPECT_TRUE(std::equal(a.train.x.begin(), a.train.x.end(), big.train.x.begin()));
  EXPECT_TRUE(std::equal(a.train.y.begin(), a.train.y.end(), big.train.y.begin()));
  // The splits are different images.
  EXPECT_FALSE(std::equal(a.val.x.begin(), a.val.x.end(), a.train.x.begin()));
  expect_error([] { quarry::synthetic_images(0, 1); }, {"n >= 1"});
}

TEST(Synthetic, ThroughLoadDataset) {
  DatasetOptions o;
  o.seed = 9;
  const Dataset d = quarry::load_dataset("synthetic", o);
  EXPECT_EQ(d.spec, "synthetic");
  EXPECT_EQ(d.name, "synthetic");
  EXPECT_EQ(d.describe(), "4000 train / 500 val / 1000 test, 1x28x28, 4 classes");
  EXPECT_TRUE(same(d.train, quarry::synthetic_images(4000, 9).train));
  o.pool_limit = 150;
  const Dataset small = quarry::load_dataset("synthetic:400", o);
  EXPECT_EQ(small.spec, "synthetic:400");
  EXPECT_EQ(small.describe(), "150 train / 50 val / 100 test, 1x28x28, 4 classes");
}

// ================================================================ real data

const std::string kData = QUARRY_SHARED_DATA;

TEST(RealData, Mnist) {
  const std::string dir = kData + "/mnist";
  if (!fs::is_directory(dir)) GTEST_SKIP() << "MNIST under " << kData << " is absent";
  const Dataset d = quarry::load_dataset("idx:" + dir);
  EXPECT_EQ(d.name, "mnist");
  EXPECT_EQ(d.sample_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.train.size() + d.val.size(), 60000);
  EXPECT_EQ(d.val.size(), 6000);
  EXPECT_EQ(d.test.size(), 10000);
  std::vector<std::int64_t> counts = d.class_counts(d.train);
  const std::vector<std::int64_t> val = d.class_counts(d.val);
  for (std::size_t c = 0; c < counts.size(); ++c) counts[c] += val[c];
  EXPECT_EQ(counts, (std::vector<std::int64_t>{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}));
  const auto [lo, hi] = std::minmax_element(d.test.x.begin(), d.test.x.end());
  EXPECT_EQ(*lo, 0.0f);
  EXPECT_EQ(*hi, 1.0f);
}

TEST(RealData, PneumoniaMnist) {
  SKIP_WITHOUT_NPZ();
  const std::string path = kData + "/pneumoniamnist/pneumoniamnist.npz";
  if (!fs::exists(path)) GTEST_SKIP() << "PneumoniaMNIST under " << kData << " is absent";
  const Dataset d = quarry::load_dataset("npz:" + path);
  EXPECT_EQ(d.name, "pneumoniamnist");
  EXPECT_EQ(d.describe(), "3882 train / 524 val / 624 test, 1x28x28, 2 classes");
  EXPECT_EQ(d.class_counts(d.train), (std::vector<std::int64_t>{388, 3494}));
  DatasetOptions o;
  o.pool_limit = 1000;
  const Dataset limited = quarry::load_dataset("npz:" + path, o);
  EXPECT_EQ(limited.train.size(), 1000);
  EXPECT_TRUE(same(limited.val, d.val));
}

}  // namespace
