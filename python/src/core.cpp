// quarry._core: the engine (quarry::engine) for Python. Arrays come in without a copy, through
// the buffer protocol (NumPy, memoryview, array.array) or a DLPack capsule (the Python layer,
// quarry/__init__.py, asks torch/CuPy/JAX tensors for one with `__dlpack__`); results go out as
// NumPy arrays that own the engine's vectors. Every engine call runs with the GIL released.
// The documented signatures are in quarry/__init__.py; this module is its implementation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "quarry/dlpack.hpp"
#include "quarry/quarry.hpp"

namespace py = pybind11;
using namespace quarry;

namespace {

// The engine's CPU threads, for every Python thread: OpenMP's setting is per calling thread, so
// each call applies it (0: OpenMP's default).
std::atomic<int> g_threads{0};
void apply_threads() {
  if (const int n = g_threads.load()) omp_set_num_threads(n);
}

// An array lent by Python for the length of one call: its view, and what keeps it readable.
struct Input {
  ArrayView view;
  std::unique_ptr<py::buffer_info> buffer;  // buffer protocol: released (with the GIL) after the call
  DLPackArray tensor;                       // DLPack: the producer's deleter runs after the call
};

DType dtype_of_format(const std::string& format, py::ssize_t itemsize, const std::string& name) {
  std::string f = format;
  if (!f.empty() && (f[0] == '<' || f[0] == '=' || f[0] == '@' || f[0] == '!' || f[0] == '>')) {
    QUARRY_USAGE_EXPECTS(f[0] != '>' && f[0] != '!', name, ": big-endian data (format '", format,
                         "') is not supported; convert it with .astype(native dtype)");
    f = f.substr(1);
  }
  if (f == "f") return DType::f32;
  if (f == "d") return DType::f64;
  if (f == "e") return DType::f16;
  if (f == "b") return DType::i8;
  if (f == "B" || f == "?") return DType::u8;
  if (f == "h") return DType::i16;
  if (f == "i" || ((f == "l" || f == "q") && itemsize == 4)) return DType::i32;
  if (f == "l" || f == "q") return DType::i64;
  QUARRY_USAGE_FAIL(name, ": unsupported element type (buffer format '", quote_input(format),
                    "'); expected float16, float32, float64 or an integer type");
}

// Anything with the buffer protocol, or a DLPack capsule ("dltensor"), as a view without a copy.
Input as_input(py::handle obj, const std::string& name) {
  Input in;
  if (PyCapsule_CheckExact(obj.ptr())) {
    QUARRY_USAGE_EXPECTS(PyCapsule_IsValid(obj.ptr(), "dltensor"), name,
                         ": a DLPack capsule that was already consumed (each __dlpack__() capsule is read once)");
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(obj.ptr(), "dltensor"));
    PyCapsule_SetName(obj.ptr(), "used_dltensor");  // the consumer owns it now (DLPack protocol)
    in.tensor = DLPackArray(managed, name);
    in.view = in.tensor.view();
    return in;
  }
  QUARRY_USAGE_EXPECTS(PyObject_CheckBuffer(obj.ptr()), name, ": expected an array (NumPy, a torch tensor, ",
                       "or anything with __dlpack__ or the buffer protocol), got ",
                       std::string(py::str(py::type::of(obj).attr("__name__"))));
  in.buffer = std::make_unique<py::buffer_info>(py::reinterpret_borrow<py::buffer>(obj).request());
  const py::buffer_info& b = *in.buffer;
  in.view.data = b.ptr;
  in.view.dtype = dtype_of_format(b.format, b.itemsize, name);
  QUARRY_USAGE_EXPECTS(static_cast<std::size_t>(b.itemsize) == dtype_size(in.view.dtype), name,
                       ": element size ", b.itemsize, " does not match its format '", b.format, "'");
  in.view.shape.assign(b.shape.begin(), b.shape.end());
  bool contiguous = true;
  std::int64_t expect = b.itemsize;
  for (int a = static_cast<int>(b.ndim) - 1; a >= 0; --a) {
    if (b.shape[a] != 1 && b.strides[a] != expect) contiguous = false;
    expect *= b.shape[a];
  }
  if (!contiguous) {
    for (py::ssize_t s : b.strides) {
      QUARRY_USAGE_EXPECTS(s >= 0 && s % b.itemsize == 0, name, ": strides ", s,
                           " (negative or not a multiple of the element size) are not supported; "
                           "pass a copy (numpy.ascontiguousarray)");
      in.view.strides.push_back(s / b.itemsize);
    }
  }
  return in;
}

std::optional<Input> as_optional_input(py::handle obj, const std::string& name) {
  if (obj.is_none()) return std::nullopt;
  return as_input(obj, name);
}

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* owned = new std::vector<T>(std::move(v));
  py::capsule free_it(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, {sizeof(T)}, owned->data(), free_it);
}

py::tuple selection_tuple(Selection&& s) {
  return py::make_tuple(to_numpy(std::move(s.index)), to_numpy(std::move(s.score)));
}

std::vector<std::int64_t> index_list(py::handle obj, const std::string& name) {
  std::vector<std::int64_t> out;
  if (obj.is_none()) return out;
  py::array given = py::array::ensure(obj);
  QUARRY_USAGE_EXPECTS(given, name, ": expected a sequence of integer indices");
  const char kind = given.dtype().kind();
  QUARRY_USAGE_EXPECTS(kind == 'i' || kind == 'u' || given.size() == 0, name,
                       ": expected integer indices, got dtype ", std::string(py::str(given.dtype())));
  QUARRY_USAGE_EXPECTS(given.ndim() <= 1, name, ": expected a flat sequence of indices, got ", given.ndim(),
                       " dimensions");
  auto arr = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(given);
  out.assign(arr.data(), arr.data() + arr.size());
  return out;
}

ScoreOptions score_options(bool logits, const std::string& device, std::uintptr_t stream, double tolerance,
                           const std::string& input_name) {
  ScoreOptions o;
  o.logits = logits;
  o.device = parse_device(device);
  o.stream = reinterpret_cast<void*>(stream);
  o.sum_tolerance = tolerance;
  o.input_name = input_name;
  return o;
}

bool is_power(const std::string& strategy) {
  QUARRY_USAGE_EXPECTS(strategy == "topk" || strategy == "power", "strategy '", quote_input(strategy),
                       "': expected 'topk' or 'power'");
  return strategy == "power";
}

SelectOptions select_options(std::int64_t k, const std::string& strategy, double beta, std::uint64_t seed,
                             py::handle exclude) {
  SelectOptions sel;
  sel.k = k;
  sel.power = is_power(strategy);
  sel.beta = beta;
  sel.seed = seed;
  sel.exclude = index_list(exclude, "exclude");
  return sel;
}

// An array that keeps a quarry::Array (a memory-mapped file or a heap buffer) alive.
py::array array_to_numpy(Array a) {
  const char* fmt = nullptr;
  switch (a.dtype()) {
    case DType::f16: fmt = "e"; break;
    case DType::bf16: QUARRY_USAGE_FAIL(a.source(), ": bfloat16 has no NumPy dtype");
    case DType::f32: fmt = "f"; break;
    case DType::f64: fmt = "d"; break;
    case DType::u8: fmt = "B"; break;
    case DType::i8: fmt = "b"; break;
    case DType::i16: fmt = "h"; break;
    case DType::i32: fmt = "i"; break;
    case DType::i64: fmt = "q"; break;
  }
  std::vector<py::ssize_t> shape(a.shape().begin(), a.shape().end());
  auto* owned = new Array(std::move(a));
  py::capsule free_it(owned, [](void* p) { delete static_cast<Array*>(p); });
  py::array out(py::dtype(fmt), shape, {}, owned->data(), free_it);
  py::detail::array_proxy(out.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;  // mapped files are read-only
  return out;
}


// ------------------------------------------------------------------ dense outputs

// Whether this engine's DenseOptions says where dense scores run (a `device` field, and a
// `stream` beside it): where it does, the Python `device` argument is passed through; where it
// does not, dense scores run on the CPU and a CUDA request is a usage error.
template <class O, class = void>
struct has_device_field : std::false_type {};
template <class O>
struct has_device_field<O, std::void_t<decltype(std::declval<O&>().device)>> : std::true_type {};
template <class O, class = void>
struct has_stream_field : std::false_type {};
template <class O>
struct has_stream_field<O, std::void_t<decltype(std::declval<O&>().stream)>> : std::true_type {};
constexpr bool kDenseDevices = has_device_field<DenseOptions>::value;

template <class O>
void set_dense_device(O& o, const std::string& text, std::uintptr_t stream) {
  const DeviceSpec d = parse_device(text);
  if constexpr (has_device_field<O>::value) {
    using Field = decltype((o.device));
    if constexpr (std::is_assignable_v<Field, DeviceSpec>) {
      o.device = d;
    } else {
      o.device = text;
    }
    if constexpr (has_stream_field<O>::value) o.stream = reinterpret_cast<void*>(stream);
  } else {
    (void)stream;
    QUARRY_USAGE_EXPECTS(d.kind != DeviceKind::cuda, "device '", quote_input(text),
                         "': dense outputs are scored on the CPU in this version; use device='cpu' ",
                         "(a CUDA tensor: pass x.cpu())");
  }
}

// The options every dense call shares.
DenseOptions dense_options(const std::string& reduce, bool logits, bool committee, bool channels_last, int background,
                           const std::vector<float>& class_weights, int slice_axis, double tolerance,
                           const std::string& device, std::uintptr_t stream) {
  DenseOptions o;
  o.reduce = parse_reduction(reduce);
  o.logits = logits;
  o.committee = committee;
  o.channels_last = channels_last;
  QUARRY_USAGE_EXPECTS(background >= 0, "background must be a class index >= 0, got ", background);
  o.background = background;
  o.class_weights = class_weights;
  QUARRY_USAGE_EXPECTS(slice_axis >= -1, "slices must be a spatial axis >= 0 (None: one score per case), got ",
                       slice_axis);
  o.slice_axis = slice_axis;
  o.sum_tolerance = tolerance;
  set_dense_device(o, device, stream);
  return o;
}

// A float32 NumPy array of `shape` that owns its (zeroed) memory.
py::array_t<float> float_array(const std::vector<std::int64_t>& shape) {
  std::vector<py::ssize_t> s(shape.begin(), shape.end());
  py::array_t<float> a(s);
  if (a.size() > 0) std::memset(a.mutable_data(), 0, static_cast<std::size_t>(a.size()) * sizeof(float));
  return a;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "quarry's engine (implementation module; use the quarry package)";
  static py::exception<Error> error(m, "Error");
  // A bad argument: a quarry.Error and a ValueError.
  static py::exception<UsageError> usage_error(m, "UsageError", py::make_tuple(error, py::handle(PyExc_ValueError)));
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UsageError& e) {
      PyErr_SetString(usage_error.ptr(), e.what());
    } catch (const Error& e) {
      PyErr_SetString(error.ptr(), e.what());
    }
  });

  m.def("acquisitions", [] {
    std::vector<std::string> names;
    for (Acquisition a : all_acquisitions()) names.push_back(acquisition_name(a));
    return names;
  });
  m.def("diversity_strategies", [] {
    std::vector<std::string> names;
    for (DiversityStrategy s : all_diversity_strategies()) names.push_back(diversity_strategy_name(s));
    return names;
  });
  m.def("needs_committee", [](const std::string& a) { return acquisition_needs_committee(parse_acquisition(a)); });
  m.def("needs_embeddings", [](const std::string& a) { return acquisition_needs_embeddings(parse_acquisition(a)); });
  m.def("build_info", [] { return build_info_string(); });
  m.def("cuda_device_count", [] { return cuda_device_count(); });
  m.def("set_threads", [](int n) {
    QUARRY_USAGE_EXPECTS(n >= 0 && n <= 4096, "threads must be between 0 (all cores) and 4096, got ", n);
    g_threads = n > 0 ? n : omp_get_num_procs();
    omp_set_num_threads(g_threads);
  });

  // What the engine sees of an array: for the zero-copy tests and for debugging.
  m.def("view_info", [](py::handle x) {
    Input in = as_input(x, "x");
    py::dict d;
    d["data"] = reinterpret_cast<std::uintptr_t>(in.view.data);
    d["dtype"] = dtype_name(in.view.dtype);
    d["shape"] = in.view.shape;
    d["strides"] = in.view.strides;
    d["contiguous"] = in.view.contiguous();
    d["location"] = location_string(in.view.location);
    return d;
  });

  m.def("score", [](py::handle x, const std::string& acquisition, bool logits, py::handle embeddings,
                    const std::string& device, py::handle out, std::uintptr_t stream, double tolerance) {
    const Acquisition acq = parse_acquisition(acquisition);
    Input in = as_input(x, "x");
    std::optional<Input> emb = as_optional_input(embeddings, "embeddings");
    const ScoreOptions o = score_options(logits, device, stream, tolerance, "x");
    const std::int64_t n = pool_size(in.view);
    if (!out.is_none()) {  // the caller's [N] float32 output, where the input is (a CUDA tensor)
      Input dst = as_input(out, "out");
      QUARRY_USAGE_EXPECTS(dst.view.dtype == DType::f32 && dst.view.rank() == 1 && dst.view.shape[0] == n &&
                               dst.view.contiguous(), "out: expected a contiguous float32 vector of ", n, " scores");
      {
        py::gil_scoped_release free;
      apply_threads();
        score(in.view, acq, const_cast<float*>(dst.view.as<float>()), o, emb ? &emb->view : nullptr);
      }
      return py::object(py::none());
    }
    QUARRY_USAGE_EXPECTS(!in.view.on_cuda(), "x is in CUDA memory: give `out` on its device");
    py::array_t<float> result(static_cast<py::ssize_t>(std::max<std::int64_t>(n, 0)));
    float* dst = result.mutable_data();
    {
      py::gil_scoped_release free;
      apply_threads();
      score(in.view, acq, dst, o, emb ? &emb->view : nullptr);
    }
    return py::object(std::move(result));
  });

  m.def("select", [](py::handle scores, std::int64_t k, py::handle exclude, const std::string& strategy,
                     double beta, std::uint64_t seed, const std::string& device, std::uintptr_t stream) {
    Input in = as_input(scores, "scores");
    const std::vector<std::int64_t> ex = index_list(exclude, "exclude");
    const bool power = is_power(strategy);
    const DeviceSpec dev = parse_device(device);
    Selection s;
    {
      py::gil_scoped_release free;
      apply_threads();
      s = power ? select_power(in.view, k, beta, seed, ex, dev, reinterpret_cast<void*>(stream))
                : select_topk(in.view, k, ex, dev, reinterpret_cast<void*>(stream));
    }
    return selection_tuple(std::move(s));
  });

  m.def("score_and_select", [](py::handle x, const std::string& acquisition, std::int64_t k, bool logits,
                               py::handle embeddings, py::handle exclude, const std::string& strategy,
                               double beta, std::uint64_t seed, const std::string& device,
                               std::uintptr_t stream, double tolerance) {
    const Acquisition acq = parse_acquisition(acquisition);
    Input in = as_input(x, "x");
    std::optional<Input> emb = as_optional_input(embeddings, "embeddings");
    const SelectOptions sel = select_options(k, strategy, beta, seed, exclude);
    const ScoreOptions o = score_options(logits, device, stream, tolerance, "x");
    Selection s;
    {
      py::gil_scoped_release free;
      apply_threads();
      s = score_and_select(in.view, acq, o, sel, emb ? &emb->view : nullptr);
    }
    return selection_tuple(std::move(s));
  });

  m.def("select_diverse", [](py::handle embeddings, py::handle probs, const std::string& strategy, std::int64_t k,
                             py::handle exclude, std::int64_t candidates, const std::string& acquisition,
                             std::uint64_t seed, bool logits, std::int64_t clusters, int kmeans_iterations,
                             const std::string& device, double tolerance, int neighbours, double radius,
                             double purity) {
    const DiversityStrategy st = parse_diversity_strategy(strategy);
    Input emb = as_input(embeddings, "embeddings");
    std::optional<Input> out = as_optional_input(probs, "probs");
    DiversityOptions o;
    o.k = k;
    o.exclude = index_list(exclude, "exclude");
    o.candidates = candidates;
    o.acquisition = parse_acquisition(acquisition);
    o.seed = seed;
    o.logits = logits;
    o.clusters = clusters;
    o.kmeans_iterations = kmeans_iterations;
    o.neighbours = neighbours;
    o.radius = radius;
    o.purity = purity;
    o.device = parse_device(device);
    o.sum_tolerance = tolerance;
    o.input_name = "probs";
    Selection s;
    {
      py::gil_scoped_release free;
      apply_threads();
      s = select_diverse(st, emb.view, out ? &out->view : nullptr, o);
    }
    return selection_tuple(std::move(s));
  });

  m.def("kmeans", [](py::handle embeddings, std::int64_t clusters, int iterations, std::uint64_t seed,
                     const std::string& device) {
    Input emb = as_input(embeddings, "embeddings");
    KMeansOptions o;
    o.clusters = clusters;
    o.iterations = iterations;
    o.seed = seed;
    o.device = parse_device(device);
    KMeansResult r;
    {
      py::gil_scoped_release free;
      apply_threads();
      r = kmeans(emb.view, o);
    }
    py::array_t<float> centroids = to_numpy(std::move(r.centroids));
    return py::make_tuple(to_numpy(std::move(r.labels)), centroids.reshape({r.clusters, r.dim}), r.iterations,
                          r.converged);
  });

  m.def("stream_select", [](const std::string& input, const std::string& acquisition, std::int64_t k,
                            const std::string& embeddings, py::handle exclude, const std::string& strategy,
                            double beta, std::uint64_t seed, std::int64_t memory_budget, bool logits,
                            const std::string& device, double tolerance) {
    const Acquisition acq = parse_acquisition(acquisition);
    const SelectOptions sel = select_options(k, strategy, beta, seed, exclude);
    StreamOptions so;
    QUARRY_USAGE_EXPECTS(memory_budget >= 0, "memory_budget must be >= 0 bytes, got ", memory_budget);
    so.memory_budget = memory_budget;
    Selection s;
    py::dict stats;
    StreamStats st;
    {
      py::gil_scoped_release free;
      apply_threads();
      const PoolFiles pool = PoolFiles::open(input);
      std::optional<PoolFiles> emb;
      if (!embeddings.empty()) emb = PoolFiles::open(embeddings);
      ScoreOptions o = score_options(logits, device, 0, tolerance, input);
      static Cluster cluster;  // one process: no MPI call unless an MPI launcher started Python
      o.device = rank_device(cluster, device);
      so = rank_stream(cluster, so, o.device, pool.n());
      s = distributed_score_select(cluster, pool, acq, o, sel, emb ? &*emb : nullptr, so, &st);
    }
    stats["chunks"] = st.chunks;
    stats["rows_per_chunk"] = st.rows_per_chunk;
    stats["budget"] = st.budget;
    py::tuple sel_tuple = selection_tuple(std::move(s));
    return py::make_tuple(sel_tuple[0], sel_tuple[1], stats);
  });

  // Dense outputs (segmentation maps, volumes): quarry/dense.hpp.
  m.attr("dense_devices") = py::bool_(kDenseDevices);

  m.def("score_dense", [](py::handle x, const std::string& acquisition, const std::string& reduce, bool logits,
                          bool committee, bool channels_last, int background, const std::vector<float>& class_weights,
                          py::handle ignore, int slice_axis, bool voxel_map, double tolerance, const std::string& device,
                          std::uintptr_t stream, const std::vector<std::int64_t>& patch) {
    const Acquisition acq = parse_acquisition(acquisition);
    DenseOptions o = dense_options(reduce, logits, committee, channels_last, background, class_weights, slice_axis,
                                   tolerance, device, stream);
    o.patch = patch;
    o.input_name = "x";
    o.ignore_name = "ignore";
    Input in = as_input(x, "x");
    QUARRY_USAGE_EXPECTS(!in.view.on_cuda(), "x is in CUDA memory: dense outputs are read from host memory; pass x.cpu()",
                         kDenseDevices ? " (device='cuda' scores them on the GPU, a group of cases at a time)" : "");
    std::optional<Input> mask = as_optional_input(ignore, "ignore");
    if (mask) o.ignore = &mask->view;
    const bool comm = committee || acquisition_needs_committee(acq);
    if (!acquisition_is_dense(acq) || in.view.rank() < (comm ? 4 : 3)) {
      py::gil_scoped_release free;
      score_dense(in.view, acq, o);  // raises the engine's error (not per voxel; a rank too low)
    }
    const DenseLayout l = dense_layout(in.view, comm, channels_last, "x");
    py::object map = py::none();
    if (voxel_map) {
      std::vector<std::int64_t> shape = {l.cases};
      shape.insert(shape.end(), l.spatial.begin(), l.spatial.end());
      py::array_t<float> a = float_array(shape);
      o.voxel_map = a.mutable_data();
      map = std::move(a);
    }
    std::vector<float> s;
    {
      py::gil_scoped_release free;
      apply_threads();
      s = score_dense(in.view, acq, o);
    }
    py::array scores = to_numpy(std::move(s));
    if (slice_axis >= 0 || !patch.empty())
      scores = scores.reshape({static_cast<py::ssize_t>(l.cases), static_cast<py::ssize_t>(l.regions(slice_axis, patch))});
    return py::make_tuple(scores, map);
  });

  // Detections and multi-label outputs (docs/detections.md).
  const auto contiguous = [](Input& in, Array& copy, const std::string& name) -> const ArrayView& {
    if (in.view.contiguous()) return in.view;
    copy = contiguous_copy(in.view, name);
    in.view = copy.view();
    return in.view;
  };
  m.def("score_boxes", [contiguous](py::handle offsets, py::handle probs, py::handle objectness,
                                    const std::string& acquisition, const std::string& reduce, bool logits,
                                    double tolerance, double empty_score) {
    const Acquisition acq = parse_acquisition(acquisition);
    BoxOptions o;
    o.reduce = parse_reduction(reduce).how;
    o.logits = logits;
    o.sum_tolerance = tolerance;
    QUARRY_USAGE_EXPECTS(std::isfinite(empty_score), "empty_score must be a finite number, got ", empty_score);
    o.empty_score = static_cast<float>(empty_score);
    o.input_name = "detections";
    Input off = as_input(offsets, "offsets"), pr = as_input(probs, "probs");
    std::optional<Input> obj = as_optional_input(objectness, "objectness");
    Array c1, c2, c3;
    const ArrayView& ov = contiguous(off, c1, "offsets");
    const ArrayView& pv = contiguous(pr, c2, "probs");
    const ArrayView* bv = obj ? &contiguous(*obj, c3, "objectness") : nullptr;
    for (const ArrayView* v : {&ov, &pv, bv})
      QUARRY_USAGE_EXPECTS(!v || !v->on_cuda(), "detections are read from host memory; pass .cpu() tensors");
    std::vector<float> s;
    {
      py::gil_scoped_release free;
      apply_threads();
      s = score_boxes(ov, pv, bv, acq, o);
    }
    return to_numpy(std::move(s));
  });
  m.def("score_multilabel", [contiguous](py::handle probs, const std::string& acquisition, const std::string& reduce,
                                         bool logits) {
    const Acquisition acq = parse_acquisition(acquisition);
    MultilabelOptions o;
    o.reduce = parse_reduction(reduce).how;
    o.logits = logits;
    o.input_name = "probs";
    Input pr = as_input(probs, "probs");
    Array copy;
    const ArrayView& pv = contiguous(pr, copy, "probs");
    QUARRY_USAGE_EXPECTS(!pv.on_cuda(), "multi-label outputs are read from host memory; pass probs.cpu()");
    std::vector<float> s;
    {
      py::gil_scoped_release free;
      apply_threads();
      s = score_multilabel(pv, acq, o);
    }
    return to_numpy(std::move(s));
  });

  m.def("select_batchbald", [contiguous](py::handle x, std::int64_t k, py::handle exclude, std::int64_t samples,
                                         std::uint64_t seed, bool logits, double tolerance,
                                         const std::string& device, double restart) {
    Input in = as_input(x, "x");
    Array copy;
    const ArrayView& v = contiguous(in, copy, "x");
    QUARRY_USAGE_EXPECTS(!v.on_cuda(), "batchbald reads host memory; pass x.cpu()");
    const std::vector<std::int64_t> ex = index_list(exclude, "exclude");
    BatchBaldOptions o;
    o.samples = samples, o.seed = seed, o.logits = logits, o.sum_tolerance = tolerance, o.restart = restart;
    o.input_name = "x";
    o.device = parse_device(device);
    Selection sel;
    {
      py::gil_scoped_release free;
      apply_threads();
      sel = select_batchbald(v, k, ex, o);
    }
    return py::make_tuple(to_numpy(std::move(sel.index)), to_numpy(std::move(sel.score)));
  });

  m.def("patch_origin", [](const std::vector<std::int64_t>& grid, const std::vector<std::int64_t>& patch, std::int64_t r) {
    QUARRY_USAGE_EXPECTS(!patch.empty() && (patch.size() == 1 || patch.size() == grid.size()),
                         "patch_origin: one patch size, or one per axis of the grid");
    return patch_origin(grid, patch, r);
  });

  m.def("select_slices", [](py::array_t<float, py::array::c_style | py::array::forcecast> scores, std::int64_t k,
                            std::int64_t per_case, py::handle exclude) {
    QUARRY_USAGE_EXPECTS(scores.ndim() == 2, "scores: expected slice scores [N, S] (cases x slices), got ",
                         scores.ndim(), " dimensions");
    const std::int64_t S = scores.shape(1);
    std::vector<float> v(scores.data(), scores.data() + scores.size());
    const std::vector<std::int64_t> ex = index_list(exclude, "exclude");
    SliceSelection sel;
    {
      py::gil_scoped_release free;
      sel = select_slices(v, S, k, per_case, ex);
    }
    return py::make_tuple(to_numpy(std::move(sel.case_index)), to_numpy(std::move(sel.slice)),
                          to_numpy(std::move(sel.score)));
  });

  m.def("score_dense_files", [](const std::string& spec, const std::string& acquisition, const std::string& reduce,
                                const std::string& ignore, std::int64_t memory_budget, bool logits, bool committee,
                                bool channels_last, int background, const std::vector<float>& class_weights,
                                int slice_axis, bool voxel_map, double tolerance, const std::string& device,
                                const std::vector<std::int64_t>& patch) {
    const Acquisition acq = parse_acquisition(acquisition);
    DenseOptions o = dense_options(reduce, logits, committee, channels_last, background, class_weights, slice_axis,
                                   tolerance, device, 0);
    o.patch = patch;
    o.input_name = spec;
    QUARRY_USAGE_EXPECTS(memory_budget >= 0, "memory_budget must be >= 0 bytes, got ", memory_budget);
    const bool comm = committee || acquisition_needs_committee(acq);
    DenseFiles files, masks;
    DenseScores r;
    std::vector<float> map;
    std::vector<std::int64_t> map_shape;
    std::vector<std::string> names;
    {
      py::gil_scoped_release free;
      apply_threads();
      files = DenseFiles::open(spec, comm);
      if (!ignore.empty()) masks = DenseFiles::open(ignore, false, true);
      if (voxel_map) {
        QUARRY_USAGE_EXPECTS(files.one_array(), spec, ": voxel_map needs one array [N, C, spatial...] (.npy or ",
                             "FILE.npz:MEMBER); score case files one at a time (or with quarry.score_dense) for theirs");
        const DenseLayout l = dense_layout(files.read(0, 0), comm, channels_last, spec);
        map_shape = {files.cases()};
        map_shape.insert(map_shape.end(), l.spatial.begin(), l.spatial.end());
        map.assign(static_cast<std::size_t>(files.cases() * l.voxels), 0.0f);
        o.voxel_map = map.data();
      }
      r = score_dense_files(files, acq, o, memory_budget, ignore.empty() ? nullptr : &masks);
      names.reserve(static_cast<std::size_t>(files.cases()));
      for (std::int64_t i = 0; i < files.cases(); ++i) names.push_back(files.case_name(i));
    }
    py::object map_out = py::none();
    if (voxel_map) {
      std::vector<py::ssize_t> shape(map_shape.begin(), map_shape.end());
      map_out = to_numpy(std::move(map)).reshape(shape);
    }
    return py::make_tuple(to_numpy(std::move(r.score)), to_numpy(std::move(r.case_of)), to_numpy(std::move(r.slice)),
                          to_numpy(std::move(r.slices)), names, map_out);
  });

  m.def("load", [](const std::string& spec) {
    Array a;
    {
      py::gil_scoped_release free;
      apply_threads();
      a = read_array(spec);
    }
    return array_to_numpy(std::move(a));
  });
}
