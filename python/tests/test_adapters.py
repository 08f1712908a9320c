"""quarry.modal against modAL's documented behaviour (its formulas, computed here with NumPy on
the same inputs; modAL itself is not a Debian package), and quarry.Query."""
import numpy as np
import pytest

import quarry
from quarry import modal
from conftest import softmax_rows


class Fixed:
    """A fitted classifier whose predict_proba returns given probabilities."""

    def __init__(self, p):
        self.p = p

    def predict_proba(self, X, **kwargs):
        assert len(X) == len(self.p)
        return self.p


class Committee:
    def __init__(self, members):
        self.learner_list = [Fixed(m) for m in members]


def entropy(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0).sum(axis=-1)


def modal_like_top(values, n):
    """modAL's multi_argmax: the n largest, unordered; compared as sets with their values."""
    idx = np.argpartition(-values, n - 1)[:n]
    return set(idx.tolist())


@pytest.fixture
def pool(rng):
    return softmax_rows(rng, 2000, 5).astype(np.float64)


def check(result, expected_values, n):
    idx, values = result
    assert isinstance(idx, np.ndarray) and idx.shape == (n,)
    # modAL's argpartition picks the same values (which of several tied samples may differ).
    top = expected_values[list(modal_like_top(expected_values, n))]
    np.testing.assert_allclose(np.sort(values), np.sort(top), rtol=1e-5, atol=1e-6)
    assert len(set(idx.tolist())) == n
    np.testing.assert_allclose(values, expected_values[idx], rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(values) <= 1e-7)  # best first


def test_uncertainty_margin_entropy_sampling(pool):
    X = np.zeros((len(pool), 3))
    clf = Fixed(pool)
    check(modal.uncertainty_sampling(clf, X, n_instances=25), 1 - pool.max(axis=1), 25)
    part = np.sort(pool, axis=1)
    check(modal.margin_sampling(clf, X, n_instances=25), -(part[:, -1] - part[:, -2]), 25)
    check(modal.entropy_sampling(clf, X, n_instances=25), entropy(pool), 25)
    np.testing.assert_allclose(modal.classifier_entropy(clf, X), entropy(pool), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(modal.classifier_margin(clf, X), part[:, -1] - part[:, -2], rtol=1e-5, atol=1e-6)


def test_committee_sampling(rng):
    members = [softmax_rows(rng, 1500, 4).astype(np.float64) for _ in range(5)]
    X = np.zeros((1500, 2))
    com = Committee(members)
    P = np.stack(members)
    mean = P.mean(axis=0)
    check(modal.consensus_entropy_sampling(com, X, n_instances=30), entropy(mean), 30)
    votes = P.argmax(axis=2)
    shares = np.stack([(votes == c).mean(axis=0) for c in range(4)], axis=1)
    check(modal.vote_entropy_sampling(com, X, n_instances=30), entropy(shares), 30)
    kl = (P * np.log(P / mean)).sum(axis=2).max(axis=0)
    check(modal.max_disagreement_sampling(com, X, n_instances=30), kl, 30)
    # A plain list of classifiers is a committee too.
    np.testing.assert_allclose(modal.consensus_entropy([Fixed(m) for m in members], X), entropy(mean), rtol=1e-5)


def test_random_tie_break_is_seeded_and_breaks_ties():
    p = np.full((100, 2), 0.5)
    X = np.zeros((100, 1))
    a, _ = modal.entropy_sampling(Fixed(p), X, n_instances=10, random_tie_break=True, seed=1)
    b, _ = modal.entropy_sampling(Fixed(p), X, n_instances=10, random_tie_break=True, seed=1)
    c, _ = modal.entropy_sampling(Fixed(p), X, n_instances=10, random_tie_break=True, seed=2)
    d, _ = modal.entropy_sampling(Fixed(p), X, n_instances=10)
    np.testing.assert_array_equal(a, b)
    assert set(a) != set(c)
    np.testing.assert_array_equal(d, np.arange(10))  # without: ties to the lower index
    with pytest.raises(quarry.UsageError, match="larger than the pool"):
        modal.entropy_sampling(Fixed(p), X, n_instances=101)


def test_query_object(rng, pool):
    q = quarry.Query("margin", batch_size=15)
    pick = q.query(pool, labeled=[0, 1, 2])
    expected = quarry.score_and_select(pool, "margin", 15, exclude=[0, 1, 2])
    np.testing.assert_array_equal(pick.index, expected.index)
    # As a modAL query strategy: (query_idx, scores).
    idx, scores = q(Fixed(pool), np.zeros((len(pool), 1)), n_instances=7)
    assert len(idx) == 7 and len(scores) == 7
    # Power sampling: each round a different seed, the same run twice the same.
    a = quarry.Query("entropy", 20, strategy="power")
    b = quarry.Query("entropy", 20, strategy="power")
    r1, r2 = a.query(pool).index, a.query(pool).index
    assert not np.array_equal(r1, r2)
    np.testing.assert_array_equal(b.query(pool).index, r1)
    e = rng.standard_normal((len(pool), 6)).astype(np.float32)
    d = quarry.Query("kcenter", 10)
    assert len(d.query(embeddings=e).index) == 10
    with pytest.raises(quarry.UsageError, match="needs embeddings"):
        d.query(pool)
    with pytest.raises(quarry.UsageError, match="unknown acquisition"):
        quarry.Query("entropie")
    assert "margin" in repr(q) and q.get_params()["batch_size"] == 15
    # set_params checks as the constructor does, and keeps the round.
    q.set_params(acquisition="kcenter")
    assert q.diverse and len(q.query(embeddings=e).index) == 15
    with pytest.raises(quarry.UsageError, match="unknown acquisition"):
        q.set_params(acquisition="nonsense")
    with pytest.raises(quarry.UsageError, match="unknown option"):
        quarry.Query("entropy", 3, candidates=5)
    with pytest.raises(quarry.UsageError, match="batch_size"):
        quarry.Query("entropy", 2.7)
    r = quarry.Query("badge", 5)
    with pytest.raises(quarry.UsageError):
        r.query(pool)  # no embeddings: the round does not move on
    assert r.round == 0


def test_committees_of_tensors_and_bad_committees(rng):
    torch = pytest.importorskip("torch")
    members = [softmax_rows(rng, 100, 3) for _ in range(3)]

    class T:
        def __init__(self, p):
            self.p = torch.from_numpy(p).requires_grad_()

        def predict_proba(self, X):
            return self.p * 1.0

    idx, _ = modal.vote_entropy_sampling([T(m) for m in members], np.zeros((100, 1)), n_instances=4)
    assert len(idx) == 4
    with pytest.raises(quarry.UsageError, match="list of classifiers"):
        modal.vote_entropy_sampling(Fixed(members[0]), np.zeros((100, 1)))
    with pytest.raises(quarry.UsageError, match="different shapes"):
        modal.consensus_entropy([Fixed(members[0]), Fixed(members[1][:, :2])], np.zeros((100, 1)))
