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
      QUARRY_USAGE_EXPECTS(ch >= '0' && ch <= '9', "bad device '", quote_input(text),
                           "': expected cuda:N with N a device number");
      index = index * 10 + (ch - '0');
    }
    return {DeviceKind::cuda, index};
  }
  QUARRY_USAGE_FAIL("bad device '", quote_input(text), "': expected auto, cpu, cuda or cuda:N");
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
  if (requested.kind == DeviceKind::cpu) return {DeviceKind::cpu, 0};
#if QUARRY_BUILD_CUDA
  const int count = cuda_device_count();
  if (requested.kind == DeviceKind::automatic) {  // CUDA where a device exists, else the CPU
    return count > 0 ? DeviceSpec{DeviceKind::cuda, 0} : DeviceSpec{DeviceKind::cpu, 0};
  }
  QUARRY_EXPECTS(count > 0, "--device ", device_string(requested),
                 ": no CUDA device is visible on this machine; use --device cpu (or auto)");
  QUARRY_EXPECTS(requested.index < count, "--device ", device_string(requested), ": only ",
                 count, " CUDA device(s) visible (cuda:0 to cuda:", count - 1, ")");
  return requested;
#else
  QUARRY_EXPECTS(requested.kind != DeviceKind::cuda, "--device ", device_string(requested),
                 ": this quarry was built without CUDA (QUARRY_CUDA=OFF or no nvcc); use --device cpu");
  return {DeviceKind::cpu, 0};
#endif
}

}  // namespace quarry
