// Parallel loops of the CPU backend: parallel_blocks (fixed blocks by thread number) and
// parallel_chunks (chunks handed out dynamically). No exception may leave an OpenMP region (it would
// terminate the process), so each thread's work runs inside try/catch and the first exception
// is rethrown after the region. The regions have no worksharing constructs, so a thread that
// stops early cannot leave the others waiting at a barrier.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>

namespace quarry {

/// Runs body(begin, end) on each thread over contiguous blocks of [0, n), in index order by
/// thread number (thread t gets [n t / T, n (t+1) / T)); on one thread when !parallel.
/// Rethrows the first exception any thread raised.
template <class Body>
void parallel_blocks(std::int64_t n, bool parallel, Body&& body) {
  std::exception_ptr first;
#pragma omp parallel if (parallel)
  {
    const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    try {
      body(n * t / nt, n * (t + 1) / nt);
    } catch (...) {
#pragma omp critical(quarry_parallel_blocks)
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

// Below this much work (in rough element operations) a loop runs on the calling thread: a
// parallel region costs microseconds on an idle machine, and far more on a busy one, where a
// barrier waits for a descheduled thread; the greedy loops open a few per pick.
constexpr std::int64_t kParallelWork = 1 << 18;

// body(begin, end, thread) over chunks of [0, n), handed out dynamically (the work per sample
// varies a lot once pruning starts), in parallel when `work` >= kParallelWork. No exception
// leaves the parallel region: the first one is rethrown after it. Results must not depend on
// which thread ran a chunk.
template <class Body>
void parallel_chunks(std::int64_t n, std::int64_t chunk, std::int64_t work, Body&& body) {
  std::exception_ptr first;
  const std::int64_t chunks = (n + chunk - 1) / chunk;
#pragma omp parallel if (chunks > 1 && work >= kParallelWork)
  {
    const int t = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t ch = 0; ch < chunks; ++ch) {
      try {
        body(ch * chunk, std::min(n, (ch + 1) * chunk), t);
      } catch (...) {
#pragma omp critical(quarry_parallel_chunks)
        if (!first) first = std::current_exception();
      }
    }
  }
  if (first) std::rethrow_exception(first);
}

inline int max_threads() { return omp_get_max_threads(); }

}  // namespace quarry
