// Device discovery for the dispatcher and `quarry --version`. The scoring kernels live beside it.
#include <cuda_runtime.h>

namespace quarry {

int cuda_device_count_impl() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}


}  // namespace quarry
