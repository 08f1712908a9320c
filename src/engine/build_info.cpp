#include <omp.h>

#include <string>

#include "quarry/device.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/cuda_backend.hpp"
#endif
#include "quarry/version.hpp"

namespace quarry {

BuildInfo build_info() {
  BuildInfo b;
  b.version = QUARRY_VERSION_STRING;
  b.cuda = QUARRY_BUILD_CUDA;
  b.cuda_version = QUARRY_CUDA_VERSION_STRING;
  b.torch_version = QUARRY_TORCH_VERSION_STRING;
  b.mpi = QUARRY_BUILD_MPI;
#ifdef QUARRY_MPI_LIBRARY_VERSION
  b.mpi_version = QUARRY_MPI_LIBRARY_VERSION;
#endif
  b.openmp_threads = omp_get_max_threads();
  return b;
}

std::string build_info_string() {
  const BuildInfo b = build_info();
  std::string s = "quarry " + b.version + "\n";
  s += "  cpu backend: OpenMP, " + std::to_string(b.openmp_threads) + " threads\n";
  if (b.cuda) {
    const int devices = cuda_device_count();
    s += "  cuda: built with CUDA " + b.cuda_version + ", " + std::to_string(devices) +
         " device(s) visible\n";
#if QUARRY_BUILD_CUDA
    for (int d = 0; d < devices; ++d)
      s += "    cuda:" + std::to_string(d) + ": " + cuda::device_description(d) + "\n";
#endif
  } else {
    s += "  cuda: not built\n";
  }
  s += "  libtorch: " + (b.torch_version.empty() ? std::string("not built") : b.torch_version) + "\n";
  s += "  mpi: " + (b.mpi ? b.mpi_version : std::string("not built")) + "\n";
  return s;
}

}  // namespace quarry
