// Context, device buffers and the CUDA/cuBLAS error checks (see kernels/context.cuh).
#include <dlfcn.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/context.cuh"
#include "kernels/cuda_backend.hpp"

namespace quarry::cuda {

void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  QUARRY_FAIL("CUDA error in ", call, " (", file, ":", line, "): ", cudaGetErrorName(e), ": ",
              cudaGetErrorString(e));
}

void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  QUARRY_FAIL("cuBLAS error in ", call, " (", file, ":", line, "): ", cublas_api().status_name(s), ": ",
              cublas_api().status_string(s));
}

const CublasApi& cublas_api() {
  static const CublasApi api = [] {
    const std::string lib = "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR);
    void* h = ::dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) QUARRY_FAIL("cannot load cuBLAS (", lib, "), which the CUDA diversity strategies need: ", ::dlerror());
    auto sym = [&](const char* name) {
      void* f = ::dlsym(h, name);
      if (!f) QUARRY_FAIL("cannot load cuBLAS: ", lib, " has no ", name);
      return f;
    };
    CublasApi a{};
    a.create = reinterpret_cast<decltype(a.create)>(sym("cublasCreate_v2"));
    a.destroy = reinterpret_cast<decltype(a.destroy)>(sym("cublasDestroy_v2"));
    a.set_stream = reinterpret_cast<decltype(a.set_stream)>(sym("cublasSetStream_v2"));
    a.gemm_ex = reinterpret_cast<decltype(a.gemm_ex)>(sym("cublasGemmEx"));
    a.status_name = reinterpret_cast<decltype(a.status_name)>(sym("cublasGetStatusName"));
    a.status_string = reinterpret_cast<decltype(a.status_string)>(sym("cublasGetStatusString"));
    return a;  // the library stays loaded for the life of the process
  }();
  return api;
}

std::string format_bytes(std::size_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024)
    std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
  else
    std::snprintf(buf, sizeof buf, "%zu bytes", bytes);
  return buf;
}

Context::Context(int device) : device_(device) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  QUARRY_EXPECTS(count > 0, "cuda:", device, ": no CUDA device is visible on this machine");
  QUARRY_EXPECTS(device >= 0 && device < count, "cuda:", device, ": only ", count,
                 " CUDA device(s) visible");
  QUARRY_CUDA_CHECK(cudaSetDevice(device));
  QUARRY_CUDA_CHECK(cudaGetDeviceProperties(&props_, device));
  QUARRY_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  // Keep freed blocks in the stream-ordered pool: scoring and selection allocate the same
  // sizes call after call, and returning memory to the driver each time costs a sync.
  cudaMemPool_t pool;
  QUARRY_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  std::uint64_t keep = ~0ull;
  QUARRY_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
}

Context::~Context() {
  // Destroyed at process exit: errors cannot be reported, and the driver may be gone already.
  cudaSetDevice(device_);
  if (cublas_) cublas_api().destroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

void Context::activate() const { QUARRY_CUDA_CHECK(cudaSetDevice(device_)); }

cublasHandle_t Context::cublas() {
  activate();
  if (!cublas_) {
    QUARRY_CUBLAS_CHECK(cublas_api().create(&cublas_));
    QUARRY_CUBLAS_CHECK(cublas_api().set_stream(cublas_, stream_));
  }
  return cublas_;
}

void Context::sync() const {
  activate();
  QUARRY_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Context::wait_for(void* caller) const {
  if (!caller || caller == static_cast<void*>(stream_)) return;
  activate();
  cudaEvent_t queued = nullptr;
  QUARRY_CUDA_CHECK(cudaEventCreateWithFlags(&queued, cudaEventDisableTiming));
  const cudaError_t recorded = cudaEventRecord(queued, static_cast<cudaStream_t>(caller));
  const cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(stream_, queued, 0) : recorded;
  cudaEventDestroy(queued);
  QUARRY_CUDA_CHECK(waited);
}

std::string Context::name() const { return "cuda:" + std::to_string(device_) + " (" + props_.name + ")"; }

void Context::expect_fits(std::size_t bytes, const std::string& what) const {
  activate();
  std::size_t free = 0, total = 0;
  QUARRY_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  // Memory the pool holds for us is free to reuse but not counted by cudaMemGetInfo.
  cudaMemPool_t pool;
  QUARRY_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
  std::uint64_t reserved = 0, used = 0;
  QUARRY_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  QUARRY_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
  const std::size_t available = free + static_cast<std::size_t>(reserved - used);
  QUARRY_EXPECTS(bytes <= available, what, " needs ", format_bytes(bytes), " of device memory on ",
                 name(), " but ", format_bytes(available), " of ", format_bytes(total),
                 " are free; give the command a smaller --memory-budget (the pool is then streamed "
                 "through the device in chunks)");
}

void* device_allocate(Context& ctx, std::size_t bytes, const char* what) {
  if (bytes == 0) return nullptr;
  ctx.activate();
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, ctx.stream());
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    std::size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    QUARRY_FAIL(what, ": out of device memory on ", ctx.name(), ": asked for ", format_bytes(bytes),
                ", ", format_bytes(free), " of ", format_bytes(total), " free");
  }
  check_cuda(e, "cudaMallocAsync", __FILE__, __LINE__);
  return p;
}

void device_free(void* p, cudaStream_t stream) noexcept { cudaFreeAsync(p, stream); }

void copy_to_device(Context& ctx, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  ctx.activate();
  QUARRY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.stream()));
  ctx.sync();
}

void copy_to_host(Context& ctx, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  ctx.activate();
  QUARRY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.sync();
}

void copy_to_host(void* dst, const void* src, std::size_t bytes, int device, void* stream) {
  Context& ctx = context(device);
  ctx.wait_for(stream);
  copy_to_host(ctx, dst, src, bytes);
}

Context& context(int device) {
  static std::mutex mu;
  // Never destroyed: at process exit the CUDA runtime may be torn down before static
  // destructors run, and the driver frees everything anyway.
  static auto& contexts = *new std::vector<std::unique_ptr<Context>>();
  std::lock_guard<std::mutex> lock(mu);
  QUARRY_EXPECTS(device >= 0 && device < 1024, "cuda:", device, ": bad device number");
  if (static_cast<int>(contexts.size()) <= device) contexts.resize(static_cast<std::size_t>(device) + 1);
  if (!contexts[device]) contexts[device] = std::make_unique<Context>(device);
  contexts[device]->activate();
  return *contexts[device];
}

std::string device_description(int device) {
  Context& ctx = context(device);
  const cudaDeviceProp& p = ctx.props();
  int driver = 0;
  QUARRY_CUDA_CHECK(cudaDriverGetVersion(&driver));
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %d SMs, %s, driver %d.%d)", p.name, p.major, p.minor,
                p.multiProcessorCount, format_bytes(p.totalGlobalMem).c_str(), driver / 1000,
                (driver % 1000) / 10);
  return buf;
}

}  // namespace quarry::cuda
