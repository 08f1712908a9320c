// The hostile-input suite: the quarry command as a careless or hostile user runs it. Every case
// asserts the exit code (2 for a usage error, 1 for bad data, never a signal or a hang), the
// message, and that no input, output or project file was changed or left behind.
//
// Classes: outputs that alias inputs, other outputs or a project's own files; symbolic links;
// FIFOs, devices and folders where files are expected; files that shrink while mapped;
// compressed bombs; absurd knobs; leftovers of failed commands; tampered labeling projects;
// loosely typed Label Studio exports.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "file_builders.hpp"
#include "quarry/io.hpp"
#include "quarry/synthetic.hpp"
#include "quarry/version.hpp"
#include "io/files.hpp"

namespace {

namespace fs = std::filesystem;
using quarry_test::read_file;
using quarry_test::write_file;

struct CmdResult {
  int rc = -1;  // the exit code; -1 for a signal
  std::string out, err;
};

// Runs the built command with `args` (a shell word list) under a 60 s limit: a hang is exit 124.
CmdResult quarry(const std::string& args, const std::string& prefix = "") {
  static int counter = 0;
  const std::string base = std::string(QUARRY_TEST_TMP) + "/hostile_" + std::to_string(::getpid()) + "_" +
                           std::to_string(counter++);
  const std::string cmd = prefix + "timeout -k 5 60 " + std::string(QUARRY_CLI_PATH) + " " + args + " </dev/null >" +
                          base + ".out 2>" + base + ".err";
  const int status = std::system(cmd.c_str());
  CmdResult r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return r;
}

// Every file under `dir` (links as their target's path), with its content: what must not change.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> s;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string rel = fs::relative(it->path(), dir).string();
    if (it->path().filename() == ".lock") continue;  // a writer notes its pid there
    if (it->is_symlink(ec)) {
      s[rel] = "link -> " + fs::read_symlink(it->path(), ec).string();
    } else if (it->is_regular_file(ec)) {
      s[rel] = read_file(it->path().string());
    } else {
      s[rel] = it->is_directory(ec) ? "<folder>" : "<special>";
    }
  }
  return s;
}

std::string names(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b) {
  std::string d;
  for (const auto& [k, v] : a)
    if (!b.count(k)) d += " -" + k;
    else if (b.at(k) != v) d += " ~" + k;
  for (const auto& [k, v] : b)
    if (!a.count(k)) d += " +" + k;
  return d;
}

#define EXPECT_UNCHANGED(dir, before) EXPECT_EQ(names(before, snapshot(dir)), "") << "files changed in " << dir

class Hostile : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::string(QUARRY_TEST_TMP) + "/hostile/" + info->test_suite_name() + "." + info->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  std::string p(const std::string& name) const { return dir_ + "/" + name; }
  // A pool of probabilities [n, c] (float32) and its scores.
  void pool(const std::string& name, std::int64_t n = 200, std::int64_t c = 4) const {
    quarry::SyntheticSpec s;
    s.n = n;
    s.c = c;
    s.seed = 7;
    quarry::write_npy(p(name), quarry::synthetic_outputs(s).view());
  }
  // An unlabeled feature pool [n, d] for projects.
  void features(const std::string& name, std::int64_t n, std::int64_t d, float offset = 0) const {
    std::vector<float> x(static_cast<std::size_t>(n * d));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 50.0f + offset;
    quarry::write_npy(p(name), quarry::ArrayView{x.data(), quarry::DType::f32, {n, d}});
  }
  // A project with labels of two imports.
  void project(const std::string& dir, std::int64_t n = 60) const {
    features("pool.npy", n, 5);
    ASSERT_EQ(quarry("project init " + p(dir) + " --dataset pool:" + p("pool.npy") + " --classes cat,dog --strategy random").rc, 0);
    write_file(p("l1.csv"), "index,label\n0,cat\n1,dog\n2,cat\n");
    write_file(p("l2.csv"), "index,label\n3,dog\n4,dog\n");
    ASSERT_EQ(quarry("project label " + p(dir) + " " + p("l1.csv")).rc, 0);
    ASSERT_EQ(quarry("project label " + p(dir) + " " + p("l2.csv")).rc, 0);
  }
  std::string dir_;
};

void expect_run(const CmdResult& r, int rc, const std::string& part, const std::string& what) {
  EXPECT_EQ(r.rc, rc) << what << "\nstderr: " << r.err;
  EXPECT_NE(r.err.find(part), std::string::npos) << what << ": '" << part << "' not in: " << r.err;
}

// ------------------------------------------------------------------ outputs that alias inputs

TEST_F(Hostile, AnOutputThatIsAnInputIsRefusedBeforeAnyWork) {
  pool("p.npy");
  ASSERT_EQ(quarry("score --input " + p("p.npy") + " -o " + p("s.npy")).rc, 0);
  write_file(p("ex.txt"), "1\n2\n");
  ASSERT_EQ(::link(p("p.npy").c_str(), p("hard.npy").c_str()), 0);
  fs::create_symlink("p.npy", p("soft.npy"));
  pool("shard-1.npy", 50);
  pool("shard-2.npy", 50);
  pool("probs.npy", 50);
  const auto before = snapshot(dir_);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"score --input " + p("p.npy") + " -o " + p("p.npy"), "is also the input --input"},
      {"score --input " + p("p.npy") + " -o " + p("hard.npy"), "refusing to overwrite an input"},
      {"score --input " + p("p.npy") + " -o " + p("soft.npy"), "refusing to overwrite an input"},
      {"score --input " + p("soft.npy") + " -o " + p("p.npy"), "refusing to overwrite an input"},
      {"select --scores " + p("s.npy") + " -k 3 --exclude " + p("ex.txt") + " -o " + p("ex.txt"), "--exclude"},
      {"select --scores " + p("s.npy") + " -k 3 -o " + p("s.npy"), "--scores"},
      {"select --input '" + p("shard-*.npy") + "' -k 3 -o " + p("shard-2.npy"), "shard-2.npy"},
      {"score --input " + p("shard-1.npy") + "," + p("shard-2.npy") + " -o " + p("shard-1.npy"), "--input"},
      {"generate -n 10 -c 3 -o " + p("g.npy") + " --embeddings " + p("g.npy"), "are the same file"},
      {"infer --dataset pool:" + p("probs.npy") + " --model " + p("m.pt") + " --out " + dir_, "refusing to overwrite"},
  };
  for (const auto& [args, part] : cases) {
    const CmdResult r = quarry(args);
    expect_run(r, 2, part, args);
    EXPECT_UNCHANGED(dir_, before);
  }
}

TEST_F(Hostile, AProjectsOwnFilesAreNeverAnOutput) {
  project("proj");
  pool("p.npy");
  const auto before = snapshot(p("proj"));
  for (const std::string f :
       {"labels.journal", "state.json", "project.json", "serve.token", "batches/0001.csv", "batches/0001/7.png"}) {
    if (f == "batches/0001.csv") ASSERT_EQ(quarry("project next " + p("proj") + " -k 3").rc, 0);
    const auto now = snapshot(p("proj"));
    CmdResult r = quarry("project export " + p("proj") + " -o " + p("proj/" + f));
    expect_run(r, 2, "is a file of the labeling project", f);
    r = quarry("score --input " + p("p.npy") + " -o " + p("proj/" + f));
    expect_run(r, 2, "is a file of the labeling project", f);
    EXPECT_UNCHANGED(p("proj"), now);
  }
  // An export beside them is fine.
  EXPECT_EQ(quarry("project export " + p("proj") + " -o " + p("proj/labels-copy.csv")).rc, 0);
  (void)before;
}

// ------------------------------------------------------------------ symbolic links

TEST_F(Hostile, AnOutputThatIsALinkStaysALinkAndItsTargetIsWritten) {
  pool("p.npy");
  fs::create_directories(p("real"));
  write_file(p("real/out.npy"), "old");
  fs::create_symlink("real/out.npy", p("link.npy"));      // relative
  fs::create_symlink(p("link.npy"), p("link2.npy"));      // a chain
  fs::create_symlink("real/new.npy", p("dangling.npy"));  // to a file not there yet
  for (const std::string out : {"link.npy", "link2.npy", "dangling.npy"}) {
    const CmdResult r = quarry("score --input " + p("p.npy") + " -o " + p(out));
    ASSERT_EQ(r.rc, 0) << out << ": " << r.err;
    EXPECT_TRUE(fs::is_symlink(p(out))) << out << " was replaced by a file";
  }
  EXPECT_EQ(quarry::read_npy(p("real/out.npy")).shape(), (std::vector<std::int64_t>{200}));
  EXPECT_EQ(quarry::read_npy(p("real/new.npy")).shape(), (std::vector<std::int64_t>{200}));
  for (const auto& e : fs::directory_iterator(p("real")))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

// ------------------------------------------------------------------ FIFOs, devices, folders

TEST_F(Hostile, FifosDevicesAndFoldersAreRefusedAtOnceAndNamed) {
  pool("p.npy");
  ASSERT_EQ(quarry("score --input " + p("p.npy") + " -o " + p("s.npy")).rc, 0);
  ASSERT_EQ(::mkfifo(p("fifo").c_str(), 0644), 0);
  fs::create_directories(p("folder"));
  project("proj");
  const auto before = snapshot(dir_);
  const std::vector<std::tuple<std::string, int, std::string>> cases = {
      {"select --scores " + p("s.npy") + " -k 3 --exclude " + p("fifo"), 1, "pipe (FIFO)"},
      {"score --input " + p("fifo") + " -o " + p("x.npy"), 1, "pipe (FIFO)"},
      {"info " + p("fifo"), 1, "pipe (FIFO)"},
      {"project label " + p("proj") + " " + p("fifo"), 1, "pipe (FIFO)"},
      {"score --input /dev/zero -o " + p("x.npy"), 1, "character device"},
      {"select --scores " + p("s.npy") + " -k 3 --exclude /dev/zero", 1, "character device"},
      {"project label " + p("proj") + " /dev/zero", 1, "character device"},
      {"project init " + p("proj2") + " --dataset pool:" + p("p.npy") + " --classes a,b --manifest /dev/zero", 1,
       "character device"},
      {"score --input " + p("folder") + " -o " + p("x.npy"), 1, "is a folder"},
      {"project label " + p("proj") + " " + p("folder"), 1, "is a folder"},
      {"score --input " + p("p.npy") + " -o " + p("folder"), 2, "is a folder"},
  };
  for (const auto& [args, rc, part] : cases) {
    const CmdResult r = quarry(args);
    expect_run(r, rc, part, args);
    EXPECT_UNCHANGED(dir_, before);
  }
  // The project's lock was released by the failed imports.
  write_file(p("l3.csv"), "index,label\n9,dog\n");
  EXPECT_EQ(quarry("project label " + p("proj") + " " + p("l3.csv") + " --wait 0").rc, 0);
}

// ------------------------------------------------------------------ files that shrink while read

TEST_F(Hostile, AMappedInputThatShrinksIsAnErrorNotASignal) {
  // Several pages, so that the pages past the new end are unmapped by the truncation.
  pool("p.npy", 100000, 4);
  const quarry::Array a = quarry::read_npy(p("p.npy"));
  ASSERT_EQ(::truncate(p("p.npy").c_str(), 4096), 0);
  double sum = 0;  // reads every page: those past the end read as zeros instead of SIGBUS
  for (std::int64_t i = 0; i < a.numel(); i += 512) sum += a.as<float>()[i];
  EXPECT_GE(sum, 0.0);
  // Nothing is published from it: a commit fails and leaves no temporary file.
  {
    quarry::AtomicFile f(p("out.npy"));
    f.write("x");
    quarry_test::expect_error([&] { f.commit(); }, {p("p.npy"), "shrank while it was being read"});
  }
  // Reported once to commits; the command's last check (all = true) names it again.
  EXPECT_EQ(quarry_test::message_of([] { quarry::check_mapped_inputs(); }), "");
  quarry_test::expect_error([] { quarry::check_mapped_inputs(true); }, {p("p.npy"), "shrank"});
  EXPECT_FALSE(fs::exists(p("out.npy")));
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST_F(Hostile, APoolTruncatedWhileScoredNeverKillsTheProcess) {
  // A race by nature: the command either finishes before the truncation or reports it; it is
  // never killed by a signal and never leaves its temporary output.
  for (const double delay : {0.5, 1.0, 1.5}) {
    pool("big.npy", 2000000, 10);  // 80 MB
    const CmdResult r = quarry("score --input " + p("big.npy") + " -a entropy --threads 1 -o " + p("s.npy"),
                               "( sleep " + std::to_string(delay) + "; truncate -s 1000 " + p("big.npy") + " ) & ");
    EXPECT_TRUE(r.rc == 0 || r.rc == 1) << "rc " << r.rc << ": " << r.err;
    // Shrunk before it was opened (the header then disagrees) or while it was read.
    if (r.rc == 1)
      EXPECT_TRUE(r.err.find("shrank") != std::string::npos || r.err.find("truncated data") != std::string::npos)
          << r.err;
    for (const auto& e : fs::directory_iterator(dir_))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  }
}

// ------------------------------------------------------------------ compressed bombs

TEST_F(Hostile, CompressedSizesAreCheckedBeforeInflating) {
  using quarry_test::gzip;
  using quarry_test::idx;
  // A header claiming 10 GB in a file of a few hundred bytes.
  write_file(p("bomb-idx1-ubyte.gz"), gzip(idx(0x08, {100000, 100000}, std::string(100, '\0'))));
  expect_run(quarry("info " + p("bomb-idx1-ubyte.gz")), 1, "can hold", "ratio");
  // A header claiming more than the stream holds: read in growing chunks, never allocated whole.
  write_file(p("lie-idx1-ubyte.gz"), gzip(idx(0x08, {100000}, std::string(100, '\0'))));
  expect_run(quarry("info " + p("lie-idx1-ubyte.gz")), 1, "truncated data", "a lying header");
  // An NPZ member whose NPY header disagrees with the size the archive declares.
  const std::string npy = quarry::npy_header(quarry::DType::f32, {1000}, "x") + std::string(4000, '\0');
  write_file(p("a.npz"), quarry_test::zip({{"a.npy", npy, true, static_cast<std::int64_t>(npy.size() + 4000)}}));
  expect_run(quarry("info " + p("a.npz") + ":a"), 1, "its NPY header describes 4000 bytes", "npz");
}

// ------------------------------------------------------------------ absurd knobs

TEST_F(Hostile, AbsurdOrMalformedValuesAreUsageErrorsNamingTheValue) {
  pool("p.npy");
  ASSERT_EQ(quarry("score --input " + p("p.npy") + " -o " + p("s.npy")).rc, 0);
  const std::string sc = "select --scores " + p("s.npy");
  const auto before = snapshot(dir_);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {sc + " -k 3 --threads 100000", "more than this machine can use"},
      {sc + " -k 9223372036854775808", "'9223372036854775808' is too large"},
      {sc + " -k 9223372036854775807", "asked for k = 9223372036854775807"},
      {sc + " -k 201", "asked for k = 201"},
      {sc + " -k 0x10", "'0x10' is not a whole decimal number"},
      {sc + " -k 1e3", "'1e3' is not a whole decimal number"},
      {sc + " -k 3 --strategy power --beta nan", "'nan' is not a decimal number"},
      {sc + " -k 3 --strategy power --beta 0", "--beta 0"},
      {sc + " -k 3 --seed -1", "'-1' is negative"},
      {"score --input " + p("p.npy") + " -o " + p("x.npy") + " --memory-budget garbage", "memory budget 'garbage'"},
      {"score --input " + p("p.npy") + " -o " + p("x.npy") + " --memory-budget 0x100", "memory budget '0x100'"},
      {"score --input " + p("p.npy") + " -o " + p("x.npy") + " --device gpu", "bad device 'gpu'"},
      {"score --input " + p("p.npy") + " -o " + p("x.npy") + " -a nonsense", "unknown acquisition 'nonsense'"},
      {"score --input " + p("p.npy") + " -o " + p("x.npy") + " --tolerance 1e999", "out of range"},
      {"generate -n 0x10 -c 3 -o " + p("x.npy"), "'0x10' is not a whole decimal number"},
      {"demo --out " + p("s.npy"), "is a file"},
      {"demo -n 10 -k 20 --out " + p("demo"), "-k 20 is more than the pool"},
      {"simulate --dataset pool:" + p("p.npy") + " --seed-size 1000000000 --out " + p("sim"), ""},
  };
  for (const auto& [args, part] : cases) {
    const CmdResult r = quarry(args);
    if (part.empty()) {  // simulate: an error (2, or 1 without LibTorch or a test split), and nothing made
      EXPECT_TRUE(r.rc == 1 || r.rc == 2) << args << ": " << r.err;
    } else {
      expect_run(r, 2, part, args);
    }
    EXPECT_LT(r.err.size(), 2000u) << args;  // a bound, not 309 digits
    EXPECT_UNCHANGED(dir_, before);
  }
}

TEST_F(Hostile, MessagesQuoteUserInputCutToAReadableLength) {
  project("proj");
  const std::string huge(50 << 20, 'x');
  write_file(p("big.csv"), "index,label\n0," + huge + "\n");
  const auto before = snapshot(p("proj"));
  const CmdResult r = quarry("project label " + p("proj") + " " + p("big.csv"));
  expect_run(r, 1, "unknown class 'xxxx", "a 50 MB field");
  EXPECT_LT(r.err.size(), 2000u);
  EXPECT_NE(r.err.find("(52428800 bytes)"), std::string::npos) << r.err.substr(0, 400);
  EXPECT_UNCHANGED(p("proj"), before);
  const CmdResult d = quarry("select --scores x.npy -k 1 --device " + std::string(5000, 'g'));
  EXPECT_EQ(d.rc, 2);
  EXPECT_LT(d.err.size(), 1000u);
}

// ------------------------------------------------------------------ leftovers of failed commands

TEST_F(Hostile, AFailedInitLeavesNothingAndTheRetryWorks) {
  features("pool.npy", 3000, 5);
  std::string manifest = "index,id,path_or_url\n";
  for (int i = 0; i < 3000; ++i) manifest += std::to_string(i) + ",item-" + std::to_string(i) + ",/img/" + std::to_string(i) + ".png\n";
  write_file(p("manifest.csv"), manifest);
  write_file(p("bad-manifest.csv"), "index,id\n0,a\n");
  const std::string init = "project init " + p("proj") + " --dataset pool:" + p("pool.npy") + " --classes a,b";
  // Checked before anything is made.
  expect_run(quarry(init + " --manifest " + p("bad-manifest.csv")), 1, "manifest", "a bad manifest");
  EXPECT_FALSE(fs::exists(p("proj")));
  // A write that fails half-way (files over 4 KB refused, as on a full disk).
  const CmdResult r = quarry(init + " --manifest " + p("manifest.csv"), "ulimit -f 8; trap '' XFSZ; ");
  EXPECT_EQ(r.rc, 1) << r.err;
  EXPECT_FALSE(fs::exists(p("proj")));
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".init."), std::string::npos) << e.path();
  // And the retry works.
  EXPECT_EQ(quarry(init + " --manifest " + p("manifest.csv")).rc, 0);
  EXPECT_TRUE(fs::exists(p("proj/project.json")));
}

// ------------------------------------------------------------------ tampered projects

TEST_F(Hostile, AMissingJournalIsAnErrorThatNamesTheLabelsItHeld) {
  project("proj");
  fs::remove(p("proj/labels.journal"));
  const auto before = snapshot(p("proj"));
  for (const std::string cmd : {"status", "next", "export"}) {
    const CmdResult r = quarry("project " + cmd + " " + p("proj") + (cmd == "next" ? " -k 3" : ""));
    expect_run(r, 1, "the label journal is missing, but state.json records 2 imports (5 labels", cmd);
    EXPECT_NE(r.err.find("project repair"), std::string::npos) << r.err;
    EXPECT_UNCHANGED(p("proj"), before);
  }
  // repair accepts the journal as it is (none), says so, and the project works again.
  const CmdResult rep = quarry("project repair " + p("proj"));
  EXPECT_EQ(rep.rc, 0) << rep.err;
  EXPECT_NE(rep.out.find("does not extend what state.json recorded"), std::string::npos) << rep.out;
  EXPECT_EQ(quarry("project status " + p("proj")).rc, 0);
}

TEST_F(Hostile, ACutOrReplacedJournalIsAnError) {
  project("proj");
  // Another project with other labels: made like proj, its journal could equal proj's byte for
  // byte (the same files imported within the same second).
  ASSERT_EQ(quarry("project init " + p("other") + " --dataset pool:" + p("pool.npy") + " --classes cat,dog --strategy random").rc, 0);
  write_file(p("o1.csv"), "index,label\n0,dog\n1,cat\n2,dog\n");
  write_file(p("o2.csv"), "index,label\n3,cat\n4,cat\n");
  ASSERT_EQ(quarry("project label " + p("other") + " " + p("o1.csv")).rc, 0);
  ASSERT_EQ(quarry("project label " + p("other") + " " + p("o2.csv")).rc, 0);
  const std::string journal = read_file(p("proj/labels.journal"));
  // Cut to its first record.
  write_file(p("proj/labels.journal"), journal.substr(0, journal.find('\n') + 1));
  expect_run(quarry("project status " + p("proj")), 1, "it was cut short or replaced", "cut");
  // Another project's journal with as many records.
  write_file(p("l9.csv"), "index,label\n7,cat\n");
  ASSERT_EQ(quarry("project label " + p("other") + " " + p("l9.csv")).rc, 0);
  write_file(p("proj/labels.journal"), read_file(p("other/labels.journal")));
  expect_run(quarry("project status " + p("proj")), 1, "their checksum differs", "replaced");
  // The original back: fine again; and a record appended after state.json was written is fine too.
  write_file(p("proj/labels.journal"), journal);
  EXPECT_EQ(quarry("project status " + p("proj")).rc, 0);
}

TEST_F(Hostile, ALostStateIsRebuiltFromTheJournalAndTheBatches) {
  project("proj");
  ASSERT_EQ(quarry("project next " + p("proj") + " -k 4").rc, 0);
  const std::string labels = quarry("project export " + p("proj")).out;
  fs::remove(p("proj/state.json"));
  expect_run(quarry("project status " + p("proj")), 1, "project repair", "no state");
  // export needs only the journal.
  const CmdResult e = quarry("project export " + p("proj"));
  EXPECT_EQ(e.rc, 0) << e.err;
  EXPECT_EQ(e.out, labels);
  const CmdResult r = quarry("project repair " + p("proj"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("batch 0001: recovered"), std::string::npos) << r.out;
  const CmdResult s = quarry("project status " + p("proj") + " --format json");
  ASSERT_EQ(s.rc, 0) << s.err;
  EXPECT_NE(s.out.find("\"labeled\": 5"), std::string::npos) << s.out;
  EXPECT_NE(s.out.find("\"batches\": 1"), std::string::npos) << s.out;
}

TEST_F(Hostile, AChangedPoolIsDetectedBeforeAnyInference) {
  if (quarry::build_info().torch_version.empty()) GTEST_SKIP() << "needs LibTorch (project next trains)";
  features("pool.npy", 80, 6);
  ASSERT_EQ(quarry("project init " + p("proj") + " --dataset pool:" + p("pool.npy") + " --classes a,b --strategy entropy")
                .rc, 0);
  std::string csv = "index,label\n";
  for (int i = 0; i < 20; ++i) csv += std::to_string(i) + "," + (i % 2 ? "a" : "b") + "\n";
  write_file(p("l.csv"), csv);
  ASSERT_EQ(quarry("project label " + p("proj") + " " + p("l.csv")).rc, 0);
  ASSERT_EQ(quarry("project next " + p("proj") + " -k 5").rc, 0);
  // The same rows, another width: the old model would read past them.
  features("pool.npy", 80, 9);
  const auto before = snapshot(p("proj"));
  const CmdResult r = quarry("project next " + p("proj") + " -k 5");
  expect_run(r, 1, "the pool changed since the project was made", "width");
  EXPECT_NE(r.err.find("--retrain"), std::string::npos) << r.err;
  EXPECT_UNCHANGED(p("proj"), before);
  // Other content, same shape.
  features("pool.npy", 80, 6, 0.5f);
  expect_run(quarry("project next " + p("proj") + " -k 5"), 1, "the content of its rows differs", "content");
  // --retrain accepts it and trains a model that fits.
  const CmdResult ok = quarry("project next " + p("proj") + " -k 5 --retrain");
  EXPECT_EQ(ok.rc, 0) << ok.err;
  EXPECT_EQ(quarry("project next " + p("proj") + " -k 5").rc, 0);
  // A model.pt that does not fit (another project's) is found before inference too.
  features("pool2.npy", 80, 3);
  ASSERT_EQ(quarry("project init " + p("proj2") + " --dataset pool:" + p("pool2.npy") + " --classes a,b --strategy entropy")
                .rc, 0);
  ASSERT_EQ(quarry("project label " + p("proj2") + " " + p("l.csv")).rc, 0);
  ASSERT_EQ(quarry("project next " + p("proj2") + " -k 5").rc, 0);
  fs::copy_file(p("proj2/model.pt"), p("proj/model.pt"), fs::copy_options::overwrite_existing);
  expect_run(quarry("project next " + p("proj") + " -k 5"), 1, "the model takes samples of shape [3]", "model");
}

// ------------------------------------------------------------------ Label Studio exports

TEST_F(Hostile, LabelStudioExportsAreStrictAboutTypes) {
  project("proj");
  const auto before = snapshot(p("proj"));
  const std::string task = R"("data": {"quarry_index": 7}, "meta": {"quarry_index": 7})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"([{"id": 1, )" + task + R"(, "annotations": "oops"}])", "\"annotations\" is not a list"},
      {R"([{"id": 1, )" + task + R"(, "annotations": [{"result": null}]}])", "\"result\" is missing or not a list"},
      {R"([{"id": 1, )" + task + R"(, "annotations": [7]}])", "an annotation is not an object"},
      {R"([{"id": 1, "data": {"quarry_index": 7}, "meta": {"quarry_index": 8}, "annotations": []}])",
       "it names two items: index 7 and 8"},
      {R"([{"id": 1, "data": {"quarry_index": "0x7"}, "annotations": []}])", "is not a whole number"},
      {R"([{"id": 1, "data": "text", "annotations": []}])", "\"data\" is not an object"},
  };
  int i = 0;
  for (const auto& [json, part] : cases) {
    const std::string f = p("export" + std::to_string(i++) + ".json");
    write_file(f, json);
    expect_run(quarry("project label " + p("proj") + " " + f), 1, part, json);
    EXPECT_UNCHANGED(p("proj"), before);
  }
}

// ------------------------------------------------------------------ found by a hostile review

TEST_F(Hostile, ReviewFindingsStayFixed) {
  pool("p.npy");
  features("x.npy", 100, 5);
  // Paths the system refuses are data errors, not internal ones.
  const std::string too_long(300, 'y');
  expect_run(quarry("score --input " + p(too_long) + " -o " + p("o.npy")), 1, "", "a name too long");
  fs::create_symlink(p("loop2"), p("loop1"));
  fs::create_symlink(p("loop1"), p("loop2"));
  const CmdResult loop = quarry("score --input " + p("loop1") + " -o " + p("o.npy"));
  EXPECT_EQ(loop.rc, 1) << loop.err;
  EXPECT_EQ(loop.err.find("internal error"), std::string::npos) << loop.err;
  // train on an unlabeled pool: an error, not a crash.
  expect_run(quarry("train --dataset pool:" + p("x.npy") + " --out " + p("m.pt")), 2, "has no labels", "train");
  // A shard listed twice, an empty output name, a huge argument echoed.
  expect_run(quarry("score --input " + p("p.npy") + "," + p("p.npy") + " -o " + p("o.npy")), 2, "listed once", "twice");
  expect_run(quarry("score --input " + p("p.npy") + " -o ''"), 2, "an empty value", "empty -o");
  const CmdResult big = quarry("score --input " + std::string(100000, 'z') + " -o " + p("o.npy"));
  EXPECT_TRUE(big.rc == 1 || big.rc == 2) << big.err.substr(0, 300);
  EXPECT_LT(big.err.size(), 2000u);
  const CmdResult opt = quarry("select --" + std::string(100000, 'q'));
  EXPECT_EQ(opt.rc, 2);
  EXPECT_LT(opt.err.size(), 2000u);
  // A failed demo leaves no folder.
  expect_run(quarry("demo -n 10 -k 5 -c 1000000000000 --out " + p("dh")), 1, "", "demo out of memory");
  EXPECT_FALSE(fs::exists(p("dh")));
  // --threads below zero.
  expect_run(quarry("score --input " + p("p.npy") + " -o " + p("o.npy") + " --threads -1"), 2, "negative", "threads");
}

TEST_F(Hostile, ReportNeverOverwritesItsRounds) {
  fs::create_directories(p("sim"));
  write_file(p("sim/rounds.jsonl"), "not really rounds\n");
  fs::create_symlink("rounds.jsonl", p("sim/summary.md"));
  const auto before = snapshot(dir_);
  expect_run(quarry("report " + p("sim")), 2, "refusing to overwrite an input", "report");
  EXPECT_UNCHANGED(dir_, before);
}

TEST_F(Hostile, AProjectNeverActsOnAPoolOrStateItWasNotMadeFor) {
  project("proj");
  // Random batches check the pool's files too.
  features("pool.npy", 50, 5);
  auto before = snapshot(p("proj"));
  expect_run(quarry("project next " + p("proj") + " -k 3"), 1, "the pool changed since the project was made", "random");
  EXPECT_UNCHANGED(p("proj"), before);
  expect_run(quarry("project next " + p("proj") + " -k 3 --retrain"), 1, "items, but the project was made for 60", "rows");
  // Files of the sizes recorded pass (a random batch reads no rows; the model's path checks them).
  features("pool.npy", 60, 5, 0.25f);
  EXPECT_EQ(quarry("project next " + p("proj") + " -k 3").rc, 0);
  // -k beyond what can be proposed is an error, not a clamp.
  before = snapshot(p("proj"));
  expect_run(quarry("project next " + p("proj") + " -k 1000"), 2, "ask for at most 52", "k");
  EXPECT_UNCHANGED(p("proj"), before);
  // An older state.json put back: the batch files it does not list are never overwritten.
  const std::string state = read_file(p("proj/state.json"));
  ASSERT_EQ(quarry("project next " + p("proj") + " -k 3").rc, 0);
  ASSERT_TRUE(fs::exists(p("proj/batches/0002.csv")));
  write_file(p("proj/state.json"), state);
  before = snapshot(p("proj"));
  expect_run(quarry("project next " + p("proj") + " -k 3"), 1, "does not list batch 2", "batch files");
  EXPECT_UNCHANGED(p("proj"), before);
  ASSERT_EQ(quarry("project repair " + p("proj")).rc, 0);  // takes batch 2 back
  // project.json's classes reordered: every label would change meaning.
  const std::string original = read_file(p("proj/project.json"));
  std::string config = original;
  const auto cat = config.find("\"cat\""), dog = config.find("\"dog\"");
  ASSERT_TRUE(cat != std::string::npos && dog != std::string::npos) << config;
  config.replace(dog, 5, "\"cat\"");
  config.replace(cat, 5, "\"dog\"");
  write_file(p("proj/project.json"), config);
  expect_run(quarry("project export " + p("proj")), 1, "the labels were given for", "classes");
  write_file(p("proj/project.json"), original);
  // The CSV's index and id must agree without a manifest.
  write_file(p("x.csv"), "index,id,label\n47,48,cat\n");
  expect_run(quarry("project label " + p("proj") + " " + p("x.csv")), 1, "name different items", "index and id");
}

}  // namespace
