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
#include <string_view>
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

  /// Every rank's items on rank 0, in rank order; the other ranks get an empty vector. `counts`
  /// (rank 0): how many items each rank sent.
  std::vector<std::int64_t> gather(const std::vector<std::int64_t>& local, std::vector<int>* counts = nullptr);
  std::vector<float> gather(const std::vector<float>& local, std::vector<int>* counts = nullptr);

  /// Rank 0 receives every rank's floats in rank order, in pieces, through `sink` (called on rank
  /// 0 only, its own part first). An exception from `sink` is rethrown on rank 0 after every
  /// piece has arrived, so no rank is left sending.
  void gather_floats(const std::vector<float>& local, const std::function<void(const float*, std::size_t)>& sink);

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool mpi_ = false;
  bool agreed_failure_ = false;  // run() threw the agreed ClusterError
};

// ---------------------------------------------------------------- distributed calls
// The streaming calls over a pool sharded across the cluster's ranks: each rank scores and
// selects its contiguous shard (cluster.shard(n)) under its memory budget, and rank 0 merges
// exactly. Every rank calls them with the same arguments; each runs its own work inside
// Cluster::run, so a failure on any rank is a ClusterError on every rank. On one process they
// are the streaming calls of quarry/stream.hpp. The selections come back on rank 0 (the other
// ranks get an empty one); `stats` gets this rank's chunking.

/// The device of this rank: `text` parsed ("auto", "cpu", "cuda", "cuda:N"); on several ranks,
/// `cuda` or `auto` without an index takes GPU local_rank % (GPUs on the node).
DeviceSpec rank_device(const Cluster& cluster, std::string_view text);

/// This rank's stream options for a pool of n rows: its shard, and with a default budget on
/// the CPU, the node's default budget split between the ranks on the node.
StreamOptions rank_stream(const Cluster& cluster, StreamOptions stream, const DeviceSpec& device, std::int64_t n);

/// The scores of the whole pool, handed to `sink` on rank 0 in pool order (rank 0's shard as
/// it is scored, then the other ranks' shards in rank order).
void distributed_score(Cluster& cluster, const PoolFiles& input, Acquisition acquisition,
                       const ScoreOptions& options, const PoolFiles* embeddings, const StreamOptions& stream,
                       const ScoreSink& sink, StreamStats* stats = nullptr);

/// Scores and selects (top-k or power sampling): the same selection as score_and_select on one
/// process, whatever the number of ranks.
Selection distributed_score_select(Cluster& cluster, const PoolFiles& input, Acquisition acquisition,
                                   const ScoreOptions& options, const SelectOptions& select,
                                   const PoolFiles* embeddings, const StreamOptions& stream,
                                   StreamStats* stats = nullptr);

/// Selects from a pool of scores [N] (top-k or power sampling).
Selection distributed_select_scores(Cluster& cluster, const PoolFiles& scores, const SelectOptions& select,
                                    const DeviceSpec& device, const StreamOptions& stream,
                                    StreamStats* stats = nullptr);

/// A diversity strategy over embeddings (and model outputs where it reads them): on one
/// process stream_select_diverse; on several, each rank's candidates, then the final selection
/// among them on rank 0.
Selection distributed_select_diverse(Cluster& cluster, DiversityStrategy strategy, const PoolFiles& embeddings,
                                     const PoolFiles* outputs, const DiversityOptions& options,
                                     const StreamOptions& stream, StreamStats* stats = nullptr);

}  // namespace quarry
