"""quarry.Project against `quarry project` on the same folder."""
import json

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
    assert p.status()["labeled"] == 0  # nothing of a bad import is saved
