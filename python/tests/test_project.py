"""quarry.Project against `quarry project` on the same folder."""
import json
import os

import numpy as np
import pytest

import quarry

pytest.importorskip("quarry._loop")


def test_project_round_trip(tmp_path, cli):
    d = tmp_path / "proj"
    p = quarry.Project.init(d, "synthetic:600", classes=["a", "b", "c"], strategy="entropy", seed=4, device="cpu")
    assert p.classes == ["a", "b", "c"] and p.config["pool_size"] == 600
    b1 = p.next(k=12)
    assert b1["number"] == 1 and b1["cold_start"] and len(b1["index"]) == 12
    # Labels as a mapping (class names and ids) and as pairs.
    first = {int(i): ["a", "b", "c"][n % 3] for n, i in enumerate(b1["index"][:6])}
    r = p.label(first)
    assert r["added"] == 6 and r["saved"]
    r = p.label([(int(i), n % 3) for n, i in enumerate(b1["index"][6:])])
    assert r["added"] == 6 and r["labels"] == 12
    assert p.labels == {**first, **{int(i): ["a", "b", "c"][n % 3] for n, i in enumerate(b1["index"][6:])}}
    logs = []
    b2 = p.next(k=10, log=logs.append)
    assert b2["number"] == 2 and b2["retrained"] and not set(b2["index"]) & set(p.labels)
    assert logs, "progress lines reach the callback"
    status = p.status()
    cli_status = json.loads(cli("project", "status", d, "--format", "json").stdout)
    assert status["labeled"] == cli_status["labeled"] == 12
    assert status["per_class"] == cli_status["per_class"]
    assert status["open_batch"] == 2
    assert p.export() == cli("project", "export", d).stdout
    out = p.export(tmp_path / "labels.npy")
    arr = np.load(out)
    assert arr.shape == (12, 2) and arr.dtype == np.int64
    with pytest.raises(quarry.UsageError, match="inside the project folder"):
        p.export(d / "labels.csv")
    assert [b["number"] for b in p.batches()] == [1, 2]


def test_project_errors(tmp_path):
    with pytest.raises(quarry.Error, match="project"):
        quarry.Project(tmp_path / "missing")
    p = quarry.Project.init(tmp_path / "p", "synthetic:100", classes=["x", "y"], device="cpu")
    with pytest.raises(quarry.Error, match="zebra"):
        p.label({3: "zebra"})
    with pytest.raises(quarry.UsageError, match="class id 5"):
        p.label({3: 5})
    for bad in ({3.7: "x"}, {True: "x"}, 5, None):
        with pytest.raises(quarry.UsageError):
            p.label(bad)
    with pytest.raises(quarry.Error, match="item 0: .*-1"):
        p.label({-1: "x"})
    assert p.status()["labeled"] == 0  # nothing of a bad import is saved
    with pytest.raises(quarry.UsageError, match="threads"):
        quarry.Project.init(tmp_path / "q", "synthetic:100", threads=-3)
    assert not (tmp_path / "q").exists()
    with pytest.raises(quarry.UsageError, match="a list of class names"):
        quarry.Project.init(tmp_path / "q", "synthetic:100", classes="abcd")
    with pytest.raises(quarry.UsageError, match="k must be"):
        p.next(k=0)


def test_export_never_overwrites_what_the_project_reads(tmp_path):
    pool = tmp_path / "feat.npy"
    np.save(pool, np.random.default_rng(0).standard_normal((60, 5)).astype(np.float32))
    p = quarry.Project.init(tmp_path / "p", f"pool:{pool}", classes=["a", "b"], device="cpu")
    p.label({0: "a", 1: "b"})
    with pytest.raises(quarry.UsageError, match="a file the project reads"):
        p.export(pool)
    with pytest.raises(quarry.UsageError, match="folder"):
        p.export(tmp_path)
    with pytest.raises(quarry.UsageError, match="does not exist"):
        p.export(tmp_path / "missing" / "x.csv")
    out = p.export(tmp_path / "labels.csv")
    assert (os.stat(out).st_mode & 0o777) == 0o666 & ~current_umask()
    assert p.export(tmp_path / "labels.NPY").endswith(".NPY") and np.load(tmp_path / "labels.NPY").shape == (2, 2)


def current_umask():
    u = os.umask(0)
    os.umask(u)
    return u


def test_balanced_strategy_and_target(tmp_path):
    p = quarry.Project.init(tmp_path / "p", "synthetic:100", classes=["a", "b", "c", "d"],
                            strategy="balanced:batchbald", balance_target=[1, 1, 2, 0], device="cpu")
    assert p.config["strategy"] == "balanced:batchbald"
    assert p.config["balance_target"] == "1.0,1.0,2.0,0.0"
    assert quarry.Project.init(tmp_path / "q", "synthetic:100", strategy="batchbald").config["balance_target"] == ""
    with pytest.raises(quarry.UsageError, match="4 classes"):
        quarry.Project.init(tmp_path / "r", "synthetic:100", strategy="balanced:entropy", balance_target="1,1")
    with pytest.raises(quarry.UsageError, match="is for a balanced:NAME strategy"):
        quarry.Project.init(tmp_path / "s", "synthetic:100", strategy="entropy", balance_target="1,1,1,1")
    with pytest.raises(quarry.UsageError, match="does not nest"):
        quarry.Project.init(tmp_path / "t", "synthetic:100", strategy="balanced:balanced:entropy")
    # batchbald's restart share: kept in the configuration; only for a batchbald strategy, within [0, 1].
    assert p.config["batchbald_restart"] == 0.5
    r = quarry.Project.init(tmp_path / "u", "synthetic:100", strategy="batchbald", batchbald_restart=np.float32(0.25))
    assert r.config["batchbald_restart"] == 0.25
    with pytest.raises(quarry.UsageError, match="batchbald_restart is for strategy batchbald"):
        quarry.Project.init(tmp_path / "v", "synthetic:100", strategy="entropy", batchbald_restart=0.2)
    with pytest.raises(quarry.UsageError, match=r"batchbald_restart must be in \[0, 1\], got 1.5"):
        quarry.Project.init(tmp_path / "w", "synthetic:100", strategy="batchbald", batchbald_restart=1.5)
    with pytest.raises(quarry.UsageError, match="not None"):
        quarry.Project.init(tmp_path / "x", "synthetic:100", strategy=None, batchbald_restart=0.3)


def test_cold_start_over_given_embeddings(tmp_path):
    # Five tight, far-apart clusters: typiclust's first batch of five takes one item from each.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 10
    e = (centres[np.arange(100) % 5] + rng.normal(size=(100, 8)) * 0.1).astype(np.float32)
    np.save(tmp_path / "e.npy", e)
    p = quarry.Project.init(tmp_path / "p", "synthetic:100", strategy="entropy", seed_strategy="typiclust",
                            seed_embeddings=tmp_path / "e.npy", device="cpu")
    assert p.config["seed_strategy"] == "typiclust"
    assert p.config["seed_embeddings"] == str(tmp_path / "e.npy")
    batch = p.next(k=5)
    assert batch["strategy"] == "typiclust (cold start)"
    assert sorted(i % 5 for i in batch["index"]) == [0, 1, 2, 3, 4]
    np.save(tmp_path / "short.npy", e[:99])
    with pytest.raises(quarry.Error, match=r"short\.npy: expected the cold start's embeddings \[100, D\]"):
        quarry.Project.init(tmp_path / "q", "synthetic:100", seed_strategy="typiclust",
                            seed_embeddings=tmp_path / "short.npy")
    with pytest.raises(quarry.UsageError, match="--seed-embeddings is for --seed-strategy typiclust or probcover"):
        quarry.Project.init(tmp_path / "r", "synthetic:100", seed_embeddings=tmp_path / "e.npy")
    assert not (tmp_path / "q" / "project.json").exists()
    bad = e.copy()
    bad[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(quarry.Error, match=r"nan\.npy.*row 7"):
        quarry.Project.init(tmp_path / "n", "synthetic:100", seed_strategy="typiclust",
                            seed_embeddings=tmp_path / "nan.npy")
    # The file init checked may not change under the project: its next cold-start batch refuses.
    np.save(tmp_path / "e.npy", e[::-1].copy())
    with pytest.raises(quarry.Error, match=r"e\.npy \(the project's seed_embeddings.*changed since `project init`"):
        p.next(k=5)
    (tmp_path / "e.npy").unlink()
    with pytest.raises(quarry.Error, match=r"e\.npy \(the project's seed_embeddings.*are gone \(no such file\)"):
        p.next(k=5)
    np.save(tmp_path / "e.npy", e)
    assert len(p.next(k=5)["index"]) == 5
    # An array is not a path: a clear error, not NumPy's ambiguous truth value.
    with pytest.raises(TypeError):
        quarry.Project.init(tmp_path / "a", "synthetic:100", seed_strategy="typiclust", seed_embeddings=e)


def _bars(n, size=12, seed=0):
    """n images [n, size, size] uint8: horizontal bars (even i) and vertical bars (odd i)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        at = rng.integers(2, size - 2)
        if i % 2:
            x[i, :, at - 1:at + 1] = 255
        else:
            x[i, at - 1:at + 1, :] = 255
    return x


def test_pretrain_embeddings(tmp_path):
    x = _bars(48)
    e = quarry.pretrain(x, epochs=2, batch_size=16, seed=3, device="cpu", threads=1)
    assert e.shape == (48, 128) and e.dtype == np.float32
    assert np.all(np.isfinite(e)) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    # uint8 is scaled by 1/255: the same pixels as floats give the same embeddings, as does the
    # channel axis given explicitly; the same seed repeats, another differs.
    same = quarry.pretrain(x[:, None].astype(np.float32) / 255, epochs=2, batch_size=16, seed=3, device="cpu",
                           threads=1)
    np.testing.assert_allclose(same, e, atol=1e-5)
    other = quarry.pretrain(x, epochs=2, batch_size=16, seed=4, device="cpu", threads=1)
    assert not np.allclose(other, e, atol=1e-3)
    # The embeddings serve a project's cold start over the same images.
    np.save(tmp_path / "e.npy", e)
    np.save(tmp_path / "bars.npy", x)
    p = quarry.Project.init(tmp_path / "p", f"pool:{tmp_path / 'bars.npy'}", classes=["h", "v"], strategy="entropy",
                            seed_strategy="typiclust", seed_embeddings=tmp_path / "e.npy", device="cpu")
    batch = p.next(k=4)
    assert batch["strategy"] == "typiclust (cold start)" and len(set(batch["index"])) == 4
    # Pixels as the pool: data sets read them: floats in 0..255 and integers are divided by 255,
    # and channels-last arrays are seen as such.
    for same in (x.astype(np.float32), x.astype(np.int64), x[..., None], x[:, None]):
        np.testing.assert_allclose(quarry.pretrain(same, epochs=2, batch_size=16, seed=3, device="cpu", threads=1), e,
                                   atol=1e-5)
    bad = x.astype(np.float32)
    bad[5, 3, 4] = np.nan
    with pytest.raises(quarry.Error, match=r"image 5 has a value \(nan\) outside \[0, 255\]"):
        quarry.pretrain(bad, epochs=1, device="cpu")
    with pytest.raises(quarry.Error, match=r"image 2 has a value \(-0.5\) outside \[0, 1\]"):
        quarry.pretrain(np.concatenate([np.zeros((2, 8, 8)), np.full((1, 8, 8), -0.5)]), epochs=1)
    with pytest.raises(quarry.Error, match=r"image 0 has a value \(300.0\) outside \[0, 255\]"):
        quarry.pretrain(np.full((2, 8, 8), 300.0), epochs=1)
    with pytest.raises(quarry.UsageError, match=r"\[N, H, W\], \[N, C, H, W\] or \[N, H, W, C\]"):
        quarry.pretrain(x[0], epochs=1)
    with pytest.raises(quarry.UsageError, match="integer or float"):
        quarry.pretrain(x > 0, epochs=1)
    with pytest.raises(quarry.UsageError, match="learning rate in"):
        quarry.pretrain(x, lr=5.0, epochs=1, device="cpu")
    with pytest.raises(quarry.UsageError, match="epochs must be between"):
        quarry.pretrain(x, epochs=0)
    with pytest.raises(quarry.Error, match="at least 8x8"):
        quarry.pretrain(np.zeros((4, 6, 6), np.float32), epochs=1, device="cpu")
