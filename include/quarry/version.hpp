// What this build of quarry is and what it was built with.
#pragma once

#include <string>

namespace quarry {

struct BuildInfo {
  std::string version;        // "0.1.0"
  bool cuda = false;          // CUDA backend compiled in
  std::string cuda_version;   // toolkit version at build time ("13.0.48"), empty without CUDA
  std::string torch_version;  // LibTorch found at build time, empty without
  bool mpi = false;
  std::string mpi_version;
  int openmp_threads = 1;     // threads the CPU backend uses by default
};

BuildInfo build_info();
/// Multi-line human-readable form, printed by `quarry --version`.
std::string build_info_string();

}  // namespace quarry
