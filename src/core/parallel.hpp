// Parallel loops of the CPU backend. No exception may leave an OpenMP region (it would
// terminate the process), so each thread's work runs inside try/catch and the first exception
// is rethrown after the region. The regions have no worksharing constructs, so a thread that
// stops early cannot leave the others waiting at a barrier.
#pragma once

#include <omp.h>

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

}  // namespace quarry
