// quarry::score: validates the call (shapes, dtypes, embeddings) and runs it on the backend
// the device spec resolves to.
#include <algorithm>
#include <limits>

#include "core/resident.hpp"
#include "cpu/cpu_backend.hpp"
#if QUARRY_BUILD_CUDA
#include "kernels/cuda_backend.hpp"
#endif
#include "quarry/acquisition.hpp"
#include "quarry/error.hpp"

namespace quarry {

namespace {
bool float_dtype(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64;
}
}  // namespace

std::int64_t pool_size(const ArrayView& input) {
  return input.rank() == 3 ? input.shape[1] : input.rank() == 2 ? input.shape[0] : 0;
}

ScoreCall make_score_call(const ArrayView& input, Acquisition acq, const ScoreOptions& o,
                          const ArrayView* emb) {
  const char* name = acquisition_name(acq);
  QUARRY_EXPECTS(input.rank() == 2 || input.rank() == 3, o.input_name, ": expected [N, C] ",
                 "model outputs or an [M, N, C] committee, got shape ", shape_string(input.shape));
  QUARRY_EXPECTS(float_dtype(input.dtype), o.input_name,
                 ": expected float32, float16, bfloat16 or float64, got ", dtype_name(input.dtype));
  const bool committee = input.rank() == 3;
  QUARRY_EXPECTS(committee || !acquisition_needs_committee(acq), name,
                 " needs a committee [M, N, C] (ensemble members or MC-dropout samples); ",
                 o.input_name, " has shape ", shape_string(input.shape));
  ScoreCall call{acq,     input.data, input.dtype, committee ? input.shape[0] : 0,
                 pool_size(input), input.shape[input.rank() - 1], nullptr, o.logits, 0.0f,
                 nullptr, &o.input_name, &o.embeddings_name};
  QUARRY_EXPECTS(call.c >= 1 && call.c <= std::numeric_limits<int>::max(), o.input_name,
                 ": the number of classes must be between 1 and 2^31-1, got ", call.c);
  QUARRY_EXPECTS(!committee || (call.m >= 1 && call.m <= std::numeric_limits<int>::max()),
                 o.input_name, ": a committee needs at least one member, got shape ",
                 shape_string(input.shape));
  if (acquisition_needs_embeddings(acq)) {
    QUARRY_EXPECTS(emb != nullptr, name, " needs embeddings [N, D] (--embeddings)");
    QUARRY_EXPECTS(emb->rank() == 2 && emb->shape[0] == call.n, o.embeddings_name,
                   ": expected embeddings of shape [", call.n, ", D] to match ", o.input_name,
                   ", got ", shape_string(emb->shape));
    QUARRY_EXPECTS(float_dtype(emb->dtype), o.embeddings_name, ": expected float embeddings, got ",
                   dtype_name(emb->dtype));
    call.emb = emb;
  }
  const bool half = input.dtype == DType::f16 || input.dtype == DType::bf16;
  call.tol = static_cast<float>(o.sum_tolerance >= 0 ? o.sum_tolerance : half ? 1e-2 : 1e-3);
  return call;
}

namespace {
// Scores into `out`; out_host: `out` is host memory even for a CUDA input.
void score_to(const ArrayView& input_raw, Acquisition acq, float* out, bool out_host,
              const ScoreOptions& o, const ArrayView* emb_raw) {
  const ScoreArrays arrays(input_raw, emb_raw, o);
  const ArrayView& input = arrays.input;
  ScoreCall call = make_score_call(input, acq, o, arrays.embeddings());
  call.out = out;
  const DeviceSpec device = device_for(input, o.device, o.input_name);
  if (device.kind == DeviceKind::cuda) {
#if QUARRY_BUILD_CUDA
    cuda::score(call, device.index, {input.on_cuda(), input.on_cuda() && !out_host, o.stream});
    return;
#endif
  }
  (void)out_host;
  cpu::score(call);
}
}  // namespace

void score(const ArrayView& input, Acquisition acq, float* out, const ScoreOptions& o,
           const ArrayView* emb) {
  score_to(input, acq, out, false, o, emb);
}

std::vector<float> score(const ArrayView& input, Acquisition acq, const ScoreOptions& o,
                         const ArrayView* emb) {
  std::vector<float> out(static_cast<std::size_t>(std::max<std::int64_t>(pool_size(input), 0)));
  score_to(input, acq, out.data(), true, o, emb);
  return out;
}

}  // namespace quarry
