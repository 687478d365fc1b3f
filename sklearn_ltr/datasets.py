"""Synthetic data with known ground truth, and loaders.

Every generator returns a :class:`sklearn.utils.Bunch` and is deterministic given
``random_state`` (a local generator; no global seeding).
"""

import numpy as np
import torch
from sklearn.utils import Bunch, check_random_state

from ._dynamics import simulate_latents

__all__ = ["make_low_tensor_rank_rnn"]


def _learning_curves(rng, n_trials, rank):
    """Sigmoidal changes of each trial factor, at random times, sizes and signs."""
    k = np.arange(n_trials)[:, None]
    onset = rng.uniform(0.25, 0.65, size=rank) * n_trials
    width = rng.uniform(0.04, 0.1, size=rank) * n_trials
    amp = rng.uniform(0.5, 0.9, size=rank) * rng.choice([-1.0, 1.0], size=rank)
    return 1.0 + amp * (1.0 / (1.0 + np.exp(-(k - onset) / width)))


def make_low_tensor_rank_rnn(
    n_trials=100, n_timepoints=30, n_neurons=40, rank=3, *, n_units=100,
    n_conditions=4, tau=2.0, trial_factors="learning", noise=0.1, random_state=None,
):
    """Planted data from a low-tensor-rank RNN, with its ground truth.

    A network of ``n_units`` tanh units with connectivity
    ``W_k = sum_r c[k, r] a_r b_r^T / n_units`` on trial ``k`` runs from a latent
    initial state that depends on the trial's condition (conditions cycle over trials,
    as in a task with interleaved targets). Recorded neurons are a random readout
    ``D tanh(x) + d`` plus Gaussian noise. The row factors are aligned with the column
    factors through a latent coupling (self-excitation plus rotation), so each trial
    shows rich, condition-dependent transients.

    Parameters
    ----------
    n_trials, n_timepoints, n_neurons : int
        Shape of ``X``.
    rank : int, default=3
        Planted tensor rank.
    n_units : int, default=100
        Units of the planted network.
    n_conditions : int, default=4
        Number of conditions (distinct initial states); trial k has condition
        ``k % n_conditions``.
    tau : float, default=2.0
        Time constant in bins (Euler step 1 / tau).
    trial_factors : {'learning', 'constant'}, default='learning'
        'learning': each component changes along a sigmoidal learning curve at its
        own time, size and sign. 'constant': all trial factors equal 1 (no learning;
        the data are then exactly a low-rank RNN).
    noise : float, default=0.1
        Standard deviation of the Gaussian observation noise relative to the standard
        deviation of the noiseless activity.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    data : Bunch
        ``X`` (n_trials, n_timepoints, n_neurons), ``X_clean`` (the same without
        noise), ``y`` (n_trials,) conditions, ``trial_factors`` (n_trials, rank),
        ``left_factors`` and ``right_factors`` (n_units, rank), ``readout``
        (n_neurons, n_units), ``readout_bias`` (n_neurons,), ``initial_states``
        (n_conditions, rank), ``latents`` (n_trials, n_timepoints, rank),
        ``noise_std`` (absolute), ``tau``.

    Examples
    --------
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> data = make_low_tensor_rank_rnn(n_trials=8, n_timepoints=5, n_neurons=3,
    ...                                 rank=2, random_state=0)
    >>> data.X.shape, data.trial_factors.shape
    ((8, 5, 3), (8, 2))
    """
    if trial_factors not in ("learning", "constant"):
        raise ValueError(
            f"trial_factors must be 'learning' or 'constant', got {trial_factors!r}.")
    for name, value in [("n_trials", n_trials), ("n_timepoints", n_timepoints),
                        ("n_neurons", n_neurons), ("rank", rank), ("n_units", n_units),
                        ("n_conditions", n_conditions)]:
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if rank > n_units:
        raise ValueError(f"rank={rank} must be <= n_units={n_units}.")
    rng = check_random_state(random_state)
    R, N = rank, n_units
    A = rng.standard_normal((N, R))
    # Latent coupling: B^T tanh(A kappa) / N ~ J kappa for small states.
    S = rng.standard_normal((R, R))
    J = 1.4 * np.eye(R) + 1.2 * (S - S.T) / np.sqrt(2 * R)
    B = A @ J.T + 0.3 * rng.standard_normal((N, R))
    if trial_factors == "learning":
        C = _learning_curves(rng, n_trials, R)
    else:
        C = np.ones((n_trials, R))
    Z = rng.standard_normal((n_conditions, R))
    Z *= 1.5 / np.linalg.norm(Z, axis=1, keepdims=True) * np.sqrt(min(R, 2) / 2)
    y = np.arange(n_trials) % n_conditions
    alpha = 1.0 / tau
    with torch.no_grad():
        kappa, H = simulate_latents(
            torch.as_tensor(Z[y]), torch.as_tensor(A), torch.as_tensor(B),
            torch.as_tensor(C * alpha / N), None, 1.0 - alpha, n_timepoints)
    kappa = np.swapaxes(kappa.numpy(), 0, 1)
    H = np.swapaxes(H.numpy(), 0, 1)
    D = 2.0 * rng.standard_normal((n_neurons, N)) / np.sqrt(N)
    d = 0.5 * rng.standard_normal(n_neurons)
    X_clean = H @ D.T + d
    noise_std = noise * float(X_clean.std())
    X = X_clean + noise_std * rng.standard_normal(X_clean.shape)
    return Bunch(
        X=X, X_clean=X_clean, y=y, trial_factors=C, left_factors=A, right_factors=B,
        readout=D, readout_bias=d, initial_states=Z, latents=kappa,
        noise_std=noise_std, tau=tau)
