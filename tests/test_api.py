"""scikit-learn API conformance of the estimators, on 3D ``(n_trials, n_timepoints,
n_neurons)`` data.

scikit-learn's data-free checks are called one by one; the data-dependent checks of
``check_estimator`` (which assume 2D ``(n_samples, n_features)`` input) are rewritten
here for 3D trials, on small planted data and small, fast models.
"""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted

from _checks import DATA_FREE_CHECKS
from sklearn_ltr import LowRankRNN, LowTensorRankRNN, StandardScaler3D
from sklearn_ltr import _solver
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

# Tiny models stop at max_iter on purpose (speed); that is not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RNNS = [LowTensorRankRNN, LowRankRNN]
ALL_ESTIMATORS = RNNS + [StandardScaler3D]

N_TRIALS, N_TIMEPOINTS, N_NEURONS, RANK = 20, 12, 10, 2


def _small(Est, **params):
    """A small, fast instance of ``Est``."""
    if Est is StandardScaler3D:
        return StandardScaler3D(**params)
    kw = dict(rank=RANK, n_units=16, max_iter=60, random_state=0)
    kw.update(params)
    return Est(**kw)


def _ids(Est):
    return Est.__name__


@pytest.fixture(scope="module")
def data():
    return make_low_tensor_rank_rnn(
        n_trials=N_TRIALS, n_timepoints=N_TIMEPOINTS, n_neurons=N_NEURONS, rank=RANK,
        random_state=0)


@pytest.fixture(scope="module")
def X(data):
    X = data.X.copy()
    X.setflags(write=False)  # tests must not modify the shared data
    return X


@pytest.fixture(scope="module")
def fitted(X):
    """One fitted instance per estimator class, shared by read-only tests."""
    return {Est: _small(Est).fit(X) for Est in ALL_ESTIMATORS}


def _outputs(est, X):
    """Everything an estimator returns for X (transform, predict, score...)."""
    out = {"transform": est.transform(X)}
    if hasattr(est, "predict"):
        out["predict"] = est.predict(X)
    if hasattr(est, "score") and not isinstance(est, StandardScaler3D):
        out["score"] = np.asarray(est.score(X))
    if hasattr(est, "inverse_transform"):
        out["inverse_transform"] = est.inverse_transform(X)
    return out


def _assert_same_outputs(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --------------------------------------------------------------------------- #
# 1. scikit-learn's data-free checks
# --------------------------------------------------------------------------- #

def _data_free_cases():
    for Est in ALL_ESTIMATORS:
        for check in DATA_FREE_CHECKS:
            yield pytest.param(Est, check, id=f"{Est.__name__}-{check}")


@pytest.mark.parametrize("Est, check_name", list(_data_free_cases()))
def test_sklearn_data_free_check(Est, check_name):
    check = getattr(estimator_checks, check_name)
    # Every check in 1.9.1 takes (name, estimator_orig); those that need data use tiny
    # 2D sets, so an estimator with default (large) parameters is fine.
    check(Est.__name__, Est())


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_invalid_device_string_is_a_clear_error(Est, X):
    with pytest.raises(ValueError, match="device"):
        _small(Est, max_iter=2, device="bogus").fit(X)


# --------------------------------------------------------------------------- #
# 2. data-dependent checks, in 3D
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_fit_returns_self_and_keeps_params(Est, X):
    est = _small(Est)
    before = joblib.hash(est.get_params())
    assert est.fit(X) is est
    assert joblib.hash(est.get_params()) == before


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_same_random_state_is_deterministic(Est, X):
    a = _small(Est).fit(X)
    b = _small(Est).fit(X)
    np.testing.assert_array_equal(a.left_factors_, b.left_factors_)
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_fit_does_not_touch_global_rng(Est, X):
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    _small(Est, max_iter=5).fit(X)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert np_state[0] == after[0] and np.array_equal(np_state[1], after[1])
    assert np_state[2:] == after[2:]


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_pickle_round_trip(Est, X, fitted):
    est = fitted[Est]
    loaded = pickle.loads(pickle.dumps(est))
    assert type(loaded) is Est
    _assert_same_outputs(_outputs(est, X[:4]), _outputs(loaded, X[:4]))


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_joblib_round_trip(Est, X, fitted, tmp_path):
    est = fitted[Est]
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    loaded = joblib.load(path)
    _assert_same_outputs(_outputs(est, X[:4]), _outputs(loaded, X[:4]))


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_read_only_input(Est, data, tmp_path):
    X_ro = data.X.copy()
    X_ro.setflags(write=False)
    est = _small(Est, **({} if Est is StandardScaler3D else {"max_iter": 5})).fit(X_ro)
    _outputs(est, X_ro[:4])

    path = tmp_path / "X.dat"
    data.X.tofile(path)
    X_mm = np.memmap(path, dtype=data.X.dtype, mode="r", shape=data.X.shape)
    est_mm = clone(est).fit(X_mm)
    out = _outputs(est_mm, X_mm[:4])
    for value in out.values():
        assert np.all(np.isfinite(value))
    del X_mm


_MISMATCH_CASES = [
    pytest.param(Est, method, id=f"{Est.__name__}-{method}")
    for Est, methods in [(LowTensorRankRNN, ["transform", "predict", "score"]),
                         (LowRankRNN, ["transform", "predict", "score"]),
                         (StandardScaler3D, ["transform", "inverse_transform"])]
    for method in methods
]


@pytest.mark.parametrize("Est, method", _MISMATCH_CASES)
def test_neuron_count_mismatch(Est, method, X, fitted):
    est = fitted[Est]
    with pytest.raises(ValueError, match="neurons"):
        getattr(est, method)(X[:, :, :-1])
    X_more = np.concatenate([X, X[:, :, :1]], axis=2)
    with pytest.raises(ValueError, match="neurons"):
        getattr(est, method)(X_more)


def _order_cases():
    for Est in ALL_ESTIMATORS:
        for method in ["transform", "predict"]:
            if not hasattr(Est, method):
                continue
            yield pytest.param(Est, method, id=f"{Est.__name__}-{method}")


@pytest.mark.parametrize("Est, method", list(_order_cases()))
def test_trial_order_invariance_of_inference(Est, method, X, fitted):
    # Per-trial inference treats trials independently, so permuting the trials
    # permutes the result. (fit itself depends on trial order by design: the
    # smoothness prior over trials of LowTensorRankRNN.)
    est = fitted[Est]
    perm = np.random.RandomState(1).permutation(X.shape[0])
    out = getattr(est, method)(X)
    out_perm = getattr(est, method)(X[perm])
    np.testing.assert_allclose(out_perm, out[perm], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("method", ["transform", "predict"])
def test_inference_does_not_depend_on_other_trials(Est, method, X, fitted):
    # Each trial has its own optimiser state and stopping rule: the result for a
    # trial is the same whichever trials share the call.
    est = fitted[Est]
    out = getattr(est, method)(X)
    np.testing.assert_allclose(getattr(est, method)(X[:3]), out[:3], rtol=1e-4,
                               atol=1e-5)
    # ... while a wrong pairing of trials would be far outside that tolerance.
    perm = np.random.RandomState(1).permutation(X.shape[0])
    assert np.abs(out[perm] - out).max() > 1e-2


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_fitted_attributes_shapes(Est, X, fitted):
    est = fitted[Est]
    n_units = est.n_units
    assert est.n_features_in_ == N_NEURONS
    assert est.left_factors_.shape == (n_units, RANK)
    assert est.right_factors_.shape == (n_units, RANK)
    assert est.readout_.shape == (N_NEURONS, n_units)
    if Est is LowTensorRankRNN:
        assert est.trial_factors_.shape == (N_TRIALS, RANK)
    else:
        assert not hasattr(est, "trial_factors_")
    assert isinstance(est.loss_curve_, list)
    assert len(est.loss_curve_) == est.n_iter_
    assert 1 <= est.n_iter_ <= est.max_iter
    for name in ["left_factors_", "right_factors_", "readout_"]:
        value = getattr(est, name)
        assert isinstance(value, np.ndarray), name
        assert np.all(np.isfinite(value)), name
    assert np.all(np.isfinite(est.loss_curve_))
    # Fitting reduced the loss (the first n_forced_ losses are teacher-forced).
    assert est.n_forced_ == min(est.forcing_iter, est.max_iter // 3)
    assert est.loss_curve_[-1] < est.loss_curve_[est.n_forced_]

    n_new = 3
    assert est.transform(X[:n_new]).shape == (n_new, N_TIMEPOINTS, RANK)
    assert est.predict(X[:n_new]).shape == (n_new, N_TIMEPOINTS, N_NEURONS)
    score = est.score(X[:n_new])
    assert np.isscalar(score) and np.isfinite(score)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_weight_tensor(Est, fitted):
    est = fitted[Est]
    W = est.weight_tensor()
    assert W.shape == (N_TRIALS, est.n_units, est.n_units)
    A, B = est.left_factors_, est.right_factors_
    if Est is LowTensorRankRNN:
        C = est.trial_factors_
    else:
        C = np.ones((N_TRIALS, RANK))
    expected = np.einsum("kr,ir,jr->kij", C, A, B) / est.n_units
    np.testing.assert_allclose(W, expected, rtol=1e-10, atol=1e-12)
    if Est is LowRankRNN:
        np.testing.assert_array_equal(W, np.broadcast_to(W[0], W.shape))
    # The stack of weight matrices is (at most) rank R in every unfolding.
    assert np.linalg.matrix_rank(W.reshape(N_TRIALS * est.n_units, -1)) <= RANK


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_weight_tensor_unfitted(Est):
    with pytest.raises(NotFittedError):
        _small(Est).weight_tensor()


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_n_threads_applied_and_restored(Est, X, monkeypatch):
    seen = []

    def spying(function):
        def spy(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return function(*args, **kwargs)
        return spy

    monkeypatch.setattr(_solver, "optimize", spying(_solver.optimize))
    monkeypatch.setattr(_solver, "optimize_per_trial",
                        spying(_solver.optimize_per_trial))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        est = _small(Est, n_threads=1, max_iter=5, infer_max_iter=5)
        est.fit(X)
        assert torch.get_num_threads() == 2
        est.predict(X[:2])
        assert torch.get_num_threads() == 2
        est.transform(X[:2])
        assert torch.get_num_threads() == 2
        est.score(X[:2])
        assert torch.get_num_threads() == 2
        # fit, predict, transform and score each ran the solver, with one thread.
        assert len(seen) >= 4
        assert set(seen) == {1}
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_n_threads_none_leaves_setting(Est, X):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _small(Est, n_threads=None, max_iter=3).fit(X)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_clone_of_fitted_is_unfitted(Est, X, fitted):
    est = fitted[Est]
    check_is_fitted(est)
    new = clone(est)
    assert new.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(new)
    with pytest.raises(NotFittedError):
        new.transform(X)


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_unfitted_raises_not_fitted_on_3d(Est, X):
    est = _small(Est)
    for method in ["transform", "predict", "score", "inverse_transform"]:
        if hasattr(est, method) and not (method == "score" and Est is StandardScaler3D):
            with pytest.raises(NotFittedError):
                getattr(est, method)(X)


# --------------------------------------------------------------------------- #
# 3. bad input
# --------------------------------------------------------------------------- #
def _bad_X_cases():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((N_TRIALS, N_TIMEPOINTS, N_NEURONS))
    X_inf = X.copy()
    X_inf[3, 4, 5] = np.inf
    X_ninf = X.copy()
    X_ninf[0, 0, 0] = -np.inf
    strings = np.full((4, 5, 3), "a")
    dicts = np.empty((4, 5, 3), dtype=object)
    for idx in np.ndindex(dicts.shape):
        dicts[idx] = {"a": 1}
    ragged = [X[0], X[1], X[2, :-2]]
    return [
        pytest.param(X[0], ValueError, "3D array", id="2d"),
        pytest.param(X[..., None], ValueError, "3D array", id="4d"),
        pytest.param(X_inf, ValueError, "infinite", id="inf"),
        pytest.param(X_ninf, ValueError, "infinite", id="-inf"),
        pytest.param(strings, TypeError, "must hold numbers", id="strings"),
        pytest.param(dicts, TypeError, "must hold numbers", id="object-dicts"),
        pytest.param(X + 1j, ValueError, "complex", id="complex"),
        pytest.param(ragged, ValueError, "different shapes", id="ragged-list"),
    ]


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
@pytest.mark.parametrize("X_bad, error, match", _bad_X_cases())
def test_bad_X_at_fit(Est, X_bad, error, match):
    with pytest.raises(error, match=match):
        _small(Est).fit(X_bad)


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
@pytest.mark.parametrize("X_bad, error, match", _bad_X_cases())
def test_bad_X_after_fit(Est, X_bad, error, match, fitted):
    est = fitted[Est]
    with pytest.raises(error, match=match):
        est.transform(X_bad)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_one_trial_at_fit(Est, X):
    with pytest.raises(ValueError, match=r"1 trial\(s\); at least 2"):
        _small(Est).fit(X[:1])


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_one_trial_after_fit_is_fine(Est, X, fitted):
    # Only fit needs several trials; one new trial can be transformed.
    assert fitted[Est].predict(X[:1]).shape == (1, N_TIMEPOINTS, N_NEURONS)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("rank", [0, -1])
def test_rank_not_positive(Est, rank, X):
    # InvalidParameterError subclasses ValueError.
    with pytest.raises(ValueError, match="'rank' parameter"):
        _small(Est, rank=rank).fit(X)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_rank_above_n_units(Est, X):
    with pytest.raises(ValueError, match=r"rank=5 must be <= n_units=4"):
        _small(Est, rank=5, n_units=4).fit(X)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("shape", [(N_TRIALS - 1, N_TIMEPOINTS, 2),
                                   (N_TRIALS, N_TIMEPOINTS - 1, 2)],
                         ids=["wrong-n_trials", "wrong-n_timepoints"])
def test_inputs_wrong_shape_at_fit(Est, shape, X):
    with pytest.raises(ValueError, match="inputs must have shape"):
        _small(Est).fit(X, inputs=np.zeros(shape))


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_inputs_not_3d_at_fit(Est, X):
    with pytest.raises(ValueError, match="inputs"):
        _small(Est).fit(X, inputs=np.zeros((N_TRIALS, N_TIMEPOINTS)))


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("method", ["transform", "predict", "score"])
def test_inputs_given_to_model_fitted_without(Est, method, X, fitted):
    est = fitted[Est]
    inputs = np.zeros((3, N_TIMEPOINTS, 2))
    with pytest.raises(ValueError, match="fitted without external inputs"):
        getattr(est, method)(X[:3], inputs=inputs)


@pytest.fixture(scope="module")
def fitted_with_inputs(X):
    inputs = np.random.RandomState(0).standard_normal((N_TRIALS, N_TIMEPOINTS, 2))
    return inputs, {Est: _small(Est, max_iter=5).fit(X, inputs=inputs) for Est in RNNS}


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("method", ["transform", "predict", "score"])
def test_inputs_missing_for_model_fitted_with(Est, method, X, fitted_with_inputs):
    inputs, models = fitted_with_inputs
    est = models[Est]
    assert est.n_inputs_ == 2
    with pytest.raises(ValueError, match="fitted with external inputs"):
        getattr(est, method)(X[:3])
    with pytest.raises(ValueError, match="has 3 channels, but the model was fitted"):
        getattr(est, method)(X[:3], inputs=np.zeros((3, N_TIMEPOINTS, 3)))
    # The right inputs work.
    out = getattr(est, method)(X[:3], inputs=inputs[:3])
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("n_labels", [N_TRIALS - 1, N_TRIALS + 1])
def test_y_wrong_length(Est, n_labels, X):
    with pytest.raises(ValueError, match="one condition label per trial"):
        _small(Est).fit(X, np.arange(n_labels) % 4)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_y_after_fit_with_conditions(Est, data, X):
    est = _small(Est, max_iter=5).fit(X, data.y)
    assert est.initial_states_.shape == (len(np.unique(data.y)), RANK)
    for method in ["transform", "predict", "score"]:
        with pytest.raises(ValueError, match="one condition label per trial"):
            getattr(est, method)(X[:3], data.y[:2])
        with pytest.raises(ValueError, match="condition labels not seen in fit"):
            getattr(est, method)(X[:3], np.array([0, 1, 99]))
    assert np.all(np.isfinite(est.predict(X[:3], data.y[:3])))


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_all_nan_trial(Est, X):
    X_nan = X.copy()
    X_nan[4] = np.nan
    with pytest.raises(ValueError, match=r"1 trial\(s\) with no observed entry"):
        _small(Est).fit(X_nan)


@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_all_nan_neuron(Est, X):
    X_nan = X.copy()
    X_nan[:, :, 7] = np.nan
    with pytest.raises(ValueError, match=r"1 neuron\(s\) with no observed entry"):
        _small(Est).fit(X_nan)


# --------------------------------------------------------------------------- #
# 4. missing entries
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ALL_ESTIMATORS, ids=_ids)
def test_nan_entries(Est, X):
    rng = np.random.RandomState(0)
    X_nan = X.copy()
    X_nan[rng.uniform(size=X.shape) < 0.1] = np.nan
    est = _small(Est).fit(X_nan)
    params = [v for k, v in vars(est).items()
              if k.endswith("_") and not k.startswith("_") and isinstance(v, np.ndarray)
              and v.dtype.kind == "f"]
    assert params
    for value in params:
        assert np.all(np.isfinite(value))
    if Est is StandardScaler3D:
        Xt = est.transform(X_nan)
        np.testing.assert_array_equal(np.isnan(Xt), np.isnan(X_nan))
        return
    assert np.all(np.isfinite(est.loss_curve_))
    assert np.all(np.isfinite(est.transform(X_nan)))
    assert np.all(np.isfinite(est.predict(X_nan)))
    assert np.isfinite(est.score(X_nan))


# --------------------------------------------------------------------------- #
# 5. StandardScaler3D
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


def test_scaler_inverse_round_trip(X):
    scaler = StandardScaler3D().fit(X)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(X)), X,
                               rtol=1e-12, atol=1e-12)
    # On new trials too.
    X_new = X[:3] * 2.0 + 1.0
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(X_new)),
                               X_new, rtol=1e-12, atol=1e-12)


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


def test_scaler_nan_stays_nan(X):
    rng = np.random.RandomState(0)
    X_nan = X.copy()
    missing = rng.uniform(size=X.shape) < 0.1
    X_nan[missing] = np.nan
    scaler = StandardScaler3D().fit(X_nan)
    Xt = scaler.transform(X_nan)
    np.testing.assert_array_equal(np.isnan(Xt), missing)
    np.testing.assert_allclose(np.nanmean(Xt, axis=(0, 1)), 0, atol=1e-12)
    np.testing.assert_allclose(np.nanstd(Xt, axis=(0, 1)), 1, rtol=1e-12)
    back = scaler.inverse_transform(Xt)
    np.testing.assert_array_equal(np.isnan(back), missing)
    np.testing.assert_allclose(back[~missing], X_nan[~missing], rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("method", ["transform", "inverse_transform"])
def test_scaler_neuron_mismatch(method, X):
    scaler = StandardScaler3D().fit(X)
    with pytest.raises(ValueError, match=f"X has {N_NEURONS - 2} neurons, but "
                                         f"StandardScaler3D was fitted with "
                                         f"{N_NEURONS}"):
        getattr(scaler, method)(X[:, :, :-2])


def test_scaler_in_pipeline_with_rnn(X):
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(StandardScaler3D(), _small(LowRankRNN, max_iter=5))
    pipe.fit(X * 3.0 + 2.0)
    assert pipe.predict(X[:2] * 3.0 + 2.0).shape == (2, N_TIMEPOINTS, N_NEURONS)
    assert np.isfinite(pipe.score(X[:2] * 3.0 + 2.0))
