// Streaming against the in-memory path: tiny budgets (many chunks, N not a multiple of the chunk),
// sharded pools, row ranges merged as MPI ranks merge them, exclusions, and errors that name the
// global row. On a GPU the same comparisons run on CUDA (streamed CUDA against in-memory CUDA).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/device.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/select.hpp"
#include "quarry/stream.hpp"
#include "engine/stream_parts.hpp"
#include "quarry/synthetic.hpp"

namespace {

namespace fs = std::filesystem;
using namespace quarry;

std::string tmp(const std::string& name) {
  const fs::path dir = fs::path(QUARRY_TEST_TMP) / "stream";
  fs::create_directories(dir);
  return (dir / name).string();
}

// Writes rows [b, e) of `a` (sample axis 0, or 1 for a committee) as its own .npy file.
void write_rows(const Array& a, std::int64_t b, std::int64_t e, const std::string& path) {
  const int axis = a.rank() == 3 ? 1 : 0;
  std::vector<std::int64_t> shape = a.shape();
  shape[static_cast<std::size_t>(axis)] = e - b;
  Array part = Array::allocate(a.dtype(), shape, path);
  const std::int64_t members = a.rank() == 3 ? a.shape()[0] : 1, n = a.shape()[static_cast<std::size_t>(axis)];
  const std::size_t row = static_cast<std::size_t>(a.shape().back()) * dtype_size(a.dtype());
  for (std::int64_t m = 0; m < members; ++m)
    std::memcpy(static_cast<unsigned char*>(part.mutable_data()) + static_cast<std::size_t>(m * (e - b)) * row,
                static_cast<const unsigned char*>(a.data()) + static_cast<std::size_t>(m * n + b) * row,
                static_cast<std::size_t>(e - b) * row);
  write_npy(path, part.view());
}

// The pool split into shard files at `cuts`; returns the comma-separated spec.
std::string write_shards(const Array& a, const std::vector<std::int64_t>& cuts, const std::string& stem) {
  std::string spec;
  for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
    const std::string path = tmp(stem + "-" + std::to_string(i) + ".npy");
    write_rows(a, cuts[i], cuts[i + 1], path);
    spec += (spec.empty() ? "" : ",") + path;
  }
  return spec;
}

struct Pool {
  Array outputs, committee, emb;
  std::string outputs_path, committee_path, emb_path;
};

const Pool& pool() {
  static const Pool p = [] {
    Pool q;
    SyntheticSpec s;
    s.n = 2503;  // a prime: no budget divides it
    s.c = 7;
    s.d = 12;
    s.seed = 5;
    q.outputs = synthetic_outputs(s);
    q.emb = synthetic_embeddings(s);
    s.m = 4;
    q.committee = synthetic_outputs(s);
    q.outputs_path = tmp("outputs.npy");
    q.committee_path = tmp("committee.npy");
    q.emb_path = tmp("emb.npy");
    write_npy(q.outputs_path, q.outputs.view());
    write_npy(q.committee_path, q.committee.view());
    write_npy(q.emb_path, q.emb.view());
    return q;
  }();
  return p;
}

std::vector<DeviceSpec> devices() {
  std::vector<DeviceSpec> d{{DeviceKind::cpu, 0}};
  if (cuda_device_count() > 0) d.push_back({DeviceKind::cuda, 0});
  return d;
}

std::vector<float> streamed_scores(const PoolFiles& in, Acquisition a, const ScoreOptions& o, const PoolFiles* emb,
                                   std::int64_t budget, StreamStats* st = nullptr) {
  std::vector<float> out(static_cast<std::size_t>(in.n()), -1.0f);
  std::int64_t next = 0;
  StreamOptions so;
  so.memory_budget = budget;
  const StreamStats s = stream_score(in, a, o, emb, so, [&](std::int64_t first, const float* x, std::int64_t n) {
    EXPECT_EQ(first, next);  // chunks arrive in order
    std::copy(x, x + n, out.begin() + first);
    next = first + n;
  });
  EXPECT_EQ(next, in.n());
  if (st) *st = s;
  return out;
}

TEST(Stream, EveryAcquisitionMatchesInMemoryWithATinyBudget) {
  const Pool& p = pool();
  const PoolFiles single = PoolFiles::open(p.outputs_path), committee = PoolFiles::open(p.committee_path),
                  emb = PoolFiles::open(p.emb_path);
  const ArrayView ev = p.emb.view();
  for (const DeviceSpec& dev : devices())
    for (Acquisition a : all_acquisitions()) {
      SCOPED_TRACE(std::string(acquisition_name(a)) + " on " + device_string(dev));
      const bool needs_emb = acquisition_needs_embeddings(a);
      ScoreOptions o;
      o.device = dev;
      for (const bool use_committee : {false, true}) {
        if (acquisition_needs_committee(a) && !use_committee) continue;
        const Array& whole = use_committee ? p.committee : p.outputs;
        const std::vector<float> expect = score(whole.view(), a, o, needs_emb ? &ev : nullptr);
        StreamStats st;
        // 3 KiB: a handful of rows per chunk (double-buffered on CUDA).
        const std::vector<float> got = streamed_scores(use_committee ? committee : single, a, o,
                                                       needs_emb ? &emb : nullptr, 3 << 10, &st);
        EXPECT_GT(st.chunks, 20);
        EXPECT_NE(p.outputs.shape()[0] % st.rows_per_chunk, 0);
        ASSERT_EQ(got.size(), expect.size());
        EXPECT_EQ(0, std::memcmp(got.data(), expect.data(), got.size() * sizeof(float)))
            << "streamed scores differ from in-memory ones";
      }
    }
}

TEST(Stream, ShardedCommitteeAndEmbeddingsCutDifferently) {
  const Pool& p = pool();
  const std::string com = write_shards(p.committee, {0, 700, 701, 1900, 2503}, "com");
  const std::string emb = write_shards(p.emb, {0, 1000, 2503}, "emb");
  const PoolFiles c = PoolFiles::open(com), e = PoolFiles::open(emb);
  EXPECT_EQ(c.n(), 2503);
  EXPECT_EQ(c.file_count(), 4u);
  EXPECT_EQ(c.shape(), p.committee.shape());
  const ArrayView ev = p.emb.view();
  for (Acquisition a : {Acquisition::bald, Acquisition::kl_max, Acquisition::egl, Acquisition::vote_entropy}) {
    SCOPED_TRACE(acquisition_name(a));
    const bool ne = acquisition_needs_embeddings(a);
    const std::vector<float> expect = score(p.committee.view(), a, {}, ne ? &ev : nullptr);
    for (std::int64_t budget : {std::int64_t{1} << 12, std::int64_t{1} << 30}) {
      const std::vector<float> got = streamed_scores(c, a, {}, ne ? &e : nullptr, budget);
      EXPECT_EQ(0, std::memcmp(got.data(), expect.data(), got.size() * sizeof(float)));
    }
  }
  // A glob matches the same files in name order.
  const PoolFiles g = PoolFiles::open(tmp("com-*.npy"));
  EXPECT_EQ(g.n(), 2503);
  EXPECT_EQ(g.file_count(), 4u);
}

// The selections of every case below, streamed with a tiny budget, in one range or in R ranges
// merged as MPI ranks merge them, equal the in-memory selection exactly.
TEST(Stream, TopkAndPowerWithExclusionsMatchInMemory) {
  const Pool& p = pool();
  const PoolFiles single = PoolFiles::open(p.outputs_path), committee = PoolFiles::open(p.committee_path);
  std::vector<std::int64_t> exclude;
  for (std::int64_t i = 0; i < 2503; i += 7) exclude.push_back(i);
  exclude.push_back(2502);
  exclude.push_back(14);  // a duplicate
  for (const DeviceSpec& dev : devices())
    for (const bool power : {false, true})
      for (const std::int64_t k : {std::int64_t{0}, std::int64_t{1}, std::int64_t{37}, std::int64_t{2000}})
        for (const Acquisition a : {Acquisition::margin, Acquisition::bald}) {
          SCOPED_TRACE(std::string(acquisition_name(a)) + (power ? " power" : " topk") + " k=" + std::to_string(k) +
                       " on " + device_string(dev));
          const Array& whole = a == Acquisition::bald ? p.committee : p.outputs;
          const PoolFiles& files = a == Acquisition::bald ? committee : single;
          ScoreOptions o;
          o.device = dev;
          SelectOptions so;
          so.k = k;
          so.power = power;
          so.beta = 2.0;
          so.seed = 11;
          so.exclude = exclude;
          const Selection expect = score_and_select(whole.view(), a, o, so);
          for (const int ranks : {1, 2, 3}) {
            std::vector<Ranked> parts;
            for (int r = 0; r < ranks; ++r) {
              StreamOptions st;
              st.memory_budget = 2 << 10;
              st.begin = 2503 * r / ranks;
              st.end = 2503 * (r + 1) / ranks;
              parts.push_back(stream_score_select(files, a, o, so, nullptr, st));
              EXPECT_LE(parts.back().size(), k);
            }
            const Selection got = to_selection(merge_ranked(parts, k));
            EXPECT_EQ(got.index, expect.index) << ranks << " ranks";
            EXPECT_EQ(got.score, expect.score) << ranks << " ranks";
          }
        }
}

TEST(Stream, SelectFromScoresFilesOfEveryFloatTypeMatchesInMemory) {
  std::vector<float> s(10007);
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<float>((i * 7919) % 101) * 0.5f;  // many ties
  const std::string path = tmp("scores.npy");
  write_npy(path, ArrayView{s.data(), DType::f32, {10007}});
  std::vector<double> d(s.begin(), s.end());
  const std::string dpath = tmp("scores64.npy");
  write_npy(dpath, ArrayView{d.data(), DType::f64, {10007}});
  const std::vector<std::int64_t> exclude{0, 5, 77, 10006};
  for (const bool power : {false, true}) {
    const Selection expect = power ? select_power(s.data(), 10007, 500, 1.5, 3, exclude) : select_topk(s.data(), 10007, 500, exclude);
    SelectOptions so;
    so.k = 500;
    so.power = power;
    so.beta = 1.5;
    so.seed = 3;
    so.exclude = exclude;
    for (const std::string& spec : {path, dpath}) {
      StreamOptions st;
      st.memory_budget = 1000;
      StreamStats stats;
      const Selection got = to_selection(stream_select_scores(PoolFiles::open(spec), so, {DeviceKind::cpu, 0}, st, &stats));
      EXPECT_GT(stats.chunks, 40);
      EXPECT_EQ(got.index, expect.index) << spec;
      EXPECT_EQ(got.score, expect.score) << spec;
    }
  }
}

TEST(Stream, ErrorsNameTheGlobalRowAndTheFile) {
  const Pool& p = pool();
  Array bad = Array::allocate(DType::f32, p.outputs.shape(), "bad");
  std::memcpy(bad.mutable_data(), p.outputs.data(), p.outputs.nbytes());
  static_cast<float*>(bad.mutable_data())[2100 * 7 + 3] = -0.5f;
  const std::string spec = write_shards(bad, {0, 1000, 2000, 2503}, "bad");
  const PoolFiles f = PoolFiles::open(spec);
  for (std::int64_t budget : {std::int64_t{1} << 11, std::int64_t{1} << 30}) {
    try {
      SelectOptions so;
      so.k = 3;
      StreamOptions st;
      st.memory_budget = budget;
      (void)stream_score_select(f, Acquisition::entropy, {}, so, nullptr, st);
      FAIL() << "a negative probability was accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("bad-2.npy"), std::string::npos) << what;
      EXPECT_NE(what.find("row 2100"), std::string::npos) << what;
    }
  }
  // A NaN in a scores file is named at its pool index; a budget below one sample is an Error.
  std::vector<float> s(5000, 1.0f);
  s[4321] = std::nanf("");
  write_npy(tmp("nan.npy"), ArrayView{s.data(), DType::f32, {5000}});
  SelectOptions so;
  so.k = 2;
  StreamOptions st;
  st.memory_budget = 512;
  try {
    (void)stream_select_scores(PoolFiles::open(tmp("nan.npy")), so, {DeviceKind::cpu, 0}, st);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("index 4321"), std::string::npos) << e.what();
  }
  st.memory_budget = 3;
  EXPECT_THROW((void)stream_select_scores(PoolFiles::open(tmp("nan.npy")), so, {DeviceKind::cpu, 0}, st), Error);
  // Shards that disagree, an empty glob, an out-of-range exclusion, k beyond the selectable.
  write_npy(tmp("wide.npy"), ArrayView{p.emb.data(), DType::f32, {2503, 12}});
  EXPECT_THROW(PoolFiles::open(p.outputs_path + "," + tmp("wide.npy")), Error);
  EXPECT_THROW(PoolFiles::open(tmp("nothing-*.npy")), Error);
  EXPECT_THROW(checked_exclusions(10, 1, {10}), Error);
  EXPECT_THROW(checked_exclusions(10, 9, {1, 2}), Error);
  EXPECT_EQ(checked_exclusions(10, 8, {3, 1, 3}), (std::vector<std::int64_t>{1, 3}));
  EXPECT_EQ(parse_bytes("512M"), 512ll << 20);
  EXPECT_EQ(parse_bytes("1.5GiB"), 3ll << 29);
  EXPECT_EQ(parse_bytes("4096"), 4096);
  EXPECT_THROW(parse_bytes("lots"), Error);
  EXPECT_THROW(parse_bytes("-1G"), Error);
}

TEST(Stream, DiversityWithinTheBudgetIsExactAndTwoStageIsValid) {
  const Pool& p = pool();
  const PoolFiles emb = PoolFiles::open(p.emb_path), out = PoolFiles::open(p.outputs_path);
  const ArrayView ov = p.outputs.view();
  std::vector<std::int64_t> exclude{3, 50, 51, 2000};
  for (DiversityStrategy s : all_diversity_strategies()) {
    SCOPED_TRACE(diversity_strategy_name(s));
    DiversityOptions o;
    o.k = 20;
    o.exclude = exclude;
    o.seed = 4;
    o.device = {DeviceKind::cpu, 0};
    const Selection expect = select_diverse(s, p.emb.view(), &ov, o);
    StreamOptions fits;
    fits.memory_budget = 1 << 30;
    const Selection same = stream_select_diverse(s, emb, &out, o, fits);
    EXPECT_EQ(same.index, expect.index);
    EXPECT_EQ(same.score, expect.score);
    StreamOptions tiny;
    tiny.memory_budget = 40 << 10;  // a few hundred rows per chunk
    StreamStats st;
    if (s == DiversityStrategy::typiclust || s == DiversityStrategy::probcover) {
      // Their picks depend on the whole pool: no two-stage answer, a clear refusal instead.
      try {
        stream_select_diverse(s, emb, &out, o, tiny, &st);
        ADD_FAILURE() << "a two-stage " << diversity_strategy_name(s) << " was not refused";
      } catch (const quarry::UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("needs the whole pool at once"), std::string::npos) << e.what();
      }
      continue;
    }
    const Selection two = stream_select_diverse(s, emb, &out, o, tiny, &st);
    EXPECT_GT(st.chunks, 3);
    ASSERT_EQ(two.size(), 20);
    const std::set<std::int64_t> picked(two.index.begin(), two.index.end());
    EXPECT_EQ(picked.size(), 20u) << "duplicate picks";
    for (std::int64_t i : two.index) {
      EXPECT_TRUE(i >= 0 && i < 2503);
      EXPECT_EQ(std::count(exclude.begin(), exclude.end(), i), 0) << "an excluded sample was picked";
    }
  }
}

}  // namespace
