// The built-in image pool: 28x28 grayscale shapes in 4 imbalanced classes.
//
//   class 0  ring            about 50%
//   class 1  cross (plus)    about 25%
//   class 2  filled square   about 15%
//   class 3  diagonal bar    about 10%
//
// Each image: a background level, the shape (random position, size, stroke, small rotation;
// anti-aliased from a signed distance), 0 to 3 pieces of clutter (small blobs and short
// strokes), sometimes an occluding patch of background, then Gaussian noise, clipped to
// [0, 1]. About 14% of the images are made genuinely ambiguous, in equal parts:
//   faint       the shape at an eighth to a fifth of the usual contrast, in stronger noise;
//   occluded    a large patch hides most of the shape;
//   overlaid    a second, weaker shape of another class drawn over it (the label is the
//               stronger one).
// The rest are recognisable but varied enough that a small CNN needs a few thousand labels.
//
// Every random number is a Philox draw keyed by the seed, with (split, sample, stream, draw) as
// the counter, so an image depends only on (seed, split, sample): the pool is the same on any
// machine and for any thread count, and growing n keeps the first images.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/parallel.hpp"
#include "quarry/dataset.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"

namespace quarry {

namespace {

constexpr int kSide = 28;
constexpr int kPixels = kSide * kSide;
constexpr int kClasses = 4;
constexpr double kPi = 3.14159265358979323846;
// Cumulative class shares: ring, cross, square, bar.
constexpr double kClassCdf[kClasses] = {0.50, 0.75, 0.90, 1.00};
constexpr double kAmbiguousShare = 0.14;

enum Kind { kRing = 0, kCross = 1, kSquare = 2, kBar = 3 };

// The random numbers of one image. Stream 0 holds the per-image draws (numbered in the order
// the generator asks for them), stream 1 the pixel noise (one Philox block per 4 pixels).
class ImageRng {
 public:
  ImageRng(std::uint64_t seed, std::uint32_t split, std::uint64_t sample)
      : k0_(static_cast<std::uint32_t>(seed)),
        k1_(static_cast<std::uint32_t>(seed >> 32)),
        c0_(static_cast<std::uint32_t>(sample)),
        c1_(static_cast<std::uint32_t>(sample >> 32)),
        split_(split) {}

  /// The next uniform in (0, 1).
  double uniform() { return to_unit(block(0, next_++).v[0]); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// A uniform integer in [0, n).
  int below(int n) { return std::min(n - 1, static_cast<int>(uniform() * n)); }
  bool chance(double p) { return uniform() < p; }

  /// Four standard normals for pixels 4i .. 4i + 3 (Box-Muller on both pairs).
  void normals4(std::uint32_t i, double out[4]) const {
    const detail::Philox4 r = block(1, i);
    for (int k = 0; k < 2; ++k) {
      const double radius = std::sqrt(-2.0 * std::log(to_unit(r.v[2 * k])));
      const double angle = 2.0 * kPi * to_unit(r.v[2 * k + 1]);
      out[2 * k] = radius * std::cos(angle);
      out[2 * k + 1] = radius * std::sin(angle);
    }
  }

 private:
  static double to_unit(std::uint32_t v) { return (static_cast<double>(v) + 0.5) / 4294967296.0; }
  detail::Philox4 block(std::uint32_t stream, std::uint32_t draw) const {
    return detail::philox4x32_10(c0_, c1_, (split_ << 8) | stream, draw, k0_, k1_);
  }

  std::uint32_t k0_, k1_, c0_, c1_, split_;
  std::uint32_t next_ = 0;
};

// ---------------------------------------------------------------- geometry

// Signed distance (negative inside) of a centred box with half-sides hx, hy.
double box(double u, double v, double hx, double hy) {
  const double dx = std::abs(u) - hx, dy = std::abs(v) - hy;
  const double ox = std::max(dx, 0.0), oy = std::max(dy, 0.0);
  const double outside = std::sqrt(ox * ox + oy * oy);
  return outside + std::min(std::max(dx, dy), 0.0);
}

// Pixel coverage from a signed distance: a one-pixel anti-aliased edge.
double coverage(double d) { return std::clamp(0.5 - d, 0.0, 1.0); }

// A shape placed in the image.
struct Shape {
  Kind kind;
  double cx, cy;     // centre
  double size;       // ring radius, cross arm, square half-side, bar half-length
  double width;      // stroke width (ring, cross, bar)
  double aspect;     // ring ellipticity, square side ratio
  double angle;      // rotation (radians)
  double intensity;  // contrast over the background
};

// Signed distance of pixel (x, y) to the shape; c, sn: the cosine and sine of its angle.
double distance(const Shape& s, double c, double sn, double x, double y) {
  const double dx = x - s.cx, dy = y - s.cy;
  const double u = c * dx + sn * dy, v = -sn * dx + c * dy;  // shape-local coordinates
  switch (s.kind) {
    case kRing: {
      const double a = u / s.aspect, b = v * s.aspect;
      const double r = std::sqrt(a * a + b * b);
      return std::abs(r - s.size) - 0.5 * s.width;
    }
    case kCross:
      return std::min(box(u, v, s.size, 0.5 * s.width), box(u, v, 0.5 * s.width, s.size));
    case kSquare:
      return box(u, v, s.size * s.aspect, s.size / s.aspect);
    case kBar:
      return box(u, v, s.size, 0.5 * s.width);
  }
  return 1e9;
}

// A shape of class `kind` at a random place and size.
Shape random_shape(Kind kind, ImageRng& rng) {
  Shape s{};
  s.kind = kind;
  s.cx = rng.uniform(9.0, 18.0);
  s.cy = rng.uniform(9.0, 18.0);
  s.width = rng.uniform(1.6, 3.2);
  s.aspect = 1.0;
  s.intensity = rng.uniform(0.55, 1.0);
  switch (kind) {
    case kRing:
      s.size = rng.uniform(4.5, 9.0);
      s.aspect = rng.uniform(0.85, 1.18);
      s.angle = rng.uniform(0.0, kPi);
      break;
    case kCross:  // a plus sign, close to upright
      s.size = rng.uniform(5.0, 10.0);
      s.angle = rng.uniform(-0.35, 0.35);
      break;
    case kSquare:
      s.size = rng.uniform(3.5, 7.5);
      s.aspect = rng.uniform(0.9, 1.1);
      s.angle = rng.uniform(-0.5, 0.5);
      break;
    case kBar:  // one stroke along either diagonal, give or take 15 degrees
      s.size = rng.uniform(7.0, 12.0);
      s.angle = (rng.chance(0.5) ? 0.25 : 0.75) * kPi + rng.uniform(-0.26, 0.26);
      break;
  }
  return s;
}

// Draws `s` over the canvas (the brighter value wins).
void draw(const Shape& s, double background, float* img) {
  const double reach = s.size * 1.5 + s.width + 2.0;  // bounding radius, generous
  const int x0 = std::max(0, static_cast<int>(s.cx - reach)),
            x1 = std::min(kSide - 1, static_cast<int>(s.cx + reach));
  const int y0 = std::max(0, static_cast<int>(s.cy - reach)),
            y1 = std::min(kSide - 1, static_cast<int>(s.cy + reach));
  const double c = std::cos(s.angle), sn = std::sin(s.angle);
  for (int y = y0; y <= y1; ++y)
    for (int x = x0; x <= x1; ++x) {
      const double v = background + s.intensity * coverage(distance(s, c, sn, x, y));
      float& p = img[y * kSide + x];
      p = std::max(p, static_cast<float>(v));
    }
}

// Clutter: a small blob or a short stroke, anywhere.
void draw_clutter(ImageRng& rng, double background, float* img) {
  const double x = rng.uniform(1.0, 27.0), y = rng.uniform(1.0, 27.0);
  const double intensity = rng.uniform(0.3, 0.8);
  if (rng.chance(0.5)) {  // blob: a Gaussian bump
    const double sigma = rng.uniform(0.7, 1.6);
    for (int py = 0; py < kSide; ++py)
      for (int px = 0; px < kSide; ++px) {
        const double r2 = (px - x) * (px - x) + (py - y) * (py - y);
        if (r2 > 16 * sigma * sigma) continue;
        float& p = img[py * kSide + px];
        p = std::max(p, static_cast<float>(background + intensity * std::exp(-0.5 * r2 / (sigma * sigma))));
      }
  } else {  // a short stroke, too short to pass for a bar
    Shape stroke{};
    stroke.kind = kBar;
    stroke.cx = x;
    stroke.cy = y;
    stroke.size = rng.uniform(1.5, 3.0);
    stroke.width = rng.uniform(0.8, 1.3);
    stroke.aspect = 1.0;
    stroke.angle = rng.uniform(0.0, kPi);
    stroke.intensity = intensity;
    draw(stroke, background, img);
  }
}

// Covers a rectangle with the background level (noise comes after, so it blends in).
void occlude(double cx, double cy, double w, double h, double background, float* img) {
  const int x0 = std::max(0, static_cast<int>(std::lround(cx - w / 2)));
  const int x1 = std::min(kSide, static_cast<int>(std::lround(cx + w / 2)));
  const int y0 = std::max(0, static_cast<int>(std::lround(cy - h / 2)));
  const int y1 = std::min(kSide, static_cast<int>(std::lround(cy + h / 2)));
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) img[y * kSide + x] = static_cast<float>(background);
}

// Image `sample` of split `split` into img[784]; returns its label.
std::int32_t render(std::uint64_t seed, std::uint32_t split, std::uint64_t sample, float* img) {
  ImageRng rng(seed, split, sample);
  const double u_class = rng.uniform();
  int label = 0;
  while (label + 1 < kClasses && u_class > kClassCdf[label]) ++label;
  const double u_kind = rng.uniform();
  const bool ambiguous = u_kind < kAmbiguousShare;
  const int how = ambiguous ? std::min(2, static_cast<int>(u_kind / kAmbiguousShare * 3)) : -1;
  enum { kFaint = 0, kOccluded = 1, kOverlaid = 2 };

  const double background = rng.uniform(0.0, 0.15);
  double sigma = rng.uniform(0.05, 0.16);
  std::fill(img, img + kPixels, static_cast<float>(background));

  Shape shape = random_shape(static_cast<Kind>(label), rng);
  if (how == kFaint) {
    shape.intensity *= rng.uniform(0.12, 0.2);
    sigma = rng.uniform(0.12, 0.18);
  }
  draw(shape, background, img);
  if (how == kOverlaid) {
    Shape other = random_shape(static_cast<Kind>((label + 1 + rng.below(kClasses - 1)) % kClasses), rng);
    other.cx = shape.cx + rng.uniform(-3.0, 3.0);
    other.cy = shape.cy + rng.uniform(-3.0, 3.0);
    other.intensity = shape.intensity * rng.uniform(0.7, 0.9);
    draw(other, background, img);
  }
  const int clutter = rng.below(4);
  for (int i = 0; i < clutter; ++i) draw_clutter(rng, background, img);
  if (how == kOccluded) {  // most of the shape hidden
    occlude(shape.cx + rng.uniform(-2.5, 2.5), shape.cy + rng.uniform(-2.5, 2.5), rng.uniform(11.0, 16.0),
            rng.uniform(11.0, 16.0), background, img);
  } else if (rng.chance(0.3)) {  // a small patch over part of the shape
    occlude(shape.cx + rng.uniform(-shape.size, shape.size), shape.cy + rng.uniform(-shape.size, shape.size),
            rng.uniform(3.0, 8.0), rng.uniform(3.0, 8.0), background, img);
  }

  double noise[4];
  for (int p = 0; p < kPixels; p += 4) {
    rng.normals4(static_cast<std::uint32_t>(p / 4), noise);
    for (int k = 0; k < 4; ++k)
      img[p + k] = std::clamp(static_cast<float>(img[p + k] + sigma * noise[k]), 0.0f, 1.0f);
  }
  return label;
}

Split render_split(std::uint64_t seed, std::uint32_t split, std::int64_t n) {
  Split s;
  s.x.resize(static_cast<std::size_t>(n) * kPixels);
  s.y.resize(static_cast<std::size_t>(n));
  parallel_blocks(n, n >= 256, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t i = first; i < last; ++i)
      s.y[static_cast<std::size_t>(i)] = render(seed, split, static_cast<std::uint64_t>(i),
                                                s.x.data() + static_cast<std::size_t>(i) * kPixels);
  });
  return s;
}

}  // namespace

Dataset synthetic_images(std::int64_t n, std::uint64_t seed) {
  QUARRY_EXPECTS(n >= 1, "synthetic images: need n >= 1 training images, got ", n);
  Dataset d;
  d.spec = "synthetic:" + std::to_string(n);
  d.name = "synthetic";
  d.sample_shape = {1, kSide, kSide};
  d.num_classes = kClasses;
  d.train = render_split(seed, 0, n);
  d.val = render_split(seed, 1, n / 8);
  d.test = render_split(seed, 2, n / 4);
  return d;
}

}  // namespace quarry
