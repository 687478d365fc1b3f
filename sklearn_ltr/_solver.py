"""Optimisers of the low-tensor-rank RNN: training loop and per-trial inference.

Functional layer between the model (:mod:`sklearn_ltr._model`) and the estimators
(:mod:`sklearn_ltr.rnn`): a loss function and its tensors in, the tensors at the
lowest loss out; no scikit-learn. It is made of small parts, each tested on its own:

* :class:`PlateauRule` -- when has the loss stopped improving (for one problem, or
  element-wise for a batch of independent problems);
* :class:`BestSnapshot` -- the parameters at the lowest loss evaluated so far
  (whole, or row by row for per-trial problems);
* :class:`MiniBatches` -- random mini-batches of trials, one pass over them per
  iteration (an epoch), for sessions too large for a step on all trials;
* :func:`run_phase` -- iterations of one optimiser with one schedule: the
  teacher-forced warm start, an L-BFGS start and the Adam phase of :func:`optimize`
  are three :class:`Phase` objects run by it;
* :func:`optimize` (the fit) and :func:`optimize_per_trial` (independent per-trial
  problems, for inference on new trials) assemble them.
"""

import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = [
    "FitDiverged", "FitResult", "PlateauRule", "BestSnapshot", "MiniBatches", "Phase",
    "run_phase", "optimize", "optimize_per_trial",
]


def _import_optimizer_dependencies():
    """Run what the first optimiser of a process imports lazily, at import time.

    The first optimiser a process builds imports ``torch._dynamo`` (and sympy) for
    about a second, and its first step a few more modules. A Ctrl-C landing in
    such an import, inside a fit, would leave half-imported modules behind that
    break every later fit of the process; done here, with the package, no fit
    can be interrupted in them. Both optimisers take one step on a throwaway
    tensor (nothing global is changed).
    """
    w = torch.zeros(1, requires_grad=True)
    for opt in (torch.optim.Adam([w]), torch.optim.LBFGS([w], max_iter=1)):
        def closure(opt=opt):
            opt.zero_grad()
            value = (w - 1.0).pow(2).sum()
            value.backward()
            return value

        opt.step(closure)


_import_optimizer_dependencies()


class FitDiverged(RuntimeError):
    """Raised when the loss stays non-finite after all learning-rate back-offs.

    ``warm_start`` is True when it was the teacher-forced warm start's loss, whose
    rate is its own (``forcing_lr``), not the estimator's ``learning_rate``.
    """

    def __init__(self, message, *, warm_start=False):
        super().__init__(message)
        self.warm_start = warm_start


@dataclass
class FitResult:
    """What :func:`optimize` returns."""

    params: dict
    loss: float
    loss_curve: list
    n_iter: int
    converged: bool
    interrupted: bool
    n_evals: int = 0  # evaluations of the loss and its gradient
    n_forced: int = 0  # teacher-forced iterations at the start (first of loss_curve)
    # With held-out entries (``optimize(holdout=True)``): the held-out loss at each
    # iteration and at the parameters kept (``loss`` is then the training loss there).
    holdout_curve: list = None
    holdout_loss: float = None
    projected: bool = False  # whether variable projection began (after the warm start)


# --------------------------------------------------------------------------- #
# parts
# --------------------------------------------------------------------------- #
class PlateauRule:
    """Counts the iterations since the loss last improved by more than ``tol``.

    An improvement is a loss below ``best - tol * |best|``, ``best`` being the loss
    of the last improvement (the first finite loss is one). ``update`` takes a float
    (one problem) or a tensor of losses of independent problems, element-wise;
    non-finite elements never improve.

    Parameters
    ----------
    tol : float
        Relative improvement that resets the count.
    patience : int
        Iterations without improvement that make a plateau.

    Examples
    --------
    >>> from sklearn_ltr._solver import PlateauRule
    >>> rule = PlateauRule(tol=0.1, patience=2)
    >>> [rule.update(v) for v in [1.0, 0.95, 0.5, 0.49, 0.48]]
    [False, False, False, False, True]
    """

    def __init__(self, tol, patience):
        self.tol = tol
        self.patience = patience
        self.best = None
        self.since = None

    def update(self, value):
        """Record one loss (or tensor of losses); return whether (where) it plateaus."""
        if isinstance(value, torch.Tensor):
            if self.best is None:
                self.best = torch.full_like(value, math.inf)
                self.since = torch.zeros(value.shape, dtype=torch.long,
                                         device=value.device)
            # ``inf - tol * inf`` is NaN, which nothing is below: test inf apart.
            progress = torch.isfinite(value) & (
                torch.isinf(self.best)
                | (value < self.best - self.tol * self.best.abs()))
            self.best = torch.where(progress, value, self.best)
            self.since = torch.where(progress, torch.zeros_like(self.since),
                                     self.since + 1)
            return self.since >= self.patience
        if self.best is None:
            self.best, self.since = math.inf, 0
        if math.isfinite(value) and (
                self.best == math.inf or value < self.best - self.tol * abs(self.best)):
            self.best, self.since = value, 0
        else:
            self.since += 1
        return self.since >= self.patience

    def restart_count(self):
        """Start counting again from zero (after a change of schedule)."""
        self.since = 0 if not isinstance(self.since, torch.Tensor) else \
            torch.zeros_like(self.since)


class BestSnapshot:
    """The parameters at the lowest loss evaluated so far.

    Parameters
    ----------
    tensors : list of Tensor
        The parameters (moved in place by an optimiser).
    per_row : bool, default=False
        Losses are tensors with one element per row (first axis) of every tensor:
        independent problems, each keeping its own best row.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ltr._solver import BestSnapshot
    >>> w = torch.zeros(2)
    >>> best = BestSnapshot([w])
    >>> for value in [3.0, 1.0, 2.0]:
    ...     _ = best.offer(value)
    ...     _ = w.add_(1.0)
    >>> best.value, best.restore(), w.tolist()
    (1.0, None, [1.0, 1.0])
    """

    def __init__(self, tensors, per_row=False):
        self.tensors = tensors
        self.per_row = per_row
        self.saved = [t.detach().clone() for t in tensors]
        self.aux = None
        if per_row:
            first = tensors[0]
            self.value = torch.full((first.shape[0],), math.inf, device=first.device,
                                    dtype=first.dtype)
        else:
            self.value = math.inf

    def offer(self, value, point=None, aux=None):
        """Keep the current parameters (or ``point``, a copy of them) if they are best.

        ``aux`` is kept beside them (e.g. the training loss there, when ``value`` is
        a held-out loss); not with ``per_row``. Returns whether (for ``per_row``:
        where) the loss improved on the best.
        """
        if not self.per_row:
            if not value < self.value:
                return False
            self.value, self.aux = value, aux
            self.saved = point if point is not None else [
                t.detach().clone() for t in self.tensors]
            return True
        improved = torch.isfinite(value) & (value < self.value)
        for p, s in zip(self.tensors, self.saved):
            sel = improved.view((-1,) + (1,) * (p.dim() - 1))
            s.copy_(torch.where(sel, p.detach(), s))
        self.value = torch.where(improved, value, self.value)
        return improved

    def restore(self):
        """Copy the kept parameters back into the tensors."""
        with torch.no_grad():
            for p, s in zip(self.tensors, self.saved):
                p.copy_(s)


class MiniBatches:
    """Random mini-batches of trials: each epoch, one pass over all of them.

    An epoch shuffles the trials (with ``generator``) and splits them into
    ``ceil(n_trials / batch_size)`` mini-batches of nearly equal sizes (at most
    ``batch_size``, differing by at most one trial), so that no batch is a small
    remainder whose scaled loss would be far noisier than the others'.

    Parameters
    ----------
    n_trials : int
    batch_size : int
        Most trials per mini-batch (``1 <= batch_size``).
    generator : torch.Generator
        Draws the order of each epoch (a CPU generator).
    device : str or torch.device, default='cpu'
        Where the index tensors go (that of the data).

    Examples
    --------
    >>> import torch
    >>> from sklearn_ltr._solver import MiniBatches
    >>> batches = MiniBatches(10, 4, torch.Generator().manual_seed(0))
    >>> [len(b) for b in batches.epoch()], len(batches)
    ([4, 3, 3], 3)
    >>> sorted(torch.cat(batches.epoch()).tolist()) == list(range(10))
    True
    """

    def __init__(self, n_trials, batch_size, generator, device="cpu"):
        self.n_trials = n_trials
        self.batch_size = batch_size
        self.generator = generator
        self.device = device

    def __len__(self):
        """Mini-batches per epoch."""
        return -(-self.n_trials // self.batch_size)

    def _split(self, order):
        return [b.to(self.device) for b in torch.tensor_split(order, len(self))]

    def epoch(self):
        """The mini-batches of one epoch: index tensors that cover all trials."""
        return self._split(torch.randperm(self.n_trials, generator=self.generator))

    def chunks(self):
        """The trials in order, in as many consecutive chunks as an epoch's batches."""
        return self._split(torch.arange(self.n_trials))


@dataclass
class Phase:
    """One schedule of :func:`run_phase`.

    solver : 'adam' or 'lbfgs'.  learning_rate : initial step size (the line search's
    initial step for L-BFGS).  length : most iterations of the phase.  warmup : Adam
    iterations whose rate rises linearly to ``learning_rate``.  forcing : teacher
    forcing at the phase's start, falling linearly to 0 over ``length`` (the loss is
    then called with that weight as second argument, and its values are not kept
    as best).  n_decays : plateaus that restart from the best point with the rate
    times ``decay_factor`` before the next plateau ends the phase (None: no
    plateau rule).  name : what the divergence message calls the phase.
    probe_every : in a forced phase, evaluate the free-running loss (without
    gradient) every this many iterations and after the last, and keep the best
    point as :func:`run_phase`'s best iterate (0: never).
    """

    solver: str
    learning_rate: float
    length: int
    warmup: int = 0
    forcing: float = 0.0
    n_decays: object = 0
    decay_factor: float = 0.2
    name: str = "the loss"
    probe_every: int = 0


class _Evaluation(NamedTuple):
    """One evaluation of an L-BFGS closure, kept for reuse (see _Run.closure)."""

    point: list  # copies of the tensors evaluated at
    grads: list  # their gradients (None where a tensor took none)
    seen: torch.Tensor  # what the optimiser was given: the loss (plus a penalty)
    held: object  # the held-out loss, or None
    loss: float  # the loss alone


@dataclass
class _Run:
    """What the phases of one optimisation share."""

    loss_fn: object
    params: dict
    max_iter: int
    rule: PlateauRule
    holdout: bool = False  # loss_fn returns (loss, held-out loss); see optimize
    history_size: int = 100
    max_backoffs: int = 6
    progress: object = None
    callback: object = None
    batches: object = None  # MiniBatches, or None: every step on all trials
    # Variable projection (see optimize): the positions, in ``tensors``, of the
    # tensors the loss sets, once it does (after the warm start).
    projected: tuple = ()
    n_iter: int = 0
    backoffs: int = 0
    n_evals: int = 0
    curve: list = field(default_factory=list)
    holdout_curve: list = field(default_factory=list)
    last: object = None  # the last L-BFGS evaluation (an _Evaluation), or None
    first: object = None  # the loss of the iterate, first evaluation of a step
    first_held: object = None  # the held-out loss there (with holdout)

    def __post_init__(self):
        self.tensors = list(self.params.values())
        self.snapshot = BestSnapshot(self.tensors)

    def optimizer(self, solver, lr):
        """A fresh optimiser over the tensors."""
        if solver == "lbfgs":
            # One quasi-Newton step per iteration; max_eval must be given: its
            # default (max_iter * 5 / 4 = 1) leaves the line search no evaluation,
            # so the step is 0 and the fit never moves.
            return torch.optim.LBFGS(
                self.tensors, lr=lr, max_iter=1, max_eval=25,
                history_size=self.history_size, line_search_fn="strong_wolfe")
        return torch.optim.Adam(self.tensors, lr=lr)

    def evaluate(self, gamma=None, trials=None):
        """``loss_fn`` at the current parameters (of the mini-batch ``trials``).

        Returns the loss and the held-out loss (None without ``holdout``).
        """
        args = (self.params,) if gamma is None else (self.params, gamma)
        out = (self.loss_fn(*args) if trials is None
               else self.loss_fn(*args, trials=trials))
        return out if self.holdout else (out, None)

    def criterion(self, value, held):
        """What picks the best parameters and drives the plateau rule."""
        return held if self.holdout else value

    def closure(self, opt, gamma, lbfgs, trials=None):
        """The closure of one step: loss and gradient at the current parameters.

        Every finite evaluation of the free-running loss (``gamma`` None) on all
        trials is offered to the snapshot, at its held-out loss with ``holdout``
        (a mini-batch's, ``trials``, is not: the epoch's loss is, by
        :meth:`iteration`). L-BFGS evaluates the loss where its previous line
        search ended, which is nearly always the point evaluated last: with
        ``lbfgs`` that evaluation is kept and reused. The projected tensors are
        not compared: they are a function of the others, set by the evaluation
        (the line search, which does not step them, leaves their earlier values
        behind), and are copied back from it.
        """
        def closure():
            last = self.last
            if last is not None and all(
                    i in self.projected or torch.equal(p, q)
                    for i, (p, q) in enumerate(zip(self.tensors, last.point))):
                with torch.no_grad():
                    for i in self.projected:
                        self.tensors[i].copy_(last.point[i])
                for p, g in zip(self.tensors, last.grads):
                    p.grad = None if g is None else g.clone()
                if self.first is None:
                    self.first, self.first_held = last.loss, last.held
                return last.seen
            opt.zero_grad(set_to_none=True)
            penalty = held = None
            if self.projected and gamma is None and trials is None:
                value, penalty = self.loss_fn(self.params, project=True)
            else:
                value, held = self.evaluate(gamma, trials)
            v = float(value.detach())  # the loss: recorded, compared and kept
            # What the optimiser minimises: with a projection, the loss plus the
            # projected tensors' penalty (see optimize); the same gradient.
            seen = value if penalty is None else value + penalty
            self.n_evals += 1
            if math.isfinite(v):
                seen.backward()
                for p in self.tensors:
                    # L-BFGS flattens gradients with view(); transposed ones break it.
                    if p.grad is not None and not p.grad.is_contiguous():
                        p.grad = p.grad.contiguous()
                point = None  # a copy of the evaluated point, made once; read-only
                if lbfgs:
                    point = [p.detach().clone() for p in self.tensors]
                    self.last = _Evaluation(
                        point, [None if p.grad is None else p.grad.clone()
                                for p in self.tensors], seen.detach(), held, v)
                if gamma is None and trials is None:
                    # The point at which the loss was evaluated (before the
                    # optimiser moves away from it).
                    self.snapshot.offer(self.criterion(v, held), point, aux=v)
            if self.first is None:
                self.first, self.first_held = v, held
            return seen
        return closure

    def iteration(self, opt, gamma, lbfgs, warm):
        """Run one iteration; return its loss and held-out loss (or None).

        On all trials: one optimiser step, whose loss is that at the point before
        it. With mini-batches (never with ``holdout``): an epoch, one step per
        mini-batch, whose loss is the mean of the mini-batch losses weighted by
        their sizes (each evaluated before its step; an unbiased estimate of the
        mean loss over the epoch's path); the free-running epoch loss is offered to
        the snapshot with the parameters where the epoch ends. ``warm(j)`` sets the
        learning rate of the iteration's ``j``-th step; a non-finite mini-batch
        loss ends the epoch at once and is returned.
        """
        if self.batches is None:
            warm(0)
            self.first = self.first_held = None
            opt.step(self.closure(opt, gamma, lbfgs))
            return self.first, self.first_held
        total = 0.0
        for j, trials in enumerate(self.batches.epoch()):
            warm(j)
            self.first = None
            opt.step(self.closure(opt, gamma, False, trials))
            if not math.isfinite(self.first):
                return self.first, None
            total += self.first * len(trials) / self.batches.n_trials
        if gamma is None:
            self.snapshot.offer(total, aux=total)
        return total, None

    def full_loss(self):
        """The free-running loss on all trials and its held-out loss, no gradient.

        With mini-batches it is summed over consecutive chunks of the batches' size
        (each chunk's estimate weighted by its share of the trials), which is the
        mean loss up to rounding, with the memory of one mini-batch.
        """
        with torch.no_grad():
            if self.batches is None:
                value, held = self.evaluate()
                return float(value), held
            n = self.batches.n_trials
            return sum(float(self.evaluate(trials=t)[0]) * len(t) / n
                       for t in self.batches.chunks()), None

    def record(self, value, gamma, held=None):
        """Count one iteration of loss ``value`` (held-out loss ``held``); report it."""
        self.n_iter += 1
        self.curve.append(value)
        if self.holdout:
            self.holdout_curve.append(math.nan if held is None else held)
        if self.progress is not None:
            self.progress.update(1)
            extra = {} if gamma is None else {"forcing": f"{gamma:.2f}"}
            self.progress.set_postfix(loss=f"{value:.5g}", refresh=False, **extra)
        if self.callback is not None:
            self.callback(self.n_iter, value)

    def probe(self):
        """Offer the current point to the snapshot at its free-running loss."""
        v, held = self.full_loss()
        self.n_evals += 1
        if math.isfinite(v):
            self.snapshot.offer(self.criterion(v, held), aux=v)

    def restore_best(self):
        """Back to the best parameters (forgetting the cached L-BFGS evaluation)."""
        self.last = None
        self.snapshot.restore()


def _set_lr(opt, lr):
    for group in opt.param_groups:
        group["lr"] = lr


def run_phase(run, phase):
    """Run the iterations of one :class:`Phase`; return why it ended.

    A non-finite loss is detected at once: the parameters go back to the best
    iterate (or, in a teacher-forced phase, to where the phase began, which then
    starts over) and the learning rate is halved, ``run.max_backoffs`` times at most
    over the whole run before :class:`FitDiverged` is raised. With mini-batches
    (``run.batches``) an iteration is an epoch (:meth:`_Run.iteration`); the
    warm-up counts optimiser steps, the phase's ``length`` iterations.

    Returns
    -------
    reason : {'length', 'plateau'}
        The phase ran its ``length`` (or the run's ``max_iter``), or reached a
        plateau after its ``n_decays`` decays.
    """
    lr, decays, start = phase.learning_rate, 0, run.n_iter
    lbfgs = phase.solver == "lbfgs"
    start_point = [p.detach().clone() for p in run.tensors] if phase.forcing else None
    opt = run.optimizer(phase.solver, lr)
    steps = 1 if run.batches is None else len(run.batches)  # per iteration

    def warm(i, j):
        """Learning rate of step ``j`` of iteration ``i`` of the phase."""
        step = i * steps + j
        if not lbfgs and step < phase.warmup:
            _set_lr(opt, lr * (step + 1) / phase.warmup)

    while run.n_iter < run.max_iter and run.n_iter - start < phase.length:
        i = run.n_iter - start
        gamma = phase.forcing * (1.0 - i / phase.length) if phase.forcing else None
        value, held = run.iteration(opt, gamma, lbfgs, functools.partial(warm, i))
        if not math.isfinite(value):
            run.backoffs += 1
            if run.backoffs > run.max_backoffs:
                raise FitDiverged(
                    f"{phase.name} became non-finite and stayed so after "
                    f"{run.max_backoffs} halvings of the learning rate (last tried "
                    f"{lr:.3g})", warm_start=bool(phase.forcing))
            lr *= 0.5
            if start_point is None:
                run.restore_best()
            else:  # the forced phase starts over, from where it began
                with torch.no_grad():
                    for p, s in zip(run.tensors, start_point):
                        p.copy_(s)
                del run.curve[start:]
                del run.holdout_curve[start:]
                run.n_iter = start
            opt = run.optimizer(phase.solver, lr)
            continue
        run.record(value, gamma, held)
        if phase.probe_every and (i + 1) % phase.probe_every == 0:
            run.probe()
        if phase.n_decays is None or not run.rule.update(run.criterion(value, held)):
            continue
        if decays >= phase.n_decays:
            return "plateau"
        decays += 1
        lr *= phase.decay_factor
        run.restore_best()
        opt = run.optimizer(phase.solver, lr)
        run.rule.restart_count()
    return "length"


# --------------------------------------------------------------------------- #
# assembled
# --------------------------------------------------------------------------- #
def optimize(
    loss_fn, params, *, solver="adam", learning_rate=0.01, max_iter=1000, tol=1e-4,
    n_iter_no_change=20, progress=None, callback=None, max_backoffs=6,
    n_decays=None, decay_factor=0.2, warmup=10, history_size=100, lbfgs_iter=0,
    forcing=0.0, forcing_iter=0, forcing_lr=0.02, forcing_probe=0, batches=None,
    holdout=False, projected=(),
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
    warm start ended. They are counted in ``n_iter`` and ``loss_curve``. With
    ``forcing_probe > 0`` the free-running loss is also evaluated (without gradient)
    every ``forcing_probe`` forced iterations and where the warm start ends, and the
    solver starts from the best of those points: the free-running loss of a forced
    model is not monotone, and it often passes through points far better than
    where the pull ends.

    The parameters with the lowest loss ever evaluated (without forcing) are kept
    and returned, not the last iterate. A non-finite loss backs off (see
    :func:`run_phase`); a KeyboardInterrupt stops the loop and returns the best
    parameters so far with ``interrupted=True``. ``callback(n_iter, loss)`` is
    called after every iteration.

    Mini-batches (``batches``, a :class:`MiniBatches`; Adam only): an iteration is
    then an epoch, one Adam step per mini-batch of trials on
    ``loss_fn(params, trials=...)`` (``loss_fn(params, gamma, trials=...)`` in the
    warm start), which must return an unbiased estimate of the loss from those
    trials. Everything counted in iterations above (``max_iter``, ``warmup``
    aside, which counts steps; ``n_iter_no_change``, ``forcing_iter``,
    ``forcing_probe``) counts epochs; an epoch's loss, in ``loss_curve`` and
    compared by ``tol``, is the size-weighted mean of its mini-batch losses, and
    the best parameters are those where the epoch of lowest loss ended. The
    free-running loss of the probes (and of an interrupted warm start) is the
    exact loss on all trials, summed over chunks of the batches' size.

    Early stopping (``holdout=True``): ``loss_fn`` returns a pair, the loss to
    minimise (a tensor) and the loss of entries held out of it (a float, computed
    from the same evaluation), and the held-out loss takes the training loss's
    place in the choice of the parameters kept and in the plateau rule: a plateau
    is ``n_iter_no_change`` iterations without improvement of the held-out loss,
    and the fit ends at the parameters of the lowest held-out loss evaluated.
    ``FitResult.loss`` is then the training loss at those parameters. Not with
    mini-batches.

    Variable projection (``projected``, names of tensors of ``params``): after the
    warm start, every evaluation of the loss and its gradient is
    ``loss_fn(params, project=True)``, which must first set the ``projected``
    tensors (without gradient) to their exact minimiser given the others of the
    loss plus a penalty on them (the readout of the squared error under a ridge, a
    linear least-squares problem, solved from the same simulation as the loss),
    and return the pair of the loss there and that penalty's value (a float, or
    None for no penalty). The optimisers then move the other tensors only (the
    projected ones take no gradient, so Adam and L-BFGS leave them), minimising
    the loss plus the penalty with the projected ones eliminated, whose gradient
    is that of the loss at their optimum (the envelope theorem: exactly when
    the penalty's weight does not depend on the other tensors). The sum is what
    the optimisers see (without the penalty's value the line searches of L-BFGS
    compare values whose gradient is not the one they are given, and stall);
    the loss recorded, compared by the plateau rule and kept with the best
    parameters is the loss alone, comparable across the warm start and changes
    of the penalty's weight. The projected tensors are kept with the best
    parameters. Not with mini-batches or held-out entries (the projection needs
    the loss over all entries).
    """
    if batches is not None and holdout:
        raise ValueError("mini-batches and held-out entries (early stopping) do not "
                         "go together: the held-out loss is that of all trials.")
    if projected and (batches is not None or holdout):
        raise ValueError("variable projection needs the loss over all entries: not "
                         "with mini-batches or held-out entries.")
    if batches is not None and (solver == "lbfgs" or lbfgs_iter > 0):
        raise ValueError("mini-batches need solver='adam' without an L-BFGS start: "
                         "a line search needs the same loss at every evaluation.")
    if n_decays is None:
        n_decays = 0 if solver == "lbfgs" else 2
    n_forced = min(forcing_iter, max_iter - 1) if forcing > 0 else 0
    converged = interrupted = False

    def new_run():
        return _Run(loss_fn, params, max_iter, PlateauRule(tol, n_iter_no_change),
                    holdout=holdout, history_size=history_size,
                    max_backoffs=max_backoffs, progress=progress, callback=callback,
                    batches=batches)

    run = None
    try:
        run = new_run()
        for p in params.values():
            p.requires_grad_(True)
        if n_forced > 0:
            run_phase(run, Phase("adam", forcing_lr, n_forced, warmup=warmup,
                                 forcing=forcing, n_decays=None,
                                 name="the loss of the teacher-forced warm start",
                                 probe_every=forcing_probe))
            if forcing_probe:
                if n_forced % forcing_probe:
                    run.probe()  # where the warm start ended
                run.restore_best()
        if projected:
            # From here on the projected tensors are set, not stepped.
            run.projected = tuple(list(params).index(name) for name in projected)
            for name in projected:
                params[name].requires_grad_(False)
        if lbfgs_iter > 0 and solver != "lbfgs":
            # L-BFGS with initial step 1 until its first plateau; the solver then
            # starts from its best point.
            run_phase(run, Phase("lbfgs", 1.0, lbfgs_iter, n_decays=0))
            run.restore_best()
            run.rule.restart_count()
        converged = run_phase(run, Phase(
            solver, learning_rate, max_iter, warmup=warmup, n_decays=n_decays,
            decay_factor=decay_factor)) == "plateau"
    except KeyboardInterrupt:
        interrupted = True
        if run is None:  # before the first step: the parameters are the initial ones
            run = new_run()
    return _finish(run, converged, interrupted, n_forced)


def _finish(run, converged, interrupted, n_forced):
    """Back to the best parameters, frozen; the :class:`FitResult`."""
    run.n_iter = len(run.curve)  # also counts an interrupted warm start
    if not math.isfinite(run.snapshot.value):
        # Interrupted in the warm start, before the unforced loss was evaluated:
        # keep where the warm start got to if its loss is finite.
        run.probe()
    run.snapshot.restore()
    for p in run.tensors:
        p.requires_grad_(False)
    loss, held, curve = run.snapshot.value, None, None
    if run.holdout:
        held, curve = loss, run.holdout_curve
        loss = math.nan if run.snapshot.aux is None else run.snapshot.aux
    return FitResult(run.params, loss, run.curve, run.n_iter, converged,
                     interrupted, run.n_evals, n_forced=min(n_forced, run.n_iter),
                     holdout_curve=curve, holdout_loss=held,
                     projected=bool(run.projected))


def _masked_adam_step(tensors, grads, moments, t, active, *, learning_rate, betas,
                      eps):
    """One Adam step (bias-corrected, step ``t``) on the ``active`` rows only."""
    b1, b2 = betas
    for p, g, (mm, vv) in zip(tensors, grads, moments):
        sel = active.view((-1,) + (1,) * (p.dim() - 1))
        g = torch.nan_to_num(g)
        mm.mul_(b1).add_(g, alpha=1 - b1)
        vv.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = (mm / (1 - b1 ** t)) / ((vv / (1 - b2 ** t)).sqrt() + eps)
        p.sub_(torch.where(sel, learning_rate * step, torch.zeros_like(step)))


def optimize_per_trial(loss_fn, params, *, learning_rate=0.05, max_iter=200, tol=1e-4,
                       n_iter_no_change=10, betas=(0.9, 0.999), eps=1e-8):
    """Minimise independent per-trial problems, each with its own Adam and stop.

    ``loss_fn(params)`` returns a (K,) tensor: the loss of each trial, which must
    depend only on that trial's rows of the tensors in ``params`` (each of shape
    (K, ...)). Adam is element-wise, the gradient of the sum is the per-trial
    gradient, and a trial stops updating once its own loss has not improved by more
    than ``tol`` (relative) for ``n_iter_no_change`` iterations (its
    :class:`PlateauRule`), or once its loss is non-finite. So the result for a trial
    does not depend on which other trials are in the batch, or their order -- a
    property a shared L-BFGS line search or a global stopping rule would break.
    Each trial ends at the parameters of its lowest loss (its :class:`BestSnapshot`
    row).
    """
    tensors = list(params.values())
    best = BestSnapshot(tensors, per_row=True)
    rule = PlateauRule(tol, n_iter_no_change)
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in tensors]
    active = torch.ones(tensors[0].shape[0], dtype=torch.bool,
                        device=tensors[0].device)
    for it in range(max_iter):
        for p in tensors:
            p.requires_grad_(True)
        losses = loss_fn(params)
        grads = torch.autograd.grad(losses.sum(), tensors)
        with torch.no_grad():
            losses = losses.detach()
            best.offer(losses)
            plateau = rule.update(losses)
            # A non-finite loss freezes the trial at its best parameters.
            active &= torch.isfinite(losses) & ~plateau
            if not bool(active.any()):
                break
            _masked_adam_step(tensors, grads, moments, it + 1, active,
                              learning_rate=learning_rate, betas=betas, eps=eps)
    best.restore()
    for p in tensors:
        p.requires_grad_(False)
    return params
