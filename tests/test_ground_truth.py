"""Recovery of planted structure under the leak-free cross-validation protocol."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline

from sklearn_ltr import LowRankRNN, LowTensorRankRNN, StandardScaler3D

CV = KFold(3, shuffle=True, random_state=0)


def _split_scores(search, n_splits=3):
    return np.array([search.cv_results_[f"split{i}_test_score"]
                     for i in range(n_splits)]).T  # (n_candidates, n_splits)


@pytest.fixture(scope="module")
def ltr_search(planted):
    search = GridSearchCV(LowTensorRankRNN(n_units=40, random_state=0),
                          {"rank": [1, 2, 3, 4]}, cv=CV, error_score="raise")
    return search.fit(planted.X)


def test_grid_search_recovers_planted_rank(ltr_search):
    ranks = list(ltr_search.cv_results_["param_rank"])
    scores = _split_scores(ltr_search)
    mean = scores.mean(1)
    se = scores.std(1, ddof=1) / np.sqrt(scores.shape[1])
    assert ltr_search.best_params_["rank"] in (3, 4), dict(zip(ranks, mean))
    i2, i3 = ranks.index(2), ranks.index(3)
    # The planted rank is clearly better than the one below: on every fold, and by
    # far more than the standard errors.
    assert np.all(scores[i3] > scores[i2])
    assert mean[i3] - mean[i2] > max(0.05, 4 * (se[i2] + se[i3])), (mean, se)
    assert mean[i3] > 0.9


def test_ltr_beats_low_rank_when_connectivity_learns(planted, ltr_search):
    ranks = list(ltr_search.cv_results_["param_rank"])
    ltr = _split_scores(ltr_search)[ranks.index(3)]
    lr = cross_val_score(LowRankRNN(rank=3, n_units=40, random_state=0), planted.X,
                         cv=CV, error_score="raise")
    assert np.all(ltr > lr), (ltr, lr)
    assert ltr.mean() - lr.mean() > 0.02


def test_no_false_discovery_of_learning(planted_constant):
    kw = dict(rank=3, n_units=40, random_state=0)
    ltr = cross_val_score(LowTensorRankRNN(**kw), planted_constant.X, cv=CV)
    lr = cross_val_score(LowRankRNN(**kw), planted_constant.X, cv=CV)
    diff = ltr - lr
    # Within noise: the paired fold differences are tiny compared with the gap seen
    # when the planted connectivity does change (> 0.02).
    assert abs(diff.mean()) < 0.005, (ltr, lr)


def test_grid_search_n_jobs_gives_identical_scores(small):
    grid = {"rank": [1, 2]}
    est = LowTensorRankRNN(n_units=16, max_iter=80, random_state=0)
    r1 = GridSearchCV(est, grid, cv=CV, n_jobs=1, error_score="raise").fit(small.X)
    r2 = GridSearchCV(est, grid, cv=CV, n_jobs=2, error_score="raise").fit(small.X)
    np.testing.assert_array_equal(_split_scores(r1), _split_scores(r2))


def test_pipeline_in_grid_search(small):
    pipe = make_pipeline(StandardScaler3D(),
                         LowTensorRankRNN(n_units=16, max_iter=80, random_state=0))
    search = GridSearchCV(pipe, {"lowtensorrankrnn__rank": [1, 2]}, cv=CV,
                          error_score="raise").fit(small.X)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    X_hat = best.predict(small.X)
    assert X_hat.shape == small.X.shape
    # The pipeline's predictions live in the standardised space of its scaler.
    Xs = best[0].transform(small.X)
    resid = np.mean((X_hat - Xs) ** 2) / np.var(Xs)
    assert resid < 0.5


def test_fitted_trial_factors_follow_planted_learning(planted):
    est = LowTensorRankRNN(rank=3, n_units=40, random_state=0).fit(planted.X)
    fitted = est.trial_factors_
    true = planted.trial_factors
    # Each planted learning curve is matched by a fitted factor (up to sign/scale):
    # correlation of the best-matching fitted component.
    corr = np.corrcoef(true.T, fitted.T)[:3, 3:]
    assert np.all(np.abs(corr).max(1) > 0.8), corr
