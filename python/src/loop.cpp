// quarry._loop: the labeling project for Python (quarry.Project). A module of its own because it
// links quarry::loop (LibTorch): `import quarry` loads only the engine, and LibTorch loads the
// first time a Project is used.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "quarry/device.hpp"
#include "quarry/error.hpp"
#include "quarry/project.hpp"
#include "quarry/train.hpp"

namespace py = pybind11;
using namespace quarry;

namespace {

py::dict batch_dict(const BatchInfo& b) {
  py::dict d;
  d["number"] = b.number;
  d["created"] = b.created;
  d["state"] = b.state;
  d["index"] = b.index;
  d["score"] = b.score;
  d["strategy"] = b.strategy;
  return d;
}

// Errors are raised as the classes of quarry._core, so that `except quarry.Error` catches both.
void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const UsageError& e) {
    PyErr_SetString(py::module_::import("quarry._core").attr("UsageError").ptr(), e.what());
  } catch (const Error& e) {
    PyErr_SetString(py::module_::import("quarry._core").attr("Error").ptr(), e.what());
  }
}

}  // namespace

PYBIND11_MODULE(_loop, m) {
  m.doc() = "quarry's labeling project (implementation module; use quarry.Project)";
  py::register_exception_translator(translate);

  m.def("init", [](const std::string& dir, const std::string& dataset, const std::vector<std::string>& classes,
                   const std::string& strategy, const std::string& model, const std::string& committee,
                   const std::string& manifest, std::uint64_t seed, const std::string& device, int threads,
                   const std::string& balance_target, const std::string& seed_strategy,
                   const std::string& seed_embeddings, double batchbald_restart) {
    ProjectConfig c;
    c.dataset = dataset;
    c.classes = classes;
    c.strategy = strategy;
    c.model = model;
    c.committee = committee;
    c.balance_target = balance_target;
    c.seed_strategy = seed_strategy;
    c.seed_embeddings = seed_embeddings;
    c.batchbald_restart = batchbald_restart;
    c.seed = seed;
    c.device = device;
    c.threads = threads;
    py::gil_scoped_release free;
    Project::init(dir, c, manifest);
  });

  // Images [N, H, W] or [N, C, H, W] float32 (converted by the caller) -> embeddings [N, 128].
  m.def("pretrain", [](py::array_t<float, py::array::c_style | py::array::forcecast> x, int epochs, int batch_size,
                       double lr, double temperature, std::uint64_t seed, const std::string& device, int threads) {
    QUARRY_USAGE_EXPECTS(x.ndim() == 3 || x.ndim() == 4,
                         "pretrain: expected images [N, H, W] or [N, C, H, W], got an array of rank ", x.ndim());
    std::vector<std::int64_t> shape;
    if (x.ndim() == 3) shape = {1, x.shape(1), x.shape(2)};
    else shape = {x.shape(1), x.shape(2), x.shape(3)};
    PretrainOptions o;
    o.epochs = epochs;
    o.batch_size = batch_size;
    o.learning_rate = lr;
    o.temperature = temperature;
    o.seed = seed;
    o.device = parse_device(device);
    o.threads = threads;
    const float* pixels = x.data();  // x (a reference held here) keeps them alive
    const std::int64_t n = x.shape(0);
    Array e;
    {
      py::gil_scoped_release free;
      e = pretrain_embeddings(pixels, n, shape, o);
    }
    py::array_t<float> out({e.shape()[0], e.shape()[1]});
    std::memcpy(out.mutable_data(), e.data(), static_cast<std::size_t>(e.shape()[0] * e.shape()[1]) * sizeof(float));
    return out;
  });

  m.def("config", [](const std::string& dir) {
    const Project p(dir, 5, false);
    const ProjectConfig& c = p.config();
    py::dict d;
    d["dataset"] = c.dataset;
    d["model"] = c.model;
    d["strategy"] = c.strategy;
    d["committee"] = c.committee;
    d["balance_target"] = c.balance_target;
    d["batchbald_restart"] = c.batchbald_restart;
    d["seed_strategy"] = c.seed_strategy;
    d["seed_embeddings"] = c.seed_embeddings;
    d["classes"] = c.classes;
    d["seed"] = c.seed;
    d["device"] = c.device;
    d["threads"] = c.threads;
    d["pool_size"] = c.pool_size;
    d["has_manifest"] = c.has_manifest;
    return d;
  });

  m.def("next", [](const std::string& dir, std::int64_t k, bool replace_pending, bool retrain, double wait,
                   py::object log) {
    NextOptions o;
    o.k = k;
    o.replace_pending = replace_pending;
    o.retrain = retrain;
    NextResult r;
    {
      py::gil_scoped_release free;
      Project p(dir, 0);
      r = p.next(o, [&log](const std::string& line) {
        if (log.is_none()) return;
        py::gil_scoped_acquire hold;
        log(line);
      }, wait);
    }
    py::dict d = batch_dict(r.batch);
    d["csv"] = r.csv_path;
    d["labelstudio"] = r.labelstudio_path;
    d["retrained"] = r.retrained;
    d["cold_start"] = r.cold_start;
    d["dropped"] = r.dropped;
    return d;
  });

  m.def("label", [](const std::string& dir, const std::string& file, bool allow_relabel, double wait) {
    ImportSummary s;
    std::size_t total = 0;
    {
      py::gil_scoped_release free;
      Project p(dir, 0);
      s = p.label(file, allow_relabel, wait);
      total = p.labels().size();
    }
    py::dict d;
    d["rows"] = s.rows;
    d["added"] = s.added;
    d["relabeled"] = s.relabeled;
    d["unchanged"] = s.unchanged;
    d["skipped"] = s.skipped;
    d["record"] = s.seq;
    d["saved"] = s.seq > 0;
    d["labels"] = total;
    d["torn"] = s.torn;
    return d;
  });

  m.def("status", [](const std::string& dir) {
    const Project p(dir);
    const ProjectStatus s = p.status();
    py::dict d, per_class;
    const auto& classes = p.config().classes;
    for (std::size_t c = 0; c < classes.size() && c < s.per_class.size(); ++c) per_class[py::str(classes[c])] = s.per_class[c];
    d["pool_size"] = s.pool_size;
    d["labeled"] = s.labeled;
    d["per_class"] = per_class;
    d["batches"] = s.batches;
    d["models_trained"] = s.models_trained;
    d["open_batch"] = s.open_batch ? py::object(py::int_(*s.open_batch)) : py::object(py::none());
    d["pending"] = s.pending;
    d["model_current"] = s.model_current;
    d["model_labels"] = s.model_labels;
    d["val_accuracy"] = s.val_accuracy ? py::object(py::float_(*s.val_accuracy)) : py::object(py::none());
    d["val_balanced_accuracy"] =
        s.val_balanced_accuracy ? py::object(py::float_(*s.val_balanced_accuracy)) : py::object(py::none());
    d["torn_journal_tail"] = s.torn;
    return d;
  });

  m.def("batches", [](const std::string& dir) {
    const Project p(dir);
    py::list out;
    for (const BatchInfo& b : p.batches()) out.append(batch_dict(b));
    return out;
  });

  // The labels from the journal alone (as `quarry project export`): {index: class id}, classes.
  m.def("labels", [](const std::string& dir) {
    const Project p(dir, 5, true);
    return py::make_tuple(p.labels(), p.config().classes);
  });

  m.def("export_csv", [](const std::string& dir) { return Project(dir, 5, true).export_csv(); });
  m.def("export_npy", [](const std::string& dir, const std::string& path) { Project(dir, 5, true).export_npy(path); });
}
