// A build without LibTorch (-DQUARRY_TORCH=OFF): the model API exists and says why it cannot run.
#include "quarry/error.hpp"
#include "quarry/train.hpp"

namespace quarry {
namespace {
[[noreturn]] void no_torch() {
  QUARRY_FAIL("this build of quarry has no LibTorch (configured with -DQUARRY_TORCH=OFF): "
              "training and inference need it; rebuild with LibTorch (Debian: libtorch-dev)");
}
}  // namespace

struct Model::Impl {};

bool have_torch() { return false; }
Model::Model() = default;
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model Model::train(const Dataset&, const std::vector<std::int64_t>&, const TrainOptions&,
                   TrainReport*, const ProgressFn&) { no_torch(); }
Inference Model::infer(const float*, std::int64_t, const InferOptions&) const { no_torch(); }
std::vector<std::int32_t> Model::predict(const Split&, int) const { no_torch(); }
void Model::save(const std::string&) const { no_torch(); }
Model Model::load(const std::string&, const DeviceSpec&) { no_torch(); }
bool Model::empty() const { return true; }
int Model::num_classes() const { no_torch(); }
std::int64_t Model::embedding_dim() const { no_torch(); }
const std::vector<std::int64_t>& Model::sample_shape() const { no_torch(); }
const ModelSpec& Model::spec() const { no_torch(); }
const CommitteeSpec& Model::committee() const { no_torch(); }
std::string Model::describe() const { no_torch(); }
Array pretrain_embeddings(const float*, std::int64_t, const std::vector<std::int64_t>&, const PretrainOptions&,
                          PretrainReport*, const ProgressFn&) { no_torch(); }

}  // namespace quarry
