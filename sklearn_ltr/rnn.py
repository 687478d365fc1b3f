"""Low-tensor-rank and low-rank recurrent network models of trials."""

import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from . import _model, _solver
from ._dynamics import KEPT_RATES_MAX
from ._memory import check_memory, check_memory_on
from ._model import (
    DTYPE,
    Data,
    FrozenNetwork,
    GivenFactors,
    GivenOffsets,
    InitialStates,
    LatentRNN,
    OffsetDrift,
    TrainableNetwork,
)
from ._priors import GaussianProcessPrior, TrialGP, TrialInvariant
from ._schema import Array, Value
from ._torch_utils import resolve_device, seed_from, to_numpy, to_tensor, usable_device
from ._validation import (
    check_conditions,
    check_counts,
    check_inputs,
    check_known_conditions,
    check_session,
    check_training_trials,
    unit_scale,
)
from .base import BaseLatentModel, publishes_fit

__all__ = ["LowTensorRankRNN", "LowRankRNN"]



def _fit_memory(n_trials, n_timepoints, n_neurons, *, n_units, rank, n_inputs=0,
                loss="mse", device_type="cpu", lbfgs_iter=0, batch_size=None,
                holdout=False, exact_readout=False):
    """Estimated peak memory of a fit of the recurrent networks.

    Counts every array that scales with the problem: with the data (``n_trials *
    n_timepoints``), with the size of the network (``n_units ** 2`` in the
    initialisation) and with the number of parameters (the optimisers' state).
    With ``E``, ``U``, ``L`` and ``I`` the numbers of data entries, unit states,
    latent states and input values (``n_trials * n_timepoints`` times
    ``n_neurons``, ``n_units``, ``rank`` and ``n_inputs``), ``P`` the number of
    parameters, at most ``(n_units + n_trials) * (2 rank + n_neurons)``, and
    ``S = (n_units + n_inputs) ** 2``, in bytes:

    * host arrays: the standardised float64 copy of X and the transients of its
      conversion to a tensor, ``18 E``;
    * the data tensors kept for the whole fit (float32 data, boolean mask, inputs),
      ``5 E + 4 I``;
    * the data-driven initialisation (``_model.initialize``, float64): the
      mean-filled and centred copies of the data and the mask as floats, ``32 E``
      (``56 E`` with the Poisson link's transients), and the latent trajectories,
      ``16 L`` (the regressions sum Gram matrices one time step at a time); the
      Gram matrices of the unit rates for the readout and for the one-step
      regression, and the factorisation of each ridge solve, ``24 S``, and the
      parameters it returns, ``8 P``;
    * one training iteration (float32): the readout residual and its square,
      ``8 E``; latent trajectories, the per-step products and their gradients, ``24 L``;
      the input drive, ``4 I``. The squared error is fused with the recurrence and
      stores the unit rates, ``4 U``, only up to ``_dynamics.KEPT_RATES_MAX`` of
      them (else it forms them again); the Poisson loss goes through autograd, which
      keeps the unit rates and their gradient, ``8 U``, and the rates, their
      logarithm and the per-entry losses, ``32 E`` instead of ``8 E``. The
      optimiser's state: the parameters, their gradients, Adam's two moments and the
      best parameters so far, ``32 P``; L-BFGS keeps three vectors of the
      parameters' size per iteration of its history (at most 100), ``12 P`` each.
      With mini-batches (``batch_size`` below ``n_trials``) ``E``, ``U``, ``L`` and
      ``I`` of a training step count the trials of one mini-batch only, plus the
      batch's copy of its data and targets, ``5 E + 4 I + 4 L`` of the batch; ``P``
      still counts every trial's parameters. With held-out entries (early stopping),
      their mask, ``E``, and the evaluation of their loss, ``4 U + 12 E``.
    * the least-squares readout (``exact_readout``), between two training steps
      while the optimiser's state is kept: the unit rates, the data less the
      offsets, the latent trajectories and the inputs, ``4 U + 4 E + 4 L + 4 I``,
      and its normal equations in float32 and float64 and their factorisation,
      ``20 N ** 2 + 12 N n`` with ``N = n_units``, ``n = n_neurons``.
    * the Gaussian processes over the trials (:class:`~sklearn_ltr._priors.TrialGP`
      of the trial factors and of the drift, one after the other): an
      ``n_trials x n_trials`` float64 kernel, its eigendecomposition and the
      solver's workspace, ``48 K ** 2`` with ``K = n_trials``.

    The peak is the host arrays plus the data tensors plus the largest of the
    three phases; the test suite checks it against the measured increase in
    peak resident memory of real fits.

    Parameters
    ----------
    n_trials, n_timepoints, n_neurons : int
        Shape of X.
    n_units, rank : int
        Size of the network.
    n_inputs : int, default=0
        Number of input channels.
    loss : {'mse', 'poisson'}, default='mse'
    device_type : str, default='cpu'
        Where the tensors live. On the CPU everything is host memory.
    lbfgs_iter : int, default=0
        Most L-BFGS iterations of the fit (``solver='lbfgs'`` or
        ``'lbfgs-adam'``).
    batch_size : int or None, default=None
        Trials per optimiser step (the estimators' ``batch_size``); None: all.
    holdout : bool, default=False
        Whether entries are held out for early stopping.
    exact_readout : bool, default=False
        Whether the readout is set by least squares between the steps.

    Returns
    -------
    host_bytes, device_bytes : int
        Bytes needed in host memory and on the device; on the CPU the two add up
        (``device_bytes`` then counts the tensors).

    Examples
    --------
    >>> from sklearn_ltr.rnn import _fit_memory
    >>> host, device = _fit_memory(300, 100, 80, n_units=200, rank=3)
    >>> round((host + device) / 2 ** 20)  # MiB
    129
    """
    KT = n_trials * n_timepoints
    E, U, L, I = KT * n_neurons, KT * n_units, KT * rank, KT * n_inputs  # noqa: E741
    P = (n_units + n_trials) * (2 * rank + n_neurons) + rank * n_inputs
    S = (n_units + n_inputs) ** 2
    poisson = loss == "poisson"
    host = 18 * E
    data = (6 if holdout else 5) * E + 4 * I
    init = (56 if poisson else 32) * E + 16 * L + 24 * S + 8 * P
    # One training step: on all trials, or on the trials of one mini-batch.
    batch = n_trials if batch_size is None else min(batch_size, n_trials)
    Eb, Ub, Lb, Ib = (x * batch // n_trials for x in (E, U, L, I))
    kept = 4 * Ub if Ub <= KEPT_RATES_MAX else 0
    state = 32 * P + 12 * P * min(lbfgs_iter, 100)
    train = ((8 * Ub + 32 * Eb if poisson else 8 * Eb + kept) + 24 * Lb + 4 * Ib
             + state + (4 * U + 12 * E if holdout else 0))
    if batch < n_trials:
        train += 5 * Eb + 4 * Ib + 4 * Lb
    # The least-squares readout between two steps (exact_readout).
    # Its ridge's cross-validation: the groups' and the training Gram matrices,
    # a Cholesky factor (float64), a candidate readout.
    project = (state + 4 * U + 4 * E + 4 * L + 4 * I + 100 * n_units ** 2
               + 130 * n_units * n_neurons) if exact_readout else 0
    gp = 48 * n_trials ** 2
    return int(host), int(data + max(init, train, project, gp))


def _check_fit_memory(est, shape, n_inputs, device):
    """Refuse a fit whose estimated peak memory exceeds what is available."""
    schedule = _fit_schedule(est, _fit_solver(est, shape[0]))
    lbfgs_iter = (est.max_iter if schedule["solver"] == "lbfgs"
                  else schedule["lbfgs_iter"])
    kw = dict(n_units=est.n_units, rank=est.rank, n_inputs=n_inputs, loss=est.loss,
              device_type=device.type, holdout=_early_stopping(est, shape[0]))
    host, dev_bytes = _fit_memory(*shape, lbfgs_iter=lbfgs_iter,
                                  batch_size=est.batch_size,
                                  exact_readout=_may_project(est, shape[0]), **kw)
    what = (f"{type(est).__name__}.fit on X of shape {tuple(shape)} with "
            f"n_units={est.n_units}, rank={est.rank}")
    remedy = ("Lower n_units (the initialisation needs three n_units x n_units "
              "float64 matrices), or fit on fewer trials or time points (the "
              "data's arrays scale with n_trials * n_timepoints * (n_units + "
              "n_neurons)).")
    if lbfgs_iter:
        remedy += " Or use solver='adam' (L-BFGS keeps a history of 100 steps)."
    # Suggested only where Adam's training steps, not the initialisation or the
    # Gaussian processes over trials, set the peak.
    if sum(_fit_memory(*shape, batch_size=1, **kw)) < sum(
            _fit_memory(*shape, batch_size=est.batch_size, **kw)):
        remedy += (f" Or set a smaller batch_size (trials per optimiser step, "
                   f"with solver='adam' or 'auto'; now {est.batch_size}): the "
                   f"training then holds the arrays of one mini-batch of trials.")
    check_memory_on(host, dev_bytes, device, what=what, remedy=remedy)


def _inference_memory(n_trials, n_timepoints, n_neurons, *, n_units, rank,
                      n_inputs=0):
    """Estimated peak memory of the per-trial inference of new trials.

    With ``E``, ``U``, ``L`` and ``I`` as in :func:`_fit_memory`, in bytes: on the
    host, the standardised copy of X, the arrays that pick each trial's starting
    point and the reconstructions returned, ``48 E``; on the device, the data
    tensors and one iteration of the per-trial optimisation, which goes through
    autograd and keeps the unit rates and their gradient, ``16 E + 8 U``, the
    latent trajectories, ``24 L``, and the inputs, ``8 I``. Measured peaks of the
    resident memory were about ``60 E + 8 U``.

    Returns
    -------
    host_bytes, device_bytes : int
    """
    KT = n_trials * n_timepoints
    E, U, L, I = KT * n_neurons, KT * n_units, KT * rank, KT * n_inputs  # noqa: E741
    return int(48 * E), int(16 * E + 8 * U + 24 * L + 8 * I)


def _check_fit_arguments(est, X):
    """Refuse parameters that do not suit X (before any memory is allocated)."""
    n_neurons = X.shape[2]
    if est.rank > est.n_units:
        raise ValueError(
            f"rank={est.rank} must be <= n_units={est.n_units}; increase n_units "
            f"or lower rank.")
    if est.orthonormal_readout and n_neurons > est.n_units:
        raise ValueError(
            f"orthonormal_readout=True needs n_neurons <= n_units, got "
            f"n_neurons={n_neurons} and n_units={est.n_units}; increase n_units.")
    if est.batch_size is not None and est.batch_size < X.shape[0] and (
            est.solver not in ("adam", "auto")):
        raise ValueError(
            f"batch_size={est.batch_size} (below n_trials={X.shape[0]}) needs "
            f"solver='adam', got solver={est.solver!r}: L-BFGS's line search needs "
            f"the same loss at every evaluation, which random mini-batches of "
            f"trials do not give. Use solver='adam' or 'auto' (which takes Adam "
            f"with mini-batches), or batch_size=None (every step on all trials).")
    if est.batch_size is not None and est.batch_size < X.shape[0] and (
            est.early_stopping is True):
        raise ValueError(
            f"batch_size={est.batch_size} (below n_trials={X.shape[0]}) and "
            f"early_stopping=True do not go together: the held-out entries' loss "
            f"is evaluated on all trials at every iteration, which mini-batches "
            f"avoid. Use early_stopping='auto' (off with mini-batches) or False, "
            f"or batch_size=None.")
    if est.loss == "poisson":
        check_counts(X)


def _check_inference_memory(est, shape):
    """Refuse inference on new trials of ``shape`` that would not fit in memory."""
    n_units, rank = est.left_factors_.shape
    check_memory_on(
        *_inference_memory(*shape, n_units=n_units, rank=rank,
                           n_inputs=est.n_inputs_),
        est._inference_device(),
        what=(f"Inference of {type(est).__name__} (n_units={n_units}) on "
              f"{shape[0]} trials of {shape[1]} time points"),
        remedy=("Pass fewer trials at a time: each trial is inferred on its own, so "
                "transform and predict can run on batches of trials (score infers "
                "each of its co-smoothing folds on a copy of the trials)."))


def _check_weight_tensor_memory(est, n_trials):
    """Refuse a weight tensor (float64, n_trials x n_units x n_units) too large."""
    n_units = est.left_factors_.shape[0]
    check_memory(
        8 * n_trials * n_units ** 2, "cpu",
        what=(f"{type(est).__name__}.weight_tensor() of {n_trials} trials and "
              f"n_units={n_units}"),
        remedy=("Work with the factors instead (left_factors_, right_factors_, "
                "trial_factors_): W[k] = sum_r c[k, r] a_r b_r^T / n_units, e.g. "
                "one trial at a time."))


def _standardisation(X, loss, orthonormal_readout):
    """Per-neuron offset and overall scale of the data fitted with ``loss='mse'``.

    The network is fitted to ``(X - offset) / scale``: each neuron centred on its
    mean and all divided by one overall standard deviation (a single scale keeps
    the relative weights of the neurons in the squared error). The readout is
    mapped back to the units of X afterwards, so fitted attributes, predictions
    and scores are in those units. This makes the fit equivariant to the units
    of X (data in spikes/s, in dF/F or multiplied by 1e8 give the same model):
    Adam's steps have a fixed size in parameter space, so a learning rate suits
    only parameters of a known scale, and float32 cannot resolve small
    fluctuations around a large offset. ``learning_rate`` and
    ``activity_penalty`` therefore refer to standardised data.

    With ``loss='poisson'`` the counts are fitted as given (the Poisson likelihood
    depends on their scale; see :func:`_readout_gain`), and with
    ``orthonormal_readout=True`` only the offset is removed (an orthonormal
    readout fixes the output scale, which is then part of the model).
    """
    n_neurons = X.shape[2]
    if loss != "mse":
        return np.zeros(n_neurons), 1.0
    # Unit-free at both ends of the float range (see unit_scale): each neuron's
    # mean on its own power-of-two scale, the spread on the data's.
    neuron_scale = unit_scale(X, axis=(0, 1))
    offset = np.nanmean(X / neuron_scale, axis=(0, 1)) * neuron_scale[0, 0]
    if orthonormal_readout:
        return offset, 1.0
    s = unit_scale(X)
    counts = np.sum(~np.isnan(X), axis=(0, 1))
    variance = np.nanvar(X / s, axis=(0, 1))
    scale = float(np.sqrt(np.sum(counts * variance) / np.sum(counts))) * s
    if 0 < scale < np.finfo(np.float64).tiny:
        # Converting between the units of X and the fitted ones would go through
        # subnormal numbers, which the fit's flush-denormal mode reads as zeros.
        raise ValueError(
            f"X varies by about {scale:.3g}, below the smallest normal float64 "
            f"(2.2e-308), where arithmetic loses precision and values are flushed "
            f"to zero. Multiply X by a constant (e.g. X * 1e300): with loss='mse' "
            f"the fit does not depend on the units of X.")
    # Constant data: nothing to scale.
    return offset, (scale if scale > 0 and np.isfinite(scale) else 1.0)


def _readout_gain(X, loss, orthonormal_readout):
    """Fixed factor of the readout, so that its parameters are of order one.

    Adam moves every parameter by steps of about ``learning_rate``; a readout
    whose entries must reach the size of large counts would crawl there. With
    ``loss='poisson'`` the readout is therefore ``gain * (raw parameters)``
    with ``gain`` the standard deviation of the counts when above 1 (with
    ``loss='mse'`` the data are standardised instead, and the gain is 1).
    """
    if loss != "poisson" or orthonormal_readout:
        return 1.0
    s = unit_scale(X)
    std = float(np.nanstd(X / s)) * s
    return std if np.isfinite(std) and std > 1.0 else 1.0


def _warn_about_fit(est, best, interrupted):
    """Warn when a fit was interrupted, never decreased the loss, or hit max_iter."""
    name = type(est).__name__
    if interrupted is not None:
        i_init, n_iter = interrupted
        where = ""
        if est.n_init > 1:
            where = f" of initialisation {i_init + 1}/{est.n_init}"
        warnings.warn(
            f"{name}.fit was interrupted after {n_iter} iterations{where}; the best "
            f"parameters so far are kept.", UserWarning)
    elif best.n_iter - best.n_forced >= min(
            _plateau_window(est), est.max_iter - best.n_forced) and not (
            _criterion(best) < _criterion_curve(best)[best.n_forced]):
        # The loss never went below its value at the initial parameters, which
        # are therefore what is kept: the steps overshoot, or (held-out loss)
        # the fit overfits from its first steps.
        if best.holdout_curve is None:
            what, fix = "the loss", "lower learning_rate"
        else:
            what = "the loss of its held-out entries (early_stopping)"
            fix = "lower learning_rate, or set early_stopping=False"
        warnings.warn(
            f"{name}.fit did not decrease {what} in {best.n_iter} iterations; "
            f"learning_rate={est._learning_rate()} is probably too large. The "
            f"initial parameters are kept; {fix}.", ConvergenceWarning)
    elif not best.converged:
        warnings.warn(
            f"{name} reached max_iter={est.max_iter} before converging "
            f"(tol={_resolved(est, 'tol')}); increase max_iter or learning_rate.",
            ConvergenceWarning)


def _criterion(result):
    """What picks the kept fit: the held-out loss with early stopping, else the loss."""
    return result.loss if result.holdout_loss is None else result.holdout_loss


def _criterion_curve(result):
    """The curve of :func:`_criterion` over the iterations."""
    return result.loss_curve if result.holdout_curve is None else result.holdout_curve


# What 'auto' stands for, per loss. For the squared error of standardised data, the
# settings the rest of the package was measured with. For spike counts, those chosen
# by the held-out loss of fits to the MC_Maze recording (benchmarks/bench_spikes.py,
# doc/performance.rst): held-out entries, a stronger activity penalty, and a plateau
# rule that waits longer for any decrease of the held-out loss (relative to the
# Poisson negative log-likelihood, which holds a large constant, 5e-3 stops early).
_AUTO = {
    "activity_penalty": {"mse": 1e-4, "poisson": 0.1},
    "early_stopping": {"mse": False, "poisson": True},
    "tol": {"mse": 5e-3, "poisson": 1e-4},
    "n_iter_no_change": {"mse": 50, "poisson": 150},
}
_AUTO_OPTION = StrOptions({"auto"})
# n_iter_no_change='auto' of L-BFGS with the squared error: its steps follow the
# curvature, so it seldom stalls for long; a window of 10 stops fits at the
# reference size of doc/performance.rst at 261-275 iterations, within 0.0004 of a
# long fit (a window of 20: 324-346 iterations, no closer).
_LBFGS_WINDOW = 10


def _resolved(est, name):
    """The value of parameter ``name``, with 'auto' resolved for ``est.loss``."""
    value = getattr(est, name)
    return _AUTO[name][est.loss] if isinstance(value, str) and value == "auto" \
        else value


def _fit_solver(est, n_trials, missing=False):
    """The solver of a fit on ``n_trials`` trials (``missing``: unobserved entries).

    'auto': L-BFGS where the readout is set by least squares (the loss is then
    that of the other parameters alone, smooth and deterministic), Adam elsewhere.
    """
    if est.solver != "auto":
        return est.solver
    return "lbfgs" if _may_project(est, n_trials, missing) else "adam"


def _plateau_window(est):
    """``n_iter_no_change`` of the fit, 'auto' resolved for its loss and solver."""
    if est.n_iter_no_change == "auto" and est.solver_ == "lbfgs" and (
            est.loss == "mse"):
        return _LBFGS_WINDOW
    return _resolved(est, "n_iter_no_change")


def _early_stopping(est, n_trials):
    """Whether a fit on ``n_trials`` trials holds entries out to stop early.

    'auto': with the Poisson loss, on full batches (the held-out loss is that of
    all trials, which mini-batches do not evaluate).
    """
    if isinstance(est.early_stopping, str):
        return bool(_resolved(est, "early_stopping")) and not (
            est.batch_size is not None and est.batch_size < n_trials)
    return bool(est.early_stopping)


def _fit_diagnostics(result):
    """The fitted attributes that describe the course of a fit (``FitResult``)."""
    held = result.holdout_curve
    return {"loss_curve_": list(result.loss_curve), "n_iter_": result.n_iter,
            "n_forced_": result.n_forced, "best_loss_": float(result.loss),
            "validation_loss_curve_": None if held is None else [float(v)
                                                                 for v in held],
            "best_validation_loss_": (None if result.holdout_loss is None
                                      else float(result.holdout_loss))}


def _holdout_entries(est, X, seed):
    """The entries a fit with early stopping leaves out and monitors; else None.

    Whole time courses of (trial, neuron) pairs, as the co-smoothing score holds
    out neurons of a trial: a pair's entries are correlated in time, and single
    entries held out would be predicted from their neighbours. A fraction
    ``validation_fraction`` of the pairs with an observed entry (at least one, and
    at least one left to fit), drawn with ``seed``.

    Returns
    -------
    holdout : ndarray of bool of shape X.shape, or None
    """
    if not _early_stopping(est, X.shape[0]):
        return None
    n_trials, n_timepoints, n_neurons = X.shape
    pairs = np.flatnonzero(~np.all(np.isnan(X), axis=1))
    n_held = min(max(1, round(est.validation_fraction * pairs.size)), pairs.size - 1)
    held = np.zeros(n_trials * n_neurons, dtype=bool)
    held[np.random.default_rng(seed).choice(pairs, n_held, replace=False)] = True
    return np.repeat(held.reshape(n_trials, 1, n_neurons), n_timepoints, axis=1)


def _nearest_candidates(recon, conditions, X, fixed_states):
    """Index of the kept fitted trial closest to each trial on its observed entries.

    ``recon`` (n_candidates, T, n) are the reconstructions of the kept trials and
    ``conditions`` their condition indices (or None).
    """
    R = recon
    if R.shape[1] != X.shape[1]:
        return None
    obs = ~np.isnan(X)
    Xo = np.where(obs, X, 0.0).reshape(X.shape[0], -1)
    Of = obs.reshape(X.shape[0], -1).astype(np.float64)
    Rf = R.reshape(R.shape[0], -1).astype(np.float64)
    # sum_obs (x - r)^2 = sum_obs x^2 - 2 <x, r> + <obs, r^2>
    dist = -2.0 * Xo @ Rf.T + Of @ (Rf ** 2).T
    if fixed_states is not None and conditions is not None:
        other = fixed_states[:, None] != conditions[None, :]
        # Trials of another condition start elsewhere; never pick them unless
        # the condition has no kept trial at all.
        dist = np.where(other, dist + 1e30, dist)
    return np.argmin(dist, axis=1)


def _new_trial_states(est, data, network, fixed_states, nearest):
    """Initial states of new trials: their condition's, or inferred per trial."""
    dev = data.X.device
    if fixed_states is not None:
        return InitialStates(to_tensor(est.initial_states_, dev),
                             torch.as_tensor(fixed_states, device=dev),
                             trainable=False)
    if nearest is not None:
        z = to_tensor(est._cand_states[nearest], dev)
    else:
        z = _model.initial_state_guess(data, network.network())
    return InitialStates(z)


def _new_trial_factors(est, n_trials, nearest, session, dev):
    """Trial factors of new trials: predicted at their places, or inferred."""
    prior = est._trial_prior()
    if session is not None:
        return GivenFactors(to_tensor(prior.predict_factors(
            est, session.trial_index, session.epochs), dev))
    center = to_tensor(prior.fitted_factors(est).mean(0), dev)
    start = (center.expand(n_trials, -1).clone() if nearest is None
             else to_tensor(est._cand_factors[nearest], dev))
    return prior.new_trial_factors(center, start)


def _new_trial_offsets(est, n_trials, session, dev):
    """Readout offsets of new trials: the drift predicted at their places.

    Without places, the mean of the fitted trials' offsets.
    """
    if est.readout_drift_ is None:
        return None
    drift = est.readout_drift_ / est._data_scale
    if session is None:
        offsets = np.tile(drift.mean(0), (n_trials, 1))
    else:
        offsets = est._drift_process().predict(
            drift, session.trial_index, est._drift_epochs(session.epochs))
    return GivenOffsets(to_tensor(offsets, dev))


# The warm start hands over the best of the free-running points it passes through,
# evaluated (without gradient) every this many iterations.
_FORCING_PROBE = 10


def _fit_schedule(est, solver):
    """Solver, L-BFGS start, and the teacher forcing of the warm start.

    ``solver``: the fit's (:func:`_fit_solver`).
    """
    # 'lbfgs-adam': L-BFGS for the first fifth of max_iter (at most 150
    # iterations), then Adam.
    lbfgs_iter = 0
    if solver == "lbfgs-adam":
        solver, lbfgs_iter = "adam", min(150, max(1, est.max_iter // 5))
    # The warm start pulls the states toward the latent trajectories the
    # initialisation was regressed on: data-derived with init='pca' only.
    forcing = est.teacher_forcing if est.init == "pca" else 0.0
    n_forced = min(est.forcing_iter, est.max_iter // 3) if forcing else 0
    return dict(solver=solver, lbfgs_iter=lbfgs_iter, forcing=forcing,
                forcing_iter=n_forced, forcing_probe=_FORCING_PROBE if n_forced else 0)


def _mini_batches(est, n_trials, generator, device):
    """The mini-batches of a fit's steps, or None when every step uses all trials.

    ``batch_size`` at or above the number of trials is the full batch, exactly.
    """
    if est.batch_size is None or est.batch_size >= n_trials:
        return None
    return _solver.MiniBatches(n_trials, est.batch_size, generator, device)


def _readout_obstacles(est, n_trials, missing):
    """What rules out the least-squares readout in a fit on ``n_trials`` trials.

    ``missing``: whether the fit's data have unobserved entries. Returns the
    conditions not met, as the error of ``exact_readout=True`` names them.
    """
    return [text for cond, text in [
        (est.loss != "mse", f"loss='mse' (got {est.loss!r})"),
        (est.orthonormal_readout, "orthonormal_readout=False"),
        (est.batch_size is not None and est.batch_size < n_trials,
         "all trials in every step (batch_size=None)"),
        (_early_stopping(est, n_trials), "no held-out entries (early_stopping=False)"),
        (missing, "X without missing (NaN) entries"),
    ] if cond]


def _may_project(est, n_trials, missing=False):
    """Whether a fit on ``n_trials`` trials may set its readout by least squares.

    ``missing``: whether the data have unobserved entries (False before X is
    converted, when they are not looked for).
    """
    wanted = isinstance(est.exact_readout, str) or bool(est.exact_readout)
    return wanted and not _readout_obstacles(est, n_trials, missing)


def _exact_readout(est, data):
    """Whether the fit sets the readout by least squares (``exact_readout``).

    Raises ValueError for ``exact_readout=True`` where it does not apply.
    """
    # data.mask also marks the entries held out for early stopping.
    why = _readout_obstacles(est, data.X.shape[1], data.mask is not None)
    if isinstance(est.exact_readout, str):  # 'auto'
        return not why
    if est.exact_readout and why:
        raise ValueError(f"exact_readout=True needs {' and '.join(why)}; use "
                         f"exact_readout='auto' or False.")
    return bool(est.exact_readout)


def _projection(est, model, data):
    """The variable projection of :func:`_solver.optimize` for this fit, if any."""
    if not _exact_readout(est, data):
        return {}
    # L-BFGS needs the gradient of exactly what it sees: the ridge held between
    # the choices of readout_ridge='auto' (see ReadoutRidge).
    model.readout_ridge = _model.ReadoutRidge(est.readout_ridge,
                                              hold=est.solver_ == "lbfgs")
    return {"projected": model.READOUT}


def _optimize(est, model, data, targets, i_init, batches):
    """Fit ``model`` to ``data`` with the estimator's schedule; the FitResult."""
    def loss_fn(params, gamma=0.0, trials=None, project=False):
        return model.loss(data, forcing=(gamma, targets) if gamma else None,
                          trials=trials,
                          project=model.readout_ridge if project else None)

    progress = None
    if est.verbose:
        progress = tqdm(total=est.max_iter, leave=False,
                        desc=f"{type(est).__name__} init {i_init + 1}")
    try:
        return _solver.optimize(
            loss_fn, model.trainable(), learning_rate=est._learning_rate(),
            max_iter=est.max_iter, tol=_resolved(est, "tol"),
            n_iter_no_change=_plateau_window(est), progress=progress,
            batches=batches, holdout=data.holdout is not None,
            **_fit_schedule(est, est.solver_),
            **_projection(est, model, data))
    except _solver.FitDiverged as exc:
        # The warm start runs at its own rate: learning_rate does not reach it.
        first = ("teacher_forcing=0 (no warm start)" if exc.warm_start else
                 f"lower learning_rate (now {est._learning_rate()})")
        raise ValueError(
            f"{type(est).__name__}.fit diverged: {exc}. Remedies: {first}, "
            f"standardise X (e.g. sklearn_ltr.preprocessing.StandardScaler3D), or "
            f"increase tau (now {est.tau}).") from None
    finally:
        if progress is not None:
            progress.close()


# At most this many fitted trials are kept as starting points for inference.
_N_CANDIDATES = 48

def _store_candidates(est, C, state_index, U, n_timepoints):
    """Keep the per-trial parameters and reconstructions of some fitted trials.

    Inference on a new trial starts from the parameters of the kept trial whose
    reconstruction is closest on the new trial's observed entries; the
    per-trial problem is non-convex and this start avoids poor local minima.
    """
    n_trials = C.shape[0]
    keep = np.unique(np.linspace(0, n_trials - 1, min(n_trials, _N_CANDIDATES))
                     .round().astype(int))
    Z = est.initial_states_
    est._cand_states = Z[keep] if state_index is None else Z[state_index[keep]]
    est._cand_factors = C[keep]
    est._cand_condition = None if state_index is None else state_index[keep]
    dev = est._inference_device()
    Uk = None if U is None else to_tensor(np.swapaxes(U[keep], 0, 1), dev)
    drift = None
    if est.readout_drift_ is not None:
        drift = GivenOffsets(to_tensor(est.readout_drift_[keep] / est._data_scale,
                                       dev))
    model = est._latent_model(
        est._frozen_network(dev),
        InitialStates(to_tensor(est._cand_states, dev), trainable=False),
        GivenFactors(to_tensor(est._cand_factors, dev)), drift)
    with torch.no_grad():
        _, eta = model.simulate(Uk, n_timepoints)
    est._cand_recon = np.swapaxes(to_numpy(eta), 0, 1).astype(np.float32)


# The fitted state a saved network must hold for inference (the schema of
# sklearn_ltr._schema, checked at save and load); LowTensorRankRNN adds its trial
# factors. Arrays of the network in its own, standardised units are of order one
# after any fit; the bound is far above that, and keeps inference in float32, which
# squares residuals, finite. Readout arrays are in the units of X and checked with
# the scale in _check_fitted_state.
_NETWORK = {"low": -2.0 ** 32, "high": 2.0 ** 32}
_RNN_STATE = {
    "n_features_in_": Value("int", low=1), "n_inputs_": Value("int", low=0),
    "device_": Value("device"), "solver_?": Value("str"),
    "n_iter_": Value("int", low=0),
    "n_forced_": Value("int", low=0),
    # Diagnostics that inference never reads: a fit stopped early may have no
    # finite loss yet.
    "loss_curve_": Value("floats", finite=False),
    "best_loss_": Value("float", finite=False),
    "validation_loss_curve_?": Value("floats", finite=False),
    "best_validation_loss_?": Value("float", finite=False),
    "readout_ridge_?": Value("float", low=0),
    "_alpha": Value("float", low=0, high=1, closed="right"),
    "_n_trials_fit": Value("int", low=1),
    "_data_scale": Value("float", low=0, closed="right"),
    "left_factors_": Array(("n_units", "rank"), **_NETWORK),
    "right_factors_": Array(("n_units", "rank"), **_NETWORK),
    "readout_": ("n_features_in_", "n_units"),
    "readout_bias_": ("n_features_in_",),
    "_data_offset": ("n_features_in_",),
    "initial_states_": Array(("n_states", "rank"), **_NETWORK),
    "conditions_?": Array(("n_states",), "label", increasing=True),
    "input_map_?": Array(("rank", "n_inputs_"), **_NETWORK),
    "_cand_states": Array(("n_candidates", "rank"), **_NETWORK),
    "_cand_factors": Array(("n_candidates", "rank"), **_NETWORK),
    "_cand_condition?": Array(("n_candidates",), "int", index_of="n_states"),
    "_cand_recon": Array(("n_candidates", "n_timepoints", "n_features_in_"),
                         **_NETWORK),
    "trial_index_": Array(("_n_trials_fit",), distinct=True),
    "epochs_?": Array(("_n_trials_fit",), "label"),
    "readout_drift_?": ("_n_trials_fit", "n_features_in_"),
}


def _check_network_state(state):
    """Check relations between a fitted network's attributes (raise ValueError).

    What the schema cannot state: which attributes are None together, and that the
    readout's outputs stay finite.
    """
    # Fitted with inputs exactly when there is an input map, with conditions
    # exactly when the kept candidates have theirs.
    if (state["input_map_"] is None) != (state["n_inputs_"] == 0):
        raise ValueError(f"n_inputs_={state['n_inputs_']}, but input_map_ is "
                         f"{'None' if state['input_map_'] is None else 'given'}.")
    if (state["conditions_"] is None) != (state["_cand_condition"] is None):
        raise ValueError("conditions_ and _cand_condition must both be None or "
                         "both be given.")
    # The readout is D tanh(x) + d (+ drift) with |tanh| <= 1: its largest output
    # is known from the parameters alone, in the units of X and in the
    # standardised units inference computes in.
    scale, offset = state["_data_scale"], state["_data_offset"]
    drift = state["readout_drift_"]
    spread = np.abs(state["readout_"]).sum(1) + (
        0.0 if drift is None else np.abs(drift).max(0, initial=0.0))
    largest = np.max(spread + np.abs(state["readout_bias_"]), initial=0.0)
    standardised = np.max((spread + np.abs(state["readout_bias_"] - offset))
                          / scale, initial=0.0)
    if not (np.isfinite(largest) and standardised <= _NETWORK["high"]):
        raise ValueError(
            f"the readout (readout_, readout_bias_, readout_drift_) can reach "
            f"{largest:.3g} in the units of X, {standardised:.3g} times "
            f"_data_scale={scale:.3g} from _data_offset: its predictions would "
            f"not be finite.")


class _EarlierFiles:
    """What the networks' files written by an earlier version (0.1) stand for."""

    @classmethod
    def _complete_params(cls, params):
        # Files of 0.1 were fitted without the drift of the readout offsets, with
        # the readout stepped by the optimiser and without held-out entries.
        return {"drift_length_scale": None, "exact_readout": False,
                "early_stopping": False, **params}

    @classmethod
    def _complete_fitted_state(cls, state):
        # Files written before trials had places in the session: numbered in the
        # order fitted, one epoch, no drift of the readout offsets.
        state = dict(state)
        if "trial_index_" not in state and isinstance(state.get("_n_trials_fit"), int):
            state["trial_index_"] = np.arange(state["_n_trials_fit"], dtype=np.float64)
        state.setdefault("epochs_", None)
        state.setdefault("readout_drift_", None)
        for name in ("validation_loss_curve_", "best_validation_loss_"):
            state.setdefault(name, None)  # before early stopping
        # Before the least-squares readout, every fit stepped its readout.
        state.setdefault("readout_ridge_", None)
        # Before solver='auto', the solver of a fit was its parameter's value.
        state.setdefault("solver_", None)
        return state


class _BaseRNN(_EarlierFiles, BaseLatentModel):
    """Shared implementation of :class:`LowTensorRankRNN` and :class:`LowRankRNN`.

    Parameters, validation and fitted attributes only: the network is a
    :class:`~sklearn_ltr._model.LatentRNN`, fitted by
    :func:`~sklearn_ltr._solver.optimize` and, on new trials, with its shared part
    frozen, by
    :func:`~sklearn_ltr._solver.optimize_per_trial`. How trial factors vary over
    trials is the subclass's strategy (``_trial_prior``, see
    :mod:`sklearn_ltr._priors`).
    """

    _flush_denormal = True

    _fitted_schema = _RNN_STATE

    _parameter_constraints = {
        "rank": [Interval(Integral, 1, None, closed="left")],
        "n_units": [Interval(Integral, 1, None, closed="left")],
        "drift_length_scale": [Interval(Real, 0, None, closed="neither"), None],
        "drift_epochs": ["boolean"],
        "tau": [Interval(Real, 1, None, closed="left")],
        "loss": [StrOptions({"mse", "poisson"})],
        "orthonormal_readout": ["boolean"],
        "exact_readout": [StrOptions({"auto"}), "boolean"],
        "readout_ridge": [Interval(Real, 0, None, closed="left"), _AUTO_OPTION],
        "activity_penalty": [Interval(Real, 0, None, closed="left"), _AUTO_OPTION],
        "early_stopping": [StrOptions({"auto"}), "boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "init": [StrOptions({"pca", "random"})],
        "solver": [StrOptions({"auto", "lbfgs-adam", "adam", "lbfgs"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left"), _AUTO_OPTION],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), _AUTO_OPTION],
        "teacher_forcing": [Interval(Real, 0, 1, closed="left")],
        "forcing_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "infer_max_iter": [Interval(Integral, 1, None, closed="left")],
        "cosmoothing_folds": [Interval(Integral, 2, None, closed="left")],
        "random_state": ["random_state"],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str],
        "verbose": ["verbose"],
    }

    def _trial_prior(self):
        """The trial-factor strategy of this model (see :mod:`sklearn_ltr._priors`)."""
        raise NotImplementedError

    @classmethod
    def _check_fitted_state(cls, state):
        _check_network_state(state)

    def _score_kind(self):
        return "bits_per_spike" if self.loss == "poisson" else "r2"

    # ------------------------------------------------------------------ fit
    @publishes_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, trial_index=None, epochs=None, inputs=None):
        """Fit the network to trials.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Recorded activity, trials in the order they happened. NaN marks a missing
            entry, which is neither fitted nor scored.
        y : array-like of shape (n_trials,), default=None
            Condition labels. When given, trials of one condition share their latent
            initial state; otherwise each trial has its own.
        trial_index : array-like of shape (n_trials,), default=None
            Each trial's number in the session (with gaps where trials are missing
            or held out); the trial factors' prior and the drift of the readout
            offsets are smooth in it. Default: ``0 .. n_trials - 1`` in the order
            given.
        epochs : array-like of shape (n_trials,), default=None
            A label per trial for blocks of the session (e.g. baseline /
            perturbation / washout); the trial factors' prior is independent across
            epochs. Default: one epoch.
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs (e.g. task cues). They enter through a map constrained to
            the column space of the connectivity.

        Returns
        -------
        self : object
            Fitted estimator.

        Raises
        ------
        ValueError
            Invalid X, y or inputs; X varying by less than the smallest normal
            float64; a fit estimated to need more memory than is available (checked
            before anything large is allocated); a loss that stays non-finite. A
            failed fit leaves the estimator unfitted.

        Warns
        -----
        MissingDataWarning
            A trial or a neuron of X is more than half missing.
        ConvergenceWarning
            max_iter was reached first, or the loss never decreased.
        UserWarning
            The fit was interrupted (Ctrl-C): the best parameters so far are kept
            and the estimator is usable. An interrupt before the first parameters
            exist (while X is checked and the network initialised) propagates and
            leaves the estimator unfitted.
        """
        X, _ = check_training_trials(X, min_trials=2, min_timepoints=2)
        _check_fit_arguments(self, X)
        labels, state_index = check_conditions(y, X.shape[0])
        index, epoch_labels = check_session(trial_index, epochs, X.shape[0])
        U = check_inputs(inputs, X.shape[0], X.shape[1])
        device = resolve_device(self.device)
        _check_fit_memory(self, X.shape, 0 if U is None else U.shape[2], device)

        offset, scale = _standardisation(X, self.loss, self.orthonormal_readout)
        # Rebinding X frees the validated copy when check_training_trials made one.
        X = (X - offset) / scale
        # This runs on an unfitted copy, published whole at the end (publishes_fit).
        self.device_ = device
        self.n_features_in_ = X.shape[2]
        self.n_inputs_ = 0 if U is None else U.shape[2]
        self.conditions_ = labels
        self.trial_index_, self.epochs_ = index, epoch_labels
        self._alpha = 1.0 / self.tau
        self._data_offset, self._data_scale = offset, scale
        seed = seed_from(self.random_state)
        with self._torch_context():
            data = Data.from_numpy(X, U, device, DTYPE, _holdout_entries(self, X, seed))
            # The solver this fit uses ('auto' resolved; see _fit_solver). The
            # data's mask marks missing and held-out entries alike.
            self.solver_ = _fit_solver(self, X.shape[0], data.mask is not None)
            gain = _readout_gain(X, self.loss, self.orthonormal_readout)
            model, result = self._fit_model(data, state_index, labels, gain, seed)
            try:
                self._set_fitted(model, result, state_index, U, X.shape[1])
            except KeyboardInterrupt:
                # Ctrl-C after the optimisation: exporting the fitted network
                # is short, so finish it rather than lose the fit.
                self._set_fitted(model, result, state_index, U, X.shape[1])
                warnings.warn(
                    f"{type(self).__name__}.fit was interrupted after its last "
                    f"iteration; the fitted parameters are kept.", UserWarning)
        return self

    def _fit_model(self, data, state_index, labels, gain, seed):
        """Fit from ``n_init`` initialisations; return the best model and its result."""
        sidx = None if state_index is None else torch.as_tensor(
            state_index, device=data.X.device)
        n_states = data.X.shape[1] if labels is None else len(labels)
        best = interrupted = None
        for i_init in range(self.n_init):
            try:
                # One generator per initialisation: its column directions, then
                # the order of the trials in its mini-batches.
                generator = torch.Generator().manual_seed(seed + i_init)
                model, targets = self._initial_model(data, sidx, n_states, gain,
                                                     generator)
                batches = _mini_batches(self, data.X.shape[1], generator,
                                        data.X.device)
                # The solver keeps its best parameters on Ctrl-C from its first
                # instruction; an interrupt before that leaves no parameters of
                # this initialisation.
                result = _optimize(self, model, data, targets, i_init, batches)
            except KeyboardInterrupt:
                # Keep the earlier initialisations, if any.
                if best is None:
                    raise
                interrupted = (i_init, 0)
                break
            if best is None or _criterion(result) < _criterion(best[1]):
                best = (model, result)
            if result.interrupted:
                interrupted = (i_init, result.n_iter)
                break
        _warn_about_fit(self, best[1], interrupted)
        return best

    def _initial_model(self, data, state_index, n_states, gain, generator):
        """The network at its data-driven start, and the warm start's targets."""
        p, targets = _model.initialize(
            data, rank=self.rank, n_units=self.n_units, alpha=self._alpha,
            n_states=n_states, state_index=state_index, loss=self.loss,
            orthonormal_readout=self.orthonormal_readout, init=self.init,
            generator=generator)
        if gain != 1.0:
            p["Ds"], p["d"] = p["Ds"] / gain, p["d"] / gain
        p = {k: None if v is None else v.to(DTYPE) for k, v in p.items()}
        network = TrainableNetwork(p["A"], p["Bs"], p["Ds"], p["d"], p["M"],
                                   orthonormal_readout=self.orthonormal_readout,
                                   readout_gain=gain)
        factors = self._trial_prior().fit_factors(
            self.rank, data.X.device, self.trial_index_, self.epochs_)
        drift = None
        if self.drift_length_scale is not None:
            basis = torch.as_tensor(self._drift_process().basis, dtype=DTYPE,
                                    device=data.X.device)
            drift = OffsetDrift(basis.new_zeros(basis.shape[1], data.X.shape[2]),
                                basis)
        model = self._latent_model(network, InitialStates(p["Z"], state_index),
                                   factors, drift)
        return model, targets.to(DTYPE)

    def _drift_process(self):
        """The Gaussian process of the readout offsets' drift over the fitted trials.

        Over the whole session (a recording's drift does not stop at an epoch), or
        independent across epochs with ``drift_epochs``.
        """
        return TrialGP(self.trial_index_, self._drift_epochs(self.epochs_),
                       self.drift_length_scale)

    def _drift_epochs(self, epochs):
        """The epochs the drift restarts at: ``epochs`` with ``drift_epochs``.

        None when the fit had no epochs: the drift then runs over the session.
        """
        return epochs if self.drift_epochs and self.epochs_ is not None else None

    def _learning_rate(self):
        """``learning_rate``, or the solver's default when it is None."""
        if self.learning_rate is not None:
            return self.learning_rate
        return {"lbfgs": 1.0, "adam": 0.05, "lbfgs-adam": 0.02}[self.solver_]

    def _set_fitted(self, model, result, state_index, U, n_timepoints):
        state = model.export()
        self.left_factors_ = state["A"]
        self.right_factors_ = state["B"]
        for name, value in self._trial_prior().attributes(state["C"]).items():
            setattr(self, name, value)
        # Back from the fitted (standardised) units to those of X.
        self.readout_ = state["D"] * self._data_scale
        self.readout_bias_ = state["d"] * self._data_scale + self._data_offset
        self.readout_drift_ = (None if state["drift"] is None
                               else state["drift"] * self._data_scale)
        self.initial_states_ = state["Z"]
        self.input_map_ = state["M"]
        ridge = model.readout_ridge if result.projected else None
        self.readout_ridge_ = None if ridge is None else float(getattr(ridge, "value",
                                                                       ridge))
        for name, value in _fit_diagnostics(result).items():
            setattr(self, name, value)
        self._n_trials_fit = state["C"].shape[0]
        _store_candidates(self, state["C"], state_index, U, n_timepoints)

    # ------------------------------------------------------------ inference
    def _frozen_network(self, dev):
        """The fitted network, frozen, with the readout in the standardised units."""
        offset, scale = self._data_offset, self._data_scale
        return FrozenNetwork(
            to_tensor(self.left_factors_, dev), to_tensor(self.right_factors_, dev),
            to_tensor(self.readout_ / scale, dev),
            to_tensor((self.readout_bias_ - offset) / scale, dev),
            to_tensor(self.input_map_, dev))

    def _latent_model(self, network, states, factors, drift=None):
        return LatentRNN(network, states, factors, alpha=1.0 / self.tau,
                         loss=self.loss,
                         activity_penalty=_resolved(self, "activity_penalty"),
                         drift=drift)

    def _predicts_from_session(self, y):
        # Trial factors and offsets follow from the place in the session; the
        # initial state needs the condition.
        return y is not None and self.conditions_ is not None

    def _infer(self, X, y, inputs, session=None, return_params=False):
        """Per-trial parameters of new trials, shared parameters frozen.

        Initial states come from the condition ``y`` or are inferred; trial factors
        are predicted at the trials' places in the session (``session``) or
        inferred; readout offsets are predicted there, or their fitted mean.
        """
        n_trials, n_timepoints, _ = X.shape
        U = check_inputs(inputs, n_trials, n_timepoints, self.n_inputs_)
        fixed_states = None
        if y is not None and self.conditions_ is not None:
            fixed_states = check_known_conditions(y, self.conditions_, n_trials)
        dev = self._inference_device()
        X = (X - self._data_offset) / self._data_scale
        nearest = _nearest_candidates(self._cand_recon, self._cand_condition, X,
                                      fixed_states)
        data = Data.from_numpy(X, U, dev, DTYPE)
        network = self._frozen_network(dev)
        model = self._latent_model(
            network, _new_trial_states(self, data, network, fixed_states, nearest),
            _new_trial_factors(self, n_trials, nearest, session, dev),
            _new_trial_offsets(self, n_trials, session, dev))
        params = model.trainable()
        if params:
            _solver.optimize_per_trial(lambda p: model.loss(data, per_trial=True),
                                       params, max_iter=self.infer_max_iter)
        with torch.no_grad():
            kappa, eta = model.simulate(data.inputs, n_timepoints)
            if self.loss == "poisson":
                eta = torch.nn.functional.softplus(eta)
        latents = np.ascontiguousarray(np.swapaxes(to_numpy(kappa), 0, 1))
        recon = np.swapaxes(to_numpy(eta), 0, 1) * self._data_scale + self._data_offset
        recon = np.ascontiguousarray(recon)
        if not return_params:
            return latents, recon
        return latents, recon, {"initial_states": to_numpy(model.states()),
                                "trial_factors": to_numpy(model.factors())}

    def _trial_features(self, X, y, inputs):
        # The per-trial parameters inferred with the shared ones frozen: the trial
        # factors c_k for the low-tensor-rank model, the latent initial states z_k for
        # the low-rank model (its only per-trial parameter).
        _, _, params = self._infer(X, y, inputs, return_params=True)
        return params[self._trial_prior().feature]

    def _trial_feature_name(self):
        return self._trial_prior().feature_name

    def _inference_device(self):
        return usable_device(self.device_, type(self).__name__)

    def _check_inference_memory(self, shape):
        _check_inference_memory(self, shape)

    # ------------------------------------------------------------ weights
    def weight_tensor(self):
        """Recurrent weight matrix of every fitted trial, built on request.

        Returns
        -------
        W : ndarray of shape (n_trials, n_units, n_units)
            ``W[k] = sum_r c[k, r] a_r b_r^T / n_units``. For :class:`LowRankRNN` all
            slices are equal.

        Raises
        ------
        ValueError
            When the tensor, ``8 * n_trials * n_units ** 2`` bytes, does not fit in
            the available memory.
        """
        check_is_fitted(self)
        C = self._trial_prior().fitted_factors(self)
        _check_weight_tensor_memory(self, C.shape[0])
        W = np.einsum("kr,ir,jr->kij", C, self.left_factors_, self.right_factors_)
        W /= self.n_units
        return W


_COMMON_PARAMS_DOC = """
    n_units : int, default=100
        Number of units N of the network. Must be >= rank.
    drift_length_scale : float or None, default=50.0
        Length scale, in trials, of a nuisance term that both networks share: each
        recorded neuron's readout offset may drift smoothly over the session
        (electrode drift, slow changes of excitability), as a Gaussian process over
        the trial number with this length scale. Drift that is not connectivity
        then does not pass for learning when the two networks are compared. None:
        one offset per neuron for the whole session.
    drift_epochs : bool, default=False
        Whether the drift restarts at every epoch boundary (given as ``epochs``):
        independent across epochs, smooth within each, as the trial factors'
        prior. Then each neuron's offset may also jump between blocks of the
        session -- a new decoder, a new context -- in both networks alike, so a
        jump that is not connectivity does not pass for learning either. With a
        long ``drift_length_scale`` it is one offset per neuron and epoch.
    tau : float, default=2.0
        Time constant of the units, in time bins (>= 1). The Euler step of the
        dynamics is alpha = 1 / tau.
    loss : {'mse', 'poisson'}, default='mse'
        'mse' for rates or standardised activity; 'poisson' for spike counts (the
        readout is passed through a softplus to give rates). With 'mse' the data
        are standardised internally (each neuron centred, all divided by one
        overall standard deviation) and the readout mapped back, so the fit does
        not depend on the units of X (rates in spikes/s, dF/F, or values of 1e8
        give the same model); integer spike counts are accepted by both losses.
    orthonormal_readout : bool, default=False
        Constrain the readout D to orthonormal rows (needs n_neurons <= n_units).
    exact_readout : bool or 'auto', default='auto'
        After the warm start, set the readout (D and its offset) to its ridge
        least-squares optimum given the rest of the model before every
        evaluation of the loss, instead of stepping it with the optimiser
        (variable projection): with the squared error the readout enters
        linearly, so the optimiser moves the dynamics, initial states, trial
        factors and drift alone. Fits reach lower training losses, often in fewer
        iterations, and predict held-out trials better where the stepped readout
        stops short (much better on the built-in task-trained network; measured
        in :doc:`/performance`). It needs ``loss='mse'``, X without missing
        entries, no held-out entries (``early_stopping``), all trials in every
        step (``batch_size``) and ``orthonormal_readout=False``: 'auto' uses it
        where those hold and steps the readout elsewhere; True refuses to fit
        where they do not; False always steps the readout.
    readout_ridge : float or 'auto', default='auto'
        Ridge of the least-squares readout (``exact_readout``), relative to the
        mean variance of the unit rates; ignored when the readout is stepped.
        'auto' chooses it from 1e-4, 1e-3, ..., 1 by cross-validation over five
        interleaved groups of the training trials, with the one-standard-error
        rule (the largest ridge whose held-out error is within one standard error
        of the best), anew every 50 evaluations of the loss. Noisy single trials
        get a large ridge, nearly noiseless rates a small one; a fixed ridge that
        suits one does not suit the other (measured in :doc:`/performance`).
        ``readout_ridge_`` holds the ridge last used.
    activity_penalty : float or 'auto', default='auto'
        Weight of the mean squared unit state ``|x|^2 / N`` added to the loss (for
        'mse', relative to the squared error of the standardised data; for
        'poisson', to the mean negative log-likelihood per entry). It is part of
        the per-trial inference on new trials too. 'auto' is 1e-4 with 'mse' and
        0.1 with 'poisson': fitted to single-trial spike counts without it, the
        initial states inferred from part of a trial's neurons predict its other
        neurons worse and worse as the fit runs on, and the co-smoothing score
        collapses (0.1 was the best of the weights tried on a recording of motor
        cortex; see :doc:`/performance`).
    early_stopping : 'auto' or bool, default='auto'
        Hold out a fraction ``validation_fraction`` of the (trial, neuron) pairs of
        X, whole time courses, from the loss the fit minimises, and monitor their
        loss instead: the fit keeps the parameters of the lowest held-out loss, and
        its plateau rule (``tol``, ``n_iter_no_change``) watches the held-out loss,
        so a fit run longer (larger ``max_iter``, ``tol=0``) ends where held-out
        entries stop improving rather than overfitting. The held-out pairs are
        fitted by no parameter, as the held-out neurons of the co-smoothing score.
        'auto' is True with ``loss='poisson'`` (single-trial spike counts, which a
        network of 100 units overfits within its default ``max_iter``) on full
        batches, and False with ``loss='mse'`` or mini-batches (``batch_size``
        below n_trials, with which True is refused). The defaults of
        ``loss='poisson'`` (this, ``activity_penalty``, ``tol`` and
        ``n_iter_no_change``) were chosen
        together by the held-out loss of fits to a recording of motor cortex
        (see :doc:`/performance`).
    validation_fraction : float in (0, 1), default=0.1
        Fraction of the (trial, neuron) pairs with an observed entry held out with
        ``early_stopping`` (at least one pair, and at least one left to fit), drawn
        with ``random_state``; ignored without it.
    init : {'pca', 'random'}, default='pca'
        'pca' starts from the principal components of X: latent trajectories from PC
        scores, readout and connectivity by ridge regression on them. 'random' starts
        from random latent trajectories.
    solver : {'auto', 'adam', 'lbfgs-adam', 'lbfgs'}, default='auto'
        Optimiser of the fit; all trials enter every iteration (unless
        ``batch_size`` is set), so the loss is deterministic. 'adam' is Adam with
        a warm-up and a plateau schedule.
        'lbfgs' is L-BFGS: quasi-Newton steps with a strong-Wolfe line search
        (history of 100 steps, about 1.1 loss evaluations per iteration).
        'lbfgs-adam' runs L-BFGS for the first fifth of ``max_iter`` (at most 150
        iterations), then Adam from the best point. 'auto' is 'lbfgs' where the
        readout is set by least squares (``exact_readout``: the squared error of
        fully observed data on all trials at once), whose loss is then a smooth
        function of the other parameters that L-BFGS minimises in a few hundred
        iterations, and 'adam' elsewhere (the Poisson loss, held-out entries,
        missing entries, mini-batches); ``solver_`` says which. All start after
        the teacher-forced warm start (``teacher_forcing``), from the best
        free-running point it passed through. Per-trial inference (transform,
        predict, score) uses Adam with one stopping rule per trial, so a trial's
        result does not depend on the other trials passed with it.
    learning_rate : float or None, default=None
        Step size of Adam (default 0.05 with 'adam', 0.02 after L-BFGS with
        'lbfgs-adam'), or the initial step of each L-BFGS line search with 'lbfgs'
        (default 1.0; the L-BFGS start of 'lbfgs-adam' always uses 1.0); with
        'auto', that of the solver chosen. A
        non-finite loss halves it (up to 6 times, then fit raises a ValueError); a
        rate so large that the loss never decreases keeps the initial parameters,
        with a ConvergenceWarning.
    max_iter : int, default=1000
        Maximum number of iterations per initialisation.
    batch_size : int or None, default=None
        Trials per optimiser step. None (or a value >= n_trials): every step uses
        all trials. Below n_trials, mini-batches for large sessions (needs
        Adam: ``solver='adam'`` or 'auto'): each iteration is then an *epoch*, one
        pass over the trials in a random order drawn from ``random_state``, split into
        ``ceil(n_trials / batch_size)`` mini-batches of nearly equal sizes (at
        most ``batch_size``), with one Adam step per mini-batch. The data and
        activity terms of a step are those of its trials, scaled so that their
        expectation is the loss on all trials; the priors over the whole session
        (the trial factors' Gaussian process, the drift's) enter every step whole,
        and the initial states of trials outside the batch get no gradient from
        the data. ``max_iter``, ``n_iter_no_change``, ``forcing_iter`` and
        ``n_iter_`` then count epochs (the learning rate's warm-up, 10 steps,
        counts steps); the loss of an epoch, in ``loss_curve_`` and compared with
        ``tol``, is the mean of its mini-batch losses (weighted by their sizes,
        each evaluated before its step), and the parameters kept are those at the
        end of the epoch of lowest loss (``best_loss_``). A step costs time and
        memory in proportion to its trials, so an epoch costs about what a full
        step does, and the training's memory is that of one mini-batch (the
        data-driven initialisation still sees all trials at once).
    tol : float or 'auto', default='auto'
        A plateau is ``n_iter_no_change`` iterations in which the loss (with
        ``early_stopping``, the held-out entries' loss) fails to drop by more than
        ``tol`` relative to its best value. 'auto' is 5e-3 with ``loss='mse'`` and
        1e-4 with 'poisson' (the Poisson negative log-likelihood holds a large
        constant, against which 5e-3 ends fits early). With 'lbfgs' the first
        plateau ends the fit (and with 'lbfgs-adam' it ends the L-BFGS start). With
        Adam the fit returns to its best parameters at a plateau and divides the
        learning rate by 5; the third plateau ends it.
    n_iter_no_change : int or 'auto', default='auto'
        Length of the plateau window, in iterations. Recurrent networks often stall
        for tens of iterations before the loss drops again; a short window mistakes
        such a stall for convergence and stops in a poor fit. 'auto' is 50 with
        ``loss='mse'`` and 150 with 'poisson': a held-out loss (``early_stopping``)
        fluctuates from one iteration to the next, and a window of 50 divides the
        learning rate long before it stops improving. With L-BFGS and
        ``loss='mse'`` (``solver_='lbfgs'``), 'auto' is 10: its steps follow the
        curvature and seldom stall for long.
    teacher_forcing : float in [0, 1), default=0.5
        Strength of the teacher-forced warm start (used with ``init='pca'``). In the
        first ``forcing_iter`` iterations every latent state is pulled toward the
        principal-component trajectory the initialisation was regressed on,
        ``kappa(t) <- (1 - g) kappa(t) + g kappa_pca(t)``, with ``g`` falling
        linearly from ``teacher_forcing`` to 0 (Adam, learning rate 0.02). A
        free-running recurrent fit starts on a plateau that Adam takes hundreds of
        iterations to leave; the forced network learns the dynamics of the data
        first and is released gradually. It can change which of several equally good
        solutions is found: when the trial factors themselves are the result,
        compare fits with ``teacher_forcing=0`` (and several ``random_state``).
        Every 10 iterations the free-running loss is evaluated too (forward only),
        and the solver starts from the best point found, not from where the pull
        ends. 0 disables it.
    forcing_iter : int, default=150
        Iterations of the teacher-forced warm start (at most a third of
        ``max_iter``); they count in ``max_iter``, ``n_iter_`` and ``loss_curve_``,
        but only losses of the free-running network are compared by the stopping
        rule and ``best_loss_``.
    n_init : int, default=1
        Number of initialisations (different random column directions); the fit with
        the lowest loss is kept.
    infer_max_iter : int, default=200
        Maximum iterations when inferring the per-trial parameters of new trials
        (Adam, one independent problem and stopping rule per trial).
    cosmoothing_folds : int, default=5
        Number of neuron folds of the co-smoothing score.
    random_state : int, RandomState instance or None, default=None
        Seeds a local torch.Generator (never the global one). The same value gives
        bit-identical fits on the CPU.
    n_threads : int or None, default=1
        torch intra-op threads used during fit, transform, predict and score, restored
        afterwards (capped at the number of CPUs). None leaves torch's setting
        alone.
    device : {'cpu', 'cuda', 'auto'} or str, default='cpu'
        Where to compute. 'auto' picks CUDA when available. Fitted arrays are always
        stored as numpy arrays on the CPU.
    verbose : int, default=0
        Show a progress bar during fit when > 0.
"""

_COMMON_ATTRS_DOC = """
    left_factors_ : ndarray of shape (n_units, rank)
        Column factors A = [a_1, ..., a_R] of the connectivity.
    right_factors_ : ndarray of shape (n_units, rank)
        Row factors B = [b_1, ..., b_R].
    readout_ : ndarray of shape (n_neurons, n_units)
        Readout D from unit rates tanh(x) to recorded neurons, in the units of X.
    readout_bias_ : ndarray of shape (n_neurons,)
        Readout offset d, in the units of X.
    readout_ridge_ : float or None
        The ridge of the least-squares readout (``readout_ridge``) last used by
        the fit; None when the fit stepped the readout.
    readout_drift_ : ndarray of shape (n_trials, n_neurons) or None
        Drift of each fitted trial's readout offsets around ``readout_bias_`` (the
        nuisance term of ``drift_length_scale``), in the units of X; None without
        it.
    trial_index_ : ndarray of shape (n_trials,)
        The fitted trials' numbers in the session (``trial_index`` of fit).
    epochs_ : ndarray of shape (n_trials,) or None
        Their epochs (``epochs`` of fit).
    initial_states_ : ndarray of shape (n_trials or n_conditions, rank)
        Latent initial states z (x(0) = A z), per trial, or per condition when ``y``
        was given to fit.
    input_map_ : ndarray of shape (rank, n_inputs) or None
        Input map in latent coordinates M (B_in = A M); None without inputs.
    conditions_ : ndarray of shape (n_conditions,) or None
        Condition labels seen in fit.
    loss_curve_ : list of float
        Loss at each iteration of the kept initialisation (for 'mse', on the
        standardised data, so comparable across units of X): of each epoch with
        ``batch_size`` (the mean of its mini-batch losses). The first
        ``n_forced_`` entries are losses of the teacher-forced network.
    solver_ : str or None
        The solver of the fit: ``solver``, or with 'auto' the one it chose
        ('lbfgs' or 'adam'). None for a model loaded from a file written before
        'auto' (its ``solver`` is the one it was fitted with).
    n_iter_ : int
        Iterations (epochs with ``batch_size``) run by the kept initialisation.
    n_forced_ : int
        How many of them were teacher-forced (``min(forcing_iter, max_iter // 3)``
        with ``init='pca'`` and ``teacher_forcing > 0``, else 0).
    best_loss_ : float
        Lowest training loss reached; with early stopping, the training loss at
        the parameters kept (those of the lowest held-out loss).
    validation_loss_curve_ : list of float or None
        With early stopping, the mean data loss of the held-out entries at each
        iteration (aligned with ``loss_curve_``; no penalty enters it); else None.
    best_validation_loss_ : float or None
        With early stopping, the lowest of them, at the parameters kept; else None.
    n_features_in_ : int
        Number of recorded neurons (the last axis of X).
    n_inputs_ : int
        Number of input channels (0 without inputs).
    device_ : torch.device
        The device used by fit.
"""


class LowTensorRankRNN(_BaseRNN):
    """Recurrent network whose connectivity changes over trials in a low-rank tensor.

    Fits the model of Pellegrino, Cayco-Gajic & Chadwick (NeurIPS 2023) to trials of
    recorded activity: a network of ``n_units`` tanh units whose weight matrix on
    trial k is ``W_k = sum_r c[k, r] a_r b_r^T / n_units``, i.e. the stack of weight
    matrices is a CP tensor of rank ``rank``. The recorded neurons are a readout
    ``D tanh(x) + d`` of the units. The trial factors ``c[:, r]`` describe how each
    connectivity component waxes and wanes over learning; a Gaussian-process prior
    over the trial number (``trial_length_scale``, ``trial_amplitude``,
    ``trial_jitter``; independent across ``epochs``) keeps them smooth over the
    session and predicts them for trials not fitted (``score`` with
    ``trial_index``).

    The network is simulated in its rank-dimensional latent space (states, initial
    states and inputs live in the column space of A), at O(n_units * rank) per time
    step and trial; the weight tensor is built only by :meth:`weight_tensor`.

    Parameters
    ----------
    rank : int, default=3
        Tensor rank R of the connectivity (number of components).
    trial_length_scale : float or None, default=10.0
        Length scale, in trials, of the squared-exponential Gaussian-process prior on
        the trial factors: larger is smoother. None gives independent trial factors
        (a trial not fitted is then predicted at their mean). Selectable by
        cross-validation with the predicting score (``score`` with
        ``trial_index``).
    trial_amplitude : float, default=1.0
        Standard deviation, under the prior, of the smooth deviation of each trial
        factor from its mean (which starts at 1): the size of the changes of
        connectivity the prior expects.
    trial_jitter : float, default=0.0
        Standard deviation of an independent per-trial part of the trial factors
        (the Gaussian process's nugget): trial-to-trial fluctuations of the
        connectivity that are not learning. A trial not fitted is predicted without
        it.
    {common_params}

    Attributes
    ----------
    trial_factors_ : ndarray of shape (n_trials, rank)
        Trial factors c, each normalised to unit root-mean-square and positive mean
        (the scale is carried by ``right_factors_``).
    {common_attrs}

    See Also
    --------
    LowRankRNN : The same network with one connectivity for all trials.

    References
    ----------
    .. [1] A. Pellegrino, N. A. Cayco-Gajic, A. Chadwick. "Low Tensor Rank Learning
       of Neural Dynamics". NeurIPS 2023.

    Examples
    --------
    >>> from sklearn_ltr import LowTensorRankRNN
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> data = make_low_tensor_rank_rnn(n_trials=20, n_timepoints=15, n_neurons=12,
    ...                                 rank=2, random_state=0)
    >>> est = LowTensorRankRNN(rank=2, n_units=20, max_iter=50, random_state=0)
    >>> est.fit(data.X).trial_factors_.shape
    (20, 2)
    >>> est.transform(data.X[:3]).shape
    (3, 15, 2)
    """

    _fitted_schema = {**_BaseRNN._fitted_schema,
                      "trial_factors_": Array(("_n_trials_fit", "rank"), **_NETWORK)}
    _parameter_constraints = {
        **_BaseRNN._parameter_constraints,
        "trial_length_scale": [Interval(Real, 0, None, closed="neither"), None],
        "trial_amplitude": [Interval(Real, 0, None, closed="neither")],
        "trial_jitter": [Interval(Real, 0, None, closed="left")],
    }

    def _trial_prior(self):
        return GaussianProcessPrior(self.trial_length_scale, self.trial_amplitude,
                                    self.trial_jitter)

    def __init__(
        self, rank=3, *, n_units=100, trial_length_scale=10.0, trial_amplitude=1.0,
        trial_jitter=0.0, drift_length_scale=50.0, drift_epochs=False, tau=2.0,
        loss="mse", orthonormal_readout=False, exact_readout="auto",
        readout_ridge="auto", activity_penalty="auto", early_stopping="auto",
        validation_fraction=0.1,
        init="pca", solver="auto", learning_rate=None, max_iter=1000,
        batch_size=None, tol="auto", n_iter_no_change="auto", teacher_forcing=0.5,
        forcing_iter=150, n_init=1, infer_max_iter=200, cosmoothing_folds=5,
        random_state=None, n_threads=1, device="cpu", verbose=0,
    ):
        self.rank = rank
        self.n_units = n_units
        self.trial_length_scale = trial_length_scale
        self.trial_amplitude = trial_amplitude
        self.trial_jitter = trial_jitter
        self.drift_length_scale = drift_length_scale
        self.drift_epochs = drift_epochs
        self.tau = tau
        self.loss = loss
        self.orthonormal_readout = orthonormal_readout
        self.exact_readout = exact_readout
        self.readout_ridge = readout_ridge
        self.activity_penalty = activity_penalty
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.init = init
        self.solver = solver
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.teacher_forcing = teacher_forcing
        self.forcing_iter = forcing_iter
        self.n_init = n_init
        self.infer_max_iter = infer_max_iter
        self.cosmoothing_folds = cosmoothing_folds
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device
        self.verbose = verbose


class LowRankRNN(_BaseRNN):
    """Recurrent network with one low-rank connectivity shared by all trials.

    The nested "no learning" model of :class:`LowTensorRankRNN`: the weight matrix
    ``W = sum_r a_r b_r^T / n_units`` is the same on every trial, and only the
    initial states (and inputs) differ between trials. Comparing the two on the same
    folds tests whether connectivity changed over trials.

    Parameters
    ----------
    rank : int, default=3
        Rank R of the connectivity.
    {common_params}

    Attributes
    ----------
    {common_attrs}

    See Also
    --------
    LowTensorRankRNN : Connectivity that changes over trials.

    Examples
    --------
    >>> from sklearn_ltr import LowRankRNN
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> data = make_low_tensor_rank_rnn(n_trials=20, n_timepoints=15, n_neurons=12,
    ...                                 rank=2, random_state=0)
    >>> est = LowRankRNN(rank=2, n_units=20, max_iter=50, random_state=0).fit(data.X)
    >>> est.predict(data.X[:3]).shape
    (3, 15, 12)
    """

    def _trial_prior(self):
        return TrialInvariant()

    def __init__(
        self, rank=3, *, n_units=100, drift_length_scale=50.0, drift_epochs=False,
        tau=2.0, loss="mse", orthonormal_readout=False, exact_readout="auto",
        readout_ridge="auto", activity_penalty="auto", early_stopping="auto",
        validation_fraction=0.1,
        init="pca", solver="auto", learning_rate=None, max_iter=1000,
        batch_size=None, tol="auto", n_iter_no_change="auto", teacher_forcing=0.5,
        forcing_iter=150, n_init=1, infer_max_iter=200, cosmoothing_folds=5,
        random_state=None, n_threads=1, device="cpu", verbose=0,
    ):
        self.rank = rank
        self.n_units = n_units
        self.drift_length_scale = drift_length_scale
        self.drift_epochs = drift_epochs
        self.tau = tau
        self.loss = loss
        self.orthonormal_readout = orthonormal_readout
        self.exact_readout = exact_readout
        self.readout_ridge = readout_ridge
        self.activity_penalty = activity_penalty
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.init = init
        self.solver = solver
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.teacher_forcing = teacher_forcing
        self.forcing_iter = forcing_iter
        self.n_init = n_init
        self.infer_max_iter = infer_max_iter
        self.cosmoothing_folds = cosmoothing_folds
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device
        self.verbose = verbose


# The two estimators share most of their parameters and attributes: write them once
# and fill them into both class docstrings (which must stay plain string literals to
# be docstrings at all).
for _cls in (LowTensorRankRNN, LowRankRNN):
    _cls.__doc__ = (_cls.__doc__
                    .replace("{common_params}", _COMMON_PARAMS_DOC.strip())
                    .replace("{common_attrs}", _COMMON_ATTRS_DOC.strip()))
del _cls
