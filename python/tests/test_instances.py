"""quarry.score_boxes and quarry.score_multilabel against a float64 NumPy reference."""
import numpy as np
import pytest

import quarry


def entropy(p):
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


def test_boxes_every_reduction_with_objectness_and_empty_images(rng):
    counts = [3, 0, 1, 5]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    probs = rng.random((9, 4)).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    obj = rng.random(9).astype(np.float32)
    per_box = entropy(probs) * obj
    for how, fn in (("mean", np.mean), ("max", np.max), ("sum", np.sum)):
        got = quarry.score_boxes(offsets, probs, "entropy", how, objectness=obj, empty_score=0.25)
        want = [fn(per_box[offsets[i]:offsets[i + 1]]) if counts[i] else 0.25 for i in range(4)]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    margin = quarry.score_boxes(offsets, probs[:, :], "margin")
    top = np.sort(probs.astype(np.float64), 1)
    m = 1 - (top[:, -1] - top[:, -2])
    np.testing.assert_allclose(margin, [m[offsets[i]:offsets[i + 1]].mean() if counts[i] else 0 for i in range(4)],
                               rtol=1e-5, atol=1e-6)


def test_boxes_errors(rng):
    probs = np.full((2, 2), 0.5, np.float32)
    with pytest.raises(quarry.Error, match="offsets"):
        quarry.score_boxes(np.array([0, 2, 1]), probs)
    with pytest.raises(quarry.Error, match="objectness"):
        quarry.score_boxes(np.array([0, 2]), probs, objectness=np.array([0.5, 1.5], np.float32))
    with pytest.raises(quarry.UsageError):
        quarry.score_boxes(np.array([0, 2]), probs, reduce="topq:0.1")
    with pytest.raises(quarry.UsageError):
        quarry.score_boxes(np.array([0, 2]), probs, "bald")


def test_multilabel_single_and_committee(rng):
    p = rng.random((6, 5)).astype(np.float32)
    rows = np.stack([p, 1 - p], -1)
    np.testing.assert_allclose(quarry.score_multilabel(p, "entropy", "mean"), entropy(rows).mean(1), rtol=1e-5)
    np.testing.assert_allclose(quarry.score_multilabel(p, "margin", "max"),
                               (1 - np.abs(2 * p.astype(np.float64) - 1)).max(1), rtol=1e-5, atol=1e-6)
    z = rng.normal(size=(6, 5)).astype(np.float32)
    np.testing.assert_allclose(quarry.score_multilabel(z, "entropy", "sum", logits=True),
                               quarry.score_multilabel(1 / (1 + np.exp(-z.astype(np.float64))), "entropy", "sum"),
                               rtol=1e-4, atol=1e-5)
    c = rng.random((4, 6, 5)).astype(np.float32)
    pbar = c.astype(np.float64).mean(0)
    bald = entropy(np.stack([pbar, 1 - pbar], -1)) - entropy(np.stack([c, 1 - c], -1)).mean(0)
    np.testing.assert_allclose(quarry.score_multilabel(c, "bald", "mean"), bald.mean(1), rtol=1e-4, atol=1e-5)
    with pytest.raises(quarry.Error, match="label"):
        quarry.score_multilabel(np.array([[0.5, 1.5]], np.float32))


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    p = torch.rand(3, 4)
    out = quarry.score_multilabel(p, "entropy")
    assert isinstance(out, torch.Tensor) and out.shape == (3,)


def test_batchbald_first_pick_is_bald_and_the_batch_is_not_balds_top_k(rng):
    z = rng.normal(size=(1, 200, 5)) * 2 + rng.normal(size=(8, 200, 5))
    p = np.exp(z - z.max(2, keepdims=True))
    p = (p / p.sum(2, keepdims=True)).astype(np.float32)
    bald = quarry.score(p, "bald")
    sel = quarry.select_batchbald(p, 5, seed=1)
    assert sel.index[0] == int(np.argmax(bald))
    assert len(set(sel.index.tolist())) == 5
    again = quarry.select_batchbald(p, 5, seed=1)
    assert again.index.tolist() == sel.index.tolist()
    assert 0 not in quarry.select_batchbald(p, 5, exclude=[0]).index.tolist()
    with pytest.raises(quarry.UsageError):
        quarry.select_batchbald(p, 500)
    # The gains' device: the CPU by name gives auto's batch here; CUDA where there is none is
    # an Error that says so (where there is one, tests/test_batchbald.cpp checks the parity).
    assert quarry.select_batchbald(p, 5, seed=1, device="cpu").index.tolist() == sel.index.tolist()
    info = quarry.build_info()
    if " 0 device(s) visible" in info or "cuda: not built" in info:
        with pytest.raises(quarry.Error, match="--device cuda"):
            quarry.select_batchbald(p, 5, device="cuda")
    with pytest.raises(quarry.UsageError, match="device"):
        quarry.select_batchbald(p, 5, device="tpu")
    # One joint batch (restart=0, the paper's greedy): its gains add up to at most log M, and it
    # is not BALD's top k; numpy scalars are numbers too.
    joint = quarry.select_batchbald(p, 5, restart=np.float32(0))
    assert joint.index[0] == sel.index[0] and float(joint.score.sum()) <= np.log(8) + 1e-4
    assert joint.index.tolist() != np.argsort(-bald, kind="stable")[:5].tolist()
    assert quarry.select_batchbald(p, 5, seed=1, restart=np.float64(0.5)).index.tolist() == sel.index.tolist()
    for bad in (-0.1, 1.5, "half", True, float("nan")):
        with pytest.raises(quarry.UsageError, match="restart"):
            quarry.select_batchbald(p, 5, restart=bad)
