"""3D transformers of sklearn_ltr.preprocessing: correctness against direct
computations, missing entries, parameters, Pipeline / GridSearchCV use; TrialFactors
and the latent models' public trial-feature hook it wraps.

Their API contract (scikit-learn checks, clone, pickle, inverse round trips, feature
names, bad input...) is checked with every other class in test_common.py.
"""

import pickle
import warnings

import numpy as np
import pytest
import torch
from _checks import ESTIMATORS, TRANSFORMERS, class_id, make_small
from scipy.ndimage import gaussian_filter1d
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline

from sklearn_ltr import TCA, LowRankRNN, LowTensorRankRNN, TrialPCA
from sklearn_ltr.datasets import make_low_tensor_rank_rnn
from sklearn_ltr.preprocessing import (
    GaussianSmoother,
    SoftNormalizer,
    StandardScaler3D,
    TrialCropper,
    TrialFactors,
    condition_inputs,
)

N_TRIALS, N_TIMEPOINTS, N_NEURONS = 6, 30, 5

# TCA's strict default tol rarely converges within max_iter on noisy data; the
# warning is expected and not what the TrialFactors tests are about.
_QUIET_TCA = pytest.mark.filterwarnings("ignore:TCA reached max_iter")

# Settings other than the defaults, so that parameters are seen to matter.
NON_DEFAULT = {
    SoftNormalizer: dict(soft=2.0, with_mean=True),
    GaussianSmoother: dict(sigma=1.5),
    TrialCropper: dict(start=2, stop=-3),
}


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    # Poisson counts with neuron-specific rates that drift over time.
    t = np.linspace(0, 1, N_TIMEPOINTS)[None, :, None]
    rate = ((1.0 + np.arange(N_NEURONS))
            * (1.5 + np.sin(2 * np.pi * t + np.arange(N_NEURONS))))
    X = rng.poisson(np.broadcast_to(rate, (N_TRIALS, N_TIMEPOINTS, N_NEURONS)))
    X = X.astype(float)
    X.setflags(write=False)
    return X


@pytest.fixture(scope="module")
def X_nan(X):
    rng = np.random.RandomState(1)
    X_nan = X.copy()
    X_nan[rng.uniform(size=X.shape) < 0.15] = np.nan
    X_nan.setflags(write=False)
    return X_nan


# --------------------------------------------------------------------------- #
# StandardScaler3D
# --------------------------------------------------------------------------- #
def test_scaler_standardises_each_neuron(X):
    X_shift = X * np.arange(1, N_NEURONS + 1) + 10.0 * np.arange(N_NEURONS)
    scaler = StandardScaler3D().fit(X_shift)
    Xt = scaler.transform(X_shift)
    assert Xt.shape == X.shape
    np.testing.assert_allclose(Xt.mean(axis=(0, 1)), 0, atol=1e-12)
    np.testing.assert_allclose(Xt.std(axis=(0, 1)), 1, rtol=1e-12)
    np.testing.assert_allclose(scaler.mean_, X_shift.mean(axis=(0, 1)))
    np.testing.assert_allclose(scaler.scale_, X_shift.std(axis=(0, 1)))
    np.testing.assert_allclose(scaler.fit_transform(X_shift), Xt)


@pytest.mark.parametrize("with_mean, with_std",
                         [(True, False), (False, True), (False, False)])
def test_scaler_options(X, with_mean, with_std):
    scaler = StandardScaler3D(with_mean=with_mean, with_std=with_std).fit(X)
    Xt = scaler.transform(X)
    mean, std = X.mean(axis=(0, 1)), X.std(axis=(0, 1))
    expected = (X - (mean if with_mean else 0)) / (std if with_std else 1)
    np.testing.assert_allclose(Xt, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(Xt), X, rtol=1e-12,
                               atol=1e-12)


def test_scaler_constant_neuron(X):
    X_const = X.copy()
    X_const[:, :, 2] = 3.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no division by zero
        scaler = StandardScaler3D().fit(X_const)
        Xt = scaler.transform(X_const)
    assert np.all(np.isfinite(Xt))
    np.testing.assert_array_equal(Xt[:, :, 2], 0.0)
    assert scaler.scale_[2] == 1.0
    np.testing.assert_allclose(scaler.inverse_transform(Xt), X_const, atol=1e-12)


def test_scaler_nan_stays_nan(X, X_nan):
    missing = np.isnan(X_nan)
    scaler = StandardScaler3D().fit(X_nan)
    Xt = scaler.transform(X_nan)
    np.testing.assert_array_equal(np.isnan(Xt), missing)
    np.testing.assert_allclose(np.nanmean(Xt, axis=(0, 1)), 0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(Xt, axis=(0, 1)), 1, rtol=1e-12)
    back = scaler.inverse_transform(Xt)
    np.testing.assert_array_equal(np.isnan(back), missing)
    np.testing.assert_allclose(back[~missing], X_nan[~missing], rtol=1e-12,
                               atol=1e-12)


# --------------------------------------------------------------------------- #
# GaussianSmoother
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror", "wrap"])
@pytest.mark.parametrize("sigma, truncate", [(0.5, 4.0), (1.0, 4.0), (2.5, 2.0),
                                             (4.0, 4.0)])
def test_smoother_matches_scipy_without_nan(X, mode, sigma, truncate):
    smoother = GaussianSmoother(sigma=sigma, truncate=truncate, mode=mode)
    expected = gaussian_filter1d(X, sigma, axis=1, mode=mode, truncate=truncate)
    np.testing.assert_allclose(smoother.fit_transform(X), expected, rtol=1e-12,
                               atol=1e-12)


def test_smoother_constant_mode_renormalises_at_edges(X):
    sigma = 2.0
    out = GaussianSmoother(sigma=sigma, mode="constant").fit_transform(X)
    # Zero-padding (scipy) divided by the kernel mass that falls inside the trial.
    inside = gaussian_filter1d(np.ones_like(X), sigma, axis=1, mode="constant")
    expected = gaussian_filter1d(X, sigma, axis=1, mode="constant") / inside
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    # Away from the edges this is the ordinary filter.
    radius = int(4.0 * sigma + 0.5)
    interior = slice(radius, N_TIMEPOINTS - radius)
    np.testing.assert_allclose(out[:, interior], gaussian_filter1d(
        X, sigma, axis=1, mode="reflect")[:, interior], rtol=1e-12)
    # A constant rate is not pulled down at the edges, unlike zero padding.
    const = np.full((1, 10, 1), 3.0)
    np.testing.assert_allclose(
        GaussianSmoother(sigma=3.0, mode="constant").fit_transform(const), 3.0)


def test_smoother_sigma_zero_is_identity(X_nan):
    np.testing.assert_array_equal(GaussianSmoother(sigma=0).fit_transform(X_nan), X_nan)


def test_smoother_preserves_spike_count_with_wrap(X):
    # The kernel sums to one, so circular smoothing keeps every neuron's spike count
    # per trial: counts become rates without gaining or losing spikes.
    out = GaussianSmoother(sigma=2.0, mode="wrap").fit_transform(X)
    np.testing.assert_allclose(out.sum(axis=1), X.sum(axis=1), rtol=1e-12)
    assert out.std() < X.std()


def test_smoother_nan_is_a_weighted_mean_of_observed_bins(X, X_nan):
    sigma, truncate = 1.5, 3.0
    out = GaussianSmoother(sigma=sigma, truncate=truncate, mode="constant",
                           fill_missing=True).fit_transform(X_nan)
    # Direct computation, entry by entry, of the kernel-weighted mean of the
    # observed bins within the kernel's support.
    radius = int(truncate * sigma + 0.5)
    expected = np.full(X.shape, np.nan)
    for k in range(N_TRIALS):
        for n in range(N_NEURONS):
            for t in range(N_TIMEPOINTS):
                lo, hi = max(0, t - radius), min(N_TIMEPOINTS, t + radius + 1)
                w = np.exp(-0.5 * ((np.arange(lo, hi) - t) / sigma) ** 2)
                x = X_nan[k, lo:hi, n]
                ok = ~np.isnan(x)
                if ok.any():
                    expected[k, t, n] = np.sum(w[ok] * x[ok]) / np.sum(w[ok])
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_smoother_missing_bins_do_not_pull_rate_to_zero(X_nan):
    const = np.where(np.isnan(X_nan), np.nan, 4.0)
    out = GaussianSmoother(sigma=2.0).fit_transform(const)
    observed = ~np.isnan(X_nan)
    np.testing.assert_allclose(out[observed], 4.0, rtol=1e-12)
    # Missing entries stay missing: the downstream model must not fit or score them.
    np.testing.assert_array_equal(np.isnan(out), ~observed)


def test_smoother_all_nan_window_stays_nan():
    sigma, truncate = 1.0, 2.0
    radius = int(truncate * sigma + 0.5)  # 2 bins
    X = np.ones((2, 20, 3))
    X[0, 5:15, 1] = np.nan  # a gap of 10 bins: its middle is > radius from data
    X[1, :, 2] = np.nan  # a neuron missing for a whole trial
    out = GaussianSmoother(sigma=sigma, truncate=truncate,
                           fill_missing=True).fit_transform(X)
    gap = out[0, 5:15, 1]
    expected_nan = np.zeros(10, dtype=bool)
    expected_nan[radius:10 - radius] = True
    np.testing.assert_array_equal(np.isnan(gap), expected_nan)
    np.testing.assert_allclose(gap[~expected_nan], 1.0)
    assert np.isnan(out[1, :, 2]).all()
    assert not np.isnan(np.delete(out.reshape(-1, 3), 2, axis=1)[20:]).any()


def test_smoother_has_no_inverse():
    # Deconvolution is ill-posed; the docstring says so.
    assert not hasattr(GaussianSmoother(), "inverse_transform")
    assert "ill-posed" in GaussianSmoother.__doc__


# --------------------------------------------------------------------------- #
# SoftNormalizer
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("soft", [0.0, 1.0, 5.0])
@pytest.mark.parametrize("with_mean", [False, True])
def test_soft_normalizer_matches_direct_computation(X, soft, with_mean):
    norm = SoftNormalizer(soft=soft, with_mean=with_mean).fit(X)
    data_range = X.max(axis=(0, 1)) - X.min(axis=(0, 1))
    mean = X.mean(axis=(0, 1)) if with_mean else 0.0
    expected = (X - mean) / (data_range + soft)
    np.testing.assert_allclose(norm.transform(X), expected, rtol=1e-12)
    np.testing.assert_allclose(norm.inverse_transform(expected), X, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(norm.data_max_ - norm.data_min_, data_range)
    np.testing.assert_allclose(norm.scale_, data_range + soft)
    assert (norm.mean_ is None) == (not with_mean)


def test_soft_normalizer_damps_weak_neurons():
    rng = np.random.RandomState(0)
    strong = 100.0 * rng.uniform(size=(4, 10, 1))
    weak = 0.5 * rng.uniform(size=(4, 10, 1))
    Xt = SoftNormalizer(soft=5.0).fit_transform(np.concatenate([strong, weak], axis=2))
    ranges = Xt.max(axis=(0, 1)) - Xt.min(axis=(0, 1))
    assert 0.9 < ranges[0] < 1.0  # range >> soft: close to unit range
    assert ranges[1] < 0.1  # range << soft: stays small, unlike z-scoring


def test_soft_normalizer_constant_neuron_without_offset(X):
    X_const = X.copy()
    X_const[:, :, 0] = 2.0
    norm = SoftNormalizer(soft=0.0).fit(X_const)
    assert norm.scale_[0] == 1.0
    np.testing.assert_array_equal(norm.transform(X_const)[:, :, 0], 2.0)


def test_soft_normalizer_ignores_nan_in_fit(X, X_nan):
    norm = SoftNormalizer(soft=1.0, with_mean=True).fit(X_nan)
    np.testing.assert_allclose(norm.data_min_, np.nanmin(X_nan, axis=(0, 1)))
    np.testing.assert_allclose(norm.data_max_, np.nanmax(X_nan, axis=(0, 1)))
    np.testing.assert_allclose(norm.mean_, np.nanmean(X_nan, axis=(0, 1)))
    assert np.all(np.isfinite(norm.scale_))


# --------------------------------------------------------------------------- #
# TrialCropper
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("start, stop", [(None, None), (5, None), (None, 12), (3, -4),
                                         (-10, None), (0, N_TIMEPOINTS)])
def test_cropper_matches_slicing(X_nan, start, stop):
    out = TrialCropper(start=start, stop=stop).fit_transform(X_nan)
    np.testing.assert_array_equal(out, X_nan[:, start:stop])
    assert not np.shares_memory(out, X_nan)


@pytest.mark.parametrize("start, stop, match", [
    (N_TIMEPOINTS + 1, None, f"start={N_TIMEPOINTS + 1} is outside trials of "
                             f"{N_TIMEPOINTS} time bins"),
    (None, -N_TIMEPOINTS - 1, "stop=.* is outside trials"),
    (10, 10, "keeps no time bin"),
    (12, 5, "start must come before stop"),
])
def test_cropper_bad_window(X, start, stop, match):
    with pytest.raises(ValueError, match=match):
        TrialCropper(start=start, stop=stop).fit(X)


def test_cropper_checks_window_on_new_trials(X):
    cropper = TrialCropper(start=5, stop=20).fit(X)
    assert cropper.transform(X[:, :25]).shape == (N_TRIALS, 15, N_NEURONS)
    with pytest.raises(ValueError, match="stop=20 is outside trials of 10 time bins"):
        cropper.transform(X[:, :10])


# --------------------------------------------------------------------------- #
# every transformer
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", TRANSFORMERS, ids=class_id)
def test_nan_passes_through(Est, X_nan):
    out = make_small(Est, **NON_DEFAULT.get(Est, {})).fit_transform(X_nan)
    if Est is TrialCropper:
        np.testing.assert_array_equal(np.isnan(out), np.isnan(X_nan[:, 2:-3]))
    else:
        np.testing.assert_array_equal(np.isnan(out), np.isnan(X_nan))
    assert np.isfinite(out[~np.isnan(out)]).all()


@pytest.mark.parametrize("est, match", [
    (GaussianSmoother(sigma=-1.0), "'sigma' parameter of GaussianSmoother must be"),
    (GaussianSmoother(truncate=0.0), "'truncate' parameter"),
    (GaussianSmoother(mode="zeros"), "'mode' parameter"),
    (SoftNormalizer(soft=-0.5), "'soft' parameter of SoftNormalizer must be"),
    (TrialCropper(start=1.5), "'start' parameter of TrialCropper must be"),
])
def test_invalid_parameters(est, match, X):
    with pytest.raises(ValueError, match=match):
        est.fit(X)


# --------------------------------------------------------------------------- #
# Pipeline and GridSearchCV
# --------------------------------------------------------------------------- #
def test_pipeline_equals_manual_composition(X_nan):
    steps = [TrialCropper(start=3), GaussianSmoother(sigma=1.0), SoftNormalizer(1.0)]
    pipe = make_pipeline(*steps, TrialPCA(rank=2)).fit(X_nan[:4])
    Xt = X_nan[:4]
    for step in steps:
        X_before, Xt = Xt, clone(step).fit_transform(Xt)
    manual = TrialPCA(rank=2).fit(Xt)
    Xt_new = X_nan[4:]
    for name, step in pipe.steps[:-1]:
        Xt_new = step.transform(Xt_new)
    np.testing.assert_allclose(pipe.transform(X_nan[4:]), manual.transform(Xt_new),
                               rtol=1e-10, atol=1e-10)
    # The normaliser of the pipeline was fitted on the training trials only.
    np.testing.assert_allclose(pipe.named_steps["softnormalizer"].data_max_,
                               np.nanmax(X_before, axis=(0, 1)))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scaler_in_pipeline_with_rnn(small):
    X = small.X * 3.0 + 2.0
    pipe = make_pipeline(StandardScaler3D(), make_small(LowRankRNN, max_iter=5))
    pipe.fit(X)
    assert pipe.predict(X[:2]).shape == (2,) + X.shape[1:]
    assert np.isfinite(pipe.score(X[:2]))


def test_grid_search_over_sigma_and_rank():
    from sklearn_ltr.datasets import make_low_tensor_rank_rnn

    data = make_low_tensor_rank_rnn(n_trials=24, n_timepoints=15, n_neurons=10, rank=2,
                                    noise=0.5, random_state=0)
    pipe = make_pipeline(GaussianSmoother(), StandardScaler3D(), TrialPCA())
    grid = {"gaussiansmoother__sigma": [0.0, 1.0, 2.0], "trialpca__rank": [1, 2]}
    search = GridSearchCV(pipe, grid, cv=KFold(3, shuffle=True, random_state=0),
                          error_score="raise").fit(data.X)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 6 and np.all(np.isfinite(scores))
    assert search.best_params_["trialpca__rank"] == 2
    # The parameter reached the step: a different sigma gives a different pipeline.
    assert search.best_estimator_.named_steps["gaussiansmoother"].sigma == \
        search.best_params_["gaussiansmoother__sigma"]
    sigmas = np.asarray(search.cv_results_["param_gaussiansmoother__sigma"])
    by_sigma = {s: scores[sigmas == s] for s in grid["gaussiansmoother__sigma"]}
    assert len({tuple(np.round(v, 12)) for v in by_sigma.values()}) == 3


# --------------------------------------------------------------------------- #
# TrialFactors (moved from model_selection) and the latent models' public hook
# --------------------------------------------------------------------------- #
@_QUIET_TCA
def test_trial_factors_decode_learning_epoch_in_a_pipeline(cp_data):
    X, epoch = cp_data
    decoder = make_pipeline(TrialFactors(TCA(rank=2, random_state=0, max_iter=100)),
                            LogisticRegression())
    cv = KFold(4, shuffle=True, random_state=0)
    acc = cross_val_score(decoder, X, epoch, cv=cv)
    assert acc.mean() >= 0.85
    # GridSearchCV reaches the inner estimator's rank through the wrapper.
    search = GridSearchCV(decoder, {"trialfactors__estimator__rank": [1, 2]}, cv=cv,
                          error_score="raise").fit(X, epoch)
    assert search.best_estimator_[0].transform(X).shape[1] == \
        search.best_params_["trialfactors__estimator__rank"]


@_QUIET_TCA
def test_trial_factors_tca_features_are_the_trial_factors(cp_data):
    X, _ = cp_data
    tf = TrialFactors(TCA(rank=2, random_state=0, max_iter=100)).fit(X)
    F = tf.transform(X)
    assert F.shape == (X.shape[0], 2)
    # On the training trials, re-inferred factors equal the fitted ones (the least-
    # squares solution with the time and neuron factors frozen is the ALS update).
    np.testing.assert_allclose(F, tf.estimator_.trial_factors_, rtol=1e-2, atol=1e-2)
    assert list(tf.get_feature_names_out()) == ["trial_factor0", "trial_factor1"]
    assert tf.n_features_in_ == X.shape[2]
    # The fitted clone is independent of the given estimator.
    assert not hasattr(tf.estimator, "trial_factors_")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_trial_factors_of_rnn_models(planted):
    X = planted.X
    tf = TrialFactors(LowTensorRankRNN(rank=3, n_units=40, max_iter=300,
                                       random_state=0)).fit(X)
    F = tf.transform(X)
    # Per-trial inference recovers the fitted trial factors of the training trials.
    fitted = tf.estimator_.trial_factors_
    for r in range(3):
        assert np.corrcoef(F[:, r], fitted[:, r])[0, 1] > 0.8
    assert list(tf.get_feature_names_out())[0] == "trial_factor0"
    tf_lr = TrialFactors(LowRankRNN(rank=2, n_units=30, max_iter=50,
                                    random_state=0)).fit(X[:20])
    assert tf_lr.transform(X[20:30]).shape == (10, 2)
    assert list(tf_lr.get_feature_names_out()) == ["initial_state0", "initial_state1"]
    # Same output after a pickle round trip.
    again = pickle.loads(pickle.dumps(tf_lr))
    np.testing.assert_array_equal(again.transform(X[20:30]), tf_lr.transform(X[20:30]))


def test_trial_factors_trialpca_and_pipeline_estimator(cp_data):
    X, _ = cp_data
    inner = make_pipeline(StandardScaler3D(), TrialPCA(rank=2))
    tf = TrialFactors(inner).fit(X)
    F = tf.transform(X[:5])
    fitted = tf.estimator_
    expected = fitted[-1].transform(fitted[0].transform(X[:5])).mean(axis=1)
    np.testing.assert_allclose(F, expected)
    assert list(tf.get_feature_names_out()) == ["mean_latent0", "mean_latent1"]


def test_trial_factors_errors(cp_data):
    X, _ = cp_data
    with pytest.raises(TypeError, match="needs an estimator of sklearn_ltr"):
        TrialFactors(LogisticRegression()).fit(X)
    with pytest.raises(NotFittedError):
        TrialFactors(TCA()).transform(X)
    tf = TrialFactors(TrialPCA(rank=1)).fit(X)
    with pytest.raises(ValueError, match="X has 5 neurons"):
        tf.transform(X[:, :, :5])


_FEATURE_PREFIX = {"LowTensorRankRNN": "trial_factor", "LowRankRNN": "initial_state",
                   "TCA": "trial_factor", "TrialPCA": "mean_latent"}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("Est", ESTIMATORS, ids=class_id)
def test_public_trial_feature_hook(Est, small):
    X = small.X
    est = make_small(Est).fit(X)
    threads = torch.get_num_threads()
    F = est.trial_features(X[:5])
    assert F.shape == (5, est.rank) and np.isfinite(F).all()
    assert torch.get_num_threads() == threads
    names = est.get_trial_feature_names_out()
    assert list(names) == [f"{_FEATURE_PREFIX[Est.__name__]}{i}"
                           for i in range(est.rank)]
    # TrialFactors is a thin transformer over the hook.
    tf = TrialFactors(make_small(Est)).fit(X)
    np.testing.assert_allclose(tf.transform(X[:5]), F, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(tf.get_feature_names_out(), names)
    # The hook validates X like transform does.
    with pytest.raises(ValueError, match=r"X has 4 neurons, but .* was fitted with"):
        est.trial_features(X[:5, :, :4])
    with pytest.raises(NotFittedError):
        make_small(Est).trial_features(X)
    with pytest.raises(NotFittedError):
        make_small(Est).get_trial_feature_names_out()


# --------------------------------------------------------------------------- #
# condition_inputs
# --------------------------------------------------------------------------- #
def test_condition_inputs_one_hot_over_time():
    y = np.array([30, 10, 20, 10])
    U = condition_inputs(y, 5)
    assert U.shape == (4, 5, 3) and U.dtype == np.float64
    # Channels in the order of the sorted labels: 10, 20, 30; on every bin.
    np.testing.assert_array_equal(U.argmax(2), np.array([[2], [0], [1], [0]])
                                  .repeat(5, axis=1))
    np.testing.assert_array_equal(U.sum(2), np.ones((4, 5)))
    # A pulse on the first bins; a duration past the trial is the whole trial.
    pulse = condition_inputs(y, 5, duration=2)
    np.testing.assert_array_equal(pulse[:, :2], U[:, :2])
    assert not pulse[:, 2:].any()
    np.testing.assert_array_equal(condition_inputs(y, 5, duration=9), U)
    # Given conditions set the channels' order, also for labels y lacks.
    V = condition_inputs(["b", "a"], 2, conditions=["c", "b", "a"])
    assert V[:, 0].tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("kwargs, match", [
    (dict(y=[1, 2], n_timepoints=0), "n_timepoints must be a positive integer"),
    (dict(y=[1, 2], n_timepoints=3, duration=0), "duration must be a positive"),
    (dict(y=[1, 2], n_timepoints=2.5), "n_timepoints must be a positive integer"),
    (dict(y=[[1, 2]], n_timepoints=3), r"one condition label per trial .*\(1, 2\)"),
    (dict(y=[1, 3], n_timepoints=3, conditions=[1, 2]),
     r"label\(s\) \[3\] that are not in conditions=\[1, 2\]"),
    (dict(y=[1, 2], n_timepoints=3, conditions=[1, 2, 1]), "must be distinct"),
])
def test_condition_inputs_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        condition_inputs(**kwargs)


def test_condition_inputs_drive_a_network():
    data = make_low_tensor_rank_rnn(24, 8, 5, rank=2, random_state=0)
    U = condition_inputs(data.y, 8)
    est = LowRankRNN(rank=2, n_units=10, max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=20
        est.fit(data.X[:16], data.y[:16], inputs=U[:16])
    n_conditions = len(np.unique(data.y))
    assert est.n_inputs_ == n_conditions
    assert est.input_map_.shape == (2, n_conditions)
    score = est.score(data.X[16:], data.y[16:], inputs=U[16:])
    assert np.isfinite(score)
    with pytest.raises(ValueError, match="fitted with external inputs"):
        est.score(data.X[16:], data.y[16:])
