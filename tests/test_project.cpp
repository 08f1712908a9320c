// `quarry project`, the human-in-the-loop labeling project, end to end: the command line
// (init, next, label, status, export) and the library (quarry::Project, quarry::LabelJournal).
// Label imports are all-or-nothing and validated row by row; the label journal survives a
// torn last record and refuses a corrupt middle one; a killed import leaves exactly the labels
// before it or after it; one writer at a time.
//
// Training needs LibTorch: where a test needs a trained model it uses the entropy strategy with
// LibTorch and the random strategy without (the AddressSanitizer build has no LibTorch).
//
// This file: the whole cycle, imports and batches. The journal, killed imports and the
// writer lock are in test_project_journal.cpp; the shared helpers in project_helpers.hpp.
#include <gtest/gtest.h>
#include <png.h>

#include <fstream>

#include "project_helpers.hpp"
#include "project/journal.hpp"
#include "quarry/dataset.hpp"

namespace project_test {
namespace {

// ---------------------------------------------------------------- the whole cycle

TEST_F(ProjectTest, FullCycleOnSyntheticImages) {
  const bool torch = quarry::have_torch();
  const std::string strategy = torch ? "entropy" : "random";
  init("synthetic:600", strategy, true, true, 600);
  EXPECT_TRUE(fs::exists(dir_ + "/project.json"));
  EXPECT_TRUE(fs::exists(dir_ + "/manifest.csv"));
  EXPECT_EQ(read_file(dir_ + "/labelstudio.xml"), quarry::Project::labelstudio_config(kClasses));
  for (const std::string& c : kClasses)
    EXPECT_NE(read_file(dir_ + "/labelstudio.xml").find(c), std::string::npos) << c;
  {
    const quarry::Project p(dir_);
    EXPECT_EQ(p.config().classes, kClasses);
    EXPECT_EQ(p.config().pool_size, 600);
    EXPECT_EQ(p.config().strategy, strategy);
    EXPECT_EQ(p.config().seed, 3u);
    EXPECT_TRUE(p.config().has_manifest);
    EXPECT_TRUE(p.labels().empty());
    EXPECT_TRUE(p.batches().empty());
    EXPECT_TRUE(p.torn().empty());
  }

  // 1. The cold start: no labels, a random batch of 20.
  Result r = quarry({"project", "next", dir_, "-k", "20"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = parse_csv(read_file(dir_ + "/batches/0001.csv"));
  ASSERT_EQ(rows.size(), 21u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"index", "id", "path_or_url", "score", "predicted", "confidence"}));
  // Every item has the manifest's URL: no image is rendered.
  EXPECT_FALSE(fs::exists(dir_ + "/batches/0001"));
  std::vector<std::int64_t> b1;
  for (std::size_t k = 1; k < rows.size(); ++k) {
    ASSERT_EQ(rows[k].size(), 6u) << k;
    EXPECT_EQ(rows[k][4], "") << "a cold-start batch has no prediction";
    EXPECT_EQ(rows[k][5], "");
    const std::int64_t i = std::stoll(rows[k][0]);
    b1.push_back(i);
    EXPECT_GE(i, 0);
    EXPECT_LT(i, 600);
    EXPECT_EQ(rows[k][1], item_id(i));
    EXPECT_EQ(rows[k][2], item_url(i));
    EXPECT_NO_THROW((void)std::stod(rows[k][3])) << rows[k][3];
  }
  EXPECT_EQ(std::set<std::int64_t>(b1.begin(), b1.end()).size(), 20u) << "an item twice in one batch";
  const auto tasks = nlohmann::json::parse(read_file(dir_ + "/batches/0001.labelstudio.json"));
  ASSERT_TRUE(tasks.is_array());
  ASSERT_EQ(tasks.size(), 20u);
  for (std::size_t t = 0; t < 20; ++t) {
    const auto& task = tasks[t];
    EXPECT_EQ(task.at("data").at("image"), item_url(b1[t]));
    EXPECT_EQ(task.at("data").at("quarry_index").get<std::int64_t>(), b1[t]);
    EXPECT_EQ(task.at("data").at("quarry_id"), item_id(b1[t]));
    EXPECT_EQ(task.at("meta").at("quarry_index").get<std::int64_t>(), b1[t]);
    EXPECT_EQ(task.at("meta").at("quarry_batch").get<int>(), 1);
    EXPECT_TRUE(task.at("meta").at("quarry_score").is_number());
  }
  {
    const quarry::Project p(dir_);
    ASSERT_EQ(p.batches().size(), 1u);
    EXPECT_EQ(p.batches()[0].number, 1);
    EXPECT_EQ(p.batches()[0].state, "open");
    EXPECT_EQ(p.batches()[0].index, b1);
    EXPECT_NE(p.batches()[0].strategy.find("random"), std::string::npos) << p.batches()[0].strategy;
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.pool_size, 600);
    EXPECT_EQ(s.labeled, 0);
    EXPECT_EQ(s.pending, 20);
    EXPECT_EQ(s.batches, 1);
    EXPECT_EQ(s.open_batch, std::optional<int>(1));
  }

  // 2. Items 0-7 of the batch from its own CSV with a label column (class names).
  Labels expected;
  std::string csv = "index,id,path_or_url,score,label\n";
  for (std::size_t t = 0; t < 8; ++t) {
    csv += rows[t + 1][0] + "," + rows[t + 1][1] + "," + csv_field(rows[t + 1][2]) + "," + rows[t + 1][3] + "," +
           kClasses[t % 4] + "\n";
    expected[b1[t]] = static_cast<std::int32_t>(t % 4);
  }
  r = label("first.csv", csv);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), expected);
  EXPECT_EQ(quarry::Project(dir_).status().pending, 12);

  // 3. Items 8-15 from a Label Studio export of the batch's tasks: item 8 annotated twice (the
  // last counts), item 9 with a cancelled second annotation (the first counts), items 14 and 15
  // without a usable annotation (skipped).
  auto exported = nlohmann::json::array();
  for (std::size_t t = 8; t < 16; ++t) {
    auto task = tasks[t];
    task["id"] = 1000 + t;
    auto ann = nlohmann::json::array();
    const std::string name = kClasses[(t + 1) % 4];
    if (t == 8) ann.push_back(ls_annotation(kClasses[t % 4], false));
    if (t < 14) ann.push_back(ls_annotation(name, false));
    if (t == 9 || t == 14) ann.push_back(ls_annotation(kClasses[t % 4], true));
    task["annotations"] = ann;
    exported.push_back(task);
    if (t < 14) expected[b1[t]] = static_cast<std::int32_t>((t + 1) % 4);
  }
  r = label("export.json", exported.dump(2));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), expected);

  // 4. Items 14-19 by manifest id, with integer class ids.
  csv = "id,label\n";
  for (std::size_t t = 14; t < 20; ++t) {
    csv += item_id(b1[t]) + "," + std::to_string(t % 3) + "\n";
    expected[b1[t]] = static_cast<std::int32_t>(t % 3);
  }
  r = label("by_id.csv", csv);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), expected);
  ASSERT_EQ(expected.size(), 20u);
  {
    const quarry::Project p(dir_);
    EXPECT_EQ(p.batches().at(0).state, "closed");
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.labeled, 20);
    EXPECT_EQ(s.pending, 0);
    EXPECT_FALSE(s.open_batch.has_value());
    EXPECT_EQ(s.per_class, counts_of(expected, 4));
  }
  // The journal: one checksummed record per import, seq 1..3, sources as given.
  {
    const auto lines = lines_of(read_file(journal()));
    ASSERT_EQ(lines.size(), 3u);
    const std::vector<std::string> sources{path("first.csv"), path("export.json"), path("by_id.csv")};
    for (std::size_t k = 0; k < 3; ++k) {
      ASSERT_GT(lines[k].size(), 9u);
      char hex[16];
      std::snprintf(hex, sizeof hex, "%08x", crc32(lines[k].substr(9)));
      EXPECT_EQ(lines[k].substr(0, 9), std::string(hex) + " ") << lines[k];
      const auto j = nlohmann::json::parse(lines[k].substr(9));
      EXPECT_EQ(j.at("seq").get<int>(), static_cast<int>(k) + 1);
      EXPECT_EQ(j.at("source"), sources[k]);
      EXPECT_TRUE(std::regex_match(j.at("time").get<std::string>(),
                                   std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00))")))
          << j.at("time");
      EXPECT_EQ(j.at("labels").size(), k == 0 ? 8u : 6u);
    }
  }

  // 5. The next batch: a model (with LibTorch) or random; never a labeled item.
  r = quarry({"project", "next", dir_, "-k", "15"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::vector<std::int64_t> b2 = batch_indices(2);
  ASSERT_EQ(b2.size(), 15u);
  EXPECT_EQ(std::set<std::int64_t>(b2.begin(), b2.end()).size(), 15u);
  for (std::int64_t i : b2) EXPECT_EQ(expected.count(i), 0u) << "labeled item " << i << " proposed again";
  {
    const quarry::Project p(dir_);
    ASSERT_EQ(p.batches().size(), 2u);
    const quarry::BatchInfo& b = p.batches()[1];
    EXPECT_EQ(b.index, b2);
    EXPECT_EQ(b.state, "open");
    const quarry::ProjectStatus s = p.status();
    if (torch) {
      EXPECT_EQ(b.strategy.find("cold"), std::string::npos) << b.strategy;
      ASSERT_EQ(b.score.size(), 15u);
      for (std::size_t k = 1; k < b.score.size(); ++k)
        EXPECT_GE(b.score[k - 1], b.score[k]) << "not in rank order at " << k;
      EXPECT_TRUE(fs::exists(dir_ + "/model.pt"));
      EXPECT_EQ(s.models_trained, 1);
      EXPECT_TRUE(s.model_current);
      EXPECT_EQ(s.model_labels, 20);
      EXPECT_TRUE(s.val_accuracy.has_value());
      // The model's guess for each item, and the round on the learning curve.
      ASSERT_EQ(b.predicted.size(), 15u);
      ASSERT_EQ(b.confidence.size(), 15u);
      for (std::size_t k = 0; k < 15; ++k) {
        EXPECT_TRUE(b.predicted[k] >= 0 && b.predicted[k] < 4) << b.predicted[k];
        EXPECT_TRUE(b.confidence[k] >= 0.25f && b.confidence[k] <= 1.0f) << b.confidence[k];
      }
      ASSERT_EQ(s.rounds.size(), 1u);
      EXPECT_EQ(s.rounds[0].labels, 20);
      EXPECT_EQ(s.rounds[0].val_balanced_accuracy, s.val_balanced_accuracy);
      const auto rows2 = parse_csv(read_file(dir_ + "/batches/0002.csv"));
      EXPECT_EQ(rows2.at(1).at(4), kClasses[static_cast<std::size_t>(b.predicted[0])]);
    } else {
      EXPECT_TRUE(b.predicted.empty());
    }
    EXPECT_EQ(s.pending, 15);
    EXPECT_EQ(s.open_batch, std::optional<int>(2));
  }

  // 6. status, as text and JSON.
  r = quarry({"project", "status", dir_});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("20"), std::string::npos) << r.out;
  r = quarry({"project", "status", dir_, "--format", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  {
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("labeled").get<std::int64_t>(), 20) << r.out;
    EXPECT_EQ(j.at("pool_size").get<std::int64_t>(), 600) << r.out;
    EXPECT_EQ(j.at("pending").get<std::int64_t>(), 15) << r.out;
    EXPECT_EQ(per_class_of(j, kClasses), counts_of(expected, 4)) << r.out;
  }

  // 7. export: CSV to stdout and to a file, and NPY.
  r = quarry({"project", "export", dir_, "--format", "csv"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, export_of(expected));
  EXPECT_EQ(quarry::Project(dir_).export_csv(), export_of(expected));
  r = quarry({"project", "export", dir_, "--format", "csv", "--output", path("out.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_file(path("out.csv")), export_of(expected));
  r = quarry({"project", "export", dir_, "--format", "npy", "--output", path("out.npy")});
  ASSERT_EQ(r.rc, 0) << r.err;
  const quarry::Array a = quarry::read_npy(path("out.npy"));
  ASSERT_EQ(a.dtype(), quarry::DType::i64);
  ASSERT_EQ(a.shape(), (std::vector<std::int64_t>{20, 2}));
  std::size_t k = 0;
  for (const auto& [i, c] : expected) {
    EXPECT_EQ(a.as<std::int64_t>()[2 * k], i) << k;
    EXPECT_EQ(a.as<std::int64_t>()[2 * k + 1], c) << k;
    ++k;
  }
}

TEST_F(ProjectTest, WithoutClassesOrManifestClassesAreNumbersAndIdsAreIndices) {
  init("synthetic:100", "random", false, false);
  const quarry::Project p0(dir_);
  EXPECT_EQ(p0.config().classes, (std::vector<std::string>{"0", "1", "2", "3"}));
  EXPECT_FALSE(p0.config().has_manifest);
  EXPECT_EQ(p0.config().pool_size, 100);

  Result r = quarry({"project", "next", dir_, "-k", "6"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = parse_csv(read_file(dir_ + "/batches/0001.csv"));
  ASSERT_EQ(rows.size(), 7u);
  for (std::size_t k = 1; k < rows.size(); ++k) EXPECT_EQ(rows[k].at(1), rows[k].at(0)) << "id = the index";
  const auto tasks = nlohmann::json::parse(read_file(dir_ + "/batches/0001.labelstudio.json"));
  ASSERT_EQ(tasks.size(), 6u);
  EXPECT_EQ(tasks[0].at("data").at("quarry_id"), rows[1][0]);
  // Without a manifest the pool's images are rendered to PNG: the CSV names them, the Label
  // Studio tasks carry them inline, and their pixels are the pool's (the project's seed 3).
  const quarry::Dataset pool = quarry::synthetic_images(100, 3);
  for (std::size_t k = 1; k < rows.size(); ++k) {
    const std::int64_t i = std::stoll(rows[k][0]);
    EXPECT_EQ(rows[k][2], "batches/0001/" + rows[k][0] + ".png");
    EXPECT_EQ(tasks[k - 1].at("data").at("image").get<std::string>().rfind("data:image/png;base64,", 0), 0u);
    png_image im{};
    im.version = PNG_IMAGE_VERSION;
    ASSERT_TRUE(png_image_begin_read_from_file(&im, (dir_ + "/" + rows[k][2]).c_str())) << im.message;
    ASSERT_EQ(im.width, 28u);
    ASSERT_EQ(im.height, 28u);
    im.format = PNG_FORMAT_GRAY;
    std::vector<unsigned char> px(28 * 28);
    ASSERT_TRUE(png_image_finish_read(&im, nullptr, px.data(), 0, nullptr)) << im.message;
    for (std::size_t p = 0; p < px.size(); ++p)
      ASSERT_NEAR(px[p], pool.train.x[static_cast<std::size_t>(i) * 784 + p] * 255.0f, 0.51f) << "item " << i << " pixel " << p;
  }

  // Labels are the class names "0".."3"; ids are the indices as text.
  const std::int64_t a = std::stoll(rows[1][0]), b = std::stoll(rows[2][0]);
  r = label("l.csv", "index,label\n" + rows[1][0] + ",3\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  r = label("m.csv", "id,label\n" + rows[2][0] + ",1\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  const Labels expected{{a, 3}, {b, 1}};
  EXPECT_EQ(labels(), expected);
  r = quarry({"project", "export", dir_, "--format", "csv"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, export_of(expected, {"0", "1", "2", "3"}));
  r = label("bad.csv", "index,label\n5,4\n");
  EXPECT_EQ(r.rc, 1) << "class 4 of 4 classes";
  EXPECT_EQ(labels(), expected);
}

TEST_F(ProjectTest, InitRejectsBadManifestsAndNonEmptyFolders) {
  struct Case {
    std::string name, text;
    std::int64_t line;  // the bad row (0: none)
    std::string what;
  };
  const std::vector<Case> cases{
      {"dup_index.csv", "index,id,path_or_url\n0,a,x\n1,b,y\n0,c,z\n", 4, "twice"},
      {"dup_id.csv", "index,id,path_or_url\n0,a,x\n1,b,y\n2,a,z\n", 4, "'a'"},
      {"outside.csv", "index,id,path_or_url\n0,a,x\n100,b,y\n", 3, "100"},
      {"negative.csv", "index,id,path_or_url\n-1,a,x\n", 2, "-1"},
      {"not_int.csv", "index,id,path_or_url\n0,a,x\nsix,b,y\n", 3, "six"},
      {"no_id.csv", "index,path_or_url\n0,x\n", 0, "id"},
      {"partial.csv", "index,id,path_or_url\n0,a,x\n1,b,y\n", 0, "no row for 98 of the 100"},
  };
  for (const Case& c : cases) {
    write_file(path(c.name), c.text);
    const std::string dir = path("p_" + c.name);
    const Result r = quarry({"project", "init", dir, "--dataset", "synthetic:100", "--strategy", "random",
                             "--manifest", path(c.name)});
    EXPECT_EQ(r.rc, 1) << c.name;
    EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.name), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.what), std::string::npos) << c.name << ": " << r.err;
    if (c.line > 0) {
      EXPECT_TRUE(mentions(r.err, "line", c.line, path(c.name))) << c.name << ": " << r.err;
    }
    EXPECT_FALSE(fs::exists(dir + "/project.json")) << c.name;
  }
  // A failed init leaves a folder that a corrected init accepts (the folder must be missing or
  // empty).
  write_file(path("bad.csv"), "index,id,path_or_url\n0,a,x\n0,b,y\n");
  Result r = quarry({"project", "init", dir_, "--dataset", "synthetic:100", "--strategy", "random", "--manifest",
                     path("bad.csv")});
  ASSERT_EQ(r.rc, 1);
  // (A manifest names every pool item; quoted fields may hold commas and quotes.)
  std::string good = "index,id,path_or_url\n0,a,x\n\"1\",\"b,c\",\"y \"\"z\"\"\"\n";
  for (int i = 2; i < 100; ++i) good += std::to_string(i) + ",id" + std::to_string(i) + ",\n";
  write_file(path("good.csv"), good);
  r = quarry({"project", "init", dir_, "--dataset", "synthetic:100", "--strategy", "random", "--manifest",
              path("good.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(quarry::Project(dir_).config().has_manifest);
  // The folder is not empty now: a second init refuses and changes nothing.
  const std::string config = read_file(dir_ + "/project.json");
  r = quarry({"project", "init", dir_, "--dataset", "synthetic:200", "--strategy", "random"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(dir_), std::string::npos) << r.err;
  EXPECT_EQ(read_file(dir_ + "/project.json"), config);
  EXPECT_EQ(quarry::Project(dir_).config().pool_size, 100);
  // A folder with someone else's file in it.
  write_file(path("other/keep.txt"), "mine");
  r = quarry({"project", "init", path("other"), "--dataset", "synthetic:100"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(read_file(path("other/keep.txt")), "mine");
  EXPECT_FALSE(fs::exists(path("other/project.json")));
}

TEST_F(ProjectTest, UsageErrorsExitTwo) {
  init("synthetic:100", "random", false);
  EXPECT_EQ(quarry({"project", "label", dir_}).rc, 2);                     // no FILE
  EXPECT_EQ(quarry({"project", "next", dir_, "-k", "many"}).rc, 2);        // not a number
  EXPECT_EQ(quarry({"project", "init", path("p2")}).rc, 2);                // no --dataset
  EXPECT_EQ(quarry({"project", "frobnicate", dir_}).rc, 2);                // no such command
  const Result r = quarry({"project", "label", dir_, path("missing.csv")});  // a missing file: exit 1
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("missing.csv"), std::string::npos) << r.err;
  EXPECT_EQ(quarry({"project", "status", path("nowhere")}).rc, 1);        // not a project
}

// balanced:NAME and batchbald as project strategies: balanced:batchbald's batch is k distinct
// unlabeled items, class by class of the model's prediction, the same for a copy of the
// project; the target is kept in project.json. Bad names and targets are usage errors.
TEST_F(ProjectTest, BalancedBatchBaldBatches) {
  const auto with = [&](const std::string& dir, const std::string& strategy, const std::string& target) {
    std::vector<std::string> a{"project", "init", dir, "--dataset", "synthetic:100", "--model", "mlp",
                               "--strategy", strategy, "--committee", "mc:3", "--seed", "3",
                               "--threads", "2", "--classes", kClassList};
    if (!target.empty()) a.insert(a.end(), {"--balance-target", target});
    return quarry(a);
  };
  Result r = with(path("bad1"), "balanced:", "");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--strategy: strategy 'balanced:': balanced:NAME needs a strategy NAME"), std::string::npos)
      << r.err;
  EXPECT_EQ(with(path("bad2"), "balanced:balanced:entropy", "").rc, 2);
  r = with(path("bad3"), "entropy", "1,1,1,1");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--balance-target is for a balanced:NAME strategy"), std::string::npos) << r.err;
  r = with(path("bad4"), "balanced:batchbald", "1,1");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("4 classes"), std::string::npos) << r.err;
  // batchbald's restart share: only with a batchbald strategy, kept in project.json, checked there.
  const std::vector<std::string> init5{"project", "init", path("bad5"), "--dataset", "synthetic:100", "--strategy",
                                       "entropy", "--batchbald-restart", "0.2", "--classes", kClassList};
  r = quarry(init5);
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--batchbald-restart is for --strategy batchbald"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("bad5") + "/project.json"));
  std::ofstream(path("plain.txt")) << "a file\n";  // a project folder under a file: a usage error
  r = quarry({"project", "init", path("plain.txt") + "/p", "--dataset", "synthetic:100", "--classes", kClassList});
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("a file"), std::string::npos) << r.err;
  r = quarry({"project", "init", path("restart"), "--dataset", "synthetic:100", "--strategy", "batchbald",
              "--batchbald-restart", "0.2", "--classes", kClassList});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(quarry::Project(path("restart")).config().batchbald_restart, 0.2);
  {
    const std::string pj = path("restart") + "/project.json";
    nlohmann::json j = nlohmann::json::parse(read_file(pj));
    EXPECT_EQ(j.at("batchbald_restart").get<double>(), 0.2);
    for (const auto& [bad, message] : std::vector<std::pair<nlohmann::json, std::string>>{
             {2.0, "project.json: batchbald_restart 2 is out of range"},
             {"0.3", "project.json: batchbald_restart must be a number from 0 to 1, got \"0.3\""}}) {
      j["batchbald_restart"] = bad;
      std::ofstream(pj, std::ios::trunc) << j.dump(1);
      try {
        quarry::Project damaged(path("restart"));
        ADD_FAILURE() << "batchbald_restart " << bad.dump() << " was accepted";
      } catch (const quarry::Error& e) {
        EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      }
    }
  }
  if (!quarry::have_torch()) GTEST_SKIP() << "training needs LibTorch";

  // The library (no process per step; one training, the one that takes the time).
  quarry::ProjectConfig c;
  c.dataset = "synthetic:100";
  c.model = "mlp";
  c.strategy = "balanced:batchbald";
  c.committee = "mc:3";
  c.balance_target = "1,1,1,1";
  c.classes = kClasses;
  c.seed = 3;
  c.threads = 2;
  quarry::Project::init(dir_, c);
  quarry::Project p(dir_);
  EXPECT_EQ(p.config().balance_target, "1,1,1,1");
  quarry::NextOptions o;
  o.k = 20;
  const quarry::BatchInfo b1 = p.next(o).batch;  // the cold start: random
  Labels l;
  std::vector<quarry::LabelRow> rows;
  for (std::size_t t = 0; t < b1.index.size(); ++t) {
    l[b1.index[t]] = static_cast<std::int32_t>(t % 4);
    rows.push_back({b1.index[t], static_cast<std::int32_t>(t % 4), false});
  }
  p.label_rows(rows, "test");
  o.k = 12;
  const quarry::BatchInfo b2 = p.next(o).batch;
  EXPECT_EQ(b2.strategy, "balanced:batchbald");
  ASSERT_EQ(b2.index.size(), 12u);
  EXPECT_EQ(std::set<std::int64_t>(b2.index.begin(), b2.index.end()).size(), 12u);
  for (std::int64_t i : b2.index) EXPECT_EQ(l.count(i), 0u) << "labeled item " << i << " proposed again";
  ASSERT_EQ(b2.predicted.size(), 12u);
  EXPECT_TRUE(std::is_sorted(b2.predicted.begin(), b2.predicted.end())) << "not class by class";
  // The same project copied: its next batch (the same model, batch number and seed) is the same.
  fs::copy(dir_, path("again"), fs::copy_options::recursive);
  o.replace_pending = true;
  const quarry::BatchInfo here = p.next(o).batch;
  const quarry::BatchInfo there = quarry::Project(path("again")).next(o).batch;
  EXPECT_EQ(here.number, 3);
  EXPECT_EQ(here.index, there.index);
  EXPECT_EQ(here.score, there.score);
  // A copy whose project.json asks for one joint batch (restart 0): the same model, another batch.
  fs::copy(dir_, path("joint"), fs::copy_options::recursive);
  {
    nlohmann::json j = nlohmann::json::parse(read_file(path("joint") + "/project.json"));
    EXPECT_EQ(j.at("batchbald_restart").get<double>(), 0.5);
    j["batchbald_restart"] = 0.0;
    std::ofstream(path("joint") + "/project.json", std::ios::trunc) << j.dump(1);
  }
  const quarry::BatchInfo joint = quarry::Project(path("joint")).next(o).batch;
  EXPECT_EQ(joint.number, 4);
  EXPECT_NE(joint.index, here.index);
}

// ---------------------------------------------------------------- imports

TEST_F(ProjectTest, EveryKindOfBadImportIsRejectedWithNothingImported) {
  init("synthetic:600", "random", true, true, 600);
  const Labels first{{1, 0}, {2, 1}, {3, 2}};
  Result r = label("first.csv", label_csv(first));
  ASSERT_EQ(r.rc, 0) << r.err;

  struct Case {
    std::string name, text;
    std::vector<std::int64_t> bad;  // the bad rows: CSV lines / Label Studio tasks
    std::vector<std::int64_t> good;  // rows that must not be named
    std::string also;               // another word the message must hold
  };
  auto task = [](std::int64_t index, const std::string& choice) {
    return nlohmann::json{{"id", index + 1},
                          {"data", {{"image", "x.png"}, {"quarry_index", index}}},
                          {"annotations", nlohmann::json::array({ls_annotation(choice, false)})}};
  };
  const std::vector<Case> cases{
      {"not_int.csv", "index,label\n10,cat\nabc,dog\n11,cat\n12.5,dog\n13,fish\n", {3, 5}, {2, 4, 6}, "abc"},
      {"outside.csv", "index,label\n10,cat\n600,dog\n-1,cat\n11,bird\n", {3, 4}, {2, 5}, "600"},
      {"unknown_id.csv", "id,label\nimg-0010,cat\nimg-9999,dog\n", {3}, {2}, "img-9999"},
      {"unknown_class.csv", "index,label\n10,cat\n11,zebra\n12,7\n13,-1\n14,dog\n", {3, 4, 5}, {2, 6}, "zebra"},
      {"relabel.csv", "index,label\n10,cat\n1,dog\n2,dog\n", {3}, {2, 4}, ""},
      {"twice.csv", "index,label\n10,cat\n11,dog\n10,bird\n", {4}, {3}, ""},
      {"short_row.csv", "index,id,path_or_url,score,label\n10,img-0010,u,0.5,cat\n11,img-0011\n12,img-0012,u,0.4,dog\n",
       {3}, {2, 4}, ""},
      // A quoted field with a line break: rows are named by the line they start on.
      {"multiline.csv", "index,path_or_url,label\n10,\"a\nb\",cat\n600,x,dog\n", {4}, {}, ""},
      {"ls_bad.json",
       nlohmann::json::array({task(10, "cat"), task(600, "dog"), task(11, "zebra"), task(12, "bird")}).dump(),
       {2, 3}, {1, 4}, ""},
  };
  const std::string journal_before = read_file(journal());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    r = label(c.name, c.text);
    EXPECT_EQ(r.rc, 1) << r.err;
    EXPECT_NE(r.err.find("quarry: error:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(path(c.name)), std::string::npos) << r.err;
    const std::string word = c.name.find(".json") != std::string::npos ? "task" : "line";
    for (std::int64_t n : c.bad)
      EXPECT_TRUE(mentions(r.err, word, n, path(c.name))) << word << " " << n << " not in: " << r.err;
    for (std::int64_t n : c.good)
      EXPECT_FALSE(mentions(r.err, word, n, path(c.name))) << "good " << word << " " << n << ": " << r.err;
    if (!c.also.empty()) {
      EXPECT_NE(r.err.find(c.also), std::string::npos) << r.err;
    }
    EXPECT_EQ(read_file(journal()), journal_before) << "a rejected file changed the journal";
    EXPECT_EQ(labels(), first);
  }
  // Files without the columns needed.
  for (const std::string& text : {std::string("index,name\n10,cat\n"), std::string("label,score\ncat,1\n"),
                                  std::string("{\"not\": \"an export\"}")}) {
    r = label(text[0] == '{' ? "odd.json" : "odd.csv", text);
    EXPECT_EQ(r.rc, 1) << text;
    EXPECT_NE(r.err.find(path(text[0] == '{' ? "odd.json" : "odd.csv")), std::string::npos) << r.err;
  }
  EXPECT_EQ(read_file(journal()), journal_before);

  // The library: the same error.
  write_file(path("lib.csv"), "index,label\n20,cat\n21,wolf\n");
  expect_error([&] { quarry::Project(dir_).label(path("lib.csv"), false); }, {path("lib.csv"), "wolf"});
  EXPECT_TRUE(mentions(message_of([&] { quarry::Project(dir_).label(path("lib.csv"), false); }), "line", 3,
                       path("lib.csv")));
  EXPECT_EQ(read_file(journal()), journal_before);

  // The same index twice with the same label is fine; the next record is seq 2.
  r = label("same_twice.csv", "index,label\n10,cat\n10,cat\n1,cat\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), merged(first, {{10, 0}}));
  const auto lines = lines_of(read_file(journal()));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[1].substr(9)).at("seq"), 2);
}

TEST_F(ProjectTest, ImportingTheSameFileTwiceChangesNothing) {
  init("synthetic:600", "random", true, true, 600);
  Labels l;
  for (std::int64_t i = 0; i < 30; ++i) l[i * 7 % 600] = static_cast<std::int32_t>(i % 4);
  Result r = label("l.csv", label_csv(l));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string journal1 = read_file(journal());
  const std::string export1 = quarry::Project(dir_).export_csv();
  EXPECT_EQ(export1, export_of(l));
  r = quarry({"project", "label", dir_, path("l.csv")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_file(journal()), journal1) << "a repeated import wrote a record";
  EXPECT_EQ(lines_of(journal1).size(), 1u);
  EXPECT_EQ(quarry::Project(dir_).export_csv(), export1);

  // The library's summary of a repeated import.
  quarry::Project p(dir_);
  const quarry::ImportSummary s = p.label(path("l.csv"), false);
  EXPECT_EQ(s.rows, 30);
  EXPECT_EQ(s.added, 0);
  EXPECT_EQ(s.relabeled, 0);
  EXPECT_EQ(s.unchanged, 30);
  EXPECT_EQ(s.seq, 0);
  EXPECT_EQ(read_file(journal()), journal1);

  // A Label Studio export twice, through the library: skipped tasks are counted both times.
  auto tasks = nlohmann::json::array();
  for (std::int64_t i = 100; i < 105; ++i) {
    nlohmann::json t{{"id", i}, {"data", {{"image", "u"}, {"quarry_index", i}}}, {"meta", {{"quarry_batch", 1}}}};
    t["annotations"] = i == 104 ? nlohmann::json::array() : nlohmann::json::array({ls_annotation("dog", false)});
    tasks.push_back(t);
  }
  write_file(path("ls.json"), tasks.dump());
  quarry::Project p2(dir_);
  const quarry::ImportSummary s1 = p2.label(path("ls.json"), false);
  EXPECT_EQ(s1.added, 4);
  EXPECT_EQ(s1.skipped, 1);
  EXPECT_EQ(s1.seq, 2);
  const std::string journal2 = read_file(journal());
  const quarry::ImportSummary s2 = quarry::Project(dir_).label(path("ls.json"), false);
  EXPECT_EQ(s2.added, 0);
  EXPECT_EQ(s2.unchanged, 4);
  EXPECT_EQ(s2.skipped, 1);
  EXPECT_EQ(s2.seq, 0);
  EXPECT_EQ(read_file(journal()), journal2);
  EXPECT_EQ(labels(), merged(l, {{100, 1}, {101, 1}, {102, 1}, {103, 1}}));
}

TEST_F(ProjectTest, ARelabelNeedsAllowRelabel) {
  init("synthetic:600", "random", true, true, 600);
  Result r = label("a.csv", "index,label\n5,cat\n6,dog\n");
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string before = read_file(journal());
  r = label("b.csv", "index,label\n7,bird\n5,dog\n");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("b.csv")), std::string::npos) << r.err;
  EXPECT_TRUE(mentions(r.err, "line", 3, path("b.csv"))) << r.err;
  EXPECT_FALSE(mentions(r.err, "line", 2, path("b.csv"))) << r.err;
  EXPECT_NE(lower(r.err).find("relabel"), std::string::npos) << "the message should name --allow-relabel: " << r.err;
  EXPECT_EQ(read_file(journal()), before);
  EXPECT_EQ(labels(), (Labels{{5, 0}, {6, 1}}));

  r = quarry({"project", "label", dir_, path("b.csv"), "--allow-relabel"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(labels(), (Labels{{5, 1}, {6, 1}, {7, 2}}));
  EXPECT_EQ(lines_of(read_file(journal())).size(), 2u);

  write_file(path("c.csv"), "index,label\n5,bird\n6,dog\n8,fish\n");
  const quarry::ImportSummary s = quarry::Project(dir_).label(path("c.csv"), true);
  EXPECT_EQ(s.rows, 3);
  EXPECT_EQ(s.relabeled, 1);
  EXPECT_EQ(s.unchanged, 1);
  EXPECT_EQ(s.added, 1);
  EXPECT_EQ(s.seq, 3);
  EXPECT_EQ(labels(), (Labels{{5, 2}, {6, 1}, {7, 2}, {8, 3}}));
  // The export follows the last label.
  EXPECT_EQ(quarry::Project(dir_).export_csv(), "index,label\n5,bird\n6,dog\n7,bird\n8,fish\n");
}

TEST_F(ProjectTest, RgbPoolImagesAreRenderedAsTheyAre) {
  // pool:X.npy of RGB images [N, H, W, 3] uint8, not square: each batch item's PNG has the
  // pool's pixels, channels interleaved as in the file.
  const std::int64_t n = 12, h = 5, w = 7;
  std::vector<std::uint8_t> px(static_cast<std::size_t>(n * h * w * 3));
  for (std::size_t k = 0; k < px.size(); ++k) px[k] = static_cast<std::uint8_t>((k * 37 + 11) % 256);
  quarry::write_npy(path("rgb.npy"), quarry::ArrayView(px.data(), quarry::DType::u8, {n, h, w, 3}));
  Result r = quarry({"project", "init", dir_, "--dataset", "pool:" + path("rgb.npy"), "--classes", "a,b",
                     "--strategy", "random", "--threads", "2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = quarry({"project", "next", dir_, "-k", "4"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto rows = parse_csv(read_file(dir_ + "/batches/0001.csv"));
  ASSERT_EQ(rows.size(), 5u);
  for (std::size_t k = 1; k < rows.size(); ++k) {
    const std::int64_t i = std::stoll(rows[k][0]);
    png_image im{};
    im.version = PNG_IMAGE_VERSION;
    ASSERT_TRUE(png_image_begin_read_from_file(&im, (dir_ + "/" + rows[k][2]).c_str())) << im.message;
    EXPECT_EQ(im.width, static_cast<unsigned>(w));
    EXPECT_EQ(im.height, static_cast<unsigned>(h));
    EXPECT_EQ(im.format & PNG_FORMAT_FLAG_COLOR, static_cast<unsigned>(PNG_FORMAT_FLAG_COLOR)) << "an RGB PNG";
    im.format = PNG_FORMAT_RGB;
    std::vector<unsigned char> got(static_cast<std::size_t>(h * w * 3));
    ASSERT_TRUE(png_image_finish_read(&im, nullptr, got.data(), 0, nullptr)) << im.message;
    const std::vector<unsigned char> want(px.begin() + i * h * w * 3, px.begin() + (i + 1) * h * w * 3);
    EXPECT_EQ(got, want) << "item " << i;
  }
}

TEST_F(ProjectTest, LabelRowsWriteWhatDoesNotConflictAndReportTheRest) {
  init("synthetic:600", "random", true, true, 600);
  quarry::Project p(dir_);
  quarry::ImportSummary s = p.label_rows({{5, 0, false}, {6, 1, false}}, "page (session a)");
  EXPECT_EQ(s.added, 2);
  EXPECT_EQ(s.seq, 1);
  EXPECT_TRUE(s.conflicts.empty());
  // Another session: 5 conflicts (not written), 6 unchanged, 7 new, 8 relabel-allowed but new.
  s = p.label_rows({{5, 2, false}, {6, 1, false}, {7, 3, false}, {8, 1, true}}, "page (session b)");
  EXPECT_EQ(s.added, 2);
  EXPECT_EQ(s.unchanged, 1);
  EXPECT_EQ(s.relabeled, 0);
  ASSERT_EQ(s.conflicts.size(), 1u);
  EXPECT_EQ(s.conflicts[0].index, 5);
  EXPECT_EQ(s.conflicts[0].current, 0);
  EXPECT_EQ(s.conflicts[0].wanted, 2);
  EXPECT_EQ(labels(), (Labels{{5, 0}, {6, 1}, {7, 3}, {8, 1}}));
  s = p.label_rows({{5, 2, true}}, "page (session b)");
  EXPECT_EQ(s.relabeled, 1);
  EXPECT_EQ(labels(), (Labels{{5, 2}, {6, 1}, {7, 3}, {8, 1}}));
  // Nothing to change: no record.
  s = p.label_rows({{5, 2, false}}, "page");
  EXPECT_EQ(s.seq, 0);
  const auto lines = lines_of(read_file(journal()));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(lines[1].substr(9)).at("source"), "page (session b)");
  // A bad row (outside the pool, an unknown class id, an item twice) saves nothing and names it.
  const std::string before = read_file(journal());
  for (const auto& rows : std::vector<std::vector<quarry::LabelRow>>{
           {{9, 0, false}, {600, 0, false}}, {{9, 4, false}}, {{9, -1, false}}, {{9, 0, false}, {9, 1, false}}}) {
    try {
      (void)p.label_rows(rows, "page");
      ADD_FAILURE() << "no error";
    } catch (const quarry::Error& e) {
      EXPECT_NE(std::string(e.what()).find("nothing saved"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("row "), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(read_file(journal()), before);
}

// ---------------------------------------------------------------- batches

// ---------------------------------------------------------------- the stopping rule

TEST(ProjectStop, StopSetAndRule) {
  const std::vector<std::int64_t> a = quarry::project_stop_set(5000, 7);
  ASSERT_EQ(a.size(), 1000u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<std::int64_t>(a.begin(), a.end()).size(), 1000u);
  EXPECT_GE(a.front(), 0);
  EXPECT_LT(a.back(), 5000);
  EXPECT_EQ(quarry::project_stop_set(5000, 7), a);  // the project's seed fixes it
  EXPECT_NE(quarry::project_stop_set(5000, 8), a);
  const std::vector<std::int64_t> small = quarry::project_stop_set(300, 7);  // all of a small pool
  ASSERT_EQ(small.size(), 300u);
  for (std::int64_t i = 0; i < 300; ++i) EXPECT_EQ(small[static_cast<std::size_t>(i)], i);

  std::vector<quarry::ModelRound> rounds(5);
  const double kappa[] = {0, 0.9, 0.995, 0.99, 0.999};
  for (std::size_t i = 1; i < 5; ++i) rounds[i].stop_kappa = kappa[i];  // the first model has none
  const quarry::StopRule rule = quarry::parse_stop_rule("kappa:0.99:2");
  EXPECT_EQ(quarry::project_stop_round(rounds, rule), std::optional<std::size_t>(3));  // (0.995 + 0.99) / 2
  EXPECT_EQ(quarry::project_stop_round(rounds, quarry::parse_stop_rule("kappa:0.999:1")),
            std::optional<std::size_t>(4));
  EXPECT_FALSE(quarry::project_stop_round(rounds, quarry::parse_stop_rule("kappa:1:1")));
  EXPECT_FALSE(quarry::project_stop_round({}, rule));
  // The models move again: the rule no longer holds at the last one, so nothing is reported.
  rounds.push_back({});
  rounds.back().stop_kappa = 0.2;
  EXPECT_FALSE(quarry::project_stop_round(rounds, rule));
  rounds.push_back({});
  rounds.back().stop_kappa = 1.0;
  rounds.push_back({});
  rounds.back().stop_kappa = 1.0;
  EXPECT_EQ(quarry::project_stop_round(rounds, rule), std::optional<std::size_t>(7));
}

TEST_F(ProjectTest, StatusSaysWhenLabelsHaveStoppedPaying) {
  if (!quarry::have_torch()) GTEST_SKIP() << "needs LibTorch to train models";
  init("synthetic:300", "entropy", false);
  Result r = quarry({"project", "next", dir_, "-k", "20"});
  ASSERT_EQ(r.rc, 0) << r.err;
  Labels l;
  const auto b1 = batch_indices(1);
  for (std::size_t t = 0; t < b1.size(); ++t) l[b1[t]] = static_cast<std::int32_t>(t % 4);
  ASSERT_EQ(label("l.csv", label_csv(l)).rc, 0);
  ASSERT_EQ(quarry({"project", "next", dir_, "-k", "10"}).rc, 0);  // model 1: no kappa yet
  const auto b2 = batch_indices(2);
  for (std::size_t t = 0; t < b2.size(); ++t) l[b2[t]] = static_cast<std::int32_t>(t % 4);
  ASSERT_EQ(label("l2.csv", label_csv(l)).rc, 0);
  ASSERT_EQ(quarry({"project", "next", dir_, "-k", "10"}).rc, 0);               // model 2 against model 1
  ASSERT_EQ(quarry({"project", "next", dir_, "-k", "10", "--retrain"}).rc, 0);  // model 3: the same labels
  const auto state = nlohmann::json::parse(read_file(dir_ + "/state.json"));
  EXPECT_EQ(state.at("stop_predictions").size(), 300u);  // the whole (small) pool is the stop set

  r = quarry({"project", "status", dir_, "--format", "json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.at("rounds").size(), 3u);
  EXPECT_TRUE(j["rounds"][0]["stop_kappa"].is_null());
  EXPECT_TRUE(j["rounds"][2]["stop_kappa"].is_null());  // no new labels: agreeing with itself says nothing
  ASSERT_TRUE(j["rounds"][1]["stop_kappa"].is_number()) << r.out;
  const double kappa = j["rounds"][1]["stop_kappa"].get<double>();
  EXPECT_TRUE(kappa >= -1 && kappa <= 1) << kappa;
  EXPECT_EQ(j["stop"]["rule"], "kappa:0.99:3");
  EXPECT_EQ(j["stop"]["fired"], false);  // one kappa: a window of 3 cannot fire

  r = quarry({"project", "status", dir_, "--stop", "kappa:-0.99:1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("labels have stopped paying since model 2 (30 labels)"), std::string::npos) << r.out;
  r = quarry({"project", "status", dir_, "--stop", "kappa:-0.99:1", "--format", "json"});
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["stop"]["model"], 2);
  EXPECT_EQ(j["stop"]["labels"], 30);
  r = quarry({"project", "status", dir_, "--stop", "kappa:0.99"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("kappa:THRESHOLD:WINDOW"), std::string::npos) << r.err;
}

TEST_F(ProjectTest, TheColdStartBatchCanBeTypical) {
  Result r = quarry({"project", "init", dir_, "--dataset", "synthetic:300", "--strategy", "entropy", "--seed", "3",
                     "--seed-strategy", "typiclust"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(quarry::Project(dir_).config().seed_strategy, "typiclust");
  r = quarry({"project", "next", dir_, "-k", "6"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const quarry::Project p(dir_);
  ASSERT_EQ(p.batches().size(), 1u);
  EXPECT_EQ(p.batches()[0].strategy, "typiclust (cold start)");
  // Six distinct items of the pool, each scored with its typicality.
  std::set<std::int64_t> got(p.batches()[0].index.begin(), p.batches()[0].index.end());
  EXPECT_EQ(got.size(), 6u);
  for (std::int64_t i : p.batches()[0].index) EXPECT_TRUE(i >= 0 && i < 300);
  EXPECT_GT(p.batches()[0].score[0], 0.0f);  // a typicality, not a random draw's 0
  r = quarry({"project", "init", path("other"), "--dataset", "synthetic:300", "--seed-strategy", "kcenter"});
  EXPECT_EQ(r.rc, 2);
}

TEST_F(ProjectTest, LabeledAndPendingItemsAreNeverProposedAgain) {
  // A pool of 100 and the random strategy (no LibTorch needed): the batches must cover it.
  init("synthetic:100", "random", false);
  ASSERT_EQ(quarry::Project(dir_).config().pool_size, 100);
  Result r = quarry({"project", "next", dir_, "-k", "20"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto b1 = batch_indices(1);
  ASSERT_EQ(b1.size(), 20u);
  Labels l;
  for (std::size_t t = 0; t < 10; ++t) l[b1[t]] = static_cast<std::int32_t>(t % 4);
  r = label("l.csv", label_csv(l));
  ASSERT_EQ(r.rc, 0) << r.err;

  std::set<std::int64_t> seen(b1.begin(), b1.end());
  for (int n = 2; n <= 3; ++n) {
    r = quarry({"project", "next", dir_, "-k", "20"});
    ASSERT_EQ(r.rc, 0) << r.err;
    const auto b = batch_indices(n);
    ASSERT_EQ(b.size(), 20u);
    for (std::int64_t i : b) EXPECT_TRUE(seen.insert(i).second) << "batch " << n << " proposes " << i << " again";
  }
  ASSERT_EQ(seen.size(), 60u);
  {
    const quarry::Project p(dir_);
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.labeled, 10);
    EXPECT_EQ(s.pending, 50);
    EXPECT_EQ(s.open_batch, std::optional<int>(3));
    for (const quarry::BatchInfo& b : p.batches()) EXPECT_EQ(b.state, "open") << b.number;
  }

  // --replace-pending: the 50 pending items may be proposed again, the 10 labeled never; the
  // pool has 90 unlabeled items, so a batch of 90 is exactly them.
  r = quarry({"project", "next", dir_, "-k", "90", "--replace-pending"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto b4 = batch_indices(4);
  ASSERT_EQ(b4.size(), 90u);
  std::set<std::int64_t> want;
  for (std::int64_t i = 0; i < 100; ++i)
    if (!l.count(i)) want.insert(i);
  EXPECT_EQ(std::set<std::int64_t>(b4.begin(), b4.end()), want);
  {
    const quarry::Project p(dir_);
    ASSERT_EQ(p.batches().size(), 4u);
    for (int k = 0; k < 3; ++k) EXPECT_EQ(p.batches()[static_cast<std::size_t>(k)].state, "dropped") << k + 1;
    EXPECT_EQ(p.batches()[3].state, "open");
    const quarry::ProjectStatus s = p.status();
    EXPECT_EQ(s.pending, 90);
    EXPECT_EQ(s.open_batch, std::optional<int>(4));
  }

  // The library: the next --replace-pending reports the items it released; labeled ones stay out.
  Labels l2;
  for (std::size_t t = 0; t < 5; ++t) l2[b4[t]] = 1;
  r = label("l2.csv", label_csv(l2));
  ASSERT_EQ(r.rc, 0) << r.err;
  quarry::NextOptions o;
  o.k = 10;
  o.replace_pending = true;
  const quarry::NextResult nr = quarry::Project(dir_).next(o);
  EXPECT_EQ(nr.dropped, 85);
  EXPECT_EQ(nr.batch.number, 5);
  ASSERT_EQ(nr.batch.index.size(), 10u);
  for (std::int64_t i : nr.batch.index) {
    EXPECT_EQ(l.count(i), 0u) << i;
    EXPECT_EQ(l2.count(i), 0u) << i;
  }
  EXPECT_TRUE(fs::exists(nr.csv_path)) << nr.csv_path;
  EXPECT_TRUE(fs::exists(nr.labelstudio_path)) << nr.labelstudio_path;
}

}  // namespace
}  // namespace project_test
