#include "core/resident.hpp"

#include "quarry/error.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/cuda_backend.hpp"
#endif

namespace quarry {

ArrayView contiguous_view(const ArrayView& view, Array* holder, const std::string& name) {
  if (view.contiguous()) {
    ArrayView v = view;
    v.strides.clear();
    return v;
  }
  *holder = contiguous_copy(view, name);
  return holder->view();
}

DeviceSpec device_for(const ArrayView& view, const DeviceSpec& requested, const std::string& name) {
  if (!view.on_cuda()) return resolve_device(requested);
  const std::string where = location_string(view.location);
  QUARRY_USAGE_EXPECTS(requested.kind != DeviceKind::cpu, name, " is in CUDA memory (", where,
                       ") but the CPU was asked for (device cpu): copy it to the host first "
                       "(tensor.cpu()) or use device auto");
  QUARRY_USAGE_EXPECTS(requested.kind != DeviceKind::cuda || requested.index == view.location.device,
                       name, " is in CUDA memory on ", where, " but ", device_string(requested),
                       " was asked for: use device auto or ", where);
#if QUARRY_BUILD_CUDA
  const int count = cuda_device_count();
  QUARRY_EXPECTS(view.location.device >= 0 && view.location.device < count, name, " is on ", where,
                 " but ", count, " CUDA device(s) are visible to quarry");
  return {DeviceKind::cuda, view.location.device};
#else
  QUARRY_FAIL(name, " is in CUDA memory (", where,
              ") but this quarry was built without CUDA: copy it to the host first (tensor.cpu())");
#endif
}

void expect_same_location(const ArrayView& a, const std::string& a_name, const ArrayView& b,
                          const std::string& b_name) {
  QUARRY_USAGE_EXPECTS(a.location.kind == b.location.kind && (!a.on_cuda() || a.location.device == b.location.device),
                       a_name, " is in ", location_string(a.location), " memory but ", b_name, " is in ",
                       location_string(b.location), " memory: pass both from the same device");
}

ScoreArrays::ScoreArrays(const ArrayView& in, const ArrayView* e, const ScoreOptions& o)
    : input(contiguous_view(in, &input_copy, o.input_name)), has_embeddings(e != nullptr) {
  if (!e) return;
  expect_same_location(in, o.input_name, *e, o.embeddings_name);
  emb = contiguous_view(*e, &emb_copy, o.embeddings_name);
}

ArrayView host_view(const ArrayView& view, Array* holder, const std::string& name) {
  if (!view.on_cuda()) return view;
  QUARRY_EXPECTS(view.contiguous(), name, ": a strided array in CUDA memory (",
                 location_string(view.location), ") must be made contiguous first (tensor.contiguous())");
#if QUARRY_BUILD_CUDA
  *holder = Array::allocate(view.dtype, view.shape, name);
  cuda::copy_to_host(holder->mutable_data(), view.data, view.nbytes(), view.location.device);
  return holder->view();
#else
  (void)holder;
  QUARRY_FAIL(name, " is in CUDA memory (", location_string(view.location),
              ") but this quarry was built without CUDA: copy it to the host first (tensor.cpu())");
#endif
}

}  // namespace quarry
