"""The latent low-rank RNN as one object: its parameters and what they mean.

Middle layer between the math (:mod:`sklearn_ltr._dynamics`: the recurrence and the
readout, with hand-written backward passes) and the optimisers
(:mod:`sklearn_ltr._solver`). Tensors in, tensors out; no scikit-learn, no numpy
beyond the conversion of the fitted state.

:class:`LatentRNN` is a ``torch.nn.Module`` made of three parts, each a small module:

* the **network** shared by all trials -- column factors ``A``, row factors ``B``,
  readout ``D, d`` and input map ``M`` -- either trainable in the scaled
  parametrisation below (:class:`TrainableNetwork`) or frozen at fitted values
  (:class:`FrozenNetwork`);
* the **initial states** of a batch of trials (:class:`InitialStates`: one per
  trial, or one per condition shared through an index);
* the **trial factors** of the batch, whose form is a strategy chosen by the
  estimator: one vector for every trial (:class:`SharedFactors`, the low-rank model),
  smooth over trials (:class:`BasisFactors`, the low-tensor-rank model's prior), free
  per trial with a weak pull to a centre (:class:`FreeFactors`, inference on new
  trials) or given (:class:`GivenFactors`).

Fitting and per-trial inference minimise the same :meth:`LatentRNN.loss`; they differ
only in which parts are trainable (``requires_grad``): everything when fitting, the
per-trial parts alone when inferring the states and factors of new trials.

Parametrisation of the trainable network. The optimiser sees parameters of order one
whatever ``n_units`` is (a mean-field scaling, which keeps one learning rate good for
every size)::

    A  (N, R)   column factors, used as is
    Bs (N, R)   row factors,   B = sqrt(N) * Bs
    Ds (n, N)   readout,       D = gain * Ds / sqrt(N)  (or orthonormal rows, below)
    d  (n,)     readout offset, gain * d
    M  (R, m)   input map in latent coordinates, B_in = A M

and the network of trial ``k`` is ``W_k = A diag(c_k) B^T / N`` with trial factors
``c_k`` and latent initial state ``z_k`` (``x_k(0) = A z_k``).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ._dynamics import (
    latent_squared_error,
    readout,
    readout_squared_error,
    simulate_latents,
)

__all__ = [
    "Data", "Network", "LatentRNN", "TrainableNetwork", "FrozenNetwork",
    "InitialStates", "SharedFactors", "BasisFactors", "FreeFactors", "GivenFactors",
    "OffsetDrift", "GivenOffsets",
    "initialize", "initial_state_guess", "evaluate", "evaluate_loss",
    "evaluate_loss_holdout", "readout_loss",
    "data_loss", "data_loss_per_trial", "activity_loss", "readout_matrix",
    "readout_least_squares",
]

DTYPE = torch.float32
# Ridge of the least-squares readout (LatentRNN.fit_readout), relative to the mean
# variance of the unit rates. The rates of a low-rank network are nearly collinear:
# with 1e-6 the readout took huge weights along their least-varying directions and
# a rank-2 fit of the built-in session never improved on its first point (held-out
# R^2 0.66); 1e-3 biased fits of near-noiseless data (see doc/performance.rst).
READOUT_RIDGE = 1e-4


@dataclass
class Data:
    """Observed data in time-major layout.

    X : (T, K, n) with missing entries set to 0; mask : (T, K, n) bool or None (None
    means fully observed); inputs : (T, K, m) or None; n_obs : number of observed
    entries (a float, its expectation, for a mini-batch: see :meth:`subset`). The
    losses are means over the entries of ``mask``; ``holdout`` (T, K, n) bool or
    None marks observed entries left out of ``mask`` to be monitored apart (early
    stopping, full batches only), ``n_holdout`` of them.
    """

    X: torch.Tensor
    mask: object
    inputs: object
    n_obs: int
    holdout: object = None
    n_holdout: int = 0

    @classmethod
    def from_numpy(cls, X, inputs, device, dtype=DTYPE, holdout=None):
        """Build from arrays of shape (K, T, n) and (K, T, m) (NaN = missing).

        ``holdout`` (K, T, n) bool or None: entries to leave out of the loss and
        monitor apart (those of them observed).
        """
        # A copy (never a view of the caller's array, which may be read-only).
        Xt = torch.tensor(np.swapaxes(X, 0, 1), dtype=dtype).contiguous()
        mask = ~torch.isnan(Xt)
        Xt = torch.where(mask, Xt, torch.zeros((), dtype=dtype))
        held, n_held = None, 0
        if holdout is not None:
            held = mask & torch.as_tensor(np.swapaxes(holdout, 0, 1))
            mask &= ~held
            n_held = int(held.sum())
            held = held.to(device)
        n_obs = int(mask.sum())
        mask = None if n_obs == Xt.numel() else mask.to(device)
        U = None
        if inputs is not None:
            U = torch.tensor(np.swapaxes(inputs, 0, 1), dtype=dtype).contiguous()
            U = U.to(device)
        return cls(Xt.to(device), mask, U, n_obs, held, n_held)

    @property
    def shape(self):
        """``(T, K, n)``."""
        return tuple(self.X.shape)

    def subset(self, trials):
        """The data of some trials (a mini-batch), for unbiased estimates of losses.

        ``n_obs`` of the subset is the *expected* number of observed entries of
        ``len(trials)`` trials drawn at random, ``n_obs * len(trials) / K``, not
        their own count: a loss summed over the subset's entries and divided by it
        has the whole data's mean loss as its expectation over random subsets.

        Parameters
        ----------
        trials : Tensor of int of shape (B,)
            Indices of the trials (the second axis of ``X``).

        Returns
        -------
        data : Data
        """
        def pick(t):
            return None if t is None else t.index_select(1, trials)

        return Data(pick(self.X), pick(self.mask), pick(self.inputs),
                    self.n_obs * len(trials) / self.X.shape[1])


# --------------------------------------------------------------------------- #
# the model as functions of explicit tensors
# --------------------------------------------------------------------------- #
def readout_matrix(Ds, n_units, orthonormal):
    """Readout D (n, N) from its raw parameter."""
    if orthonormal:
        Q, Rr = torch.linalg.qr(Ds)  # Ds is (N, n): orthonormal columns
        # Fix the sign ambiguity of QR so that D is a smooth function of Ds.
        s = torch.sign(torch.diagonal(Rr))
        s = torch.where(s == 0, torch.ones_like(s), s)
        return (Q * s).t()
    return Ds / math.sqrt(n_units)


def _gain_drive(C, A, M, inputs, alpha):
    """Trial gains ``alpha C / N`` (K, R) and drive ``alpha M u(t)`` (T - 1, K, R)."""
    drive = None
    if inputs is not None and M is not None:
        drive = alpha * (inputs[:-1] @ M.t())
    return C * (alpha / A.shape[0]), drive


def _force(Z0, gain, drive, decay, forcing):
    """The recurrence's arguments with teacher forcing toward target latent states.

    ``forcing = (gamma, targets)`` with ``targets`` of shape (T, K, R): every state
    is mixed with its target, ``kappa(t) <- (1 - gamma) kappa(t) + gamma
    targets(t)``. The mixed recurrence is again a latent recurrence, with the
    initial state, the gain, the drive and the decay rescaled::

        kappa(t + 1) = (1 - gamma) [decay kappa(t) + gain h(t) + drive(t)]
                       + gamma targets(t + 1)

    so the fused kernels run it unchanged. ``forcing=None`` (or gamma 0) returns
    the arguments as they are.
    """
    if forcing is None or forcing[0] == 0.0:
        return Z0, gain, drive, decay
    gamma, targets = forcing
    keep = 1.0 - gamma
    Z0 = keep * Z0 + gamma * targets[0]
    pulled = gamma * targets[1:]
    drive = pulled if drive is None else torch.add(pulled, drive, alpha=keep)
    return Z0, keep * gain, drive, keep * decay


def _latents(Z0, C, A, B, M, inputs, alpha, n_timepoints, forcing=None):
    """Latent trajectories and unit rates, (T, K, R) and (T, K, N)."""
    gain, drive = _gain_drive(C, A, M, inputs, alpha)
    Z0, gain, drive, decay = _force(Z0, gain, drive, 1.0 - alpha, forcing)
    return simulate_latents(Z0, A, B, gain, drive, decay, n_timepoints)


def evaluate(Z0, C, A, B, D, d, M, inputs, *, alpha, n_timepoints):
    """Latent trajectories and readout of the model for explicit per-trial parameters.

    Parameters
    ----------
    Z0 : (K, R) latent initial states.  C : (K, R) trial factors.
    A, B : (N, R) column and row factors (B at its true scale).
    D : (n, N) readout, d : (n,) offset.  M : (R, m) or None input map.
    inputs : (T, K, m) or None.

    Returns
    -------
    kappa : (T, K, R), eta : (T, K, n) readout (the rate's pre-image for Poisson).

    See Also
    --------
    evaluate_loss : the same model straight to :func:`data_loss`, faster for MSE.
    """
    kappa, H = _latents(Z0, C, A, B, M, inputs, alpha, n_timepoints)
    return kappa, readout(H, D, d)


def evaluate_loss(Z0, C, A, B, D, d, M, data, loss, *, alpha, n_timepoints,
                  forcing=None):
    """Latent trajectories and the mean data loss, without materialising the readout.

    Equals ``kappa, eta = evaluate(..., data.inputs, ...)`` followed by
    ``data_loss(eta, data, loss)`` (up to floating-point rounding); see
    :func:`readout_loss`. Parameters as in :func:`evaluate`, with ``data`` a
    :class:`Data` (its ``inputs`` drive the model) and ``loss`` 'mse' or 'poisson'.
    ``forcing=(gamma, targets)`` mixes every latent state with a target state, with
    weight ``gamma`` (teacher forcing; see :func:`_force`).

    Returns
    -------
    kappa : (T, K, R), value : scalar Tensor.
    """
    if loss == "poisson":
        kappa, H = _latents(Z0, C, A, B, M, data.inputs, alpha, n_timepoints,
                            forcing)
        return kappa, readout_loss(H, D, d, data, loss)
    # Fused: the (T, K, N) unit rates are not stored, beyond a few MiB
    # (LatentSquaredError).
    gain, drive = _gain_drive(C, A, M, data.inputs, alpha)
    Z0, gain, drive, decay = _force(Z0, gain, drive, 1.0 - alpha, forcing)
    value, kappa = latent_squared_error(
        Z0, A, B, gain, drive, D, d, data.X, data.mask, decay, n_timepoints,
        max(data.n_obs, 1))
    return kappa, value


def evaluate_loss_holdout(Z0, C, A, B, D, d, M, data, loss, *, alpha, n_timepoints,
                          forcing=None):
    """:func:`evaluate_loss`, and the mean data loss over the held-out entries.

    The held-out loss (over ``data.holdout``, a float without gradient) comes from
    the same simulation: for the Poisson loss from the same readout, for the
    squared error from the fused loss's latent trajectories.

    Returns
    -------
    kappa : (T, K, R), value : scalar Tensor, held : float.
    """
    if loss == "poisson":
        kappa, H = _latents(Z0, C, A, B, M, data.inputs, alpha, n_timepoints,
                            forcing)
        eta = readout(H, D, d)
        value = data_loss(eta, data, loss)
    else:
        kappa, value = evaluate_loss(Z0, C, A, B, D, d, M, data, loss, alpha=alpha,
                                     n_timepoints=n_timepoints, forcing=forcing)
        eta = None
    with torch.no_grad():
        if eta is None:
            eta = readout(torch.tanh(kappa @ A.t()), D, d)
        held = _entry_loss(eta, data, loss, data.holdout).sum()
    return kappa, value, float(held) / max(data.n_holdout, 1)


def readout_loss(H, D, d, data, loss):
    """``data_loss(readout(H, D, d), data, loss)``, fused for the squared error.

    For ``loss='mse'`` the readout, the residual, the loss and its gradients share one
    buffer (:class:`sklearn_ltr._dynamics.ReadoutSquaredError`); the Poisson loss goes
    through autograd.
    """
    if loss == "poisson":
        return data_loss(readout(H, D, d), data, loss)
    return readout_squared_error(H, D, d, data.X, data.mask, max(data.n_obs, 1))


def _entry_loss(eta, data, loss, mask=None):
    """Loss of every entry, zero outside ``mask`` (default: ``data.mask``)."""
    if loss == "poisson":
        rate = F.softplus(eta)
        err = rate - data.X * torch.log(rate + 1e-8)
    else:
        err = (eta - data.X) ** 2
    mask = data.mask if mask is None else mask
    if mask is not None:
        err = err * mask
    return err


def data_loss(eta, data, loss):
    """Mean loss over observed entries (MSE or Poisson negative log-likelihood)."""
    return _entry_loss(eta, data, loss).sum() / max(data.n_obs, 1)


def data_loss_per_trial(eta, data, loss):
    """(K,) mean loss over each trial's observed entries."""
    err = _entry_loss(eta, data, loss).sum((0, 2))
    if data.mask is None:
        count = data.X.shape[0] * data.X.shape[2]
        return err / count
    return err / data.mask.sum((0, 2)).clamp_min(1)


def activity_loss(kappa, A, per_trial=False):
    """Mean squared unit state ``|A kappa|^2 / N`` computed in latent space.

    Averaged over time and trials, or over time only (shape (K,)) with ``per_trial``.
    """
    N = A.shape[0]
    gram = A.t() @ A / N
    sq = ((kappa @ gram) * kappa).sum(-1)  # (T, K)
    return sq.mean(0) if per_trial else sq.mean()


def readout_least_squares(H, Y, ridge=READOUT_RIDGE):
    """The readout ``D, d`` of least squared error ``|H D^T + d - Y|^2``.

    ``H`` (T, K, N) unit rates, ``Y`` (T, K, n) targets, both fully observed; they
    are centred in place (pass tensors that may be overwritten). The normal
    equations of the centred problem are solved in float64 with a ridge of
    ``ridge`` times the mean variance of the rates (which only matters for units
    whose rates are nearly collinear). ``ridge`` may also be a callable
    ``ridge(H, Y, variance)`` of the centred tensors and that mean variance that
    returns the ridge itself, not relative to it (:class:`ReadoutRidge`).

    Returns
    -------
    D : (n, N), d : (n,), in the dtype of ``H``; or None when ``H`` or ``Y`` holds a
    non-finite value.
    """
    N, n = H.shape[-1], Y.shape[-1]
    h_mean, y_mean = H.reshape(-1, N).mean(0), Y.reshape(-1, n).mean(0)
    H.sub_(h_mean)
    Y.sub_(y_mean)
    normal = _gram(H.reshape(-1, N), Y.reshape(-1, n))
    if normal is None:
        return None
    gram, cross = normal
    variance = float(torch.trace(gram)) / N
    ridge = ridge(H, Y, variance) if callable(ridge) else ridge * variance
    gram.diagonal().add_(ridge + 1e-12)
    D = torch.linalg.solve(gram, cross).t().to(H.dtype)
    return D, y_mean - D @ h_mean


def _gram(H, Y):
    """``H^T H`` and ``H^T Y`` of 2-D tensors in float64; None if not finite."""
    gram = (H.t() @ H).to(torch.float64)
    cross = (H.t() @ Y).to(torch.float64)
    if not (torch.isfinite(gram).all() and torch.isfinite(cross).all()):
        return None
    return gram, cross


# The ridges, relative to the rates' mean variance, that readout_ridge='auto'
# chooses from. Not below 1e-4: smaller ridges leave the projected problem
# ill-conditioned, which cross-validation on fixed rates cannot see (1e-6 broke
# rank-2 fits of the task-trained network; 1e-5, which cross-validation chose
# there, recovered its trial factors less well than 1e-4: doc/performance.rst).
READOUT_RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def readout_ridge_cv(H, Y, ridges=READOUT_RIDGES, n_groups=5):
    """The ridge of :func:`readout_least_squares` chosen by cross-validation.

    The trials are dealt into ``n_groups`` interleaved groups (trial k to group
    ``k % n_groups``; fewer groups when there are fewer trials); the readout solved
    on all groups but one predicts the rates' targets in the one left out. Of the
    ``ridges``, the largest whose mean held-out error (relative to each group's sum
    of squares) lies within one standard error of the smallest is returned: the
    one-standard-error rule, which leans to the larger ridge because the rates
    themselves were fitted to all trials, so that held-out groups are predicted
    better here than held-out trials will be. Each group's Gram matrices are
    computed once; each group and ridge costs a Cholesky factorisation of an
    (N, N) matrix.

    Parameters
    ----------
    H : Tensor of shape (T, K, N)
        Centred unit rates.
    Y : Tensor of shape (T, K, n)
        Centred targets.
    ridges : sequence of float
        Candidates, relative to the mean variance of the rates.
    n_groups : int
        Number of groups of trials.

    Returns
    -------
    ridge : float, or None with fewer than two trials or non-finite values.
    """
    T, K, N = H.shape
    n_groups = min(n_groups, K)
    if n_groups < 2:
        return None
    parts = []
    for g in range(n_groups):
        part = _gram(H[:, g::n_groups].reshape(-1, N),
                     Y[:, g::n_groups].reshape(-1, Y.shape[-1]))
        if part is None:
            return None
        parts.append((*part, Y[:, g::n_groups].to(torch.float64).square().sum()))
    gram = sum(p[0] for p in parts)
    cross = sum(p[1] for p in parts)
    eye = torch.eye(N, dtype=torch.float64, device=H.device)
    errors = torch.full((n_groups, len(ridges)), math.inf, dtype=torch.float64)
    for g, (g_gram, g_cross, g_total) in enumerate(parts):
        train_gram, train_cross = gram - g_gram, cross - g_cross
        scale = torch.trace(train_gram) / N
        for i, ridge in enumerate(ridges):
            # The readout of the other groups' trials, (N, n), by Cholesky (the
            # five factorisations cost less than one eigendecomposition).
            L, info = torch.linalg.cholesky_ex(train_gram + (ridge * scale + 1e-12)
                                               * eye)
            if info:
                continue  # not positive definite: rates with no variance
            D = torch.cholesky_solve(train_cross, L)
            sse = (D * (g_gram @ D)).sum() - 2 * (D * g_cross).sum() + g_total
            errors[g, i] = float(sse / torch.clamp(g_total, min=1e-300))
    mean = errors.mean(0)
    if not torch.isfinite(mean).all():
        return None
    best = int(torch.argmin(mean))
    se = errors[:, best].std() / math.sqrt(n_groups)
    within = torch.nonzero(mean <= mean[best] + se).flatten()
    return float(ridges[int(within.max())])


class ReadoutRidge:
    """The ridge of a fit's least-squares readout.

    A callable ``ridge(H, Y, variance)`` for :func:`readout_least_squares` that
    returns the ridge itself (and keeps it as ``absolute``): ``value``, relative,
    times the rates' mean variance ``variance`` of the call. Given as ``'auto'``,
    ``value`` is chosen by :func:`readout_ridge_cv` from the current rates on the
    first call and every ``every`` calls after (``READOUT_RIDGE`` until a choice
    could be made), and kept in between, so that the loss the optimiser sees
    changes its form only at those calls. :meth:`LatentRNN.fit_readout` returns
    the penalty it puts on the readout, which the solver adds to the loss its
    optimiser sees.

    With ``hold=True`` the absolute ridge is held from the first call until a
    choice differs from the one before (``value`` times the variance of the
    rates of the call that chose it), so that in between the penalty's weight
    does not depend on the parameters and the gradient the optimiser is given is
    exactly that of what it sees. L-BFGS needs this: its line searches compare
    values, and with the ridge following the rates' variance they stalled (the
    demo's session, LowRankRNN at rank 2: 3.6 evaluations per iteration and a
    stop at loss 0.073, against 1.7 and 0.011 with the ridge held; Adam reached
    0.057). Re-basing the held ridge on the variance at every choice moved the
    loss up by about 1 % each time, and L-BFGS's plateau rule stopped fits there.
    Adam, which ignores values, keeps the ridge following the variance: holding
    it lowered LowTensorRankRNN's scores on the BCI session of
    ``doc/command_line.rst`` by 0.003-0.007 at ranks 3-6.
    """

    def __init__(self, value="auto", every=50, hold=False):
        self.auto = isinstance(value, str)
        self.value = READOUT_RIDGE if self.auto else float(value)
        self.every = every
        self.hold = hold
        self.n_calls = 0
        self.absolute = None  # the ridge last returned

    def __call__(self, H, Y, variance):
        before = self.value
        if self.n_calls % self.every == 0 and self.auto:
            choice = readout_ridge_cv(H, Y)
            if choice is not None:
                self.value = choice
        if self.absolute is None or self.value != before or not self.hold:
            self.absolute = self.value * variance
        self.n_calls += 1
        return self.absolute


# --------------------------------------------------------------------------- #
# the parts of the model
# --------------------------------------------------------------------------- #
@dataclass
class Network:
    """The network shared by all trials, at its true scale (tensors).

    ``A``, ``B`` (N, R): column and row factors; ``D`` (n, N), ``d`` (n,): readout;
    ``M`` (R, m) or None: input map.
    """

    A: torch.Tensor
    B: torch.Tensor
    D: torch.Tensor
    d: torch.Tensor
    M: object = None


def _rows(t, trials):
    """``t``, or its rows ``trials`` (the trials of a mini-batch)."""
    return t if trials is None else t[trials]


def _register(module, name, value, trainable):
    """A tensor of ``module``: a parameter when trainable, else a buffer."""
    if value is None:
        setattr(module, name, None)
    elif trainable:
        module.register_parameter(name, torch.nn.Parameter(value))
    else:
        module.register_buffer(name, value)


class TrainableNetwork(torch.nn.Module):
    """The shared network in the scaled parametrisation the optimiser moves.

    Parameters
    ----------
    A, Bs, Ds, d : Tensor
        Raw parameters (see the module's docstring); ``Ds`` is (N, n) with
        ``orthonormal_readout``, whose readout is its orthonormalised transpose.
    M : Tensor or None
        Input map.
    orthonormal_readout : bool
    readout_gain : float
        Fixed factor of the readout (see the estimators' ``_readout_gain``).
    """

    def __init__(self, A, Bs, Ds, d, M=None, *, orthonormal_readout=False,
                 readout_gain=1.0):
        super().__init__()
        for name, value in [("A", A), ("Bs", Bs), ("Ds", Ds), ("d", d), ("M", M)]:
            _register(self, name, value, True)
        self.orthonormal_readout = orthonormal_readout
        self.readout_gain = readout_gain

    def network(self):
        """The :class:`Network` these raw parameters stand for (differentiable)."""
        N = self.A.shape[0]
        D = readout_matrix(self.Ds, N, self.orthonormal_readout)
        d = self.d
        if self.readout_gain != 1.0:
            D, d = self.readout_gain * D, self.readout_gain * d
        return Network(self.A, self.Bs * math.sqrt(N), D, d, self.M)

    def set_readout(self, D, d):
        """Set the raw readout parameters so that the readout is ``D, d`` (n, N), (n,).

        Not with ``orthonormal_readout`` (its readout is constrained).
        """
        if self.orthonormal_readout:
            raise ValueError("an orthonormal readout cannot be set to any matrix")
        N = self.A.shape[0]
        with torch.no_grad():
            self.Ds.copy_(D * (math.sqrt(N) / self.readout_gain))
            self.d.copy_(d / self.readout_gain)

    def export(self):
        """The network at its true scale as float64 numpy arrays (A, B, D, d, M)."""
        N = self.A.shape[0]
        D = _np64(readout_matrix(self.Ds, N, self.orthonormal_readout))
        return {"A": _np64(self.A), "B": _np64(self.Bs) * math.sqrt(N),
                "D": self.readout_gain * D, "d": self.readout_gain * _np64(self.d),
                "M": _np64(self.M)}


class FrozenNetwork(torch.nn.Module):
    """The shared network fixed at fitted values (buffers, never trained)."""

    def __init__(self, A, B, D, d, M=None):
        super().__init__()
        for name, value in [("A", A), ("B", B), ("D", D), ("d", d), ("M", M)]:
            _register(self, name, value, False)

    def network(self):
        """The fixed :class:`Network`."""
        return Network(self.A, self.B, self.D, self.d, self.M)

    def export(self):
        """The network as float64 numpy arrays (A, B, D, d, M)."""
        return {k: _np64(getattr(self, k)) for k in ("A", "B", "D", "d", "M")}


class InitialStates(torch.nn.Module):
    """Latent initial states of a batch of trials.

    Parameters
    ----------
    Z : Tensor of shape (n_states, R)
        One state per trial (``index=None``) or per condition.
    index : Tensor of int of shape (K,) or None
        The state of each trial of the batch.
    trainable : bool
    """

    def __init__(self, Z, index=None, *, trainable=True):
        super().__init__()
        _register(self, "Z", Z, trainable)
        self.index = index

    def forward(self, trials=None):
        """(K, R) initial states of the batch (of its trials ``trials``)."""
        if self.index is None:
            return _rows(self.Z, trials)
        return self.Z[_rows(self.index, trials)]


class SharedFactors(torch.nn.Module):
    """One trial-factor vector ``mu`` for every trial: fixed connectivity."""

    def __init__(self, mu, n_trials):
        super().__init__()
        _register(self, "mu", mu, True)
        self.n_trials = n_trials

    def forward(self, trials=None):
        """(K, R) trial factors (of the trials ``trials`` only)."""
        return self.mu.expand(self.n_trials if trials is None else len(trials), -1)

    def export(self):
        """(K, R) trial factors in float64, from their float32 parameters."""
        return np.broadcast_to(_np64(self.mu), (self.n_trials, self.mu.shape[0])).copy()


class BasisFactors(SharedFactors):
    """Trial factors ``C = mu + Phi Wc`` on a fixed basis ``Phi`` over trials.

    With the basis of :class:`sklearn_ltr._priors.TrialGP` and ``Wc ~ N(0, I)``, the
    factors are draws of a Gaussian process over the trial number.
    """

    def __init__(self, mu, Wc, basis):
        super().__init__(mu, basis.shape[0])
        _register(self, "Wc", Wc, True)
        self.register_buffer("basis", basis)

    def forward(self, trials=None):
        """(K, R) trial factors (of the trials ``trials`` only).

        The rows of a mini-batch depend on all the coefficients ``Wc``, whose prior
        (:meth:`prior`) is over the whole session.
        """
        return super().forward(trials) + _rows(self.basis, trials) @ self.Wc

    def export(self):
        """(K, R) trial factors in float64, from their float32 parameters."""
        return super().export() + _np64(self.basis) @ _np64(self.Wc)

    def prior(self):
        """Negative log prior of the coefficients, ``|Wc|^2 / 2`` (``Wc ~ N(0, I)``)."""
        return 0.5 * (self.Wc ** 2).sum()


class OffsetDrift(torch.nn.Module):
    """Readout offsets that drift smoothly over trials, per neuron: ``basis @ E``.

    A nuisance term, not connectivity: slow changes of each recorded neuron's
    baseline over the session (electrode drift, changes of arousal) that both
    networks absorb alike, so that comparing them isolates changes of dynamics.
    ``E ~ N(0, I)`` under the prior, as the coefficients of :class:`BasisFactors`.
    """

    def __init__(self, E, basis):
        super().__init__()
        _register(self, "E", E, True)
        self.register_buffer("basis", basis)

    def forward(self, trials=None):
        """(K, n) offsets of the batch (of its trials ``trials``)."""
        return _rows(self.basis, trials) @ self.E

    def prior(self):
        """Negative log prior of the coefficients, ``|E|^2 / 2``."""
        return 0.5 * (self.E ** 2).sum()

    def export(self):
        """(K, n) offsets in float64."""
        return _np64(self.basis) @ _np64(self.E)


class GivenOffsets(torch.nn.Module):
    """Readout offsets per trial fixed at given values (K, n)."""

    def __init__(self, offsets):
        super().__init__()
        self.register_buffer("offsets", offsets)

    def forward(self, trials=None):
        """(K, n) offsets (of the trials ``trials``)."""
        return _rows(self.offsets, trials)


class FreeFactors(torch.nn.Module):
    """Trial factors free on every trial, with a weak pull toward a centre.

    The pull keeps trials with few observed entries well posed; on well-observed
    trials it is negligible beside the data term.
    """

    pull = 1e-3

    def __init__(self, c, center):
        super().__init__()
        _register(self, "c", c, True)
        self.register_buffer("center", center)

    def forward(self, trials=None):
        """(K, R) trial factors (of the trials ``trials``)."""
        return _rows(self.c, trials)

    def penalty(self):
        """(K,) the pull toward the centre, per trial."""
        return self.pull * ((self.c - self.center) ** 2).mean(1)

    def export(self):
        """(K, R) trial factors in float64."""
        return _np64(self.c)


class GivenFactors(torch.nn.Module):
    """Trial factors fixed at given values."""

    def __init__(self, C):
        super().__init__()
        self.register_buffer("C", C)

    def forward(self, trials=None):
        """(K, R) trial factors (of the trials ``trials``)."""
        return _rows(self.C, trials)

    def export(self):
        """(K, R) trial factors in float64."""
        return _np64(self.C)


class LatentRNN(torch.nn.Module):
    """The low-rank RNN over a batch of trials, simulated in its latent space.

    Parameters
    ----------
    network : TrainableNetwork or FrozenNetwork
    states : InitialStates
    factors : module whose call returns the (K, R) trial factors
        May define ``penalty()``, a (K,) term added to the loss of each trial.
    alpha : float
        Euler step ``1 / tau``.
    loss : {'mse', 'poisson'}
    activity_penalty : float
        Weight of the mean squared unit state (:func:`activity_loss`).
    drift : OffsetDrift, GivenOffsets or None
        Readout offsets per trial, added to the network's (a nuisance term).

    Notes
    -----
    Parts that define ``prior()`` (the negative log prior of their coefficients)
    add it to the mean loss as a maximum a posteriori fit would, with the noise
    variance of the squared error estimated by the current loss itself:
    ``mse + 2 mse prior / n_obs`` (``nll + prior / n_obs`` for Poisson counts).

    The loss of a mini-batch of trials (``loss(data, trials=...)``) is an unbiased
    estimate of this objective: the data and activity terms are those of the
    batch, scaled so that their expectation over random batches is the mean over
    all trials (:meth:`Data.subset`), while the priors, which are over the whole
    session, enter whole (divided by the whole data's ``n_obs``). Per-trial
    parameters of trials outside the batch (their initial states) then get no
    gradient from the data; the trial factors of a batch depend on coefficients
    shared by the session (:class:`BasisFactors`).
    """

    def __init__(self, network, states, factors, *, alpha, loss="mse",
                 activity_penalty=0.0, drift=None):
        super().__init__()
        self.network = network
        self.states = states
        self.factors = factors
        self.drift = drift
        self.alpha = alpha
        self.loss_name = loss
        self.activity_penalty = activity_penalty

    def _offset(self, net, trials=None):
        """The readout offset: the network's (n,), or per trial (K, n) with drift."""
        return net.d if self.drift is None else net.d + self.drift(trials)

    def simulate(self, inputs, n_timepoints):
        """Latent trajectories (T, K, R) and readout (T, K, n) of the batch.

        The readout is the rate's pre-image (before the softplus) for Poisson models.
        """
        net = self.network.network()
        return evaluate(self.states(), self.factors(), net.A, net.B, net.D,
                        self._offset(net), net.M, inputs, alpha=self.alpha,
                        n_timepoints=n_timepoints)

    def _prior(self):
        """Sum of the negative log priors of the parts that have one (or None)."""
        terms = [part.prior() for part in (self.factors, self.drift)
                 if hasattr(part, "prior")]
        return sum(terms) if terms else None

    def loss(self, data, *, per_trial=False, forcing=None, trials=None,
             project=None):
        """The objective: data loss plus the activity and trial-factor penalties.

        Parameters
        ----------
        data : Data
        per_trial : bool, default=False
            Return the (K,) loss of each trial (for per-trial inference) instead of
            the mean over all observed entries.
        forcing : (float, Tensor) or None
            Teacher forcing ``(gamma, targets)`` (see :func:`_force`); mean loss only.
        trials : Tensor of int of shape (B,) or None
            A mini-batch: the unbiased estimate of the mean loss from these trials
            alone (see the class's Notes); ``targets`` of ``forcing`` are those of
            all trials. Mean loss only.
        project : float, ReadoutRidge or None
            First set the readout to its least-squares optimum given everything
            else, with this ridge (see :meth:`fit_readout`), solved from the same
            simulation as the loss. The squared error of fully observed data, mean
            loss only, without ``forcing`` or ``trials``.

        Returns
        -------
        loss : scalar Tensor, or Tensor of shape (K,) with ``per_trial``.
            With held-out entries (``data.holdout``) and without ``per_trial``, a
            pair: the loss, and the mean data loss over the held-out entries (a
            float), which no penalty enters. With ``project``, a pair: the loss,
            and the penalty :meth:`fit_readout` returns (None if the readout was
            left as it was).
        """
        net = self.network.network()
        n_obs = data.n_obs  # of the whole data, which the priors are weighed against
        if trials is not None:
            data = data.subset(trials)
            if forcing is not None:
                forcing = (forcing[0], forcing[1].index_select(1, trials))
        Z0, C = self.states(trials), self.factors(trials)
        d = self._offset(net, trials)
        T = data.X.shape[0]
        held = penalty = None
        if project is not None:
            kappa, H = _latents(Z0, C, net.A, net.B, net.M, data.inputs, self.alpha, T)
            with torch.no_grad():
                penalty = self._set_readout(H.detach().clone(), data, project)
            net = self.network.network()  # with the readout just set
            value = readout_loss(H, net.D, self._offset(net), data, self.loss_name)
        elif per_trial:
            kappa, eta = evaluate(Z0, C, net.A, net.B, net.D, d, net.M,
                                  data.inputs, alpha=self.alpha, n_timepoints=T)
            value = data_loss_per_trial(eta, data, self.loss_name)
            if hasattr(self.factors, "penalty"):
                value = value + self.factors.penalty()
        elif data.holdout is not None:
            kappa, value, held = evaluate_loss_holdout(
                Z0, C, net.A, net.B, net.D, d, net.M, data, self.loss_name,
                alpha=self.alpha, n_timepoints=T, forcing=forcing)
        else:
            kappa, value = evaluate_loss(
                Z0, C, net.A, net.B, net.D, d, net.M, data, self.loss_name,
                alpha=self.alpha, n_timepoints=T, forcing=forcing)
        if not per_trial:
            prior = self._prior()
            if prior is not None:
                # MAP weight: the noise variance of the squared error estimated by
                # the loss itself (a likelihood already for Poisson counts).
                scale = 2.0 * value.detach() if self.loss_name == "mse" else 1.0
                value = value + scale * prior / max(n_obs, 1)
        if self.activity_penalty:
            value = value + self.activity_penalty * activity_loss(
                kappa, net.A, per_trial=per_trial)
        if project is not None:
            return value, penalty
        return value if held is None else (value, held)

    # The names, in :meth:`trainable`, of the tensors :meth:`fit_readout` sets.
    READOUT = ("network.Ds", "network.d")
    # The ridge of a fit's least-squares readout (a ReadoutRidge), set by the fit
    # that projects; None when the readout is stepped.
    readout_ridge = None

    @torch.no_grad()
    def fit_readout(self, data, ridge=READOUT_RIDGE):
        """Set the readout to its ridge least-squares optimum given everything else.

        For the squared error of fully observed data the readout ``D, d`` enters
        the loss linearly, and no penalty or prior involves it: given the unit
        rates of the current network, initial states and trial factors (and the
        drift of the offsets, whose current value is subtracted from the data),
        its optimum under a ridge penalty ``lam |D|^2 / n_obs`` is a linear
        regression (:func:`readout_least_squares`). Setting it before every
        evaluation of the loss, and adding the penalty's value to the loss, turns
        the fit into a minimisation over the other parameters alone (variable
        projection), whose gradient with respect to them is that of the loss at
        that optimum: exactly for a fixed ``lam``; the fit's follows the rates'
        variance (:class:`ReadoutRidge`), whose derivative it leaves out.

        Parameters
        ----------
        data : Data
            Fully observed.
        ridge : float or ReadoutRidge
            Relative to the rates' mean variance (a float), or the
            :class:`ReadoutRidge` of the fit.

        Returns
        -------
        penalty : float or None
            ``lam |D|^2 / n_obs`` of the readout set; None, and the readout left as
            it is, if the rates are not finite.
        """
        net = self.network.network()
        T = data.X.shape[0]
        _, H = _latents(self.states(), self.factors(), net.A, net.B, net.M,
                        data.inputs, self.alpha, T)
        return self._set_readout(H, data, ridge)

    def _set_readout(self, H, data, ridge):
        """:meth:`fit_readout` from the unit rates ``H`` (overwritten)."""
        Y = data.X.clone() if self.drift is None else data.X - self.drift()
        if not callable(ridge):
            ridge = ReadoutRidge(ridge)
        solution = readout_least_squares(H, Y, ridge)
        if solution is None:
            return None
        self.network.set_readout(*solution)
        return ridge.absolute * float(solution[0].double().square().sum()) / data.n_obs

    def trainable(self):
        """The tensors an optimiser moves (the parameters, not the buffers), by name."""
        return dict(self.named_parameters())

    def export(self):
        """Fitted state as float64 numpy arrays at the model's true scale.

        Trial factors and row factors trade scale (``W_k = A diag(c_k) B^T / N``):
        each trial factor is normalised to unit root-mean-square and a positive mean,
        its scale and sign moved into the row factor.

        Returns
        -------
        state : dict
            ``A``, ``B`` (N, R); ``D`` (n, N), ``d`` (n,); ``M`` (R, m) or None;
            ``Z`` (n_states, R); ``C`` (K, R) normalised trial factors; ``drift``
            (K, n) readout offsets per trial, or None.
        """
        with torch.no_grad():
            state = self.network.export()
            C = self.factors.export()
            state["Z"] = _np64(self.states.Z)
            state["drift"] = None if self.drift is None else self.drift.export()
        scale = np.sqrt(np.mean(C ** 2, axis=0))
        scale = np.where(scale > 0, scale, 1.0)
        sign = np.where(C.mean(0) < 0, -1.0, 1.0)
        state["C"] = C / (scale * sign)
        state["B"] = state["B"] * (scale * sign)
        return state


def _np64(t):
    """Tensor (or None) -> float64 numpy array on the CPU."""
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


# --------------------------------------------------------------------------- #
# initialisation
# --------------------------------------------------------------------------- #
def _inverse_softplus(x):
    return x + torch.log(-torch.expm1(-x))


def _centred_data(data, loss):
    """Data with missing entries filled by neuron means, and those means (float64).

    For the Poisson loss, on the scale of the link function: counts are shrunk toward
    the neuron mean first, so that zero counts do not map to -inf.
    """
    X = data.X.to(torch.float64)
    if data.mask is None:
        mean = X.mean(dim=(0, 1))
        Xf = X
    else:
        mf = data.mask.to(torch.float64)
        mean = (X * mf).sum((0, 1)) / mf.sum((0, 1)).clamp_min(1.0)
        Xf = torch.where(data.mask, X, mean)
    if loss == "poisson":
        rate = (0.5 * Xf + 0.5 * mean).clamp_min(0.05)
        Xf = _inverse_softplus(rate)
        mean = Xf.mean(dim=(0, 1))
    return Xf - mean, mean


def _initial_latents(Xc, rank, init, generator):
    """Latent trajectories (T, K, R) to regress the parameters on.

    ``init='pca'``: the top ``rank`` principal component scores of the unfolded data
    (computed through the small n x n covariance), rescaled to unit variance;
    otherwise (or when the data have too few dimensions) random trajectories.
    """
    T, K, n = Xc.shape
    if init == "pca" and rank <= min(n, T * K):
        flat = Xc.reshape(T * K, n)
        cov = flat.t() @ flat / (T * K)
        _, evecs = torch.linalg.eigh(cov)
        scores = flat @ evecs[:, -rank:].flip(1)
        scale = scores.std(0).clamp_min(1e-8)
        return (scores / scale).reshape(T, K, rank)
    return 0.5 * torch.randn(T, K, rank, generator=generator,
                             dtype=torch.float64).to(Xc.device)


def _rate_regressions(kappa, A, Xc, inputs, alpha, ridge):
    """Row factors, input map and readout by ridge regression on the unit rates.

    Given latent trajectories, the model is linear in the row factors (and the input
    map), which map the unit rates ``tanh(A kappa(t))`` (and the inputs) to the
    one-step latent increments, and in the readout, which maps the rates to the
    data. Only Gram matrices of the rates are needed, summed one time step at a time:
    the (T, K, N) rates are never formed.

    Returns
    -------
    Bs : (N, R), M : (R, m) or None, D : (n, N)
    """
    T, K, R = kappa.shape
    N, dt, device = A.shape[0], torch.float64, A.device
    m_in = 0 if inputs is None else inputs.shape[-1]
    gram = torch.zeros(N, N, dtype=dt, device=device)  # sum_t H(t)^T H(t)
    HX = torch.zeros(N, Xc.shape[2], dtype=dt, device=device)  # sum_t H(t)^T Xc(t)
    # Features of the one-step regression: [H(t), u(t)], t < T - 1. Their Gram
    # matrix's H-block is ``gram`` before the last step is added.
    FF = torch.zeros(N + m_in, N + m_in, dtype=dt, device=device)
    FY = torch.zeros(N + m_in, R, dtype=dt, device=device)
    for t in range(T):
        H = torch.tanh(kappa[t] @ A.t())  # (K, N)
        if t == T - 1:
            FF[:N, :N] = gram
        else:
            # kappa(t+1) - decay kappa(t) = gain B^T h(t) + v(t)
            target = kappa[t + 1] - (1 - alpha) * kappa[t]
            FY[:N].addmm_(H.t(), target)
            if m_in:
                u = inputs[t].to(dt)
                FF[:N, N:].addmm_(H.t(), u)
                FF[N:, N:].addmm_(u.t(), u)
                FY[N:].addmm_(u.t(), target)
        gram.addmm_(H.t(), H)
        HX.addmm_(H.t(), Xc[t])
    if m_in:
        FF[N:, :N] = FF[:N, N:].t()
    # The ridges are added to the diagonals in place: an (N, N) identity and sum
    # would raise the peak memory of the initialisation by half (see
    # rnn._fit_memory, which counts three (N, N) float64 matrices).
    if T > 1:
        FF.diagonal().add_(ridge * torch.trace(FF) / FF.shape[0] + 1e-8)
        coef = torch.linalg.solve(FF, FY)
        del FF
        # gain = alpha / sqrt(N) (trial factors start at 1): B^T h * gain = coef^T h
        Bs = coef[:N] * math.sqrt(N) / alpha
        M = coef[N:].t() / alpha if m_in else None
    else:
        Bs = torch.zeros(N, R, dtype=dt, device=device)
        M = torch.zeros(R, m_in, dtype=dt, device=device) if m_in else None
    gram.diagonal().add_(ridge * torch.trace(gram) / N + 1e-8)
    D = torch.linalg.solve(gram, HX).t()
    return Bs, M, D


def _first_states(kappa0, state_index, n_states):
    """Initial states: the first latent state, averaged within a condition."""
    if state_index is None:
        return kappa0.clone()
    Z = torch.zeros(n_states, kappa0.shape[1], dtype=kappa0.dtype,
                    device=kappa0.device)
    Z.index_add_(0, state_index, kappa0)
    counts = torch.bincount(state_index, minlength=n_states).clamp_min(1)
    return Z / counts[:, None].to(kappa0.dtype)


def initial_state_guess(data, network):
    """Least-squares latent state of the first time point of each trial.

    Linearises the readout around zero (``tanh(A z) ~ A z``) and solves the ridge
    problem over each trial's observed neurons at t = 0: a starting point for the
    inference of the initial states of new trials.

    Returns
    -------
    Z0 : Tensor of shape (K, R)
    """
    L = network.D @ network.A  # (n, R)
    x0 = data.X[0] - network.d  # (K, n)
    m = torch.ones_like(x0) if data.mask is None else data.mask[0].to(x0.dtype)
    x0 = x0 * m
    G = torch.einsum("kn,nr,ns->krs", m, L, L)
    lam = 1e-2 * torch.diagonal(L.t() @ L).mean() + 1e-6
    G = G + lam * torch.eye(L.shape[1], dtype=L.dtype, device=L.device)
    rhs = x0 @ L
    return torch.linalg.solve(G, rhs.unsqueeze(-1)).squeeze(-1)


def initialize(data, *, rank, n_units, alpha, n_states, state_index, loss,
               orthonormal_readout, init, generator, ridge=1e-2):
    """Data-driven initial parameters (random ones with ``init='random'``), float64.

    ``init='pca'``: the latent trajectories are set to the top ``rank`` principal
    component scores of X (rescaled to unit variance). Given those trajectories the
    readout ``Ds`` and the row factors ``Bs`` (and the input map ``M``) enter the
    model linearly, so they are set by ridge regression: the readout maps the unit
    rates ``tanh(A kappa)`` to X, the recurrence maps them to the one-step latent
    increments. Only the directions of the column factors ``A`` are random (from
    ``generator``), which is what distinguishes the ``n_init`` restarts.

    Returns
    -------
    params : dict of str -> Tensor
        ``A``, ``Bs``, ``Ds``, ``d``, ``Z`` and ``M`` (None without inputs), raw
        parameters of :class:`TrainableNetwork` and :class:`InitialStates`, with
        trial factors equal to one.
    latents : Tensor of shape (T, K, R)
        The latent trajectories the parameters were regressed on (the standardised
        principal component scores with ``init='pca'``), the targets of a
        teacher-forced warm start.
    """
    R, N = rank, n_units
    Xc, mean = _centred_data(data, loss)
    # Random orthonormal directions for A, scaled so that a unit-variance latent state
    # drives units with pre-activations of standard deviation ~0.8 (tanh's mildly
    # nonlinear range) whatever the rank.
    G = torch.randn(N, R, generator=generator, dtype=torch.float64).to(data.X.device)
    Q, _ = torch.linalg.qr(G)
    A = Q * math.sqrt(N * 0.64 / R)
    kappa = _initial_latents(Xc, R, init, generator)
    Bs, M, D = _rate_regressions(kappa, A, Xc, data.inputs, alpha, ridge)
    # The raw readout: its orthonormalised transpose, or D scaled (module docstring).
    Ds = D.t() if orthonormal_readout else D * math.sqrt(N)
    Z = _first_states(kappa[0], state_index, n_states)
    params = {"A": A, "Bs": Bs, "Ds": Ds, "d": mean.clone(), "Z": Z, "M": M}
    return params, kappa
