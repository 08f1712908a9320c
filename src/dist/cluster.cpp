// quarry::Cluster: MPI when launched by mpirun/srun (and built with MPI), one rank otherwise.
#include "quarry/dist.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <string>

#if QUARRY_BUILD_MPI
#include <mpi.h>
#endif

namespace quarry {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

namespace {
#if QUARRY_BUILD_MPI
bool abort_pending = false;  // set by ~Cluster, acted on by abort_pending_job()
#endif

#if !QUARRY_BUILD_MPI
// The job's size as the launcher states it (0: not stated).
long launcher_size() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"})
    if (const char* s = std::getenv(v)) return std::strtol(s, nullptr, 10);
  return 0;
}
#endif

#if QUARRY_BUILD_MPI
constexpr std::size_t kPiece = std::size_t{1} << 24;  // floats per message: 64 MiB

template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<std::int64_t>() { return MPI_INT64_T; }
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }

// Every rank's vector concatenated on rank 0 (counts first; k-sized data, so int counts suffice).
// `counts` (optional) receives each rank's count on rank 0.
template <class T>
std::vector<T> gather_on_root(const std::vector<T>& local, int rank, int size, std::vector<int>* counts_out = nullptr) {
  QUARRY_EXPECTS(local.size() < static_cast<std::size_t>(std::numeric_limits<int>::max()),
                 "a rank's part of ", local.size(), " items is too large to gather");
  const int count = static_cast<int>(local.size());
  std::vector<int> counts(static_cast<std::size_t>(size)), displs(static_cast<std::size_t>(size));
  MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::vector<T> all;
  if (rank == 0) {
    long long total = 0;
    for (int r = 0; r < size; ++r) {
      displs[static_cast<std::size_t>(r)] = static_cast<int>(total);
      total += counts[static_cast<std::size_t>(r)];
    }
    QUARRY_EXPECTS(total < std::numeric_limits<int>::max(), "the ranks' parts (", total, " items) are too large to gather");
    all.resize(static_cast<std::size_t>(total));
  }
  MPI_Gatherv(local.data(), count, mpi_type<T>(), all.data(), counts.data(), displs.data(), mpi_type<T>(), 0,
              MPI_COMM_WORLD);
  if (counts_out) *counts_out = std::move(counts);
  return all;
}
#endif
}  // namespace

Cluster::Cluster() {
  if (!launched_by_mpi()) return;
#if QUARRY_BUILD_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  }
  mpi_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
#else
  const long n = launcher_size();
  QUARRY_EXPECTS(n <= 1, "this quarry was built without MPI but was started as one of ", n,
                 " ranks of an MPI job (every rank would write the whole output); rebuild with "
                 "libopenmpi-dev installed, or run it without mpirun");
#endif
}

Cluster::~Cluster() {
#if QUARRY_BUILD_MPI
  if (!mpi_) return;
  if (std::uncaught_exceptions() > 0 && !agreed_failure_ && size_ > 1) {
    abort_pending = true;  // an error outside run(): main() prints it, then abort_pending_job()
    return;                // ends every rank (MPI_Finalize would wait for the others)
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
#endif
}

void abort_pending_job(int code) {
#if QUARRY_BUILD_MPI
  if (abort_pending) {
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
#endif
  (void)code;
}

std::pair<std::int64_t, std::int64_t> Cluster::shard(std::int64_t n) const {
  // n r / R without overflow for any n < 2^63 and R < 2^31.
  auto at = [&](std::int64_t r) {
    return (n / size_) * r + (n % size_) * r / size_;
  };
  return {at(rank_), at(rank_ + 1)};
}

void Cluster::run(const std::function<void()>& work) {
  std::string error;
  [[maybe_unused]] int failed = 0;  // 1: an error, 2: a usage error (the command exits 2); read with MPI
  try {
    work();
  } catch (const ClusterError&) {
    throw;  // already agreed by every rank
  } catch (const std::bad_alloc&) {
    error = "out of memory";
    failed = 1;
  } catch (const std::exception& e) {
    if (!mpi_ || size_ == 1) throw;  // one process: the error as it is (its type gives the exit code)
    error = e.what();
    if (error.empty()) error = "unknown error";
    failed = dynamic_cast<const UsageError*>(&e) ? 2 : 1;
  }
  if (!mpi_ || size_ == 1) {
    if (!error.empty()) throw Error(error);
    return;
  }
#if QUARRY_BUILD_MPI
  int any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (!any) return;
  // Every failing rank's message, to every rank; ranks that failed alike share a line.
  const int len = static_cast<int>(std::min<std::size_t>(error.size(), 1 << 16));
  std::vector<int> lens(static_cast<std::size_t>(size_)), displs(static_cast<std::size_t>(size_));
  MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int total = 0;
  for (int r = 0; r < size_; ++r) {
    displs[static_cast<std::size_t>(r)] = total;
    total += lens[static_cast<std::size_t>(r)];
  }
  std::string all(static_cast<std::size_t>(total), '\0');
  MPI_Allgatherv(error.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::pair<std::string, std::vector<int>>> distinct;  // a message and its ranks
  for (int r = 0; r < size_; ++r) {
    const std::size_t ur = static_cast<std::size_t>(r);
    if (lens[ur] == 0) continue;
    const std::string m = all.substr(static_cast<std::size_t>(displs[ur]), static_cast<std::size_t>(lens[ur]));
    auto it = std::find_if(distinct.begin(), distinct.end(), [&](const auto& d) { return d.first == m; });
    if (it == distinct.end()) distinct.push_back({m, {r}});
    else it->second.push_back(r);
  }
  std::string message;
  for (const auto& [m, ranks] : distinct) {
    std::string who = ranks.size() == 1 ? "rank " : "ranks ";
    for (std::size_t i = 0; i < ranks.size(); ++i) who += (i ? ", " : "") + std::to_string(ranks[i]);
    if (!message.empty()) message += "\n  ";
    message += who + " of " + std::to_string(size_) + ": " + m;
  }
  agreed_failure_ = true;
  throw ClusterError(message, rank_ == 0, any == 2 ? 2 : 1);
#endif
}

namespace {

template <class T>
std::vector<T> gather_items(bool mpi, int rank, int size, const std::vector<T>& local, std::vector<int>* counts) {
  if (!mpi || size == 1) {
    if (counts) *counts = {static_cast<int>(local.size())};
    return local;
  }
#if QUARRY_BUILD_MPI
  return gather_on_root(local, rank, size, counts);
#else
  (void)rank;
  return {};
#endif
}

}  // namespace

std::vector<std::int64_t> Cluster::gather(const std::vector<std::int64_t>& local, std::vector<int>* counts) {
  return gather_items(mpi_, rank_, size_, local, counts);
}

std::vector<float> Cluster::gather(const std::vector<float>& local, std::vector<int>* counts) {
  return gather_items(mpi_, rank_, size_, local, counts);
}

void Cluster::gather_floats(const std::vector<float>& local, const std::function<void(const float*, std::size_t)>& sink) {
  std::exception_ptr failed;
  auto deliver = [&](const float* p, std::size_t n) {
    if (failed || n == 0) return;
    try {
      sink(p, n);
    } catch (...) {
      failed = std::current_exception();
    }
  };
  if (!mpi_ || size_ == 1) {
    deliver(local.data(), local.size());
    if (failed) std::rethrow_exception(failed);
    return;
  }
#if QUARRY_BUILD_MPI
  std::vector<float> piece(rank_ == 0 ? kPiece : 0);  // before the first collective: a failed
  long long mine = static_cast<long long>(local.size());  // allocation cannot strand a sender
  std::vector<long long> counts(static_cast<std::size_t>(size_));
  MPI_Gather(&mine, 1, MPI_LONG_LONG, counts.data(), 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  if (rank_ == 0) {
    deliver(local.data(), local.size());
    for (int r = 1; r < size_; ++r)
      for (long long done = 0; done < counts[static_cast<std::size_t>(r)];) {
        const int n = static_cast<int>(std::min<long long>(static_cast<long long>(kPiece), counts[static_cast<std::size_t>(r)] - done));
        MPI_Recv(piece.data(), n, MPI_FLOAT, r, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        deliver(piece.data(), static_cast<std::size_t>(n));
        done += n;
      }
  } else {
    for (std::size_t done = 0; done < local.size();) {
      const int n = static_cast<int>(std::min(kPiece, local.size() - done));
      MPI_Send(local.data() + done, n, MPI_FLOAT, 0, 7, MPI_COMM_WORLD);
      done += static_cast<std::size_t>(n);
    }
  }
  if (failed) std::rethrow_exception(failed);
#endif
}

}  // namespace quarry
