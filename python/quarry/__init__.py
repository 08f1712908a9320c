"""quarry: active-learning acquisition for pools of millions of samples, from Python.

Every function takes NumPy arrays, PyTorch tensors (CPU or CUDA) and anything else with
``__dlpack__`` or the buffer protocol, and reads them in place: no copy of the pool is made
(a non-contiguous array is copied once; a CUDA tensor is scored on its own GPU, and only the k
picks reach the host). Results come back in the input's kind: NumPy in, NumPy out; a torch
tensor in, a torch tensor out on the same device. The work runs with the GIL released.

    import quarry
    scores = quarry.score(probs, "entropy")                  # [N] float32
    pick = quarry.score_and_select(logits, "margin", k=100, logits=True)
    pick.index, pick.score                                   # best first

Errors are ``quarry.Error`` (bad data: the message names the array or file, the row and what
was expected) and ``quarry.UsageError`` (a bad argument; also a ``ValueError``).

The acquisition scores and selection rules are defined in docs/acquisition.md; the command
line (``quarry score``, ``quarry select``) computes exactly the same numbers.
"""
from __future__ import annotations

import operator
import os
from typing import Any, NamedTuple, Optional, Sequence

import numpy as _np

from . import _core
from ._core import Error, UsageError

__all__ = [
    "Error", "UsageError", "Selection", "KMeans", "score", "select", "score_and_select",
    "select_diverse", "kmeans", "stream_select", "load", "acquisitions", "diversity_strategies",
    "set_threads", "build_info", "Project", "Query", "modal",
]


class Selection(NamedTuple):
    """The selected samples, best first: ``index`` (int64 pool indices) and ``score``
    (float32, the acquisition score of each pick; for diversity strategies the value the
    strategy documents, e.g. k-center's covering radius)."""
    index: Any
    score: Any


class KMeans(NamedTuple):
    """k-means result: ``labels`` [N] int32, ``centroids`` [clusters, D] float32, the number of
    Lloyd ``iterations`` run and whether the last one changed no assignment (``converged``)."""
    labels: Any
    centroids: Any
    iterations: int
    converged: bool


# ------------------------------------------------------------------ arrays in and out

def _torch_module(x):
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch
        if isinstance(x, torch.Tensor):
            return torch
    return None


def _arg(x, name: str):
    """What _core reads for `x`, without a copy where it can: (object, torch or None, stream)."""
    if x is None:
        return None, None, 0
    if isinstance(x, _np.ndarray):
        if x.dtype.kind not in "fiub" or not x.dtype.isnative:
            if x.dtype.kind == "f" or x.dtype.kind in "iub":
                x = x.astype(x.dtype.newbyteorder("="))  # big-endian: one copy in native order
            else:
                raise UsageError(f"{name}: expected a float or integer array, got dtype {x.dtype}")
        if any(st < 0 or st % x.itemsize for st in x.strides):
            x = _np.ascontiguousarray(x)  # negative or unaligned strides: one contiguous copy
        return x, None, 0
    torch = _torch_module(x)
    if torch is not None:
        if x.requires_grad:
            x = x.detach()
        if x.is_cuda:
            if not x.is_contiguous():
                x = x.contiguous()  # strided CUDA tensors: one copy on the device
            stream = torch.cuda.current_stream(x.device).cuda_stream
            return x.__dlpack__(stream=stream), torch, stream
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        return x.__dlpack__(), torch, 0
    if hasattr(x, "__dlpack__"):
        return x.__dlpack__(), None, 0
    try:
        memoryview(x)
        return x, None, 0
    except TypeError:
        pass
    arr = _np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise UsageError(f"{name}: expected an array of numbers, got {type(x).__name__}")
    return arr, None, 0


def _like(values, torch, template):
    """A NumPy result as the input's kind: a torch tensor on the template's device."""
    if torch is None:
        return values
    t = torch.from_numpy(values)
    return t.to(template.device) if template is not None and template.device.type != "cpu" else t


def _selection(result, torch, template) -> Selection:
    index, score = result[0], result[1]
    return Selection(_like(index, torch, template), _like(score, torch, template))


def _exclude(exclude):
    if exclude is None:
        return None
    torch = _torch_module(exclude)
    if torch is not None:
        exclude = exclude.detach().cpu().numpy()
    return exclude


def _tolerance(tolerance: Optional[float]) -> float:
    if tolerance is None:
        return -1.0
    t = float(tolerance)
    if not (t >= 0 and t < float("inf")):
        raise UsageError(f"tolerance must be a finite number >= 0 (None: the default), got {tolerance!r}")
    return t


def _int(value, name: str, lo: int = 0, hi: int = 2**62) -> int:
    """An integer argument: ints and NumPy integers only (no silent truncation of 2.9 or True)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    v = operator.index(value)
    if not lo <= v <= hi:
        raise UsageError(f"{name} must be between {lo} and {hi}, got {v}")
    return v


# ------------------------------------------------------------------ scores and selection

def score(x, acquisition: str = "entropy", *, logits: bool = False, embeddings=None,
          device: str = "auto", tolerance: Optional[float] = None):
    """Score every sample of a pool (as ``quarry score``).

    x: model outputs, probabilities or logits: [N, C], or a committee [M, N, C] (ensemble
        members or MC-dropout samples); float32, float16, bfloat16 or float64.
    acquisition: least-confidence, margin, ratio, entropy, consensus-entropy, bald,
        vote-entropy, kl-max, variation-ratio, egl, badge-norm (committee scores need an
        [M, N, C] input; egl and badge-norm need ``embeddings``).
    logits: x holds logits (a stable softmax is taken in the same pass).
    embeddings: penultimate-layer embeddings [N, D] (egl, badge-norm).
    device: auto, cpu, cuda or cuda:N. A CUDA tensor is scored on its own device.
    tolerance: allowed |row sum - 1| of probabilities (None: 1e-3, or 1e-2 for float16).

    Returns N float32 scores, larger = more informative: a NumPy array for NumPy input, a torch
    tensor on x's device for a torch tensor. A row with NaN, Inf or a negative probability,
    or probabilities that do not sum to 1, is a quarry.Error naming the row.
    """
    src, torch, stream = _arg(x, "x")
    emb, _, _ = _arg(embeddings, "embeddings")
    if torch is not None and x.is_cuda:
        n = x.shape[1] if x.dim() == 3 else x.shape[0] if x.dim() >= 1 else 0
        out = torch.empty(n, dtype=torch.float32, device=x.device)
        _core.score(src, acquisition, logits, emb, device, out.__dlpack__(stream=stream), stream,
                    _tolerance(tolerance))
        return out
    result = _core.score(src, acquisition, logits, emb, device, None, 0, _tolerance(tolerance))
    return _like(result, torch, None)


def select(scores, k: int, *, exclude=None, strategy: str = "topk", beta: float = 1.0,
           seed: int = 0, device: str = "auto") -> Selection:
    """Select the k samples to label from their scores (as ``quarry select --scores``).

    scores: [N] scores (from :func:`score`, or any other; float64 and float16 are converted to
        float32 once).
    k: number of samples to select.
    exclude: already labeled indices, never selected.
    strategy: topk (the k highest scores; ties to the lower index) or power (sample k without
        replacement with P ~ score^beta, Kirsch et al. 2023; the same seed gives the same
        selection on every device).
    beta: exponent of power sampling.  seed: seed of power sampling.
    device: auto, cpu, cuda or cuda:N (CUDA scores are selected on their device).

    Returns a Selection (index, score), best first, in the input's kind. NaN scores, k larger
    than the number of selectable samples, or an excluded index outside the pool are errors.
    """
    torch = _torch_module(scores)
    if torch is not None and scores.is_floating_point() and scores.dtype != torch.float32:
        scores = scores.to(torch.float32)  # float64/float16 scores: converted once
    elif isinstance(scores, _np.ndarray) and scores.dtype.kind == "f" and scores.dtype != _np.float32:
        scores = scores.astype(_np.float32)
    src, torch, stream = _arg(scores, "scores")
    result = _core.select(src, _int(k, "k"), _exclude(exclude), strategy, float(beta), _int(seed, "seed", 0, 2**64 - 1),
                          device, stream)
    return _selection(result, torch, scores if torch is not None else None)


def score_and_select(x, acquisition: str = "entropy", k: int = 1, *, logits: bool = False,
                     embeddings=None, exclude=None, strategy: str = "topk", beta: float = 1.0,
                     seed: int = 0, device: str = "auto", tolerance: Optional[float] = None) -> Selection:
    """Score the pool and select k samples in one pass (as ``quarry select --input``).

    The arguments are those of :func:`score` and :func:`select`. On CUDA the scores never leave
    the device: only the k picks reach the host. Same result as ``select(score(x, ...), k, ...)``.
    """
    src, torch, stream = _arg(x, "x")
    emb, _, _ = _arg(embeddings, "embeddings")
    result = _core.score_and_select(src, acquisition, _int(k, "k"), logits, emb, _exclude(exclude), strategy,
                                    float(beta), _int(seed, "seed", 0, 2**64 - 1), device, stream, _tolerance(tolerance))
    return _selection(result, torch, x if torch is not None else None)


def select_diverse(embeddings, probs=None, strategy: str = "badge", k: int = 1, *, exclude=None,
                   candidates: int = 0, acquisition: str = "margin", seed: int = 0,
                   logits: bool = False, clusters: int = 0, kmeans_iterations: int = 10,
                   device: str = "auto", tolerance: Optional[float] = None) -> Selection:
    """Select a diverse batch (as ``quarry select --strategy badge|kcenter|...``).

    embeddings: [N, D] penultimate-layer embeddings.
    probs: model outputs [N, C] (probabilities, or logits with ``logits=True``); needed by all
        but kcenter; cluster-margin and uncertain-kcenter also take a committee [M, N, C].
    strategy: badge (k-means++ over gradient embeddings, Ash et al. 2020), kcenter (core-set
        greedy, Sener and Savarese 2018; the excluded samples are the initial centres),
        cluster-margin (Citovsky et al. 2021), uncertain-kcenter (kcenter among the most
        uncertain ``candidates`` by ``acquisition``).
    candidates: cluster-margin, uncertain-kcenter: choose among this many most uncertain
        samples (0: 10 k).  clusters: cluster-margin's k-means clusters (0: k).
    seed: badge's D^2 draws and cluster-margin's k-means (same seed, same selection).

    Arrays in CUDA memory are copied to the host once and the strategy runs on their GPU.
    Returns a Selection in pick order, in the embeddings' kind.
    """
    emb, torch, _ = _arg(embeddings, "embeddings")
    out, _, _ = _arg(probs, "probs")
    result = _core.select_diverse(emb, out, strategy, _int(k, "k"), _exclude(exclude), _int(candidates, "candidates"),
                                  acquisition, _int(seed, "seed", 0, 2**64 - 1), logits, _int(clusters, "clusters"),
                                  _int(kmeans_iterations, "kmeans_iterations", 1, 1 << 20), device,
                                  _tolerance(tolerance))
    return _selection(result, torch, embeddings if torch is not None else None)


def kmeans(embeddings, clusters: int, *, iterations: int = 20, seed: int = 0, device: str = "auto") -> KMeans:
    """k-means over embeddings [N, D]: k-means++ seeding, then Lloyd iterations; deterministic
    for a seed on any thread count and device. Returns KMeans(labels, centroids, iterations,
    converged) as NumPy arrays."""
    emb, _, _ = _arg(embeddings, "embeddings")
    labels, centroids, its, converged = _core.kmeans(emb, _int(clusters, "clusters"),
                                                     _int(iterations, "iterations", 1, 1 << 20),
                                                     _int(seed, "seed", 0, 2**64 - 1), device)
    return KMeans(labels, centroids, its, converged)


def _spec(files) -> str:
    if files is None:
        return ""
    if isinstance(files, (str, os.PathLike)):
        return os.fspath(files)
    paths = [os.fspath(f) for f in files]
    for f in paths:
        if "," in f:
            raise UsageError(f"{f}: a file in a list may not contain a comma (rename it, or pass a glob)")
    return ",".join(paths)


def stream_select(files, acquisition: str = "entropy", k: int = 1, *, embeddings=None, exclude=None,
                  strategy: str = "topk", beta: float = 1.0, seed: int = 0,
                  memory_budget: Optional[int] = None, logits: bool = False, device: str = "auto",
                  tolerance: Optional[float] = None, stats: Optional[dict] = None) -> Selection:
    """Score and select over a pool in files, chunk by chunk under a memory budget, with the same
    selection as in memory (as ``quarry select --input 'pool-*.npy'``).

    files: one file ("pool.npy", "outputs.npz:probs"), a glob ("pool-*.npy": shards concatenated
        along N in name order), or a list of files.
    embeddings: the embeddings' files, as ``files`` (egl, badge-norm).
    memory_budget: bytes the streamed pool may occupy at once (None: half the free GPU memory,
        or a quarter of the available host memory).
    stats: a dict that receives how the pool was cut (chunks, rows_per_chunk, budget).
    The other arguments are those of :func:`score_and_select`. Returns NumPy arrays.
    Under an MPI launcher (mpirun), every rank scores its shard and rank 0 gets the selection.
    """
    index, score_, cut = _core.stream_select(_spec(files), acquisition, _int(k, "k"), _spec(embeddings),
                                             _exclude(exclude), strategy, float(beta), _int(seed, "seed", 0, 2**64 - 1),
                                             _int(memory_budget or 0, "memory_budget"), logits, device,
                                             _tolerance(tolerance))
    if stats is not None:
        stats.update(cut)
    return Selection(index, score_)


def load(spec) -> _np.ndarray:
    """Read an array as quarry's command line does: .npy (memory-mapped, read-only), FILE.npz:member,
    IDX (.idx, -ubyte, .gz). Every malformed file is a quarry.Error naming the file."""
    return _core.load(os.fspath(spec))


def acquisitions() -> list:
    """The acquisition scores' names."""
    return _core.acquisitions()


def diversity_strategies() -> list:
    """The diversity strategies' names."""
    return _core.diversity_strategies()


def set_threads(n: int) -> None:
    """CPU threads of the engine (0: all cores), as ``--threads``."""
    _core.set_threads(_int(n, "threads", 0, 4096))


def build_info() -> str:
    """The engine's build: version, CUDA, BLAS, MPI."""
    return _core.build_info()


from ._project import Project  # noqa: E402
from ._query import Query  # noqa: E402
from . import modal  # noqa: E402
