"""TCA and TrialPCA: their maths, ground truth, rank selection, missing entries.

Their API contract (scikit-learn checks, clone, pickle, determinism, threads, bad
input...) is checked with every other class in test_common.py; the edge cases whose
handling is theirs (one time point, trial length, y, inputs, rank bounds) in
test_bad_input.py.

The rank-selection tests use planted CP data with noise smoothed along time (the
normal case for smoothed spike counts) and show that the co-smoothing score picks the
planted rank while a naive score -- per-trial parameters fitted on the very entries
that are scored -- keeps growing with rank.
"""

import numpy as np
import pytest
from _checks import BASELINES, assert_same_outputs, assert_same_state, class_id, outputs
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import nnls
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, KFold

from sklearn_ltr import TCA, TrialPCA
from sklearn_ltr.base import r2_observed
from sklearn_ltr.baselines import _masked_least_squares

# Some high-rank CP fits on noise stall in ALS "swamps" until max_iter; that is the
# nature of CP, not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Planted data of the rank-selection tests.
K, T, N, RANK = 60, 30, 25, 3
RANKS = [1, 2, 3, 4, 5]


def make_planted_cp(n_trials=K, n_timepoints=T, n_neurons=N, rank=RANK, noise=0.5,
                    random_state=0):
    """Planted non-negative CP tensor plus noise smoothed along time.

    Trial factors follow learning-like curves (a sigmoid, a decay, an oscillation),
    time factors are Gaussian bumps, neuron factors exponential weights. The noise is
    white noise filtered along time (sigma = 2 bins), scaled to ``noise`` times the
    standard deviation of the signal.

    Returns
    -------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
    factors : tuple of (C, T, N)
    """
    rng = np.random.RandomState(random_state)
    k = np.arange(n_trials) / n_trials
    C = np.stack([1.0 / (1.0 + np.exp(-(k - 0.5) * 10)), np.exp(-3 * k),
                  0.5 + 0.5 * np.sin(2 * np.pi * k) ** 2], axis=1)[:, :rank]
    C = C + 0.1 * rng.rand(n_trials, rank)
    t = np.arange(n_timepoints)
    centers = np.linspace(5, n_timepoints - 5, rank)
    Tf = np.exp(-0.5 * ((t[:, None] - centers) / 3.0) ** 2)
    Nf = rng.exponential(1.0, (n_neurons, rank))
    signal = np.einsum("kr,tr,nr->ktn", C, Tf, Nf)
    E = gaussian_filter1d(rng.standard_normal(signal.shape), 2.0, axis=1)
    E *= noise * signal.std() / E.std()
    return signal + E, (C, Tf, Nf)


@pytest.fixture(scope="module")
def planted():
    X, factors = make_planted_cp()
    X.setflags(write=False)
    return X, factors


@pytest.fixture(scope="module")
def X(planted):
    return planted[0]


@pytest.fixture(scope="module")
def fitted(X):
    return {Est: Est(rank=RANK, random_state=0).fit(X) for Est in BASELINES}


def _naive_r2(est, X, y=None):
    """Leaky score: per-trial parameters fitted on all entries, scored on the same."""
    return r2_observed(X, est.predict(X))


def _cv():
    return KFold(3, shuffle=True, random_state=0)


def _congruence(A, B):
    """Mean absolute cosine between matched columns (best of all permutations)."""
    from itertools import permutations

    A = A / np.linalg.norm(A, axis=0)
    B = B / np.linalg.norm(B, axis=0)
    cos = np.abs(A.T @ B)
    return max(np.mean(cos[np.arange(A.shape[1]), list(p)])
               for p in permutations(range(B.shape[1])))


# --------------------------------------------------------------------------- #
# 1. the fitted models
# --------------------------------------------------------------------------- #
def test_tca_attributes(fitted):
    tca = fitted[TCA]
    assert tca.trial_factors_.shape == (K, RANK)
    assert tca.time_factors_.shape == (T, RANK)
    assert tca.neuron_factors_.shape == (N, RANK)
    np.testing.assert_allclose(np.linalg.norm(tca.time_factors_, axis=0), 1.0)
    np.testing.assert_allclose(np.linalg.norm(tca.neuron_factors_, axis=0), 1.0)
    # Deterministic signs: the peak of every time and neuron factor is positive.
    for F in (tca.time_factors_, tca.neuron_factors_):
        assert np.all(F[np.argmax(np.abs(F), 0), np.arange(RANK)] > 0)
    # Components sorted by decreasing size.
    sizes = np.linalg.norm(tca.trial_factors_, axis=0)
    assert np.all(np.diff(sizes) <= 0)
    assert 0 < tca.reconstruction_error_ < 1
    assert tca.n_iter_ >= 1


def test_trialpca_matches_sklearn_pca(X, fitted):
    pca_est = fitted[TrialPCA]
    ref = PCA(n_components=RANK).fit(X.reshape(-1, N))
    np.testing.assert_allclose(pca_est.components_, ref.components_, atol=1e-10)
    np.testing.assert_allclose(pca_est.mean_, ref.mean_)
    np.testing.assert_allclose(pca_est.explained_variance_ratio_,
                               ref.explained_variance_ratio_)
    # With every neuron observed, least squares on orthonormal components is the
    # orthogonal projection, i.e. PCA's transform / inverse_transform.
    lat = pca_est.transform(X[:5])
    X5 = X[:5].reshape(-1, N)
    np.testing.assert_allclose(lat.reshape(-1, RANK), ref.transform(X5), atol=1e-6)
    np.testing.assert_allclose(
        pca_est.predict(X[:5]).reshape(-1, N),
        ref.inverse_transform(ref.transform(X5)), atol=1e-6)


def test_tca_transform_of_training_trials_matches_fit(X, fitted):
    # At convergence of ALS, each trial factor is the least-squares solution with the
    # other factors frozen, so inference on the training trials gives it back.
    tca = fitted[TCA]
    expected = tca.trial_factors_[:, None, :] * tca.time_factors_[None]
    np.testing.assert_allclose(tca.transform(X), expected, rtol=1e-3,
                               atol=1e-3 * np.abs(expected).max())
    recon = np.einsum("kr,tr,nr->ktn", tca.trial_factors_, tca.time_factors_,
                      tca.neuron_factors_)
    np.testing.assert_allclose(tca.predict(X), recon, atol=1e-3 * np.abs(recon).max())


@pytest.mark.parametrize("params", [
    dict(init="random", n_init=2),
    dict(nonneg=True, init="random", max_iter=100),
], ids=["random-n_init-2", "nonneg"])
def test_tca_same_random_state_identical_fit(params, X):
    # Further settings of the check of every class in test_common.py.
    a = TCA(rank=RANK, random_state=3, **params).fit(X)
    b = TCA(rank=RANK, random_state=3, **params).fit(X)
    assert_same_state(a, b)
    assert_same_outputs(outputs(a, X[:5]), outputs(b, X[:5]))


def test_tca_random_state_matters_for_random_init(X):
    # The seed is actually used (otherwise the test above could not fail).
    a = TCA(rank=RANK, init="random", max_iter=5, random_state=0).fit(X)
    b = TCA(rank=RANK, init="random", max_iter=5, random_state=1).fit(X)
    assert not np.allclose(a.time_factors_, b.time_factors_)


def test_tca_n_init_keeps_lowest_error(X):
    single = [TCA(rank=4, init="random", max_iter=20, random_state=s).fit(X)
              for s in range(3)]
    multi = TCA(rank=4, init="random", n_init=3, max_iter=20, random_state=0).fit(X)
    assert multi.reconstruction_error_ <= single[0].reconstruction_error_ + 1e-12


# --------------------------------------------------------------------------- #
# 2. ground truth
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("nonneg", [False, True])
def test_tca_recovers_planted_factors(planted, nonneg):
    X, (C, Tf, Nf) = planted
    tca = TCA(rank=RANK, nonneg=nonneg, random_state=0).fit(X)
    assert _congruence(tca.neuron_factors_, Nf) > 0.95
    assert _congruence(tca.time_factors_, Tf) > 0.95
    assert _congruence(tca.trial_factors_, C) > 0.9


def test_trialpca_recovers_planted_subspace(planted):
    X, (C, Tf, Nf) = planted
    pca = TrialPCA(rank=RANK).fit(X)
    Q, _ = np.linalg.qr(Nf)
    cosines = np.linalg.svd(Q.T @ pca.components_.T, compute_uv=False)
    assert cosines.min() > 0.95  # every principal angle below ~18 degrees


def test_tca_nonneg_factors(X):
    tca = TCA(rank=RANK, nonneg=True, random_state=0).fit(X)
    for F in (tca.trial_factors_, tca.time_factors_, tca.neuron_factors_):
        assert np.all(F >= 0)
    # New trials get non-negative trial factors too (NNLS), even from partial data.
    X_new = X[:5].copy()
    X_new[:, :, :10] = np.nan
    assert np.all(tca.transform(X_new) >= 0)
    assert np.all(tca.predict(X_new) >= 0)


@pytest.mark.parametrize("nonneg", [False, True])
def test_masked_least_squares_matches_direct_solution(nonneg):
    rng = np.random.RandomState(0)
    design = np.abs(rng.standard_normal((40, 3)))
    X = rng.standard_normal((4, 40)) + design @ np.array([1.0, -0.5, 2.0])
    mask = (rng.uniform(size=X.shape) > 0.3).astype(float)
    coef = _masked_least_squares(design, np.where(mask > 0, X, np.nan), nonneg=nonneg)
    for p in range(4):
        obs = mask[p] > 0
        if nonneg:
            expected = nnls(design[obs], X[p, obs])[0]
        else:
            expected = np.linalg.lstsq(design[obs], X[p, obs], rcond=None)[0]
        np.testing.assert_allclose(coef[p], expected, atol=1e-6)
    if nonneg:
        assert np.all(coef >= 0)


# --------------------------------------------------------------------------- #
# 3. rank selection: the protocol matters
# --------------------------------------------------------------------------- #
def _search(Est, X, scoring=None):
    search = GridSearchCV(Est(random_state=0), {"rank": RANKS}, scoring=scoring,
                          cv=_cv(), error_score="raise")
    return search.fit(X)


@pytest.fixture(scope="module")
def searches(X):
    return {(Est, kind): _search(Est, X, None if kind == "cosmoothing" else _naive_r2)
            for Est in BASELINES for kind in ("cosmoothing", "naive")}


@pytest.mark.parametrize("Est", BASELINES, ids=class_id)
def test_cosmoothing_picks_planted_rank(Est, searches):
    # Measured (seed 0): TCA   .193 .632 .749 .745 .742
    #                    PCA   .324 .610 .703 .684 .661
    # Past the planted rank the curve is nearly flat for TCA (a spare component
    # costs little), so rank 4 is tolerated; the planted rank is clearly above 2.
    search = searches[Est, "cosmoothing"]
    scores = search.cv_results_["mean_test_score"]
    assert search.best_params_["rank"] in {RANK, RANK + 1}
    assert scores[RANKS.index(RANK)] > scores[RANKS.index(RANK - 1)] + 0.05
    assert scores[RANKS.index(RANK)] > scores[-1]


@pytest.mark.parametrize("Est", BASELINES, ids=class_id)
def test_naive_score_prefers_largest_rank(Est, searches):
    # Fitting per-trial parameters on the scored entries rewards every extra
    # component: the naive curve rises monotonically and picks the largest rank,
    # while co-smoothing on the same folds does not.
    naive = searches[Est, "naive"]
    cosmooth = searches[Est, "cosmoothing"]
    scores = naive.cv_results_["mean_test_score"]
    assert np.all(np.diff(scores) > 0)
    assert naive.best_params_["rank"] == max(RANKS)
    assert cosmooth.best_params_["rank"] < max(RANKS)
    # Per fold too, the naive score of the largest rank beats the planted rank's.
    for split in range(3):
        fold = naive.cv_results_[f"split{split}_test_score"]
        assert fold[-1] > fold[RANKS.index(RANK)]


# --------------------------------------------------------------------------- #
# 4. missing entries
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est, params", [
    (TCA, {}), (TCA, {"nonneg": True}), (TrialPCA, {}),
], ids=["TCA", "TCA-nonneg", "TrialPCA"])
def test_nan_entries(Est, params, X):
    rng = np.random.RandomState(0)
    X_nan = X.copy()
    X_nan[rng.uniform(size=X.shape) < 0.1] = np.nan
    est = Est(rank=RANK, random_state=0, **params).fit(X_nan)
    arrays = [v for k, v in vars(est).items()
              if k.endswith("_") and not k.startswith("_")
              and isinstance(v, np.ndarray)]
    assert arrays
    for value in arrays:
        assert np.all(np.isfinite(value))
    assert np.all(np.isfinite(est.transform(X_nan)))
    assert np.all(np.isfinite(est.predict(X_nan)))
    score = est.score(X_nan)
    assert np.isfinite(score)
    # Missing entries barely change the fit on this well-determined problem.
    assert score > est.score(X) - 0.05

