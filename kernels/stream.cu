// Streaming on the device (kernels/cuda_backend.hpp: score_chunks, select_chunks): a pool's
// chunks go through two slots of device buffers, so that the host-to-device copy of chunk i+1
// (on a copy stream of its own) overlaps the scoring of chunk i (on the context's stream).
//
// Slot b = i % 2 serves chunk i. Its events order the two streams:
//   copied    recorded on the copy stream after chunk i's input (and embeddings) are on the
//             device; the compute stream waits for it before chunk i's scoring kernel, and the
//             host waits for it before it refills the slot's pinned staging buffer (chunk i+2);
//   computed  recorded on the compute stream after chunk i's scoring kernel, the last reader of
//             the slot's device input; the copy stream waits for it before chunk i+2's copy;
//   results   recorded on the compute stream after chunk i's fault word (and scores) are back
//             in the slot's pinned host buffers; the host waits for it before it reads them.
// Per chunk the host: enqueues the scoring of chunk i, stages and enqueues the copy of chunk
// i+1, then finishes chunk i-1 (score_chunks: done() is one chunk late, so that the device is
// never without work) or chunk i (select_chunks, whose top-k synchronises the compute stream
// anyway). Source rows in pinned memory are copied by DMA straight from where they are;
// pageable rows are first copied by the host into the slot's pinned staging buffer.
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/rows.hpp"
#include "kernels/cuda_backend.hpp"
#include "kernels/device_api.cuh"
#include "quarry/detail/radix_select.hpp"
#include "quarry/error.hpp"

namespace quarry::cuda {
namespace {

// ------------------------------------------------------------------ RAII handles
// Destructors never throw: a failure there is ignored (and a non-sticky error cleared).

class Stream {
 public:
  explicit Stream(const Context& ctx) {
    ctx.activate();
    QUARRY_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
  }
  ~Stream() {
    if (s_ && cudaStreamDestroy(s_) != cudaSuccess) cudaGetLastError();
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class Event {
 public:
  Event() { QUARRY_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  ~Event() {
    if (e_ && cudaEventDestroy(e_) != cudaSuccess) cudaGetLastError();
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Page-locked host memory of n elements of T (none for n = 0).
template <class T>
class Pinned {
 public:
  Pinned() = default;
  Pinned(std::size_t n, const char* what) {
    if (n == 0) return;
    void* p = nullptr;
    const cudaError_t e = cudaMallocHost(&p, n * sizeof(T));
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      QUARRY_FAIL(what, ": cannot allocate ", format_bytes(n * sizeof(T)),
                  " of pinned host memory for streaming; use a smaller --memory-budget");
    }
    check_cuda(e, "cudaMallocHost", __FILE__, __LINE__);
    p_ = static_cast<T*>(p);
  }
  ~Pinned() {
    if (p_ && cudaFreeHost(p_) != cudaSuccess) cudaGetLastError();
  }
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;
  Pinned(Pinned&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Pinned& operator=(Pinned&& o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  T* data() const { return p_; }

 private:
  T* p_ = nullptr;
};

// ------------------------------------------------------------------ chunk geometry

std::int64_t members(const ScoreCall& c) { return c.m > 0 ? c.m : 1; }
std::size_t member_bytes(const ScoreCall& c) {
  return static_cast<std::size_t>(c.n) * static_cast<std::size_t>(c.c) * dtype_size(c.dtype);
}
std::size_t input_bytes(const ScoreCall& c) { return static_cast<std::size_t>(members(c)) * member_bytes(c); }
std::size_t emb_bytes(const ScoreCall& c) { return c.emb ? c.emb->nbytes() : 0; }
const unsigned char* member_rows(const ScoreCall& c, std::int64_t m) {
  return static_cast<const unsigned char*>(c.input) +
         static_cast<std::size_t>(m) * static_cast<std::size_t>(c.stride_m()) * dtype_size(c.dtype);
}

// Whether [p, p + bytes) is page-locked host memory (cudaMallocHost, cudaHostRegister): its
// first and last byte.
bool is_pinned(const void* p) {
  cudaPointerAttributes a{};
  QUARRY_CUDA_CHECK(cudaPointerGetAttributes(&a, p));
  return a.type == cudaMemoryTypeHost;
}
bool pinned_range(const void* p, std::size_t bytes) {
  if (bytes == 0) return true;
  return is_pinned(p) && is_pinned(static_cast<const unsigned char*>(p) + (bytes - 1));
}
bool input_pinned(const ScoreCall& c) {
  for (std::int64_t m = 0; m < members(c); ++m)
    if (!pinned_range(member_rows(c, m), member_bytes(c))) return false;
  return true;
}

// ------------------------------------------------------------------ the pipeline

struct Slot {
  DeviceBuffer<unsigned char> input, emb;
  DeviceBuffer<float> scores;
  DeviceBuffer<unsigned long long> fault;
  Pinned<unsigned char> stage_input, stage_emb;  // for pageable sources
  Pinned<float> host_scores;                     // score_chunks only
  Pinned<unsigned long long> host_fault;
  Event copied, computed, results;
  ArrayView emb_view;  // the device embeddings of the slot's chunk
};

class Pipeline {
 public:
  // `select_bytes`: device memory the caller needs besides the two slots (checked up front
  // with them); `return_scores`: each chunk's scores come back to the slot's host_scores.
  Pipeline(Context& ctx, const std::vector<ScoreCall>& chunks, bool return_scores,
           std::size_t select_bytes, const std::string& what)
      : ctx_(ctx), chunks_(chunks), copy_(ctx) {
    std::size_t in = 0, emb = 0, stage_in = 0, stage_emb = 0;
    std::int64_t max_n = 0;
    for (const ScoreCall& c : chunks) {
      in = std::max(in, input_bytes(c));
      emb = std::max(emb, emb_bytes(c));
      max_n = std::max(max_n, c.n);
      const bool pin_in = input_pinned(c), pin_emb = !c.emb || pinned_range(c.emb->data, emb_bytes(c));
      pinned_input_.push_back(pin_in);
      pinned_emb_.push_back(pin_emb);
      if (!pin_in) stage_in = std::max(stage_in, input_bytes(c));
      if (!pin_emb) stage_emb = std::max(stage_emb, emb_bytes(c));
    }
    const std::size_t n = static_cast<std::size_t>(max_n);
    const std::size_t slot = in + emb + n * sizeof(float) + sizeof(unsigned long long);
    ctx.expect_fits(2 * slot + select_bytes + (64u << 20), what);
    for (Slot& s : slots_) {
      // At least 16 bytes, so that a chunk's embeddings never get a null (absent) pointer.
      s.input = DeviceBuffer<unsigned char>(ctx, std::max<std::size_t>(in, 16), "streamed model outputs");
      if (emb > 0) s.emb = DeviceBuffer<unsigned char>(ctx, std::max<std::size_t>(emb, 16), "streamed embeddings");
      s.scores = DeviceBuffer<float>(ctx, std::max<std::size_t>(n, 1), "streamed scores");
      s.fault = DeviceBuffer<unsigned long long>(ctx, 1, "fault word");
      s.stage_input = Pinned<unsigned char>(stage_in, "staging buffer of the model outputs");
      s.stage_emb = Pinned<unsigned char>(stage_emb, "staging buffer of the embeddings");
      if (return_scores) s.host_scores = Pinned<float>(std::max<std::size_t>(n, 1), "pinned scores");
      s.host_fault = Pinned<unsigned long long>(1, "pinned fault word");
    }
    // The buffers come from the compute stream's stream-ordered pool: they must exist before
    // the copy stream writes them.
    ctx.sync();
  }

  // Every copy and kernel that may still read or write the buffers ends before they are freed
  // (an exception from a bad row or from done() leaves work in flight).
  ~Pipeline() {
    if (cudaSetDevice(ctx_.device()) != cudaSuccess) cudaGetLastError();
    if (cudaStreamSynchronize(copy_.get()) != cudaSuccess) cudaGetLastError();
    if (cudaStreamSynchronize(ctx_.stream()) != cudaSuccess) cudaGetLastError();
  }
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  Slot& slot(std::size_t i) { return slots_[i % 2]; }

  // Stages chunk i (pageable rows) and enqueues its copy to the device on the copy stream.
  void prepare(std::size_t i) {
    const ScoreCall& c = chunks_[i];
    Slot& s = slot(i);
    ctx_.activate();
    const cudaStream_t cs = copy_.get();
    const bool stage = !pinned_input_[i] || !pinned_emb_[i];
    // The pinned staging buffer was last read by the copy of chunk i-2 (no-op if none yet).
    if (stage) QUARRY_CUDA_CHECK(cudaEventSynchronize(s.copied.get()));
    // The device buffers were last read by the scoring kernel of chunk i-2.
    QUARRY_CUDA_CHECK(cudaStreamWaitEvent(cs, s.computed.get(), 0));
    const std::size_t mb = member_bytes(c);
    if (mb > 0) {
      if (pinned_input_[i]) {
        if (c.stride_m() == c.n * c.c) {
          QUARRY_CUDA_CHECK(cudaMemcpyAsync(s.input.data(), c.input, input_bytes(c), cudaMemcpyHostToDevice, cs));
        } else {
          for (std::int64_t m = 0; m < members(c); ++m)
            QUARRY_CUDA_CHECK(cudaMemcpyAsync(s.input.data() + static_cast<std::size_t>(m) * mb, member_rows(c, m),
                                              mb, cudaMemcpyHostToDevice, cs));
        }
      } else {
        for (std::int64_t m = 0; m < members(c); ++m)
          std::memcpy(s.stage_input.data() + static_cast<std::size_t>(m) * mb, member_rows(c, m), mb);
        QUARRY_CUDA_CHECK(cudaMemcpyAsync(s.input.data(), s.stage_input.data(), input_bytes(c),
                                          cudaMemcpyHostToDevice, cs));
      }
    }
    const std::size_t eb = emb_bytes(c);
    if (eb > 0) {
      const void* src = c.emb->data;
      if (!pinned_emb_[i]) {
        std::memcpy(s.stage_emb.data(), c.emb->data, eb);
        src = s.stage_emb.data();
      }
      QUARRY_CUDA_CHECK(cudaMemcpyAsync(s.emb.data(), src, eb, cudaMemcpyHostToDevice, cs));
    }
    QUARRY_CUDA_CHECK(cudaEventRecord(s.copied.get(), cs));
  }

  // Enqueues the scoring of chunk i on the compute stream, after its copy: scores to the slot's
  // device scores, the fault word (and the scores, with return_scores) to its pinned buffers.
  void score(std::size_t i) {
    const ScoreCall& host = chunks_[i];
    Slot& s = slot(i);
    ctx_.activate();
    const cudaStream_t st = ctx_.stream();
    QUARRY_CUDA_CHECK(cudaStreamWaitEvent(st, s.copied.get(), 0));
    QUARRY_CUDA_CHECK(cudaMemsetAsync(s.fault.data(), 0xff, sizeof(unsigned long long), st));
    ScoreCall dev = host;
    dev.input = s.input.data();
    dev.member_stride = 0;  // the members are contiguous on the device
    if (host.emb) {
      s.emb_view = ArrayView{s.emb.data(), host.emb->dtype, host.emb->shape};
      dev.emb = &s.emb_view;
    }
    dev.out = s.scores.data();
    launch_score(ctx_, dev, s.fault.data());
    QUARRY_CUDA_CHECK(cudaEventRecord(s.computed.get(), st));
    QUARRY_CUDA_CHECK(cudaMemcpyAsync(s.host_fault.data(), s.fault.data(), sizeof(unsigned long long),
                                      cudaMemcpyDeviceToHost, st));
    if (s.host_scores.data() && host.n > 0)
      QUARRY_CUDA_CHECK(cudaMemcpyAsync(s.host_scores.data(), s.scores.data(),
                                        static_cast<std::size_t>(host.n) * sizeof(float), cudaMemcpyDeviceToHost, st));
    QUARRY_CUDA_CHECK(cudaEventRecord(s.results.get(), st));
  }

  // Waits for chunk i's results; a bad row is the CPU backend's Error for its global row.
  void wait_results(std::size_t i) {
    Slot& s = slot(i);
    QUARRY_CUDA_CHECK(cudaEventSynchronize(s.results.get()));
    const unsigned long long fault = *s.host_fault.data();
    if (fault != kNoFault) diagnose_row(chunks_[i], static_cast<std::int64_t>(fault));
  }

 private:
  Context& ctx_;
  const std::vector<ScoreCall>& chunks_;
  std::vector<bool> pinned_input_, pinned_emb_;
  Stream copy_;
  Slot slots_[2];
};

std::string describe(const std::vector<ScoreCall>& chunks, const char* verb) {
  const std::string* name = chunks.front().input_name;
  return std::string(verb) + " " + (name ? *name : std::string("the pool")) + " in " +
         std::to_string(chunks.size()) + " chunks";
}

}  // namespace

std::size_t free_memory(int device) {
  Context& ctx = context(device);
  ctx.activate();
  std::size_t free = 0, total = 0;
  QUARRY_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return free;
}

void score_chunks(const std::vector<ScoreCall>& chunks, int device,
                  const std::function<void(std::size_t, const float*)>& done) {
  if (chunks.empty()) return;
  Context& ctx = context(device);
  Pipeline p(ctx, chunks, true, 0, describe(chunks, "scoring"));
  auto finish = [&](std::size_t i) {
    p.wait_results(i);
    done(i, p.slot(i).host_scores.data());
  };
  p.prepare(0);
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    // done(i-2) has returned: the slot's pinned scores are free to be written again.
    p.score(i);
    if (i + 1 < chunks.size()) p.prepare(i + 1);  // overlaps the scoring of chunk i
    if (i > 0) finish(i - 1);                     // while the device scores chunk i
  }
  finish(chunks.size() - 1);
}

void select_chunks(const std::vector<ScoreCall>& chunks, std::int64_t k, bool power, float beta,
                   std::uint64_t seed, const std::vector<std::int64_t>& exclude_sorted, int device,
                   const ChunkPicks& done) {
  if (chunks.empty()) return;
  Context& ctx = context(device);
  std::int64_t max_n = 0;
  for (const ScoreCall& c : chunks) max_n = std::max(max_n, c.n);
  const std::int64_t kmax = std::max<std::int64_t>(0, std::min(k, max_n));
  const auto un = static_cast<std::size_t>(max_n), uk = static_cast<std::size_t>(kmax);
  // Keys (power), the exclusion mask, the picks (index, key, score) and topk_device's own
  // memory (composites, sort, candidates).
  const std::size_t select_bytes = (power ? un * sizeof(float) : 0) + un / 8 + 16 * uk + 24 * uk +
                                   (un / detail::radix::kCompactRatio) * 8 + (1u << 20);
  Pipeline p(ctx, chunks, false, select_bytes, describe(chunks, power ? "power sampling of" : "top-k of"));
  DeviceBuffer<float> d_keys;
  if (power) d_keys = DeviceBuffer<float>(ctx, std::max<std::size_t>(un, 1), "power-sampling keys");
  DeviceBuffer<std::int64_t> d_index(ctx, std::max<std::size_t>(uk, 1), "selected indices");
  DeviceBuffer<float> d_key(ctx, std::max<std::size_t>(uk, 1), "selected keys");
  DeviceBuffer<float> d_score;
  if (power) d_score = DeviceBuffer<float>(ctx, std::max<std::size_t>(uk, 1), "selected scores");

  p.prepare(0);
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const ScoreCall& c = chunks[i];
    p.score(i);
    if (i + 1 < chunks.size()) p.prepare(i + 1);  // overlaps the scoring and selection of chunk i
    p.wait_results(i);                             // every row is checked, also for kc = 0

    const std::int64_t first = c.row_offset, last = c.row_offset + c.n;
    const auto lo = std::lower_bound(exclude_sorted.begin(), exclude_sorted.end(), first);
    const auto hi = std::lower_bound(lo, exclude_sorted.end(), last);
    const std::int64_t excluded = static_cast<std::int64_t>(hi - lo);
    const std::int64_t kc = std::min(k, c.n - excluded);
    std::vector<std::int64_t> index;
    std::vector<float> key, score;
    if (kc <= 0) {
      done(i, std::move(index), std::move(key), std::move(score));
      continue;
    }
    std::vector<std::uint8_t> mask;
    if (excluded > 0) {
      mask.assign(static_cast<std::size_t>(c.n), 0);
      for (auto it = lo; it != hi; ++it) mask[static_cast<std::size_t>(*it - first)] = 1;
    }
    // All on the compute stream, in order after chunk i's scoring; synchronous (topk_device).
    const DeviceBuffer<std::uint32_t> d_mask = upload_exclusions(ctx, mask, c.n);
    const float* d_scores = p.slot(i).scores.data();
    const float* rank_by = d_scores;
    if (power) {
      gumbel_keys_checked(ctx, d_scores, c.n, beta, seed, d_keys.data(), first);
      rank_by = d_keys.data();
    }
    topk_device(ctx, rank_by, c.n, kc, d_mask.data(), d_index.data(), d_key.data());
    if (power) launch_gather(ctx, d_scores, d_index.data(), kc, d_score.data());
    const auto ukc = static_cast<std::size_t>(kc);
    index.resize(ukc);
    key.resize(ukc);
    copy_to_host(ctx, index.data(), d_index.data(), ukc * sizeof(std::int64_t));
    copy_to_host(ctx, key.data(), d_key.data(), ukc * sizeof(float));
    if (power) {
      score.resize(ukc);
      copy_to_host(ctx, score.data(), d_score.data(), ukc * sizeof(float));
    } else {
      score = key;  // top-k ranks by the score itself
    }
    for (std::int64_t& j : index) j += first;  // chunk-local -> global
    done(i, std::move(index), std::move(key), std::move(score));
  }
}

}  // namespace quarry::cuda
