"""The Gaussian process over trial numbers and the trial-factor strategies."""

import numpy as np
import pytest

from sklearn_ltr._priors import TrialGP, trial_kernel


def test_kernel_is_block_diagonal_across_epochs():
    index = np.arange(6)
    epochs = np.array(["a", "a", "a", "b", "b", "b"])
    K = trial_kernel(index, index, 2.0, epochs, epochs)
    assert np.all(K[:3, 3:] == 0) and np.all(K[3:, :3] == 0)
    np.testing.assert_allclose(K[0, 1], np.exp(-0.5 / 4.0))
    np.testing.assert_array_equal(trial_kernel(index, index, None), np.eye(6))


def test_basis_spans_the_covariance():
    # basis @ basis.T is the covariance, up to the dropped components.
    index = np.arange(0, 60, 1.5)
    gp = TrialGP(index, None, 8.0, amplitude=0.7, jitter=0.1, rtol=0.0)
    cov = 0.49 * trial_kernel(index, index, 8.0) + 0.01 * np.eye(len(index))
    np.testing.assert_allclose(gp.basis @ gp.basis.T, cov, atol=1e-10)


def test_truncation_keeps_smooth_components():
    short = TrialGP(np.arange(100), None, 5.0)
    long = TrialGP(np.arange(100), None, 30.0)
    assert long.basis.shape[1] < short.basis.shape[1] < 100
    # Independent trials: one coefficient per trial.
    assert TrialGP(np.arange(7), None, None).basis.shape == (7, 7)


def test_extension_reproduces_fitted_trials_and_interpolates():
    index = np.arange(0, 80, 2.0)
    gp = TrialGP(index, None, 10.0)
    w = np.random.RandomState(0).standard_normal((gp.basis.shape[1], 3))
    np.testing.assert_allclose(gp.extend(index, None) @ w, gp.basis @ w, atol=1e-6)
    smooth = np.sin(np.arange(0, 80, 2.0) / 12.0)[:, None]
    odd = np.arange(1, 79, 2.0)
    # The prediction smooths the fitted values a little (their nugget).
    np.testing.assert_allclose(gp.predict(smooth, odd, None)[:, 0],
                               np.sin(odd / 12.0), atol=0.05)


def test_prediction_does_not_cross_epochs():
    index = np.arange(40.0)
    epochs = np.repeat(["early", "late"], 20)
    gp = TrialGP(index, epochs, 5.0)
    values = np.where(epochs == "early", 1.0, 3.0)[:, None]
    # A late trial right at the boundary is predicted from late trials only.
    pred = gp.predict(values, np.array([20.5]), np.array(["late"]))
    assert pred[0, 0] > 2.5
    # An epoch never fitted gets the prior mean: the mean of the values.
    pred = gp.predict(values, np.array([20.5]), np.array(["other"]))
    np.testing.assert_allclose(pred, [[2.0]])
    with pytest.raises(ValueError, match="epochs must be given"):
        gp.extend(np.array([3.0]), None)


def test_jitter_is_not_predicted():
    # Independent per-trial fluctuations say nothing about a trial not fitted: with
    # a large jitter, the prediction stays near the mean.
    index = np.arange(30.0)
    rough = np.random.RandomState(0).standard_normal((30, 1))
    smooth_gp = TrialGP(index, None, 3.0, jitter=0.0)
    jittery_gp = TrialGP(index, None, 3.0, jitter=3.0)
    at = np.array([10.5])
    assert abs(jittery_gp.predict(rough, at, None)[0, 0] - rough.mean()) < \
        abs(smooth_gp.predict(rough, at, None)[0, 0] - rough.mean())


def test_prediction_across_a_gap_does_not_overshoot():
    # Rough values next to a gap of held-out trials: the prediction inside the gap
    # stays within the range of the values (no wild extrapolation of their wiggles).
    rng = np.random.RandomState(0)
    index = np.r_[np.arange(0, 40), np.arange(62, 100)].astype(float)
    values = 1.0 + 0.1 * rng.standard_normal((len(index), 2))
    gp = TrialGP(index, None, 10.0)
    pred = gp.predict(values, np.arange(40, 62, dtype=float), None)
    assert np.all(pred > values.min(0) - 0.05) and np.all(pred < values.max(0) + 0.05)
