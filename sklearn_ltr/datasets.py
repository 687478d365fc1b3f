"""Synthetic data with known ground truth, and loaders.

Every generator returns a :class:`sklearn.utils.Bunch` and is deterministic given
``random_state`` (a local generator; no global seeding).
"""

import numpy as np
import torch
from sklearn.utils import Bunch, check_random_state

from ._dynamics import simulate_latents
from ._priors import TrialGP
from ._torch_utils import limit_threads

__all__ = ["make_low_tensor_rank_rnn", "make_motor_learning"]


def _learning_curves(rng, n_trials, rank):
    """Sigmoidal changes of each trial factor, at random times, sizes and signs."""
    k = np.arange(n_trials)[:, None]
    onset = rng.uniform(0.25, 0.65, size=rank) * n_trials
    width = rng.uniform(0.04, 0.1, size=rank) * n_trials
    amp = rng.uniform(0.5, 0.9, size=rank) * rng.choice([-1.0, 1.0], size=rank)
    return 1.0 + amp * (1.0 / (1.0 + np.exp(-(k - onset) / width)))


def make_low_tensor_rank_rnn(
    n_trials=100, n_timepoints=30, n_neurons=40, rank=3, *, n_units=100,
    n_conditions=4, tau=2.0, trial_factors="learning", trial_length_scale=20.0,
    noise=0.1, recurrent_gain_jitter=0.0, readout_gain_jitter=0.0, offset_drift=0.0,
    drift_length_scale=30.0, random_state=None,
):
    """Planted data from a low-tensor-rank RNN, with its ground truth.

    A network of ``n_units`` tanh units with connectivity
    ``W_k = sum_r c[k, r] a_r b_r^T / n_units`` on trial ``k`` runs from a latent
    initial state that depends on the trial's condition (conditions cycle over trials,
    as in a task with interleaved targets). Recorded neurons are a random readout
    ``D tanh(x) + d`` plus Gaussian noise. The row factors are aligned with the column
    factors through a latent coupling (self-excitation plus rotation), so each trial
    shows rich, condition-dependent transients.

    Three nuisances that are *not* learning can be added, to measure how often a
    test of learning is fooled by them (all 0 by default): trial-to-trial jitter of
    the whole recurrence's gain, trial-to-trial jitter of the recorded activity's
    gain, and slow drift of each neuron's offset.

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
    trial_factors : {'learning', 'constant', 'smooth'}, default='learning'
        'learning': each component changes along a sigmoidal learning curve at its
        own time, size (50-90%) and sign. 'constant': all trial factors equal 1 (no
        learning; the data are then exactly a low-rank RNN). 'smooth': ``1 +
        0.4 f`` with ``f`` a draw of a Gaussian process over the trial number with
        length scale ``trial_length_scale`` (the prior of
        :class:`~sklearn_ltr.LowTensorRankRNN`), independently per component.
    trial_length_scale : float, default=20.0
        Length scale in trials of the 'smooth' trial factors.
    noise : float, default=0.1
        Standard deviation of the Gaussian observation noise relative to the standard
        deviation of the noiseless activity.
    recurrent_gain_jitter : float, default=0.0
        Standard deviation of an independent per-trial gain ``1 + e_k`` multiplying
        every trial factor of trial k (the whole recurrence): fluctuation, not
        learning.
    readout_gain_jitter : float, default=0.0
        Standard deviation of an independent per-trial gain ``1 + g_k`` of the
        recorded activity around its offsets: ``g_k D tanh(x) + d``.
    offset_drift : float, default=0.0
        Standard deviation, relative to that of the noiseless activity, of a slow
        drift of each neuron's offset over the session (a Gaussian process over the
        trial number with length scale ``drift_length_scale``, per neuron).
    drift_length_scale : float, default=30.0
        In trials.
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
        ``recurrent_gain`` and ``readout_gain`` (n_trials,), ``offsets``
        (n_trials, n_neurons) drift of the offsets, ``noise_std`` (absolute),
        ``tau``.

    Examples
    --------
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> data = make_low_tensor_rank_rnn(n_trials=8, n_timepoints=5, n_neurons=3,
    ...                                 rank=2, random_state=0)
    >>> data.X.shape, data.trial_factors.shape
    ((8, 5, 3), (8, 2))
    """
    if trial_factors not in ("learning", "constant", "smooth"):
        raise ValueError(
            f"trial_factors must be 'learning', 'constant' or 'smooth', got "
            f"{trial_factors!r}.")
    for name, value in [("n_trials", n_trials), ("n_timepoints", n_timepoints),
                        ("n_neurons", n_neurons), ("rank", rank), ("n_units", n_units),
                        ("n_conditions", n_conditions)]:
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    for name, value in [("noise", noise), ("recurrent_gain_jitter",
                                           recurrent_gain_jitter),
                        ("readout_gain_jitter", readout_gain_jitter),
                        ("offset_drift", offset_drift)]:
        if not value >= 0:
            raise ValueError(f"{name} must be non-negative, got {value!r}.")
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
    elif trial_factors == "smooth":
        gp = TrialGP(np.arange(n_trials), None, trial_length_scale)
        C = 1.0 + 0.4 * gp.basis @ rng.standard_normal((gp.basis.shape[1], R))
    else:
        C = np.ones((n_trials, R))
    Z = rng.standard_normal((n_conditions, R))
    Z *= 1.5 / np.linalg.norm(Z, axis=1, keepdims=True) * np.sqrt(min(R, 2) / 2)
    y = np.arange(n_trials) % n_conditions
    D = 2.0 * rng.standard_normal((n_neurons, N)) / np.sqrt(N)
    d = 0.5 * rng.standard_normal(n_neurons)
    eps = rng.standard_normal((n_trials, n_timepoints, n_neurons))
    # The nuisances come last, so that without them the data are what they were.
    recurrent_gain = 1.0 + recurrent_gain_jitter * rng.standard_normal(n_trials)
    readout_gain = 1.0 + readout_gain_jitter * rng.standard_normal(n_trials)
    drift = TrialGP(np.arange(n_trials), None, drift_length_scale)
    drift = drift.basis @ rng.standard_normal((drift.basis.shape[1], n_neurons))
    alpha = 1.0 / tau
    with torch.no_grad():
        kappa, H = simulate_latents(
            torch.as_tensor(Z[y]), torch.as_tensor(A), torch.as_tensor(B),
            torch.as_tensor(C * recurrent_gain[:, None] * alpha / N), None,
            1.0 - alpha, n_timepoints)
    kappa = np.swapaxes(kappa.numpy(), 0, 1)
    H = np.swapaxes(H.numpy(), 0, 1)
    X_clean = readout_gain[:, None, None] * (H @ D.T) + d
    offsets = offset_drift * float(X_clean.std()) * drift
    X_clean = X_clean + offsets[:, None, :]
    noise_std = noise * float(X_clean.std())
    X = X_clean + noise_std * eps
    return Bunch(
        X=X, X_clean=X_clean, y=y, trial_factors=C, left_factors=A, right_factors=B,
        readout=D, readout_bias=d, initial_states=Z, latents=kappa,
        recurrent_gain=recurrent_gain, readout_gain=readout_gain, offsets=offsets,
        noise_std=noise_std, tau=tau)


# --------------------------------------------------------------------------- #
# a task-trained network over motor learning
# --------------------------------------------------------------------------- #
_EPOCHS = ("baseline", "perturbation", "washout")


def _reach_task(n_targets, n_timepoints, dt):
    """Cues and desired hand path of centre-out reaches to ``n_targets`` targets.

    Timing is a fixed fraction of the trial, so short trials keep every phase: the
    target cue appears at 10% of the trial and stays on, the go cue at 30%; the hand
    should stay at the centre until 35% and then follow a minimum-jerk path to the
    target (unit distance) that ends at 85% of the trial, and hold there.

    Returns
    -------
    angles : ndarray of shape (n_targets,)
    inputs : ndarray of shape (n_targets, n_timepoints, 3)
        ``[cos(angle) * cue, sin(angle) * cue, go]``.
    path : ndarray of shape (n_targets, n_timepoints, 2)
        Desired hand position.
    time : ndarray of shape (n_timepoints,)
        End of each time bin, in seconds.
    """
    angles = 2 * np.pi * np.arange(n_targets) / n_targets
    time = dt * np.arange(1, n_timepoints + 1)
    duration = dt * n_timepoints
    cue = (time > 0.1 * duration).astype(float)
    go = (time > 0.3 * duration).astype(float)
    s = np.clip((time - 0.35 * duration) / (0.5 * duration), 0.0, 1.0)
    progress = 10 * s ** 3 - 15 * s ** 4 + 6 * s ** 5  # minimum jerk
    direction = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    inputs = np.empty((n_targets, n_timepoints, 3))
    inputs[:, :, :2] = direction[:, None, :] * cue[None, :, None]
    inputs[:, :, 2] = go
    path = direction[:, None, :] * progress[None, :, None]
    return angles, inputs, path, time


def _simulate_reaches(W, W_in, W_out, inputs, *, alpha, arm_alpha, dt, field):
    """Run the network and the arm on a batch of trials (torch, differentiable in W).

    Network: ``x <- x + alpha (-x + W tanh(x) + W_in u)`` from ``x = 0``. Arm: the
    hand velocity follows the network's command ``W_out tanh(x)`` with a first-order
    lag (time constant ``dt / arm_alpha``), pushed by a curl force field
    ``field * [[0, 1], [-1, 0]] @ velocity``; the position integrates the velocity.

    Returns rates (batch, n_timepoints, n_units) and hand positions
    (batch, n_timepoints, 2).
    """
    n_batch, n_timepoints, _ = inputs.shape
    x = inputs.new_zeros(n_batch, W.shape[0])
    v = inputs.new_zeros(n_batch, 2)
    p = inputs.new_zeros(n_batch, 2)
    drive = inputs @ W_in.T
    # Curl field: force perpendicular to the velocity, clockwise for field > 0.
    curl = field * dt * torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=inputs.dtype)
    rates, positions = [], []
    for t in range(n_timepoints):
        x = x + alpha * (-x + torch.tanh(x) @ W.T + drive[:, t])
        r = torch.tanh(x)
        v = v + arm_alpha * (r @ W_out.T - v) + v @ curl.T
        p = p + dt * v
        rates.append(r)
        positions.append(p)
    return torch.stack(rates, 1), torch.stack(positions, 1)


def _reach_loss(positions, path):
    """Mean squared distance between hand and desired path (over trials and time)."""
    return ((positions - path) ** 2).sum(-1).mean()


def _check_motor_learning_args(a):
    """Validate the arguments of :func:`make_motor_learning` (a dict of them)."""
    for name, minimum in [("n_units", 1), ("n_timepoints", 2), ("n_targets", 1),
                          ("n_baseline", 0), ("n_perturbation", 0), ("n_washout", 0),
                          ("pretrain_iter", 0)]:
        value = a[name]
        if isinstance(value, bool) or int(value) != value or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if a["n_baseline"] + a["n_perturbation"] + a["n_washout"] < 1:
        raise ValueError("The session is empty: n_baseline + n_perturbation + "
                         "n_washout must be >= 1.")
    for name in ("dt", "tau", "arm_tau"):
        if not a[name] > 0:
            raise ValueError(f"{name} must be positive, got {a[name]!r}.")
    if a["dt"] > a["tau"] or a["dt"] > a["arm_tau"]:
        raise ValueError(
            f"dt={a['dt']} must be <= tau={a['tau']} and <= arm_tau={a['arm_tau']}: "
            f"larger Euler steps are unstable. Lower dt (and raise n_timepoints) or "
            f"raise the time constants.")
    for name in ["learning_rate", "init_scale", "input_scale", "output_scale",
                 "pretrain_learning_rate", "noise"]:
        if not a[name] >= 0:
            raise ValueError(f"{name} must be non-negative, got {a[name]!r}.")


def _pretrain(W0, W_in, W_out, inputs, path, n_iter, learning_rate, sim):
    """Full-batch gradient descent with momentum on the task without field.

    Returns the recurrent weights (a float64 tensor) and the loss curve.
    """
    f64 = torch.float64
    W_in, W_out = torch.as_tensor(W_in, dtype=f64), torch.as_tensor(W_out, dtype=f64)
    U, path = torch.as_tensor(inputs, dtype=f64), torch.as_tensor(path, dtype=f64)
    W = torch.as_tensor(W0, dtype=f64).clone()
    velocity = torch.zeros_like(W)
    losses = []
    # Heavy-ball gradient descent, written out: torch.optim costs seconds of
    # imports on first use, and the update is two lines.
    for _ in range(int(n_iter)):
        W.requires_grad_(True)
        _, pos = _simulate_reaches(W, W_in, W_out, U, field=0.0, **sim)
        loss = _reach_loss(pos, path)
        (grad,) = torch.autograd.grad(loss, W)
        # Clipping rescales the gradient, so the step stays in its span (the rank
        # bounds still apply); it only guards against rare early blow-ups.
        grad = grad * min(1.0, 1.0 / (float(torch.linalg.norm(grad)) + 1e-12))
        velocity = 0.9 * velocity + grad
        W = W.detach() - learning_rate * velocity
        losses.append(float(loss.detach()))
    return W, losses


def _learning_session(W, W_in, W_out, inputs, path, epoch, y, field_strength,
                      learning_rate, sim):
    """Trials of the session, one gradient step on W after each learning trial.

    Returns the weights in force on each trial, the rates, the hand positions and
    the root-mean-square error of each trial.
    """
    f64 = torch.float64
    W_in, W_out = torch.as_tensor(W_in, dtype=f64), torch.as_tensor(W_out, dtype=f64)
    U, path = torch.as_tensor(inputs, dtype=f64), torch.as_tensor(path, dtype=f64)
    n_trials, (n_timepoints, N) = epoch.size, (U.shape[1], W.shape[0])
    weights = np.empty((n_trials, N, N))
    rates = np.empty((n_trials, n_timepoints, N))
    hand = np.empty((n_trials, n_timepoints, 2))
    error = np.empty(n_trials)
    for k in range(n_trials):
        field = field_strength if epoch[k] == "perturbation" else 0.0
        target = int(y[k])
        weights[k] = W.numpy()
        Wk = W.clone().requires_grad_(epoch[k] != "baseline")
        r, pos = _simulate_reaches(Wk, W_in, W_out, U[target:target + 1],
                                   field=field, **sim)
        loss = _reach_loss(pos, path[target:target + 1])
        if epoch[k] != "baseline":
            (grad,) = torch.autograd.grad(loss, Wk)
            W = W - learning_rate * grad
        rates[k] = r[0].detach().numpy()
        hand[k] = pos[0].detach().numpy()
        error[k] = np.sqrt(float(loss.detach()))
    return weights, rates, hand, error


def make_motor_learning(
    n_units=100, n_timepoints=50, *, n_targets=8, n_baseline=5, n_perturbation=20,
    n_washout=10, field_strength=16.0, learning_rate=0.005, init_scale=0.0,
    input_scale=0.3, output_scale=4.0, pretrain_iter=1500, pretrain_learning_rate=0.1,
    dt=0.02, tau=0.06, arm_tau=0.04, noise=0.02, random_state=None,
):
    """A task-trained recurrent network adapting its reaches to a curl force field.

    The validation scenario of Pellegrino, Cayco-Gajic & Chadwick (NeurIPS 2023): a
    recurrent network controls a point-mass arm in a centre-out reaching task, and
    learns trial by trial, by gradient descent on its recurrent weights, to
    compensate for a velocity-dependent force field. The activity of its units is
    the "recording"; the weights in force on each trial are the ground truth.

    **Network.** ``n_units`` tanh units with Euler dynamics (step ``alpha = dt /
    tau``) ``x <- x + alpha (-x + W tanh(x) + W_in u)`` from rest (``x = 0``); the
    output ``W_out tanh(x)`` is a 2D hand-velocity command. ``W_in`` (n_units x 3,
    entries ``input_scale * N(0, 1)``) and ``W_out`` (2 x n_units, entries
    ``output_scale * N(0, 1 / n_units)``) are random and never learn; small input
    and large output scales keep the units near tanh's linear range.

    **Task.** ``n_targets`` targets on the unit circle. Inputs ``u = [cos(theta) cue,
    sin(theta) cue, go]``: the target cue turns on at 10% of the trial and stays on,
    the go cue at 30%. The hand velocity follows the command with a first-order lag
    (time constant ``arm_tau``) plus the field force
    ``field_strength * [[0, 1], [-1, 0]] @ velocity``; the hand position integrates
    the velocity. The desired path stays at the centre until 35% of the trial, then
    follows a minimum-jerk profile to the target, reached at 85%. The network gets no
    sensory feedback, so within a session its activity changes only because its
    weights do.

    **Pretraining.** The recurrent weights ``W``, initialised as ``init_scale * N(0,
    1 / n_units)`` (zero by default), learn the task without field by full-batch
    gradient descent with momentum 0.9 (``pretrain_iter`` steps, step size
    ``pretrain_learning_rate``, gradient norm clipped at 1 for robustness) on the mean
    squared distance between hand and desired path. Gradient descent from small
    weights keeps ``W`` close to low rank (see
    :func:`sklearn_ltr.analysis.gradient_rank_bounds`); Adam would not.

    **Session.** Trials cycle over the targets in order (``y = k % n_targets``), in
    blocks of one trial per target: ``n_baseline`` blocks without field and without
    learning, ``n_perturbation`` blocks with the field, ``n_washout`` blocks without
    it. From the first perturbation trial on, after every trial the recurrent
    weights (only them) take ONE plain gradient step ``W <- W - learning_rate *
    dL/dW`` on that trial's loss. The weight changes ``W[k] - W[0]`` therefore follow
    the rank bounds of gradient descent, and in practice form a tensor of low CP
    rank.

    Parameters
    ----------
    n_units : int, default=100
        Units of the network (also the number of recorded neurons).
    n_timepoints : int, default=50
        Time bins per trial (each ``dt`` seconds).
    n_targets : int, default=8
        Number of reach targets.
    n_baseline, n_perturbation, n_washout : int, default=5, 20, 10
        Number of blocks (one trial per target each) of every epoch.
        ``n_trials = n_targets * (n_baseline + n_perturbation + n_washout)``.
    field_strength : float, default=16.0
        Curl field gain b, in 1/s (force per unit mass per unit velocity); positive
        pushes clockwise.
    learning_rate : float, default=0.005
        Step size of the single gradient step per trial during the session. With
        the default field, the error adapts over about five blocks of the
        perturbation, and the after-effect fades over as many in washout.
    init_scale : float, default=0.0
        Scale of the random recurrent weights before pretraining (in units of
        ``1 / sqrt(n_units)``); 0 starts from zero weights, as in the rank bounds.
    input_scale : float, default=0.3
        Standard deviation of the entries of ``W_in``.
    output_scale : float, default=4.0
        Standard deviation of the entries of ``W_out``, times ``sqrt(n_units)``.
    pretrain_iter : int, default=1500
        Gradient-descent steps of pretraining.
    pretrain_learning_rate : float, default=0.1
        Step size of pretraining.
    dt : float, default=0.02
        Bin width in seconds.
    tau : float, default=0.06
        Time constant of the units, in seconds (>= dt).
    arm_tau : float, default=0.04
        Time constant of the arm's velocity response, in seconds (>= dt).
    noise : float, default=0.02
        Standard deviation of the Gaussian observation noise added to the rates, in
        units of the standard deviation of the noiseless rates. With the defaults,
        the variance of the activity that learning changes (each trial's deviation
        from the baseline mean trajectory of its target) is about ten times the
        noise variance: the learning is visible in the recordings.
    random_state : int, RandomState instance or None, default=None
        Seeds the random weights and the noise (a local generator). The computation
        is in float64 on the CPU with one torch thread, so a seed gives the same data
        on every run.

    Returns
    -------
    data : Bunch
        ``X`` (n_trials, n_timepoints, n_units): observed rates ``tanh(x)`` plus noise;
        ``X_clean``: the same without noise; ``y`` (n_trials,) target index;
        ``epoch`` (n_trials,) 'baseline', 'perturbation' or 'washout';
        ``weights`` (n_trials, n_units, n_units): recurrent weights in force on each
        trial (before that trial's update); ``error`` (n_trials,): root-mean-square
        distance between hand and desired path (unit = reach distance);
        ``lateral_error`` (n_trials,): signed distance of the hand from the straight
        line to the target, averaged over the trial (positive: counter-clockwise);
        ``inputs`` (n_trials, n_timepoints, 3); ``input_weights`` (n_units, 3);
        ``output_weights`` (2, n_units); ``hand_position`` and ``desired_position``
        (n_trials, n_timepoints, 2); ``target_angle`` (n_targets,); ``time``
        (n_timepoints,) end of each bin in seconds; ``pretrain_loss_curve``;
        ``params``: dict of the arguments used; ``tau_bins``: ``tau / dt``, the time
        constant in bins (the ``tau`` of :class:`~sklearn_ltr.LowTensorRankRNN`).

    See Also
    --------
    make_low_tensor_rank_rnn : Planted data with exact low-tensor-rank structure.
    sklearn_ltr.analysis.tensor_rank_curve : CP rank of ``weights - weights[0]``.

    Examples
    --------
    >>> from sklearn_ltr.datasets import make_motor_learning
    >>> data = make_motor_learning(n_units=10, n_timepoints=10, n_targets=4,
    ...                            n_baseline=1, n_perturbation=2, n_washout=1,
    ...                            pretrain_iter=5, random_state=0)
    >>> data.X.shape, data.weights.shape
    ((16, 10, 10), (16, 10, 10))
    >>> data.epoch[[0, 4, 12]].tolist()
    ['baseline', 'perturbation', 'washout']
    """
    params = {k: v for k, v in locals().items() if k != "random_state"}
    _check_motor_learning_args(params)
    rng = check_random_state(random_state)
    N = int(n_units)
    W_in = input_scale * rng.standard_normal((N, 3))
    W_out = output_scale * rng.standard_normal((2, N)) / np.sqrt(N)
    W0 = init_scale * rng.standard_normal((N, N)) / np.sqrt(N)
    angles, U, path, time = _reach_task(n_targets, n_timepoints, dt)
    sim = dict(alpha=dt / tau, arm_alpha=dt / arm_tau, dt=dt)

    counts = (n_baseline, n_perturbation, n_washout)
    epoch = np.repeat(np.array(_EPOCHS), [c * n_targets for c in counts])
    y = np.arange(epoch.size) % n_targets
    with limit_threads(1):
        W, losses = _pretrain(W0, W_in, W_out, U, path, pretrain_iter,
                              pretrain_learning_rate, sim)
        weights, rates, hand, error = _learning_session(
            W, W_in, W_out, U, path, epoch, y, field_strength, learning_rate, sim)
    # Signed distance of the hand from the straight line to the target (positive:
    # counter-clockwise of it), averaged over the trial: the curl field pushes reaches
    # clockwise, and the after-effect in washout is counter-clockwise.
    direction = np.stack([np.cos(angles), np.sin(angles)], axis=1)[y]
    lateral = (direction[:, None, 0] * hand[:, :, 1]
               - direction[:, None, 1] * hand[:, :, 0]).mean(1)
    noise_std = noise * float(rates.std())
    X = rates + noise_std * rng.standard_normal(rates.shape)
    return Bunch(
        X=X, X_clean=rates, y=y, epoch=epoch, weights=weights, error=error,
        lateral_error=lateral,
        inputs=U[y], input_weights=W_in, output_weights=W_out, hand_position=hand,
        desired_position=path[y], target_angle=angles, time=time,
        pretrain_loss_curve=np.array(losses), noise_std=noise_std, tau_bins=tau / dt,
        params=params)
