// Streaming (include/quarry/stream.hpp): pool files, chunk plans under a memory budget, running
// top-k / power selection, and the two-stage diversity selection. Each chunk goes through the same
// backend functions as the in-memory path, so the scores are bit-identical and the selection is
// exact: a chunk's best k hold every one of its rows that belongs to the global best k, and the
// merge orders by (key descending, index ascending) exactly as cpu::topk does.
#include "quarry/stream.hpp"

#include <glob.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "core/rows.hpp"
#include "core/score_call.hpp"
#include "engine/stream_parts.hpp"
#include "io/mmap_file.hpp"
#include "cpu/cpu_backend.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/cuda_backend.hpp"
#endif
#include "quarry/detail/hd.hpp"
#include "quarry/detail/radix_select.hpp"
#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {

// ------------------------------------------------------------------ budgets
std::int64_t default_memory_budget(const DeviceSpec& requested) {
  const DeviceSpec d = resolve_device(requested);
#if QUARRY_BUILD_CUDA
  if (d.kind == DeviceKind::cuda) return static_cast<std::int64_t>(cuda::free_memory(d.index) / 2);
#endif
  (void)d;
  const auto available = static_cast<std::int64_t>(io::available_memory());
  return std::max<std::int64_t>(available / 4, 64 << 20);
}

// ------------------------------------------------------------------ chunk plans
namespace {

struct Range {
  std::int64_t begin, end;
};

Range checked_range(std::int64_t n, const StreamOptions& s) {
  const std::int64_t end = s.end < 0 ? n : s.end;
  QUARRY_EXPECTS(s.begin >= 0 && s.begin <= end && end <= n, "rows [", s.begin, ", ", end,
                 ") are not a range of the pool of ", n, " samples");
  return {s.begin, end};
}

std::int64_t budget_of(const StreamOptions& s, const DeviceSpec& device) {
  QUARRY_USAGE_EXPECTS(s.memory_budget >= 0, "the memory budget must be positive, got ", s.memory_budget);
  return s.memory_budget > 0 ? s.memory_budget : default_memory_budget(device);
}

// Rows per chunk for `bytes_per_row` under the budget (`copies`: 2 where the device double-buffers).
std::int64_t chunk_rows(std::int64_t budget, std::size_t bytes_per_row, int copies) {
  const std::int64_t per = static_cast<std::int64_t>(bytes_per_row) * copies;
  QUARRY_USAGE_EXPECTS(budget >= per, "a memory budget of ", budget, " bytes is less than one sample needs (",
                 per, " bytes", copies > 1 ? ", double-buffered" : "", "); raise --memory-budget");
  return budget / per;
}

// Chunks of [begin, end) of at most `rows` rows that never straddle a file of any of the pools.
std::vector<Range> plan(Range r, std::int64_t rows, const std::vector<const PoolFiles*>& pools) {
  std::vector<Range> out;
  for (std::int64_t b = r.begin; b < r.end;) {
    std::int64_t e = std::min(r.end, b + rows);
    for (const PoolFiles* p : pools)
      if (p) e = std::min(e, p->first_row(p->file_of(b) + 1));
    out.push_back({b, e});
    b = e;
  }
  return out;
}

// Rows of the longest chunk: the size of the per-chunk buffers.
std::size_t longest(const std::vector<Range>& chunks) {
  std::int64_t m = 0;
  for (const Range r : chunks) m = std::max(m, r.end - r.begin);
  return static_cast<std::size_t>(m);
}

// The name a chunk's errors use: the file, and where it starts in a sharded pool.
std::string chunk_name(const PoolFiles& p, std::int64_t row) {
  if (p.file_count() == 1) return p.file(0).source();
  const std::size_t f = p.file_of(row);
  return p.file(f).source() + " (pool rows " + std::to_string(p.first_row(f)) + " to " +
         std::to_string(p.first_row(f + 1) - 1) + " of " + p.spec() + ")";
}

// The views and names a chunk's ScoreCall points at (stable storage).
struct ChunkInput {
  ArrayView input, emb;
  ScoreOptions options;
};

void validate_pools(const PoolFiles& input, Acquisition acq, const ScoreOptions& o, const PoolFiles* emb) {
  // The whole pool's shape through the in-memory validation (no data is read).
  ArrayView in{input.file(0).data(), input.dtype(), input.shape()};
  ArrayView ev;
  if (emb) {
    QUARRY_EXPECTS(!emb->empty(), "empty embeddings");
    ev = ArrayView{emb->file(0).data(), emb->dtype(), emb->shape()};
  }
  ScoreOptions named = o;
  named.input_name = input.spec();
  if (emb) named.embeddings_name = emb->spec();
  (void)make_score_call(in, acq, named, emb && acquisition_needs_embeddings(acq) ? &ev : nullptr);
  QUARRY_EXPECTS(!emb || acquisition_needs_embeddings(acq), "embeddings are only read by egl and badge-norm, not by ",
                 acquisition_name(acq));
}

// Fills `storage` and returns the call for rows [r.begin, r.end).
ScoreCall chunk_call(const PoolFiles& input, Acquisition acq, const ScoreOptions& o, const PoolFiles* emb,
                     Range r, ChunkInput* storage) {
  const std::int64_t rows = r.end - r.begin;
  const std::vector<std::int64_t>& fs = input.file(input.file_of(r.begin)).shape();
  storage->input = ArrayView{input.row_pointer(r.begin), input.dtype(),
                             input.rank() == 3 ? std::vector<std::int64_t>{fs[0], rows, fs[2]}
                                               : std::vector<std::int64_t>{rows, fs[1]}};
  storage->options = o;
  storage->options.input_name = chunk_name(input, r.begin);
  const ArrayView* ev = nullptr;
  if (emb) {
    storage->emb = ArrayView{emb->row_pointer(r.begin), emb->dtype(), {rows, emb->shape()[1]}};
    storage->options.embeddings_name = chunk_name(*emb, r.begin);
    ev = &storage->emb;
  }
  ScoreCall call = make_score_call(storage->input, acq, storage->options, ev);
  call.member_stride = input.member_stride(r.begin);
  call.row_offset = r.begin;
  return call;
}

// Bytes a chunk row takes: the input and embeddings rows, scores, keys and a mask byte.
std::size_t score_row_bytes(const PoolFiles& input, const PoolFiles* emb, bool keys) {
  return input.sample_bytes() + (emb ? emb->sample_bytes() : 0) + sizeof(float) * (keys ? 2 : 1) + 1;
}

bool cuda_device(const DeviceSpec& requested, int* index) {
  const DeviceSpec d = resolve_device(requested);
  *index = d.index;
  return d.kind == DeviceKind::cuda;
}

// The chunk's exclusion mask (empty: none) and its number of selectable rows.
std::vector<std::uint8_t> chunk_mask(const std::vector<std::int64_t>& sorted, Range r, std::int64_t* selectable) {
  const auto lo = std::lower_bound(sorted.begin(), sorted.end(), r.begin);
  const auto hi = std::lower_bound(lo, sorted.end(), r.end);
  *selectable = (r.end - r.begin) - (hi - lo);
  if (lo == hi) return {};
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(r.end - r.begin), 0);
  for (auto it = lo; it != hi; ++it) mask[static_cast<std::size_t>(*it - r.begin)] = 1;
  return mask;
}

// Before a: a better key (as cpu::topk orders: -0 == +0), or an equal key and a lower index.
bool ranks_before(float key_a, std::int64_t a, float key_b, std::int64_t b) {
  const std::uint32_t ka = detail::radix::order_key(key_a), kb = detail::radix::order_key(key_b);
  return ka != kb ? ka > kb : a < b;
}

// The running selection: the best k seen so far.
struct Running {
  std::int64_t k;
  Ranked best;
  void add(Ranked&& part) {
    if (best.size() == 0 && part.size() <= k) {
      best = std::move(part);
      return;
    }
    best = merge_ranked({best, part}, k);
  }
};

// Selects the chunk's best kc from scores (keys for power) and adds them to `run`.
void select_chunk(const float* scores, const float* keys, Range r, std::int64_t kc,
                  const std::vector<std::uint8_t>& mask, Running* run) {
  if (kc <= 0) return;
  const std::vector<std::int64_t> local = cpu::topk(keys, r.end - r.begin, kc, mask, r.begin);
  Ranked part;
  part.index.reserve(local.size());
  part.key.reserve(local.size());
  part.score.reserve(local.size());
  for (std::int64_t i : local) {
    part.index.push_back(r.begin + i);
    part.key.push_back(keys[i]);
    part.score.push_back(scores[i]);
  }
  run->add(std::move(part));
}

// How a validated scoring call is cut: the backend and the chunks under the budget.
struct ScorePlan {
  const PoolFiles* emb;  // null where the acquisition reads no embeddings
  bool cuda;
  int device;
  StreamStats stats;
  std::vector<Range> chunks;
};

ScorePlan plan_scoring(const PoolFiles& input, Acquisition acq, const ScoreOptions& o, const PoolFiles* emb,
                       const StreamOptions& s, bool keys) {
  ScorePlan p{acquisition_needs_embeddings(acq) ? emb : nullptr, false, 0, {}, {}};
  const Range range = checked_range(input.n(), s);
  p.cuda = cuda_device(o.device, &p.device);
  p.stats.budget = budget_of(s, o.device);
  p.stats.rows_per_chunk = chunk_rows(p.stats.budget, score_row_bytes(input, p.emb, keys), p.cuda ? 2 : 1);
  p.chunks = plan(range, p.stats.rows_per_chunk, {&input, p.emb});
  p.stats.chunks = static_cast<std::int64_t>(p.chunks.size());
  return p;
}

// The host-memory calls of every chunk, for the CUDA pipeline (`storage` keeps their views).
[[maybe_unused]] std::vector<ScoreCall> cuda_calls(const PoolFiles& input, Acquisition acq, const ScoreOptions& o,
                                                   const ScorePlan& p, std::vector<ChunkInput>* storage) {
  std::vector<ScoreCall> calls;
  for (std::size_t i = 0; i < p.chunks.size(); ++i)
    calls.push_back(chunk_call(input, acq, o, p.emb, p.chunks[i], &(*storage)[i]));
  return calls;
}

// On CUDA, once chunk i is back: its pages leave resident memory, chunk i + 2's are requested
// (chunk i + 1 is being copied).
[[maybe_unused]] void pages_done(const PoolFiles& input, const PoolFiles* emb, const std::vector<Range>& chunks,
                                 std::size_t i) {
  if (chunks.size() > 1) {
    input.release(chunks[i].begin, chunks[i].end);
    if (emb) emb->release(chunks[i].begin, chunks[i].end);
  }
  if (i + 2 < chunks.size()) {
    input.prefetch(chunks[i + 2].begin, chunks[i + 2].end);
    if (emb) emb->prefetch(chunks[i + 2].begin, chunks[i + 2].end);
  }
}

// The CPU's chunk loop: the next chunk's pages are requested while this one is scored, and a
// scored chunk's pages leave resident memory. `use(range, scores)` sees each chunk's scores.
template <class Use>
void cpu_chunks(const PoolFiles& input, Acquisition acq, const ScoreOptions& o, const PoolFiles* emb,
                const std::vector<Range>& chunks, Use&& use) {
  FloatBuffer scores(longest(chunks));
  ChunkInput storage;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const Range r = chunks[i];
    if (i + 1 < chunks.size()) {
      input.prefetch(chunks[i + 1].begin, chunks[i + 1].end);
      if (emb) emb->prefetch(chunks[i + 1].begin, chunks[i + 1].end);
    }
    ScoreCall call = chunk_call(input, acq, o, emb, r, &storage);
    call.out = scores.data();
    cpu::score(call);
    use(r, scores.data());
    if (chunks.size() > 1) {
      input.release(r.begin, r.end);
      if (emb) emb->release(r.begin, r.end);
    }
  }
}

}  // namespace

// ------------------------------------------------------------------ scoring
StreamStats stream_score(const PoolFiles& input, Acquisition acq, const ScoreOptions& o, const PoolFiles* emb,
                         const StreamOptions& s, const ScoreSink& sink) {
  validate_pools(input, acq, o, emb);
  const ScorePlan p = plan_scoring(input, acq, o, emb, s, false);
  emb = p.emb;
  const std::vector<Range>& chunks = p.chunks;
  const StreamStats st = p.stats;
  if (p.cuda) {
#if QUARRY_BUILD_CUDA
    std::vector<ChunkInput> storage(chunks.size());
    const std::vector<ScoreCall> calls = cuda_calls(input, acq, o, p, &storage);
    cuda::score_chunks(calls, p.device, [&](std::size_t i, const float* scores) {
      sink(chunks[i].begin, scores, chunks[i].end - chunks[i].begin);
      pages_done(input, emb, chunks, i);
    });
    return st;
#endif
  }
  cpu_chunks(input, acq, o, emb, chunks, [&](Range r, const float* scores) { sink(r.begin, scores, r.end - r.begin); });
  return st;
}

// ------------------------------------------------------------------ selection
Ranked merge_ranked(const std::vector<Ranked>& parts, std::int64_t k) {
  Ranked out;
  std::vector<std::size_t> at(parts.size(), 0);
  while (out.size() < k) {
    std::size_t best = parts.size();
    for (std::size_t p = 0; p < parts.size(); ++p) {
      if (at[p] >= parts[p].index.size()) continue;
      if (best == parts.size() || ranks_before(parts[p].key[at[p]], parts[p].index[at[p]],
                                               parts[best].key[at[best]], parts[best].index[at[best]]))
        best = p;
    }
    if (best == parts.size()) break;
    out.index.push_back(parts[best].index[at[best]]);
    out.key.push_back(parts[best].key[at[best]]);
    out.score.push_back(parts[best].score[at[best]]);
    ++at[best];
  }
  return out;
}

Selection to_selection(const Ranked& r) {
  Selection s;
  s.index = r.index;
  s.score = r.score;
  return s;
}

std::vector<std::int64_t> checked_exclusions(std::int64_t n, std::int64_t k, const std::vector<std::int64_t>& exclude) {
  QUARRY_USAGE_EXPECTS(k >= 0, "k must be non-negative, got ", k);
  std::vector<std::int64_t> sorted = exclude;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (std::int64_t i : sorted)  // report the first out-of-range index in the caller's order
    if (i < 0 || i >= n)
      for (std::int64_t j : exclude)
        QUARRY_EXPECTS(j >= 0 && j < n, "excluded index ", j, " is outside the pool [0, ", n, ")");
  const std::int64_t excluded = static_cast<std::int64_t>(sorted.size());
  QUARRY_USAGE_EXPECTS(k <= n - excluded, "asked for k = ", k, " samples but only ", n - excluded,
                 " are selectable (pool of ", n, ", ", excluded, " excluded)");
  return sorted;
}

Ranked stream_score_select(const PoolFiles& input, Acquisition acq, const ScoreOptions& o, const SelectOptions& sel,
                           const PoolFiles* emb, const StreamOptions& s, StreamStats* stats) {
  validate_pools(input, acq, o, emb);
  QUARRY_EXPECTS(!sel.power || (std::isfinite(sel.beta) && sel.beta > 0 && sel.beta <= detail::kFloatMax),
                 "power sampling needs a finite beta > 0, got ", sel.beta);
  const std::vector<std::int64_t> excluded = checked_exclusions(input.n(), sel.k, sel.exclude);
  const ScorePlan p = plan_scoring(input, acq, o, emb, s, sel.power);
  emb = p.emb;
  const std::vector<Range>& chunks = p.chunks;
  if (stats) *stats = p.stats;
  Running run{sel.k, {}};
  if (p.cuda) {
#if QUARRY_BUILD_CUDA
    std::vector<ChunkInput> storage(chunks.size());
    const std::vector<ScoreCall> calls = cuda_calls(input, acq, o, p, &storage);
    cuda::select_chunks(calls, sel.k, sel.power, static_cast<float>(sel.beta), sel.seed, excluded, p.device,
                        [&](std::size_t i, std::vector<std::int64_t>&& index, std::vector<float>&& key,
                            std::vector<float>&& score) {
                          run.add(Ranked{std::move(index), std::move(key), std::move(score)});
                          pages_done(input, emb, chunks, i);
                        });
    return run.best;
#endif
  }
  FloatBuffer keys(sel.power ? longest(chunks) : 0);
  cpu_chunks(input, acq, o, emb, chunks, [&](Range r, const float* scores) {
    std::int64_t selectable = 0;  // every row was checked, also for k = 0
    const std::vector<std::uint8_t> mask = chunk_mask(excluded, r, &selectable);
    const std::int64_t kc = std::min(sel.k, selectable);
    if (sel.power && sel.k > 0)  // every score is checked, as the in-memory power sampling does
      cpu::gumbel_keys(scores, r.end - r.begin, static_cast<float>(sel.beta), sel.seed, keys.data(), r.begin);
    select_chunk(scores, sel.power ? keys.data() : scores, r, kc, mask, &run);
  });
  return run.best;
}

Ranked stream_select_scores(const PoolFiles& scores, const SelectOptions& sel, const DeviceSpec& requested,
                            const StreamOptions& s, StreamStats* stats) {
  QUARRY_EXPECTS(scores.rank() == 1 || (scores.rank() == 2 && scores.shape()[1] == 1), scores.spec(),
                 ": expected scores of shape [N], got ", shape_string(scores.shape()));
  const DType dt = scores.dtype();
  QUARRY_EXPECTS(dt == DType::f32 || dt == DType::f64 || dt == DType::f16, scores.spec(),
                 ": expected float scores, got ", dtype_name(dt));
  QUARRY_EXPECTS(!sel.power || (std::isfinite(sel.beta) && sel.beta > 0 && sel.beta <= detail::kFloatMax),
                 "power sampling needs a finite beta > 0, got ", sel.beta);
  const std::vector<std::int64_t> excluded = checked_exclusions(scores.n(), sel.k, sel.exclude);
  const Range range = checked_range(scores.n(), s);
  int device = 0;
  const bool cuda = cuda_device(requested, &device);
  StreamStats st;
  st.budget = budget_of(s, requested);
  // The mapped scores, a float32 copy where they are not float32, keys (power) and a mask byte.
  const std::size_t per_row = scores.sample_bytes() + (dt == DType::f32 ? 0 : 4) + (sel.power ? 4 : 0) + 1;
  st.rows_per_chunk = chunk_rows(st.budget, per_row, 1);
  const std::vector<Range> chunks = plan(range, st.rows_per_chunk, {&scores});
  st.chunks = static_cast<std::int64_t>(chunks.size());
  if (stats) *stats = st;
  Running run{sel.k, {}};
  const std::size_t cap = longest(chunks);
  FloatBuffer converted(dt == DType::f32 ? 0 : cap), keys(sel.power ? cap : 0);
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const Range r = chunks[i];
    const std::int64_t rows = r.end - r.begin;
    if (i + 1 < chunks.size()) scores.prefetch(chunks[i + 1].begin, chunks[i + 1].end);
    const float* x = static_cast<const float*>(scores.row_pointer(r.begin));
    if (dt != DType::f32) {
      const void* p = scores.row_pointer(r.begin);
      for (std::int64_t j = 0; j < rows; ++j)
        converted.data()[j] =
            dt == DType::f64 ? static_cast<float>(static_cast<const double*>(p)[j])
                             : detail::half_to_float(static_cast<const std::uint16_t*>(p)[j]);
      x = converted.data();
    }
    std::int64_t selectable = 0;
    const std::vector<std::uint8_t> mask = chunk_mask(excluded, r, &selectable);
    const std::int64_t kc = std::min(sel.k, selectable);
    if (kc > 0) {
#if QUARRY_BUILD_CUDA
      if (cuda) {  // the chunk's selection on the device, its picks merged here
        for (std::int64_t j = 0; j < rows && !sel.power; ++j)  // named by pool index, as the CPU does
          QUARRY_EXPECTS(x[j] == x[j], "score at index ", r.begin + j, " is NaN; scores must be numbers");
        const std::vector<std::int64_t> local =
            sel.power ? cuda::power(x, rows, kc, static_cast<float>(sel.beta), sel.seed, mask, device, r.begin)
                      : cuda::topk(x, rows, kc, mask, device);
        Ranked part;
        for (std::int64_t j : local) {
          part.index.push_back(r.begin + j);
          part.score.push_back(x[j]);
          part.key.push_back(sel.power ? detail::gumbel_key(x[j], static_cast<float>(sel.beta), sel.seed,
                                                            static_cast<std::uint64_t>(r.begin + j))
                                       : x[j]);
        }
        run.add(std::move(part));
        if (chunks.size() > 1) scores.release(r.begin, r.end);
        continue;
      }
#endif
      (void)cuda;
      if (sel.power) cpu::gumbel_keys(x, rows, static_cast<float>(sel.beta), sel.seed, keys.data(), r.begin);
      select_chunk(x, sel.power ? keys.data() : x, r, kc, mask, &run);
    } else if (sel.k > 0) {  // a chunk with nothing selectable: its scores are checked all the same
      if (sel.power) {
        cpu::gumbel_keys(x, rows, static_cast<float>(sel.beta), sel.seed, keys.data(), r.begin);
      } else {
        for (std::int64_t j = 0; j < rows; ++j)
          QUARRY_EXPECTS(x[j] == x[j], "score at index ", r.begin + j, " is NaN; scores must be numbers");
      }
    }
    if (chunks.size() > 1) scores.release(r.begin, r.end);
  }
  return run.best;
}

// ------------------------------------------------------------------ diversity, two stages
namespace {

bool kcenter_family(DiversityStrategy s) {
  return s == DiversityStrategy::kcenter || s == DiversityStrategy::uncertain_kcenter;
}

// Runs the strategy on gathered rows (global indices `rows`), `labeled` of them excluded; maps
// the picks back to global indices.
Selection run_on_rows(DiversityStrategy strategy, const PoolFiles& emb, const PoolFiles* outputs,
                      const std::vector<std::int64_t>& rows, const std::vector<std::int64_t>& labeled_positions,
                      std::int64_t k, const DiversityOptions& o) {
  const Array e = emb.gather(rows);
  Array out;
  if (outputs) out = outputs->gather(rows);
  DiversityOptions local = o;
  local.k = k;
  local.exclude = labeled_positions;
  local.progress = nullptr;
  if (!o.cluster_labels.empty()) {
    local.cluster_labels.clear();
    for (std::int64_t r : rows) local.cluster_labels.push_back(o.cluster_labels[static_cast<std::size_t>(r)]);
  }
  const ArrayView ov = out.view();
  Selection picks = select_diverse(strategy, e.view(), outputs ? &ov : nullptr, local);
  for (std::int64_t& i : picks.index) i = rows[static_cast<std::size_t>(i)];
  return picks;
}

std::size_t diverse_row_bytes(const PoolFiles& emb, const PoolFiles* outputs) {
  // The gathered rows, their float32 (and double BADGE factor) working copies, and the distances.
  const std::size_t d = static_cast<std::size_t>(emb.shape().back());
  const std::size_t c = outputs ? static_cast<std::size_t>(outputs->shape().back()) : 0;
  return emb.sample_bytes() + d * 4 + (outputs ? outputs->sample_bytes() + c * 8 : 0) + 32;
}

void validate_diverse(DiversityStrategy strategy, const PoolFiles& emb, const PoolFiles* outputs) {
  QUARRY_EXPECTS(emb.rank() == 2, emb.spec(), ": expected embeddings [N, D], got ", shape_string(emb.shape()));
  QUARRY_EXPECTS(!diversity_needs_outputs(strategy) || outputs, diversity_strategy_name(strategy),
                 " needs the model outputs");
  QUARRY_EXPECTS(!outputs || outputs->n() == emb.n(), outputs ? outputs->spec() : "", ": ",
                 outputs ? outputs->n() : 0, " samples, but the embeddings ", emb.spec(), " have ", emb.n());
}

}  // namespace

std::vector<std::int64_t> diverse_candidates(DiversityStrategy strategy, const PoolFiles& emb, const PoolFiles* outputs,
                                             const DiversityOptions& o, const StreamOptions& s, StreamStats* stats) {
  validate_diverse(strategy, emb, outputs);
  // Their picks depend on the whole pool (its clusters, its balls): no two-stage version.
  QUARRY_USAGE_EXPECTS(strategy != DiversityStrategy::typiclust && strategy != DiversityStrategy::probcover,
                       diversity_strategy_name(strategy), " needs the whole pool at once: one process, one "
                       "embeddings file, within --memory-budget");
  const std::vector<std::int64_t> excluded = checked_exclusions(emb.n(), 0, o.exclude);
  const Range range = checked_range(emb.n(), s);
  StreamStats st;
  st.budget = budget_of(s, DeviceSpec{DeviceKind::cpu, 0});
  st.rows_per_chunk = chunk_rows(st.budget, diverse_row_bytes(emb, outputs), 1);
  const std::vector<Range> chunks = plan(range, st.rows_per_chunk, {&emb, outputs});
  st.chunks = static_cast<std::int64_t>(chunks.size());
  if (stats) *stats = st;
  std::vector<std::int64_t> out;
  for (const Range r : chunks) {
    std::int64_t selectable = 0;
    const std::vector<std::uint8_t> mask = chunk_mask(excluded, r, &selectable);
    std::vector<std::int64_t> rows, labeled;
    for (std::int64_t i = r.begin; i < r.end; ++i) {
      if (!mask.empty() && mask[static_cast<std::size_t>(i - r.begin)]) {
        if (kcenter_family(strategy)) {  // the chunk's labeled rows are its initial centres
          labeled.push_back(static_cast<std::int64_t>(rows.size()));
          rows.push_back(i);
        }
        continue;
      }
      rows.push_back(i);
    }
    if (selectable <= o.k) {  // every selectable row is a candidate
      for (std::int64_t i = r.begin; i < r.end; ++i)
        if (mask.empty() || !mask[static_cast<std::size_t>(i - r.begin)]) out.push_back(i);
      continue;
    }
    const Selection picks = run_on_rows(strategy, emb, outputs, rows, labeled, o.k, o);
    out.insert(out.end(), picks.index.begin(), picks.index.end());
    if (o.progress) o.progress({"chunk candidates", r.end - range.begin, range.end - range.begin});
  }
  std::sort(out.begin(), out.end());
  return out;
}

Selection select_among(DiversityStrategy strategy, const PoolFiles& emb, const PoolFiles* outputs,
                       const std::vector<std::int64_t>& candidates, const DiversityOptions& o) {
  validate_diverse(strategy, emb, outputs);
  const std::vector<std::int64_t> excluded = checked_exclusions(emb.n(), o.k, o.exclude);
  std::vector<std::int64_t> rows = candidates, labeled;
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  QUARRY_EXPECTS(static_cast<std::int64_t>(rows.size()) >= o.k, "only ", rows.size(),
                 " candidates for a batch of ", o.k);
  if (kcenter_family(strategy))
    for (std::int64_t i : excluded) {  // every labeled sample is an initial centre
      labeled.push_back(static_cast<std::int64_t>(rows.size()));
      rows.push_back(i);
    }
  return run_on_rows(strategy, emb, outputs, rows, labeled, o.k, o);
}

Selection stream_select_diverse(DiversityStrategy strategy, const PoolFiles& emb, const PoolFiles* outputs,
                                const DiversityOptions& o, const StreamOptions& s, StreamStats* stats) {
  validate_diverse(strategy, emb, outputs);
  const Range range = checked_range(emb.n(), s);
  const std::int64_t budget = budget_of(s, DeviceSpec{DeviceKind::cpu, 0});
  const std::int64_t rows = chunk_rows(budget, diverse_row_bytes(emb, outputs), 1);
  if (range.begin == 0 && range.end == emb.n() && rows >= emb.n() && emb.file_count() == 1 &&
      (!outputs || outputs->file_count() == 1)) {  // it fits: the exact in-memory answer
    if (stats) *stats = StreamStats{1, rows, budget};
    const ArrayView ov = outputs ? outputs->whole() : ArrayView{};
    return select_diverse(strategy, emb.whole(), outputs ? &ov : nullptr, o);
  }
  const std::vector<std::int64_t> cand = diverse_candidates(strategy, emb, outputs, o, s, stats);
  return select_among(strategy, emb, outputs, cand, o);
}

}  // namespace quarry
