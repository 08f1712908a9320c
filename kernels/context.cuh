// Resources of the CUDA backend: a Context per device (stream, cuBLAS handle, stream-ordered
// allocator), RAII device buffers, and the checking macros every CUDA/cuBLAS call goes through.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "quarry/error.hpp"

/// Every CUDA runtime call: a failure throws quarry::Error with the call's text.
#define QUARRY_CUDA_CHECK(call) ::quarry::cuda::check_cuda((call), #call, __FILE__, __LINE__)
/// Every cuBLAS call, likewise.
#define QUARRY_CUBLAS_CHECK(call) ::quarry::cuda::check_cublas((call), #call, __FILE__, __LINE__)
/// After a kernel launch: a bad launch configuration is an Error naming the kernel.
#define QUARRY_CUDA_LAUNCH_CHECK(kernel) \
  ::quarry::cuda::check_cuda(cudaGetLastError(), "launch of " kernel, __FILE__, __LINE__)

namespace quarry::cuda {

void check_cuda(cudaError_t e, const char* call, const char* file, int line);
void check_cublas(cublasStatus_t s, const char* call, const char* file, int line);

/// The few cuBLAS functions quarry calls, from libcublas loaded on first use (dlopen): linking
/// cuBLAS would load it, and cuBLASLt behind it, into every process at start (0.26 s and
/// 210 MiB on a 2-core machine), also for commands that never run a GEMM.
struct CublasApi {
  decltype(&::cublasCreate_v2) create;
  decltype(&::cublasDestroy_v2) destroy;
  decltype(&::cublasSetStream_v2) set_stream;
  // cublasGemmEx, the C function (the header adds a C++ overload of the same name).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                            int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                            cublasGemmAlgo_t);
  decltype(&::cublasGetStatusName) status_name;
  decltype(&::cublasGetStatusString) status_string;
};
/// Loads libcublas.so.<major> once; an Error naming the library and dlerror() where it cannot.
const CublasApi& cublas_api();

/// "1.50 GiB"
std::string format_bytes(std::size_t bytes);

class Context;

/// Device memory of n elements of T from the context's stream-ordered pool (cudaMallocAsync),
/// returned to the pool when the buffer goes out of scope. Out of memory is an Error naming
/// `what`, the size asked for and what the device has free.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Context& ctx, std::size_t n, const char* what);
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    DeviceBuffer tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  ~DeviceBuffer();
  T* data() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

 private:
  void swap(DeviceBuffer& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(stream_, o.stream_);
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
  cudaStream_t stream_ = nullptr;
};

void* device_allocate(Context& ctx, std::size_t bytes, const char* what);
void device_free(void* p, cudaStream_t stream) noexcept;

/// One per device and process (see context()): the device's stream, cuBLAS handle and
/// properties. Methods make the device current first, so callers on any thread may use it;
/// work on one context is ordered on its stream.
class Context {
 public:
  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  const cudaDeviceProp& props() const { return props_; }
  /// Makes this context's device current on the calling thread.
  void activate() const;
  /// The cuBLAS handle, bound to stream(); created on first use.
  cublasHandle_t cublas();
  /// Waits for the stream; a failed kernel surfaces here as an Error.
  void sync() const;
  /// Orders this context's stream after the work queued so far on `caller` (a cudaStream_t of
  /// the same device; null: nothing to wait for).
  void wait_for(void* caller) const;
  /// Throws an Error unless `bytes` can be allocated now: "<what> needs 3.20 GiB of device
  /// memory on cuda:0 (NVIDIA H100), 1.10 GiB are free; pools larger than device memory need
  /// a smaller --memory-budget".
  void expect_fits(std::size_t bytes, const std::string& what) const;
  /// "cuda:0 (NVIDIA H100 80GB HBM3)"
  std::string name() const;

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cudaDeviceProp props_{};
};

/// The context of `device`, created on first use; an Error when the device does not exist.
Context& context(int device);

template <class T>
DeviceBuffer<T>::DeviceBuffer(Context& ctx, std::size_t n, const char* what)
    : p_(static_cast<T*>(device_allocate(ctx, n * sizeof(T), what))), n_(n), stream_(ctx.stream()) {}

template <class T>
DeviceBuffer<T>::~DeviceBuffer() {
  if (p_) device_free(p_, stream_);
}

/// Copies host -> device (or back) on the context's stream; waits for it to finish.
void copy_to_device(Context& ctx, void* dst, const void* src, std::size_t bytes);
void copy_to_host(Context& ctx, void* dst, const void* src, std::size_t bytes);

}  // namespace quarry::cuda
