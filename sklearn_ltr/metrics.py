"""Scores of held-out predictions, and the neuron folds of the co-smoothing score."""

import numpy as np

from ._validation import unit_scale

__all__ = ["cosmoothing_folds", "cosmoothing_predict", "r2_observed", "bits_per_spike"]


def cosmoothing_folds(n_neurons, n_folds):
    """Assign neurons to co-smoothing folds: a fixed, seed-independent permutation.

    The assignment depends only on ``n_neurons`` and ``n_folds``, so every estimator
    scored on the same data uses the same folds (a fair comparison).

    Returns
    -------
    fold : ndarray of shape (n_neurons,)
        Fold index of each neuron, in ``range(min(n_folds, n_neurons))``.

    Examples
    --------
    >>> from sklearn_ltr.base import cosmoothing_folds
    >>> fold = cosmoothing_folds(12, 5)
    >>> sorted(set(fold.tolist())), int((fold == 0).sum())
    ([0, 1, 2, 3, 4], 3)
    """
    n_folds = min(n_folds, n_neurons)
    perm = np.random.RandomState(0).permutation(n_neurons)
    fold = np.empty(n_neurons, dtype=int)
    fold[perm] = np.arange(n_neurons) % n_folds
    return fold


def cosmoothing_predict(infer, X, n_folds, *, y=None, inputs=None):
    """Predict every neuron from what was inferred without it (co-smoothing).

    The neurons are split into ``n_folds`` folds (:func:`cosmoothing_folds`); for
    each fold, ``infer`` sees the trials with that fold's neurons set to NaN
    (missing) and its reconstruction of those neurons is kept. No entry of ``X`` is
    used to predict itself. The fold-masked copies are stacked along the trial axis
    and passed to ``infer`` in one call, which costs one batched inference rather than
    one per fold; ``infer`` must therefore treat every trial independently (as the
    per-trial inference of the estimators of this package does).

    Parameters
    ----------
    infer : callable
        ``infer(X, y, inputs) -> reconstruction`` of the same shape as ``X``,
        inferring per-trial parameters from the observed (non-NaN) entries only.
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
        Trials; NaN entries are missing.
    n_folds : int
        Number of neuron folds (at most ``n_neurons``).
    y : array-like of shape (n_trials,), default=None
        Per-trial labels, repeated for every fold.
    inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
        Per-trial inputs, repeated for every fold.

    Returns
    -------
    prediction : ndarray of shape (n_trials, n_timepoints, n_neurons)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.metrics import cosmoothing_predict
    >>> X = np.arange(24.0).reshape(2, 3, 4)
    >>> def mean_of_observed(Xm, y, inputs):  # each entry: mean of the others seen
    ...     m = np.nanmean(Xm, axis=2, keepdims=True)
    ...     return np.broadcast_to(m, Xm.shape)
    >>> cosmoothing_predict(mean_of_observed, X, 2).shape
    (2, 3, 4)
    """
    n_trials, _, n_neurons = X.shape
    fold = cosmoothing_folds(n_neurons, n_folds)
    n_folds = fold.max() + 1
    if n_folds < 2:
        raise ValueError(
            f"co-smoothing needs at least 2 neurons to hold one out, X has "
            f"{n_neurons}.")
    stacked = np.repeat(X[None], n_folds, axis=0)
    for f in range(n_folds):
        stacked[f][:, :, fold == f] = np.nan
    stacked = stacked.reshape((n_folds * n_trials,) + X.shape[1:])
    y_s = None if y is None else np.tile(np.asarray(y), n_folds)
    in_s = None if inputs is None else np.tile(np.asarray(inputs), (n_folds, 1, 1))
    recon = infer(stacked, y_s, in_s)
    recon = recon.reshape((n_folds, n_trials) + X.shape[1:])
    pred = np.empty_like(X)
    for f in range(n_folds):
        pred[:, :, fold == f] = recon[f][:, :, fold == f]
    return pred


def _trial_weights(sample_weight, X):
    """Per-trial weights broadcast over time and neurons (1 without weights)."""
    if sample_weight is None:
        return np.ones((X.shape[0], 1, 1))
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (X.shape[0],):
        raise ValueError(
            f"sample_weight must hold one weight per trial: expected shape "
            f"({X.shape[0]},), got {w.shape}.")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError("sample_weight must be finite and non-negative.")
    return w[:, None, None]


def r2_observed(X, P, sample_weight=None):
    """Variance-weighted R^2 of predictions ``P`` over the non-NaN entries of ``X``.

    Missing entries of ``X`` are never scored, whatever ``P`` holds there. When the
    observed entries have no variance around their neuron means, R^2 is undefined;
    as scikit-learn's ``r2_score`` (``force_finite=True``) the score is then 1.0 for
    a perfect prediction and 0.0 otherwise, so that a cross-validation fold of
    constant data neither wins nor returns -inf.

    Parameters
    ----------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
        Data; NaN entries are not scored.
    P : ndarray of the same shape
        Predictions.
    sample_weight : array-like of shape (n_trials,), default=None
        A weight per trial, on its squared errors and on its deviations from the
        (weighted) neuron means.

    Returns
    -------
    score : float

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.metrics import r2_observed
    >>> X = np.arange(8.0).reshape(2, 2, 2)
    >>> r2_observed(X, X + 1.0), r2_observed(X, X)
    (0.8, 1.0)
    """
    # R^2 is unit-free; computed on X and P divided by a power of two (exact), its
    # squares neither underflow (values below 1e-154 gave 0 / 0, read as a perfect
    # score) nor overflow.
    s = unit_scale(X)
    X, P = np.asarray(X, dtype=np.float64) / s, np.asarray(P) / s
    obs = ~np.isnan(X)
    w = _trial_weights(sample_weight, X) * obs
    Xo = np.where(obs, X, 0.0)
    total = w.sum(axis=(0, 1), keepdims=True)
    # A neuron with no observed entry has no mean; it is not scored either.
    mean = np.divide((w * Xo).sum(axis=(0, 1), keepdims=True), total,
                     out=np.zeros_like(total), where=total > 0)
    sse = np.sum(w * np.where(obs, X - P, 0.0) ** 2)
    sst = np.sum(w * (Xo - mean) ** 2)
    if sst <= 0:
        return 1.0 if sse <= 0 else 0.0
    return float(1.0 - sse / sst)


def bits_per_spike(X, rate, sample_weight=None):
    """Log-likelihood gain over a per-neuron mean-rate model, in bits per spike.

    Parameters
    ----------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
        Spike counts; NaN entries are not scored.
    rate : ndarray of the same shape
        Predicted rates.
    sample_weight : array-like of shape (n_trials,), default=None
        A weight per trial, on its log-likelihoods and spikes.

    Returns
    -------
    score : float
    """
    from scipy.special import xlogy

    obs = ~np.isnan(X)
    w = _trial_weights(sample_weight, X) * obs
    Xo = np.where(obs, X, 0.0)
    mean = (w * Xo).sum((0, 1)) / np.maximum(w.sum((0, 1)), 1e-300)
    rate = np.maximum(rate, 1e-9)
    null = np.broadcast_to(np.maximum(mean, 1e-9), X.shape)
    ll_model = np.sum(w * (xlogy(Xo, rate) - rate))
    ll_null = np.sum(w * (xlogy(Xo, null) - null))
    n_spikes = (w * Xo).sum()
    if n_spikes <= 0:
        return 0.0
    return float((ll_model - ll_null) / (n_spikes * np.log(2)))
