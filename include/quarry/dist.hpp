// Multi-process runs on MPI (mpirun, srun): one rank per GPU or CPU socket, each over a
// contiguous shard of the pool's rows; the ranks' local selections are gathered and merged
// exactly on rank 0, which alone writes the output. See docs/scale-out.md.
//
// Every collective here is entered by every rank. Work that can fail runs inside run(), which
// agrees on the outcome: if one rank fails, every rank throws, so no rank is left waiting in a
// collective that another rank will never reach.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/stream.hpp"

namespace quarry {

/// The error every rank throws when some rank failed. `echo` is true on rank 0 only: the command
/// prints the message (every failing rank's) once, and every rank exits 1.
class ClusterError : public Error {
 public:
  ClusterError(const std::string& what, bool echo, int exit_code = 1)
      : Error(what), echo_(echo), exit_code_(exit_code) {}
  bool echo() const { return echo_; }
  /// 2 when a rank failed on a bad argument (a UsageError), else 1.
  int exit_code() const { return exit_code_; }

 private:
  bool echo_;
  int exit_code_;
};

/// True when an MPI launcher started this process (OMPI_COMM_WORLD_SIZE, PMIX_RANK, PMI_RANK or
/// PMI_SIZE is set).
bool launched_by_mpi();

/// After a Cluster was destroyed by an error outside Cluster::run (which the other ranks know
/// nothing of): MPI_Abort(code), ending every rank. Does nothing otherwise.
void abort_pending_job(int code);

class Cluster {
 public:
  /// Joins the MPI job when launched_by_mpi() and this build has MPI (MPI_Init); otherwise a
  /// cluster of one rank that makes no MPI call. Launched as one of several ranks by a build
  /// without MPI is an Error (every rank would write the whole output).
  Cluster();
  /// MPI_Finalize; when unwinding from an error the ranks did not agree on, no finalize: the
  /// caller prints the error and calls abort_pending_job() (a rank must never wait forever for
  /// one that has gone).
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// The rank among the ranks of this node (MPI_COMM_TYPE_SHARED): it picks the GPU.
  int local_rank() const { return local_rank_; }
  /// The number of ranks on this node: they share its memory budget.
  int local_size() const { return local_size_; }
  bool root() const { return rank_ == 0; }

  /// This rank's rows of a pool of n: [n r / R, n (r+1) / R).
  std::pair<std::int64_t, std::int64_t> shard(std::int64_t n) const;

  /// Runs `work` on every rank and agrees on the outcome: when any rank threw, every rank throws
  /// a ClusterError "rank R of S: <message>" (the failing ranks' messages, lowest rank first).
  /// `work` may enter collectives only where every rank is sure to reach them.
  void run(const std::function<void()>& work);

  /// The k best of every rank's local part, merged on rank 0 (merge_ranked); the other ranks get
  /// an empty result.
  Ranked merge(const Ranked& local, std::int64_t k);

  /// Every rank's indices on rank 0, in rank order; the other ranks get an empty vector.
  std::vector<std::int64_t> gather(const std::vector<std::int64_t>& local);

  /// Rank 0 receives every rank's floats in rank order, in pieces, through `sink` (called on rank
  /// 0 only, its own part first). An exception from `sink` is rethrown on rank 0 after every
  /// piece has arrived, so no rank is left sending.
  void gather_floats(const std::vector<float>& local, const std::function<void(const float*, std::size_t)>& sink);

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool mpi_ = false;
  bool agreed_failure_ = false;  // run() threw the agreed ClusterError
};

}  // namespace quarry
