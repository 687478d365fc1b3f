"""Transformers for ``(n_trials, n_timepoints, n_neurons)`` arrays.

scikit-learn's own scalers reject 3D input; these work inside ``Pipeline`` and
``GridSearchCV`` and are fitted on the training trials only.
"""

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.utils.validation import check_is_fitted

from .base import check_trials_array, check_training_trials

__all__ = ["StandardScaler3D"]


class StandardScaler3D(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Z-score each neuron over trials and time.

    Means and standard deviations are computed per neuron over all trials and time
    points of the training data, ignoring NaN (missing entries stay NaN). Neurons with
    zero variance are centred but not scaled.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract each neuron's mean.
    with_std : bool, default=True
        Divide by each neuron's standard deviation.

    Attributes
    ----------
    mean_ : ndarray of shape (n_neurons,) or None
        Per-neuron mean (None when ``with_mean=False``).
    scale_ : ndarray of shape (n_neurons,) or None
        Per-neuron scale (None when ``with_std=False``); 1 for constant neurons.
    n_features_in_ : int
        Number of neurons.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.preprocessing import StandardScaler3D
    >>> X = np.arange(24.0).reshape(2, 3, 4)
    >>> Xt = StandardScaler3D().fit_transform(X)
    >>> np.allclose(Xt.mean(axis=(0, 1)), 0), np.allclose(Xt.std(axis=(0, 1)), 1)
    (True, True)
    """

    _parameter_constraints = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, *, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.allow_nan = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Compute per-neuron mean and scale on training trials.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
        y : ignored

        Returns
        -------
        self : object
        """
        X, _ = check_training_trials(X, min_trials=1)
        self.n_features_in_ = X.shape[2]
        self.mean_ = np.nanmean(X, axis=(0, 1)) if self.with_mean else None
        if self.with_std:
            scale = np.nanstd(X, axis=(0, 1))
            self.scale_ = np.where(scale > 0, scale, 1.0)
        else:
            self.scale_ = None
        return self

    def _check(self, X):
        check_is_fitted(self)
        X = check_trials_array(X)
        if X.shape[2] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[2]} neurons, but StandardScaler3D was fitted with "
                f"{self.n_features_in_}.")
        return X

    def transform(self, X):
        """Standardise X.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)

        Returns
        -------
        X_new : ndarray of shape (n_trials, n_timepoints, n_neurons)
        """
        X = self._check(X)
        if self.mean_ is not None:
            X = X - self.mean_
        if self.scale_ is not None:
            X = X / self.scale_
        return X

    def inverse_transform(self, X):
        """Undo :meth:`transform`.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)

        Returns
        -------
        X_original : ndarray of shape (n_trials, n_timepoints, n_neurons)
        """
        X = self._check(X)
        if self.scale_ is not None:
            X = X * self.scale_
        if self.mean_ is not None:
            X = X + self.mean_
        return X
