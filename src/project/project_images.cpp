// The images of a batch, rendered to PNG (libpng) for people and for Label Studio: a pool of
// images held in arrays (NPZ, IDX, NPY, the synthetic pool) has no files of its own to show.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <png.h>

#include "project/project_internal.hpp"
#include "quarry/error.hpp"

namespace quarry::project_detail {

namespace {

// libpng reports errors through a longjmp; the message is kept and an Error thrown after it.
struct PngWriter {
  std::string bytes, error;
};

void png_append(png_structp png, png_bytep data, png_size_t n) {
  auto* w = static_cast<PngWriter*>(png_get_io_ptr(png));
  w->bytes.append(reinterpret_cast<const char*>(data), n);
}
void png_flush(png_structp) {}
void png_fail(png_structp png, png_const_charp msg) {
  static_cast<PngWriter*>(png_get_error_ptr(png))->error = msg;
  png_longjmp(png, 1);
}
void png_warn(png_structp, png_const_charp) {}

// 8-bit pixels (interleaved channels, rows top to bottom) as a PNG file's bytes.
std::string encode_png(const std::vector<std::uint8_t>& pixels, int width, int height, int channels) {
  PngWriter w;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_fail, png_warn);
  QUARRY_EXPECTS(png, "libpng: cannot create a writer");
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows(static_cast<std::size_t>(height));
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    QUARRY_FAIL("libpng: ", w.error);
  }
  QUARRY_EXPECTS(info, "libpng: cannot create an info struct");
  png_set_write_fn(png, &w, png_append, png_flush);
  png_set_compression_level(png, 6);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y)
    rows[static_cast<std::size_t>(y)] =
        const_cast<png_bytep>(pixels.data()) + static_cast<std::size_t>(y) * static_cast<std::size_t>(width * channels);
  png_write_image(png, rows.data());
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return std::move(w.bytes);
}

}  // namespace

std::string image_png(const Dataset& data, std::int64_t index) {
  QUARRY_EXPECTS(data.is_image(), data.spec, ": samples of shape ", shape_string(data.sample_shape),
                 " are not images");
  const int channels = static_cast<int>(data.sample_shape[0]);
  const int height = static_cast<int>(data.sample_shape[1]), width = static_cast<int>(data.sample_shape[2]);
  QUARRY_EXPECTS(channels == 1 || channels == 3, data.spec, ": images of ", channels,
                 " channels cannot be shown (1 or 3)");
  const std::size_t plane = static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
  const float* x = data.train.x.data() + static_cast<std::size_t>(index) * plane * static_cast<std::size_t>(channels);
  // Images are held scaled to [0, 1]; other ranges (a float pool) are stretched to the image's own.
  float lo = 0.0f, hi = 1.0f;
  const auto [mn, mx] = std::minmax_element(x, x + plane * static_cast<std::size_t>(channels));
  if (*mn < 0.0f || *mx > 1.0f) {
    lo = *mn;
    hi = *mx > *mn ? *mx : *mn + 1.0f;
  }
  std::vector<std::uint8_t> pixels(plane * static_cast<std::size_t>(channels));
  for (std::size_t p = 0; p < plane; ++p)
    for (int c = 0; c < channels; ++c) {
      const float v = x[static_cast<std::size_t>(c) * plane + p];
      const float t = std::isfinite(v) ? (v - lo) / (hi - lo) : 0.0f;
      pixels[p * static_cast<std::size_t>(channels) + static_cast<std::size_t>(c)] =
          static_cast<std::uint8_t>(std::lround(std::clamp(t, 0.0f, 1.0f) * 255.0f));
    }
  return encode_png(pixels, width, height, channels);
}

std::string base64(const std::string& bytes) {
  static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) |
                            (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8) | std::uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += digits[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    std::uint32_t v = std::uint32_t(std::uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) v |= std::uint32_t(std::uint8_t(bytes[i + 1])) << 8;
    out += digits[(v >> 18) & 63];
    out += digits[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? digits[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::vector<BatchImage> write_batch_images(const std::string& dir, int number, const Dataset& data,
                                           const std::vector<std::int64_t>& index) {
  const std::string folder_name = fmt::format("{:04d}", number);
  const std::string folder = path_in(path_in(dir, "batches"), folder_name);
  std::error_code ec;
  fs::create_directories(folder, ec);
  QUARRY_EXPECTS(!ec, folder, ": cannot create the folder of the batch's images: ", ec.message());
  std::vector<BatchImage> out;
  out.reserve(index.size());
  for (const std::int64_t i : index) {
    BatchImage im;
    im.png = image_png(data, i);
    im.relative = fmt::format("batches/{}/{}.png", folder_name, i);
    // Written whole under a temporary name and renamed: a reader never sees half an image. The
    // images can be rendered again from the pool, so they are flushed once, together, below.
    const std::string path = path_in(folder, std::to_string(i) + ".png"), tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    QUARRY_EXPECTS(f, tmp, ": cannot write the image: ", std::strerror(errno));
    const bool ok = std::fwrite(im.png.data(), 1, im.png.size(), f) == im.png.size();
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int err = errno;
      std::remove(tmp.c_str());
      QUARRY_FAIL(path, ": cannot write the image: ", std::strerror(err));
    }
    out.push_back(std::move(im));
  }
  if (const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY); fd >= 0) {
    ::syncfs(fd);
    ::close(fd);
  }
  return out;
}

}  // namespace quarry::project_detail
