// End-to-end tests of the quarry command: each runs the built binary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "quarry/acquisition.hpp"
#include "quarry/batchbald.hpp"
#include "quarry/diversity.hpp"
#include "quarry/io.hpp"
#include "quarry/select.hpp"
#include "quarry/synthetic.hpp"

namespace {

namespace fs = std::filesystem;

struct Result {
  int rc;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Result quarry(const std::string& args) {
  static int counter = 0;
  const std::string base = std::string(QUARRY_TEST_TMP) + "/cli_" + std::to_string(::getpid()) + "_" +
                           std::to_string(counter++);
  const std::string cmd = std::string(QUARRY_CLI_PATH) + " " + args + " >" + base + ".out 2>" + base + ".err";
  const int status = std::system(cmd.c_str());
  Result r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(base + ".out"), slurp(base + ".err")};
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(QUARRY_TEST_TMP) + "/cli_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> v;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) v.push_back(l);
  return v;
}

TEST_F(Cli, VersionListsTheBuildFeatures) {
  const Result r = quarry("--version");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("quarry 0.1.0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cuda:"), std::string::npos);
  EXPECT_NE(r.out.find("libtorch:"), std::string::npos);
  EXPECT_NE(r.out.find("mpi:"), std::string::npos);
}

// The libraries the dynamic loader brought into a run of `program args` (LD_DEBUG=files).
std::string loaded_libraries(const std::string& program, const std::string& args) {
  const std::string log = std::string(QUARRY_TEST_TMP) + "/ld_" + std::to_string(::getpid()) + ".txt";
  const std::string cmd = "LD_DEBUG=files LD_DEBUG_OUTPUT=" + log + " " + program + " " + args + " >/dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;
  std::string all;
  for (const auto& e : fs::directory_iterator(QUARRY_TEST_TMP)) {  // one file per process: log.PID
    const std::string name = e.path().filename().string();
    if (name.rfind("ld_" + std::to_string(::getpid()) + ".txt.", 0) == 0) {
      all += slurp(e.path().string());
      fs::remove(e.path());
    }
  }
  return all;
}

TEST_F(Cli, EngineCommandsDoNotLoadLibTorch) {
  // quarry links the engine only; the loop's commands go to quarry-loop, which links LibTorch.
  const std::string pool = path("pool.npy");
  quarry::SyntheticSpec spec;
  spec.n = 100;
  spec.c = 4;
  quarry::write_npy(pool, quarry::synthetic_outputs(spec).view());
  for (const std::string& args :
       {std::string("--version"), "info " + pool, "score --input " + pool + " --output " + path("s.npy"),
        "select --input " + pool + " -k 5", "select --scores " + path("s.npy") + " -k 5"}) {
    const std::string libs = loaded_libraries(QUARRY_CLI_PATH, args);
    ASSERT_NE(libs.find("libquarry_engine"), std::string::npos) << args << ": no loader log\n" << libs;
    EXPECT_EQ(libs.find("libtorch"), std::string::npos) << args;
    EXPECT_EQ(libs.find("libc10"), std::string::npos) << args;
    EXPECT_EQ(libs.find("libquarry_loop"), std::string::npos) << args;
    EXPECT_EQ(libs.find("libcublas"), std::string::npos) << args;  // loaded on first GEMM only
    EXPECT_EQ(libs.find("blas.so"), std::string::npos) << args;    // the CPU BLAS too
  }
  // ... and a GEMM loads the BLAS: k-center from labeled samples computes their distances by GEMM.
  const std::string emb = path("emb.npy");
  spec.d = 8;
  quarry::write_npy(emb, quarry::synthetic_embeddings(spec).view());
  std::ofstream(path("ex.txt")) << "3\n17\n";
  const std::string gemm = loaded_libraries(
      QUARRY_CLI_PATH, "select --strategy kcenter --embeddings " + emb + " -k 5 --exclude " + path("ex.txt"));
  EXPECT_NE(gemm.find("blas.so"), std::string::npos) << gemm.substr(0, 2000);
#if QUARRY_BUILD_TORCH
  // The check sees LibTorch where it is loaded: quarry hands `train --help` over to quarry-loop.
  const std::string loop = loaded_libraries(QUARRY_CLI_PATH, "train --help");
  EXPECT_NE(loop.find("libquarry_loop"), std::string::npos);
  EXPECT_NE(loop.find("libtorch"), std::string::npos);
#endif
}

TEST_F(Cli, LoopCommandsAreHandedOverToQuarryLoop) {
  const Result help = quarry("--help");
  ASSERT_EQ(help.rc, 0);
  for (const char* c : {"score", "select", "info", "train", "infer", "simulate", "report", "project"})
    EXPECT_NE(help.out.find(std::string("  ") + c + " "), std::string::npos) << c;
  // Same output and exit code through quarry as from quarry-loop itself.
  const Result via = quarry("project status " + path("missing"));
  EXPECT_EQ(via.rc, 1) << via.err;
  EXPECT_NE(via.err.find("missing"), std::string::npos) << via.err;
  const Result sim = quarry("simulate --rounds -1");
  EXPECT_EQ(sim.rc, 2) << sim.err;
  const Result train = quarry("train --help");
  EXPECT_EQ(train.rc, 0);
  EXPECT_NE(train.out.find("--dataset"), std::string::npos) << train.out;
  // quarry-loop runs the engine's commands too.
  const std::string v = std::string(QUARRY_LOOP_CLI_PATH) + " --version >/dev/null";
  EXPECT_EQ(std::system(v.c_str()), 0);
}

// A quarry-loop that is really quarry (a copy, a link) must not make quarry hand over forever;
// `-o /dev/stdout >> log` appends to the log instead of writing over its start.
TEST_F(Cli, AHandOverToQuarryAgainStopsAndStdoutKeepsItsOffset) {
  const std::string bin = path("bin");
  fs::create_directories(bin);
  fs::copy_file(QUARRY_CLI_PATH, bin + "/quarry");
  fs::create_symlink(bin + "/quarry", bin + "/quarry-loop");
  const std::string err = path("loop.err");
  const int status = std::system(("timeout 20 " + bin + "/quarry report " + path("x") + " 2>" + err).c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1) << slurp(err);
  EXPECT_NE(slurp(err).find("quarry again"), std::string::npos) << slurp(err);

  ASSERT_EQ(quarry("generate -n 200 -c 3 -o " + path("p.npy")).rc, 0);
  const std::string log = path("app.log");
  std::ofstream(log) << "first line of the log\n";
  const std::string cmd = std::string(QUARRY_CLI_PATH) + " select --input " + path("p.npy") +
                          " -k 2 -o /dev/stdout >>" + log;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string got = slurp(log);
  EXPECT_EQ(got.rfind("first line of the log\nrank,index,score\n", 0), 0u) << got;
}

TEST_F(Cli, HelpShowsEveryFlagWithItsDefault) {
  const Result r = quarry("select --help");
  ASSERT_EQ(r.rc, 0);
  for (const char* flag : {"--scores", "--input", "--logits", "--acquisition", "--embeddings", "-k",
                           "--exclude", "--strategy", "--beta", "--seed", "--output", "--format", "--device"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  EXPECT_NE(r.out.find("=topk"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("=entropy"), std::string::npos) << r.out;
}

TEST_F(Cli, ScoreThenSelectMatchesTheLibrary) {
  ASSERT_EQ(quarry("generate -n 5000 -c 7 --seed 3 -o " + path("p.npy")).rc, 0);
  Result r = quarry("score --input " + path("p.npy") + " --acquisition margin -o " + path("s.npy"));
  ASSERT_EQ(r.rc, 0) << r.err;
  r = quarry("select --scores " + path("s.npy") + " -k 50 -o " + path("sel.csv"));
  ASSERT_EQ(r.rc, 0) << r.err;

  const quarry::Array p = quarry::read_npy(path("p.npy"));
  const std::vector<float> s = quarry::score(p.view(), quarry::Acquisition::margin);
  const quarry::Array sf = quarry::read_npy(path("s.npy"));
  ASSERT_EQ(sf.shape(), std::vector<std::int64_t>{5000});
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(sf.as<float>()[i], s[i]);
  const quarry::Selection sel = quarry::select_topk(s.data(), 5000, 50);
  const auto rows = lines(slurp(path("sel.csv")));
  ASSERT_EQ(rows.size(), 51u);
  EXPECT_EQ(rows[0], "rank,index,score");
  for (int k = 0; k < 50; ++k) {
    std::stringstream ss(rows[k + 1]);
    std::string rank, index, score;
    std::getline(ss, rank, ',');
    std::getline(ss, index, ',');
    std::getline(ss, score, ',');
    EXPECT_EQ(std::stoi(rank), k + 1);
    EXPECT_EQ(std::stoll(index), sel.index[k]);
    EXPECT_EQ(std::stof(score), sel.score[k]);
  }
}

TEST_F(Cli, SelectFromInputEqualsScoreThenSelect) {
  ASSERT_EQ(quarry("generate -n 3000 -c 5 -m 4 --logits --seed 1 -o " + path("c.npy")).rc, 0);
  ASSERT_EQ(quarry("score --input " + path("c.npy") + " --logits -a bald -o " + path("s.npy")).rc, 0);
  const Result two = quarry("select --scores " + path("s.npy") + " -k 30");
  const Result one = quarry("select --input " + path("c.npy") + " --logits -a bald -k 30");
  ASSERT_EQ(one.rc, 0) << one.err;
  EXPECT_EQ(one.out, two.out);
  EXPECT_EQ(lines(one.out).size(), 31u);
}

TEST_F(Cli, JsonFormatAndExclusions) {
  ASSERT_EQ(quarry("generate -n 1000 -c 3 -o " + path("p.npy")).rc, 0);
  std::ofstream(path("labeled.txt")) << "# already labeled\n5\n\n7\n";
  const Result all = quarry("select --input " + path("p.npy") + " -k 1000 --exclude " + path("labeled.txt") + " -o " + path("x.csv"));
  EXPECT_NE(all.rc, 0);
  EXPECT_NE(all.err.find("only 998 are selectable"), std::string::npos) << all.err;
  EXPECT_FALSE(fs::exists(path("x.csv")));  // nothing written on failure
  const Result r = quarry("select --input " + path("p.npy") + " -k 998 --exclude " + path("labeled.txt") +
                          " -o " + path("sel.json"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(slurp(path("sel.json")));
  ASSERT_EQ(j["selected"].size(), 998u);
  for (const auto& row : j["selected"]) {
    EXPECT_NE(row["index"].get<std::int64_t>(), 5);
    EXPECT_NE(row["index"].get<std::int64_t>(), 7);
  }
  // An index list as .npy works the same.
  const std::vector<std::int64_t> ex = {5, 7};
  quarry::write_npy(path("labeled.npy"), quarry::ArrayView{ex.data(), quarry::DType::i64, {2}});
  const Result txt = quarry("select --input " + path("p.npy") + " -k 10 --exclude " + path("labeled.txt"));
  const Result npy = quarry("select --input " + path("p.npy") + " -k 10 --exclude " + path("labeled.npy"));
  ASSERT_EQ(npy.rc, 0) << npy.err;
  EXPECT_EQ(txt.out, npy.out);
}

TEST_F(Cli, PowerSamplingIsReproducible) {
  ASSERT_EQ(quarry("generate -n 2000 -c 4 -o " + path("p.npy")).rc, 0);
  const std::string base = "select --input " + path("p.npy") + " -k 20 --strategy power --beta 2 ";
  const Result a = quarry(base + "--seed 9"), b = quarry(base + "--seed 9"), c = quarry(base + "--seed 10");
  ASSERT_EQ(a.rc, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST_F(Cli, BadInputGetsAClearErrorAndNonZeroExit) {
  // Missing file.
  Result r = quarry("score --input " + path("missing.npy") + " -o " + path("s.npy"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("missing.npy"), std::string::npos) << r.err;
  // Rows that do not sum to 1: the error names the file and the row.
  std::vector<float> p = {0.5f, 0.5f, 0.2f, 0.3f, 1.0f, 0.0f};
  quarry::write_npy(path("bad.npy"), quarry::ArrayView{p.data(), quarry::DType::f32, {3, 2}});
  r = quarry("score --input " + path("bad.npy") + " -o " + path("s.npy"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("bad.npy: row 1"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("s.npy")));
  // Unknown acquisition lists the valid ones (a bad flag value: a usage error).
  r = quarry("score --input " + path("bad.npy") + " -a entropyy -o " + path("s.npy"));
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("badge-norm"), std::string::npos) << r.err;
  // A committee score on [N,C].
  p = {0.5f, 0.5f, 0.2f, 0.8f};
  quarry::write_npy(path("ok.npy"), quarry::ArrayView{p.data(), quarry::DType::f32, {2, 2}});
  r = quarry("score --input " + path("ok.npy") + " -a bald -o " + path("s.npy"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("committee"), std::string::npos) << r.err;
  // CUDA where this version cannot run it.
  r = quarry("score --input " + path("ok.npy") + " --device cuda -o " + path("s.npy"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("cuda"), std::string::npos) << r.err;
  // Usage errors (missing required flag, unknown flag, bad value): exit 2.
  EXPECT_EQ(quarry("select -k 3").rc, 2);
  EXPECT_EQ(quarry("score --bogus").rc, 2);
  EXPECT_EQ(quarry("select --scores x.npy -k -1").rc, 2);
  // Selection errors name the file the scores came from (k beyond the pool: a usage error).
  r = quarry("select --input " + path("ok.npy") + " -k 5");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("ok.npy"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("only 2 are selectable"), std::string::npos) << r.err;
}

// select --strategy batchbald over a committee [M, N, C]: the library's picks; a bad row names the
// file; its options given to another strategy are a usage error, not silently ignored.
TEST_F(Cli, BatchBaldSelectsLikeTheLibraryAndNamesBadInput) {
  const int M = 4, N = 40, C = 3;
  std::vector<float> p(static_cast<std::size_t>(M * N * C));
  std::uint32_t x = 12345;
  for (std::size_t i = 0; i < p.size(); i += C) {
    float sum = 0;
    for (int c = 0; c < C; ++c) {
      x = x * 1664525u + 1013904223u;
      p[i + c] = 0.05f + static_cast<float>(x >> 8) / static_cast<float>(1u << 24);
      sum += p[i + c];
    }
    for (int c = 0; c < C; ++c) p[i + c] /= sum;
  }
  const quarry::ArrayView v{p.data(), quarry::DType::f32, {M, N, C}};
  quarry::write_npy(path("k.npy"), v);
  Result r = quarry("select --input " + path("k.npy") + " --strategy batchbald -k 6 --restart 0.3 --samples 64");
  ASSERT_EQ(r.rc, 0) << r.err;
  quarry::BatchBaldOptions o;
  o.restart = 0.3;
  o.samples = 64;
  const quarry::Selection want = quarry::select_batchbald(v, 6, {}, o);
  const std::vector<std::string> got = lines(r.out);
  ASSERT_EQ(got.size(), want.index.size() + 1) << r.out;
  for (std::size_t i = 0; i < want.index.size(); ++i) {
    const std::string prefix = std::to_string(i + 1) + "," + std::to_string(want.index[i]) + ",";
    EXPECT_EQ(got[i + 1].compare(0, prefix.size(), prefix), 0) << got[i + 1];
  }
  p[static_cast<std::size_t>((2 * N + 7) * C + 1)] = -0.25f;  // member 2, row 7
  quarry::write_npy(path("bad.npy"), v);
  r = quarry("select --input " + path("bad.npy") + " --strategy batchbald -k 6");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("bad.npy: committee member 2, row 7, class 1"), std::string::npos) << r.err;
  for (const char* flag : {"--restart 0.2", "--samples 16"}) {
    r = quarry("select --input " + path("k.npy") + " -a bald -k 6 " + flag);
    EXPECT_EQ(r.rc, 2) << flag;
    EXPECT_NE(r.err.find("options of --strategy batchbald"), std::string::npos) << r.err;
  }
}

TEST_F(Cli, InfoDescribesNpyAndNpz) {
  ASSERT_EQ(quarry("generate -n 100 -c 4 -o " + path("p.npy")).rc, 0);
  const Result r = quarry("info " + path("p.npy"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("shape [100, 4]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("float32"), std::string::npos);
  EXPECT_NE(r.out.find("(probabilities)"), std::string::npos) << r.out;
  const std::string npz = std::string(QUARRY_SHARED_DATA) + "/pneumoniamnist/pneumoniamnist.npz";
  if (QUARRY_HAVE_NPZ && fs::exists(npz)) {
    const Result z = quarry("info " + npz);
    ASSERT_EQ(z.rc, 0) << z.err;
    EXPECT_NE(z.out.find("train_images"), std::string::npos);
    EXPECT_NE(z.out.find("shape [3882, 28, 28]"), std::string::npos) << z.out;
    const Result m = quarry("info " + npz + ":train_labels");
    ASSERT_EQ(m.rc, 0) << m.err;
    EXPECT_NE(m.out.find("npz member"), std::string::npos) << m.out;
    EXPECT_NE(m.out.find("shape [3882, 1]"), std::string::npos) << m.out;
  }
}

TEST_F(Cli, DemoRunsTheMainJob) {
  const Result r = quarry("demo -n 20000 -k 25 --out " + path("demo"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(fs::exists(path("demo/pool.npy")));
  EXPECT_TRUE(fs::exists(path("demo/scores.npy")));
  EXPECT_EQ(lines(slurp(path("demo/batch.csv"))).size(), 26u);
  EXPECT_NE(r.out.find("most informative"), std::string::npos) << r.out;
}

}  // namespace

namespace {

// select --strategy badge|kcenter|cluster-margin|uncertain-kcenter gives the library's selection.
TEST_F(Cli, DiversityStrategiesMatchTheLibrary) {
  ASSERT_EQ(quarry("generate -n 3000 -c 5 --seed 4 -o " + path("p.npy") + " --embeddings " + path("h.npy") +
                   " -d 12").rc,
            0);
  {
    std::ofstream ex(path("labeled.txt"));
    ex << "3\n17\n400\n";
  }
  const quarry::Array p = quarry::read_array(path("p.npy"));
  const quarry::Array h = quarry::read_array(path("h.npy"));
  for (quarry::DiversityStrategy s : quarry::all_diversity_strategies()) {
    const std::string name = quarry::diversity_strategy_name(s);
    const Result r = quarry("select --input " + path("p.npy") + " --embeddings " + path("h.npy") +
                            " --strategy " + name + " -k 25 --seed 9 --candidates 200 --device cpu --exclude " +
                            path("labeled.txt") + " -o " + path(name + ".csv"));
    ASSERT_EQ(r.rc, 0) << name << ": " << r.err;
    quarry::DiversityOptions o;
    o.k = 25;
    o.seed = 9;
    o.candidates = 200;
    o.exclude = {3, 17, 400};
    o.acquisition = quarry::Acquisition::entropy;  // the command's default --acquisition
    o.device = {quarry::DeviceKind::cpu, 0};
    const quarry::ArrayView pv = p.view();
    const quarry::Selection want = quarry::select_diverse(s, h.view(), &pv, o);
    const std::vector<std::string> got = lines(slurp(path(name + ".csv")));
    ASSERT_EQ(got.size(), want.index.size() + 1) << name;
    for (std::size_t i = 0; i < want.index.size(); ++i) {
      const std::string prefix = std::to_string(i + 1) + "," + std::to_string(want.index[i]) + ",";
      EXPECT_EQ(got[i + 1].compare(0, prefix.size(), prefix), 0) << name << ": " << got[i + 1];
    }
  }
  // Usage errors: a diversity strategy without embeddings, badge without outputs.
  EXPECT_EQ(quarry("select --input " + path("p.npy") + " --strategy badge -k 3").rc, 2);
  EXPECT_EQ(quarry("select --embeddings " + path("h.npy") + " --strategy badge -k 3").rc, 2);
  // kcenter needs only the embeddings.
  EXPECT_EQ(quarry("select --embeddings " + path("h.npy") + " --strategy kcenter -k 3 --device cpu").rc, 0);
}

}  // namespace
