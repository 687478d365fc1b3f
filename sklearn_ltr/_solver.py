"""Training loop and per-trial inference for the low-tensor-rank RNN.

Functional layer between the math (:mod:`sklearn_ltr._dynamics`) and the estimators
(:mod:`sklearn_ltr.rnn`): tensors in, tensors out, no scikit-learn. Everything a fit
needs is passed explicitly, so these functions can be tested on their own.

Parametrisation. The optimiser sees parameters of order one whatever ``n_units``
is (a mean-field scaling, which keeps one learning rate good for every size)::

    A  (N, R)   column factors, used as is
    Bs (N, R)   row factors,   B = sqrt(N) * Bs
    Ds (n, N)   readout,       D = Ds / sqrt(N)   (or orthonormal rows, see below)
    d  (n,)     readout offset
    Z  (S, R)   latent initial states (S = n_trials, or n_conditions)
    mu (R,)     mean trial factor
    Wc (P, R)   trial-factor coefficients on a smooth basis Phi (K, P):  C = mu + Phi Wc
    M  (R, m)   input map in latent coordinates, B_in = A M
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ._dynamics import (
    latent_squared_error, readout, readout_squared_error, simulate_latents,
)

__all__ = [
    "Data",
    "trial_basis",
    "initialize",
    "evaluate",
    "evaluate_loss",
    "readout_loss",
    "optimize",
    "FitResult",
]


class FitDiverged(RuntimeError):
    """Raised when the loss stays non-finite after all learning-rate back-offs."""


@dataclass
class Data:
    """Observed data in time-major layout.

    X : (T, K, n) with missing entries set to 0; mask : (T, K, n) bool or None (None
    means fully observed); inputs : (T, K, m) or None; n_obs : number of observed
    entries.
    """

    X: torch.Tensor
    mask: object
    inputs: object
    n_obs: int

    @classmethod
    def from_numpy(cls, X, inputs, device, dtype=torch.float32):
        """Build from arrays of shape (K, T, n) and (K, T, m) (NaN = missing)."""
        # A copy (never a view of the caller's array, which may be read-only).
        Xt = torch.tensor(np.swapaxes(X, 0, 1), dtype=dtype).contiguous()
        mask = ~torch.isnan(Xt)
        n_obs = int(mask.sum())
        if n_obs == Xt.numel():
            mask = None
        else:
            Xt = torch.where(mask, Xt, torch.zeros((), dtype=dtype))
            mask = mask.to(device)
        U = None
        if inputs is not None:
            U = torch.tensor(np.swapaxes(inputs, 0, 1), dtype=dtype).contiguous()
            U = U.to(device)
        return cls(Xt.to(device), mask, U, n_obs)

    @property
    def shape(self):
        return tuple(self.X.shape)


def trial_basis(n_trials, length_scale, dtype=torch.float64):
    """Smooth basis over trial order: a truncated Gaussian-process prior.

    Eigenvectors of the squared-exponential kernel ``exp(-(i - j)^2 / (2 l^2))`` over
    trial indices, scaled by the square root of their eigenvalue relative to the
    largest (a Karhunen-Loeve expansion). Trial factors ``C = mu + Phi Wc`` with
    coefficients of order one are then draws from (a truncation of) that Gaussian
    process; components with eigenvalue below 1e-4 of the largest, i.e. variation
    faster than the length scale, are dropped. ``length_scale=None`` gives the identity:
    independent trial factors.

    Returns
    -------
    Phi : Tensor of shape (n_trials, n_basis)
    """
    if length_scale is None:
        return torch.eye(n_trials, dtype=dtype)
    idx = torch.arange(n_trials, dtype=torch.float64)
    Kmat = torch.exp(-0.5 * ((idx[:, None] - idx[None, :]) / length_scale) ** 2)
    evals, evecs = torch.linalg.eigh(Kmat)
    evals = evals.flip(0).clamp_min(0.0)
    evecs = evecs.flip(1)
    keep = evals >= 1e-4 * evals[0]
    # Deterministic sign: first nonzero entry of each eigenvector positive.
    signs = torch.sign(evecs[0, keep])
    signs[signs == 0] = 1.0
    Phi = evecs[:, keep] * signs * torch.sqrt(evals[keep] / evals[0])
    return Phi.to(dtype)


def _inverse_softplus(x):
    return x + torch.log(-torch.expm1(-x))


def initialize(
    data, *, rank, n_units, alpha, n_states, state_index, n_basis, loss,
    orthonormal_readout, init, generator, ridge=1e-2, return_latents=False,
):
    """Data-driven initial parameters (or random ones when ``init='random'``).

    ``init='pca'``: the latent trajectories are set to the top ``rank`` principal
    component scores of X (rescaled to unit variance). Given those trajectories the
    readout ``Ds`` and the row factors ``Bs`` (and the input map ``M``) enter the
    model linearly, so they are set by ridge regression: the readout maps the unit
    rates ``tanh(A kappa)`` to X, the recurrence maps them to the one-step latent
    increments. Only the directions of the column factors ``A`` are random (from
    ``generator``), which is what distinguishes the ``n_init`` restarts.

    Returns
    -------
    params : dict of str -> Tensor (float64, on the data's device)
    latents : Tensor of shape (T, K, R), float64
        Only with ``return_latents=True``: the latent trajectories the parameters
        were regressed on (the standardised principal component scores with
        ``init='pca'``), the targets of a teacher-forced warm start.
    """
    T, K, n = data.shape
    device = data.X.device
    dt = torch.float64
    R, N = rank, n_units
    X = data.X.to(dt)
    mask = None if data.mask is None else data.mask
    # Per-neuron means over observed entries; missing entries are filled with them.
    if mask is None:
        mean = X.mean(dim=(0, 1))
        Xf = X
    else:
        mf = mask.to(dt)
        mean = (X * mf).sum((0, 1)) / mf.sum((0, 1)).clamp_min(1.0)
        Xf = torch.where(mask, X, mean)
    if loss == "poisson":
        # Work on the scale of the link function: shrink counts toward the neuron mean
        # so that zero counts do not map to -inf.
        rate = (0.5 * Xf + 0.5 * mean).clamp_min(0.05)
        Xf = _inverse_softplus(rate)
        mean = Xf.mean(dim=(0, 1))

    # Random orthonormal directions for A, scaled so that a unit-variance latent state
    # drives units with pre-activations of standard deviation ~0.8 (tanh's mildly
    # nonlinear range) whatever the rank.
    G = torch.randn(N, R, generator=generator, dtype=dt).to(device)
    Q, _ = torch.linalg.qr(G)
    A = Q * math.sqrt(N * 0.64 / R)

    Xc = (Xf - mean).reshape(T * K, n)
    if init == "pca" and R <= min(n, T * K):
        # Principal components of the unfolded data, via the small n x n covariance.
        cov = Xc.t() @ Xc / (T * K)
        evals, evecs = torch.linalg.eigh(cov)
        U = evecs[:, -R:].flip(1)
        scores = Xc @ U
        scale = scores.std(0).clamp_min(1e-8)
        kappa = (scores / scale).reshape(T, K, R)
    else:
        kappa = 0.5 * torch.randn(T, K, R, generator=generator, dtype=dt).to(device)
    # The regressions need only Gram matrices of the unit rates tanh(A kappa), summed
    # one time step at a time: the (T, K, N) rates are never formed.
    has_in = data.inputs is not None
    m_in = data.inputs.shape[-1] if has_in else 0
    Xc = Xc.reshape(T, K, n)
    gram = torch.zeros(N, N, dtype=dt, device=device)  # sum_t H(t)^T H(t)
    HX = torch.zeros(N, n, dtype=dt, device=device)  # sum_t H(t)^T Xc(t)
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
            if has_in:
                u = data.inputs[t].to(dt)
                FF[:N, N:].addmm_(H.t(), u)
                FF[N:, N:].addmm_(u.t(), u)
                FY[N:].addmm_(u.t(), target)
        gram.addmm_(H.t(), H)
        HX.addmm_(H.t(), Xc[t])
    if has_in:
        FF[N:, :N] = FF[:N, N:].t()
    # One-step latent increments regressed on the rates (and inputs).
    if T > 1:
        lam_f = ridge * torch.trace(FF) / FF.shape[0] + 1e-8
        coef = torch.linalg.solve(
            FF + lam_f * torch.eye(FF.shape[0], dtype=dt, device=device), FY)
        # gain = alpha / sqrt(N) (trial factors start at 1): B^T h * gain = coef^T h
        Bs = coef[:N] * math.sqrt(N) / alpha
        M = coef[N:].t() / alpha if has_in else None
    else:
        Bs = torch.zeros(N, R, dtype=dt, device=device)
        M = None if not has_in else torch.zeros(R, m_in, dtype=dt, device=device)

    # Initial states: the first latent state, averaged within a condition.
    k0 = kappa[0]
    if state_index is None:
        Z = k0.clone()
    else:
        Z = torch.zeros(n_states, R, dtype=dt, device=device)
        Z.index_add_(0, state_index, k0)
        counts = torch.bincount(state_index, minlength=n_states).clamp_min(1)
        Z = Z / counts[:, None].to(dt)

    # Readout by ridge regression of X on the unit rates.
    lam = ridge * torch.trace(gram) / N + 1e-8
    D = torch.linalg.solve(gram + lam * torch.eye(N, dtype=dt, device=device), HX).t()
    if orthonormal_readout:
        Ds = D.t()  # raw parameter; the readout is its orthonormalised transpose
    else:
        Ds = D * math.sqrt(N)

    params = {
        "A": A, "Bs": Bs, "Ds": Ds, "d": mean.clone(), "Z": Z,
        "mu": torch.ones(R, dtype=dt, device=device),
    }
    if n_basis:
        params["Wc"] = torch.zeros(n_basis, R, dtype=dt, device=device)
    if M is not None:
        params["M"] = M
    if return_latents:
        return params, kappa
    return params


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
    # Fused: the (T, K, N) unit rates are never stored (LatentSquaredError).
    gain, drive = _gain_drive(C, A, M, data.inputs, alpha)
    Z0, gain, drive, decay = _force(Z0, gain, drive, 1.0 - alpha, forcing)
    value, kappa = latent_squared_error(
        Z0, A, B, gain, drive, D, d, data.X, data.mask, decay, n_timepoints,
        max(data.n_obs, 1))
    return kappa, value


def readout_loss(H, D, d, data, loss):
    """``data_loss(readout(H, D, d), data, loss)``, fused for the squared error.

    For ``loss='mse'`` the readout, the residual, the loss and its gradients share one
    buffer (:class:`sklearn_ltr._dynamics.ReadoutSquaredError`); the Poisson loss goes
    through autograd.
    """
    if loss == "poisson":
        return data_loss(readout(H, D, d), data, loss)
    return readout_squared_error(H, D, d, data.X, data.mask, max(data.n_obs, 1))


def _entry_loss(eta, data, loss):
    if loss == "poisson":
        rate = F.softplus(eta)
        err = rate - data.X * torch.log(rate + 1e-8)
    else:
        err = (eta - data.X) ** 2
    if data.mask is not None:
        err = err * data.mask
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


@dataclass
class FitResult:
    params: dict
    loss: float
    loss_curve: list
    n_iter: int
    converged: bool
    interrupted: bool
    n_evals: int = 0  # evaluations of the loss and its gradient
    n_forced: int = 0  # teacher-forced iterations at the start (first of loss_curve)


def optimize(
    loss_fn, params, *, solver="adam", learning_rate=0.01, max_iter=1000, tol=1e-4,
    n_iter_no_change=20, progress=None, callback=None, max_backoffs=6,
    n_decays=None, decay_factor=0.2, warmup=10, history_size=100, lbfgs_iter=0,
    forcing=0.0, forcing_iter=0, forcing_lr=0.02,
):
    """Minimise ``loss_fn(params)`` over the tensors in ``params`` (modified in place).

    ``solver='adam'``: Adam with a short linear warm-up of the learning rate
    (``warmup`` iterations) and a plateau schedule: once the loss has not improved on
    its best value by more than ``tol`` (relative) for ``n_iter_no_change``
    iterations, the parameters return to the best iterate and the learning rate is
    multiplied by ``decay_factor``; after ``n_decays`` (default 2) such decays the
    next plateau ends the fit (``converged=True``).

    ``solver='lbfgs'``: one L-BFGS iteration (strong-Wolfe line search, the last
    ``history_size`` steps) per iteration; ``learning_rate`` is the line search's
    initial step. The line search already adapts the step, so by default
    (``n_decays=0``) the first plateau ends the fit. Each iteration starts where the
    previous line search ended, which is almost always the point it evaluated
    last: that evaluation is reused, so an iteration costs about one evaluation of
    the loss and its gradient, not two.

    ``solver='adam'`` with ``lbfgs_iter > 0``: the first ``lbfgs_iter`` iterations
    (or fewer, if they reach a plateau) are L-BFGS iterations with initial step 1,
    then Adam continues from the best point with its warm-up and plateau schedule.

    Teacher-forced warm start (``forcing > 0`` and ``forcing_iter > 0``): the first
    ``forcing_iter`` iterations (at most ``max_iter - 1``) are Adam steps at
    ``forcing_lr`` (with the warm-up) on ``loss_fn(params, gamma)``, where ``gamma``
    falls linearly from ``forcing`` toward 0 (``forcing * (1 - i / forcing_iter)``
    at iteration ``i``); ``loss_fn`` must then accept that second argument, the
    weight with which the model's states are pulled toward target states. These
    losses are of an easier problem and are not compared with the others: the
    solver (and ``lbfgs_iter``) then starts on ``loss_fn(params)`` from where the
    warm start ended. They are counted in ``n_iter`` and ``loss_curve``.

    The parameters with the lowest loss ever evaluated (without forcing) are kept
    and returned, not the last iterate.

    A non-finite loss is detected at once: the parameters are restored to the best
    iterate, the learning rate is halved and the optimiser restarted, at most
    ``max_backoffs`` times before :class:`FitDiverged` is raised. A KeyboardInterrupt
    stops the loop and returns the best parameters so far with ``interrupted=True``.
    ``callback(n_iter, loss)`` is called after every iteration.
    """
    if n_decays is None:
        n_decays = 0 if solver == "lbfgs" else 2
    tensors = list(params.values())
    for p in tensors:
        p.requires_grad_(True)

    phase = {"solver": "lbfgs" if lbfgs_iter > 0 else solver, "start": 0}

    def make_optimizer(lr):
        if phase["solver"] == "lbfgs":
            # One quasi-Newton step per iteration; max_eval must be given: its
            # default (max_iter * 5 / 4 = 1) leaves the line search no evaluation,
            # so the step is 0 and the fit never moves.
            return torch.optim.LBFGS(
                tensors, lr=lr, max_iter=1, max_eval=25, history_size=history_size,
                line_search_fn="strong_wolfe")
        return torch.optim.Adam(tensors, lr=lr)

    state = {"best": math.inf, "snapshot": [p.detach().clone() for p in tensors],
             "n_evals": 0}

    def closure():
        last = state.get("last")
        if last is not None and all(
                torch.equal(p, q) for p, q in zip(tensors, last[0])):
            # L-BFGS evaluates the loss where its previous line search ended, which
            # is nearly always the point evaluated last: reuse that evaluation.
            for p, g in zip(tensors, last[1]):
                p.grad = None if g is None else g.clone()
            state.setdefault("first", float(last[2]))
            return last[2]
        opt.zero_grad(set_to_none=True)
        value = loss_fn(params)
        v = float(value.detach())
        state["n_evals"] += 1
        if math.isfinite(v):
            value.backward()
            for p in tensors:
                # L-BFGS flattens gradients with view(); transposed ones break it.
                if p.grad is not None and not p.grad.is_contiguous():
                    p.grad = p.grad.contiguous()
            point = None  # a copy of the evaluated point, made once; read-only
            if phase["solver"] == "lbfgs":
                point = [p.detach().clone() for p in tensors]
                state["last"] = (point, [None if p.grad is None else p.grad.clone()
                                         for p in tensors], value.detach())
            if v < state["best"]:
                # Snapshot the point at which the loss was evaluated (before the
                # optimiser moves away from it).
                state["best"] = v
                state["snapshot"] = (point if point is not None
                                     else [p.detach().clone() for p in tensors])
        state.setdefault("first", v)
        return value

    lr = 1.0 if phase["solver"] != solver else learning_rate
    opt = make_optimizer(lr)
    decays = 0
    curve = []
    best_iter_value = math.inf
    since_best = 0
    backoffs = 0
    converged = False
    interrupted = False
    n_iter = 0
    def restart_from_best(new_lr):
        state.pop("last", None)
        with torch.no_grad():
            for p, s in zip(tensors, state["snapshot"]):
                p.copy_(s)
        return make_optimizer(new_lr)

    n_forced = min(forcing_iter, max_iter - 1) if forcing > 0 else 0
    try:
        if n_forced > 0:
            n_iter, backoffs = _forced_warm_start(
                loss_fn, params, tensors, curve, forcing=forcing, n_forced=n_forced,
                learning_rate=forcing_lr, warmup=warmup, max_backoffs=max_backoffs,
                progress=progress, callback=callback, state=state)
            phase["start"] = n_iter
        while n_iter < max_iter:
            state.pop("first", None)
            if phase["solver"] == "adam" and n_iter - phase["start"] < warmup:
                for group in opt.param_groups:
                    group["lr"] = lr * (n_iter - phase["start"] + 1) / warmup
            opt.step(closure)
            value = state["first"]
            if not math.isfinite(value):
                backoffs += 1
                if backoffs > max_backoffs:
                    raise FitDiverged(
                        f"the loss became non-finite and stayed so after {max_backoffs} "
                        f"halvings of the learning rate (last tried {lr:.3g})")
                lr *= 0.5
                opt = restart_from_best(lr)
                continue
            n_iter += 1
            curve.append(value)
            if best_iter_value == math.inf or (
                    value < best_iter_value - tol * abs(best_iter_value)):
                best_iter_value = value
                since_best = 0
            else:
                since_best += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{value:.5g}", refresh=False)
            if callback is not None:
                callback(n_iter, value)
            if phase["solver"] != solver and (
                    n_iter - n_forced >= lbfgs_iter
                    or since_best >= n_iter_no_change):
                # End of the L-BFGS start: Adam from the best point.
                phase.update(solver=solver, start=n_iter)
                lr = learning_rate
                opt = restart_from_best(lr)
                since_best = 0
            elif since_best >= n_iter_no_change:
                if decays >= n_decays:
                    converged = True
                    break
                decays += 1
                lr *= decay_factor
                opt = restart_from_best(lr)
                since_best = 0
    except KeyboardInterrupt:
        interrupted = True
        n_iter = len(curve)  # also counts the iterations of an interrupted warm start
    if not math.isfinite(state["best"]):
        # Interrupted in the warm start, before the unforced loss was evaluated:
        # keep where the warm start got to if its loss is finite.
        with torch.no_grad():
            v = float(loss_fn(params))
        state["n_evals"] += 1
        if math.isfinite(v):
            state["best"] = v
            state["snapshot"] = [p.detach().clone() for p in tensors]
    with torch.no_grad():
        for p, s in zip(tensors, state["snapshot"]):
            p.copy_(s)
    for p in tensors:
        p.requires_grad_(False)
    return FitResult(params, state["best"], curve, n_iter, converged, interrupted,
                     state["n_evals"], n_forced=min(n_forced, n_iter))


def _forced_warm_start(loss_fn, params, tensors, curve, *, forcing, n_forced,
                       learning_rate, warmup, max_backoffs, progress, callback, state):
    """The teacher-forced iterations of :func:`optimize`; returns ``(n_iter, backoffs)``.

    A non-finite loss restores the starting parameters and restarts the warm start
    with half the learning rate (``max_backoffs`` times at most, then
    :class:`FitDiverged`).
    """
    start = [p.detach().clone() for p in tensors]
    backoffs = 0
    lr = learning_rate
    opt = torch.optim.Adam(tensors, lr=lr)
    i = 0
    while i < n_forced:
        if i < warmup:
            for group in opt.param_groups:
                group["lr"] = lr * (i + 1) / warmup
        opt.zero_grad(set_to_none=True)
        gamma = forcing * (1.0 - i / n_forced)
        value = loss_fn(params, gamma)
        v = float(value.detach())
        state["n_evals"] += 1
        if not math.isfinite(v):
            backoffs += 1
            if backoffs > max_backoffs:
                raise FitDiverged(
                    f"the loss of the teacher-forced warm start became non-finite and "
                    f"stayed so after {max_backoffs} halvings of its learning rate "
                    f"(last tried {lr:.3g})")
            lr *= 0.5
            with torch.no_grad():
                for p, s in zip(tensors, start):
                    p.copy_(s)
            opt = torch.optim.Adam(tensors, lr=lr)
            del curve[:]
            i = 0
            continue
        value.backward()
        opt.step()
        i += 1
        curve.append(v)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{v:.5g}", forcing=f"{gamma:.2f}", refresh=False)
        if callback is not None:
            callback(i, v)
    opt.zero_grad(set_to_none=True)
    return n_forced, backoffs


def optimize_per_trial(loss_fn, params, *, learning_rate=0.05, max_iter=200, tol=1e-4,
                       n_iter_no_change=10, betas=(0.9, 0.999), eps=1e-8):
    """Minimise independent per-trial problems, each with its own Adam and stopping rule.

    ``loss_fn(params)`` returns a (K,) tensor: the loss of each trial, which must
    depend only on that trial's rows of the tensors in ``params`` (each of shape
    (K, ...)). Adam is element-wise, the gradient of the sum is the per-trial
    gradient, and a trial stops updating once its own loss has not improved by more
    than ``tol`` (relative) for ``n_iter_no_change`` iterations. So the result for a
    trial does not depend on which other trials are in the batch, or their order --
    a property a shared L-BFGS line search or a global stopping rule would break.
    Each trial ends at the parameters of its lowest loss.
    """
    names = list(params)
    tensors = [params[k] for k in names]
    K = tensors[0].shape[0]
    dev = tensors[0].device
    m = [torch.zeros_like(p) for p in tensors]
    v = [torch.zeros_like(p) for p in tensors]
    best = torch.full((K,), math.inf, device=dev, dtype=tensors[0].dtype)
    best_state = [p.detach().clone() for p in tensors]
    ref = torch.full((K,), math.inf, device=dev, dtype=tensors[0].dtype)
    since = torch.zeros(K, dtype=torch.long, device=dev)
    active = torch.ones(K, dtype=torch.bool, device=dev)
    b1, b2 = betas
    for it in range(max_iter):
        for p in tensors:
            p.requires_grad_(True)
        losses = loss_fn(params)
        grads = torch.autograd.grad(losses.sum(), tensors)
        with torch.no_grad():
            losses = losses.detach()
            finite = torch.isfinite(losses)
            improved = finite & (losses < best)
            for p, s in zip(tensors, best_state):
                sel = improved.view((K,) + (1,) * (p.dim() - 1))
                s.copy_(torch.where(sel, p, s))
            best = torch.where(improved, losses, best)
            # The first finite loss is progress (``inf - tol * inf`` is NaN, which
            # no loss is below).
            progress = finite & (torch.isinf(ref) | (losses < ref - tol * ref.abs()))
            ref = torch.where(progress, losses, ref)
            since = torch.where(progress, torch.zeros_like(since), since + 1)
            # A non-finite loss freezes the trial at its best parameters.
            active &= finite & (since < n_iter_no_change)
            if not bool(active.any()):
                break
            t = it + 1
            for p, g, mm, vv in zip(tensors, grads, m, v):
                sel = active.view((K,) + (1,) * (p.dim() - 1))
                g = torch.nan_to_num(g)
                mm.mul_(b1).add_(g, alpha=1 - b1)
                vv.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = (mm / (1 - b1 ** t)) / ((vv / (1 - b2 ** t)).sqrt() + eps)
                p.sub_(torch.where(sel, learning_rate * step, torch.zeros_like(step)))
    with torch.no_grad():
        for p, s in zip(tensors, best_state):
            p.copy_(s)
            p.requires_grad_(False)
    return params
