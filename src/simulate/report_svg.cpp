// What a simulation reports, part 4: curves.svg, the learning curves (accuracy and balanced
// accuracy against labels, the mean per strategy with its 95% bootstrap interval as a band (+-1
// std with fewer than two repeats: none), the target (the baseline's isotonic end) as a dotted
// line), a self-contained SVG drawn by hand.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "quarry/loop.hpp"
#include "simulate/report_internal.hpp"
#include "simulate/xml.hpp"

namespace quarry {

using report_detail::find_strategy;
using report_detail::kNaN;
using report_detail::strf;

// ---------------------------------------------------------------- curves.svg

namespace {

std::string xml(const std::string& s) { return loop::xml_escape(s); }

// Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); yellow last:
// weak on white. The baseline is drawn dashed in dark grey.
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                    "#E69F00", "#56B4E9", "#000000", "#F0E442"};
constexpr const char* kBaselineColour = "#555555";

struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  double first_tick() const { return std::ceil(lo / step - 1e-9) * step; }
};

// Ticks at 1, 2 or 5 x 10^k covering [lo, hi] with about `ticks` intervals.
// `tight`: the axis spans [lo, hi] exactly, ticks at the multiples of the step inside it;
// otherwise it is widened to the ticks around [lo, hi].
Axis nice_axis(double lo, double hi, int ticks, bool tight = false) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi - lo <= 0) {
    const double pad = lo != 0 ? std::abs(lo) * 0.1 : 1.0;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  if (tight) return {lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo), step};  // room for markers
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

std::string tick_label(double v, double step) {
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  if (decimals == 0 && std::abs(v) >= 10000 && std::fmod(v, 1000) == 0)
    return strf("%.0fk", v / 1000);
  return strf("%.*f", decimals, v + 0.0);  // + 0.0: no "-0"
}

struct Panel {
  double x0, y0, x1, y1;  // plot area
  Axis ax, ay;
  double px(double x) const { return x0 + (x - ax.lo) / (ax.hi - ax.lo) * (x1 - x0); }
  double py(double y) const { return y1 - (y - ay.lo) / (ay.hi - ay.lo) * (y1 - y0); }
};

// A marker of shape `shape` (circle, square, triangle, diamond, inverted triangle).
std::string marker(int shape, double x, double y, const char* colour) {
  const double r = 3.4;
  switch (shape % 5) {
    case 0:
      return strf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"/>", x, y, r, colour);
    case 1:
      return strf("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>",
                  x - r * 0.9, y - r * 0.9, 1.8 * r, 1.8 * r, colour);
    case 2:
      return strf("<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>", x,
                  y - 1.2 * r, x + 1.1 * r, y + 0.8 * r, x - 1.1 * r, y + 0.8 * r, colour);
    case 3:
      return strf("<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>", x,
                  y - 1.3 * r, x + 1.3 * r, y, x, y + 1.3 * r, x - 1.3 * r, y, colour);
    default:
      return strf("<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f\" fill=\"%s\"/>", x,
                  y + 1.2 * r, x + 1.1 * r, y - 0.8 * r, x - 1.1 * r, y - 0.8 * r, colour);
  }
}

struct Style {
  const char* colour;
  int shape;
  bool dashed;
};

std::vector<Style> styles(const SimulationSummary& s) {
  std::vector<Style> out;
  int next = 0;
  for (const StrategySummary& st : s.strategies) {
    if (st.strategy == s.baseline) {
      out.push_back({kBaselineColour, 0, true});
    } else {
      out.push_back({kPalette[next % 8], next % 5, false});
      ++next;
    }
  }
  return out;
}

// The band of a point: its 95% interval where there is one, else mean +- std.
std::pair<double, double> band(const MeanStd& m) {
  if (!std::isnan(m.ci_low) && !std::isnan(m.ci_high)) return {m.ci_low, m.ci_high};
  const double sd = std::isfinite(m.std) ? m.std : 0;
  return {m.mean - sd, m.mean + sd};
}

// The plot area of a panel at `left` and its axes: ranges over the bands (and the target
// line); a metric in [0, 1] stays there.
Panel panel_layout(const SimulationSummary& s, std::vector<MeanStd> StrategySummary::*curve,
                   double target, double left) {
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const StrategySummary& st : s.strategies)
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      const MeanStd& m = (st.*curve)[k];
      if (!std::isfinite(m.mean)) continue;
      const auto [low, high] = band(m);
      xmin = std::min(xmin, static_cast<double>(st.labels[k]));
      xmax = std::max(xmax, static_cast<double>(st.labels[k]));
      ymin = std::min(ymin, low);
      ymax = std::max(ymax, high);
    }
  if (std::isfinite(target)) ymin = std::min(ymin, target), ymax = std::max(ymax, target);
  if (ymin >= 0 && ymin <= 1) ymax = std::min(ymax, 1.0);
  if (ymax <= 1 && ymax >= 0) ymin = std::max(ymin, 0.0);
  Panel p{left + 64, 44, left + 480 - 20, 326, nice_axis(xmin, xmax, 5, true),
          nice_axis(ymin, ymax, 5)};
  if (p.ay.lo < 0 && ymin >= 0) p.ay.lo = 0;
  if (p.ay.hi > 1 && ymax <= 1) p.ay.hi = 1;
  return p;
}

// Grid, ticks and tick labels, the frame, the title and the axis titles of a panel.
std::string panel_axes(const Panel& p, const std::string& title, const std::string& y_title,
                       double left) {
  std::string out;
  const int ny = static_cast<int>(std::lround((p.ay.hi - p.ay.lo) / p.ay.step));
  for (int i = 0; i <= ny; ++i) {
    const double v = p.ay.lo + i * p.ay.step, y = p.py(v);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>\n",
                p.x0, y, p.x1, y);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n",
                p.x0 - 5, y, p.x0, y);
    out += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%s</text>\n",
                p.x0 - 8, y + 4, tick_label(v, p.ay.step).c_str());
  }
  const double x_first = p.ax.first_tick();
  const int nx = static_cast<int>(std::floor((p.ax.hi - x_first) / p.ax.step + 1e-9));
  for (int i = 0; i <= nx; ++i) {
    const double v = x_first + i * p.ax.step, x = p.px(v);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x,
                p.y1, x, p.y1 + 5);
    out += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n",
                x, p.y1 + 18, tick_label(v, p.ax.step).c_str());
  }
  out += strf("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
              "stroke=\"#333\"/>\n",
              p.x0, p.y0, p.x1 - p.x0, p.y1 - p.y0);
  out += strf("<text x=\"%.1f\" y=\"26\" text-anchor=\"middle\" font-size=\"15\" "
              "font-weight=\"bold\">%s</text>\n",
              (p.x0 + p.x1) / 2, xml(title).c_str());
  out += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">labeled "
              "samples</text>\n",
              (p.x0 + p.x1) / 2, p.y1 + 38);
  out += strf("<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\" "
              "font-size=\"12\">%s</text>\n",
              left + 16, (p.y0 + p.y1) / 2, xml(y_title).c_str());
  return out;
}

// The bands of the strategies, clipped to the plot area (mean + std may pass 1).
std::string panel_bands(const SimulationSummary& s, const std::vector<Style>& style,
                        std::vector<MeanStd> StrategySummary::*curve, const Panel& p, int id) {
  std::string out = strf("<g clip-path=\"url(#clip%d)\">\n", id);
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    const StrategySummary& st = s.strategies[i];
    std::string upper, lower;
    bool any_spread = false;
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      const MeanStd& m = (st.*curve)[k];
      if (!std::isfinite(m.mean)) continue;
      const auto [low, high] = band(m);
      any_spread = any_spread || high > low;
      const double x = p.px(static_cast<double>(st.labels[k]));
      upper += strf("%.1f,%.1f ", x, p.py(high));
      lower = strf("%.1f,%.1f ", x, p.py(low)) + lower;
    }
    if (any_spread)
      out += strf("<polygon points=\"%s%s\" fill=\"%s\" fill-opacity=\"0.15\" stroke=\"none\"/>\n",
                  upper.c_str(), lower.c_str(), style[i].colour);
  }
  out += "</g>\n";
  return out;
}

// The mean curves of the strategies: a line and markers each (inside the axes by
// construction).
std::string panel_lines(const SimulationSummary& s, const std::vector<Style>& style,
                        std::vector<MeanStd> StrategySummary::*curve, const Panel& p) {
  std::string out;
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    const StrategySummary& st = s.strategies[i];
    std::string points, markers;
    for (std::size_t k = 0; k < st.labels.size(); ++k) {
      const MeanStd& m = (st.*curve)[k];
      if (!std::isfinite(m.mean)) continue;
      const double x = p.px(static_cast<double>(st.labels[k])), y = p.py(m.mean);
      points += strf("%.1f,%.1f ", x, y);
      markers += marker(style[i].shape, x, y, style[i].colour);
    }
    if (points.empty()) continue;
    points.pop_back();
    out += strf("<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s>"
                "<title>%s</title></polyline>\n",
                points.c_str(), style[i].colour,
                style[i].dashed ? " stroke-dasharray=\"7 4\"" : "", xml(st.strategy).c_str());
    out += markers + "\n";
  }
  return out;
}

std::string draw_panel(const SimulationSummary& s, const std::vector<Style>& style,
                       std::vector<MeanStd> StrategySummary::*curve,
                       Efficiency StrategySummary::*efficiency, const std::string& title,
                       const std::string& y_title, double left, int id) {
  const StrategySummary* base = find_strategy(s, s.baseline);
  const double target = base ? (base->*efficiency).target : kNaN;
  const Panel p = panel_layout(s, curve, target, left);

  std::string out = strf("<g id=\"panel%d\">\n", id);
  out += strf("<clipPath id=\"clip%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>"
              "</clipPath>\n",
              id, p.x0, p.y0, p.x1 - p.x0, p.y1 - p.y0);
  out += panel_axes(p, title, y_title, left);

  // Bands first (under every line), then the target line, then lines and markers.
  out += panel_bands(s, style, curve, p, id);
  if (std::isfinite(target)) {
    const double y = p.py(target);
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\" "
                "stroke-width=\"1.2\" stroke-dasharray=\"1.5 3\"/>\n",
                p.x0, y, p.x1, y);
  }
  out += panel_lines(s, style, curve, p);
  if (std::isfinite(target))
    // At the left end, where learning curves are still low; below the line near the top.
    out += strf("<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#222\" "
                "stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">target (%s, isotonic) "
                "%s</text>\n",
                p.x0 + 6, p.py(target) + (p.py(target) - p.y0 < 16 ? 13 : -5),
                xml(s.baseline).c_str(), tick_label(target, 0.0001).c_str());
  out += "</g>\n";
  return out;
}

}  // namespace

std::string curves_svg(const SimulationSummary& s) {
  const std::vector<Style> style = styles(s);

  // Legend entries flow left to right, wrapping before the note at the right end; the width of
  // text estimated at 7 px a character (font size 12).
  struct Entry {
    double x, y;
  };
  std::vector<Entry> at;
  const double legend_top = 390, row_h = 20, left = 64, right = 610;
  double x = left, y = legend_top;
  for (const StrategySummary& st : s.strategies) {
    const double w = 38 + 7.0 * static_cast<double>(st.strategy.size()) + 22;
    if (x + w > right && x > left) x = left, y += row_h;
    at.push_back({x, y});
    x += w;
  }
  const int height = static_cast<int>(std::max(420.0, y + 22));

  std::string out = strf("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"%d\" "
                         "viewBox=\"0 0 960 %d\" font-family=\"DejaVu Sans, Helvetica, Arial, "
                         "sans-serif\">\n",
                         height, height);
  out += "<title>Learning curves: " + xml(s.dataset) + "</title>\n";
  out += strf("<rect width=\"960\" height=\"%d\" fill=\"white\"/>\n", height);
  if (s.strategies.empty()) {
    out += "<text x=\"480\" y=\"210\" text-anchor=\"middle\" font-size=\"14\">no rounds to "
           "plot</text>\n</svg>\n";
    return out;
  }
  out += draw_panel(s, style, &StrategySummary::accuracy, &StrategySummary::accuracy_efficiency,
                    "Accuracy vs labels", "test accuracy", 0, 0);
  out += draw_panel(s, style, &StrategySummary::balanced_accuracy,
                    &StrategySummary::balanced_accuracy_efficiency, "Balanced accuracy vs labels",
                    "test balanced accuracy", 480, 1);

  out += "<g id=\"legend\" font-size=\"12\">\n";
  for (std::size_t i = 0; i < s.strategies.size(); ++i) {
    const double lx = at[i].x, ly = at[i].y;
    out += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\"%s/>",
                lx, ly - 4, lx + 30, ly - 4, style[i].colour,
                style[i].dashed ? " stroke-dasharray=\"7 4\"" : "");
    out += marker(style[i].shape, lx + 15, ly - 4, style[i].colour);
    out += strf("<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx + 38, ly,
                xml(s.strategies[i].strategy).c_str());
  }
  const StrategySummary* base = find_strategy(s, s.baseline);
  out += "</g>\n";
  const std::string note =
      (s.repeats > 1 ? strf("mean, band: 95%% CI over %d repeats (bootstrap)", s.repeats)
                     : std::string("one repeat")) +
      (base ? "; dotted: target (" + xml(s.baseline) + ", isotonic end)" : std::string());
  out += strf("<text x=\"940\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\" fill=\"#555\">"
              "%s</text>\n",
              legend_top + 1, note.c_str());
  out += "</svg>\n";
  return out;
}

}  // namespace quarry
