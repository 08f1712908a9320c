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
    case_scores = quarry.score_dense(seg_probs, "entropy", "topq:0.01")  # [N, C, D, H, W] -> [N]

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
    "score_dense", "select_slices", "score_dense_files", "patch_origin", "score_boxes", "score_multilabel",
    "select_batchbald", "SliceSelection", "DenseScores", "pretrain",
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


class SliceSelection(NamedTuple):
    """Selected (case, slice) pairs of dense outputs, best first: ``case`` and ``slice`` (int64)
    and ``score`` (float32, the slice's score)."""
    case: Any
    slice: Any
    score: Any


class DenseScores(NamedTuple):
    """Scores of dense outputs in files (:func:`score_dense_files`), one entry per case (or per
    slice of each case, in case order):

    ``score`` float32, ``case`` int64 (the case of each score), ``slice`` int64 (its slice; 0
    without slices); per case: ``names`` (list of str: the case's file, or ``"pool.npy[n]"`` for
    case n of one array) and ``slices`` int64 (its number of slices, 1 without slices);
    ``voxel_map``: every voxel's score [N, spatial...] float32 where asked for, else None.
    """
    score: Any
    case: Any
    slice: Any
    names: list
    slices: Any
    voxel_map: Any = None

    def grid(self):
        """The scores as [N, S] float32 (S slices per case; [N, 1] without slices). Cases with
        different numbers of slices have no grid (a UsageError): use ``score``/``case``/``slice``."""
        n = len(self.names)
        if n and _np.any(self.slices != self.slices[0]):
            raise UsageError("the cases have different numbers of slices: there is no [N, S] grid; "
                             "use .score, .case and .slice (select_slices takes these scores as they are)")
        return self.score.reshape(n, int(self.slices[0]) if n else 0)


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
    try:
        t = float(tolerance)
    except (TypeError, ValueError):
        raise UsageError(f"tolerance must be a finite number >= 0 (None: the default), got {tolerance!r}") from None
    if not (t >= 0 and t < float("inf")):
        raise UsageError(f"tolerance must be a finite number >= 0 (None: the default), got {tolerance!r}")
    return t


def _float(value, name: str) -> float:
    """A finite real argument (the engine checks its range and names the option)."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    return v


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
                   device: str = "auto", tolerance: Optional[float] = None, neighbours: int = 20,
                   radius: float = 0.0, purity: float = 0.95) -> Selection:
    """Select a diverse batch (as ``quarry select --strategy badge|kcenter|...``).

    embeddings: [N, D] penultimate-layer embeddings.
    probs: model outputs [N, C] (probabilities, or logits with ``logits=True``); needed by all
        but kcenter; cluster-margin and uncertain-kcenter also take a committee [M, N, C].
    strategy: badge (k-means++ over gradient embeddings, Ash et al. 2020), kcenter (core-set
        greedy, Sener and Savarese 2018; the excluded samples are the initial centres),
        cluster-margin (Citovsky et al. 2021), uncertain-kcenter (kcenter among the most
        uncertain ``candidates`` by ``acquisition``); for the cold start, without ``probs``:
        typiclust (the most typical sample of the least covered k-means cluster, Hacohen et al.
        2022) and probcover (greedy coverage by balls of ``radius``, Yehuda et al. 2022).
    candidates: cluster-margin, uncertain-kcenter: choose among this many most uncertain
        samples (0: 10 k).  clusters: k-means clusters of cluster-margin (0: k), typiclust
        (0: excluded + k) and of probcover's radius (0: 10).
    neighbours: typiclust's typicality neighbours.  radius: probcover's balls (0: the largest
        radius at which ``purity`` of the balls hold one k-means cluster).
    seed: badge's D^2 draws and cluster-margin's k-means (same seed, same selection).

    Arrays in CUDA memory are copied to the host once and the strategy runs on their GPU.
    Returns a Selection in pick order, in the embeddings' kind.
    """
    emb, torch, _ = _arg(embeddings, "embeddings")
    out, _, _ = _arg(probs, "probs")
    result = _core.select_diverse(emb, out, strategy, _int(k, "k"), _exclude(exclude), _int(candidates, "candidates"),
                                  acquisition, _int(seed, "seed", 0, 2**64 - 1), logits, _int(clusters, "clusters"),
                                  _int(kmeans_iterations, "kmeans_iterations", 1, 1 << 20), device,
                                  _tolerance(tolerance), _int(neighbours, "neighbours", 1, 1 << 20),
                                  _float(radius, "radius"), _float(purity, "purity"))
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


# ------------------------------------------------------------------ dense outputs

def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, _np.bool_)):
        raise UsageError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _class_weights(weights) -> list:
    if weights is None:
        return []
    torch = _torch_module(weights)
    if torch is not None:
        weights = weights.detach().cpu().numpy()
    try:
        w = _np.asarray(weights, dtype=_np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"class_weights: expected a sequence of numbers (one per class), got {weights!r}") from None
    if w.ndim != 1:
        raise UsageError(f"class_weights: expected a flat sequence (one weight per class), got shape {w.shape}")
    if not _np.all(_np.isfinite(w)) or _np.any(w < 0) or _np.any(w > _np.finfo(_np.float32).max):
        raise UsageError(f"class_weights: expected finite numbers >= 0, got {w.tolist()}")
    return w.tolist()


def _patches(patches) -> list:
    if patches is None:
        return []
    sizes = [patches] if isinstance(patches, (int, _np.integer)) and not isinstance(patches, bool) else patches
    try:
        if isinstance(sizes, (str, bytes)) or len(sizes) == 0:
            raise TypeError
        return [_int(p, "patches", 1, 2**40) for p in sizes]
    except TypeError:
        raise UsageError(f"patches: expected a size (int) or one size per spatial axis (a tuple), got {patches!r}") from None


def _dense_options(acquisition, reduce, logits, committee, channels_last, background, class_weights, slices,
                   voxel_map, tolerance, device) -> tuple:
    """The checked arguments shared by score_dense and score_dense_files."""
    if not isinstance(acquisition, str):
        raise UsageError(f"acquisition must be a name (str), got {acquisition!r}")
    if not isinstance(reduce, str):
        raise UsageError(f"reduce must be 'mean', 'max', 'sum', 'topq:Q' or 'foreground-mean', got {reduce!r}")
    if not isinstance(device, str):
        raise UsageError(f"device must be 'cpu' (or 'auto', 'cuda', 'cuda:N'), got {device!r}")
    axis = -1 if slices is None else _int(slices, "slices", 0, 2**31 - 1)
    return (acquisition, reduce, _flag(logits, "logits"), _flag(committee, "committee"),
            _flag(channels_last, "channels_last"), _int(background, "background", 0, 2**31 - 1),
            _class_weights(class_weights), axis, _flag(voxel_map, "voxel_map"), _tolerance(tolerance), device)


def score_dense(x, acquisition: str = "entropy", reduce: str = "mean", *, logits: bool = False,
                committee: bool = False, channels_last: bool = False, background: int = 0, class_weights=None,
                ignore=None, slices: Optional[int] = None, voxel_map: bool = False,
                tolerance: Optional[float] = None, device: str = "cpu", patches=None):
    """Score dense outputs, segmentation maps and volumes (as ``quarry score --reduce``): every
    voxel gets the acquisition score of its class probabilities, and the voxel scores are reduced
    to one score per case, or per slice (docs/dense.md).

    x: [N, C, spatial...] (PyTorch, MONAI), [N, spatial..., C] with ``channels_last=True``
        (TensorFlow), or a committee [M, N, C, spatial...] (ensemble members, MC-dropout
        samples); spatial is [H, W] or [D, H, W] (any number of axes). Probabilities, or logits
        with ``logits=True``; float32, float16, bfloat16 or float64; NumPy, torch or anything
        with __dlpack__ or the buffer protocol, read in place.
    acquisition: least-confidence, margin, ratio, entropy; committee scores bald,
        consensus-entropy, vote-entropy, kl-max, variation-ratio (a committee input; the
        single-model scores of a committee score its mean). egl and badge-norm are not per voxel.
    reduce: mean, max, sum, topq:Q (the mean of the ceil(Q n) largest voxel scores, exact;
        0 < Q <= 1) or foreground-mean (the mean over the voxels whose predicted class is not
        ``background``).
    committee: x is [M, N, C, spatial...] (implied by a committee acquisition).
    background: the background class of foreground-mean.
    class_weights: one weight per class; a voxel's score is multiplied by the weight of its
        predicted class (the argmax of its probabilities, of the committee mean; ties to the
        lowest class).
    ignore: an ignore mask [N, spatial...] (or [N, 1, spatial...]), any dtype: voxels where it is
        nonzero are left out of every reduction. A case with no voxel counted scores 0.
    slices: a spatial axis (0 is the first after the classes): one score per slice along it.
    patches: a patch size per spatial axis ((64, 64); or one int for every axis): one score per
        patch, the patches tiling the grid row-major (the last axis fastest), cut at its far
        edges (quarry.patch_origin gives a patch's first voxel). Not with ``slices``.
    voxel_map: also return every voxel's score (after class weights; 0 where ignored).
    tolerance: allowed |sum - 1| of a voxel's probabilities (None: 1e-3, 1e-2 for float16 and
        bfloat16).
    device: cpu (the default), cuda or cuda:N (the cases are copied to the GPU a group at a time
        and scored there; the input itself must be host memory: a CUDA tensor is a UsageError,
        pass x.cpu()), or auto (CUDA where this build has it and a device is visible). Where the
        engine has no CUDA backend of dense scores, cuda is a UsageError.

    Returns float32 scores [N], or [N, S] with ``slices`` or ``patches``; with ``voxel_map=True`` a tuple
    (scores, map), map float32 [N, spatial...] in the input's voxel order. NumPy arrays, or
    torch tensors for a torch input. A bad voxel (NaN, Inf, a negative probability, a sum off 1)
    is a quarry.Error naming the case and the voxel's coordinates.
    """
    opts = _dense_options(acquisition, reduce, logits, committee, channels_last, background, class_weights, slices,
                          voxel_map, tolerance, device)
    src, torch, stream = _arg(x, "x")
    mask, _, _ = _arg(ignore, "ignore")
    (acq, red, lg, cm, cl, bg, weights, axis, vm, tol, dev) = opts
    scores, vmap = _core.score_dense(src, acq, red, lg, cm, cl, bg, weights, mask, axis, vm, tol, dev, stream,
                                     _patches(patches))
    template = x if torch is not None else None
    scores = _like(scores, torch, template)
    if vm:
        return scores, _like(vmap, torch, template)
    return scores


def select_batchbald(x, k: int, *, exclude=None, samples: int = 512, seed: int = 0, logits: bool = False,
                     tolerance: Optional[float] = None, device: str = "auto", restart: float = 0.5) -> Selection:
    """BatchBALD (as ``quarry select --strategy batchbald``): k samples of a committee's outputs
    x [M, N, C] chosen greedily by the gain of the batch's mutual information with the model
    (docs/acquisition.md). Returns a Selection (index, score = each pick's gain), in pick order.
    ``restart`` in [0, 1]: a new joint batch starts when the best gain falls below this share of
    the best that a fresh one could gain (0: one joint batch, the paper's greedy).
    ``device``: where the candidates' gains are computed (auto, cpu, cuda[:N]); x is read from
    host memory."""
    src, torch, _ = _arg(x, "x")
    result = _core.select_batchbald(src, _int(k, "k"), _exclude(exclude), _int(samples, "samples", 1, 2**24),
                                    _int(seed, "seed", 0, 2**64 - 1), _flag(logits, "logits"), _tolerance(tolerance),
                                    str(device), _float(restart, "restart"))
    return _selection(result, torch, x)


def pretrain(images, *, epochs: int = 10, batch_size: int = 256, lr: float = 1e-3, temperature: float = 0.2,
             seed: int = 0, device: str = "auto", threads: int = 0, channels_last: Optional[bool] = None):
    """Self-supervised embeddings of an unlabeled image pool (as ``quarry pretrain``): a small
    convolutional encoder trained by contrastive learning (SimCLR-style) on the images alone,
    for the cold start (``Project.init(seed_strategy="typiclust", seed_embeddings=...)``, or
    typiclust over your own code). ``images``: [N, H, W], [N, C, H, W] or [N, H, W, C]
    (``channels_last``; None: channels-last when the last axis is 1, 3 or 4 and axis 1 is not),
    at least 8x8, N >= 2. Pixels as the ``pool:`` data sets read them: integers are divided by
    255; floats too when any exceeds 1; every value must lie in [0, 1] (or [0, 255]). Returns unit
    rows [N, 128] float32 in pool order (a torch tensor on the input's device for a torch input).
    Loads LibTorch on first use; minutes on a CPU for tens of thousands of images (docs/loop.md)."""
    torch = _torch_module(images)
    if torch is not None:
        t = images.detach()
        arr = (t.float() if t.is_floating_point() and t.dtype != torch.float32 else t).cpu().numpy()
    else:
        arr = _np.asarray(images)
    if arr.dtype.kind not in "uif":
        raise UsageError(f"images: expected integer or float pixels, got dtype {arr.dtype}")
    if arr.ndim not in (3, 4):
        raise UsageError(f"images: expected [N, H, W], [N, C, H, W] or [N, H, W, C], got shape {tuple(arr.shape)}")
    if arr.ndim == 4:
        last = channels_last if channels_last is not None else (arr.shape[3] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4))
        if _flag(last, "channels_last"):
            arr = arr.transpose(0, 3, 1, 2)
    if arr.dtype.kind == "f":
        scale = arr.size > 0 and bool(_np.nanmax(arr) > 1)  # some float above 1: 0..255 pixels
    else:
        scale = True
    hi = 255.0 if scale else 1.0
    bad = ~((arr >= 0) & (arr <= hi))  # NaN fails too
    if bad.any():
        flat = int(_np.flatnonzero(bad.reshape(-1))[0])
        per = int(_np.prod(arr.shape[1:]))
        raise Error(f"images: image {flat // per} has a value ({arr.reshape(-1)[flat]}) outside [0, {hi:g}]")
    arr = _np.ascontiguousarray(arr, dtype=_np.float32)
    if scale:
        arr = arr / _np.float32(255.0)
    from . import _loop  # LibTorch: loaded here, not by `import quarry`
    out = _loop.pretrain(arr, _int(epochs, "epochs", 1, 1 << 20), _int(batch_size, "batch_size", 2, 1 << 20),
                         _float(lr, "lr"), _float(temperature, "temperature"), _int(seed, "seed", 0, 2**64 - 1),
                         str(device), _int(threads, "threads", 0, 4096))
    return _like(out, torch, images if torch is not None else None)


def score_boxes(offsets, probs, acquisition: str = "entropy", reduce: str = "mean", *, objectness=None,
                logits: bool = False, empty_score: float = 0.0, tolerance: Optional[float] = None):
    """Score detections (as ``quarry score --boxes``): every box gets the single-model
    acquisition score of its class row (least-confidence, margin, ratio or entropy), times its
    objectness where given, and each image the mean, max or sum of its boxes' scores
    (docs/detections.md).

    offsets: [N + 1] integers, image i has the boxes offsets[i] .. offsets[i+1] - 1.
    probs: [B, C] class probabilities of the boxes (logits with ``logits=True``).
    objectness: optional [B] in [0, 1].
    empty_score: the score of an image without boxes.

    Returns float32 [N] (a torch tensor for a torch ``probs``). A bad row, offset or objectness
    is a quarry.Error naming the image and the box.
    """
    if not isinstance(reduce, str) or reduce not in ("mean", "max", "sum"):
        raise UsageError(f"reduce must be 'mean', 'max' or 'sum' for detections, got {reduce!r}")
    off, _, _ = _arg(offsets, "offsets")
    src, torch, _ = _arg(probs, "probs")
    obj, _, _ = _arg(objectness, "objectness")
    if off is None or src is None:
        raise UsageError("offsets and probs are required")
    return _like(_core.score_boxes(off, src, obj, acquisition, reduce, _flag(logits, "logits"),
                                   _tolerance(tolerance), float(empty_score)), torch, probs)


def score_multilabel(probs, acquisition: str = "entropy", reduce: str = "mean", *, logits: bool = False):
    """Score multi-label outputs (as ``quarry score --multilabel``): [N, L] sigmoid probabilities
    (logits with ``logits=True``), or a committee [M, N, L]; every label is the binary row
    (p, 1 - p) scored by the acquisition (binary entropy, margin 1 - |2p - 1|, least-confidence,
    ratio; bald and the other committee scores for a committee), and each sample gets the mean,
    max or sum over its labels (docs/detections.md). Returns float32 [N]."""
    if not isinstance(reduce, str) or reduce not in ("mean", "max", "sum"):
        raise UsageError(f"reduce must be 'mean', 'max' or 'sum' for multi-label outputs, got {reduce!r}")
    src, torch, _ = _arg(probs, "probs")
    if src is None:
        raise UsageError("probs is required")
    return _like(_core.score_multilabel(src, acquisition, reduce, _flag(logits, "logits")), torch, probs)


def patch_origin(grid, patches, patch: int) -> list:
    """The first voxel (one coordinate per spatial axis) of patch number ``patch`` of a case whose
    voxel grid is ``grid`` (its spatial shape), tiled by ``patches`` as in score_dense."""
    return list(_core.patch_origin([_int(g, "grid") for g in grid], _patches(patches), _int(patch, "patch")))


def select_slices(scores, k: int, per_case: int = 0, exclude=None) -> SliceSelection:
    """Select the k highest-scoring (case, slice) pairs, at most ``per_case`` slices of one case
    (0: no limit); ties go to the lower case, then the lower slice (as ``quarry select --slices``).

    scores: slice scores [N, S] (``score_dense(..., slices=axis)``), or the DenseScores of
        :func:`score_dense_files` (whose cases may have different numbers of slices).
    exclude: cases never selected (e.g. already labeled scans).

    Returns a SliceSelection (case, slice, score), best first. NaN scores, k larger than the
    number of selectable slices, or an excluded case outside 0..N-1 are errors.
    """
    k = _int(k, "k")
    per_case = _int(per_case, "per_case")
    exclude = _exclude(exclude)

    def select(grid):
        try:
            return _core.select_slices(grid, k, per_case, exclude)
        except UsageError as e:  # the engine's message names the command line's -k
            text = str(e)
            if text.startswith("-k "):
                raise UsageError("k = " + text[3:]) from None
            raise

    if isinstance(scores, DenseScores):
        n = len(scores.names)
        s_max = int(scores.slices.max()) if n else 1
        counts = _np.asarray(scores.slices, dtype=_np.int64).copy()
        try:
            ex = [int(e) for e in _np.asarray(exclude).ravel() if float(e) == int(e) and 0 <= int(e) < n] \
                if exclude is not None else []
        except (TypeError, ValueError):
            ex = []  # the engine reports a bad exclude list
        counts[ex] = 0
        selectable = int(_np.minimum(counts, per_case).sum() if per_case > 0 else counts.sum())
        if k > selectable:
            raise UsageError(f"k = {k}: only {selectable} slices or patches can be selected ({n} cases"
                             + (f", at most {per_case} each" if per_case > 0 else "")
                             + (", excluded cases left out" if ex else "") + ")")
        grid = _np.full((n, s_max), -_np.inf, dtype=_np.float32)
        grid[scores.case, scores.slice] = scores.score
        case, slice_, score_ = select(grid)
        if len(score_) and _np.isneginf(score_[-1]):
            raise UsageError(f"k = {k}: more slices than the cases have (with per_case = {per_case})")
        return SliceSelection(case, slice_, score_)
    torch = _torch_module(scores)
    template = None
    if torch is not None:
        template = scores
        scores = scores.detach().to(torch.float32).cpu().numpy()
    else:
        scores = _np.asarray(scores)
        if scores.dtype.kind not in "fiu":
            raise UsageError(f"scores: expected an array of numbers [N, S], got dtype {scores.dtype}")
    if scores.ndim != 2:
        raise UsageError(f"scores: expected slice scores [N, S] (cases x slices), got shape {tuple(scores.shape)}")
    case, slice_, score_ = select(_np.ascontiguousarray(scores, dtype=_np.float32))
    return SliceSelection(_like(case, torch, template), _like(slice_, torch, template), _like(score_, torch, template))


def score_dense_files(files, acquisition: str = "entropy", reduce: str = "mean", *, ignore=None,
                      memory_budget: Optional[int] = None, logits: bool = False, committee: bool = False,
                      channels_last: bool = False, background: int = 0, class_weights=None,
                      slices: Optional[int] = None, voxel_map: bool = False, tolerance: Optional[float] = None,
                      device: str = "cpu", patches=None) -> DenseScores:
    """Score dense outputs stored in files (as ``quarry score --input FILES --reduce``), a group of
    cases at a time.

    files: one array [N, C, spatial...] (committee [M, N, C, spatial...]) in an .npy file
        (memory-mapped; cases are read in groups of at most ``memory_budget`` bytes) or
        "FILE.npz:MEMBER"; or one file per case, as a glob ("preds/*.nii.gz", sorted by name) or
        a list: NIfTI .nii/.nii.gz (the classes along the 4th dimension, or the 5th where the 4th
        is 1; read as [C, z, y, x], so slices=0 is z) or nnU-Net --save_probabilities .npz
        (member ``probabilities``, [C, spatial...]). Case files may differ in size.
    ignore: ignore masks in the same forms: one array [N, spatial...] or one file per case.
    memory_budget: bytes of one group of cases (None: a quarter of the available memory).
    voxel_map: one-array inputs only.
    The other arguments are those of :func:`score_dense`.

    Returns a DenseScores (score, case, slice, names, slices, voxel_map) of NumPy arrays. Every
    error names the file (and, for a bad voxel, the case and the voxel's coordinates).
    """
    opts = _dense_options(acquisition, reduce, logits, committee, channels_last, background, class_weights, slices,
                          voxel_map, tolerance, device)
    def paths(value, name):
        try:
            return _spec(value)
        except TypeError:
            raise UsageError(f"{name}: expected a file, a glob or a list of files, got {type(value).__name__} "
                             "(arrays in memory: quarry.score_dense)") from None

    spec = paths(files, "files")
    if not spec:
        raise UsageError("files: expected a file, a glob or a list of files")
    mask_spec = paths(ignore, "ignore")
    (acq, red, lg, cm, cl, bg, weights, axis, vm, tol, dev) = opts
    budget = 0 if memory_budget is None else _int(memory_budget, "memory_budget")
    score_, case, slice_, per_case, names, vmap = _core.score_dense_files(
        spec, acq, red, mask_spec, budget, lg, cm, cl, bg, weights, axis, vm, tol, dev, _patches(patches))
    return DenseScores(score_, case, slice_, names, per_case, vmap)


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
