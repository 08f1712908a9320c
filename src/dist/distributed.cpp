// Distributed streaming calls (include/quarry/dist.hpp): a rank's device and shard, and the
// score / select / diversity calls over a sharded pool with the exact merge on rank 0.
#include <string>

#include "engine/stream_parts.hpp"
#include "quarry/dist.hpp"
#include "quarry/error.hpp"

namespace quarry {

namespace {

// Runs a rank's selection; an error that does not name the pool's files is prefixed with them.
template <class Work>
void naming_pool(const PoolFiles& pool, Work&& work) {
  try {
    work();
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.find(pool.spec()) != std::string::npos) throw;
    const std::string msg = pool.spec() + ": " + what;
    if (dynamic_cast<const UsageError*>(&e)) throw UsageError(msg);
    throw Error(msg);
  }
}

// The k best of every rank's local part, merged exactly on rank 0; the other ranks get an empty
// list.
Ranked merge_on_root(Cluster& cluster, const Ranked& local, std::int64_t k) {
  std::vector<int> counts;
  const std::vector<std::int64_t> index = cluster.gather(local.index, &counts);
  const std::vector<float> key = cluster.gather(local.key), score = cluster.gather(local.score);
  if (!cluster.root()) return {};
  std::vector<Ranked> parts(counts.size());
  std::size_t at = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    const auto from = static_cast<std::ptrdiff_t>(at), to = static_cast<std::ptrdiff_t>(at + static_cast<std::size_t>(counts[r]));
    parts[r].index.assign(index.begin() + from, index.begin() + to);
    parts[r].key.assign(key.begin() + from, key.begin() + to);
    parts[r].score.assign(score.begin() + from, score.begin() + to);
    at += static_cast<std::size_t>(counts[r]);
  }
  return merge_ranked(parts, k);
}

}  // namespace

DeviceSpec rank_device(const Cluster& cluster, std::string_view text) {
  DeviceSpec d = parse_device(text);
  if (cluster.size() == 1 || text.find(':') != std::string_view::npos || d.kind == DeviceKind::cpu) return d;
  const int gpus = cuda_device_count();
  if (gpus > 0) d.index = cluster.local_rank() % gpus;
  return d;
}

StreamOptions rank_stream(const Cluster& cluster, StreamOptions s, const DeviceSpec& device, std::int64_t n) {
  // Ranks on one node share its memory: the default budget is split between them.
  if (s.memory_budget == 0 && cluster.local_size() > 1 && resolve_device(device).kind != DeviceKind::cuda)
    s.memory_budget = default_memory_budget(device) / cluster.local_size();
  const auto rows = cluster.shard(n);
  s.begin = rows.first;
  s.end = rows.second;
  return s;
}

void distributed_score(Cluster& cluster, const PoolFiles& input, Acquisition acquisition,
                       const ScoreOptions& options, const PoolFiles* embeddings, const StreamOptions& stream,
                       const ScoreSink& sink, StreamStats* stats) {
  std::vector<float> mine;  // a non-root rank's scores, sent to rank 0 at the end
  StreamStats st;
  std::int64_t next = 0;    // rank 0: the first row the gathered scores start at
  cluster.run([&] {
    const StreamOptions so = rank_stream(cluster, stream, options.device, input.n());
    next = so.end;
    if (!cluster.root()) mine.reserve(static_cast<std::size_t>(so.end - so.begin));
    st = stream_score(input, acquisition, options, embeddings, so,
                      [&](std::int64_t first, const float* s, std::int64_t count) {
                        if (cluster.root())
                          sink(first, s, count);
                        else
                          mine.insert(mine.end(), s, s + count);
                      });
  });
  if (stats) *stats = st;
  cluster.run([&] {
    cluster.gather_floats(mine, [&](const float* s, std::size_t count) {
      sink(next, s, static_cast<std::int64_t>(count));
      next += static_cast<std::int64_t>(count);
    });
  });
}

Selection distributed_score_select(Cluster& cluster, const PoolFiles& input, Acquisition acquisition,
                                   const ScoreOptions& options, const SelectOptions& select,
                                   const PoolFiles* embeddings, const StreamOptions& stream, StreamStats* stats) {
  Ranked local;
  cluster.run([&] {
    const StreamOptions so = rank_stream(cluster, stream, options.device, input.n());
    naming_pool(input, [&] { local = stream_score_select(input, acquisition, options, select, embeddings, so, stats); });
  });
  const Ranked merged = merge_on_root(cluster, local, select.k);
  return cluster.root() ? to_selection(merged) : Selection{};
}

Selection distributed_select_scores(Cluster& cluster, const PoolFiles& scores, const SelectOptions& select,
                                    const DeviceSpec& device, const StreamOptions& stream, StreamStats* stats) {
  Ranked local;
  cluster.run([&] {
    const StreamOptions so = rank_stream(cluster, stream, device, scores.n());
    naming_pool(scores, [&] { local = stream_select_scores(scores, select, device, so, stats); });
  });
  const Ranked merged = merge_on_root(cluster, local, select.k);
  return cluster.root() ? to_selection(merged) : Selection{};
}

Selection distributed_select_diverse(Cluster& cluster, DiversityStrategy strategy, const PoolFiles& embeddings,
                                     const PoolFiles* outputs, const DiversityOptions& options,
                                     const StreamOptions& stream, StreamStats* stats) {
  Selection sel;
  std::vector<std::int64_t> mine;
  cluster.run([&] {
    StreamOptions so = rank_stream(cluster, stream, options.device, embeddings.n());
    if (cluster.size() == 1) {
      so.begin = 0;
      so.end = -1;
      sel = stream_select_diverse(strategy, embeddings, outputs, options, so, stats);
      return;
    }
    (void)checked_exclusions(embeddings.n(), options.k, options.exclude);  // on every rank alike
    mine = diverse_candidates(strategy, embeddings, outputs, options, so, stats);
  });
  if (cluster.size() == 1) return sel;
  const std::vector<std::int64_t> all = cluster.gather(mine);
  cluster.run([&] {
    if (cluster.root()) sel = select_among(strategy, embeddings, outputs, all, options);
  });
  return sel;
}

}  // namespace quarry
