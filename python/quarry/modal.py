"""Drop-in replacements for modAL's query strategies, computed by quarry's engine.

Switching is one import line::

    # from modAL.uncertainty import entropy_sampling
    from quarry.modal import entropy_sampling
    learner = ActiveLearner(estimator=clf, query_strategy=entropy_sampling)

The signatures and return values are modAL's (0.4): ``strategy(classifier, X, n_instances=1,
random_tie_break=False, **predict_proba_kwargs)`` returns ``(query_idx, values)``, the pool
indices chosen and the value modAL's own function would report for each:

=============================== ================================ ===================================
function                        modAL's value                    quarry score it comes from
=============================== ================================ ===================================
uncertainty_sampling            1 - max_c p_c                    least-confidence
margin_sampling                 -(p(1) - p(2))                   margin - 1
entropy_sampling                entropy (nats)                   entropy
vote_entropy_sampling           entropy of the committee's votes vote-entropy
consensus_entropy_sampling      entropy of the mean probability  consensus-entropy
max_disagreement_sampling       max KL(learner ‖ consensus)      kl-max
=============================== ================================ ===================================

Differences from modAL, all documented: the indices come best first (modAL's argpartition
leaves them unordered), ties go to the lower index, and ``random_tie_break=True`` breaks ties
with a seeded shuffle (``seed``, default 0) instead of NumPy's global generator. Classifiers are
anything with ``predict_proba`` (a committee: anything with ``learner_list``, or a list of
classifiers); the probabilities are read by quarry without a copy.
"""
from __future__ import annotations

import numpy as _np

import quarry as _q

__all__ = [
    "uncertainty_sampling", "margin_sampling", "entropy_sampling", "vote_entropy_sampling",
    "consensus_entropy_sampling", "max_disagreement_sampling", "classifier_uncertainty",
    "classifier_margin", "classifier_entropy", "vote_entropy", "consensus_entropy",
    "KL_max_disagreement",
]


def _proba(classifier, X, kwargs):
    p = classifier.predict_proba(X, **kwargs)
    return _np.ascontiguousarray(p) if isinstance(p, _np.ndarray) else p


def _as_numpy(p):
    if hasattr(p, "detach") and hasattr(p, "cpu"):  # a torch tensor
        p = p.detach().cpu().numpy()
    return _np.asarray(p, dtype=_np.float64)


def _committee_proba(committee, X, kwargs):
    learners = getattr(committee, "learner_list", committee)
    if hasattr(learners, "predict_proba") or not hasattr(learners, "__iter__"):
        raise _q.UsageError("a committee is a list of classifiers (or has learner_list), got "
                            f"{type(committee).__name__}")
    members = [_as_numpy(learner.predict_proba(X, **kwargs)) for learner in learners]
    if not members:
        raise _q.UsageError("the committee has no learners")
    shapes = {m.shape for m in members}
    if len(shapes) != 1:
        raise _q.UsageError(f"the committee's members give outputs of different shapes: {sorted(shapes)}")
    return _np.ascontiguousarray(_np.stack(members))


def _query(values, n_instances, random_tie_break, seed):
    values = _np.asarray(values)
    n = values.shape[0]
    if n_instances > n:
        raise _q.UsageError(f"n_instances = {n_instances} is larger than the pool ({n} samples)")
    if not random_tie_break:
        pick = _q.select(_np.ascontiguousarray(values, dtype=_np.float32), n_instances)
        return pick.index, values[pick.index]
    # Ties in a seeded random order: top-k over a shuffled copy, mapped back.
    order = _np.random.default_rng(seed).permutation(n)
    pick = _q.select(_np.ascontiguousarray(values[order], dtype=_np.float32), n_instances)
    index = order[pick.index]
    return index, values[index]


def classifier_uncertainty(classifier, X, **predict_proba_kwargs):
    """1 - max_c p_c for every sample (modAL's classifier_uncertainty)."""
    return _q.score(_proba(classifier, X, predict_proba_kwargs), "least-confidence")


def classifier_margin(classifier, X, **predict_proba_kwargs):
    """p(1) - p(2), the margin between the two most probable classes (modAL's classifier_margin)."""
    return 1.0 - _q.score(_proba(classifier, X, predict_proba_kwargs), "margin")


def classifier_entropy(classifier, X, **predict_proba_kwargs):
    """Entropy of the class probabilities in nats (modAL's classifier_entropy)."""
    return _q.score(_proba(classifier, X, predict_proba_kwargs), "entropy")


def vote_entropy(committee, X, **predict_proba_kwargs):
    """Entropy of the committee's hard votes (modAL's vote_entropy)."""
    return _q.score(_committee_proba(committee, X, predict_proba_kwargs), "vote-entropy")


def consensus_entropy(committee, X, **predict_proba_kwargs):
    """Entropy of the committee's mean probabilities (modAL's consensus_entropy)."""
    return _q.score(_committee_proba(committee, X, predict_proba_kwargs), "consensus-entropy")


def KL_max_disagreement(committee, X, **predict_proba_kwargs):  # noqa: N802 (modAL's name)
    """max over learners of KL(learner ‖ consensus) (modAL's KL_max_disagreement)."""
    return _q.score(_committee_proba(committee, X, predict_proba_kwargs), "kl-max")


def uncertainty_sampling(classifier, X, n_instances: int = 1, random_tie_break: bool = False,
                         seed: int = 0, **predict_proba_kwargs):
    """The n_instances samples of least confidence. Returns (query_idx, 1 - max_c p_c)."""
    return _query(classifier_uncertainty(classifier, X, **predict_proba_kwargs), n_instances, random_tie_break, seed)


def margin_sampling(classifier, X, n_instances: int = 1, random_tie_break: bool = False,
                    seed: int = 0, **predict_proba_kwargs):
    """The n_instances samples of smallest margin. Returns (query_idx, -(p(1) - p(2)))."""
    return _query(-classifier_margin(classifier, X, **predict_proba_kwargs), n_instances, random_tie_break, seed)


def entropy_sampling(classifier, X, n_instances: int = 1, random_tie_break: bool = False,
                     seed: int = 0, **predict_proba_kwargs):
    """The n_instances samples of largest predictive entropy. Returns (query_idx, entropy)."""
    return _query(classifier_entropy(classifier, X, **predict_proba_kwargs), n_instances, random_tie_break, seed)


def vote_entropy_sampling(committee, X, n_instances: int = 1, random_tie_break: bool = False,
                          seed: int = 0, **predict_proba_kwargs):
    """Query by committee: the largest vote entropy. Returns (query_idx, vote entropy)."""
    return _query(vote_entropy(committee, X, **predict_proba_kwargs), n_instances, random_tie_break, seed)


def consensus_entropy_sampling(committee, X, n_instances: int = 1, random_tie_break: bool = False,
                               seed: int = 0, **predict_proba_kwargs):
    """Query by committee: the largest consensus entropy. Returns (query_idx, consensus entropy)."""
    return _query(consensus_entropy(committee, X, **predict_proba_kwargs), n_instances, random_tie_break, seed)


def max_disagreement_sampling(committee, X, n_instances: int = 1, random_tie_break: bool = False,
                              seed: int = 0, **predict_proba_kwargs):
    """Query by committee: the largest KL disagreement. Returns (query_idx, max KL)."""
    return _query(KL_max_disagreement(committee, X, **predict_proba_kwargs), n_instances, random_tie_break, seed)
