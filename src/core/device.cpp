#include "quarry/device.hpp"

#include <string>

#include "quarry/error.hpp"

namespace quarry {

#if QUARRY_BUILD_CUDA
int cuda_device_count_impl();  // kernels/device_query.cu
#endif

int cuda_device_count() {
#if QUARRY_BUILD_CUDA
  return cuda_device_count_impl();
#else
  return 0;
#endif
}

DeviceSpec parse_device(std::string_view text) {
  if (text == "auto") return {DeviceKind::automatic, 0};
  if (text == "cpu") return {DeviceKind::cpu, 0};
  if (text == "cuda") return {DeviceKind::cuda, 0};
  if (text.substr(0, 5) == "cuda:" && text.size() > 5 && text.size() < 9) {
    int index = 0;
    for (char ch : text.substr(5)) {
      QUARRY_EXPECTS(ch >= '0' && ch <= '9', "bad device '", text, "': expected cuda:N with N a device number");
      index = index * 10 + (ch - '0');
    }
    return {DeviceKind::cuda, index};
  }
  QUARRY_FAIL("bad device '", text, "': expected auto, cpu, cuda or cuda:N");
}

std::string device_string(const DeviceSpec& d) {
  switch (d.kind) {
    case DeviceKind::automatic: return "auto";
    case DeviceKind::cpu: return "cpu";
    case DeviceKind::cuda: return "cuda:" + std::to_string(d.index);
  }
  return "?";
}

DeviceSpec resolve_device(const DeviceSpec& requested) {
  // The CUDA scoring and selection kernels are not part of this version: every request for
  // CUDA is refused with the reason, and `auto` runs on the CPU.
  if (requested.kind == DeviceKind::cuda) {
#if QUARRY_BUILD_CUDA
    const int count = cuda_device_count();
    QUARRY_EXPECTS(count > 0, "--device ", device_string(requested),
                   ": no CUDA device is visible on this machine; use --device cpu");
    QUARRY_EXPECTS(requested.index < count, "--device ", device_string(requested), ": only ",
                   count, " CUDA device(s) visible");
    QUARRY_FAIL("--device ", device_string(requested),
                ": this version of quarry has no CUDA scoring backend yet; use --device cpu");
#else
    QUARRY_FAIL("--device ", device_string(requested),
                ": this quarry was built without CUDA (QUARRY_CUDA=OFF or no nvcc); use --device cpu");
#endif
  }
  return {DeviceKind::cpu, 0};
}

}  // namespace quarry
