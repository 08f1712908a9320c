// Backend parity, devices: auto and device numbers, clear errors where CUDA is unavailable
// (library and command line), and `quarry select --device cuda` equal to the CPU. Harness in
// cuda_parity.hpp.
#include <gtest/gtest.h>

#include "cuda_parity.hpp"

namespace cuda_test {
namespace {

// ------------------------------------------------------------------ devices

TEST(CudaDevice, AutoPicksTheGpuWhereThereIsOne) {
  if (quarry::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: auto resolves to the CPU here";
  Shape s;
  s.n = 20001;
  s.c = 10;
  const Pool p = make_pool(s);
  const std::vector<float> gpu = quarry::score(p.input.view(), Acquisition::entropy, options(p, kGpu));
  const std::vector<float> au = quarry::score(p.input.view(), Acquisition::entropy,
                                              options(p, DeviceSpec{DeviceKind::automatic, 0}));
  EXPECT_EQ(std::memcmp(gpu.data(), au.data(), gpu.size() * sizeof(float)), 0);
  EXPECT_EQ(quarry::resolve_device(DeviceSpec{DeviceKind::automatic, 0}).kind, DeviceKind::cuda);
}

// Runs everywhere: a device number past the last visible one is an Error that names it.
TEST(CudaDevice, DeviceNumberPastTheLastIsAnError) {
  const int count = quarry::cuda_device_count();
  const DeviceSpec past{DeviceKind::cuda, count};
  const std::string name = "cuda:" + std::to_string(count);
  const std::vector<float> p = {0.5f, 0.5f, 0.25f, 0.75f};
  const quarry::ArrayView v{p.data(), DType::f32, {2, 2}};
  quarry::ScoreOptions o;
  o.device = past;
  const std::string e = error_of([&] { quarry::score(v, Acquisition::entropy, o); });
  EXPECT_NE(e.find(name), std::string::npos) << e;
  if (count > 0) EXPECT_NE(e.find("only " + std::to_string(count) + " CUDA device"), std::string::npos) << e;
  EXPECT_EQ(error_of([&] { quarry::select_topk(p.data(), 4, 1, {}, past); }), e);
}

// ------------------------------------------------------------------ without CUDA: clear errors

// The message resolve_device gives where CUDA cannot run: names the device asked for, why, and
// what to do instead.
void expect_no_cuda_message(const std::string& e) {
  EXPECT_NE(e.find("--device cuda:0"), std::string::npos) << e;
  if (quarry::build_info().cuda)
    EXPECT_NE(e.find("no CUDA device is visible on this machine"), std::string::npos) << e;
  else
    EXPECT_NE(e.find("this quarry was built without CUDA"), std::string::npos) << e;
  EXPECT_NE(e.find("use --device cpu"), std::string::npos) << e;
}

TEST(CudaUnavailable, EveryEntryPointIsAClearError) {
  if (quarry::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible: CUDA is available";
  const std::vector<float> p = {0.5f, 0.5f, 0.25f, 0.75f, 1.0f, 0.0f};
  const quarry::ArrayView v{p.data(), DType::f32, {3, 2}};
  quarry::ScoreOptions o;
  o.device = kCuda;
  std::vector<float> out = poisoned(3);
  const std::string e = error_of([&] { quarry::score(v, Acquisition::entropy, out.data(), o); });
  expect_no_cuda_message(e);
  for (float x : out) EXPECT_EQ(quarry::detail::float_to_bits(x), kPoison) << "output touched";
  expect_no_cuda_message(error_of([&] { quarry::select_topk(p.data(), 6, 2, {}, kCuda); }));
  expect_no_cuda_message(error_of([&] { quarry::select_power(p.data(), 6, 2, 1.0, 1, {}, kCuda); }));
  quarry::SelectOptions so;
  so.k = 2;
  expect_no_cuda_message(error_of([&] { quarry::score_and_select(v, Acquisition::margin, o, so); }));
  // The same call on the CPU, and with auto, works (auto falls back to the CPU exactly).
  o.device = kCpu;
  const std::vector<float> cpu = quarry::score(v, Acquisition::entropy, o);
  o.device = DeviceSpec{DeviceKind::automatic, 0};
  EXPECT_EQ(quarry::score(v, Acquisition::entropy, o), cpu);
  EXPECT_EQ(quarry::resolve_device(DeviceSpec{DeviceKind::automatic, 0}).kind, DeviceKind::cpu);
}

// ------------------------------------------------------------------ the command line

struct CliRun {
  int rc;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

CliRun cli(const std::string& args) {
  static int counter = 0;
  const std::string base = std::string(QUARRY_TEST_TMP) + "/cuda_cli_" + std::to_string(::getpid()) + "_" +
                           std::to_string(counter++);
  const std::string cmd = std::string(QUARRY_CLI_PATH) + " " + args + " >" + base + ".out 2>" + base + ".err";
  const int status = std::system(cmd.c_str());
  CliRun r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(base + ".out"), slurp(base + ".err")};
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

std::string tmp_dir(const std::string& name) {
  const std::string d = std::string(QUARRY_TEST_TMP) + "/cuda_" + name + "_" + std::to_string(::getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(CudaUnavailable, CommandLineDeviceCudaFailsWithTheMessage) {
  if (quarry::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is visible: CUDA is available";
  const std::string d = tmp_dir("unavailable");
  const std::vector<float> p = {0.5f, 0.5f, 0.25f, 0.75f, 1.0f, 0.0f};
  quarry::write_npy(d + "/p.npy", quarry::ArrayView{p.data(), DType::f32, {3, 2}});
  quarry::write_npy(d + "/s.npy", quarry::ArrayView{p.data(), DType::f32, {6}});
  for (const std::string args :
       {"select --scores " + d + "/s.npy -k 2 --device cuda", "select --scores " + d + "/s.npy -k 2 --strategy power --device cuda",
        "select --input " + d + "/p.npy -a entropy -k 2 --device cuda",
        "score --input " + d + "/p.npy -a entropy --device cuda -o " + d + "/out.npy"}) {
    SCOPED_TRACE(args);
    const CliRun r = cli(args);
    EXPECT_EQ(r.rc, 1) << r.err;
    EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
    expect_no_cuda_message(r.err);
    EXPECT_EQ(r.out, "");
  }
  EXPECT_FALSE(fs::exists(d + "/out.npy"));
  // --device cpu and auto still work.
  const CliRun cpu = cli("select --scores " + d + "/s.npy -k 2 --device cpu");
  const CliRun au = cli("select --scores " + d + "/s.npy -k 2 --device auto");
  EXPECT_EQ(cpu.rc, 0) << cpu.err;
  EXPECT_EQ(au.out, cpu.out);
  fs::remove_all(d);
}

// With a GPU: the command line gives the same selection on --device cuda and --device cpu.
TEST(CudaCommandLine, SelectOnCudaEqualsCpu) {
  REQUIRE_GPU();
  const std::string d = tmp_dir("cli");
  ASSERT_EQ(cli("generate -n 200003 -c 10 --seed 5 -o " + d + "/p.npy").rc, 0);
  const CliRun sg = cli("score --input " + d + "/p.npy -a entropy --device " + kGpuFlag + " -o " + d + "/g.npy");
  const CliRun sc = cli("score --input " + d + "/p.npy -a entropy --device cpu -o " + d + "/c.npy");
  ASSERT_EQ(sg.rc, 0) << sg.err;
  ASSERT_EQ(sc.rc, 0) << sc.err;
  const quarry::Array g = quarry::read_npy(d + "/g.npy"), c = quarry::read_npy(d + "/c.npy");
  ASSERT_EQ(g.numel(), c.numel());
  for (std::int64_t i = 0; i < g.numel(); ++i)
    ASSERT_LE(std::fabs(g.as<float>()[i] - c.as<float>()[i]),
              tolerance(Acquisition::entropy, 10, 0, 1.0, c.as<float>()[i])) << "row " << i;
  for (const char* strategy : {"topk", "power"}) {
    const std::string args = "select --scores " + d + "/c.npy -k 1000 --strategy " + strategy + " --seed 4 --device ";
    const CliRun a = cli(args + kGpuFlag), b = cli(args + "cpu");
    ASSERT_EQ(a.rc, 0) << a.err;
    EXPECT_EQ(a.out, b.out) << strategy;
  }
  const CliRun one = cli("select --input " + d + "/p.npy -a entropy -k 100 --device " + kGpuFlag);
  const CliRun two = cli("select --scores " + d + "/g.npy -k 100 --device " + kGpuFlag);
  ASSERT_EQ(one.rc, 0) << one.err;
  // Same indices and scores; the "source" differs only in JSON, and this is CSV.
  EXPECT_EQ(one.out, two.out);
  fs::remove_all(d);
}

}  // namespace
}  // namespace cuda_test
