"""How trial factors vary over trials: one strategy object per estimator.

A strategy turns an estimator's hyperparameters into the trial-factor module of a
:class:`~sklearn_ltr._model.LatentRNN` -- for fitting, and for trials not seen in
fit -- and names the fitted attributes that hold the result. The estimators hold no
branch on which of them they are: they ask their strategy.

* :class:`TrialInvariant` -- one connectivity for every trial
  (:class:`~sklearn_ltr.LowRankRNN`);
* :class:`SmoothOverTrials` -- trial factors smooth over the trial order, a
  truncated Gaussian-process prior (:class:`~sklearn_ltr.LowTensorRankRNN`).

A new prior is a new class here with the same methods.
"""

import numpy as np
import torch

from ._model import DTYPE, BasisFactors, FreeFactors, GivenFactors, SharedFactors, \
    trial_basis

__all__ = ["TrialInvariant", "SmoothOverTrials"]


class TrialInvariant:
    """Fixed connectivity: the same trial factors (ones) on every trial.

    Trials differ only by their initial states, which are therefore the per-trial
    features of the model.
    """

    feature = "initial_states"
    feature_name = "initial_state"

    def fit_factors(self, n_trials, rank, device):
        """Trial-factor module of a fit: one trainable vector shared by all trials."""
        return SharedFactors(torch.ones(rank, dtype=DTYPE, device=device), n_trials)

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

    def attributes(self, C):
        """Fitted attributes set from the normalised trial factors: none."""
        return {}

    def fitted_factors(self, estimator):
        """(n_trials_fit, R) trial factors of a fitted estimator: all ones."""
        return np.ones((estimator._n_trials_fit, estimator.rank))


class SmoothOverTrials:
    """Trial factors that vary smoothly over the trial order.

    Parameters
    ----------
    length_scale : float or None
        Length scale in trials of the squared-exponential Gaussian-process prior
        (:func:`~sklearn_ltr._model.trial_basis`); None: independent trial factors.
    """

    feature = "trial_factors"
    feature_name = "trial_factor"

    def __init__(self, length_scale):
        self.length_scale = length_scale

    def fit_factors(self, n_trials, rank, device):
        """Trial-factor module of a fit: ``mu + Phi Wc`` on the prior's basis."""
        basis = trial_basis(n_trials, self.length_scale).to(device=device, dtype=DTYPE)
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

    def attributes(self, C):
        """Fitted attributes set from the normalised trial factors."""
        return {"trial_factors_": C}

    def fitted_factors(self, estimator):
        """(n_trials_fit, R) trial factors of a fitted estimator."""
        return estimator.trial_factors_
