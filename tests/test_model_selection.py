"""Tests of sklearn_ltr.model_selection: masks, summaries, comparisons."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline

from sklearn_ltr import TCA, StandardScaler3D, TrialPCA
from sklearn_ltr.model_selection import (
    TrialFactors,
    block_mask,
    compare_estimators,
    masked_score,
    one_se_refit,
    rank_selection_summary,
)


@pytest.fixture(autouse=True)
def _quiet_tca():
    # TCA's strict default tol rarely converges within max_iter on noisy data; the
    # warning is expected and not what these tests are about.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TCA reached max_iter")
        yield


# --------------------------------------------------------------------------- #
# block_mask
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("shape", [(10, 20, 3), (7, 13, 2)])
@pytest.mark.parametrize("block_size, guard", [((1, 5), (0, 2)), ((2, 3), (1, 1)),
                                               (4, 0), ((1, 1), (0, 0))])
def test_block_mask_guard_bands_never_touch_training(shape, block_size, guard):
    train, test = block_mask(shape, block_size=block_size, guard=guard,
                             test_fraction=0.25, random_state=0)
    assert train.shape == test.shape == shape
    assert not (train & test).any()
    gk, gt = (guard, guard) if np.isscalar(guard) else guard
    # Brute force: no training entry lies within the guard distance of a test
    # entry of the same neuron.
    for k, t, n in zip(*np.nonzero(test)):
        window = train[max(k - gk, 0):k + gk + 1, max(t - gt, 0):t + gt + 1, n]
        assert not window.any()
    # The guard band is exactly what is neither train nor test, and it is present
    # whenever the guard is positive and some test block does not fill its neuron.
    guard_band = ~(train | test)
    if gk == gt == 0:
        assert not guard_band.any()
    else:
        assert guard_band.any()


def test_block_mask_blocks_are_contiguous_and_fraction_is_exact():
    train, test = block_mask((6, 20, 4), block_size=(1, 5), test_fraction=0.25,
                             guard=0, random_state=1)
    # 6 x 4 = 24 blocks per neuron, 6 held out: 30 entries per neuron.
    assert (test.sum(axis=(0, 1)) == 30).all()
    # Each held-out run along time is a whole block of 5 aligned bins.
    blocks = test.reshape(6, 4, 5, 4)
    assert np.all(blocks.all(axis=2) == blocks.any(axis=2))
    assert (train == ~test).all()


def test_block_mask_deterministic_and_seed_dependent():
    a = block_mask((10, 20, 3), random_state=0)
    b = block_mask((10, 20, 3), random_state=0)
    c = block_mask((10, 20, 3), random_state=1)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[1] == c[1]).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"shape": (10, 20)}, "shape must be"),
    ({"shape": (0, 20, 3)}, "shape must be"),
    ({"test_fraction": 0.0}, "test_fraction"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"block_size": (0, 2)}, "block_size must be positive"),
    ({"block_size": (1, 2, 3)}, "block_size must be"),
    ({"guard": -1}, "guard must be non-negative"),
    ({"block_size": (10, 20), "test_fraction": 0.5}, "too few"),
])
def test_block_mask_bad_arguments(kwargs, match):
    kwargs = {"shape": (10, 20, 3), **kwargs}
    with pytest.raises(ValueError, match=match):
        block_mask(**kwargs)


# --------------------------------------------------------------------------- #
# masked_score
# --------------------------------------------------------------------------- #
def test_masked_score_fits_only_training_entries(cp_data):
    X, _ = cp_data
    train, test = block_mask(X.shape, block_size=(1, 4), guard=(0, 2), random_state=0)
    scores = {r: masked_score(TCA(rank=r, random_state=0, max_iter=200), X, train,
                              test) for r in (1, 2)}
    assert scores[2] > scores[1] + 0.1
    assert 0.5 < scores[2] < 1.0
    # Corrupting the held-out and guard entries does not change the score's fit: the
    # same predictions are scored against the same (uncorrupted) test entries.
    X_bad = np.where(train | test, X, 1e3)
    assert masked_score(TCA(rank=2, random_state=0, max_iter=200), X_bad, train,
                        test) == pytest.approx(scores[2])


def test_masked_score_bad_masks(cp_data):
    X, _ = cp_data
    train, test = block_mask(X.shape, random_state=0)
    with pytest.raises(ValueError, match="overlap"):
        masked_score(TCA(rank=1), X, train | test, test)
    with pytest.raises(ValueError, match="test mask has shape"):
        masked_score(TCA(rank=1), X, train, test[:-1])
    with pytest.raises(ValueError, match="No observed entry to score"):
        masked_score(TCA(rank=1), X, train, np.zeros_like(test))


# --------------------------------------------------------------------------- #
# rank_selection_summary and the one-SE rule
# --------------------------------------------------------------------------- #
def _records(curves, n_folds=5, noise=0.01, seed=0):
    # As in real cross-validation, most of the spread is a per-fold effect shared
    # by all ranks (some test folds are harder), plus a smaller per-fit part.
    rng = np.random.RandomState(seed)
    fold_effect = noise * rng.randn(n_folds)
    return [{"estimator": name, "rank": r, "fold": f,
             "score": m + fold_effect[f] + 0.3 * noise * rng.randn()}
            for name, curve in curves.items() for r, m in curve.items()
            for f in range(n_folds)]


def test_one_se_rule_picks_smaller_rank_on_flat_curve():
    # Rises to rank 2, then flat within noise: the best mean lands on some rank
    # >= 2 by chance, the one-SE rule on rank 2.
    flat = {1: 0.3, 2: 0.8, 3: 0.8, 4: 0.8, 5: 0.8}
    best = []
    for seed in range(10):
        summary = rank_selection_summary(_records({"M": flat}, seed=seed))
        assert summary.one_se_rank["M"] == 2
        best.append(summary.best_rank["M"])
    # argmax alone would often pick a larger rank.
    assert min(best) >= 2 and max(best) > 2


def test_one_se_rule_follows_a_real_improvement():
    # A rank-4 gain far larger than the noise is kept.
    summary = rank_selection_summary(
        _records({"M": {1: 0.3, 2: 0.6, 3: 0.7, 4: 0.9, 5: 0.9}}, noise=0.001))
    assert summary.one_se_rank["M"] == 4


def test_summary_table_matches_direct_computation():
    records = _records({"A": {1: 0.2, 2: 0.5}, "B": {1: 0.4, 3: 0.6}}, n_folds=4)
    summary = rank_selection_summary(records)
    assert [(r["estimator"], r["rank"]) for r in summary.table] == [
        ("A", 1), ("A", 2), ("B", 1), ("B", 3)]
    for row in summary.table:
        s = np.array([r["score"] for r in records if r["estimator"] == row["estimator"]
                      and r["rank"] == row["rank"]])
        assert row["mean"] == pytest.approx(s.mean())
        assert row["se"] == pytest.approx(s.std(ddof=1) / 2.0)
        assert row["n_splits"] == 4
    assert "one-SE rank" in summary.text and "B" in summary.text
    # A pandas DataFrame of records gives the same summary; a summary passes through.
    pd = pytest.importorskip("pandas")
    again = rank_selection_summary(pd.DataFrame(records))
    assert again.table == summary.table
    assert rank_selection_summary(summary) is summary
    assert list(summary.frame.columns) == ["estimator", "rank", "mean", "se",
                                           "n_splits"]


def test_summary_ignores_failed_folds():
    records = _records({"A": {1: 0.2, 2: 0.5}}, n_folds=3)
    records[-1]["score"] = np.nan
    row = rank_selection_summary(records).table[1]
    assert row["n_splits"] == 2 and np.isfinite(row["mean"])


def test_summary_bad_input():
    with pytest.raises(ValueError, match="No results"):
        rank_selection_summary([])
    with pytest.raises(ValueError, match="missing"):
        rank_selection_summary([{"estimator": "A", "rank": 1}])
    with pytest.raises(ValueError, match="exactly one parameter named 'rank'"):
        search = GridSearchCV(TrialPCA(), {"n_threads": [1]}, cv=2).fit(
            np.random.RandomState(0).randn(6, 4, 3))
        rank_selection_summary(search)


def test_summary_names_every_score_of_its_records():
    records = [{"estimator": name, "rank": 1, "fold": f, "score": 0.5 + f / 10,
                "score_name": score}
               for name, score in [("LowRankRNN", "predicting R²"),
                                   ("TrialPCA", "co-smoothing R²")]
               for f in range(2)]
    summary = rank_selection_summary(records)
    assert summary.score_name == "predicting R² / co-smoothing R²"
    assert summary.text.startswith("predicting R² / co-smoothing R², mean")
    same = rank_selection_summary(records[:2])
    assert same.score_name == "predicting R²"


def test_summary_and_refit_from_grid_search(cp_data):
    X, _ = cp_data
    cv = KFold(4, shuffle=True, random_state=0)
    search = GridSearchCV(TrialPCA(), {"rank": [1, 2, 3, 4, 5]}, cv=cv,
                          refit=one_se_refit, error_score="raise").fit(X)
    summary = rank_selection_summary(search)
    assert summary.score_name == "co-smoothing R²"
    assert [r["rank"] for r in summary.table] == [1, 2, 3, 4, 5]
    scores = np.array([search.cv_results_[f"split{i}_test_score"] for i in range(4)])
    np.testing.assert_allclose([r["mean"] for r in summary.table], scores.mean(0))
    np.testing.assert_allclose([r["se"] for r in summary.table],
                               scores.std(0, ddof=1) / 2)
    # The refit callable chooses the summary's one-SE rank: the planted rank 2.
    assert search.best_params_["rank"] == summary.one_se_rank["TrialPCA"] == 2
    assert search.best_estimator_.rank == 2


def test_summary_of_pipeline_search_names_lines_by_extra_params(cp_data):
    X, _ = cp_data
    pipe = Pipeline([("scale", StandardScaler3D()), ("model", TCA(max_iter=50))])
    search = GridSearchCV(pipe, {"model__rank": [1, 2],
                                 "scale__with_std": [True, False]},
                          cv=2, refit=False).fit(X)
    summary = rank_selection_summary(search)
    names = sorted(summary.best_rank)
    assert names == ["TCA (scale__with_std=False)", "TCA (scale__with_std=True)"]
    # A grid that swaps the final estimator names lines by the estimator.
    search = GridSearchCV(pipe, [{"model": [TCA(max_iter=50)], "model__rank": [1, 2]},
                                 {"model": [TrialPCA()], "model__rank": [1, 2]}],
                          cv=2, refit=False).fit(X)
    assert sorted(rank_selection_summary(search).best_rank) == ["TCA", "TrialPCA"]


def test_one_se_refit_rejects_all_failed():
    cv_results = {"params": [{"rank": 1}, {"rank": 2}],
                  "split0_test_score": np.array([np.nan, np.nan]),
                  "split1_test_score": np.array([np.nan, np.nan])}
    with pytest.raises(ValueError, match="Every candidate failed"):
        one_se_refit(cv_results)


# --------------------------------------------------------------------------- #
# compare_estimators
# --------------------------------------------------------------------------- #
class _FoldProbe(BaseEstimator):
    """Scores a fold by which trials it holds: X[:, 0, 0] carries the trial index."""

    def __init__(self, rank=1, offset=0.0):
        self.rank = rank
        self.offset = offset

    def fit(self, X, y=None):
        self.train_ids_ = X[:, 0, 0].copy()
        return self

    def score(self, X, y=None):
        ids = X[:, 0, 0]
        assert not np.intersect1d(ids, self.train_ids_).size
        return float(np.sum(2.0 ** ids))


def test_compare_estimators_gives_every_estimator_the_same_folds():
    X = np.zeros((12, 3, 2))
    X[:, 0, 0] = np.arange(12)
    # A shuffling splitter without a seed draws new folds at every split() call:
    # only drawing them once makes the comparison fair.
    cv = KFold(4, shuffle=True)
    results = compare_estimators({"a": _FoldProbe(), "b": _FoldProbe(offset=1.0)}, X,
                                 ranks=[1, 2, 3], cv=cv, as_frame=False)
    assert len(results) == 2 * 3 * 4
    for fold in range(4):
        scores = {r["score"] for r in results if r["fold"] == fold}
        assert len(scores) == 1
    all_folds = {r["score"] for r in results}
    assert len(all_folds) == 4
    # Every trial is tested exactly once across the folds.
    assert sum(all_folds) == np.sum(2.0 ** np.arange(12))


def test_fits_are_dispatched_costliest_first_and_returned_in_order():
    from sklearn_ltr import ConditionAverage, LowRankRNN, LowTensorRankRNN
    from sklearn_ltr.model_selection import _fit_cost, _run_tasks

    estimators = [ConditionAverage(), TCA(max_iter=500), TrialPCA(),
                  LowRankRNN(n_units=20, max_iter=100),
                  LowTensorRankRNN(n_units=50, max_iter=300),
                  make_pipeline(StandardScaler3D(), LowRankRNN(n_units=50,
                                                               max_iter=300))]
    costs = [_fit_cost(est, rank) for est, rank in zip(estimators,
                                                       [None, 2, 2, 2, 2, 4])]
    # The networks first (the larger rank of two equal networks ahead), then TCA,
    # then the fits without iterations (by rank).
    started = []

    def task(i):
        started.append(i)  # n_jobs=1 runs the tasks in dispatch order
        return i * 10

    outputs = _run_tasks(task, [(i,) for i in range(6)], n_jobs=1, verbose=0,
                         costs=costs)
    assert started == [5, 4, 3, 1, 2, 0]
    assert outputs == [0, 10, 20, 30, 40, 50]


def test_compare_estimators_matches_cross_val_score(cp_data):
    X, _ = cp_data
    splits = list(KFold(3, shuffle=True, random_state=0).split(X))
    estimators = {"tca": TCA(random_state=0, max_iter=100), "pca": TrialPCA()}
    results = compare_estimators(estimators, X, ranks={"tca": [2], "pca": [1, 2]},
                                 cv=splits, n_jobs=2)
    pd = pytest.importorskip("pandas")
    assert isinstance(results, pd.DataFrame)
    assert len(results) == 3 * 3
    for name, est in estimators.items():
        for rank in results.loc[results.estimator == name, "rank"].unique():
            expected = cross_val_score(clone(est).set_params(rank=rank), X, cv=splits)
            got = results[(results.estimator == name) & (results["rank"] == rank)]
            np.testing.assert_allclose(got.sort_values("fold")["score"], expected)
    assert (results.n_train + results.n_test == X.shape[0]).all()
    assert set(results.score_name) == {"co-smoothing R²"}


def test_compare_estimators_pipelines_lists_and_default_rank(cp_data):
    X, _ = cp_data
    pipe = make_pipeline(StandardScaler3D(), TrialPCA(rank=2))
    results = compare_estimators([pipe, TrialPCA(rank=1), TrialPCA(rank=3)], X, cv=2,
                                 as_frame=False)
    names = [(r["estimator"], r["rank"]) for r in results]
    assert names == [("TrialPCA", 2)] * 2 + [("TrialPCA_2", 1)] * 2 + \
        [("TrialPCA_3", 3)] * 2


def test_compare_estimators_failed_fits(cp_data):
    X, _ = cp_data
    with pytest.warns(FitFailedWarning, match="rank=50"):
        results = compare_estimators([TrialPCA()], X, ranks=[1, 50], cv=2,
                                     as_frame=False)
    assert all(np.isnan(r["score"]) for r in results if r["rank"] == 50)
    assert all(np.isfinite(r["score"]) for r in results if r["rank"] == 1)
    summary = rank_selection_summary(results)
    assert summary.best_rank == {"TrialPCA": 1}
    with pytest.raises(ValueError, match="rank=50 must be <="):
        compare_estimators([TrialPCA()], X, ranks=[50], cv=2, error_score="raise")


def test_compare_estimators_bad_input(cp_data):
    X, _ = cp_data
    with pytest.raises(ValueError, match="estimators is empty"):
        compare_estimators([], X)
    with pytest.raises(ValueError, match="no unique parameter 'rank'"):
        compare_estimators([LogisticRegression()], X)
    with pytest.raises(ValueError, match="Expected X to be a 3D array"):
        compare_estimators([TrialPCA()], X[0])
    with pytest.raises(ValueError, match="y has 3 labels"):
        compare_estimators([TrialPCA()], X, y=[0, 1, 2])


def test_compare_estimators_evaluates_references_once_per_fold(cp_data):
    # A model-free reference has no rank: one record per fold, rank None, shown
    # apart from the rank table.
    from sklearn_ltr import ConditionAverage

    X, _ = cp_data
    results = compare_estimators({"PCA": TrialPCA(), "avg": ConditionAverage()}, X,
                                 ranks=[1, 2], cv=3, as_frame=False)
    refs = [r for r in results if r["estimator"] == "avg"]
    assert len(refs) == 3 and all(r["rank"] is None for r in refs)
    summary = rank_selection_summary(results)
    assert list(summary.references) == ["avg"]
    assert {r["estimator"] for r in summary.table} == {"PCA"}
    assert summary.references["avg"]["n_splits"] == 3
    assert "reference  avg:" in summary.text


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_compare_estimators_hands_back_each_distinct_warning_once(cp_data, n_jobs):
    from sklearn.exceptions import ConvergenceWarning

    X, _ = cp_data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare_estimators([TCA(rank=2, max_iter=1, init="random", random_state=0)], X,
                           cv=3, n_jobs=n_jobs)
    convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    # Three fits warned with the same message, in this process or in workers.
    assert len(convergence) == 1
    assert "reached max_iter=1" in str(convergence[0].message)


# --------------------------------------------------------------------------- #
# TrialFactors moved to preprocessing (its tests are in test_preprocessing.py)
# --------------------------------------------------------------------------- #
def test_trial_factors_still_importable_from_model_selection(cp_data):
    import sklearn_ltr
    from sklearn_ltr import preprocessing

    assert TrialFactors is preprocessing.TrialFactors is sklearn_ltr.TrialFactors
    assert "TrialFactors" in sklearn_ltr.model_selection.__all__
    # A pickle written when the class lived in model_selection names it there.
    X, _ = cp_data
    tf = TrialFactors(TrialPCA(rank=2)).fit(X)
    old = pickle.dumps(tf, protocol=0).replace(
        b"sklearn_ltr.preprocessing\nTrialFactors",
        b"sklearn_ltr.model_selection\nTrialFactors")
    assert b"sklearn_ltr.model_selection\nTrialFactors" in old
    np.testing.assert_array_equal(pickle.loads(old).transform(X), tf.transform(X))
