"""quarry.Project: the labeling project (the folder `quarry project init` makes) from Python."""
from __future__ import annotations

import csv
import io
import operator
import os
import re
import tempfile
from typing import Callable, Mapping, Optional, Sequence, Union

import quarry as _q


def _loop():
    # The project links LibTorch: loaded on first use, so that `import quarry` stays light.
    from . import _loop as loop
    return loop


def _weights(target) -> str:
    """balance_target as the text project.json keeps: "" (uniform), "0.5,0.5"."""
    if target is None or isinstance(target, str):
        return target or ""
    try:
        return ",".join(repr(float(w)) for w in target)
    except (TypeError, ValueError):
        raise _q.UsageError(f"balance_target: {target!r}: one number per class, e.g. [0.5, 0.5]") from None


class Project:
    """A labeling project: labels in an append-only, checksummed journal (fsync'd before a call
    returns), batches for annotators, and the model trained on the labels. The same folder the
    command line uses (``quarry project ...``); every method reads the folder again, so a
    Project object and the command line may be used side by side.

        p = quarry.Project.init("proj", dataset="npz:pneumonia.npz", classes=["normal", "pneumonia"])
        batch = p.next(k=50)                   # dict: number, index, score, csv, labelstudio, ...
        p.label({batch["index"][0]: "pneumonia", batch["index"][1]: "normal"})
        p.status()["labeled"]
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = os.fspath(path)
        self._config = _loop().config(self.path)  # opens it: a missing or damaged project is an Error

    @classmethod
    def init(cls, path, dataset: str, *, classes: Optional[Sequence[str]] = None, strategy: str = "entropy",
             model: str = "", committee: str = "mc:10", manifest: Optional[str] = None, seed: int = 0,
             device: str = "auto", threads: int = 0,
             balance_target: Union[str, Sequence[float], None] = None, seed_strategy: str = "random",
             seed_embeddings: Optional[Union[str, "os.PathLike[str]"]] = None,
             batchbald_restart: Optional[float] = None) -> "Project":
        """Create a project in a new or empty folder (as ``quarry project init``).

        dataset: the pool: pool:X.npy, idx:DIR, npz:FILE, npy:X.npy,y.npy, synthetic[:N] (its labels
            are never used as labels; a validation split, where it has one, measures the model).
        classes: class names (default: the dataset's class ids).  strategy: random, an acquisition
            (entropy, margin, bald, ...), a diversity strategy (badge, kcenter, ...), batchbald, or
            balanced:NAME (NAME per predicted class, toward balance_target).
        model: cnn, mlp or torchscript:FILE (default: cnn for images, mlp for features).
        committee: committee of committee strategies: mc:M or ensemble:M.
        balance_target: balanced:NAME's target class distribution, one weight per class
            ("0.5,0.5" or [0.5, 0.5]; default uniform).
        manifest: CSV index,id,path_or_url: what annotators see for each item.
        seed_strategy: the batches before there is a model (the cold start): random, typiclust or
            probcover (the most typical / covering items first), over seed_embeddings: a .npy
            [pool, D] with one row per item, e.g. from ``quarry pretrain`` (default: the pool's inputs).
        batchbald_restart: batchbald (or balanced:batchbald) only: a new joint batch starts when the
            best gain falls below this share of the best a fresh one could gain (default 0.5; 0: one
            joint batch, the paper's).
        """
        if isinstance(classes, str):
            raise _q.UsageError("classes: a list of class names, not one string (did you mean classes.split(',')?)")
        restart = 0.5
        if batchbald_restart is not None:
            restart = _q._float(batchbald_restart, "batchbald_restart") + 0.0
            if not 0 <= restart <= 1:
                raise _q.UsageError(f"batchbald_restart must be in [0, 1], got {batchbald_restart!r}")
            if not isinstance(strategy, str) or strategy.split(":")[-1] != "batchbald":
                raise _q.UsageError(f"batchbald_restart is for strategy batchbald (or balanced:batchbald), "
                                    f"not {strategy!r}")
        _loop().init(os.fspath(path), dataset, list(classes or []), strategy, model, committee,
                     os.fspath(manifest) if manifest else "", _q._int(seed, "seed", 0, 2**63),
                     device, _q._int(threads, "threads", 0, 4096), _weights(balance_target), seed_strategy,
                     os.fspath(seed_embeddings) if seed_embeddings is not None else "",
                     restart)
        return cls(path)

    @property
    def config(self) -> dict:
        return dict(self._config)

    @property
    def classes(self) -> list:
        return list(self._config["classes"])

    def next(self, k: int = 100, *, replace_pending: bool = False, retrain: bool = False, wait: float = 10,
             log: Optional[Callable[[str], None]] = None) -> dict:
        """Retrain on the labels if they changed, score the pool and write the next batch (as
        ``quarry project next``). Returns the batch: number, index, score, strategy, csv and
        labelstudio (the files written), retrained, cold_start, dropped. ``log`` receives progress
        lines."""
        return _loop().next(self.path, _q._int(k, "k", 1), replace_pending, retrain, float(wait), log)

    def label(self, labels, *, allow_relabel: bool = False, wait: float = 10) -> dict:
        """Import labels, all or none (as ``quarry project label``).

        labels: a file (CSV index,label or id,label, or a Label Studio JSON export), a mapping
            {index: label}, or a sequence of (index, label) pairs; a label is a class name or a
            class id (an int).
        Returns what was imported: rows, added, relabeled, unchanged, saved, labels (in all).
        When it returns, the labels are durable (fsync'd to the journal).
        """
        if isinstance(labels, (str, os.PathLike)):
            return _loop().label(self.path, os.fspath(labels), allow_relabel, float(wait))
        if not isinstance(labels, Mapping) and not hasattr(labels, "__iter__"):
            raise _q.UsageError(f"labels: expected a file, a mapping {{index: label}} or (index, label) pairs, "
                                f"got {type(labels).__name__}")
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        classes = self.classes
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(["index", "label"])
        for row, pair in enumerate(pairs):
            try:
                index, label = pair
            except (TypeError, ValueError):
                raise _q.UsageError(f"labels: item {row}: expected an (index, label) pair, got {pair!r}") from None
            if isinstance(label, bool) or not isinstance(label, (str, int)) and not hasattr(label, "__index__"):
                raise _q.UsageError(f"labels: item {row}: expected a class name or id, got {label!r}")
            if not isinstance(label, str):
                cid = int(label)
                if not 0 <= cid < len(classes):
                    raise _q.UsageError(f"labels: item {row}: class id {cid} is outside 0..{len(classes) - 1}")
                label = classes[cid]
            if isinstance(index, bool) or not hasattr(index, "__index__"):
                raise _q.UsageError(f"labels: item {row}: the index must be an integer, got {index!r}")
            out.writerow([operator.index(index), label])
        fd, tmp = tempfile.mkstemp(prefix="quarry-labels-", suffix=".csv")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text.getvalue())
            try:
                return _loop().label(self.path, tmp, allow_relabel, float(wait))
            except _q.Error as e:  # name the items, not the temporary file ("FILE:LINE:" -> "item N:")
                message = re.sub(re.escape(tmp) + r":(\d+):", lambda m: f"item {int(m.group(1)) - 2}:", str(e))
                raise type(e)(message.replace(tmp, "labels")) from None
        finally:
            os.unlink(tmp)

    def status(self) -> dict:
        """Labels, class balance, batches and the model's validation metrics (as ``quarry project
        status --format json``)."""
        return _loop().status(self.path)

    def batches(self) -> list:
        """Every batch: number, created, state (open, closed, dropped), index, score, strategy."""
        return _loop().batches(self.path)

    @property
    def labels(self) -> dict:
        """The current labels from the journal: {index: class name}."""
        by_id, classes = _loop().labels(self.path)
        return {i: classes[c] for i, c in by_id.items()}

    def export(self, path=None, *, format: Optional[str] = None):
        """The labels sorted by index (as ``quarry project export``): without ``path``, the CSV
        text (index,label); with one, the file is written (csv, or npy: [labels, 2] int64 of
        index and class id; the format follows the extension unless given). A path inside the
        project folder is refused."""
        if path is None:
            if format not in (None, "csv"):
                raise _q.UsageError("export without a path returns CSV text; give a path for npy")
            return _loop().export_csv(self.path)
        path = os.fspath(path)
        fmt = format or ("npy" if path.lower().endswith(".npy") else "csv")
        if fmt not in ("csv", "npy"):
            raise _q.UsageError(f"export format '{fmt}': expected csv or npy")
        if not path or os.path.isdir(path):
            raise _q.UsageError(f"export: '{path}' is a folder, not a file")
        target = os.path.realpath(path)
        folder = os.path.dirname(target)
        if not os.path.isdir(folder):
            raise _q.UsageError(f"export: {path}: the folder {os.path.dirname(path) or '.'} does not exist")
        root = os.path.realpath(self.path)
        if target == root or target.startswith(root + os.sep):
            raise _q.UsageError(f"{path}: is inside the project folder {self.path}; export elsewhere")
        for source in self._inputs():
            if os.path.exists(source) and os.path.exists(target) and os.path.samefile(source, target):
                raise _q.UsageError(f"{path}: is a file the project reads ({source}); export elsewhere")
        if fmt == "npy":
            _loop().export_npy(self.path, path)
        else:
            text = _loop().export_csv(self.path)
            folder = os.path.dirname(target) or "."
            fd, tmp = tempfile.mkstemp(prefix=".quarry-export-", dir=folder)
            try:
                # The permissions of the file it replaces, else the usual ones (mkstemp makes 0600).
                umask = os.umask(0)
                os.umask(umask)
                mode = os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o666 & ~umask
                os.chmod(tmp, mode)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return path

    def _inputs(self) -> list:
        """The files the project reads besides its own folder: the dataset's files, the model."""
        out = []
        for spec in (self._config.get("dataset", ""), self._config.get("model", "")):
            body = spec.split(":", 1)[1] if ":" in spec else spec
            for part in body.split(","):
                part = part.split(":")[0] if part.endswith((":train", ":test", ":val")) else part
                if part:
                    out.append(part if os.path.isabs(part) else os.path.join(os.getcwd(), part))
        return out

    def __repr__(self) -> str:
        return f"quarry.Project({self.path!r})"
