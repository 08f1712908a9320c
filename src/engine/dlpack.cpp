#include "quarry/dlpack.hpp"

#include <utility>

#include "quarry/error.hpp"

namespace quarry {

namespace {

DType dtype_of(const DLDataType& t, const std::string& source) {
  QUARRY_USAGE_EXPECTS(t.lanes == 1, source, ": vector dtypes (", int(t.lanes), " lanes) are not supported");
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 16) return DType::f16;
      if (t.bits == 32) return DType::f32;
      if (t.bits == 64) return DType::f64;
      break;
    case kDLBfloat:
      if (t.bits == 16) return DType::bf16;
      break;
    case kDLInt:
      if (t.bits == 8) return DType::i8;
      if (t.bits == 16) return DType::i16;
      if (t.bits == 32) return DType::i32;
      if (t.bits == 64) return DType::i64;
      break;
    case kDLUInt:
      if (t.bits == 8) return DType::u8;
      break;
    default:
      break;
  }
  QUARRY_USAGE_FAIL(source, ": unsupported dtype (DLPack code ", int(t.code), ", ", int(t.bits),
                    " bits); expected float16, bfloat16, float32, float64 or an integer type");
}

Location location_of(const DLDevice& d, const std::string& source) {
  switch (d.device_type) {
    case kDLCPU:
    case kDLCUDAHost: return {MemoryKind::host, 0};
    case kDLCUDA: return {MemoryKind::cuda, d.device_id};
    default:
      QUARRY_USAGE_FAIL(source, ": memory of DLPack device type ", int(d.device_type),
                        " is not supported; quarry reads host (CPU) and CUDA memory");
  }
}

template <class T>
struct Owned {
  std::vector<T> values;
  std::int64_t shape[1];
  DLManagedTensor tensor{};
};

template <class T>
DLManagedTensor* export_vector(std::vector<T>&& values, DLDataType dtype) {
  auto* owned = new Owned<T>{std::move(values), {0}, {}};
  owned->shape[0] = static_cast<std::int64_t>(owned->values.size());
  DLTensor& t = owned->tensor.dl_tensor;
  t.data = owned->values.data();
  t.device = {kDLCPU, 0};
  t.ndim = 1;
  t.dtype = dtype;
  t.shape = owned->shape;
  t.strides = nullptr;
  t.byte_offset = 0;
  owned->tensor.manager_ctx = owned;
  owned->tensor.deleter = [](DLManagedTensor* self) { delete static_cast<Owned<T>*>(self->manager_ctx); };
  return &owned->tensor;
}

}  // namespace

ArrayView view_of(const DLTensor& t, const std::string& source) {
  QUARRY_USAGE_EXPECTS(t.ndim >= 0 && t.ndim <= 32, source, ": rank ", t.ndim, " is out of range");
  ArrayView v;
  v.dtype = dtype_of(t.dtype, source);
  v.location = location_of(t.device, source);
  v.shape.assign(t.shape, t.shape + t.ndim);
  for (std::int64_t d : v.shape) QUARRY_USAGE_EXPECTS(d >= 0, source, ": negative extent in shape ", shape_string(v.shape));
  if (t.strides) v.strides.assign(t.strides, t.strides + t.ndim);
  for (std::int64_t s : v.strides)
    QUARRY_USAGE_EXPECTS(s >= 0, source, ": negative strides (a flipped view) are not supported; copy it first");
  v.data = static_cast<const unsigned char*>(t.data) + t.byte_offset;
  if (v.numel() == 0) v.strides.clear();
  return v;
}

DLPackArray::DLPackArray(DLManagedTensor* tensor, const std::string& source) : tensor_(tensor) {
  if (!tensor_) return;
  try {
    view_ = view_of(tensor_->dl_tensor, source);
  } catch (...) {  // a constructor that throws runs no destructor: hand the tensor back here
    if (tensor_->deleter) tensor_->deleter(tensor_);
    throw;
  }
}

DLPackArray::~DLPackArray() {
  if (tensor_ && tensor_->deleter) tensor_->deleter(tensor_);
}

DLPackArray::DLPackArray(DLPackArray&& o) noexcept : tensor_(std::exchange(o.tensor_, nullptr)), view_(std::move(o.view_)) {}

DLPackArray& DLPackArray::operator=(DLPackArray&& o) noexcept {
  if (this != &o) {
    if (tensor_ && tensor_->deleter) tensor_->deleter(tensor_);
    tensor_ = std::exchange(o.tensor_, nullptr);
    view_ = std::move(o.view_);
  }
  return *this;
}

DLManagedTensor* DLPackArray::release() {
  view_ = {};
  return std::exchange(tensor_, nullptr);
}

DLManagedTensor* to_dlpack(std::vector<float>&& values) {
  return export_vector(std::move(values), DLDataType{kDLFloat, 32, 1});
}

DLManagedTensor* to_dlpack(std::vector<std::int64_t>&& values) {
  return export_vector(std::move(values), DLDataType{kDLInt, 64, 1});
}

}  // namespace quarry
