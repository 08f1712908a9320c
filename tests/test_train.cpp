// The LibTorch loop: training, inference (MC-dropout, ensembles), TorchScript models, saving,
// and `simulate` end to end (library and command line). Small configurations: CI runs these.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "quarry/error.hpp"
#include "quarry/io.hpp"
#include "quarry/loop.hpp"
#include "quarry/train.hpp"
#include "simulate/strategy.hpp"

namespace {

namespace fs = std::filesystem;

std::string tmp_dir(const std::string& name) {
  const std::string d = std::string(QUARRY_TEST_TMP) + "/train_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Result {
  int rc;
  std::string out, err;
};

Result quarry_cli(const std::string& args, const std::string& dir) {
  const std::string cmd = std::string(QUARRY_CLI_PATH) + " " + args + " >" + dir + "/stdout 2>" + dir + "/stderr";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir + "/stdout"), slurp(dir + "/stderr")};
}

// A small image pool shared by the tests (generation takes milliseconds, but keep one copy).
const quarry::Dataset& pool() {
  static const quarry::Dataset d = quarry::synthetic_images(800, 7);
  return d;
}

std::vector<std::int64_t> first(std::int64_t n) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

// Short training: a few hundred steps.
quarry::TrainOptions quick(std::uint64_t seed = 1) {
  quarry::TrainOptions o;
  o.model = quarry::parse_model_spec("cnn");
  o.max_epochs = 12;
  o.patience = 4;
  o.min_steps = 120;
  o.seed = seed;
  o.device = quarry::parse_device("cpu");
  o.threads = 2;
  return o;
}

bool same(const quarry::Array& a, const quarry::Array& b) {
  return a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

double max_abs_diff(const float* a, const float* b, std::int64_t n) {
  double m = 0;
  for (std::int64_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

void expect_probability_rows(const float* p, std::int64_t rows, std::int64_t c) {
  for (std::int64_t i = 0; i < rows; ++i) {
    double s = 0;
    for (std::int64_t j = 0; j < c; ++j) {
      ASSERT_GE(p[i * c + j], 0.0f);
      s += p[i * c + j];
    }
    ASSERT_NEAR(s, 1.0, 1e-4) << "row " << i;
  }
}

TEST(Train, SpecsParseAndRejectNonsense) {
  EXPECT_EQ(quarry::parse_model_spec("mlp").kind, quarry::ModelSpec::Kind::mlp);
  EXPECT_EQ(quarry::parse_model_spec("torchscript:/x/m.pt").path, "/x/m.pt");
  EXPECT_THROW(quarry::parse_model_spec("resnet"), quarry::Error);
  EXPECT_THROW(quarry::parse_model_spec("torchscript:"), quarry::Error);
  EXPECT_EQ(quarry::parse_committee("mc:20").members, 20);
  EXPECT_EQ(quarry::parse_committee("ensemble:3").kind, quarry::CommitteeSpec::Kind::ensemble);
  EXPECT_EQ(quarry::parse_committee("none").kind, quarry::CommitteeSpec::Kind::none);
  for (const char* bad : {"mc:1", "mc:", "mc:x", "dropout:5", "ensemble:2x"})
    EXPECT_THROW(quarry::parse_committee(bad), quarry::Error) << bad;
  EXPECT_TRUE(quarry::have_torch());
}

TEST(Train, ACnnBeatsChanceByAWideMargin) {
  const auto& d = pool();
  quarry::TrainReport rep;
  const auto model = quarry::Model::train(d, first(600), quick(), &rep);
  EXPECT_GT(rep.epochs, 0);
  EXPECT_EQ(rep.device, "cpu");
  const auto m = quarry::evaluate_predictions(d.test.y, model.predict(d.test), d.num_classes);
  // 4 classes: chance balanced accuracy is 25%, the majority class about 50%.
  EXPECT_GT(m.accuracy, 0.75) << "test accuracy";
  EXPECT_GT(m.balanced_accuracy, 0.6) << "balanced accuracy";
  EXPECT_EQ(model.num_classes(), d.num_classes);
  EXPECT_EQ(model.embedding_dim(), 128);
}

TEST(Train, AnMlpLearnsFeatureVectors) {
  // Feature vectors: the synthetic images flattened and downsampled to 49 features.
  const auto& img = pool();
  quarry::Dataset d;
  d.spec = d.name = "features";
  d.sample_shape = {49};
  d.num_classes = img.num_classes;
  auto down = [](const quarry::Split& s) {
    quarry::Split out;
    out.y = s.y;
    for (std::int64_t i = 0; i < s.size(); ++i)
      for (int r = 0; r < 7; ++r)
        for (int c = 0; c < 7; ++c) {
          float sum = 0;
          for (int dr = 0; dr < 4; ++dr)
            for (int dc = 0; dc < 4; ++dc) sum += s.x[i * 784 + (r * 4 + dr) * 28 + c * 4 + dc];
          out.x.push_back(sum / 16);
        }
    return out;
  };
  d.train = down(img.train);
  d.val = down(img.val);
  d.test = down(img.test);
  auto o = quick();
  o.model = quarry::default_model(d);
  ASSERT_EQ(o.model.kind, quarry::ModelSpec::Kind::mlp);
  const auto model = quarry::Model::train(d, first(600), o);
  const auto m = quarry::evaluate_predictions(d.test.y, model.predict(d.test), d.num_classes);
  EXPECT_GT(m.balanced_accuracy, 0.5);
  // cnn on feature vectors is a clear error.
  o.model = quarry::parse_model_spec("cnn");
  try {
    quarry::Model::train(d, first(100), o);
    FAIL() << "cnn accepted feature vectors";
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--model mlp"), std::string::npos) << e.what();
  }
}

TEST(Train, TheSameSeedGivesTheSameModelAndAnotherSeedAnother) {
  const auto& d = pool();
  const auto a = quarry::Model::train(d, first(200), quick(3)).infer(d.test);
  const auto b = quarry::Model::train(d, first(200), quick(3)).infer(d.test);
  const auto c = quarry::Model::train(d, first(200), quick(4)).infer(d.test);
  EXPECT_TRUE(same(a.probs, b.probs));
  EXPECT_TRUE(same(a.embeddings, b.embeddings));
  EXPECT_FALSE(same(a.probs, c.probs));
}

TEST(Train, McDropoutSamplesDifferAndAreReproducible) {
  const auto& d = pool();
  const auto model = quarry::Model::train(d, first(300), quick());
  quarry::InferOptions io;
  io.committee = quarry::parse_committee("mc:4");
  io.seed = 11;
  const auto a = model.infer(d.test, io);
  const std::int64_t n = d.test.size(), C = d.num_classes;
  ASSERT_EQ(a.committee.shape(), (std::vector<std::int64_t>{4, n, C}));
  ASSERT_EQ(a.probs.shape(), (std::vector<std::int64_t>{n, C}));
  const float* com = a.committee.as<float>();
  expect_probability_rows(com, 4 * n, C);
  expect_probability_rows(a.probs.as<float>(), n, C);
  for (int m = 1; m < 4; ++m) EXPECT_GT(max_abs_diff(com, com + m * n * C, n * C), 1e-3) << "sample " << m;
  EXPECT_GT(max_abs_diff(com, a.probs.as<float>(), n * C), 1e-3) << "a dropout sample equals the plain output";
  // The same seed draws the same masks; another seed others; the plain outputs do not change.
  const auto b = model.infer(d.test, io);
  EXPECT_TRUE(same(a.committee, b.committee));
  io.seed = 12;
  const auto c = model.infer(d.test, io);
  EXPECT_FALSE(same(a.committee, c.committee));
  EXPECT_TRUE(same(a.probs, c.probs));
  // Batching does not change the answer.
  io.batch_size = 7;
  io.seed = 11;
  const auto e = model.infer(d.test, io);
  EXPECT_LT(max_abs_diff(a.probs.as<float>(), e.probs.as<float>(), n * C), 1e-5);
  // The masks are a function of (seed, sample, row, unit): the committee does not change either.
  EXPECT_LT(max_abs_diff(a.committee.as<float>(), e.committee.as<float>(), 4 * n * C), 1e-5);
}

TEST(Train, EnsembleMembersDifferAndTheirMeanIsTheOutput) {
  const auto& d = pool();
  auto o = quick();
  o.max_epochs = 6;
  o.committee = quarry::parse_committee("ensemble:3");
  const auto model = quarry::Model::train(d, first(300), o);
  const auto inf = model.infer(d.test);  // the trained committee by default
  const std::int64_t n = d.test.size(), C = d.num_classes;
  ASSERT_EQ(inf.committee.shape(), (std::vector<std::int64_t>{3, n, C}));
  const float* com = inf.committee.as<float>();
  EXPECT_GT(max_abs_diff(com, com + n * C, n * C), 1e-3);
  EXPECT_GT(max_abs_diff(com + n * C, com + 2 * n * C, n * C), 1e-3);
  std::vector<float> mean(static_cast<std::size_t>(n * C));
  for (std::int64_t i = 0; i < n * C; ++i) mean[i] = (com[i] + com[n * C + i] + com[2 * n * C + i]) / 3;
  EXPECT_LT(max_abs_diff(mean.data(), inf.probs.as<float>(), n * C), 1e-5);
  // Fewer members than trained is fine; more is a clear error.
  quarry::InferOptions io;
  io.committee = quarry::parse_committee("ensemble:2");
  EXPECT_EQ(model.infer(d.test, io).committee.shape()[0], 2);
  io.committee = quarry::parse_committee("ensemble:5");
  EXPECT_THROW(model.infer(d.test, io), quarry::Error);
}

TEST(Train, SavedModelsLoadAndGiveTheSameOutputs) {
  const auto& d = pool();
  const std::string dir = tmp_dir("save");
  const auto model = quarry::Model::train(d, first(200), quick());
  model.save(dir + "/m.pt");
  const auto loaded = quarry::Model::load(dir + "/m.pt", quarry::parse_device("cpu"));
  EXPECT_EQ(loaded.describe(), model.describe());
  EXPECT_TRUE(same(model.infer(d.test).probs, loaded.infer(d.test).probs));
  // Not a model: errors name the file.
  std::ofstream(dir + "/junk.pt") << "not a model at all";
  try {
    quarry::Model::load(dir + "/junk.pt");
    FAIL();
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.pt"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quarry::Model::load(dir + "/missing.pt"), quarry::Error);
  // Training input errors.
  EXPECT_THROW(quarry::Model::train(d, {}, quick()), quarry::Error);
  EXPECT_THROW(quarry::Model::train(d, {0, 5, 5}, quick()), quarry::Error);
  EXPECT_THROW(quarry::Model::train(d, {d.train.size()}, quick()), quarry::Error);
}

// A user's TorchScript model, defined here: a two-layer perceptron with dropout and an embed().
std::string write_torchscript(const std::string& path, int classes, bool good_shape = true, int inputs = 784) {
  torch::manual_seed(0);
  torch::jit::Module m("UserNet");
  m.register_attribute("training", c10::BoolType::get(), true);  // as a Python nn.Module has
  m.register_parameter("w1", torch::randn({inputs, 32}) * 0.05, false);
  m.register_parameter("b1", torch::zeros({32}), false);
  m.register_parameter("w2", torch::randn({32, good_shape ? classes : classes + 1}) * 0.05, false);
  m.register_parameter("b2", torch::zeros({good_shape ? classes : classes + 1}), false);
  m.define(R"JIT(
def embed(self, x):
    return torch.relu(torch.matmul(torch.flatten(x, 1), self.w1) + self.b1)

def forward(self, x):
    h = torch.dropout(self.embed(x), 0.3, self.training)
    return torch.matmul(h, self.w2) + self.b2
)JIT");
  m.save(path);
  return path;
}

TEST(Train, ATorchScriptModelTrainsInfersAndSaves) {
  const auto& d = pool();
  const std::string dir = tmp_dir("torchscript");
  auto o = quick();
  o.model = quarry::parse_model_spec("torchscript:" + write_torchscript(dir + "/user.pt", d.num_classes));
  o.max_epochs = 40;
  o.patience = 10;
  o.min_steps = 400;
  const auto model = quarry::Model::train(d, first(600), o);
  EXPECT_EQ(model.embedding_dim(), 32);
  const auto m = quarry::evaluate_predictions(d.test.y, model.predict(d.test), d.num_classes);
  // A plain perceptron on raw pixels: well above chance (25% balanced), far below the cnn.
  EXPECT_GT(m.balanced_accuracy, 0.45);
  quarry::InferOptions io;
  io.committee = quarry::parse_committee("mc:3");
  const auto inf = model.infer(d.test, io);
  const std::int64_t n = d.test.size(), C = d.num_classes;
  ASSERT_EQ(inf.embeddings.shape(), (std::vector<std::int64_t>{n, 32}));
  EXPECT_GT(max_abs_diff(inf.committee.as<float>(), inf.committee.as<float>() + n * C, n * C), 1e-4);
  model.save(dir + "/trained.pt");
  const auto loaded = quarry::Model::load(dir + "/trained.pt");
  EXPECT_TRUE(same(model.infer(d.test).probs, loaded.infer(d.test).probs));
  // A model whose output does not have the dataset's classes is refused with the shapes.
  o.model = quarry::parse_model_spec("torchscript:" + write_torchscript(dir + "/bad.pt", d.num_classes, false));
  try {
    quarry::Model::train(d, first(100), o);
    FAIL();
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected [2, 4]"), std::string::npos) << e.what();
  }
  // A model written for other inputs (3x32x32 images): LibTorch's interpreter fails inside
  // forward; that is a quarry::Error naming the model, not an internal error.
  o.model = quarry::parse_model_spec("torchscript:" + write_torchscript(dir + "/rgb.pt", d.num_classes, true, 3072));
  try {
    quarry::Model::train(d, first(100), o);
    FAIL();
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rgb.pt: fails on a batch of shape [2, 1, 28, 28]"), std::string::npos)
        << e.what();
  }
  o.model = quarry::parse_model_spec("torchscript:" + dir + "/nothing.pt");
  EXPECT_THROW(quarry::Model::train(d, first(100), o), quarry::Error);
  // An empty model says so instead of crashing.
  quarry::Model empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_THROW(empty.num_classes(), quarry::Error);
  EXPECT_THROW(empty.infer(d.test), quarry::Error);
}

quarry::SimulateOptions small_simulation() {
  quarry::SimulateOptions o;
  o.strategies = {"random", "entropy", "bald", "badge"};
  o.seed_size = 60;
  o.batch = 40;
  o.rounds = 2;
  o.repeats = 2;
  o.seed = 5;
  o.train = quick();
  o.train.max_epochs = 4;
  o.train.min_steps = 40;
  o.committee = quarry::parse_committee("mc:4");
  o.device = quarry::parse_device("cpu");
  return o;
}

// ------------------------------------------------------------------ pretraining

quarry::PretrainOptions quick_pretrain(std::uint64_t seed = 3) {
  quarry::PretrainOptions o;
  o.epochs = 4;
  o.batch_size = 100;
  o.seed = seed;
  o.device = quarry::parse_device("cpu");
  o.threads = 2;
  return o;
}

// Leave-one-out k-nearest-neighbour accuracy (cosine, k = 5, majority vote) of embeddings
// against the pool's labels: how well neighbourhoods follow the classes.
double knn_accuracy(const float* e, std::int64_t n, std::int64_t d, const std::vector<std::int32_t>& y, int classes) {
  std::int64_t hits = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<std::pair<double, std::int64_t>> sim;
    for (std::int64_t j = 0; j < n; ++j) {
      if (j == i) continue;
      double s = 0, ni = 0, nj = 0;
      for (std::int64_t q = 0; q < d; ++q) {
        s += static_cast<double>(e[i * d + q]) * e[j * d + q];
        ni += static_cast<double>(e[i * d + q]) * e[i * d + q];
        nj += static_cast<double>(e[j * d + q]) * e[j * d + q];
      }
      sim.push_back({-s / std::sqrt(ni * nj + 1e-30), j});
    }
    std::partial_sort(sim.begin(), sim.begin() + 5, sim.end());
    std::vector<int> votes(static_cast<std::size_t>(classes), 0);
    for (int k = 0; k < 5; ++k) ++votes[static_cast<std::size_t>(y[static_cast<std::size_t>(sim[k].second)])];
    hits += std::max_element(votes.begin(), votes.end()) - votes.begin() == y[static_cast<std::size_t>(i)];
  }
  return static_cast<double>(hits) / static_cast<double>(n);
}

TEST(Pretrain, LearnsUnitEmbeddingsWhoseNeighboursShareAClass) {
  const auto& d = pool();
  const std::int64_t n = 400;
  quarry::PretrainReport rep;
  int calls = 0;
  const auto e = quarry::pretrain_embeddings(d.train.x.data(), n, d.sample_shape, quick_pretrain(), &rep,
                                             [&](const quarry::Progress& p) {
                                               EXPECT_STREQ(p.phase, "epoch");
                                               EXPECT_EQ(p.done, ++calls);
                                             });
  ASSERT_EQ(e.shape(), (std::vector<std::int64_t>{n, 128}));
  EXPECT_EQ(calls, 4);
  ASSERT_EQ(rep.loss.size(), 4u);
  EXPECT_EQ(rep.device, "cpu");
  EXPECT_GT(rep.parameters, 0);
  // The contrastive loss falls: the encoder learns to tell the views of one image from others'.
  EXPECT_LT(rep.loss.back(), rep.loss.front() - 0.1) << rep.loss.front() << " -> " << rep.loss.back();
  const float* v = e.as<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (std::int64_t q = 0; q < 128; ++q) {
      ASSERT_TRUE(std::isfinite(v[i * 128 + q]));
      s += static_cast<double>(v[i * 128 + q]) * v[i * 128 + q];
    }
    ASSERT_NEAR(s, 1.0, 1e-4) << "row " << i;
  }
  // Without a label, neighbours share a class more often than the majority class (about 50%) gives.
  std::vector<std::int32_t> y(d.train.y.begin(), d.train.y.begin() + n);
  const double acc = knn_accuracy(v, n, 128, y, d.num_classes);
  EXPECT_GT(acc, 0.75) << "5-NN accuracy of the pretrained embeddings";
}

TEST(Pretrain, TheSameSeedGivesTheSameEmbeddingsAndAnotherSeedOthers) {
  const auto& d = pool();
  auto o = quick_pretrain(11);
  o.epochs = 1;
  const auto a = quarry::pretrain_embeddings(d.train.x.data(), 200, d.sample_shape, o);
  const auto b = quarry::pretrain_embeddings(d.train.x.data(), 200, d.sample_shape, o);
  EXPECT_TRUE(same(a, b));
  o.seed = 12;
  const auto c = quarry::pretrain_embeddings(d.train.x.data(), 200, d.sample_shape, o);
  EXPECT_FALSE(same(a, c));
  // A pool smaller than a batch trains on the whole pool each step.
  o.batch_size = 512;
  EXPECT_EQ(quarry::pretrain_embeddings(d.train.x.data(), 30, d.sample_shape, o).shape(),
            (std::vector<std::int64_t>{30, 128}));
}

TEST(Pretrain, BadInputIsAClearError) {
  const auto& d = pool();
  const auto o = quick_pretrain();
  auto fails = [](auto&& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one saying " << needle;
    } catch (const quarry::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  fails([&] { quarry::pretrain_embeddings(d.train.x.data(), 100, {784}, o); }, "feature vectors");
  fails([&] { quarry::pretrain_embeddings(d.train.x.data(), 100, {1, 4, 196}, o); }, "at least 8x8");
  fails([&] { quarry::pretrain_embeddings(d.train.x.data(), 1, d.sample_shape, o); }, "at least 2 images");
  auto bad = o;
  bad.epochs = 0;
  fails([&] { quarry::pretrain_embeddings(d.train.x.data(), 100, d.sample_shape, bad); }, "epochs");
  bad = o;
  bad.temperature = 0;
  fails([&] { quarry::pretrain_embeddings(d.train.x.data(), 100, d.sample_shape, bad); }, "temperature");
  bad = o;
  bad.learning_rate = 2;
  fails([&] { quarry::pretrain_embeddings(d.train.x.data(), 100, d.sample_shape, bad); }, "learning rate in (0, 1]");
}

// Whatever the options allow, the output is unit rows of finite values or a clear error: never
// a file of NaNs or zeros (a diverged loss, dead units, a constant image channel).
TEST(Pretrain, NeverWritesNonFiniteOrZeroRows) {
  const auto& d = pool();
  auto unit_rows_or_error = [](const float* x, std::int64_t n, const std::vector<std::int64_t>& shape,
                               const quarry::PretrainOptions& o, const std::string& what) {
    try {
      const quarry::Array e = quarry::pretrain_embeddings(x, n, shape, o);
      ASSERT_EQ(e.shape(), (std::vector<std::int64_t>{n, 128})) << what;
      for (std::int64_t i = 0; i < n; ++i) {
        double norm = 0;
        for (std::int64_t j = 0; j < 128; ++j) {
          const float v = e.as<float>()[i * 128 + j];
          ASSERT_TRUE(std::isfinite(v)) << what << ": row " << i;
          norm += static_cast<double>(v) * v;
        }
        EXPECT_NEAR(norm, 1.0, 1e-4) << what << ": row " << i;
      }
    } catch (const quarry::Error& err) {
      EXPECT_NE(std::string(err.what()).find("lower learning rate"), std::string::npos) << what << ": " << err.what();
    }
  };
  auto o = quick_pretrain();
  o.learning_rate = 1.0;  // the most the options take
  unit_rows_or_error(d.train.x.data(), 100, d.sample_shape, o, "learning rate 1");
  // Blank images: a channel without spread, which normalisation must not divide by ~0.
  const std::vector<float> blank(static_cast<std::size_t>(20 * d.sample_numel()), 0.0f);
  unit_rows_or_error(blank.data(), 20, d.sample_shape, quick_pretrain(), "blank images");
  // A pool smaller than one batch (one step per epoch): batch-norm statistics from the pool itself.
  unit_rows_or_error(d.train.x.data(), 6, d.sample_shape, quick_pretrain(), "6 images");
}

TEST(Simulate, RunsEveryStrategyAndRepeatFromTheSameInitialSet) {
  const auto& d = pool();
  const auto o = small_simulation();
  int calls = 0;
  auto with_callback = o;
  with_callback.on_round = [&](const quarry::RoundRecord&) { ++calls; };
  const auto records = quarry::simulate(d, with_callback);
  ASSERT_EQ(records.size(), 4u * 2u * 3u);
  EXPECT_EQ(calls, 24);
  std::map<std::pair<std::string, int>, std::set<std::int64_t>> labeled;
  std::map<int, double> round0_accuracy;
  std::map<int, std::vector<std::int64_t>> round0_classes;
  for (const auto& r : records) {
    EXPECT_EQ(r.labels, 60 + 40 * r.round);
    std::int64_t per_class = 0;
    for (auto c : r.labeled_per_class) per_class += c;
    EXPECT_EQ(per_class, r.labels);
    auto& set = labeled[{r.strategy, r.repeat}];
    if (r.round == 0) {
      // Same initial set and training seed: every strategy's round 0 is the same model, on the
      // same labeled classes.
      if (!round0_accuracy.count(r.repeat)) {
        round0_accuracy[r.repeat] = r.test.accuracy;
        round0_classes[r.repeat] = r.labeled_per_class;
      }
      EXPECT_EQ(r.test.accuracy, round0_accuracy[r.repeat]) << r.strategy;
      EXPECT_EQ(r.labeled_per_class, round0_classes[r.repeat]) << r.strategy;
    }
    if (r.round < 2) {
      ASSERT_EQ(r.selected.size(), 40u);
      for (auto i : r.selected) {
        EXPECT_TRUE(i >= 0 && i < d.train.size());
        EXPECT_TRUE(set.insert(i).second) << r.strategy << " selected " << i << " twice";
      }
      if (r.strategy != "random") EXPECT_GT(r.infer_seconds, 0.0) << r.strategy;
    } else {
      EXPECT_TRUE(r.selected.empty());
    }
  }
  // Repeats differ (their own initial set and seed).
  EXPECT_NE((labeled[{"random", 0}]), (labeled[{"random", 1}]));
  // The uncertainty strategies pick differently from random.
  EXPECT_NE((labeled[{"entropy", 0}]), (labeled[{"random", 0}]));
}

TEST(Simulate, TheColdStartChoosesTheInitialSetFromTheEmbeddings) {
  const auto& d = pool();
  auto o = small_simulation();
  o.strategies = {"random"};
  o.rounds = 0;
  o.repeats = 1;
  o.seed_size = 12;
  const std::int64_t n = d.train.size(), numel = d.sample_numel();
  for (const char* strategy : {"typiclust", "probcover"}) {
    o.seed_strategy = strategy;
    const auto records = quarry::simulate(d, o);
    ASSERT_EQ(records.size(), 1u);
    // The same picks as the engine's, over the pool's pixels, seeded as the repeat.
    quarry::DiversityOptions opt;
    opt.k = 12;
    opt.seed = quarry::loop::mix(o.seed, 1);
    const quarry::Selection want = quarry::select_diverse(
        quarry::parse_diversity_strategy(strategy), quarry::ArrayView(d.train.x.data(), quarry::DType::f32, {n, numel}),
        nullptr, opt);
    std::vector<std::int64_t> per_class(static_cast<std::size_t>(d.num_classes), 0);
    for (auto i : want.index) ++per_class[static_cast<std::size_t>(d.train.y[static_cast<std::size_t>(i)])];
    EXPECT_EQ(records[0].labeled_per_class, per_class) << strategy;
  }
  o.seed_strategy = "kcenter";
  EXPECT_THROW(quarry::simulate(d, o), quarry::UsageError);
  o.seed_strategy = "random";
  o.seed_embeddings = "e.npy";
  EXPECT_THROW(quarry::simulate(d, o), quarry::UsageError);
}

TEST(Simulate, TheSameSeedGivesTheSameRunAndTheReportAgreesWithItsRounds) {
  const auto& d = pool();
  auto o = small_simulation();
  o.strategies = {"random", "margin", "kcenter"};
  o.repeats = 2;
  const auto a = quarry::simulate(d, o);
  const auto b = quarry::simulate(d, o);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].selected, b[i].selected) << i;
    EXPECT_EQ(a[i].test.accuracy, b[i].test.accuracy) << i;
    EXPECT_EQ(a[i].test.confusion, b[i].test.confusion) << i;
  }

  const std::string dir = tmp_dir("report");
  quarry::SimulationSummary header;
  header.dataset = d.spec;
  header.seed_size = o.seed_size;
  header.batch = o.batch;
  header.rounds = o.rounds;
  header.repeats = o.repeats;
  const auto summary = quarry::summarize(a, header);
  quarry::write_simulation_report(dir, a, summary);
  for (const char* f : {"rounds.jsonl", "curves.csv", "summary.json", "summary.md", "curves.svg"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  // The summary's numbers come from its rounds: re-read rounds.jsonl and recompute the means.
  std::vector<quarry::RoundRecord> back;
  std::ifstream in(dir + "/rounds.jsonl");
  for (std::string line; std::getline(in, line);) back.push_back(quarry::parse_round_json(line));
  ASSERT_EQ(back.size(), a.size());
  const auto j = nlohmann::json::parse(slurp(dir + "/summary.json"));
  const auto again = quarry::summarize(back, header);
  ASSERT_EQ(again.strategies.size(), 3u);
  for (std::size_t s = 0; s < again.strategies.size(); ++s) {
    const auto& st = again.strategies[s];
    for (std::size_t r = 0; r < st.accuracy.size(); ++r) {
      double sum = 0;
      int count = 0;
      for (const auto& rec : back)
        if (rec.strategy == st.strategy && rec.round == static_cast<int>(r)) {
          sum += rec.test.accuracy;
          ++count;
        }
      ASSERT_EQ(count, o.repeats);
      EXPECT_NEAR(st.accuracy[r].mean, sum / count, 1e-12);
      EXPECT_NEAR(summary.strategies[s].accuracy[r].mean, sum / count, 1e-12);
    }
  }
  EXPECT_NE(slurp(dir + "/summary.md").find("kcenter"), std::string::npos);
  EXPECT_EQ(slurp(dir + "/curves.svg").rfind("<svg", 0), 0u);
  EXPECT_FALSE(j.dump().empty());
}

TEST(Simulate, BadConfigurationsAreClearErrors) {
  const auto& d = pool();
  auto o = small_simulation();
  o.strategies = {"random", "typo"};
  try {
    quarry::simulate(d, o);
    FAIL();
  } catch (const quarry::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown strategy 'typo'"), std::string::npos) << e.what();
  }
  o = small_simulation();
  o.seed_size = d.train.size();
  EXPECT_THROW(quarry::simulate(d, o), quarry::Error);
  o = small_simulation();
  o.committee = quarry::CommitteeSpec{};
  EXPECT_THROW(quarry::simulate(d, o), quarry::Error);  // bald without a committee
}

// batchbald and balanced:NAME as loop strategies: k distinct unlabeled picks, the same for the
// same seed (a small pool and short training: a few seconds).
// A 200-image pool and one repeat of batches of 12, trained one epoch: the loop's strategies
// end to end in seconds.
const quarry::Dataset& tiny_pool() {
  static const quarry::Dataset d = quarry::synthetic_images(200, 7);
  return d;
}

quarry::SimulateOptions tiny_simulation(std::vector<std::string> strategies, std::int64_t seed_size, int rounds) {
  auto o = small_simulation();
  o.strategies = std::move(strategies);
  o.seed_size = seed_size;
  o.batch = 12;
  o.rounds = rounds;
  o.repeats = 1;
  o.train.max_epochs = 1;
  o.train.min_steps = 5;
  return o;
}

TEST(Simulate, AutoStartsTypicalThenTurnsToBadge) {
  const quarry::Dataset& d = tiny_pool();
  // Below 10 labels per class at round 0, above at round 1.
  const auto o = tiny_simulation({"auto"}, 10 * d.num_classes - 12, 2);
  const auto r = quarry::simulate(d, o);
  ASSERT_EQ(r.size(), 3u);
  // Round 0: typicality over the pool's inputs, the model not asked; round 1: BADGE on the model.
  EXPECT_EQ(r[0].infer_seconds, 0.0);
  EXPECT_GT(r[1].infer_seconds, 0.0);
  for (int k = 0; k < 2; ++k) {
    const auto& sel = r[static_cast<std::size_t>(k)].selected;
    ASSERT_EQ(sel.size(), 12u);
    EXPECT_EQ(std::set<std::int64_t>(sel.begin(), sel.end()).size(), 12u);
  }
}

TEST(Simulate, AutoTypicalityReadsTheColdStartEmbeddings) {
  const quarry::Dataset& d = tiny_pool();
  const std::string dir = tmp_dir("auto-embeddings");
  const std::int64_t n = d.train.size(), numel = d.sample_numel();
  // The pool's own inputs as a file: the same picks as without one. Other embeddings (the
  // rows' order reversed): other picks, so the file is what auto's typicality reads.
  quarry::write_npy(dir + "/same.npy", quarry::ArrayView{d.train.x.data(), quarry::DType::f32, {n, numel}});
  std::vector<float> reversed(d.train.x.size());
  for (std::int64_t i = 0; i < n; ++i)
    std::copy_n(d.train.x.data() + (n - 1 - i) * numel, numel, reversed.data() + i * numel);
  quarry::write_npy(dir + "/other.npy", quarry::ArrayView{reversed.data(), quarry::DType::f32, {n, numel}});
  auto o = tiny_simulation({"auto"}, 10 * d.num_classes - 12, 0);
  o.rounds = 1;
  const auto plain = quarry::simulate(d, o);
  o.seed_embeddings = dir + "/same.npy";  // with a random initial set: auto alone reads them
  const auto same = quarry::simulate(d, o);
  o.seed_embeddings = dir + "/other.npy";
  const auto other = quarry::simulate(d, o);
  ASSERT_EQ(plain[0].selected.size(), 12u);
  EXPECT_EQ(same[0].selected, plain[0].selected);
  EXPECT_NE(other[0].selected, plain[0].selected);
  EXPECT_EQ(other[0].infer_seconds, 0.0);  // still no model asked
  o.strategies = {"entropy"};  // without auto or a seed strategy the file has no use: refused
  EXPECT_THROW(quarry::simulate(d, o), quarry::UsageError);
}

TEST(Simulate, BatchBaldAndBalancedStrategies) {
  const quarry::Dataset& d = tiny_pool();
  auto o = tiny_simulation({"batchbald", "balanced:entropy", "balanced:batchbald"}, 30, 1);
  const auto a = quarry::simulate(d, o);
  const auto b = quarry::simulate(d, o);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  std::map<std::string, std::vector<std::int64_t>> picked;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].selected, b[i].selected) << a[i].strategy << ": not deterministic";
    if (a[i].round != 0) continue;
    const auto& sel = a[i].selected;
    ASSERT_EQ(sel.size(), 12u) << a[i].strategy;
    EXPECT_EQ(std::set<std::int64_t>(sel.begin(), sel.end()).size(), 12u) << a[i].strategy;
    EXPECT_GT(a[i].infer_seconds, 0.0) << a[i].strategy;
    picked[a[i].strategy] = sel;
  }
  // The initial set (round 0's labels, the same for every strategy): none picks from it.
  const auto initial = quarry::loop::sample_without_replacement(first(d.train.size()), o.seed_size,
                                                                quarry::loop::mix(o.seed, 1));
  for (const auto& [name, sel] : picked)
    for (auto i : sel) EXPECT_EQ(std::count(initial.begin(), initial.end(), i), 0) << name << " picked " << i;
  EXPECT_NE(picked["batchbald"], picked["balanced:batchbald"]);
  // A new joint batch at nearly every pick (restart 1): the restart share reaches the selection.
  auto joint = tiny_simulation({"batchbald"}, 30, 1);
  joint.batchbald_restart = 1.0;
  const auto c = quarry::simulate(d, joint);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].round, 0);
  EXPECT_NE(c[0].selected, picked["batchbald"]);
  joint.batchbald_restart = 1.5;
  EXPECT_THROW(quarry::check_simulate_options(d, joint), quarry::UsageError);

  // Usage errors: batchbald without a committee, a target without a balanced strategy, a
  // target of the wrong size.
  o.committee = quarry::CommitteeSpec{};
  EXPECT_THROW(quarry::check_simulate_options(d, o), quarry::UsageError);
  o = small_simulation();
  o.balance_target.assign(static_cast<std::size_t>(d.num_classes), 1.0 / d.num_classes);
  EXPECT_THROW(quarry::check_simulate_options(d, o), quarry::UsageError);
  o.strategies = {"balanced:random"};
  EXPECT_NO_THROW(quarry::check_simulate_options(d, o));
  o.balance_target.push_back(0.0);
  EXPECT_THROW(quarry::check_simulate_options(d, o), quarry::UsageError);
}

TEST(Cli, SimulateStrategyUsageErrorsExitTwo) {
  const std::string dir = tmp_dir("cli-strategies");
  const std::string base = "simulate --dataset synthetic:400 --seed-size 40 --batch 30 --rounds 1 --repeats 1 --out " +
                           dir + "/sim ";
  const std::vector<std::pair<std::string, std::string>> cases{
      {"--strategies balanced:", "--strategies: strategy 'balanced:': balanced:NAME needs a strategy NAME"},
      {"--strategies balanced:balanced:entropy", "does not nest"},
      {"--strategies balanced:typo", "unknown strategy 'typo' in 'balanced:typo'"},
      {"--strategies batchbald --committee none", "needs a committee"},
      {"--strategies entropy --balance-target 1,1,1,1", "--balance-target is for balanced:NAME"},
      {"--strategies balanced:entropy --balance-target 1,1", "--balance-target '1,1': 2 weights"},
      {"--strategies balanced:entropy --balance-target 1,x,1,1", "'x' is not a weight"},
      {"--strategies entropy --batchbald-restart 0.2", "--batchbald-restart is for the batchbald strategies"},
      {"--strategies batchbald --batchbald-restart 1.5", "--batchbald-restart"}};
  for (const auto& [args, message] : cases) {
    const Result r = quarry_cli(base + args, dir);
    EXPECT_EQ(r.rc, 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(dir + "/sim"));
}

TEST(Cli, PretrainWritesEmbeddingsTheColdStartReads) {
  const std::string dir = tmp_dir("cli-pretrain");
  Result r = quarry_cli("pretrain --dataset synthetic:300 --epochs 1 --batch-size 100 --threads 2 --out " + dir +
                            "/e.npy --labels-out " + dir + "/labels.npy", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("contrastive loss per epoch"), std::string::npos) << r.out;
  const auto e = quarry::read_npy(dir + "/e.npy");
  ASSERT_EQ(e.shape(), (std::vector<std::int64_t>{300, 128}));
  // --labels-out: the pool's labels, in pool order (those the loader gives simulate).
  {
    const quarry::Dataset d = quarry::load_dataset("synthetic:300");
    const auto y = quarry::read_npy(dir + "/labels.npy");
    ASSERT_EQ(y.shape(), (std::vector<std::int64_t>{d.train.size()}));
    ASSERT_EQ(y.dtype(), quarry::DType::i64);
    for (std::int64_t i = 0; i < d.train.size(); ++i)
      ASSERT_EQ(y.as<std::int64_t>()[i], d.train.y[static_cast<std::size_t>(i)]) << i;
  }
  // A model trained on the embeddings: simulate over npy:E,Y (the pool's features and labels).
  r = quarry_cli("simulate --dataset npy:" + dir + "/e.npy," + dir + "/labels.npy --model mlp --strategies random "
                 "--seed-size 20 --batch 20 --rounds 1 --repeats 1 --epochs 2 --min-steps 10 --threads 2 "
                 "--seed-strategy typiclust --out " + dir + "/on-embeddings", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  // The cold start reads them: a typiclust initial set over the pretrained embeddings.
  r = quarry_cli("simulate --dataset synthetic:300 --strategies random --seed-size 20 --batch 20 --rounds 0 "
                 "--repeats 1 --epochs 2 --min-steps 10 --threads 2 --seed-strategy typiclust --seed-embeddings " +
                     dir + "/e.npy --out " + dir + "/sim", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  // Embeddings of another pool are refused.
  r = quarry_cli("simulate --dataset synthetic:400 --strategies random --seed-size 20 --batch 20 --rounds 0 "
                 "--repeats 1 --seed-strategy typiclust --seed-embeddings " + dir + "/e.npy --out " + dir + "/sim2",
                 dir);
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_NE(r.err.find("e.npy"), std::string::npos) << r.err;
  // Feature vectors are not images; an output never overwrites the input; bad options exit 2.
  {
    std::vector<float> x(40 * 6, 0.5f);
    std::vector<std::int64_t> y(40, 0);
    for (int i = 0; i < 40; ++i) y[static_cast<std::size_t>(i)] = i % 2;
    quarry::write_npy(dir + "/x.npy", quarry::ArrayView{x.data(), quarry::DType::f32, {40, 6}});
    quarry::write_npy(dir + "/y.npy", quarry::ArrayView{y.data(), quarry::DType::i64, {40}});
  }
  r = quarry_cli("pretrain --dataset npy:" + dir + "/x.npy," + dir + "/y.npy --out " + dir + "/f.npy", dir);
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("feature vectors"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/f.npy"));
  r = quarry_cli("pretrain --dataset pool:" + dir + "/x.npy --out " + dir + "/x.npy", dir);
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_EQ(quarry::read_npy(dir + "/x.npy").shape(), (std::vector<std::int64_t>{40, 6}));
  r = quarry_cli("pretrain --dataset synthetic:300 --out " + dir + "/h.npy --labels-out " + dir + "/h.npy", dir);
  EXPECT_EQ(r.rc, 2) << r.err;  // one file named twice
  // ... also through a link to a file not written yet: the labels would land on the embeddings.
  fs::create_symlink("h2.npy", dir + "/to-h2");
  r = quarry_cli("pretrain --dataset synthetic:300 --epochs 1 --out " + dir + "/h2.npy --labels-out " + dir + "/to-h2",
                 dir);
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("are the same file"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/h2.npy"));
  // Refused before training, not after: a link into a folder that does not exist.
  fs::create_symlink("missing/y.npy", dir + "/to-missing");
  r = quarry_cli("pretrain --dataset synthetic:300 --epochs 1 --out " + dir + "/h3.npy --labels-out " + dir +
                     "/to-missing", dir);
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("epoch"), std::string::npos) << r.err;  // no training happened
  EXPECT_FALSE(fs::exists(dir + "/h3.npy"));
  // Labels that cannot be written publish neither file: the earlier embeddings stay as they were.
  if (fs::exists("/dev/full")) {
    r = quarry_cli("pretrain --dataset synthetic:300 --pool-limit 50 --epochs 1 --batch-size 50 --threads 2 --out " +
                       dir + "/e.npy --labels-out /dev/full", dir);
    EXPECT_EQ(r.rc, 1) << r.err;
    EXPECT_NE(r.err.find("/dev/full"), std::string::npos) << r.err;
    EXPECT_EQ(quarry::read_npy(dir + "/e.npy").shape(), (std::vector<std::int64_t>{300, 128}));
    for (const auto& f : fs::directory_iterator(dir))
      EXPECT_EQ(f.path().filename().string().find(".tmp."), std::string::npos) << f.path();
  }
  {  // an unlabeled pool of images has no labels to write
    std::vector<float> img(30 * 8 * 8, 0.25f);
    quarry::write_npy(dir + "/imgs.npy", quarry::ArrayView{img.data(), quarry::DType::f32, {30, 8, 8}});
  }
  r = quarry_cli("pretrain --dataset pool:" + dir + "/imgs.npy --epochs 1 --out " + dir + "/i.npy --labels-out " +
                     dir + "/iy.npy", dir);
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("unlabeled pool"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/i.npy"));
  for (const char* bad : {"--epochs 0", "--batch-size 1", "--temperature 0", "--device tpu"}) {
    r = quarry_cli(std::string("pretrain --dataset synthetic:300 --out ") + dir + "/g.npy " + bad, dir);
    EXPECT_EQ(r.rc, 2) << bad << ": " << r.err;
    EXPECT_FALSE(fs::exists(dir + "/g.npy")) << bad;
  }
}

TEST(Cli, TrainInferAndSimulateEndToEnd) {
  const std::string dir = tmp_dir("cli");
  // train on a labeled list, infer with MC-dropout.
  {
    std::ofstream f(dir + "/labeled.txt");
    for (int i = 0; i < 300; ++i) f << i << "\n";
  }
  Result r = quarry_cli("train --dataset synthetic:400 --labeled " + dir + "/labeled.txt --epochs 3 --min-steps 20 "
                        "--threads 2 --out " + dir + "/m.pt", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("test: accuracy"), std::string::npos) << r.out;
  r = quarry_cli("infer --dataset synthetic:400 --model " + dir + "/m.pt --committee mc:3 --out " + dir + "/inf", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto probs = quarry::read_npy(dir + "/inf/probs.npy");
  const auto emb = quarry::read_npy(dir + "/inf/embeddings.npy");
  const auto com = quarry::read_npy(dir + "/inf/committee.npy");
  EXPECT_EQ(probs.shape(), (std::vector<std::int64_t>{400, 4}));
  EXPECT_EQ(emb.shape(), (std::vector<std::int64_t>{400, 128}));
  EXPECT_EQ(com.shape(), (std::vector<std::int64_t>{3, 400, 4}));
  {
    // Without a committee: no committee.npy (the one of the run above is removed, never left
    // beside outputs it does not belong to).
    const Result none = quarry_cli("infer --dataset synthetic:400 --model " + dir + "/m.pt --committee none --out " +
                                       dir + "/inf", dir);
    ASSERT_EQ(none.rc, 0) << none.err;
    EXPECT_FALSE(std::filesystem::exists(dir + "/inf/committee.npy"));
    EXPECT_EQ(none.out.find("committee.npy"), std::string::npos) << none.out;
    EXPECT_EQ(quarry::read_npy(dir + "/inf/probs.npy").shape(), (std::vector<std::int64_t>{400, 4}));
    // Back to the MC-dropout outputs that the rest of this test scores.
    ASSERT_EQ(quarry_cli("infer --dataset synthetic:400 --model " + dir + "/m.pt --committee mc:3 --out " + dir + "/inf",
                         dir).rc, 0);
  }
  {
    // Consistent MC dropout: member s is one network over the whole pool (one mask for every
    // row), so copies of an image, wherever they sit in the pool and its batches, get the same
    // prediction from each member, while members differ (what BatchBALD's joint estimate needs).
    const quarry::Dataset d = quarry::load_dataset("synthetic:400");
    const std::int64_t numel = 28 * 28, n = 300;
    std::vector<float> pool(static_cast<std::size_t>(n * numel));
    for (std::int64_t i = 0; i < n; ++i)  // rows 0, 100, 200 are image 7; the others image i
      std::copy_n(d.train.x.data() + (i % 100 == 0 ? 7 : i) * numel, numel, pool.data() + i * numel);
    quarry::write_npy(dir + "/dup.npy", quarry::ArrayView{pool.data(), quarry::DType::f32, {n, 28, 28}});
    ASSERT_EQ(quarry_cli("infer --dataset pool:" + dir + "/dup.npy --model " + dir + "/m.pt --committee mc:4 "
                         "--batch-size 64 --out " + dir + "/dup", dir).rc, 0);
    const auto c = quarry::read_npy(dir + "/dup/committee.npy");
    ASSERT_EQ(c.shape(), (std::vector<std::int64_t>{4, n, 4}));
    const float* p = c.as<float>();
    double spread = 0.0;
    for (std::int64_t s = 0; s < 4; ++s)
      for (std::int64_t k = 0; k < 4; ++k) {
        for (const std::int64_t copy : {std::int64_t{7}, std::int64_t{100}, std::int64_t{200}})
          EXPECT_NEAR(p[(s * n + copy) * 4 + k], p[(s * n + 0) * 4 + k], 1e-6) << s << " " << copy << " " << k;
        spread += std::fabs(p[(s * n + 0) * 4 + k] - p[(0 * n + 0) * 4 + k]);
      }
    EXPECT_GT(spread, 1e-4);  // the members are different networks
  }
  const auto rows = quarry::read_npy(dir + "/inf/rows.npy");  // synthetic: the identity
  ASSERT_EQ(rows.shape(), (std::vector<std::int64_t>{400}));
  EXPECT_EQ(rows.as<std::int64_t>()[399], 399);
  // The outputs feed the scoring commands as they are.
  r = quarry_cli("select --input " + dir + "/inf/committee.npy --acquisition bald -k 5 --exclude " + dir +
                 "/labeled.txt", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  // Errors: an index outside the pool names the file and the entry; a model for other data.
  { std::ofstream(dir + "/bad.txt") << "3\n400\n"; }
  r = quarry_cli("train --dataset synthetic:400 --labeled " + dir + "/bad.txt --out " + dir + "/x.pt", dir);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("bad.txt: entry 2: index 400"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/x.pt"));

  // simulate: the files, and summary.json's final means equal the means of rounds.jsonl.
  r = quarry_cli("simulate --dataset synthetic:400 --strategies random,entropy --seed-size 40 --batch 30 --rounds 2 "
                 "--repeats 2 --epochs 3 --min-steps 20 --threads 2 --out " + dir + "/sim", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("summary: " + dir + "/sim/summary.md"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("plot:    " + dir + "/sim/curves.svg"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("repeat 2/2 round  2/2"), std::string::npos) << r.err;
  // report rebuilds the same summary from rounds.jsonl; an interrupted run's unfinished repeats
  // are left out.
  const std::string md = slurp(dir + "/sim/summary.md");
  fs::remove(dir + "/sim/summary.md");
  Result rep = quarry_cli("report " + dir + "/sim", dir);
  ASSERT_EQ(rep.rc, 0) << rep.err;
  EXPECT_EQ(slurp(dir + "/sim/summary.md"), md);
  // Against another strategy, into another folder: the run's own report is left as it was; the
  // baseline must be a strategy of the run; the run's summary.json is never an output.
  rep = quarry_cli("report " + dir + "/sim --baseline entropy --out " + dir + "/vs", dir);
  ASSERT_EQ(rep.rc, 0) << rep.err;
  EXPECT_EQ(slurp(dir + "/sim/summary.md"), md);
  EXPECT_EQ(nlohmann::json::parse(slurp(dir + "/vs/summary.json"))["baseline"], "entropy");
  EXPECT_NE(slurp(dir + "/vs/summary.md").find("- **Baseline:** entropy"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir + "/vs/curves.svg") && fs::exists(dir + "/vs/curves.csv"));
  rep = quarry_cli("report " + dir + "/sim --baseline bald --out " + dir + "/vs2", dir);
  EXPECT_EQ(rep.rc, 2);
  EXPECT_NE(rep.err.find("--baseline bald: no finished repeat of that strategy"), std::string::npos) << rep.err;
  EXPECT_NE(rep.err.find("(it has entropy, random)"), std::string::npos) << rep.err;
  EXPECT_FALSE(fs::exists(dir + "/vs2"));
  fs::create_directories(dir + "/vs3");
  fs::create_symlink(fs::absolute(dir + "/sim/summary.json"), dir + "/vs3/summary.json");
  rep = quarry_cli("report " + dir + "/sim --baseline entropy --out " + dir + "/vs3", dir);
  EXPECT_EQ(rep.rc, 2) << rep.err;
  fs::create_directories(dir + "/vs4");  // a link to the run's own summary.md
  fs::create_symlink(fs::absolute(dir + "/sim/summary.md"), dir + "/vs4/summary.md");
  rep = quarry_cli("report " + dir + "/sim --baseline entropy --out " + dir + "/vs4", dir);
  EXPECT_EQ(rep.rc, 2) << rep.err;
  EXPECT_EQ(slurp(dir + "/sim/summary.md"), md);
  fs::create_directories(dir + "/vs5");  // another run's folder
  fs::copy_file(dir + "/sim/rounds.jsonl", dir + "/vs5/rounds.jsonl");
  rep = quarry_cli("report " + dir + "/sim --baseline entropy --out " + dir + "/vs5", dir);
  EXPECT_EQ(rep.rc, 2);
  EXPECT_NE(rep.err.find("holds another run"), std::string::npos) << rep.err;
  EXPECT_FALSE(fs::exists(dir + "/vs5/summary.md"));
  std::ofstream(dir + "/plain.txt") << "a file\n";  // a folder under a file: a usage error too
  rep = quarry_cli("report " + dir + "/sim --baseline entropy --out " + dir + "/plain.txt/sub/vs6", dir);
  EXPECT_EQ(rep.rc, 2) << rep.err;
  EXPECT_NE(rep.err.find("a file"), std::string::npos) << rep.err;
  fs::create_symlink(dir + "/plain.txt/sub", dir + "/nowhere");  // a link that leads nowhere
  rep = quarry_cli("report " + dir + "/sim --baseline entropy --out " + dir + "/nowhere/vs7", dir);
  EXPECT_EQ(rep.rc, 2) << rep.err;
  EXPECT_NE(rep.err.find("which does not exist"), std::string::npos) << rep.err;
  // In place against entropy, then plainly: the default baseline is random again.
  ASSERT_EQ(quarry_cli("report " + dir + "/sim --baseline entropy", dir).rc, 0);
  ASSERT_EQ(quarry_cli("report " + dir + "/sim", dir).rc, 0);
  EXPECT_EQ(slurp(dir + "/sim/summary.md"), md);
  fs::create_directories(dir + "/cut");
  {
    std::ifstream in(dir + "/sim/rounds.jsonl");
    std::ofstream out(dir + "/cut/rounds.jsonl");
    std::string line;
    for (int i = 0; i < 10 && std::getline(in, line); ++i) out << line << "\n";  // entropy repeat 2 stops at round 0
  }
  rep = quarry_cli("report " + dir + "/cut", dir);
  ASSERT_EQ(rep.rc, 0) << rep.err;
  EXPECT_NE(rep.err.find("entropy repeat 2 stopped at round 0 of 2: left out"), std::string::npos) << rep.err;
  EXPECT_TRUE(fs::exists(dir + "/cut/curves.svg"));
  // With the run's summary.json, its configured rounds decide what finished: a run cut before
  // any repeat's last round is not passed off as a shorter complete one.
  fs::create_directories(dir + "/short");
  fs::copy_file(dir + "/sim/summary.json", dir + "/short/summary.json");
  {
    std::ifstream in(dir + "/sim/rounds.jsonl");
    std::ofstream out(dir + "/short/rounds.jsonl");
    std::string line;
    for (int i = 0; i < 2 && std::getline(in, line); ++i) out << line << "\n";  // rounds 0 and 1 of 2
  }
  rep = quarry_cli("report " + dir + "/short", dir);
  EXPECT_EQ(rep.rc, 1);
  EXPECT_NE(rep.err.find("random repeat 1 stopped at round 1 of 2: left out"), std::string::npos) << rep.err;
  EXPECT_NE(rep.err.find("no repeat reached the run's last round (2)"), std::string::npos) << rep.err;
  { std::ofstream(dir + "/cut/rounds.jsonl", std::ios::app) << "{not json\n"; }
  rep = quarry_cli("report " + dir + "/cut", dir);
  EXPECT_EQ(rep.rc, 1);
  EXPECT_NE(rep.err.find("rounds.jsonl: line 11"), std::string::npos) << rep.err;

  // The stopping rule: reported every round, and with --stop-early the repeat ends where it
  // fires (a threshold of -0.9 fires at the first kappa).
  r = quarry_cli("simulate --dataset synthetic:400 --strategies random --seed-size 40 --batch 30 --rounds 3 "
                 "--repeats 1 --epochs 3 --min-steps 20 --threads 2 --stop kappa:-0.9:1 --stop-set 100 --stop-early "
                 "--out " + dir + "/stop", dir);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("(stopping rule fired: labels have stopped paying)"), std::string::npos) << r.err;
  const std::string stop_rounds = slurp(dir + "/stop/rounds.jsonl");
  EXPECT_EQ(std::count(stop_rounds.begin(), stop_rounds.end(), '\n'), 2) << stop_rounds;
  EXPECT_NE(slurp(dir + "/stop/summary.md").find("## Stopping rule"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(slurp(dir + "/stop/summary.json"))["config"]["stop"], "kappa:-0.9:1");
  rep = quarry_cli("report " + dir + "/stop", dir);  // the stopped repeat is kept, not "left out"
  ASSERT_EQ(rep.rc, 0) << rep.err;
  EXPECT_EQ(rep.err.find("left out"), std::string::npos) << rep.err;
  r = quarry_cli("simulate --dataset synthetic:400 --stop-early --out " + dir + "/x", dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--stop-early needs a rule"), std::string::npos) << r.err;
  r = quarry_cli("simulate --dataset synthetic:400 --stop kappa:2:3 --out " + dir + "/x", dir);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("THRESHOLD is not a number in (-1, 1]"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/x"));

  const auto j = nlohmann::json::parse(slurp(dir + "/sim/summary.json"));
  std::map<std::string, std::vector<double>> final_acc;
  std::ifstream in(dir + "/sim/rounds.jsonl");
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    const auto rec = nlohmann::json::parse(line);
    if (rec.at("round").get<int>() == 2) final_acc[rec.at("strategy").get<std::string>()].push_back(rec.at("accuracy"));
  }
  EXPECT_EQ(lines, 2 * 2 * 3);
  ASSERT_EQ(final_acc.size(), 2u);
  const std::string dumped = j.dump();
  for (const auto& [name, v] : final_acc) {
    ASSERT_EQ(v.size(), 2u);
    const double mean = (v[0] + v[1]) / 2;
    bool found = false;
    for (const auto& s : j.at("strategies"))
      if (s.at("strategy") == name) {
        found = true;
        EXPECT_NEAR(s.at("curve").back().at("accuracy").at("mean").get<double>(), mean, 1e-9) << name;
      }
    EXPECT_TRUE(found) << name << " missing from summary.json: " << dumped.substr(0, 400);
  }
}

}  // namespace
