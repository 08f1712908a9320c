// Dataset readers: IDX folders (MNIST family), MedMNIST-style .npz files, NPY feature vectors
// and the synthetic image pool, turned into float32 splits with validated labels.
//
// Conventions of every reader:
// - Images become float32 in [0, 1], channels first (C x H x W) per sample. Integer images
//   (uint8 in practice) are divided by 255 and must lie in [0, 255]. Float images are taken as
//   they are when every float image array of the source lies in [0, 1], and divided by 255
//   otherwise (they must then lie in [0, 255]); one decision per source, so that the splits of
//   a file are scaled alike.
// - Labels are integers (any integer dtype), [N] or [N, 1], each in [0, 65535].
// - Rows in messages are 0-based, as numpy indexes them.
// - Random choices (held-out splits, the pool subset) come from the counter-based Philox stream
//   through a Fisher-Yates shuffle written out here, so a seed gives the same splits with every
//   compiler and standard library. Every split keeps its samples in their original file order.
#include "quarry/dataset.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "quarry/array.hpp"
#include "quarry/detail/hd.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

namespace fs = std::filesystem;

namespace {

constexpr std::int64_t kMaxLabel = 65535;
constexpr const char* kSpecForms = "idx:DIR, npz:FILE, npy:X.npy,y.npy, pool:X.npy, synthetic or synthetic:N";
constexpr std::int64_t kSyntheticDefault = 4000;
constexpr std::int64_t kSyntheticMax = 10000000;
constexpr std::int64_t kSyntheticMin = 100;

// ---------------------------------------------------------------- random choices

// Independent Philox streams of the loader's random choices.
enum Stream : std::uint32_t { kTestStream = 1, kValStream = 2, kPoolStream = 3 };

// A uniform integer in [0, bound) for draw `i` of `stream` (64 random bits scaled by a
// multiply-shift; the bias, below bound / 2^64, is immaterial here).
std::uint64_t uniform_below(std::uint64_t bound, std::uint64_t seed, std::uint32_t stream, std::uint64_t i) {
  const detail::Philox4 r = detail::philox4x32_10(
      static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32), stream, 0xDA7A5E7u,
      static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
  const std::uint64_t bits = (std::uint64_t{r.v[0]} << 32) | r.v[1];
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(bits) * bound) >> 64);
}

// k of the indices [0, n), chosen at random (a partial Fisher-Yates shuffle), in ascending order.
std::vector<std::int64_t> choose(std::int64_t n, std::int64_t k, std::uint64_t seed, std::uint32_t stream) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), std::int64_t{0});
  for (std::int64_t i = 0; i < k; ++i) {
    const std::int64_t j =
        i + static_cast<std::int64_t>(uniform_below(static_cast<std::uint64_t>(n - i), seed, stream,
                                                    static_cast<std::uint64_t>(i)));
    std::swap(idx[i], idx[j]);
  }
  idx.resize(static_cast<std::size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

Split take_rows(const Split& s, std::int64_t numel, const std::vector<std::int64_t>& rows) {
  Split out;
  out.x.resize(rows.size() * static_cast<std::size_t>(numel));
  out.y.resize(rows.size());
  out.rows.resize(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(s.x.begin() + rows[i] * numel, numel, out.x.begin() + static_cast<std::int64_t>(i) * numel);
    out.y[i] = s.y[static_cast<std::size_t>(rows[i])];
    out.rows[i] = s.source_row(rows[i]);
  }
  return out;
}

namespace {

// Moves a random `fraction` of `from` into the returned split: round(fraction * n) samples,
// at least one when fraction > 0 and never all of them (the rest must stay a training split).
Split hold_out(Split& from, std::int64_t numel, double fraction, std::uint64_t seed, std::uint32_t stream) {
  const std::int64_t n = from.size();
  std::int64_t k = std::llround(fraction * static_cast<double>(n));
  if (fraction > 0) k = std::max<std::int64_t>(k, 1);
  k = std::min<std::int64_t>(k, n - 1);
  if (k <= 0) return {};
  const std::vector<std::int64_t> chosen = choose(n, k, seed, stream);
  std::vector<std::int64_t> rest;
  rest.reserve(static_cast<std::size_t>(n - k));
  for (std::int64_t i = 0, c = 0; i < n; ++i) {
    if (c < k && chosen[c] == i)
      ++c;
    else
      rest.push_back(i);
  }
  Split held = take_rows(from, numel, chosen);
  from = take_rows(from, numel, rest);
  return held;
}

// ---------------------------------------------------------------- conversions

// Every element of `a` as float32, whatever its dtype (int64 and float64 rounded to nearest).
std::vector<float> to_float(const Array& a) {
  const std::size_t n = static_cast<std::size_t>(a.numel());
  std::vector<float> out(n);
  auto convert = [&](const auto* p, auto f) {
    for (std::size_t i = 0; i < n; ++i) out[i] = f(p[i]);
  };
  auto cast = [](auto v) { return static_cast<float>(v); };
  switch (a.dtype()) {
    case DType::u8:
      convert(a.as<std::uint8_t>(), cast);
      break;
    case DType::i8:
      convert(a.as<std::int8_t>(), cast);
      break;
    case DType::i16:
      convert(a.as<std::int16_t>(), cast);
      break;
    case DType::i32:
      convert(a.as<std::int32_t>(), cast);
      break;
    case DType::i64:
      convert(a.as<std::int64_t>(), cast);
      break;
    case DType::f32:
      convert(a.as<float>(), cast);
      break;
    case DType::f64:
      convert(a.as<double>(), cast);
      break;
    case DType::f16:
      convert(a.as<std::uint16_t>(), [](std::uint16_t h) { return detail::half_to_float(h); });
      break;
    case DType::bf16:
      convert(a.as<std::uint16_t>(), [](std::uint16_t h) { return detail::bfloat16_to_float(h); });
      break;
  }
  return out;
}

// Every element of an integer array as int64.
std::vector<std::int64_t> to_int64(const Array& a) {
  const std::size_t n = static_cast<std::size_t>(a.numel());
  std::vector<std::int64_t> out(n);
  auto convert = [&](const auto* p) {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::int64_t>(p[i]);
  };
  switch (a.dtype()) {
    case DType::u8:
      convert(a.as<std::uint8_t>());
      break;
    case DType::i8:
      convert(a.as<std::int8_t>());
      break;
    case DType::i16:
      convert(a.as<std::int16_t>());
      break;
    case DType::i32:
      convert(a.as<std::int32_t>());
      break;
    case DType::i64:
      convert(a.as<std::int64_t>());
      break;
    default:
      QUARRY_FAIL(a.source(), ": not an integer array (", dtype_name(a.dtype()), ")");
  }
  return out;
}

// "p.npz:train_images" for "data/p.npz:train_images": the file part of a source, for messages
// that already name another file of the same folder.
std::string file_name(const std::string& source) { return fs::path(source).filename().string(); }

std::string join_shape(const std::vector<std::int64_t>& shape, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? sep : "") + std::to_string(shape[i]);
  return s;
}

// Labels [N] or [N, 1] of any integer dtype, each in [0, 65535]; `expected` is the number of
// samples of `samples` (the images or features they label), named in the length error.
std::vector<std::int32_t> read_labels(const Array& a, std::int64_t expected, const std::string& samples,
                                      const char* what) {
  QUARRY_EXPECTS(!dtype_is_float(a.dtype()), a.source(), ": labels must be integers, got ",
                 dtype_name(a.dtype()));
  QUARRY_EXPECTS(a.rank() == 1 || (a.rank() == 2 && a.shape()[1] == 1), a.source(),
                 ": labels must be [N] or [N, 1], got shape ", shape_string(a.shape()));
  const std::int64_t n = a.shape()[0];
  QUARRY_EXPECTS(n == expected, a.source(), ": ", n, " labels but ", file_name(samples), " has ", expected,
                 " ", what);
  const std::vector<std::int64_t> v = to_int64(a);
  std::vector<std::int32_t> y(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    QUARRY_EXPECTS(v[i] >= 0 && v[i] <= kMaxLabel, a.source(), ": label ", v[i], " at row ", i,
                   " is outside [0, ", kMaxLabel, "]");
    y[i] = static_cast<std::int32_t>(v[i]);
  }
  return y;
}

// {C, H, W} of an image array [N, H, W] (C = 1) or [N, H, W, 3].
std::vector<std::int64_t> image_shape(const Array& a) {
  const auto& s = a.shape();
  QUARRY_EXPECTS(a.rank() == 3 || (a.rank() == 4 && s[3] == 3), a.source(),
                 ": images must be [N, H, W] (grayscale) or [N, H, W, 3] (RGB), got shape ", shape_string(s));
  QUARRY_EXPECTS(s[1] > 0 && s[2] > 0, a.source(), ": images of shape ", shape_string(s), " are empty");
  return {a.rank() == 4 ? 3 : 1, s[1], s[2]};
}

// Whether float images must be divided by 255: some float image array has a value above 1.
bool float_images_need_scaling(const std::vector<const Array*>& arrays) {
  for (const Array* a : arrays) {
    if (!dtype_is_float(a->dtype())) continue;
    for (float v : to_float(*a))
      if (v > 1.0f) return true;
  }
  return false;
}

// Images as float32 in [0, 1], C x H x W per sample (see the top of the file for the scaling).
std::vector<float> convert_images(const Array& a, bool scale_floats) {
  const std::vector<std::int64_t> chw = image_shape(a);
  std::vector<float> x = to_float(a);
  const bool scale = !dtype_is_float(a.dtype()) || scale_floats;
  const float hi = scale ? 255.0f : 1.0f;
  const std::int64_t per_image = chw[0] * chw[1] * chw[2];
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float v = x[i];
    // Written so that NaN fails too.
    if (!(v >= 0.0f && v <= hi))
      QUARRY_FAIL(a.source(), ": image ", static_cast<std::int64_t>(i) / per_image, " has a value (", v,
                  ") outside [0, ", hi, "]");
    if (scale) x[i] = v / 255.0f;
  }
  if (chw[0] == 3) {  // H x W x C -> C x H x W, one image at a time
    const std::int64_t hw = chw[1] * chw[2];
    std::vector<float> tmp(static_cast<std::size_t>(per_image));
    for (std::size_t first = 0; first < x.size(); first += static_cast<std::size_t>(per_image)) {
      float* img = x.data() + first;
      for (std::int64_t p = 0; p < hw; ++p)
        for (std::int64_t c = 0; c < 3; ++c) tmp[c * hw + p] = img[p * 3 + c];
      std::copy(tmp.begin(), tmp.end(), img);
    }
  }
  return x;
}

// One split from an image array and its labels; the sample shape must agree with `shape`
// (set by the first split read, whose source is `first`).
Split image_split(const Array& images, const Array& labels, bool scale_floats,
                  std::vector<std::int64_t>& shape, std::string& first) {
  const std::vector<std::int64_t> chw = image_shape(images);
  if (shape.empty()) {
    shape = chw;
    first = images.source();
  }
  QUARRY_EXPECTS(chw == shape, images.source(), ": images are ", join_shape(chw, "x"), " but ",
                 file_name(first), " has ", join_shape(shape, "x"));
  Split s;
  s.y = read_labels(labels, images.shape()[0], images.source(), "images");
  s.x = convert_images(images, scale_floats);
  return s;
}

// ---------------------------------------------------------------- the common end

void check_options(const DatasetOptions& o) {
  QUARRY_EXPECTS(o.val_fraction >= 0 && o.val_fraction < 1, "dataset: val_fraction must lie in [0, 1), got ",
                 o.val_fraction);
  QUARRY_EXPECTS(o.test_fraction >= 0 && o.test_fraction < 1,
                 "dataset: test_fraction must lie in [0, 1), got ", o.test_fraction);
  QUARRY_EXPECTS(o.pool_limit >= 0, "dataset: pool_limit must be >= 0 (0 keeps every sample), got ",
                 o.pool_limit);
}

// Holds out validation where the layout has none, counts the classes, applies the pool limit.
void finish(Dataset& d, const DatasetOptions& o, bool hold_out_val) {
  QUARRY_EXPECTS(d.train.size() > 0, d.spec, ": the training split is empty");
  const std::int64_t numel = d.sample_numel();
  if (hold_out_val) d.val = hold_out(d.train, numel, o.val_fraction, o.seed, kValStream);
  std::int32_t max_label = -1;
  for (const Split* s : {&d.train, &d.val, &d.test})
    for (std::int32_t y : s->y) max_label = std::max(max_label, y);
  d.num_classes = std::max(d.num_classes, static_cast<int>(max_label) + 1);
  if (o.pool_limit > 0 && o.pool_limit < d.train.size())
    d.train = take_rows(d.train, numel, choose(d.train.size(), o.pool_limit, o.seed, kPoolStream));
}

// ---------------------------------------------------------------- the readers

// DIR/base, or DIR/base.gz when only that exists.
std::string find_idx(const fs::path& dir, const std::string& base) {
  std::error_code ec;
  for (const std::string& f : {base, base + ".gz"})
    if (fs::is_regular_file(dir / f, ec)) return (dir / f).string();
  QUARRY_FAIL(dir.string(), ": found neither ", base, " nor ", base, ".gz");
}

// "mnist" for "data/mnist/", and for "." inside it.
std::string folder_name(const fs::path& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

Dataset load_idx(const std::string& spec, const std::string& path, const DatasetOptions& o) {
  QUARRY_EXPECTS(!path.empty(), "dataset '", spec, "': expected idx:DIR");
  std::error_code ec;
  QUARRY_EXPECTS(fs::is_directory(path, ec), spec, ": ", path, " is not a folder");
  const fs::path dir(path);
  Dataset d;
  d.spec = spec;
  d.name = folder_name(dir);
  std::string first;
  {
    const Array x = read_idx(find_idx(dir, "train-images-idx3-ubyte"));
    const Array y = read_idx(find_idx(dir, "train-labels-idx1-ubyte"));
    d.train = image_split(x, y, float_images_need_scaling({&x}), d.sample_shape, first);
  }
  {
    const Array x = read_idx(find_idx(dir, "t10k-images-idx3-ubyte"));
    const Array y = read_idx(find_idx(dir, "t10k-labels-idx1-ubyte"));
    d.test = image_split(x, y, float_images_need_scaling({&x}), d.sample_shape, first);
  }
  finish(d, o, true);
  return d;
}

Dataset load_npz(const std::string& spec, const std::string& path, const DatasetOptions& o) {
  QUARRY_EXPECTS(!path.empty(), "dataset '", spec, "': expected npz:FILE");
  const std::vector<std::string> members = npz_members(path);
  auto has = [&](const std::string& m) {
    return std::find(members.begin(), members.end(), m) != members.end();
  };
  std::string list;
  for (const std::string& m : members) list += (list.empty() ? "" : ", ") + m;
  for (const char* m : {"train_images", "train_labels", "test_images", "test_labels"})
    QUARRY_EXPECTS(
        has(m), path, ": no member '", m, "' (members: ", list.empty() ? "none" : list,
        "; expected train_images, train_labels, test_images, test_labels and optionally val_images, "
        "val_labels)");
  const bool has_val = has("val_images") || has("val_labels");
  QUARRY_EXPECTS(has("val_images") == has("val_labels"), path, ": has ",
                 has("val_images") ? "val_images but no val_labels" : "val_labels but no val_images");

  Dataset d;
  d.spec = spec;
  d.name = fs::path(path).stem().string();
  std::vector<Array> images, labels;
  std::vector<const Array*> all_images;
  for (const char* split : {"train", "val", "test"}) {
    if (std::string(split) == "val" && !has_val) continue;
    images.push_back(read_npz_member(path, std::string(split) + "_images"));
    labels.push_back(read_npz_member(path, std::string(split) + "_labels"));
  }
  for (const Array& a : images) all_images.push_back(&a);
  const bool scale = float_images_need_scaling(all_images);
  std::string first;
  std::size_t i = 0;
  d.train = image_split(images[i], labels[i], scale, d.sample_shape, first);
  ++i;
  if (has_val) {
    d.val = image_split(images[i], labels[i], scale, d.sample_shape, first);
    ++i;
  }
  d.test = image_split(images[i], labels[i], scale, d.sample_shape, first);
  finish(d, o, !has_val);
  return d;
}

Dataset load_npy(const std::string& spec, const std::string& paths, const DatasetOptions& o) {
  // The first comma separates the two files.
  const std::size_t comma = paths.find(',');
  QUARRY_EXPECTS(comma != std::string::npos && comma > 0 && comma + 1 < paths.size(), "dataset '", spec,
                 "': expected npy:X.npy,y.npy (features, then labels)");
  const std::string xpath = paths.substr(0, comma), ypath = paths.substr(comma + 1);
  const Array xa = read_npy(xpath);
  QUARRY_EXPECTS(xa.rank() == 2 && xa.shape()[1] > 0, xa.source(),
                 ": features must be 2-D [N, D] with D >= 1, got shape ", shape_string(xa.shape()));
  const Array ya = read_npy(ypath);
  const std::int64_t n = xa.shape()[0], dims = xa.shape()[1];

  Dataset d;
  d.spec = spec;
  d.name = fs::path(xpath).stem().string();
  d.sample_shape = {dims};
  d.train.y = read_labels(ya, n, xa.source(), "rows");
  d.train.x = to_float(xa);
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t c = 0; c < dims; ++c) {
      const float v = d.train.x[static_cast<std::size_t>(r * dims + c)];
      if (!std::isfinite(v))
        QUARRY_FAIL(xa.source(), ": row ", r, ", column ", c, " is ",
                    std::isnan(v)              ? "NaN"
                    : xa.dtype() == DType::f64 ? "infinite or beyond float32's range"
                                               : "infinite",
                    " (features must be finite)");
    }
  d.test = hold_out(d.train, dims, o.test_fraction, o.seed, kTestStream);
  finish(d, o, true);
  return d;
}

// An unlabeled pool: features [N, D] or images [N, H, W] / [N, H, W, 3]. Its labels are -1 (none);
// it has no validation or test split and no classes of its own.
Dataset load_pool(const std::string& spec, const std::string& path, const DatasetOptions& o) {
  QUARRY_EXPECTS(!path.empty() && path.find(',') == std::string::npos, "dataset '", spec,
                 "': expected pool:X.npy (one file of features [N, D] or images [N, H, W] / [N, H, W, 3])");
  const Array xa = read_npy(path);
  Dataset d;
  d.spec = spec;
  d.name = fs::path(path).stem().string();
  QUARRY_EXPECTS(xa.rank() >= 2 && xa.shape()[0] > 0, xa.source(),
                 ": the pool must have at least one row, got shape ", shape_string(xa.shape()));
  if (xa.rank() == 2) {
    const std::int64_t n = xa.shape()[0], dims = xa.shape()[1];
    QUARRY_EXPECTS(dims > 0, xa.source(), ": features must be [N, D] with D >= 1, got shape ", shape_string(xa.shape()));
    d.sample_shape = {dims};
    d.train.x = to_float(xa);
    for (std::size_t i = 0; i < d.train.x.size(); ++i)
      if (!std::isfinite(d.train.x[i]))
        QUARRY_FAIL(xa.source(), ": row ", static_cast<std::int64_t>(i) / dims, ", column ",
                    static_cast<std::int64_t>(i) % dims, " is not finite (features must be finite)");
    d.train.y.assign(static_cast<std::size_t>(n), -1);
  } else {
    d.sample_shape = image_shape(xa);
    d.train.x = convert_images(xa, float_images_need_scaling({&xa}));
    d.train.y.assign(static_cast<std::size_t>(xa.shape()[0]), -1);
  }
  if (o.pool_limit > 0 && o.pool_limit < d.train.size())
    d.train = take_rows(d.train, d.sample_numel(), choose(d.train.size(), o.pool_limit, o.seed, kPoolStream));
  return d;
}

Dataset load_synthetic(const std::string& spec, const std::string& count, const DatasetOptions& o) {
  std::int64_t n = kSyntheticDefault;
  if (spec != "synthetic") {
    const bool digits = !count.empty() && count.size() <= 12 &&
                        std::all_of(count.begin(), count.end(), [](char c) { return c >= '0' && c <= '9'; });
    QUARRY_EXPECTS(digits, "dataset '", spec, "': expected synthetic or synthetic:N with N a whole number");
    n = std::stoll(count);
  }
  QUARRY_EXPECTS(n >= kSyntheticMin && n <= kSyntheticMax, "dataset '", spec, "': the synthetic pool takes N from ",
                 kSyntheticMin, " to ", kSyntheticMax, " training images, got ", n);
  Dataset d = synthetic_images(n, o.seed);
  d.spec = spec;
  finish(d, o, false);
  return d;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

// ---------------------------------------------------------------- Dataset

std::int64_t Dataset::sample_numel() const {
  if (sample_shape.empty()) return 0;
  std::int64_t n = 1;
  for (std::int64_t d : sample_shape) n *= d;
  return n;
}

std::string Dataset::describe() const {
  std::string s = std::to_string(train.size()) + " train / " + std::to_string(val.size()) + " val / " +
                  std::to_string(test.size()) + " test, ";
  s += is_image() ? join_shape(sample_shape, "x") : std::to_string(sample_numel()) + " features";
  if (num_classes == 0) return s + ", unlabeled";
  return s + ", " + std::to_string(num_classes) + (num_classes == 1 ? " class" : " classes");
}

std::vector<std::int64_t> Dataset::class_counts(const Split& split) const {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(std::max(num_classes, 0)), 0);
  for (std::size_t i = 0; i < split.y.size(); ++i) {
    const std::int32_t y = split.y[i];
    QUARRY_EXPECTS(y >= 0 && y < num_classes, name, ": label ", y, " at row ", i, " is outside [0, ",
                   num_classes, ")");
    ++counts[static_cast<std::size_t>(y)];
  }
  return counts;
}

Dataset load_dataset(const std::string& spec, const DatasetOptions& options) {
  check_options(options);
  if (starts_with(spec, "idx:")) return load_idx(spec, spec.substr(4), options);
  if (starts_with(spec, "npz:")) return load_npz(spec, spec.substr(4), options);
  if (starts_with(spec, "npy:")) return load_npy(spec, spec.substr(4), options);
  if (starts_with(spec, "pool:")) return load_pool(spec, spec.substr(5), options);
  if (spec == "synthetic" || starts_with(spec, "synthetic:"))
    return load_synthetic(spec, spec == "synthetic" ? "" : spec.substr(10), options);
  QUARRY_USAGE_FAIL("unknown dataset '", quote_input(spec, 200), "': expected ", kSpecForms);
}

}  // namespace quarry
