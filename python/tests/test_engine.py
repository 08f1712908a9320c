"""quarry's Python API against the command line on the same data, and its array handling."""
import csv
import io
import threading
import time

import numpy as np
import pytest

import quarry
from conftest import softmax_rows

torch = pytest.importorskip("torch")


def cli_selection(text):
    rows = list(csv.DictReader(io.StringIO(text)))
    return np.array([int(r["index"]) for r in rows]), np.array([float(r["score"]) for r in rows], dtype=np.float32)


@pytest.mark.parametrize("acq", ["entropy", "margin", "least-confidence", "ratio"])
def test_score_matches_cli(tmp_path, cli, rng, acq):
    p = softmax_rows(rng, 3000, 7)
    np.save(tmp_path / "p.npy", p)
    cli("score", "--input", tmp_path / "p.npy", "-a", acq, "-o", tmp_path / "s.npy", "--device", "cpu")
    expected = np.load(tmp_path / "s.npy")
    got = quarry.score(p, acq, device="cpu")
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (3000,)
    np.testing.assert_array_equal(got, expected)
    t = quarry.score(torch.from_numpy(p), acq)
    assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
    np.testing.assert_array_equal(t.numpy(), expected)


@pytest.mark.parametrize("acq", ["bald", "vote-entropy", "kl-max", "consensus-entropy", "variation-ratio", "entropy"])
def test_committee_scores_match_cli(tmp_path, cli, rng, acq):
    p = np.stack([softmax_rows(rng, 500, 4) for _ in range(5)])
    np.save(tmp_path / "p.npy", p)
    cli("score", "--input", tmp_path / "p.npy", "-a", acq, "-o", tmp_path / "s.npy")
    np.testing.assert_array_equal(quarry.score(p, acq), np.load(tmp_path / "s.npy"))


def test_logits_and_embedding_scores_match_cli(tmp_path, cli, rng):
    z = rng.standard_normal((800, 5)).astype(np.float32)
    e = rng.standard_normal((800, 16)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "e.npy", e)
    for acq in ["egl", "badge-norm"]:
        cli("score", "--input", tmp_path / "z.npy", "--logits", "--embeddings", tmp_path / "e.npy", "-a", acq,
            "-o", tmp_path / "s.npy")
        np.testing.assert_array_equal(quarry.score(z, acq, logits=True, embeddings=e), np.load(tmp_path / "s.npy"))
    cli("score", "--input", tmp_path / "z.npy", "--logits", "-o", tmp_path / "s.npy")
    np.testing.assert_array_equal(quarry.score(z, "entropy", logits=True), np.load(tmp_path / "s.npy"))


@pytest.mark.parametrize("strategy", ["topk", "power"])
def test_select_matches_cli(tmp_path, cli, rng, strategy):
    p = softmax_rows(rng, 5000, 10)
    exclude = np.array([3, 17, 400, 4999], dtype=np.int64)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "ex.npy", exclude)
    r = cli("select", "--input", tmp_path / "p.npy", "-k", 50, "--strategy", strategy, "--seed", 9, "--beta", 2,
            "--exclude", tmp_path / "ex.npy", "--format", "csv")
    idx, sc = cli_selection(r.stdout)
    pick = quarry.score_and_select(p, "entropy", 50, exclude=exclude, strategy=strategy, seed=9, beta=2)
    np.testing.assert_array_equal(pick.index, idx)
    np.testing.assert_allclose(pick.score, sc, rtol=1e-6)
    assert not set(pick.index) & set(exclude)
    # Scoring, then selecting from the scores, gives the same.
    pick2 = quarry.select(quarry.score(p, "entropy"), 50, exclude=list(exclude), strategy=strategy, seed=9, beta=2)
    np.testing.assert_array_equal(pick2.index, pick.index)
    # A torch tensor in: torch tensors out.
    pt = quarry.score_and_select(torch.from_numpy(p), "entropy", 50, exclude=torch.from_numpy(exclude),
                                 strategy=strategy, seed=9, beta=2)
    assert isinstance(pt.index, torch.Tensor) and pt.index.dtype == torch.int64
    np.testing.assert_array_equal(pt.index.numpy(), idx)


@pytest.mark.parametrize("strategy", ["badge", "kcenter", "cluster-margin", "uncertain-kcenter"])
def test_select_diverse_matches_cli(tmp_path, cli, rng, strategy):
    p = softmax_rows(rng, 600, 4)
    e = rng.standard_normal((600, 8)).astype(np.float32)
    np.save(tmp_path / "p.npy", p)
    np.save(tmp_path / "e.npy", e)
    r = cli("select", "--input", tmp_path / "p.npy", "--embeddings", tmp_path / "e.npy", "-k", 20,
            "--strategy", strategy, "--seed", 3, "-a", "margin", "--format", "csv")
    idx, sc = cli_selection(r.stdout)
    pick = quarry.select_diverse(e, p, strategy, 20, seed=3)
    np.testing.assert_array_equal(pick.index, idx)
    np.testing.assert_allclose(pick.score, sc, rtol=1e-5)


@pytest.mark.parametrize("strategy,extra", [("typiclust", ["--neighbours", 10]), ("probcover", ["--purity", 0.9])])
def test_cold_start_strategies_match_cli(tmp_path, cli, rng, strategy, extra):
    # Three blobs far apart: one pick from each, the same from Python and the command line.
    e = np.concatenate([rng.standard_normal((200, 3)) + 20 * np.eye(3)[i] for i in range(3)]).astype(np.float32)
    np.save(tmp_path / "e.npy", e)
    r = cli("select", "--embeddings", tmp_path / "e.npy", "-k", 3, "--strategy", strategy, "--clusters", 3,
            "--format", "csv", *extra)
    idx, sc = cli_selection(r.stdout)
    options = dict(neighbours=10) if strategy == "typiclust" else dict(purity=0.9)
    pick = quarry.select_diverse(e, None, strategy, 3, clusters=3, **options)
    np.testing.assert_array_equal(pick.index, idx)
    np.testing.assert_allclose(pick.score, sc, rtol=1e-5)
    assert sorted(i // 200 for i in idx) == [0, 1, 2]
    with pytest.raises(quarry.UsageError, match="radius"):
        quarry.select_diverse(e, None, "probcover", 3, radius=float("nan"))


def test_kmeans_is_deterministic(rng):
    e = np.concatenate([rng.standard_normal((200, 3)) + 10 * i for i in range(3)]).astype(np.float32)
    a = quarry.kmeans(e, 3, seed=1)
    b = quarry.kmeans(torch.from_numpy(e), 3, seed=1)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.centroids.shape == (3, 3) and len(set(a.labels[:200])) == 1 and a.converged


def test_stream_select_matches_cli_over_shards(tmp_path, cli, rng):
    parts = [softmax_rows(rng, n, 6) for n in (1000, 1500, 700)]
    for i, part in enumerate(parts):
        np.save(tmp_path / f"pool-{i}.npy", part)
    r = cli("select", "--input", str(tmp_path / "pool-*.npy"), "-k", 40, "--memory-budget", "16K", "--format", "csv")
    idx, _ = cli_selection(r.stdout)
    stats = {}
    pick = quarry.stream_select(str(tmp_path / "pool-*.npy"), "entropy", 40, memory_budget=16 << 10, stats=stats)
    np.testing.assert_array_equal(pick.index, idx)
    assert stats["chunks"] > 3
    whole = quarry.score_and_select(np.concatenate(parts), "entropy", 40)
    np.testing.assert_array_equal(pick.index, whole.index)
    listed = quarry.stream_select([tmp_path / f"pool-{i}.npy" for i in range(3)], "entropy", 40)
    np.testing.assert_array_equal(listed.index, idx)


def test_load_reads_like_the_cli(tmp_path, rng):
    a = rng.standard_normal((10, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    b = quarry.load(tmp_path / "a.npy")
    np.testing.assert_array_equal(a, b)
    assert not b.flags.writeable
    with pytest.raises(quarry.Error, match="a.npz"):
        (tmp_path / "a.npz").write_bytes(b"PK\x03\x04 not a zip")
        quarry.load(str(tmp_path / "a.npz") + ":x")


# ------------------------------------------------------------------ zero copy

def test_engine_reads_the_callers_memory(rng):
    p = softmax_rows(rng, 1000, 10)
    assert quarry._core.view_info(p)["data"] == p.ctypes.data
    t = torch.from_numpy(p.copy())
    info = quarry._core.view_info(t.__dlpack__())
    assert info["data"] == t.data_ptr() and info["contiguous"] and info["location"] == "host"
    # A column slice keeps its strides: the engine sees the caller's pointer and copies it once.
    s = t[:, 2:7]
    info = quarry._core.view_info(s.__dlpack__())
    assert info["data"] == s.data_ptr() and not info["contiguous"] and info["strides"] == [10, 1]


ZERO_COPY_SCRIPT = r"""
import resource, sys, numpy as np, torch, quarry
n, c = 4_000_000, 10
x = torch.rand(n, c)                        # 160 MB
x /= x.sum(1, keepdim=True)
x.numpy().sum()                             # every page touched before the mark
quarry.score(x[:10], "entropy")             # the module loaded and warmed
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s = quarry.score(x, "entropy")
pick = quarry.score_and_select(x, "entropy", 1000)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024, x.numel() * 4 >> 20)
"""


def test_no_allocation_of_the_inputs_size():
    import subprocess, sys
    r = subprocess.run([sys.executable, "-c", ZERO_COPY_SCRIPT], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    grown_mib, input_mib = map(int, r.stdout.split())
    # The scores are 16 MiB (N float32); a copy of the input would add 160 MiB.
    assert grown_mib < input_mib // 4, (grown_mib, input_mib)


def test_non_contiguous_and_other_dtypes(rng):
    p = softmax_rows(rng, 400, 6, np.float64)
    expected = quarry.score(np.ascontiguousarray(p), "entropy")
    t = torch.from_numpy(p).t().contiguous().t()  # column-major: strides (1, 400)
    assert not t.is_contiguous()
    np.testing.assert_array_equal(quarry.score(t, "entropy").numpy(), expected)
    np.testing.assert_array_equal(quarry.score(p[::1, :], "entropy"), expected)
    wide = np.zeros((400, 12))
    wide[:, ::2] = p
    np.testing.assert_array_equal(quarry.score(wide[:, ::2], "entropy"), expected)  # NumPy strides
    half = torch.from_numpy(p).to(torch.float16)
    np.testing.assert_allclose(quarry.score(half, "entropy").numpy(), expected, atol=2e-2)
    bf = torch.from_numpy(p).to(torch.bfloat16)
    np.testing.assert_allclose(quarry.score(bf, "entropy").numpy(), expected, atol=5e-2)
    assert quarry.score(p.tolist(), "entropy").shape == (400,)  # nested lists: converted once
    with pytest.raises(quarry.Error, match="expected float32, float16, bfloat16 or float64, got int64"):
        quarry.score(torch.ones(10, 3, dtype=torch.int64), "entropy")
    with pytest.raises(quarry.UsageError, match="scores: expected float32"):
        quarry.select(np.ones(10, dtype=np.int32), 3)
    big_endian = p.astype(">f8")
    np.testing.assert_array_equal(quarry.score(big_endian, "entropy"), expected)
    g = torch.from_numpy(p).requires_grad_()
    np.testing.assert_array_equal(quarry.score(g, "entropy").numpy(), expected)


def test_errors_carry_the_engines_messages(rng):
    p = softmax_rows(rng, 100, 4)
    p[37, 1] = np.nan
    with pytest.raises(quarry.Error, match="row 37"):
        quarry.score(p, "entropy")
    with pytest.raises(quarry.UsageError, match="only 100 are selectable"):
        quarry.score_and_select(softmax_rows(rng, 100, 4), "entropy", 101)
    with pytest.raises(ValueError):  # a UsageError is a ValueError too
        quarry.select(np.ones(5, np.float32), 6)
    with pytest.raises(quarry.Error, match="unknown acquisition|valid"):
        quarry.score(p, "entropie")
    with pytest.raises(quarry.Error, match="needs a committee"):
        quarry.score(softmax_rows(rng, 10, 3), "bald")
    with pytest.raises(quarry.Error, match="excluded index 500"):
        quarry.select(np.ones(10, np.float32), 2, exclude=[500])
    with pytest.raises(quarry.UsageError, match="expected 'topk' or 'power'"):
        quarry.select(np.ones(10, np.float32), 2, strategy="best")
    with pytest.raises(quarry.Error, match="expected an array"):
        quarry.score(object(), "entropy")
    with pytest.raises(quarry.Error, match="no-such"):
        quarry.stream_select("/nonexistent/no-such-*.npy", "entropy", 3)


@pytest.mark.skipif(quarry._core.cuda_device_count() > 0, reason="a GPU is present")
def test_cuda_requests_without_a_gpu_are_clear_errors(rng):
    with pytest.raises(quarry.Error, match="cuda"):
        quarry.score(softmax_rows(rng, 10, 3), "entropy", device="cuda")


def test_the_gil_is_released_during_work():
    x = torch.rand(3_000_000, 20)
    x /= x.sum(1, keepdim=True)
    quarry.set_threads(1)
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    try:
        t.start()
        time.sleep(0.01)
        start = time.perf_counter()
        for _ in range(3):
            quarry.score_and_select(x, "entropy", 100)
        end = time.perf_counter()
    finally:
        done.set()
        t.join()
        quarry.set_threads(0)
    during = [s for s in ticks if start < s < end]
    # The other thread kept running: ticks all through the calls, not just at their ends.
    assert end - start > 0.05 and len(during) >= 10, (end - start, len(during))


@pytest.mark.skipif(not torch.cuda.is_available() or quarry._core.cuda_device_count() == 0,
                    reason="no CUDA device")
def test_cuda_tensors_are_scored_in_place(rng):
    p = torch.from_numpy(softmax_rows(rng, 100_000, 10)).cuda()
    expected = quarry.score(p.cpu(), "entropy")
    s = quarry.score(p, "entropy")
    assert s.device == p.device
    torch.testing.assert_close(s.cpu(), expected, rtol=1e-5, atol=1e-6)
    pick = quarry.score_and_select(p, "entropy", 100)
    ref = quarry.score_and_select(p.cpu(), "entropy", 100)
    assert pick.index.device == p.device
    np.testing.assert_array_equal(pick.index.cpu().numpy(), ref.index.numpy())
    with pytest.raises(quarry.UsageError, match="CUDA memory"):
        quarry.score(p, "entropy", device="cpu")


def test_arguments_are_checked_not_coerced(rng):
    p = softmax_rows(rng, 50, 4)
    for bad in (2.9, True, "3", -1):
        with pytest.raises(quarry.UsageError, match="k must be"):
            quarry.score_and_select(p, "entropy", bad)
    assert len(quarry.score_and_select(p, "entropy", np.int64(3)).index) == 3
    with pytest.raises(quarry.UsageError, match="seed"):
        quarry.select(quarry.score(p), 3, strategy="power", seed=-1)
    for bad in (-5.0, float("nan")):
        with pytest.raises(quarry.UsageError, match="tolerance"):
            quarry.score(p, "entropy", tolerance=bad)
    with pytest.raises(quarry.UsageError, match="comma"):
        quarry.stream_select(["/tmp/a,b.npy"], "entropy", 1)


def test_any_layout_and_float_scores_are_accepted(rng):
    p = softmax_rows(rng, 50, 4)
    expected = quarry.score(p, "entropy")
    np.testing.assert_array_equal(quarry.score(p[::-1], "entropy"), expected[::-1])  # negative strides: one copy
    np.testing.assert_allclose(quarry.score(p[:, ::-1], "entropy"), expected, rtol=1e-6)  # summed in another order
    s64 = expected.astype(np.float64)
    np.testing.assert_array_equal(quarry.select(s64, 5).index, quarry.select(expected, 5).index)
    np.testing.assert_array_equal(quarry.select(torch.from_numpy(s64), 5).index.numpy(), quarry.select(expected, 5).index)
