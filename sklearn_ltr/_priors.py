"""How trial factors vary over trials: one strategy object per estimator.

A strategy turns an estimator's hyperparameters into the trial-factor module of a
:class:`~sklearn_ltr._model.LatentRNN` -- for fitting, for trials not seen in fit
whose factors are inferred from their data, and for trials predicted from their
place in the session -- and names the fitted attributes that hold the result. The
estimators hold no branch on which of them they are: they ask their strategy.

* :class:`TrialInvariant` -- one connectivity for every trial
  (:class:`~sklearn_ltr.LowRankRNN`);
* :class:`GaussianProcessPrior` -- trial factors drawn from a Gaussian process over
  the trial number, smooth within an epoch and independent across epochs
  (:class:`~sklearn_ltr.LowTensorRankRNN`), written in the basis of
  :class:`TrialGP`.

A new prior is a new class here with the same methods.
"""

import numpy as np
import torch

from ._model import DTYPE, BasisFactors, FreeFactors, GivenFactors, SharedFactors

__all__ = ["TrialInvariant", "GaussianProcessPrior", "TrialGP", "trial_kernel"]


class TrialInvariant:
    """Fixed connectivity: the same trial factors (ones) on every trial.

    Trials differ only by their initial states, which are therefore the per-trial
    features of the model.
    """

    feature = "initial_states"
    feature_name = "initial_state"

    def fit_factors(self, rank, device, trial_index, epochs):
        """Trial-factor module of a fit: one trainable vector shared by all trials."""
        return SharedFactors(torch.ones(rank, dtype=DTYPE, device=device),
                             len(trial_index))

    def new_trial_factors(self, center, start):
        """Trial-factor module of new trials: the fitted (unit) factors, fixed.

        Parameters
        ----------
        center : Tensor of shape (R,)
            Mean fitted trial factor.
        start : Tensor of shape (K, R)
            Starting values (unused: nothing per trial is inferred but the states).
        """
        return GivenFactors(center.expand(start.shape[0], -1))

    def predict_factors(self, estimator, trial_index, epochs):
        """Trial factors of trials at given places in the session: ones."""
        return np.ones((len(trial_index), estimator.rank))

    def attributes(self, C):
        """Fitted attributes set from the normalised trial factors: none."""
        return {}

    def fitted_factors(self, estimator):
        """(n_trials_fit, R) trial factors of a fitted estimator: all ones."""
        return np.ones((estimator._n_trials_fit, estimator.rank))


class GaussianProcessPrior:
    """Trial factors drawn from a Gaussian process over the trial number.

    Each trial factor ``c[:, r]`` is ``mu_r + f_r`` with ``f_r`` a Gaussian process
    over the trials' numbers in the session: covariance ``amplitude^2
    exp(-(t_i - t_j)^2 / (2 length_scale^2))`` within an epoch, 0 across epochs,
    plus ``jitter^2`` on the diagonal (:class:`TrialGP`). The fit adds the negative
    log prior of ``f`` to its loss; a trial not fitted is predicted by the posterior
    mean at its number (and epoch).

    Parameters
    ----------
    length_scale : float or None
        In trials; None: independent trial factors.
    amplitude : float
        Standard deviation of the smooth part.
    jitter : float
        Standard deviation of an independent per-trial part.
    """

    feature = "trial_factors"
    feature_name = "trial_factor"

    def __init__(self, length_scale, amplitude=1.0, jitter=0.0):
        self.length_scale = length_scale
        self.amplitude = amplitude
        self.jitter = jitter

    def process(self, trial_index, epochs):
        """The :class:`TrialGP` of trials at these places in the session."""
        return TrialGP(trial_index, epochs, self.length_scale, self.amplitude,
                       self.jitter)

    def fit_factors(self, rank, device, trial_index, epochs):
        """Trial-factor module of a fit: ``mu + basis @ Wc``, ``Wc ~ N(0, I)``."""
        basis = torch.as_tensor(self.process(trial_index, epochs).basis, dtype=DTYPE,
                                device=device)
        mu = torch.ones(rank, dtype=DTYPE, device=device)
        Wc = torch.zeros(basis.shape[1], rank, dtype=DTYPE, device=device)
        return BasisFactors(mu, Wc, basis)

    def new_trial_factors(self, center, start):
        """Trial-factor module of new trials: free per trial, pulled to the mean.

        Parameters
        ----------
        center : Tensor of shape (R,)
            Mean fitted trial factor, where the weak pull of
            :class:`~sklearn_ltr._model.FreeFactors` leads.
        start : Tensor of shape (K, R)
            Starting values.
        """
        return FreeFactors(start, center)

    def predict_factors(self, estimator, trial_index, epochs):
        """Posterior mean of the trial factors at given places in the session."""
        gp = self.process(estimator.trial_index_, estimator.epochs_)
        return gp.predict(estimator.trial_factors_, trial_index, epochs)

    def attributes(self, C):
        """Fitted attributes set from the normalised trial factors."""
        return {"trial_factors_": C}

    def fitted_factors(self, estimator):
        """(n_trials_fit, R) trial factors of a fitted estimator."""
        return estimator.trial_factors_


# --------------------------------------------------------------------------- #
# Gaussian process over the trial number
# --------------------------------------------------------------------------- #
def trial_kernel(index_a, index_b, length_scale, epochs_a=None, epochs_b=None):
    """Squared-exponential correlation of trials by number, zero across epochs.

    ``k(i, j) = exp(-(t_i - t_j)^2 / (2 l^2))`` for trials ``i`` and ``j`` of the same
    epoch (their numbers ``t`` in the session), 0 otherwise: a block-diagonal
    covariance, so what is learned in one epoch says nothing about another.
    ``length_scale=None``: independent trials (1 on equal numbers, else 0).

    Parameters
    ----------
    index_a, index_b : array-like of shape (n_a,) and (n_b,)
        Trial numbers.
    length_scale : float or None
        In trials.
    epochs_a, epochs_b : array-like of shape (n_a,) and (n_b,), default=None
        Epoch labels (both or neither).

    Returns
    -------
    K : ndarray of shape (n_a, n_b)

    Examples
    --------
    >>> from sklearn_ltr._priors import trial_kernel
    >>> trial_kernel([0, 1, 2], [0, 1, 2], 1.0, ["a", "a", "b"],
    ...              ["a", "a", "b"]).round(3)
    array([[1.   , 0.607, 0.   ],
           [0.607, 1.   , 0.   ],
           [0.   , 0.   , 1.   ]])
    """
    ta = np.asarray(index_a, dtype=np.float64)[:, None]
    tb = np.asarray(index_b, dtype=np.float64)[None, :]
    if length_scale is None:
        K = (ta == tb).astype(np.float64)
    else:
        K = np.exp(-0.5 * ((ta - tb) / length_scale) ** 2)
    if epochs_a is not None:
        K = K * (np.asarray(epochs_a)[:, None] == np.asarray(epochs_b)[None, :])
    return K


class TrialGP:
    """A Gaussian process over the trials of a session, in a truncated basis.

    Each column ``f`` of a (n_trials, d) array of per-trial values is a draw from a
    Gaussian process with covariance ``amplitude^2 k(i, j) + jitter^2 [i == j]``
    (:func:`trial_kernel`: smooth within an epoch, independent across epochs),
    written ``f = basis @ w`` with ``w ~ N(0, I)`` (a Karhunen-Loeve expansion over
    the fitted trials, dropping components whose variance is below ``rtol`` of the
    largest: variation faster than the length scale). The negative log prior is
    then ``|w|^2 / 2``. :meth:`extend` maps the same coefficients to the posterior
    mean of the smooth part at other trials (the jitter, independent per trial,
    predicts nothing about a trial not fitted).

    Parameters
    ----------
    index : array-like of shape (n_trials,)
        Numbers of the fitted trials in the session.
    epochs : array-like of shape (n_trials,) or None
        Epoch label of each trial.
    length_scale : float or None
        In trials; None: independent trials.
    amplitude : float, default=1.0
        Standard deviation of the smooth part.
    jitter : float, default=0.0
        Standard deviation of an independent per-trial part.
    rtol : float, default=1e-4
        Relative variance below which components are dropped.

    Attributes
    ----------
    basis : ndarray of shape (n_trials, n_basis)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr._priors import TrialGP
    >>> gp = TrialGP(np.arange(0, 40, 2), None, 6.0)
    >>> w = np.random.RandomState(0).standard_normal((gp.basis.shape[1], 1))
    >>> f_odd = gp.extend(np.arange(1, 40, 2), None) @ w  # between fitted trials
    >>> f_even = gp.basis @ w
    >>> bool(np.abs(f_odd[:-1] - (f_even[:-1] + f_even[1:]) / 2).max() < 0.1)
    True
    """

    def __init__(self, index, epochs, length_scale, amplitude=1.0, jitter=0.0,
                 rtol=1e-4):
        self.index = np.asarray(index, dtype=np.float64)
        self.epochs = None if epochs is None else np.asarray(epochs)
        self.length_scale = length_scale
        self.amplitude = amplitude
        self.jitter = jitter
        smooth = amplitude ** 2 * trial_kernel(self.index, self.index, length_scale,
                                               self.epochs, self.epochs)
        evals, evecs = np.linalg.eigh(smooth + jitter ** 2 * np.eye(len(self.index)))
        evals, evecs = evals[::-1], evecs[:, ::-1]
        keep = evals > rtol * max(evals[0], 1e-300)
        # Deterministic signs: the largest entry of each eigenvector positive.
        peak = evecs[np.argmax(np.abs(evecs), axis=0), np.arange(evecs.shape[1])]
        evecs = evecs * np.where(peak < 0, -1.0, 1.0)
        self._evecs, self._evals = evecs[:, keep], evals[keep]
        self.basis = self._evecs * np.sqrt(self._evals)

    def extend(self, index, epochs):
        """Map from the coefficients to the posterior mean at other trials.

        Parameters
        ----------
        index : array-like of shape (n_new,)
            Trial numbers.
        epochs : array-like of shape (n_new,) or None
            Their epochs (needed when the process was built with epochs).

        Returns
        -------
        basis : ndarray of shape (n_new, n_basis)
            ``f_new = basis @ w`` is ``E[f_new | f = self.basis @ w]``.
        """
        if (epochs is None) != (self.epochs is None):
            raise ValueError(
                "epochs must be given for new trials exactly when they were given "
                "for the fitted ones.")
        cross = self.amplitude ** 2 * trial_kernel(
            index, self.index, self.length_scale, epochs, self.epochs)
        return cross @ (self._evecs / np.sqrt(self._evals))

    # Relative variance of the fitted values' own uncertainty in ``predict``.
    nugget = 0.1

    def predict(self, values, index, epochs):
        """Posterior mean at new trials of per-trial values of the fitted trials.

        Gaussian-process regression with a constant mean (the mean of ``values``):
        ``mean + k(new, fit) (K + s^2 I)^-1 (values - mean)``, with ``s^2`` the
        jitter's variance plus ``nugget`` times the amplitude's. The nugget stands
        for the uncertainty of fitted values; without it the smooth kernel's
        near-singular matrix turns the smallest roughness of the values into wild
        extrapolation across a gap of held-out trials.

        Parameters
        ----------
        values : array-like of shape (n_trials, d)
            Values at the fitted trials.
        index, epochs : see :meth:`extend`.

        Returns
        -------
        predicted : ndarray of shape (n_new, d)
        """
        if (epochs is None) != (self.epochs is None):
            raise ValueError(
                "epochs must be given for new trials exactly when they were given "
                "for the fitted ones.")
        values = np.asarray(values, dtype=np.float64)
        mean = values.mean(axis=0)
        amp2 = self.amplitude ** 2
        K = amp2 * trial_kernel(self.index, self.index, self.length_scale,
                                self.epochs, self.epochs)
        noise = self.jitter ** 2 + self.nugget * amp2
        weights = np.linalg.solve(K + noise * np.eye(len(self.index)), values - mean)
        cross = amp2 * trial_kernel(index, self.index, self.length_scale, epochs,
                                    self.epochs)
        return mean + cross @ weights
