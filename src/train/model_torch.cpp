// Training and inference with LibTorch, kept to the C++ API shared by LibTorch 1.13 (Debian)
// and 2.x. Its headers are slow to compile: only this file and model_torch_train.cpp include
// them (through model_torch_internal.hpp).
//
// A Model is one or more members (an ensemble); a member is either a built-in network (cnn,
// mlp: a trunk that ends in the embeddings, dropout, a linear classifier) or a TorchScript
// module. Training (model_torch_train.cpp): Adam, class-weighted cross-entropy, early stopping
// on the validation balanced accuracy (the loss breaks ties) with the best weights kept. Here:
// the model's members and metadata, inference (one pass over the pool giving probabilities,
// embeddings and the committee's outputs), saving and loading.
#include <torch/script.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <tuple>

#include "quarry/detail/random.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/train.hpp"
#include "train/model_torch_internal.hpp"
#include "io/files.hpp"

namespace quarry {

bool have_torch() { return true; }

// ------------------------------------------------------------------ helpers (both files)

namespace torch_detail {

std::string torch_message(const c10::Error& e) { return e.what_without_backtrace(); }

void set_threads(int threads) {
  const int t = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (torch::get_num_threads() != t) torch::set_num_threads(t);
}

torch::Device torch_device(const DeviceSpec& d) {
  const bool cuda = torch::cuda::is_available();
  switch (d.kind) {
    case DeviceKind::automatic:
      return cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    case DeviceKind::cpu: return torch::Device(torch::kCPU);
    case DeviceKind::cuda:
      QUARRY_EXPECTS(cuda, "training on ", device_string(d),
                     " asked for, but this LibTorch has no CUDA device (LibTorch ",
                     TORCH_VERSION, "); use --device cpu");
      QUARRY_EXPECTS(d.index < static_cast<int>(torch::cuda::device_count()), "training on ",
                     device_string(d), " asked for, but LibTorch sees ",
                     torch::cuda::device_count(), " CUDA device(s)");
      return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(d.index));
  }
  return torch::Device(torch::kCPU);
}

[[noreturn]] void fail_from_current(const std::string& what) {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    QUARRY_FAIL(what, ": ", torch_message(e));
  } catch (const std::bad_alloc&) {
    QUARRY_FAIL(what, ": out of memory");
  } catch (const std::exception& e) {
    QUARRY_FAIL(what, ": ", e.what());
  }
}

std::string device_name(const torch::Device& d) {
  return d.is_cuda() ? "cuda:" + std::to_string(d.index()) : "cpu";
}

}  // namespace torch_detail

using namespace torch_detail;

namespace {

constexpr const char* kFormat = "quarry-model";
constexpr int kFormatVersion = 1;

// The MC-dropout mask of committee member `s` over `dim` units, [1, dim]: unit j is kept (scaled
// by 1 / (1 - p)) when a Philox draw keyed by (seed, s, j) falls below 1 - p. One mask for every
// row of the pool ("consistent" MC dropout, as BatchBALD needs): member s is one network, so
// copies of an image get the same prediction from it, and the committee's joint distribution of
// several samples' labels is that of M networks. A pure function of (seed, s, j): the same masks
// for any batch size, device or thread.
torch::Tensor dropout_mask(std::uint64_t seed, int s, std::int64_t dim) {
  auto mask = torch::empty({1, dim}, torch::kFloat32);
  float* m = mask.data_ptr<float>();
  const float keep = static_cast<float>(1.0 / (1.0 - kDropout));
  const std::uint32_t threshold = static_cast<std::uint32_t>((1.0 - kDropout) * 16777216.0);
  for (std::int64_t j = 0; j < dim; j += 4) {
    const detail::Philox4 r = detail::philox4x32_10(
        0u, 0u, static_cast<std::uint32_t>(j), static_cast<std::uint32_t>(s) ^ (0xD50Bu << 16),
        static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
    for (std::int64_t q = 0; q < 4 && j + q < dim; ++q) m[j + q] = (r.v[q] >> 8) < threshold ? keep : 0.0f;
  }
  return mask;
}

torch::Tensor batch_tensor(const float* x, std::int64_t rows, const std::vector<std::int64_t>& shape,
                           const torch::Device& device) {
  std::vector<std::int64_t> dims{rows};
  dims.insert(dims.end(), shape.begin(), shape.end());
  auto t = torch::from_blob(const_cast<float*>(x), dims, torch::kFloat32);
  return device.is_cpu() ? t : t.to(device);
}

}  // namespace

// ------------------------------------------------------------------ the model

// A fresh member (initialised from the current torch seed).
std::unique_ptr<Member> Model::Impl::make_member() const {
  if (spec.kind == ModelSpec::Kind::cnn) {
    QUARRY_EXPECTS(sample_shape.size() == 3, "model cnn needs images, but the samples are ",
                   shape_string(sample_shape), " feature vectors: use --model mlp");
    QUARRY_EXPECTS(sample_shape[1] >= 8 && sample_shape[2] >= 8 && sample_shape[1] <= 512 &&
                       sample_shape[2] <= 512,
                   "model cnn takes images of 8x8 to 512x512 pixels, not ", sample_shape[1], "x",
                   sample_shape[2]);
    auto net = std::make_shared<CnnNet>(sample_shape[0], num_classes);
    net->to(device);
    return std::make_unique<NativeMember>(net);
  }
  if (spec.kind == ModelSpec::Kind::mlp) {
    std::int64_t features = sample_numel();
    auto net = std::make_shared<MlpNet>(features, num_classes);
    if (!feature_mean.empty()) {
      net->mean.copy_(torch::from_blob(const_cast<float*>(feature_mean.data()), {features}));
      net->inv_std.copy_(torch::from_blob(const_cast<float*>(feature_inv_std.data()), {features}));
    }
    net->to(device);
    return std::make_unique<NativeMember>(net);
  }
  torch::jit::Module module;
  try {
    expect_regular_file(spec.path);
    module = torch::jit::load(spec.path, device);
  } catch (const c10::Error& e) {
    QUARRY_FAIL(spec.path, ": not a TorchScript model LibTorch can load: ", torch_message(e));
  } catch (const std::exception& e) {
    QUARRY_FAIL(spec.path, ": cannot load the TorchScript model: ", e.what());
  }
  return std::make_unique<ScriptMember>(std::move(module));
}

void Model::Impl::probe(Member& m) {
  torch::NoGradGuard guard;
  m.set_training(false);
  std::vector<float> zeros(static_cast<std::size_t>(2 * sample_numel()), 0.0f);
  torch::Tensor h, l;
  try {
    std::tie(h, l) = m.embed_and_logits(batch_tensor(zeros.data(), 2, sample_shape, device));
  } catch (const c10::Error& e) {
    QUARRY_FAIL(model_spec_string(spec), ": fails on a batch of shape [2, ", shape_string(sample_shape).substr(1),
                ": ", torch_message(e));
  } catch (const std::exception& e) {  // the TorchScript interpreter's errors
    QUARRY_FAIL(model_spec_string(spec), ": fails on a batch of shape [2, ", shape_string(sample_shape).substr(1),
                " (the data's samples): ", e.what());
  }
  QUARRY_EXPECTS(l.dim() == 2 && l.size(0) == 2 && l.size(1) == num_classes,
                 model_spec_string(spec), ": forward returned ", shape_string(l.sizes().vec()),
                 " for a batch of 2, expected [2, ", num_classes, "] logits");
  QUARRY_EXPECTS(h.dim() == 2 && h.size(0) == 2, model_spec_string(spec),
                 ": embed returned ", shape_string(h.sizes().vec()), " for a batch of 2, expected [2, D]");
  embedding_dim = h.size(1);
}

std::string Model::Impl::meta_json() const {
  nlohmann::json j;
  j["format"] = kFormat;
  j["version"] = kFormatVersion;
  j["model"] = model_spec_string(spec);
  j["kind"] = spec.kind == ModelSpec::Kind::cnn ? "cnn" : spec.kind == ModelSpec::Kind::mlp ? "mlp" : "torchscript";
  j["committee"] = committee_string(committee);
  j["members"] = members.size();
  j["sample_shape"] = sample_shape;
  j["num_classes"] = num_classes;
  j["embedding_dim"] = embedding_dim;
  j["torch"] = TORCH_VERSION;
  return j.dump();
}

Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

Inference Model::infer(const float* x, std::int64_t n, const InferOptions& options) const {
  QUARRY_EXPECTS(impl_, "inference on an empty model");
  const Impl& m = *impl_;
  QUARRY_EXPECTS(n >= 0, "inference over a negative number of samples");
  CommitteeSpec committee = options.committee.members < 0 ? m.committee : options.committee;
  const int trained = static_cast<int>(m.members.size());
  if (committee.kind == CommitteeSpec::Kind::ensemble) {
    QUARRY_EXPECTS(committee.members <= trained, "an ensemble committee of ", committee.members,
                   " asked for, but the model has ", trained, " member(s): train it with --committee ensemble:",
                   committee.members);
  }
  const int M = committee.kind == CommitteeSpec::Kind::none ? 0 : committee.members;
  set_threads(options.threads);
  const std::int64_t C = m.num_classes, D = m.embedding_dim, numel = m.sample_numel();

  Inference out;
  try {
  // On CUDA with on_device, the outputs stay in the model's device memory: tensors owned by the
  // Arrays, which the engine reads in place (only the chosen indices come back to the host).
  const bool resident = options.on_device && m.device.is_cuda();
  auto make = [&](std::vector<std::int64_t> shape, const char* name) {
    if (!resident) return Array::allocate(DType::f32, std::move(shape), name);
    auto t = std::make_shared<torch::Tensor>(
        torch::empty(shape, torch::TensorOptions().dtype(torch::kFloat32).device(m.device)));
    const void* data = t->data_ptr();
    return Array(std::shared_ptr<const void>(t, data), data, DType::f32, std::move(shape), name,
                 Location{MemoryKind::cuda, static_cast<int>(m.device.index() < 0 ? 0 : m.device.index())});
  };
  out.probs = make({n, C}, "probs");
  out.embeddings = make({n, D}, "embeddings");
  if (M > 0) out.committee = make({M, n, C}, "committee");
  auto* probs = static_cast<float*>(out.probs.mutable_data());
  auto* emb = static_cast<float*>(out.embeddings.mutable_data());
  auto* com = M > 0 ? static_cast<float*>(out.committee.mutable_data()) : nullptr;
  // Copies a [rows, width] output into dst (host memory, or the model's device memory when
  // resident), after checking its shape (a TorchScript model's output could be anything).
  auto put = [&](const torch::Tensor& t, float* dst, std::int64_t rows, std::int64_t width) {
    QUARRY_EXPECTS(t.dim() == 2 && t.size(0) == rows && t.size(1) == width, model_spec_string(m.spec),
                   ": a batch of ", rows, " gave an output of shape ", shape_string(t.sizes().vec()),
                   ", expected [", rows, ", ", width, "]");
    if (resident) {
      torch::from_blob(dst, {rows, width}, torch::TensorOptions().dtype(torch::kFloat32).device(m.device))
          .copy_(t.to(m.device, torch::kFloat32));
      return;
    }
    auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
    std::memcpy(dst, c.data_ptr<float>(), sizeof(float) * static_cast<std::size_t>(c.numel()));
  };

  torch::NoGradGuard guard;
  torch::manual_seed(options.seed);  // the MC-dropout masks
  // Ensembles average over the members of the committee (all members without one).
  const int averaged = committee.kind == CommitteeSpec::Kind::ensemble ? M : trained;
  const std::int64_t bs = std::max(1, options.batch_size);
  try {
    for (auto& member : m.members) member->set_training(false);
    // The MC-dropout masks, one per member for the whole pool: drawn once, used by every batch.
    std::vector<torch::Tensor> masks;
    if (committee.kind == CommitteeSpec::Kind::mc && m.members[0]->has_head())
      for (int s = 0; s < M; ++s) masks.push_back(dropout_mask(options.seed, s, D).to(m.device));
    for (std::int64_t b = 0; b < n; b += bs) {
      const std::int64_t rows = std::min(bs, n - b);
      auto xb = batch_tensor(x + b * numel, rows, m.sample_shape, m.device);
      torch::Tensor mean_p;
      for (int mi = 0; mi < averaged; ++mi) {
        auto [h, l] = m.members[mi]->embed_and_logits(xb);
        auto p = torch::softmax(l.to(torch::kFloat32), 1);
        if (mi == 0) put(h, emb + b * D, rows, D);
        if (committee.kind == CommitteeSpec::Kind::ensemble) put(p, com + (mi * n + b) * C, rows, C);
        mean_p = mi == 0 ? p : mean_p + p;
        if (committee.kind == CommitteeSpec::Kind::mc && mi == 0) {
          Member& first = *m.members[0];
          if (first.has_head()) {
            for (int s = 0; s < M; ++s)  // [1, D] masks broadcast over the rows
              put(torch::softmax(first.head_masked(h, masks[s]).to(torch::kFloat32), 1), com + (s * n + b) * C, rows, C);
          } else {  // a TorchScript model: whole forward passes in training mode
            // Training mode also lets batch norms update their running statistics: keep them.
            auto& script = static_cast<ScriptMember&>(first);
            std::vector<torch::Tensor> saved;
            for (const auto& t : script.buffers()) saved.push_back(t.clone());
            first.set_training(true);
            for (int s = 0; s < M; ++s)
              put(torch::softmax(first.logits(xb).to(torch::kFloat32), 1), com + (s * n + b) * C, rows, C);
            first.set_training(false);
            auto now = script.buffers();
            for (std::size_t i = 0; i < now.size(); ++i) now[i].copy_(saved[i]);
          }
        }
      }
      put(averaged > 1 ? mean_p / static_cast<double>(averaged) : mean_p, probs + b * C, rows, C);
    }
    // Resident outputs were written on LibTorch's stream; the engine queues on its own.
    if (resident) torch::cuda::synchronize(m.device.index());
  } catch (const c10::Error& e) {
    QUARRY_FAIL(model_spec_string(m.spec), ": inference failed: ", torch_message(e));
  }
  } catch (...) {
    fail_from_current(model_spec_string(m.spec) + ": inference");
  }
  return out;
}

std::vector<std::int32_t> Model::predict(const Split& split, int threads) const {
  InferOptions o;
  o.committee = CommitteeSpec{};  // none: plain probabilities (ensembles: the members' mean)
  o.threads = threads;
  const Inference inf = infer(split, o);
  const std::int64_t C = impl_->num_classes;
  const float* p = inf.probs.as<float>();
  std::vector<std::int32_t> out(static_cast<std::size_t>(split.size()));
  for (std::int64_t i = 0; i < split.size(); ++i) {
    std::int32_t best = 0;  // ties to the lower class
    for (std::int64_t c = 1; c < C; ++c)
      if (p[i * C + c] > p[i * C + best]) best = static_cast<std::int32_t>(c);
    out[static_cast<std::size_t>(i)] = best;
  }
  return out;
}

void Model::save(const std::string& path) const {
  QUARRY_EXPECTS(impl_, "saving an empty model");
  std::ostringstream os;
  try {
    torch::serialize::OutputArchive archive;
    archive.write("quarry_meta", c10::IValue(impl_->meta_json()));
    for (std::size_t i = 0; i < impl_->members.size(); ++i)
      impl_->members[i]->save(archive, "member" + std::to_string(i));
    archive.save_to(os);
  } catch (const c10::Error& e) {
    QUARRY_FAIL(path, ": cannot serialise the model: ", torch_message(e));
  }
  const std::string bytes = os.str();
  write_file_atomic(path, {bytes});
}

Model Model::load(const std::string& path, const DeviceSpec& device) {
  expect_regular_file(path);  // a FIFO or a device would block or never end inside LibTorch
  Model model;
  try {
  model.impl_ = std::make_unique<Impl>();
  Impl& m = *model.impl_;
  m.device = torch_device(device);
  torch::serialize::InputArchive archive;
  nlohmann::json meta;
  try {
    archive.load_from(path, m.device);
    c10::IValue v;
    QUARRY_EXPECTS(archive.try_read("quarry_meta", v) && v.isString(), path,
                   ": a LibTorch archive, but not a quarry model (no quarry_meta record); a TorchScript "
                   "model is given as --model torchscript:FILE");
    meta = nlohmann::json::parse(v.toStringRef());
  } catch (const c10::Error& e) {
    QUARRY_FAIL(path, ": not a quarry model file: ", torch_message(e));
  } catch (const nlohmann::json::exception& e) {
    QUARRY_FAIL(path, ": damaged model metadata: ", e.what());
  }
  try {
    QUARRY_EXPECTS(meta.value("format", "") == kFormat && meta.value("version", 0) == kFormatVersion, path,
                   ": unsupported model format ", meta.value("format", "?"), " version ",
                   meta.value("version", 0), " (this quarry reads ", kFormat, " version ", kFormatVersion, ")");
    m.spec = parse_model_spec(meta.at("model").get<std::string>());
    m.committee = parse_committee(meta.at("committee").get<std::string>());
    m.sample_shape = meta.at("sample_shape").get<std::vector<std::int64_t>>();
    m.num_classes = meta.at("num_classes").get<int>();
    m.embedding_dim = meta.at("embedding_dim").get<std::int64_t>();
    const int members = meta.at("members").get<int>();
    QUARRY_EXPECTS(members >= 1 && members <= 1000 && m.num_classes >= 2, path, ": damaged model metadata");
    for (int i = 0; i < members; ++i) {
      const std::string key = "member" + std::to_string(i);
      if (m.spec.kind == ModelSpec::Kind::torchscript) {
        torch::Tensor bytes;
        archive.read(key + "_script", bytes);
        bytes = bytes.to(torch::kCPU).contiguous();
        std::istringstream is(std::string(static_cast<const char*>(bytes.data_ptr()),
                                          static_cast<std::size_t>(bytes.numel())));
        m.members.push_back(std::make_unique<ScriptMember>(torch::jit::load(is, m.device)));
      } else {
        auto member = m.make_member();
        torch::serialize::InputArchive sub;
        archive.read(key, sub);
        static_cast<NativeMember&>(*member).net().load(sub);
        static_cast<NativeMember&>(*member).net().to(m.device);
        m.members.push_back(std::move(member));
      }
      m.members.back()->set_training(false);
    }
    // The metadata must describe the nets it came with (a damaged or edited file).
    const std::int64_t dim = m.embedding_dim;
    m.probe(*m.members[0]);
    QUARRY_EXPECTS(m.embedding_dim == dim, path, ": the metadata says ", dim, "-d embeddings, the model gives ",
                   m.embedding_dim);
  } catch (const c10::Error& e) {
    QUARRY_FAIL(path, ": damaged model: ", torch_message(e));
  } catch (const nlohmann::json::exception& e) {
    QUARRY_FAIL(path, ": damaged model metadata: ", e.what());
  }
  } catch (...) {
    fail_from_current(path);
  }
  return model;
}

bool Model::empty() const { return !impl_ || impl_->members.empty(); }
int Model::num_classes() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->num_classes; }
std::int64_t Model::embedding_dim() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->embedding_dim; }
const std::vector<std::int64_t>& Model::sample_shape() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->sample_shape; }
const ModelSpec& Model::spec() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->spec; }
const CommitteeSpec& Model::committee() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  return impl_->committee; }

std::string Model::describe() const {
  QUARRY_EXPECTS(impl_, "an empty model (default-constructed or moved from)");
  const Impl& m = *impl_;
  std::string shape;
  for (std::size_t i = 0; i < m.sample_shape.size(); ++i)
    shape += (i ? "x" : "") + std::to_string(m.sample_shape[i]);
  std::int64_t params = 0;
  for (const auto& mem : m.members) params += mem->parameter_count();
  std::string s = model_spec_string(m.spec) + ", " + shape + " -> " + std::to_string(m.num_classes) +
                  " classes, " + std::to_string(m.embedding_dim) + "-d embeddings, ";
  s += m.members.size() == 1 ? std::string("1 model") : "ensemble of " + std::to_string(m.members.size());
  s += ", " + std::to_string(params) + " parameters";
  if (m.committee.kind == CommitteeSpec::Kind::mc) s += ", committee " + committee_string(m.committee);
  s += ", on " + device_name(m.device);
  return s;
}

}  // namespace quarry
