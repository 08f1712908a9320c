"""quarry.Query: a scikit-learn-style query strategy object for custom loops."""
from __future__ import annotations

from typing import Optional

import quarry as _q


class Query:
    """A query strategy with its settings, applied to each round's model outputs.

        q = quarry.Query("entropy", batch_size=100)
        for round in range(10):
            probs = model.predict_proba(X_pool)               # or a torch tensor, [N, C]
            idx = q.query(probs, labeled=labeled_idx)
            ...

    acquisition: any acquisition score (entropy, margin, bald, ...), or a diversity strategy
        (badge, kcenter, cluster-margin, uncertain-kcenter; these need ``embeddings``).
    batch_size: samples per query.
    strategy: topk or power (sampling with P ~ score^beta) for acquisition scores.
    logits: the outputs are logits.  seed: power sampling and the diversity strategies'
    draws; each call to query() advances it by one, so rounds differ but a run repeats.
    device: auto, cpu, cuda or cuda:N.
    options: ``tolerance``; for the diversity strategies also ``candidates``, ``clusters``,
    ``kmeans_iterations`` and ``acquisition_score`` (uncertain-kcenter's ranking score).

    ``q(classifier, X, n_instances)`` makes it a modAL query strategy as well: it calls
    ``classifier.predict_proba(X)`` and returns ``(query_idx, scores)``.
    """

    # The options each kind of strategy takes besides the named ones.
    _SCORE_OPTIONS = {"tolerance"}
    _DIVERSE_OPTIONS = {"tolerance", "candidates", "clusters", "kmeans_iterations", "acquisition_score"}

    def __init__(self, acquisition: str = "entropy", batch_size: int = 10, *, strategy: str = "topk",
                 beta: float = 1.0, logits: bool = False, seed: int = 0, device: str = "auto", **options):
        diverse = acquisition in _q.diversity_strategies()
        if not diverse and acquisition not in _q.acquisitions():
            raise _q.UsageError(f"unknown acquisition '{acquisition}': expected one of "
                                f"{', '.join(_q.acquisitions() + _q.diversity_strategies())}")
        allowed = self._DIVERSE_OPTIONS if diverse else self._SCORE_OPTIONS
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise _q.UsageError(f"Query({acquisition!r}): unknown option(s) {', '.join(unknown)}; "
                                f"it takes {', '.join(sorted(allowed))}")
        if strategy not in ("topk", "power"):
            raise _q.UsageError(f"strategy '{strategy}': expected 'topk' or 'power'")
        self.acquisition = acquisition
        self.batch_size = _q._int(batch_size, "batch_size", 0)
        self.strategy = strategy
        self.beta = float(beta)
        self.logits = bool(logits)
        self.seed = _q._int(seed, "seed", 0, 2**63)
        self.device = device
        self.options = dict(options)
        self.round = getattr(self, "round", 0)
        self.diverse = diverse

    def get_params(self, deep: bool = True) -> dict:
        return dict(acquisition=self.acquisition, batch_size=self.batch_size, strategy=self.strategy,
                    beta=self.beta, logits=self.logits, seed=self.seed, device=self.device, **self.options)

    def set_params(self, **params) -> "Query":
        """Changes settings, checked as the constructor checks them (the round count is kept)."""
        merged = self.get_params()
        merged.update(params)
        self.__init__(**merged)
        return self

    def query(self, outputs=None, *, embeddings=None, labeled=None, batch_size: Optional[int] = None) -> "_q.Selection":
        """The next batch: a Selection (index, score), best first, never one of ``labeled``."""
        k = self.batch_size if batch_size is None else _q._int(batch_size, "batch_size")
        seed = self.seed + self.round
        if self.diverse:
            if embeddings is None:
                raise _q.UsageError(f"{self.acquisition} needs embeddings [N, D]")
            opts = dict(self.options)
            if "acquisition_score" in opts:
                opts["acquisition"] = opts.pop("acquisition_score")
            pick = _q.select_diverse(embeddings, outputs, self.acquisition, k, exclude=labeled, seed=seed,
                                     logits=self.logits, device=self.device, **opts)
        else:
            pick = _q.score_and_select(outputs, self.acquisition, k, logits=self.logits, embeddings=embeddings,
                                       exclude=labeled, strategy=self.strategy, beta=self.beta, seed=seed,
                                       device=self.device, **self.options)
        self.round += 1  # only a round that chose a batch moves the seed on
        return pick

    def __call__(self, classifier, X, n_instances: Optional[int] = None, **predict_proba_kwargs):
        pick = self.query(classifier.predict_proba(X, **predict_proba_kwargs), batch_size=n_instances)
        return pick.index, pick.score

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"Query({args})"
