// `quarry project`: the label journal (a torn last record is ignored, a corrupt middle one is an
// error), imports killed at random moments (the labels before or after, nothing else), and one
// writer at a time. Helpers in project_helpers.hpp.
#include <gtest/gtest.h>

#include "project_helpers.hpp"
#include "project/journal.hpp"

namespace project_test {
namespace {

// ---------------------------------------------------------------- the journal

TEST(LabelJournal, LinesAreChecksummedJsonAndReadBack) {
  const std::string path = test_tmp("project", "j.journal");
  fs::remove(path);
  std::string torn = "x";
  EXPECT_TRUE(quarry::LabelJournal::read(path, &torn).records().empty()) << "a missing file is an empty journal";
  EXPECT_TRUE(torn.empty());

  quarry::LabelJournal j;
  quarry::JournalRecord r1;
  r1.time = "2026-01-02T03:04:05Z";
  r1.source = "a \"quoted\" name.csv";
  r1.labels = {{3, 1}, {5, 0}};
  j.append(path, r1);
  quarry::JournalRecord r2;
  r2.time = "2026-01-02T03:04:06Z";
  r2.source = "b.json";
  r2.labels = {{5, 2}, {9, 3}};
  j.append(path, r2);
  EXPECT_EQ(j.records().size(), 2u);
  EXPECT_EQ(j.records()[1].seq, 2);

  const std::string text = read_file(path);
  EXPECT_EQ(j.valid_bytes(), text.size());
  const auto lines = lines_of(text);
  ASSERT_EQ(lines.size(), 2u);
  for (std::size_t k = 0; k < 2; ++k) {
    EXPECT_TRUE(std::regex_match(lines[k].substr(0, 9), std::regex("[0-9a-f]{8} "))) << lines[k];
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", crc32(lines[k].substr(9)));
    EXPECT_EQ(lines[k].substr(0, 8), hex);
    const auto js = nlohmann::json::parse(lines[k].substr(9));
    EXPECT_EQ(js.at("seq"), k + 1);
  }
  const auto js = nlohmann::json::parse(lines[0].substr(9));
  EXPECT_EQ(js.at("source"), r1.source);
  EXPECT_EQ(js.at("time"), r1.time);
  EXPECT_EQ(js.at("labels"), nlohmann::json::parse("[[3,1],[5,0]]"));
  r1.seq = 1;
  EXPECT_EQ(quarry::journal_line(r1), lines[0] + "\n");

  const quarry::LabelJournal back = quarry::LabelJournal::read(path, &torn);
  EXPECT_TRUE(torn.empty()) << torn;
  ASSERT_EQ(back.records().size(), 2u);
  EXPECT_EQ(back.records()[0].source, r1.source);
  EXPECT_EQ(back.records()[1].labels, r2.labels);
  EXPECT_EQ(back.labels(), (Labels{{3, 1}, {5, 2}, {9, 3}}));  // the last record wins
}

TEST_F(ProjectTest, ATornLastRecordIsIgnoredAndCutOffByTheNextImport) {
  init("synthetic:600", "random", true, true, 600);
  const Labels a{{1, 0}, {2, 1}, {3, 2}, {4, 3}, {500, 1}};
  const Labels b{{10, 3}, {11, 2}, {12, 1}, {13, 0}, {14, 0}, {15, 1}};
  const Labels c{{20, 1}, {21, 1}};
  Result r = label("a.csv", label_csv(a));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::size_t first_line = read_file(journal()).size();
  const std::string state_after_a = read_file(dir_ + "/state.json");
  r = label("b.csv", label_csv(b));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string whole = read_file(journal());
  ASSERT_EQ(lines_of(whole).size(), 2u);
  // A crash during the second import: its record torn, and state.json not yet told of it (it is
  // written after the append; a torn record that state.json recorded would be tampering).
  write_file(dir_ + "/state.json", state_after_a);

  // The last line cut by 3 bytes (no newline), or a digit of its labels changed (a checksum
  // mismatch on a line that ends with a newline), or cut to its checksum.
  std::string flipped = whole;
  const std::size_t at = flipped.find("\"labels\":[[", first_line);
  ASSERT_NE(at, std::string::npos) << whole;
  char& digit = flipped[at + 11];
  ASSERT_TRUE(digit >= '0' && digit <= '9') << whole;
  digit = digit == '9' ? '8' : static_cast<char>(digit + 1);
  const std::vector<std::pair<std::string, std::string>> cases{
      {"truncated", whole.substr(0, whole.size() - 3)},
      {"flipped", flipped},
      {"checksum only", whole.substr(0, first_line + 6)},
  };
  for (const auto& [name, broken] : cases) {
    SCOPED_TRACE(name);
    write_file(journal(), broken);
    write_file(dir_ + "/state.json", state_after_a);  // as the crash left it
    std::string torn;
    const quarry::LabelJournal j = quarry::LabelJournal::read(journal(), &torn);
    EXPECT_EQ(j.records().size(), 1u);
    EXPECT_EQ(j.labels(), a);
    EXPECT_EQ(j.valid_bytes(), first_line);
    EXPECT_FALSE(torn.empty());
    {
      const quarry::Project p(dir_);
      EXPECT_EQ(p.labels(), a);
      EXPECT_FALSE(p.torn().empty());
      const quarry::ProjectStatus s = p.status();
      EXPECT_EQ(s.labeled, 5);
      EXPECT_FALSE(s.torn.empty());
    }
    r = quarry({"project", "status", dir_});
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.err.find("torn"), std::string::npos) << r.err;
    r = quarry({"project", "export", dir_, "--format", "csv"});
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, export_of(a));
    EXPECT_EQ(read_file(journal()), broken) << "a reader changed the journal";

    // The next import cuts the torn tail off and appends a whole record.
    r = label("c.csv", label_csv(c));
    ASSERT_EQ(r.rc, 0) << r.err;
    const std::string healed = read_file(journal());
    ASSERT_FALSE(healed.empty());
    EXPECT_EQ(healed.back(), '\n');
    EXPECT_EQ(healed.substr(0, first_line), whole.substr(0, first_line));
    const auto lines = lines_of(healed);
    ASSERT_EQ(lines.size(), 2u) << healed;
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", crc32(lines[1].substr(9)));
    EXPECT_EQ(lines[1].substr(0, 8), hex);
    const auto rec = nlohmann::json::parse(lines[1].substr(9));
    EXPECT_EQ(rec.at("seq"), 2);
    EXPECT_EQ(rec.at("source"), path("c.csv"));
    torn = "x";
    EXPECT_EQ(quarry::LabelJournal::read(journal(), &torn).labels(), merged(a, c));
    EXPECT_TRUE(torn.empty()) << torn;
    EXPECT_EQ(labels(), merged(a, c));
    r = quarry({"project", "status", dir_});
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.err.find("torn"), std::string::npos) << r.err;
  }
}

TEST_F(ProjectTest, ACorruptRecordBeforeWholeOnesIsAnError) {
  init("synthetic:600", "random", true, true, 600);
  for (int k = 0; k < 3; ++k) {
    const Result r = label("l" + std::to_string(k) + ".csv", label_csv({{k, 1}, {k + 10, 2}}));
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  std::string text = read_file(journal());
  const std::size_t second = text.find('\n') + 1;
  const std::size_t at = text.find("\"labels\":[[", second);
  ASSERT_LT(at, text.find('\n', second));
  text[at + 11] = text[at + 11] == '1' ? '7' : '1';  // the index of its first label
  write_file(journal(), text);

  expect_error([&] { quarry::LabelJournal::read(journal()); }, {journal(), "line 2"});
  expect_error([&] { quarry::Project p(dir_); }, {journal(), "line 2"});
  Result r = quarry({"project", "status", dir_});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  r = quarry({"project", "export", dir_, "--format", "csv"});
  EXPECT_EQ(r.rc, 1);
  r = label("more.csv", "index,label\n50,cat\n");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  r = quarry({"project", "next", dir_, "-k", "5"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(read_file(journal()), text) << "a writer changed a corrupt journal";

  // Garbage that is not a record at all, between whole records.
  std::string lines = read_file(journal());
  lines.insert(second, "hello world\n");
  write_file(journal(), lines);
  expect_error([&] { quarry::LabelJournal::read(journal()); }, {journal(), "line 2"});
}

// ---------------------------------------------------------------- crashes

// Imports killed at random moments (SIGKILL): after each, the project opens (library and
// `status`) and its labels are exactly those before the import or those after it.
//
// Two kinds of trial: a quarter run the command (fork and exec `quarry project label`); the others
// fork this test process, whose child calls quarry::Project::label (what the command runs) and
// exits. The command spends most of its run starting (loading LibTorch: about half a second on a
// busy machine), where a kill hits nothing; the forked child starts working at once, so its kills
// land in the import itself (and the test stays near half a minute). Delays are drawn from 0 to
// a little past the typical runtime of each kind, measured first and again every 20 trials (the
// journal grows). The odd-numbered forked imports are instead killed the moment the journal's
// size changes, to catch the append half done (a torn record). QUARRY_PROJECT_CRASH_TRIALS sets the
// number of trials (default 100); scripts/stress_project.sh is the long run of the command.
TEST_F(ProjectTest, KilledImportsLeaveTheLabelsBeforeOrAfter) {
  const std::int64_t pool = 20000;
  const auto t_init = Clock::now();
  init("synthetic:20000", "random", false, true);
  const double init_seconds = seconds_since(t_init);
  EXPECT_LT(init_seconds, 20.0) << "init of synthetic:20000 is slow";
  int trials = 100;
  if (const char* e = std::getenv("QUARRY_PROJECT_CRASH_TRIALS")) trials = std::max(1, std::atoi(e));

  std::mt19937_64 rng(20261124);
  std::vector<std::int64_t> order(static_cast<std::size_t>(pool));
  std::iota(order.begin(), order.end(), 0);
  const std::string file = path("trial.csv");
  const std::string err_file = path("trial.err");

  // One import's file: `relabel` trials give random labels to random items; the others label
  // unlabeled items (and repeat some labels unchanged), so that every import changes the set.
  // Smaller files under AddressSanitizer (a Debug build: JSON and CSV parsing are ten times slower).
#if defined(__SANITIZE_ADDRESS__)
  const std::int64_t rows_min = 500, rows_max = 1500;
#else
  const std::int64_t rows_min = 4000, rows_max = 12000;
#endif
  auto make_file = [&](const Labels& before, bool& relabel, Labels& after) {
    const std::int64_t n = std::uniform_int_distribution<std::int64_t>(rows_min, rows_max)(rng);
    std::shuffle(order.begin(), order.end(), rng);
    after = before;
    std::string text = "index,label\n";
    text.reserve(static_cast<std::size_t>(n) * 12);
    if (!relabel && pool - static_cast<std::int64_t>(before.size()) < 100) relabel = true;
    std::int64_t written = 0;
    std::int64_t repeats = 0;
    for (std::int64_t i : order) {
      if (written == n) break;
      const auto it = before.find(i);
      std::int32_t c = static_cast<std::int32_t>(rng() % 4);
      if (!relabel && it != before.end()) {
        if (repeats * 4 >= n) continue;  // a quarter at most of unchanged repeats
        c = it->second;
        ++repeats;
      }
      after[i] = c;
      text += std::to_string(i) + "," + kClasses[static_cast<std::size_t>(c)] + "\n";
      ++written;
    }
    write_file(file, text);
  };
  // Starts one import: the command, or a fork of this process that calls the library.
  auto start = [&](bool exec, bool relabel) -> pid_t {
    if (exec) {
      std::vector<std::string> a{"project", "label", dir_, file, "--wait", "5"};
      if (relabel) a.push_back("--allow-relabel");
      return spawn(a, err_file);
    }
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      int rc = 0;
      try {
        quarry::Project(dir_).label(file, relabel, 5);
      } catch (const std::exception& e) {
        write_file(err_file, e.what());
        rc = 1;
      }
      ::_exit(rc);
    }
    return pid;
  };

  // The typical runtimes: the command's start (--version), a whole import of each kind.
  auto t0 = Clock::now();
  ASSERT_EQ(wait_for(spawn({"--version"})), 0);
  const double startup = seconds_since(t0);
  Labels before;
  double runtime[2] = {0, 0};  // [fork, exec]
  for (int exec = 0; exec < 2; ++exec) {
    bool relabel = false;
    Labels after;
    make_file(before, relabel, after);
    t0 = Clock::now();
    ASSERT_EQ(wait_for(start(exec, relabel)), 0) << read_file(err_file);
    runtime[exec] = seconds_since(t0);
    ASSERT_EQ(labels(), after);
    before = after;
  }

  int as_before = 0, as_after = 0, torn = 0, finished = 0, execs = 0, snipes = 0;
  const auto t_trials = Clock::now();
  for (int trial = 0; trial < trials; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const bool exec = trial % 4 == 0;
    execs += exec;
    bool relabel = trial % 4 != 0;
    Labels after;
    make_file(before, relabel, after);
    // The command: half the delays anywhere in its run, half after its start (where it works).
    const double lo = exec && trial % 2 == 1 ? std::min(startup, runtime[1]) * 0.8 : 0.0;
    const double delay = std::uniform_real_distribution<double>(lo, runtime[exec] * 1.1)(rng);
    const bool measure = trial % 20 == 16 || trial % 20 == 18;  // one of each kind runs to the end
    const bool snipe = !exec && !measure && trial % 2 == 1;
    std::error_code ec;
    const auto journal_size = fs::file_size(journal(), ec);
    t0 = Clock::now();
    fs::remove(err_file);
    const pid_t pid = start(exec, relabel);
    ASSERT_GT(pid, 0);
    if (snipe) {
      // Kill as soon as the journal changes (or after twice the typical runtime).
      while (seconds_since(t0) < 2 * runtime[0] && fs::file_size(journal(), ec) == journal_size)
        std::this_thread::yield();  // the child may need this core
      ::kill(pid, SIGKILL);
      ++snipes;
    } else if (!measure) {
      std::this_thread::sleep_for(std::chrono::duration<double>(delay));
      ::kill(pid, SIGKILL);
    }
    const int rc = wait_for(pid);
    if (measure) runtime[exec] = seconds_since(t0);
    if (rc != 128 + SIGKILL) {
      ASSERT_EQ(rc, 0) << "the import failed: " << read_file(err_file);
    }

    std::string torn_text;
    Labels now;
    try {
      const quarry::Project p(dir_);
      now = p.labels();
      torn_text = p.torn();
    } catch (const quarry::Error& e) {
      FAIL() << "the project does not open after a kill at " << delay << " s: " << e.what();
    }
    if (now == after) {
      ++as_after;
    } else if (now == before) {
      ASSERT_NE(rc, 0) << "the import succeeded but the labels are those before it";
      ++as_before;
    } else {
      FAIL() << (exec ? "the command" : "the forked import") << " killed after "
             << (snipe ? seconds_since(t0) : delay) << " s (rc " << rc
             << "): the labels are neither those before (" << before.size() << ", " << differences(now, before)
             << " differ) nor after (" << after.size() << ", " << differences(now, after)
             << " differ): " << describe(now);
    }
    finished += rc == 0;
    torn += !torn_text.empty();
    // `status` now and then (the command takes half a second to start), and on the first torn tails.
    if (trial % 10 == 9 || (!torn_text.empty() && torn <= 3) || trial == trials - 1) {
      const Result s = quarry({"project", "status", dir_, "--format", "json"});
      ASSERT_EQ(s.rc, 0) << s.err;
      EXPECT_EQ(nlohmann::json::parse(s.out).at("labeled").get<std::size_t>(), now.size());
      if (!torn_text.empty()) {
        EXPECT_NE(s.err.find("torn"), std::string::npos) << s.err;
      }
    }
    before = std::move(now);
  }
  const double took = seconds_since(t_trials);
  std::printf("[ crash    ] %d trials (%d of the command, %d killed as the journal changed) in %.1f s (init %.2f s, "
              "start %.3f s, import %.3f s, forked %.3f s): %d before, %d after (%d finished), %d torn tails\n",
              trials, execs, snipes, took, init_seconds, startup, runtime[1], runtime[0], as_before, as_after,
              finished, torn);
  RecordProperty("trials_before", as_before);
  RecordProperty("trials_after", as_after);
  RecordProperty("torn", torn);
  if (trials >= 50) {
    EXPECT_GT(as_before, 0) << "no kill landed before the append";
  }
  // The project is whole again after one more import.
  Labels after;
  bool relabel = true;
  make_file(before, relabel, after);
  ASSERT_EQ(wait_for(start(true, true)), 0) << read_file(err_file);
  std::string torn_text = "x";
  EXPECT_EQ(quarry::LabelJournal::read(journal(), &torn_text).labels(), after);
  EXPECT_TRUE(torn_text.empty()) << torn_text;
}

// ---------------------------------------------------------------- the lock

TEST_F(ProjectTest, OneWriterAtATime) {
  init("synthetic:600", "random", true, true, 600);
  write_file(path("f.csv"), "index,label\n1,cat\n2,dog\n");
  const int fd = ::open((dir_ + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);

  Result r = quarry({"project", "label", dir_, path("f.csv"), "--wait", "0"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
  const std::string msg = lower(r.err);
  EXPECT_TRUE(msg.find("lock") != std::string::npos || msg.find("another") != std::string::npos) << r.err;
  EXPECT_TRUE(quarry::LabelJournal::read(journal()).labels().empty());  // Project would wait for the lock
  r = quarry({"project", "next", dir_, "-k", "5", "--wait", "0"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_FALSE(fs::exists(dir_ + "/batches/0001.csv"));
  // The library, too (another open file description of the lock in this process).
  const std::string lib = lower(message_of([&] { quarry::Project(dir_).label(path("f.csv"), false, 0); }));
  EXPECT_TRUE(lib.find("lock") != std::string::npos || lib.find("another") != std::string::npos) << lib;

  // --wait 1 gives up after about a second.
  auto t0 = Clock::now();
  r = quarry({"project", "label", dir_, path("f.csv"), "--wait", "1"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_GE(seconds_since(t0), 0.9);
  EXPECT_TRUE(quarry::LabelJournal::read(journal()).labels().empty());  // Project would wait for the lock

  // --wait 2 and the lock released after 0.5 s: it waits, then imports.
  t0 = Clock::now();
  const pid_t pid = spawn({"project", "label", dir_, path("f.csv"), "--wait", "2"}, path("wait.err"));
  ASSERT_GT(pid, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), 0) << "it did not wait for the lock";
  ASSERT_EQ(::flock(fd, LOCK_UN), 0);
  ::close(fd);
  EXPECT_EQ(wait_for(pid), 0) << read_file(path("wait.err"));
  EXPECT_EQ(labels(), (Labels{{1, 0}, {2, 1}}));
}

}  // namespace
}  // namespace project_test
