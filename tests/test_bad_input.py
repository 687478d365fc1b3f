"""Catalogue of unusual input whose handling differs between the classes of the
package, and random input (property-based).

Input that every class rejects alike (wrong dimensions, infinite, ragged, complex,
non-numeric...) is catalogued in test_common.py. Here each case is either rejected
with a ValueError or TypeError whose message says what was wrong (checked with
``pytest.raises(..., match=...)``), or accepted, in which case the reason is given
next to the case and the test checks the result is finite and sensible. The classes
are those of ``_checks.ALL`` (found in ``sklearn_ltr.__all__``), so a new class is
catalogued without editing this file.

Accepted cases and why:

* integer, unsigned and boolean arrays (spike counts, binary events) and object
  arrays of numbers: converted to float64; the fit is identical to the one on the
  float array (``None`` in an object array becomes NaN: a missing entry).
* constant neurons: nothing in the models needs a neuron to vary; a constant neuron
  is fitted by the readout offset (or the mean) and predicted exactly.
* constant data: the R^2 score is then undefined and reported as scikit-learn's
  ``r2_score`` does (1.0 if perfect, else 0.0). TCA rejects data that are all zero
  (its factors would be undetermined), and constant data (an exact rank-1 tensor)
  at a rank above 1.
* huge (1e8) and tiny (1e-8) magnitudes: the recurrent networks standardise the data
  internally (``loss='mse'``), the baselines and transformers are linear or scale
  equivariant in float64, so the fitted model is the same in any unit. Poisson counts
  of 1e8 per bin are fitted too (the readout is scaled by the counts' spread).
* one trial, or one time point: the transformers estimate per-neuron statistics and
  accept a single trial; TCA and TrialPCA have no dynamics and accept one time point.
  Only the recurrent networks need two time points (one step of the dynamics), and
  every estimator needs two trials (trial factors / per-trial parameters).
* all-NaN trials or neurons in a *stateless* transformer (nothing is estimated): the
  missing entries stay missing in the output.
* a wrong-length ``y`` for TCA and TrialPCA: ``y`` is ignored (unsupervised models,
  scikit-learn's convention), so its length is irrelevant.
* after fit, an all-NaN trial in ``transform`` / ``predict``: its per-trial
  parameters have nothing to be inferred from and keep their starting values; the
  output is finite. ``score`` refuses data with no observed entry at all.
"""

import warnings

import numpy as np
import pytest
from _checks import (
    ALL,
    BASELINES,
    ESTIMATORS,
    RNNS,
    TRANSFORMERS,
    class_id,
    make_small,
    methods,
    outputs,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sklearn_ltr import TCA, LowRankRNN, LowTensorRankRNN, TrialPCA, preprocessing
from sklearn_ltr.base import MOSTLY_MISSING, MissingDataWarning, r2_observed
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::sklearn_ltr.base.MissingDataWarning"),
]

K, T, N, RANK = 12, 8, 6, 2
_ids = class_id


def _assert_finite_outputs(est, X):
    """Every output is finite; a transformer may pass NaN through, never create it."""
    n_missing = np.isnan(np.asarray(X, dtype=np.float64)).sum()
    for method, value in outputs(est, X).items():
        assert not np.isinf(value).any(), method
        if type(est) in TRANSFORMERS:
            assert np.isnan(value).sum() <= n_missing, method
        else:
            assert np.isfinite(value).all(), method


@pytest.fixture(scope="module")
def X():
    X = make_low_tensor_rank_rnn(n_trials=K, n_timepoints=T, n_neurons=N, rank=RANK,
                                 random_state=0).X
    X.setflags(write=False)
    return X


@pytest.fixture(scope="module")
def fitted(X):
    return {Est: make_small(Est).fit(X) for Est in ESTIMATORS}


# --------------------------------------------------------------------------- #
# 1. trial, time-point and missing-data counts
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ALL, ids=_ids)
def test_single_trial_at_fit(Est, X):
    if Est in TRANSFORMERS:
        # Accepted: per-neuron statistics over the time points of one trial.
        est = make_small(Est).fit(X[:1])
        _assert_finite_outputs(est, X[:3])
        return
    with pytest.raises(ValueError,
                       match=r"X has 1 trial\(s\); at least 2 are required"):
        make_small(Est).fit(X[:1])


@pytest.mark.parametrize("Est", ALL, ids=_ids)
def test_single_time_point_at_fit(Est, X):
    if Est in RNNS:
        with pytest.raises(ValueError,
                           match=r"1 time point\(s\) per trial; at least 2"):
            make_small(Est).fit(X[:, :1])
        return
    # Accepted: no dynamics, so one time point is a valid (if short) trial.
    est = make_small(Est).fit(X[:, :1])
    _assert_finite_outputs(est, X[:3, :1])


@pytest.mark.parametrize("Est", ALL, ids=_ids)
@pytest.mark.parametrize("what, index, count", [
    ("trial", (4, slice(None), slice(None)), 1),
    ("neuron", (slice(None), slice(None), 2), 1),
    ("trial", (slice(None), slice(None), slice(None)), K),  # everything missing
], ids=["all-nan-trial", "all-nan-neuron", "all-nan-X"])
def test_all_nan_trial_or_neuron_at_fit(Est, what, index, count, X):
    X_nan = X.copy()
    X_nan[index] = np.nan
    est = make_small(Est)
    try:
        est.fit(X_nan)
    except ValueError as exc:
        assert f"{count} {what}(s) with no observed entry (all NaN)" in str(exc)
        return
    # Accepted by stateless transformers only: the missing entries stay missing.
    assert Est in TRANSFORMERS, f"{Est.__name__} accepted an all-NaN {what}"
    out = est.transform(X_nan)
    if what == "trial":
        assert np.isnan(out[4]).all()
    else:
        assert np.isnan(out[:, :, 2]).all()


@pytest.mark.parametrize("Est", ESTIMATORS + [preprocessing.StandardScaler3D],
                         ids=_ids)
@pytest.mark.parametrize("axis", ["trial", "neuron"])
def test_mostly_missing_warns_at_fit(Est, axis, X):
    X_nan = X.copy()
    if axis == "trial":
        X_nan[5, : T - 2] = np.nan  # 75% of trial 5
    else:
        X_nan[: int(0.8 * K), :, 3] = np.nan  # 80% of neuron 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingDataWarning)
        with pytest.raises(MissingDataWarning,
                           match=rf"1 {axis}\(s\) with more than 50% of their entries "
                                 rf"missing \(e.g. {axis} [53]: [78]\d% missing\)"):
            make_small(Est).fit(X_nan)


@pytest.mark.parametrize("Est", ESTIMATORS, ids=_ids)
def test_missing_below_threshold_does_not_warn(Est, X):
    X_nan = X.copy()
    X_nan[5, : int(T * MOSTLY_MISSING)] = np.nan  # exactly half: no warning
    X_nan[6:11, :, 0] = np.nan  # neuron 0: 44 of its 96 entries
    assert np.isnan(X_nan).mean(axis=(1, 2)).max() == MOSTLY_MISSING
    assert (np.isnan(X_nan).mean(axis=(0, 1)) <= MOSTLY_MISSING).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingDataWarning)
        make_small(Est).fit(X_nan)


@pytest.mark.parametrize("Est", ESTIMATORS, ids=_ids)
def test_missing_entries_never_leak(Est, X):
    """NaN entries are fitted around, never scored, and never reach the outputs."""
    rng = np.random.RandomState(1)
    X_nan = X.copy()
    X_nan[rng.uniform(size=X.shape) < 0.15] = np.nan
    est = make_small(Est).fit(X_nan)
    for key, value in vars(est).items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), key
        elif isinstance(value, list) and value and isinstance(value[0], float):
            assert np.isfinite(value).all(), key  # e.g. loss_curve_
    _assert_finite_outputs(est, X_nan)
    # An all-NaN trial added to the scored data is neither used nor scored: the
    # score does not change (inference is per trial, and R^2 skips missing entries).
    extra = np.full((1, T, N), np.nan)
    with_extra = est.score(np.concatenate([X_nan[:6], extra]))
    assert with_extra == pytest.approx(est.score(X_nan[:6]), rel=1e-6, abs=1e-9)


def test_r2_ignores_predictions_of_missing_entries(X):
    X_nan = X.copy()
    X_nan[0, :3] = np.nan
    P = X + 0.1
    P_garbage = P.copy()
    P_garbage[0, :3] = 1e30
    assert r2_observed(X_nan, P) == r2_observed(X_nan, P_garbage)
    assert r2_observed(X_nan, P) < 1.0


@pytest.mark.parametrize("Est", ESTIMATORS, ids=_ids)
def test_all_nan_trial_after_fit(Est, X, fitted):
    # Accepted: its per-trial parameters keep their starting values (nothing to
    # infer them from); outputs stay finite, and the other trials are unaffected.
    X_new = X[:3].copy()
    X_new[1] = np.nan
    est = fitted[Est]
    for method in ("transform", "predict"):
        out = getattr(est, method)(X_new)
        assert np.isfinite(out).all(), method
        np.testing.assert_allclose(out[[0, 2]], getattr(est, method)(X[[0, 2]]),
                                   rtol=1e-4, atol=1e-5)
    assert np.isfinite(est.score(X_new))
    with pytest.raises(ValueError, match="no observed .* entry, so there is nothing "
                                         "to score"):
        est.score(np.full((2, T, N), np.nan))


# --------------------------------------------------------------------------- #
# 2. accepted values: dtypes, constants, magnitudes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ALL, ids=_ids)
@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint8, bool, object,
                                   np.float32], ids=str)
def test_integer_bool_object_and_float32_accepted(Est, dtype, X):
    # Accepted: converted to float64 (spike counts are integers); the fit is the
    # one of the float64 array.
    counts = np.abs(np.round(3 * X))
    X_typed = (counts > 1) if dtype is bool else counts.astype(dtype)
    X_float = np.asarray(X_typed, dtype=np.float64)
    a = make_small(Est).fit(X_typed)
    b = make_small(Est).fit(X_float)
    out_a, out_b = outputs(a, X_typed[:4]), outputs(b, X_float[:4])
    for method in out_a:
        np.testing.assert_array_equal(out_a[method], out_b[method], err_msg=method)
    _assert_finite_outputs(a, X_typed[:4])


@pytest.mark.parametrize("Est", ALL, ids=_ids)
def test_constant_neuron_accepted(Est, X):
    # Accepted: a constant neuron is fitted by an offset and predicted exactly.
    X_const = X.copy()
    X_const[:, :, 1] = 3.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no 0/0 along the way
        est = make_small(Est).fit(X_const)
        _assert_finite_outputs(est, X_const)
    if Est in RNNS + [TrialPCA]:
        # Standardisation (RNNs) and centring (PCA) leave nothing to fit in it.
        pred = est.predict(X_const)
        np.testing.assert_allclose(pred[:, :, 1], 3.5, rtol=1e-6)


@pytest.mark.parametrize("Est", ALL, ids=_ids)
@pytest.mark.parametrize("value", [0.0, 2.5], ids=["zeros", "constant"])
def test_constant_data(Est, value, X):
    X_const = np.full(X.shape, value)
    if Est is TCA:
        # The same outcome on every machine: a constant tensor is exactly rank 1,
        # and the components beyond the first have nothing to fit (before, ALS met
        # a singular system or not, depending on the BLAS).
        match = ("Every observed entry of X is 0" if value == 0.0 else
                 "X is exactly a rank-1 tensor .* rank=2 is undetermined. Use rank=1")
        with pytest.raises(ValueError, match=match):
            make_small(Est).fit(X_const)
        if value == 0.0:
            return
        est = make_small(Est, rank=1).fit(X_const)
        np.testing.assert_allclose(est.predict(X_const), value, rtol=1e-6)
        return
    # Accepted: nothing to explain; R^2 is reported as 1.0 (perfect) or 0.0.
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = make_small(Est).fit(X_const)
        _assert_finite_outputs(est, X_const)
        if Est in ESTIMATORS:
            assert est.score(X_const) in (0.0, 1.0)
    for key, value in vars(est).items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), key


@pytest.mark.parametrize("Est", ALL, ids=_ids)
@pytest.mark.parametrize("scale, offset", [(1e8, 1e8), (1e-8, 0.0)],
                         ids=["1e8", "1e-8"])
def test_magnitudes_accepted_and_equivariant(Est, scale, offset, X):
    # Accepted: the fit does not depend on the units of X. For the networks this
    # holds because the data are standardised internally before the float32 fit.
    if Est is TCA:
        offset = 0.0  # a CP model has no offset: X + c is another tensor
    a = make_small(Est).fit(X)
    b = make_small(Est).fit(X * scale + offset)
    X_new = X[:4]
    out_a, out_b = outputs(a, X_new), outputs(b, X_new * scale + offset)
    for method in out_a:
        assert np.isfinite(out_b[method]).all(), method
    if "predict" in out_a:
        np.testing.assert_allclose((out_b["predict"] - offset) / scale,
                                   out_a["predict"], rtol=1e-3, atol=1e-3)
        assert out_b["score"] == pytest.approx(float(out_a["score"]), abs=1e-3)
    if Est in RNNS:
        for key in ("left_factors_", "right_factors_", "readout_"):
            assert np.isfinite(getattr(b, key)).all()
        np.testing.assert_allclose(b.readout_ / scale, a.readout_, rtol=1e-3,
                                   atol=1e-4)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_huge_poisson_counts_fitted(Est):
    # Accepted: Poisson counts cannot be rescaled (the likelihood depends on their
    # scale), so the readout is parametrised in units of the counts' standard
    # deviation instead; without that, Adam's fixed-size steps left the readout far
    # from counts of 1e8 and the model did worse than each neuron's mean rate.
    data = make_low_tensor_rank_rnn(n_trials=30, n_timepoints=10, n_neurons=8, rank=2,
                                    random_state=0)
    rate = np.log1p(np.exp(2 * data.X_clean))
    counts = np.random.RandomState(0).poisson(rate * 1e8).astype(float)
    est = make_small(Est, n_units=10, max_iter=100, loss="poisson").fit(counts[:20])
    for key in ("left_factors_", "right_factors_", "readout_", "readout_bias_"):
        assert np.isfinite(getattr(est, key)).all(), key
    pred = est.predict(counts[20:])
    assert np.isfinite(pred).all() and (pred >= 0).all()
    assert est.score(counts[20:]) > 0.05  # bits per spike over the mean-rate model


# --------------------------------------------------------------------------- #
# 3. rank too large for the data or the model
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est, params, X_shape, match", [
    (LowTensorRankRNN, dict(rank=9, n_units=8), (K, T, N),
     r"rank=9 must be <= n_units=8"),
    (LowRankRNN, dict(rank=9, n_units=8), (K, T, N), r"rank=9 must be <= n_units=8"),
    (TCA, dict(rank=8), (3, 4, 3), r"rank=8 is too large .* 64 free parameters"),
    (TrialPCA, dict(rank=N + 1), (K, T, N), rf"rank={N + 1} must be <= n_neurons={N}"),
    (TrialPCA, dict(rank=5), (2, 2, N),
     r"rank=5 must be <= n_trials \* n_timepoints=4"),
], ids=["LowTensorRankRNN", "LowRankRNN", "TCA", "TrialPCA-neurons",
        "TrialPCA-samples"])
def test_rank_too_large(Est, params, X_shape, match, X):
    X_bad = np.random.RandomState(0).standard_normal(X_shape)
    with pytest.raises(ValueError, match=match):
        make_small(Est, **params).fit(X_bad)


# --------------------------------------------------------------------------- #
# 4. inputs and y
# --------------------------------------------------------------------------- #
def _bad_inputs():
    U = np.zeros((K, T, 2))
    U_nan, U_inf = U.copy(), U.copy()
    U_nan[0, 0, 0] = np.nan
    U_inf[0, 0, 0] = np.inf
    return [
        pytest.param(U[:-1], "inputs must have shape", id="wrong-n_trials"),
        pytest.param(U[:, :-1], "inputs must have shape", id="wrong-n_timepoints"),
        pytest.param(U[:, :, 0], r"Expected inputs to be a 3D array", id="2d"),
        pytest.param(U_nan, "inputs contains NaN", id="nan"),
        pytest.param(U_inf, "inputs contains infinite", id="inf"),
        pytest.param(np.full((K, T, 2), "x"), "inputs must hold numbers", id="strings"),
    ]


@pytest.mark.parametrize("Est", ESTIMATORS, ids=_ids)
@pytest.mark.parametrize("inputs, match", _bad_inputs())
def test_bad_inputs_at_fit(Est, inputs, match, X):
    if Est in BASELINES:
        match = f"{Est.__name__} does not take external inputs"
    with pytest.raises((ValueError, TypeError), match=match):
        make_small(Est).fit(X, inputs=inputs)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("y, match", [
    (np.arange(K - 1) % 3, "one condition label per trial"),
    (np.arange(K + 1) % 3, "one condition label per trial"),
    (np.zeros((K, 2)), "one condition label per trial"),
    (np.where(np.arange(K) == 2, np.nan, 1.0), "contains NaN or infinite"),
], ids=["short", "long", "2d", "nan"])
def test_bad_y_at_fit(Est, y, match, X):
    with pytest.raises(ValueError, match=match):
        make_small(Est).fit(X, y)


@pytest.mark.parametrize("Est", BASELINES, ids=_ids)
def test_y_of_any_length_ignored_by_baselines(Est, X, fitted):
    # Accepted: unsupervised models ignore y (scikit-learn's convention).
    est = make_small(Est).fit(X, np.arange(K + 5))
    np.testing.assert_array_equal(est.predict(X[:3], np.arange(7)),
                                  fitted[Est].predict(X[:3]))


@pytest.mark.parametrize("Est", ESTIMATORS, ids=_ids)
def test_inputs_after_fit_without_them(Est, X, fitted):
    est = fitted[Est]
    match = (f"{Est.__name__} does not take external inputs" if Est in BASELINES
             else "fitted without external inputs")
    for method in methods(est):
        with pytest.raises(ValueError, match=match):
            getattr(est, method)(X[:3], inputs=np.zeros((3, T, 2)))


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_inputs_after_fit_with_them(Est, X):
    inputs = np.random.RandomState(0).standard_normal((K, T, 2))
    est = make_small(Est, max_iter=5).fit(X, inputs=inputs)
    assert est.n_inputs_ == 2
    for method in methods(est):
        with pytest.raises(ValueError, match="fitted with external inputs"):
            getattr(est, method)(X[:3])
        with pytest.raises(ValueError, match="has 3 channels, but the model was "
                                             "fitted"):
            getattr(est, method)(X[:3], inputs=np.zeros((3, T, 3)))
        # The right inputs work.
        out = getattr(est, method)(X[:3], inputs=inputs[:3])
        assert np.all(np.isfinite(out)), method


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_y_after_fit_with_conditions(Est, X):
    y = np.arange(K) % 3
    est = make_small(Est, max_iter=5).fit(X, y)
    assert est.initial_states_.shape == (3, RANK)
    for method in methods(est):
        with pytest.raises(ValueError, match="one condition label per trial"):
            getattr(est, method)(X[:3], y[:2])
        with pytest.raises(ValueError, match="condition labels not seen in fit"):
            getattr(est, method)(X[:3], np.array([0, 1, 99]))
    assert np.all(np.isfinite(est.predict(X[:3], y[:3])))


# --------------------------------------------------------------------------- #
# 5. after fit: time points
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ESTIMATORS, ids=_ids)
def test_different_trial_length_after_fit(Est, X, fitted):
    est = fitted[Est]
    if Est is TCA:
        for method in methods(est):
            with pytest.raises(ValueError, match=rf"X has {T - 2} time points per "
                                                 rf"trial, but TCA was fitted on "
                                                 rf"trials of {T}"):
                getattr(est, method)(X[:3, :-2])
        return
    # Accepted: dynamics (RNNs) and a neuron subspace (PCA) apply to any length.
    _assert_finite_outputs(est, X[:3, :-2])
    assert est.predict(X[:3, :-2]).shape == (3, T - 2, N)


# --------------------------------------------------------------------------- #
# 6. property-based: random shapes, dtypes and NaN patterns
# --------------------------------------------------------------------------- #
@st.composite
def _arrays(draw):
    # Weighted towards input that can be fitted, so that both outcomes are common.
    ndim = draw(st.sampled_from([3] * 8 + [2, 4]))
    shape = tuple(draw(st.sampled_from([0] + [1, 2, 3, 4, 5] * 3)) for _ in range(ndim))
    dtype = draw(st.sampled_from(["float64"] * 4 + ["float32", "int64", "uint8",
                                                    "bool", "complex128", "object"]))
    rng = np.random.RandomState(draw(st.integers(0, 2 ** 16)))
    X = rng.standard_normal(shape) * draw(st.sampled_from([1e-6, 1.0, 1e6]))
    if dtype not in ("float64", "float32", "object") and X.size:
        X = np.abs(X) * (3.0 / max(np.abs(X).max(), 1e-300))
    X = X.astype(dtype) if dtype != "object" else X.astype(object)
    if dtype in ("float64", "float32") and X.size:
        pattern = draw(st.sampled_from(["none", "sparse", "dense", "trial", "neuron"]))
        if pattern == "sparse":
            X[rng.uniform(size=shape) < 0.1] = np.nan
        elif pattern == "dense":
            X[rng.uniform(size=shape) < 0.7] = np.nan
        elif pattern == "trial":
            X[0] = np.nan
        elif pattern == "neuron" and ndim == 3:
            X[..., 0] = np.nan
    return X


@pytest.mark.parametrize("Est", ALL, ids=_ids)
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(X_raw=_arrays(), rank=st.integers(1, 3))
def test_random_input_succeeds_or_raises_clearly(Est, X_raw, rank):
    params = {"rank": rank} if Est in ESTIMATORS else {}
    if Est in RNNS:
        params.update(max_iter=3, infer_max_iter=3, n_units=4)
    est = make_small(Est, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est.fit(X_raw)
        except (ValueError, TypeError) as exc:
            # LinAlgError subclasses ValueError, but says nothing about the input.
            assert not isinstance(exc, np.linalg.LinAlgError), exc
            event(f"fit raised {type(exc).__name__}")
            return
        event("fit succeeded")
        X_new = np.asarray(X_raw, dtype=np.float64)
        for method in methods(est):
            try:
                out = np.asarray(getattr(est, method)(X_raw))
            except (ValueError, TypeError) as exc:
                # Only the co-smoothing score has an extra requirement.
                assert method == "score" and (
                    "at least 2 neurons" in str(exc) or "nothing to score" in str(exc)
                ), exc
                continue
            assert not np.isinf(out).any(), method
            if type(est) in TRANSFORMERS:
                assert np.isnan(out).sum() <= np.isnan(X_new).sum(), method
            else:
                assert not np.isnan(out).any(), method

