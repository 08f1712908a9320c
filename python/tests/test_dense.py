"""quarry.score_dense, quarry.select_slices and quarry.score_dense_files (segmentation maps and
volumes) against an independent double-precision NumPy reference written here from
docs/dense.md and docs/acquisition.md."""
import gzip
import math
import struct
import threading
import time

import numpy as np
import pytest

import quarry

try:
    import torch
except ImportError:  # the torch-specific checks are skipped
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not importable")

SINGLE = ["least-confidence", "margin", "ratio", "entropy"]
COMMITTEE = ["bald", "consensus-entropy", "kl-max", "vote-entropy", "variation-ratio"]
REDUCTIONS = ["mean", "max", "sum", "topq:0.05", "topq:0.01", "topq:1", "foreground-mean"]


# ------------------------------------------------------------------ the reference (float64)

def softmax_volume(rng, shape, classes_axis=1, scale=2.0, dtype=np.float32):
    """Random probabilities with the classes along `classes_axis`."""
    z = rng.standard_normal(shape) * scale
    e = np.exp(z - z.max(axis=classes_axis, keepdims=True))
    return (e / e.sum(axis=classes_axis, keepdims=True)).astype(dtype)


def classes_last(x, committee, channels_last):
    x = np.asarray(x, dtype=np.float64)
    return x if channels_last else np.moveaxis(x, 2 if committee else 1, -1)


def probabilities(x, logits):
    if logits:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return x / x.sum(axis=-1, keepdims=True)


def entropy(p):
    safe = np.where(p > 0, p, 1.0)
    return np.maximum(-(np.where(p > 0, p * np.log(safe), 0.0)).sum(axis=-1), 0.0)


def top2(p):
    s = np.sort(p, axis=-1)
    return s[..., -1], (s[..., -2] if p.shape[-1] > 1 else np.zeros(p.shape[:-1]))


def single_scores(p, acq):
    p1, p2 = top2(p)
    if acq == "least-confidence":
        return 1.0 - p1
    if acq == "margin":
        return 1.0 - (p1 - p2)
    if acq == "ratio":
        return np.where(p1 > 0, p2 / np.where(p1 > 0, p1, 1.0), 0.0)
    if acq == "entropy":
        return entropy(p)
    raise AssertionError(acq)


def voxel_reference(x, acq, *, logits=False, committee=False, channels_last=False):
    """(voxel scores, predicted class), both [N, spatial...], in float64."""
    committee = committee or acq in COMMITTEE
    p = probabilities(classes_last(x, committee, channels_last), logits)
    if not committee:
        return single_scores(p, acq), p.argmax(axis=-1)
    m = p.shape[0]
    pbar = p.mean(axis=0)
    pred = pbar.argmax(axis=-1)
    if acq == "bald":
        return np.maximum(entropy(pbar) - entropy(p).mean(axis=0), 0.0), pred
    if acq == "consensus-entropy":
        return entropy(pbar), pred
    if acq in ("vote-entropy", "variation-ratio"):
        votes = np.stack([(p.argmax(axis=-1) == c).sum(axis=0) for c in range(p.shape[-1])], axis=-1) / m
        return (entropy(votes) if acq == "vote-entropy" else 1.0 - votes.max(axis=-1)), pred
    if acq == "kl-max":
        safe = np.where(p > 0, p, 1.0)
        kl = np.where(p > 0, p * (np.log(safe) - np.log(pbar[None])), 0.0).sum(axis=-1)
        return np.maximum(kl.max(axis=0), 0.0), pred
    return single_scores(pbar, acq), pred


def reduce_values(v, how):
    v = np.asarray(v, dtype=np.float64)
    n = v.size
    if how == "sum":
        return v.sum()
    if n == 0:
        return 0.0
    if how == "max":
        return v.max()
    if how.startswith("topq:"):
        q = float(how[5:])
        m = min(n, max(1, math.ceil(q * n - 1e-9)))
        return np.sort(v)[::-1][:m].mean()
    return v.mean()  # mean, foreground-mean


def case_reference(score, pred, how, *, weights=None, ignore=None, background=0, slices=None):
    """The per-case ([N]) or per-slice ([N, S]) reduction of voxel scores [N, spatial...]."""
    if weights is not None:
        score = score * np.asarray(weights, dtype=np.float64)[pred]
    counted = np.ones(score.shape, dtype=bool)
    if ignore is not None:
        counted &= np.asarray(ignore).reshape(score.shape) == 0
    if how == "foreground-mean":
        counted &= pred != background
    if slices is None:
        return np.array([reduce_values(score[n][counted[n]], how) for n in range(score.shape[0])])
    s = np.moveaxis(score, slices + 1, 1)
    c = np.moveaxis(counted, slices + 1, 1)
    return np.array([[reduce_values(s[n, j][c[n, j]], how) for j in range(s.shape[1])] for n in range(s.shape[0])])


def assert_matches(got, ref, rtol=1e-4, atol=3e-5):
    got = np.asarray(got)
    assert got.dtype == np.float32 and got.shape == np.shape(ref), (got.dtype, got.shape, np.shape(ref))
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


def near_ties(p_last, gap=1e-4):
    """Voxels whose two largest values are within `gap` (their argmax is rounding)."""
    p1, p2 = top2(p_last)
    return p1 - p2 <= gap


def slice_selection_reference(grid, k, per_case=0, exclude=()):
    n, s = grid.shape
    order = sorted(((-float(grid[i, j]), i, j) for i in range(n) for j in range(s) if i not in set(exclude)))
    cap = min(per_case, s) if per_case > 0 else s
    taken, out = {}, []
    for neg, i, j in order:
        if len(out) == k:
            break
        if taken.get(i, 0) < cap:
            taken[i] = taken.get(i, 0) + 1
            out.append((i, j, -neg))
    return out


# ------------------------------------------------------------------ in memory

@pytest.mark.parametrize("acq", SINGLE)
@pytest.mark.parametrize("how", REDUCTIONS)
def test_every_reduction_matches_numpy(rng, acq, how):
    x = softmax_volume(rng, (3, 4, 5, 7, 6))  # [N, C, D, H, W]
    score, pred = voxel_reference(x, acq)
    got = quarry.score_dense(x, acq, how)
    assert isinstance(got, np.ndarray)
    assert_matches(got, case_reference(score, pred, how))
    if how == "mean" and acq == "entropy":
        np.testing.assert_array_equal(quarry.score_dense(x), got)  # the defaults


def test_topq_is_exact(rng):
    # n = 300 voxels per case: topq:0.01 averages exactly 3 (0.01 * 300 is 3 up to rounding).
    x = softmax_volume(rng, (4, 3, 10, 30))
    s, vmap = quarry.score_dense(x, "entropy", "max", voxel_map=True)
    v = vmap.reshape(4, -1).astype(np.float64)
    for q, m in [(0.01, 3), (0.1, 30), (1 / 3, 100), (0.5, 150), (1.0, 300), (1e-6, 1)]:
        got = quarry.score_dense(x, "entropy", f"topq:{q!r}")
        top = np.sort(v, axis=1)[:, ::-1]
        np.testing.assert_allclose(got, top[:, :m].mean(axis=1), rtol=1e-6)
        if m < 300:  # one voxel more or fewer would show
            assert np.all(np.abs(top[:, :m + 1].mean(axis=1) - got) > 1e-6)
            if m > 1:
                assert np.all(np.abs(top[:, :m - 1].mean(axis=1) - got) > 1e-6)
    np.testing.assert_allclose(s, v.max(axis=1), rtol=0)


def test_topq_of_a_large_case_with_ties_is_exact(rng):
    # 2 x 64 x 128 x 64: the parallel top-q (a histogram of the scores' top bits); probabilities
    # from a few values, so that many voxel scores are equal.
    levels = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.99], dtype=np.float32)
    p0 = levels[rng.integers(0, len(levels), size=(1, 1, 64, 128, 64))]
    p0.ravel()[:5000] = rng.random(5000).astype(np.float32)
    x = np.concatenate([p0, 1.0 - p0], axis=1)
    _, vmap = quarry.score_dense(x, "margin", voxel_map=True)
    v = np.sort(vmap.ravel().astype(np.float64))[::-1]
    for q in (0.001, 0.01, 0.3):
        m = math.ceil(q * v.size - 1e-9)
        np.testing.assert_allclose(quarry.score_dense(x, "margin", f"topq:{q}"), [v[:m].mean()], rtol=1e-6)
    score, pred = voxel_reference(x, "margin")
    assert_matches(quarry.score_dense(x, "margin", "topq:0.01"), case_reference(score, pred, "topq:0.01"))


@pytest.mark.parametrize("background", [0, 2])
@pytest.mark.parametrize("how", ["mean", "foreground-mean", "topq:0.1", "max", "sum"])
def test_foreground_mean_class_weights_and_ignore_mask(rng, background, how):
    x = softmax_volume(rng, (4, 3, 6, 8, 5))
    ignore = (rng.random((4, 1, 6, 8, 5)) < 0.3).astype(np.float32)  # [N, 1, spatial...], any dtype
    ignore[2] = 1.0  # a case with no voxel counted scores 0
    weights = [0.5, 2.0, 0.0]
    score, pred = voxel_reference(x, "entropy")
    got = quarry.score_dense(x, "entropy", how, background=background, class_weights=weights, ignore=ignore)
    ref = case_reference(score, pred, how, weights=weights, ignore=ignore, background=background)
    assert_matches(got, ref)
    assert got[2] == 0.0
    # Foreground-mean is the mean over the voxels not predicted as the background class.
    if how == "foreground-mean":
        fg = quarry.score_dense(x, "entropy", how, background=background)
        keep = pred != background
        assert_matches(fg, [score[n][keep[n]].mean() for n in range(4)])
    # class weights as an array, and a torch tensor where torch is there
    np.testing.assert_array_equal(quarry.score_dense(x, "entropy", how, background=background,
                                                     class_weights=np.array(weights), ignore=ignore), got)


def test_ignore_masks_of_any_dtype(rng):
    x = softmax_volume(rng, (3, 2, 9, 11))
    keep = rng.random((3, 9, 11)) < 0.4
    expected = quarry.score_dense(x, "entropy", ignore=keep)
    score, pred = voxel_reference(x, "entropy")
    assert_matches(expected, case_reference(score, pred, "mean", ignore=keep))
    for dtype in (np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64):
        np.testing.assert_array_equal(quarry.score_dense(x, "entropy", ignore=keep.astype(dtype)), expected)
    np.testing.assert_array_equal(quarry.score_dense(x, "entropy", ignore=keep[:, None]), expected)  # [N, 1, ...]
    np.testing.assert_array_equal(quarry.score_dense(x, "entropy", ignore=keep.T.copy().T), expected)  # strided
    with pytest.raises(quarry.Error, match=r"ignore: expected one value per voxel, \[3, 9, 11\]"):
        quarry.score_dense(x, "entropy", ignore=keep[:, :8])


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("how", ["mean", "topq:0.2", "max", "foreground-mean"])
def test_slices_match_numpy(rng, axis, how):
    x = softmax_volume(rng, (5, 3, 6, 4, 7))
    ignore = rng.random((5, 6, 4, 7)) < 0.2
    score, pred = voxel_reference(x, "least-confidence")
    got = quarry.score_dense(x, "least-confidence", how, slices=axis, ignore=ignore, class_weights=[1, 2, 3])
    assert got.shape == (5, (6, 4, 7)[axis])
    assert_matches(got, case_reference(score, pred, how, slices=axis, ignore=ignore, weights=[1, 2, 3]))


def test_select_slices_with_a_per_case_cap(rng):
    x = softmax_volume(rng, (6, 2, 8, 5, 5))
    grid = quarry.score_dense(x, "entropy", "mean", slices=0)
    for k, per_case, exclude in [(10, 0, ()), (10, 2, ()), (12, 3, (1, 4)), (4, 1, [0]), (0, 0, ())]:
        pick = quarry.select_slices(grid, k, per_case=per_case, exclude=list(exclude) or None)
        assert isinstance(pick, quarry.SliceSelection)
        assert pick.case.dtype == np.int64 and pick.slice.dtype == np.int64 and pick.score.dtype == np.float32
        ref = slice_selection_reference(grid, k, per_case, exclude)
        assert list(zip(pick.case.tolist(), pick.slice.tolist())) == [(i, j) for i, j, _ in ref]
        np.testing.assert_array_equal(pick.score, grid[pick.case, pick.slice])
        if per_case:
            assert np.bincount(pick.case, minlength=6).max() <= per_case
        assert not set(pick.case.tolist()) & set(exclude)
    # Ties go to the lower case, then the lower slice.
    tied = np.array([[1, 3, 3], [3, 2, 3], [3, 3, 0]], dtype=np.float32)
    pick = quarry.select_slices(tied, 3, per_case=1)
    assert list(zip(pick.case.tolist(), pick.slice.tolist())) == [(0, 1), (1, 0), (2, 0)]
    pick = quarry.select_slices(tied, 5)
    assert list(zip(pick.case.tolist(), pick.slice.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0)]
    # float64 scores, nested lists: converted once
    np.testing.assert_array_equal(quarry.select_slices(grid.astype(np.float64), 5, 1).case,
                                  quarry.select_slices(grid, 5, 1).case)
    assert quarry.select_slices(tied.tolist(), 2).slice.tolist() == [1, 2]
    with pytest.raises(quarry.UsageError, match=r"k = 7: only 6 slices or patches can be selected \(6 cases, at most 1"):
        quarry.select_slices(grid, 7, per_case=1)
    with pytest.raises(quarry.UsageError, match=r"\[N, S\]"):
        quarry.select_slices(grid.ravel(), 3)
    with pytest.raises(quarry.Error, match="excluded case 6"):
        quarry.select_slices(grid, 3, exclude=[6])
    bad = grid.copy()
    bad[2, 3] = np.nan
    with pytest.raises(quarry.Error, match="case 2, slice 3 is NaN"):
        quarry.select_slices(bad, 3)
    for k in (-1, 2.5, True):
        with pytest.raises(quarry.UsageError, match="k must be"):
            quarry.select_slices(grid, k)
    with pytest.raises(quarry.UsageError, match="per_case"):
        quarry.select_slices(grid, 3, per_case=-2)


@pytest.mark.parametrize("members", [1, 4])
@pytest.mark.parametrize("logits", [False, True])
def test_committees_match_numpy(rng, members, logits):
    shape = (members, 3, 3, 5, 4, 6)  # [M, N, C, D, H, W]
    if logits:
        x = (rng.standard_normal(shape) * 2.0).astype(np.float32)
    else:
        x = softmax_volume(rng, shape, classes_axis=2)
    p = probabilities(classes_last(x, True, False), logits)
    # Votes and predicted classes are discontinuous: near ties are left out through the mask.
    ignore = near_ties(p).any(axis=0) | near_ties(p.mean(axis=0))
    for acq in COMMITTEE + ["entropy", "margin"]:
        score, pred = voxel_reference(x, acq, logits=logits, committee=True)
        for how in ["mean", "max", "topq:0.1", "foreground-mean"]:
            got = quarry.score_dense(x, acq, how, logits=logits, committee=True, ignore=ignore)
            assert_matches(got, case_reference(score, pred, how, ignore=ignore), rtol=2e-4)
    # A committee acquisition implies the committee layout.
    np.testing.assert_array_equal(quarry.score_dense(x, "bald", logits=logits),
                                  quarry.score_dense(x, "bald", logits=logits, committee=True))
    if members == 1:
        assert np.all(quarry.score_dense(x, "bald", "max", logits=logits) == 0)


def test_logits_and_channels_last(rng):
    z = (rng.standard_normal((3, 5, 7, 6, 4)) * 3).astype(np.float32)  # [N, C, D, H, W] logits
    last = np.ascontiguousarray(np.moveaxis(z, 1, -1))                 # [N, D, H, W, C]
    for acq in SINGLE:
        score, pred = voxel_reference(z, acq, logits=True)
        for how in ["mean", "topq:0.05", "foreground-mean"]:
            first = quarry.score_dense(z, acq, how, logits=True)
            assert_matches(first, case_reference(score, pred, how))
            np.testing.assert_array_equal(quarry.score_dense(last, acq, how, logits=True, channels_last=True), first)
    # channels_last slices and maps are over the spatial axes
    s, vmap = quarry.score_dense(last, "entropy", slices=1, logits=True, channels_last=True, voxel_map=True)
    assert s.shape == (3, 6) and vmap.shape == (3, 7, 6, 4)
    score, _ = voxel_reference(z, "entropy", logits=True)
    np.testing.assert_allclose(vmap, score, rtol=1e-4, atol=3e-5)
    # logits read as probabilities fail the checks
    with pytest.raises(quarry.Error, match="sum to"):
        quarry.score_dense(np.abs(z), "entropy")


def test_float16_float64_and_non_contiguous_inputs(rng):
    p = softmax_volume(rng, (4, 3, 6, 5, 8), dtype=np.float64)
    half = p.astype(np.float16)  # rows sum to 1 within ~1e-3: float16's default tolerance is 1e-2
    score, pred = voxel_reference(half, "entropy")
    for how in ["mean", "topq:0.1", "foreground-mean"]:
        assert_matches(quarry.score_dense(half, "entropy", how), case_reference(score, pred, how))
    score, pred = voxel_reference(p, "margin")
    assert_matches(quarry.score_dense(p, "margin", "sum"), case_reference(score, pred, "sum"))
    f32 = p.astype(np.float32)
    expected = quarry.score_dense(f32, "margin")
    np.testing.assert_array_equal(quarry.score_dense(np.asfortranarray(f32), "margin"), expected)
    np.testing.assert_array_equal(quarry.score_dense(f32[::-1], "margin"), expected[::-1])  # negative strides
    np.testing.assert_array_equal(quarry.score_dense(f32.astype(">f4"), "margin"), expected)  # big-endian
    with pytest.raises(quarry.Error, match="sum to"):
        quarry.score_dense(half, "entropy", tolerance=1e-6)


def test_voxel_map(rng):
    x = softmax_volume(rng, (3, 4, 5, 6))
    ignore = rng.random((3, 5, 6)) < 0.25
    weights = [1.0, 0.5, 2.0, 0.0]
    scores, vmap = quarry.score_dense(x, "ratio", "sum", class_weights=weights, ignore=ignore, voxel_map=True)
    score, pred = voxel_reference(x, "ratio")
    assert vmap.shape == (3, 5, 6) and vmap.dtype == np.float32 and vmap.flags.writeable
    np.testing.assert_allclose(vmap, np.where(ignore, 0.0, score * np.array(weights)[pred]), rtol=1e-4, atol=3e-5)
    np.testing.assert_allclose(scores, vmap.reshape(3, -1).sum(axis=1, dtype=np.float64), rtol=1e-6)
    # a committee's map is over [N, spatial...] too
    c = softmax_volume(rng, (2, 3, 4, 5, 6), classes_axis=2)
    _, cmap = quarry.score_dense(c, "bald", voxel_map=True)
    assert cmap.shape == (3, 5, 6)
    empty, emap = quarry.score_dense(np.zeros((0, 2, 4, 4), np.float32), voxel_map=True)
    assert empty.shape == (0,) and emap.shape == (0, 4, 4)


def test_bad_inputs_raise_clear_errors(rng):
    x = softmax_volume(rng, (2, 3, 4, 5))
    with pytest.raises(quarry.Error, match="pool of rows"):
        quarry.score_dense(x[:, :, 0, 0], "entropy")
    with pytest.raises(quarry.UsageError, match="not defined per voxel"):
        quarry.score_dense(x, "egl")
    with pytest.raises(quarry.Error, match="unknown acquisition|valid"):
        quarry.score_dense(x, "entropie")
    for bad in ("median", "topq:0", "topq:1.5", "topq:"):
        with pytest.raises(quarry.UsageError, match="reduction|topq"):
            quarry.score_dense(x, "entropy", bad)
    with pytest.raises(quarry.UsageError, match="class weights: 2 given, x has 3 classes"):
        quarry.score_dense(x, class_weights=[1, 2])
    for w in ([1, -1, 1], [1, np.nan, 1], [[1, 2, 3]], "abc"):
        with pytest.raises(quarry.UsageError, match="class_weights"):
            quarry.score_dense(x, class_weights=w)
    with pytest.raises(quarry.UsageError, match="background class 3"):
        quarry.score_dense(x, "entropy", "foreground-mean", background=3)
    with pytest.raises(quarry.UsageError, match="slice axis 2: x has 2 spatial axes"):
        quarry.score_dense(x, slices=2)
    for bad in (-1, 1.0, True):
        with pytest.raises(quarry.UsageError, match="slices must be"):
            quarry.score_dense(x, slices=bad)
    with pytest.raises(quarry.UsageError, match="logits must be True or False"):
        quarry.score_dense(x, logits="yes")
    with pytest.raises(quarry.UsageError, match="tolerance"):
        quarry.score_dense(x, tolerance=-1)
    bad = x.copy()
    bad[1, :, 2, 3] = [0.5, np.nan, 0.5]
    with pytest.raises(quarry.Error, match=r"x: case 1, voxel \[2, 3\]: probabilities contain NaN"):
        quarry.score_dense(bad)
    bad = x.copy()
    bad[0, 0, 3, 1] += 0.2
    with pytest.raises(quarry.Error, match=r"x: case 0, voxel \[3, 1\]: probabilities sum to 1.2"):
        quarry.score_dense(bad)
    with pytest.raises(quarry.Error, match="float32, float16, bfloat16 or float64"):
        quarry.score_dense(np.ones((2, 3, 4, 5), np.int32))
    with pytest.raises(quarry.Error, match=r"\[M, N, C, spatial...\]"):
        quarry.score_dense(x[0], "bald")  # a committee score of a 3-D array
    with pytest.raises(quarry.Error, match="expected an array"):
        quarry.score_dense(object())
    with pytest.raises(quarry.Error):
        quarry.score_dense(x, device="tpu")
    if not quarry._core.dense_devices:  # an engine whose dense scores run on the CPU only
        with pytest.raises(quarry.UsageError, match="dense outputs are scored on the CPU"):
            quarry.score_dense(x, device="cuda")
        with pytest.raises(ValueError):
            quarry.score_dense(x, device="cuda:0")
    elif quarry._core.cuda_device_count() == 0:  # no CUDA here: the error every score gives
        with pytest.raises(quarry.Error, match="(?i)cuda"):
            quarry.score_dense(x, device="cuda")
    np.testing.assert_array_equal(quarry.score_dense(x, device="auto"), quarry.score_dense(x, device="cpu"))


def test_the_gil_is_released_during_dense_scoring(rng):
    x = rng.random((8, 2, 96, 64, 64), dtype=np.float32)
    x /= x.sum(axis=1, keepdims=True)
    quarry.set_threads(1)
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    calls = 0
    try:
        t.start()
        time.sleep(0.01)
        start = time.perf_counter()
        while calls < 3 or time.perf_counter() - start < 0.4:
            quarry.score_dense(x, "entropy", "topq:0.01")
            calls += 1
        end = time.perf_counter()
    finally:
        done.set()
        t.join()
        quarry.set_threads(0)
    during = [s for s in ticks if start < s < end]
    # The other thread kept running all through the calls: holding the GIL, it would tick about
    # once between two calls.
    assert len(during) >= max(20, 3 * calls), (end - start, calls, len(during))


# ------------------------------------------------------------------ torch

@needs_torch
def test_torch_tensors_bfloat16_and_torch_out(rng):
    x = softmax_volume(rng, (3, 3, 5, 6, 4), dtype=np.float64)
    expected = quarry.score_dense(x.astype(np.float32), "entropy", "topq:0.1")
    t = torch.from_numpy(x.astype(np.float32))
    got = quarry.score_dense(t, "entropy", "topq:0.1")
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    s, m = quarry.score_dense(t.requires_grad_(), "entropy", slices=0, voxel_map=True)
    assert isinstance(m, torch.Tensor) and tuple(m.shape) == (3, 5, 6, 4) and tuple(s.shape) == (3, 5)
    score, pred = voxel_reference(torch.from_numpy(x).to(torch.bfloat16).to(torch.float64).numpy(), "entropy")
    bf = quarry.score_dense(torch.from_numpy(x).to(torch.bfloat16), "entropy", "topq:0.1")
    assert_matches(bf.numpy(), case_reference(score, pred, "topq:0.1"))
    half = quarry.score_dense(torch.from_numpy(x).half().permute(0, 2, 3, 4, 1), channels_last=True)  # strided
    assert half.shape == (3,)
    mask = torch.from_numpy(rng.random((3, 5, 6, 4)) < 0.5)  # torch.bool
    np.testing.assert_array_equal(quarry.score_dense(t.detach(), ignore=mask).numpy(),
                                  quarry.score_dense(x.astype(np.float32), ignore=mask.numpy()))
    grid = quarry.score_dense(t.detach(), slices=0)
    pick = quarry.select_slices(grid, 4, per_case=2, exclude=torch.tensor([1]))
    assert isinstance(pick.case, torch.Tensor)
    np.testing.assert_array_equal(pick.case.numpy(), quarry.select_slices(grid.numpy(), 4, 2, [1]).case)
    np.testing.assert_array_equal(quarry.score_dense(t.detach(), class_weights=torch.tensor([1.0, 2.0, 0.5])).numpy(),
                                  quarry.score_dense(x.astype(np.float32), class_weights=[1.0, 2.0, 0.5]))


@needs_torch
@pytest.mark.skipif(torch is None or not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_are_refused_with_the_fix(rng):
    x = torch.from_numpy(softmax_volume(rng, (2, 3, 8, 8, 8)))
    with pytest.raises(quarry.UsageError, match=r"x.cpu\(\)"):
        quarry.score_dense(x.cuda(), "entropy")


@pytest.mark.skipif(not quarry._core.dense_devices or quarry._core.cuda_device_count() == 0,
                    reason="no CUDA backend of dense scores, or no device")
@pytest.mark.parametrize("how", ["mean", "max", "sum", "topq:0.01", "foreground-mean"])
def test_cuda_device_matches_the_cpu(rng, how):
    x = softmax_volume(rng, (3, 3, 16, 20, 12))
    ignore = rng.random((3, 16, 20, 12)) < 0.2
    kw = dict(ignore=ignore, class_weights=[0.5, 1, 2], slices=0, voxel_map=True)
    cpu, cmap = quarry.score_dense(x, "entropy", how, device="cpu", **kw)
    gpu, gmap = quarry.score_dense(x, "entropy", how, device="cuda", **kw)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=3e-5)
    np.testing.assert_allclose(gmap, cmap, rtol=1e-4, atol=3e-5)


# ------------------------------------------------------------------ files

def nifti(path, data_xyzc):
    """A single-file NIfTI-1 image (float32, little-endian) of data in NIfTI axis order (x, y, z, C)."""
    a = np.asarray(data_xyzc, dtype="<f4")
    dims = list(a.shape)
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, len(dims), *(dims + [1] * (7 - len(dims))))
    struct.pack_into("<hh", h, 70, 16, 32)  # float32
    struct.pack_into("<fff", h, 108, 352.0, 0.0, 0.0)  # vox_offset, scl_slope (0: none), scl_inter
    h[344:348] = b"n+1\0"
    b = bytes(h) + a.tobytes(order="F")  # x fastest
    path.write_bytes(gzip.compress(b) if str(path).endswith(".gz") else b)


def test_npy_and_npz_arrays_match_in_memory(tmp_path, rng):
    x = softmax_volume(rng, (7, 3, 6, 5, 4))
    ignore = rng.random((7, 6, 5, 4)) < 0.3
    np.save(tmp_path / "p.npy", x)
    np.save(tmp_path / "m.npy", ignore.astype(np.uint8))
    np.savez(tmp_path / "p.npz", probs=x, other=np.zeros(3))
    kw = dict(reduce="topq:0.1", slices=0, class_weights=[0.2, 1, 3])
    expected, emap = quarry.score_dense(x, "margin", ignore=ignore, voxel_map=True, **kw)
    for spec, budget in [(tmp_path / "p.npy", None), (str(tmp_path / "p.npy"), 2000), (f"{tmp_path}/p.npz:probs", 1)]:
        r = quarry.score_dense_files(spec, "margin", ignore=tmp_path / "m.npy", memory_budget=budget,
                                     voxel_map=True, **kw)
        assert isinstance(r, quarry.DenseScores)
        np.testing.assert_array_equal(r.grid(), expected)
        np.testing.assert_array_equal(r.voxel_map, emap)
        assert r.names == [f"{spec}[{i}]" for i in range(7)]
        assert r.case.tolist() == [i for i in range(7) for _ in range(6)] and r.slice.tolist() == list(range(6)) * 7
        assert r.slices.tolist() == [6] * 7 and r.score.dtype == np.float32
    per_case = quarry.score_dense_files(tmp_path / "p.npy", "entropy", "foreground-mean", background=1)
    assert per_case.voxel_map is None and per_case.slice.tolist() == [0] * 7
    np.testing.assert_array_equal(per_case.score, quarry.score_dense(x, "entropy", "foreground-mean", background=1))
    np.testing.assert_array_equal(per_case.grid(), per_case.score[:, None])
    # a committee array, bald implying it
    c = softmax_volume(rng, (3, 4, 2, 5, 5), classes_axis=2)
    np.save(tmp_path / "c.npy", c)
    np.testing.assert_array_equal(quarry.score_dense_files(tmp_path / "c.npy", "bald", memory_budget=100).score,
                                  quarry.score_dense(c, "bald"))
    # logits, classes last, float16
    z = np.ascontiguousarray(np.moveaxis(rng.standard_normal((3, 4, 5, 6)), 1, -1)).astype(np.float16)
    np.save(tmp_path / "z.npy", z)
    np.testing.assert_array_equal(
        quarry.score_dense_files(tmp_path / "z.npy", logits=True, channels_last=True).score,
        quarry.score_dense(z, logits=True, channels_last=True))


def test_nnunet_and_nifti_case_files(tmp_path, rng):
    shapes = [(6, 5, 4), (3, 5, 4), (8, 2, 3)]
    cases, masks = [], []
    for i, shape in enumerate(shapes):
        p = softmax_volume(rng, (3, *shape), classes_axis=0)  # nnU-Net: [C, spatial...]
        m = rng.random(shape) < 0.2
        np.savez_compressed(tmp_path / f"case_{i}.npz", probabilities=p, seg=p.argmax(0).astype(np.uint8))
        np.savez(tmp_path / f"mask_{i}.npz", mask=m.astype(np.uint8))
        cases.append(p)
        masks.append(m)
    r = quarry.score_dense_files(str(tmp_path / "case_*.npz"), "entropy", "mean", slices=0,
                                 ignore=[tmp_path / f"mask_{i}.npz" for i in range(3)])
    assert r.names == [str(tmp_path / f"case_{i}.npz") for i in range(3)]
    assert r.slices.tolist() == [6, 3, 8] and len(r.score) == 17
    for i, p in enumerate(cases):
        score, pred = voxel_reference(p[None], "entropy")
        assert_matches(r.score[r.case == i], case_reference(score, pred, "mean", slices=0, ignore=masks[i][None])[0])
    with pytest.raises(quarry.UsageError, match="different numbers of slices"):
        r.grid()
    # select_slices takes the scores as they are: cases of different lengths, a cap per case
    pick = quarry.select_slices(r, 7, per_case=3)
    ref = slice_selection_reference(np.array([np.pad(r.score[r.case == i], (0, 8 - n), constant_values=-np.inf)
                                              for i, n in enumerate([6, 3, 8])]), 7, 3)
    assert list(zip(pick.case.tolist(), pick.slice.tolist())) == [(i, j) for i, j, _ in ref]
    with pytest.raises(quarry.UsageError, match=r"k = 16: only 14 slices or patches can be selected"):
        quarry.select_slices(r, 16, per_case=0, exclude=[1, 1])
    # NIfTI: classes along the 4th dimension, read as [C, z, y, x]
    for i, p in enumerate(cases):
        nifti(tmp_path / f"case_{i}.nii.gz", np.transpose(p, (3, 2, 1, 0)))  # [C, z, y, x] -> (x, y, z, C)
    files = [tmp_path / f"case_{i}.nii.gz" for i in range(3)]
    n = quarry.score_dense_files(files, "margin", "topq:0.25", class_weights=[1, 2, 3])
    for i, p in enumerate(cases):
        score, pred = voxel_reference(p[None], "margin")
        assert_matches(n.score[i:i + 1], case_reference(score, pred, "topq:0.25", weights=[1, 2, 3]))
    with pytest.raises(quarry.UsageError, match="voxel_map needs one array"):
        quarry.score_dense_files(files, voxel_map=True)


def test_file_errors_name_the_file(tmp_path, rng):
    with pytest.raises(quarry.Error, match="no-such"):
        quarry.score_dense_files(tmp_path / "no-such.npy")
    p = softmax_volume(rng, (2, 3, 4, 5))
    p[1, :, 3, 2] = [0.2, 0.2, 0.2]
    np.save(tmp_path / "bad.npy", p)
    with pytest.raises(quarry.Error, match=r"bad.npy: case 1, voxel \[3, 2\]: probabilities sum to 0.6"):
        quarry.score_dense_files(tmp_path / "bad.npy")
    np.savez(tmp_path / "one.npz", probabilities=p[0])
    np.savez(tmp_path / "two.npz", a=p[0], b=p[1])
    with pytest.raises(quarry.Error, match="two.npz: expected a member 'probabilities'"):
        quarry.score_dense_files([tmp_path / "one.npz", tmp_path / "two.npz"])
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(quarry.Error, match="junk.nii.gz"):
        quarry.score_dense_files(tmp_path / "junk.nii.gz")
    np.save(tmp_path / "ok.npy", softmax_volume(rng, (2, 3, 4, 5)))
    np.save(tmp_path / "m3.npy", np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(quarry.Error, match="3 masks for the 2 cases"):
        quarry.score_dense_files(tmp_path / "ok.npy", ignore=tmp_path / "m3.npy")
    with pytest.raises(quarry.UsageError, match="memory_budget"):
        quarry.score_dense_files(tmp_path / "ok.npy", memory_budget=-5)
    with pytest.raises(quarry.UsageError, match="files"):
        quarry.score_dense_files([])
    with pytest.raises(quarry.UsageError, match="comma"):
        quarry.score_dense_files(["/tmp/a,b.npz", "/tmp/c.npz"])
    with pytest.raises(quarry.UsageError, match="ignore: expected a file.*quarry.score_dense"):
        quarry.score_dense_files(tmp_path / "ok.npy", ignore=np.zeros((2, 4, 5), np.uint8))
    if not quarry._core.dense_devices:
        with pytest.raises(quarry.UsageError, match="CPU"):
            quarry.score_dense_files(tmp_path / "ok.npy", device="cuda")
    elif quarry._core.cuda_device_count() == 0:
        with pytest.raises(quarry.Error, match="(?i)cuda"):
            quarry.score_dense_files(tmp_path / "ok.npy", device="cuda")


def test_patches_against_numpy(rng):
    p = rng.random((2, 3, 10, 7)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    s = quarry.score_dense(p, "entropy", "max", patches=(4, 3))
    assert s.shape == (2, 9)
    h = -(p.astype(np.float64) * np.log(p.astype(np.float64))).sum(1)
    for n in range(2):
        for r in range(9):
            y, x = quarry.patch_origin((10, 7), (4, 3), r)
            assert abs(s[n, r] - h[n, y:y + 4, x:x + 3].max()) < 1e-5
    assert quarry.score_dense(p, "entropy", "mean", patches=4).shape == (2, 6)
    with pytest.raises(quarry.UsageError):
        quarry.score_dense(p, patches=(4, 3), slices=0)


def test_patch_origin_checks_the_patch_number():
    assert quarry.patch_origin((100, 70), (64, 64), 3) == [64, 64]
    for args in (((100, 70), (64, 64), 4), ((0, 70), (64, 64), 0), ((10,), (3,), 100), ((10, 7), (4, 3, 2), 0)):
        with pytest.raises(quarry.UsageError):
            quarry.patch_origin(*args)
    x = np.full((1, 2, 4, 4), 0.5, np.float32)
    for bad in ((), "2x2", [0, 2]):
        with pytest.raises(quarry.UsageError):
            quarry.score_dense(x, patches=bad)
