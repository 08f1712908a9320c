// Where work runs: --device auto|cpu|cuda[:N].
#pragma once

#include <string>
#include <string_view>

namespace quarry {

enum class DeviceKind { automatic, cpu, cuda };

struct DeviceSpec {
  DeviceKind kind = DeviceKind::automatic;
  int index = 0;
};

/// "auto", "cpu", "cuda", "cuda:1"; anything else is an Error.
DeviceSpec parse_device(std::string_view text);
std::string device_string(const DeviceSpec& d);

/// Resolves `automatic` to the backend that will run. Asking for CUDA where this build or this
/// machine cannot provide it is an Error that says why.
DeviceSpec resolve_device(const DeviceSpec& requested);

/// Number of CUDA devices visible (0 in a CPU-only build or on a machine without a GPU).
int cuda_device_count();

}  // namespace quarry
