"""`quarry score/select --boxes` (detections) and `--multilabel` through the command line.

Detections are written with numpy.savez (offsets, probs, objectness); every result is compared
with a double-precision NumPy reference written here from docs/detections.md. Bad files must
give an error naming the file, the member, the image and the box, exit 1, and no output; bad
flags exit 2.
"""
import json
import os
import subprocess

import numpy as np
import pytest

QUARRY = os.environ.get("QUARRY", "quarry")


def run(*args, code=0):
    r = subprocess.run([QUARRY, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == code, f"quarry {' '.join(map(str, args))}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def xlogx(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def row_scores(p, acq):  # p: [B, C] probabilities in double
    s = -np.sort(-p, axis=1)
    p1, p2 = s[:, 0], (s[:, 1] if p.shape[1] > 1 else np.zeros(len(p)))
    return {"least-confidence": 1 - p1, "margin": 1 - (p1 - p2), "ratio": p2 / p1,
            "entropy": -xlogx(p).sum(1)}[acq]


def reduce(vals, offsets, how, empty=0.0):
    out = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        v = vals[a:b]
        out.append(empty if len(v) == 0 else {"mean": v.mean(), "max": v.max(), "sum": v.sum()}[how])
    return np.array(out)


def h2(p):
    return -xlogx(p) - xlogx(1 - p)


def label_scores(x, acq, logits):  # x: [N, L] or [M, N, L]
    x = np.asarray(x, np.float64)
    if x.ndim == 2:
        x = x[None]
    p = 1 / (1 + np.exp(-x)) if logits else x
    pbar = p.mean(0)
    votes = ((x >= 0) if logits else (p >= 0.5)).mean(0)
    if acq == "least-confidence":
        return 1 - np.maximum(pbar, 1 - pbar)
    if acq == "margin":
        return 1 - np.abs(2 * pbar - 1)
    if acq == "ratio":
        return np.minimum(pbar, 1 - pbar) / np.maximum(pbar, 1 - pbar)
    if acq in ("entropy", "consensus-entropy"):
        return h2(pbar)
    if acq == "bald":
        return np.maximum(h2(pbar) - h2(p).mean(0), 0)
    if acq == "vote-entropy":
        return h2(votes)
    if acq == "variation-ratio":
        return 1 - np.maximum(votes, 1 - votes)
    if acq == "kl-max":
        kl = xlogx(p) - p * np.log(pbar) + xlogx(1 - p) - (1 - p) * np.log(1 - pbar)
        return kl.max(0)
    raise ValueError(acq)


@pytest.fixture
def rng():
    return np.random.default_rng(23)


def detections(rng, n=12, c=4, logits=False):
    counts = rng.integers(0, 5, n)
    counts[[2, n - 1]] = 0  # empty images
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    z = rng.normal(size=(offsets[-1], c)) * 2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return offsets, (z if logits else p).astype(np.float32), rng.random(offsets[-1]).astype(np.float32)


@pytest.mark.parametrize("acq", ["least-confidence", "margin", "ratio", "entropy"])
@pytest.mark.parametrize("how", ["mean", "max", "sum"])
def test_boxes_every_acquisition_and_reduction(tmp_path, rng, acq, how):
    off, p, obj = detections(rng)
    np.savez(tmp_path / "d.npz", offsets=off, probs=p)
    np.savez(tmp_path / "o.npz", offsets=off, probs=p, objectness=obj)
    ref = reduce(row_scores(p.astype(np.float64), acq), off, how)
    run("score", "--boxes", "--input", tmp_path / "d.npz", "-a", acq, "--reduce", how, "-o", tmp_path / "s.npy")
    got = np.load(tmp_path / "s.npy")
    assert got.dtype == np.float32 and got.shape == (len(off) - 1,)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # Objectness multiplies each box's score; CSV output.
    ref_o = reduce(row_scores(p.astype(np.float64), acq) * obj, off, how)
    run("score", "--boxes", "--input", tmp_path / "o.npz", "-a", acq, "--reduce", how, "-o", tmp_path / "s.csv")
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "index,score"
    np.testing.assert_allclose([float(x.split(",")[1]) for x in lines[1:]], ref_o, rtol=1e-4, atol=1e-5)
    assert [int(x.split(",")[0]) for x in lines[1:]] == list(range(len(off) - 1))


def test_boxes_logits_float16_empty_score_and_select(tmp_path, rng):
    off, z, _ = detections(rng, n=15, c=3, logits=True)
    np.savez(tmp_path / "d.npz", offsets=off.astype(np.int32), probs=z.astype(np.float16))
    zz = z.astype(np.float16).astype(np.float64)
    p = np.exp(zz - zz.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = reduce(row_scores(p, "entropy"), off, "max", empty=9.0)
    run("score", "--boxes", "--logits", "--input", tmp_path / "d.npz", "--reduce", "max", "--empty-score", 9,
        "-o", tmp_path / "s.npy")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), ref, rtol=1e-4, atol=1e-5)
    # Select: the empty images (score 9) first, in index order; then by score; --exclude leaves one out.
    (tmp_path / "ex.txt").write_text("2\n")
    r = run("select", "--boxes", "--logits", "--input", tmp_path / "d.npz", "--reduce", "max", "--empty-score", 9,
            "-k", 4, "--exclude", tmp_path / "ex.txt")
    rows = [line.split(",") for line in r.stdout.strip().splitlines()]
    assert rows[0] == ["rank", "index", "score"]
    order = [i for i in sorted(range(len(ref)), key=lambda i: (-np.float32(ref[i]), i)) if i != 2][:4]
    assert [int(x[1]) for x in rows[1:]] == order
    empty = [i for i in range(len(off) - 1) if off[i] == off[i + 1] and i != 2]
    assert int(rows[1][1]) == empty[0] and float(rows[1][2]) == 9.0
    # Default: an image without boxes scores 0.
    run("score", "--boxes", "--logits", "--input", tmp_path / "d.npz", "-o", tmp_path / "s0.npy")
    got = np.load(tmp_path / "s0.npy")
    assert got[2] == 0 and got[14] == 0
    np.testing.assert_allclose(got, reduce(row_scores(p, "entropy"), off, "mean"), rtol=1e-4, atol=1e-5)
    # JSON
    run("select", "--boxes", "--logits", "--input", tmp_path / "d.npz", "-k", 2, "-o", tmp_path / "b.json")
    j = json.loads((tmp_path / "b.json").read_text())
    assert j["k"] == 2 and j["strategy"] == "topk" and "boxes, entropy, mean" in j["source"]
    assert [s["rank"] for s in j["selected"]] == [1, 2]


@pytest.mark.parametrize("acq", ["least-confidence", "margin", "ratio", "entropy"])
@pytest.mark.parametrize("logits", [False, True])
def test_multilabel_single_model(tmp_path, rng, acq, logits):
    x = rng.normal(size=(30, 8)) * 2 if logits else rng.random((30, 8))
    np.save(tmp_path / "m.npy", x.astype(np.float32))
    s = label_scores(x.astype(np.float32), acq, logits)
    for how, ref in (("mean", s.mean(1)), ("max", s.max(1)), ("sum", s.sum(1))):
        run("score", "--multilabel", "--input", tmp_path / "m.npy", "-a", acq, "--reduce", how,
            *(["--logits"] if logits else []), "-o", tmp_path / "s.npy")
        np.testing.assert_allclose(np.load(tmp_path / "s.npy"), ref, rtol=1e-4, atol=2e-5, err_msg=how)


@pytest.mark.parametrize("acq", ["entropy", "margin", "consensus-entropy", "bald", "vote-entropy", "kl-max",
                                 "variation-ratio"])
def test_multilabel_committee(tmp_path, rng, acq):
    x = rng.random((4, 25, 6)).astype(np.float32)
    np.savez(tmp_path / "c.npz", mc=x)
    ref = label_scores(x, acq, False).mean(1)
    run("score", "--multilabel", "--input", f"{tmp_path / 'c.npz'}:mc", "-a", acq, "-o", tmp_path / "s.npy")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), ref, rtol=1e-4, atol=2e-5)
    r = run("select", "--multilabel", "--input", f"{tmp_path / 'c.npz'}:mc", "-a", acq, "-k", 3)
    picks = [int(line.split(",")[1]) for line in r.stdout.strip().splitlines()[1:]]
    assert picks == sorted(range(25), key=lambda i: (-np.float32(ref[i]), i))[:3]


def test_bad_detections_are_named(tmp_path, rng):
    off, p, obj = detections(rng, n=6, c=3)
    b = int(off[3])  # the first box of image 3 (images 0..2 may be empty)
    while off[3] == off[4]:
        off, p, obj = detections(rng, n=6, c=3)
        b = int(off[3])
    bad_p = p.copy()
    bad_p[b + 0, 0] = np.nan
    sum_p = p.copy()
    sum_p[b] *= 1.5
    bad_o = obj.copy()
    bad_o[b] = 1.5
    nonmono = off.copy()
    nonmono[2], nonmono[3] = off[3] + 1, off[2]
    cases = {
        "nan.npz": (dict(offsets=off, probs=bad_p), f"nan.npz: probs: image 3, box 0 (row {b}): probabilities contain NaN"),
        "sum.npz": (dict(offsets=off, probs=sum_p), f"sum.npz: probs: image 3, box 0 (row {b}): probabilities sum to 1.5"),
        "obj.npz": (dict(offsets=off, probs=p, objectness=bad_o),
                    f"obj.npz: objectness: image 3, box 0 (row {b}): objectness 1.5, expected a value in [0, 1]"),
        "objlen.npz": (dict(offsets=off, probs=p, objectness=obj[:-1]), "objlen.npz: objectness: expected one value per box"),
        "nonmono.npz": (dict(offsets=nonmono, probs=p), "nonmono.npz: offsets: image 2: offsets[3]"),
        "short.npz": (dict(offsets=off, probs=np.vstack([p, p[:1]])),
                      f"short.npz: offsets: offsets[6] (the last) is {len(p)}, expected the number of boxes, {len(p) + 1}"),
        "range.npz": (dict(offsets=np.array([0, len(p) + 3, len(p)]), probs=p), "range.npz: offsets: image 0: offsets[1]"),
        "float.npz": (dict(offsets=off.astype(np.float32), probs=p), "float.npz: offsets: expected integers, got float32"),
        "missing.npz": (dict(offsets=off, scores=p), "missing.npz: detections need the members offsets"),
    }
    for name, (members, expect) in cases.items():
        np.savez(tmp_path / name, **members)
        out = tmp_path / f"{name}.npy"
        r = run("score", "--boxes", "--input", tmp_path / name, "-o", out, code=1)
        assert expect in r.stderr, (name, r.stderr)
        assert not out.exists()
    # Not an .npz at all.
    np.save(tmp_path / "p.npy", p)
    r = run("score", "--boxes", "--input", tmp_path / "p.npy", "-o", tmp_path / "x.npy", code=1)
    assert "p.npy" in r.stderr


def test_bad_multilabel_values_are_named(tmp_path, rng):
    x = rng.random((5, 4)).astype(np.float32)
    x[3, 2] = 1.25
    np.save(tmp_path / "m.npy", x)
    r = run("score", "--multilabel", "--input", tmp_path / "m.npy", "-o", tmp_path / "s.npy", code=1)
    assert "m.npy: row 3, label 2: probability 1.25, expected a value in [0, 1]" in r.stderr
    c = rng.random((3, 5, 4)).astype(np.float32)
    c[1, 4, 0] = np.nan
    np.save(tmp_path / "c.npy", c)
    r = run("select", "--multilabel", "--input", tmp_path / "c.npy", "-a", "bald", "-k", 1, code=1)
    assert "c.npy: row 4 of committee member 1, label 0: probability nan" in r.stderr
    np.save(tmp_path / "z.npy", np.full((2, 2), np.inf, np.float32))
    r = run("score", "--multilabel", "--logits", "--input", tmp_path / "z.npy", "-o", tmp_path / "s.npy", code=1)
    assert "row 0, label 0: logit inf, expected a finite number" in r.stderr
    assert not (tmp_path / "s.npy").exists()
    # A committee score of an [N, L] input is a data error naming the shape.
    np.save(tmp_path / "ok.npy", rng.random((5, 4)).astype(np.float32))
    r = run("score", "--multilabel", "--input", tmp_path / "ok.npy", "-a", "bald", "-o", tmp_path / "s.npy", code=1)
    assert "bald needs a committee [M, N, L]" in r.stderr


def test_usage_errors_exit_2(tmp_path, rng):
    off, p, _ = detections(rng, n=4, c=3)
    np.savez(tmp_path / "d.npz", offsets=off, probs=p)
    np.save(tmp_path / "m.npy", rng.random((4, 3)).astype(np.float32))
    d, m = tmp_path / "d.npz", tmp_path / "m.npy"
    for args in ([d, "--boxes", "-a", "bald"], [d, "--boxes", "-a", "egl"], [d, "--boxes", "--reduce", "topq:0.1"],
                 [d, "--boxes", "--reduce", "median"], [d, "--boxes", "--multilabel"], [d, "--boxes", "--slices", 0],
                 [d, "--boxes", "--device", "cuda"], [d, "--boxes", "--embeddings", m],
                 [d, "--boxes", "--memory-budget", "1G"], [m, "--multilabel", "-a", "badge-norm"],
                 [m, "--multilabel", "--reduce", "foreground-mean"], [m, "--multilabel", "--empty-score", 1],
                 [m, "--multilabel", "--tolerance", 0.1], [m, "--multilabel", "--committee"],
                 [m, "--empty-score", 1], [d, "--boxes", "--empty-score", "nan"]):
        out = tmp_path / "o.npy"
        r = run("score", "--input", *args, "-o", out, code=2)
        assert r.stderr, args
        assert not out.exists()
    r = run("score", "--boxes", "--input", d, "-a", "bald", "-o", tmp_path / "o.npy", code=2)
    assert "least-confidence, margin, ratio or entropy" in r.stderr and "committee detections" in r.stderr
    r = run("score", "--multilabel", "--input", m, "-a", "egl", "-o", tmp_path / "o.npy", code=2)
    assert "consensus-entropy, bald, vote-entropy, kl-max or variation-ratio" in r.stderr
    run("score", "--boxes", "--input", d, "-o", tmp_path / "o.txt", code=2)  # .npy or .csv
    run("select", "--boxes", "--input", d, "-k", 2, "--strategy", "power", code=2)
    run("select", "--boxes", "--input", d, "-k", 99, code=2)  # more than the images
    # The output may not replace the input.
    run("score", "--multilabel", "--input", m, "-o", m, code=2)
    assert np.load(m).shape == (4, 3)


def test_info_shows_detections(tmp_path, rng):
    off, p, obj = detections(rng, n=5, c=3)
    np.savez(tmp_path / "d.npz", offsets=off, probs=p, objectness=obj)
    r = run("info", tmp_path / "d.npz")
    assert f"as detections (--boxes): 5 images, {len(p)} boxes, 3 classes, with objectness" in r.stdout


def test_info_checks_the_offsets_and_boxes_take_the_whole_archive(tmp_path):
    p = np.full((5, 2), 0.5, np.float32)
    np.savez(tmp_path / "bad.npz", offsets=np.array([0, 3, 2, 5]), probs=p)
    np.savez(tmp_path / "ok.npz", offsets=np.array([0, 3, 3, 5]), probs=p)
    assert "not valid detections (--boxes): offsets[2] = 2" in run("info", tmp_path / "bad.npz").stdout
    assert "as detections (--boxes): 3 images, 5 boxes, 2 classes" in run("info", tmp_path / "ok.npz").stdout
    r = run("score", "--boxes", "--input", f"{tmp_path}/ok.npz:probs", "-o", tmp_path / "s.npy", code=2)
    assert "without :MEMBER" in r.stderr
    r = run("score", "--boxes", "--input", tmp_path / "ok.npz", "--empty-score", "1e39", "-o", tmp_path / "s.npy", code=2)
    assert "float32 range" in r.stderr
    assert not (tmp_path / "s.npy").exists()


def test_select_batchbald_from_a_committee(tmp_path, rng):
    # (select --strategy batchbald reads a committee [M, N, C] as --input; its engine is tested
    # against a brute-force reference in tests/test_batchbald.cpp)
    z = rng.normal(size=(1, 50, 4)) * 2 + rng.normal(size=(6, 50, 4))
    p = np.exp(z - z.max(2, keepdims=True))
    np.save(tmp_path / "c.npy", (p / p.sum(2, keepdims=True)).astype(np.float32))
    r = run("select", "--input", tmp_path / "c.npy", "--strategy", "batchbald", "-k", "4", "--format", "json")
    j = json.loads(r.stdout)
    assert j["strategy"] == "batchbald" and len({s["index"] for s in j["selected"]}) == 4
    bald = run("select", "--input", tmp_path / "c.npy", "-a", "bald", "-k", "1").stdout.splitlines()[1].split(",")[1]
    assert j["selected"][0]["index"] == int(bald)
    run("select", "--input", tmp_path / "c.npy", "--strategy", "batchbald", "-k", "51", code=2)
    np.save(tmp_path / "flat.npy", np.full((5, 2), 0.5, np.float32))
    run("select", "--input", tmp_path / "flat.npy", "--strategy", "batchbald", "-k", "1", code=1)
