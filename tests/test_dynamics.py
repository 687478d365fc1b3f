"""The math layer and the solver, tested without scikit-learn."""

import math

import numpy as np
import pytest
import torch

from sklearn_ltr import _model, _solver
from sklearn_ltr._dynamics import simulate_latents, simulate_latents_autograd


def _inputs(K=3, R=2, N=6, T=7, drive=True, seed=0):
    g = torch.Generator().manual_seed(seed)

    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    return (mk(K, R), mk(N, R), mk(N, R), mk(K, R), mk(T - 1, K, R) if drive else None)


@pytest.mark.parametrize("drive", [True, False])
@pytest.mark.parametrize("T", [1, 2, 7])
def test_hand_written_backward_passes_gradcheck(drive, T):
    k0, A, B, gain, V = _inputs(T=T, drive=drive)
    if T == 1 and drive:
        V = torch.zeros(0, 3, 2, dtype=torch.float64, requires_grad=True)
    args = (k0, A, B, gain) + ((V,) if V is not None else ())

    def f(*a):
        return simulate_latents(*a[:4], a[4] if len(a) > 4 else None, 0.7, T)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("drive", [True, False])
def test_matches_autograd_reference(drive):
    k0, A, B, gain, V = _inputs(drive=drive)
    out = simulate_latents(k0, A, B, gain, V, 0.6, 7)
    ref = simulate_latents_autograd(k0, A, B, gain, V, 0.6, 7)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    # Gradients of a loss touching both outputs agree too.
    w = torch.randn_like(out[1])
    g1 = torch.autograd.grad((out[1] * w).sum() + out[0].pow(2).sum(), (k0, A, B, gain))
    g2 = torch.autograd.grad((ref[1] * w).sum() + ref[0].pow(2).sum(), (k0, A, B, gain))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_latent_recurrence_equals_full_network():
    """x(t) = A kappa(t): the latent simulation is exactly the N-unit network."""
    K, R, N, T, alpha = 4, 2, 12, 9, 0.4
    g = torch.Generator().manual_seed(1)
    A = torch.randn(N, R, generator=g, dtype=torch.float64)
    B = torch.randn(N, R, generator=g, dtype=torch.float64)
    C = torch.rand(K, R, generator=g, dtype=torch.float64) + 0.5
    z = torch.randn(K, R, generator=g, dtype=torch.float64)
    kappa, H = simulate_latents(z, A, B, C * alpha / N, None, 1 - alpha, T)
    W = torch.einsum("kr,ir,jr->kij", C, A, B) / N
    x = z @ A.t()
    for t in range(T):
        torch.testing.assert_close(torch.tanh(x), H[t])
        torch.testing.assert_close(x, kappa[t] @ A.t())
        x = (1 - alpha) * x + alpha * torch.einsum("kij,kj->ki", W, torch.tanh(x))


def test_optimize_reaches_minimum_and_keeps_best():
    target = torch.tensor([1.0, -2.0, 3.0])
    params = {"w": torch.zeros(3)}
    res = _solver.optimize(lambda p: ((p["w"] - target) ** 2).sum(), params,
                           learning_rate=0.1, max_iter=2000, tol=1e-6)
    assert res.converged
    torch.testing.assert_close(params["w"], target, atol=1e-3, rtol=0)
    assert res.loss == pytest.approx(min(res.loss_curve), abs=1e-12)
    assert len(res.loss_curve) == res.n_iter


def test_lbfgs_reuses_the_last_evaluation_exactly():
    """Each L-BFGS iteration costs about one evaluation, and the path is torch's own."""
    calls = [0]

    def loss(p):
        # Rosenbrock's function in 8 dimensions: far from converged in 25 iterations.
        calls[0] += 1
        w = p["w"]
        return (100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2).sum()

    n_iter = 25
    start = torch.full((8,), -1.0, dtype=torch.float64)
    params = {"w": start.clone()}
    res = _solver.optimize(loss, params, solver="lbfgs", learning_rate=1.0,
                           max_iter=n_iter, tol=0.0, n_iter_no_change=10 ** 6)
    assert res.n_iter == n_iter and res.n_evals == calls[0]
    assert res.n_evals <= 1.3 * n_iter, res.n_evals
    # torch's L-BFGS stepped the same way evaluates at least twice per iteration and
    # goes through the same points.
    w = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=1, max_eval=25, history_size=100,
                            line_search_fn="strong_wolfe")
    calls[0] = 0

    def closure():
        opt.zero_grad()
        value = loss({"w": w})
        value.backward()
        return value

    for _ in range(n_iter):
        opt.step(closure)
    assert calls[0] >= 2 * n_iter
    assert float(loss({"w": w.detach()})) > 1e-3  # not converged: a real comparison
    torch.testing.assert_close(params["w"], w.detach(), rtol=1e-12, atol=1e-12)


def test_lbfgs_start_then_adam():
    """optimize(lbfgs_iter=k): k L-BFGS iterations, then Adam from the best point."""
    g = torch.Generator().manual_seed(0)
    M = torch.randn(10, 10, generator=g, dtype=torch.float64)
    Q = M @ M.t() + torch.eye(10, dtype=torch.float64)
    b = torch.randn(10, generator=g, dtype=torch.float64)

    def loss(p):
        w = p["w"]
        return 0.5 * w @ Q @ w - b @ w

    optimum = float(loss({"w": torch.linalg.solve(Q, b)}))
    runs = {}
    for k in (0, 10):
        params = {"w": torch.zeros(10, dtype=torch.float64)}
        runs[k] = _solver.optimize(loss, params, solver="adam", learning_rate=1e-4,
                                   lbfgs_iter=k, max_iter=30, tol=0.0,
                                   n_iter_no_change=10 ** 6)
    # Adam at 1e-4 barely moves; 10 L-BFGS iterations nearly solve the quadratic.
    assert runs[0].loss - optimum > 0.1 * abs(optimum)
    assert runs[10].loss - optimum < 5e-3 * abs(optimum)
    assert runs[10].n_iter == 30 and len(runs[10].loss_curve) == 30
    # The Adam phase starts from the L-BFGS result and keeps the best point.
    assert runs[10].loss <= min(runs[10].loss_curve[:11]) + 1e-12


def test_optimize_backs_off_from_divergence():
    """A loss that blows up for large steps: the learning rate is halved, not NaN."""
    calls = {"nan": 0}

    def loss(p):
        w = p["w"]
        if float(w.detach().abs().max()) > 0.5:
            calls["nan"] += 1
            return w.sum() * float("nan")
        return ((w - 0.4) ** 2).sum()

    params = {"w": torch.zeros(2)}
    res = _solver.optimize(loss, params, learning_rate=2.0, max_iter=300, warmup=1)
    assert calls["nan"] >= 1
    assert torch.isfinite(params["w"]).all()
    assert res.loss < 1e-3


def test_optimize_raises_when_divergence_persists():
    params = {"w": torch.zeros(2)}
    with pytest.raises(_solver.FitDiverged, match="non-finite"):
        _solver.optimize(lambda p: p["w"].sum() * float("inf"), params, max_iter=50)
    assert torch.isfinite(params["w"]).all()


def test_optimize_interrupt_keeps_best():
    seen = []

    def callback(n_iter, value):
        seen.append(value)
        if n_iter == 15:
            raise KeyboardInterrupt

    params = {"w": torch.full((2,), 3.0)}
    res = _solver.optimize(lambda p: (p["w"] ** 2).sum(), params, learning_rate=0.1,
                           callback=callback, max_iter=1000)
    assert res.interrupted and res.n_iter == 15
    assert float((params["w"] ** 2).sum()) == pytest.approx(min(seen), rel=1e-6)
    assert math.isfinite(res.loss)


def test_initialize_pca_explains_data(small=None):
    from sklearn_ltr.datasets import make_low_tensor_rank_rnn

    data = make_low_tensor_rank_rnn(n_trials=30, n_timepoints=15, n_neurons=12,
                                    rank=2, random_state=0)
    X = _model.Data.from_numpy(data.X, None, torch.device("cpu"), torch.float64)
    kw = dict(rank=2, n_units=30, alpha=0.5, n_states=30, state_index=None,
              loss="mse", orthonormal_readout=False)
    losses = {}
    for init in ["pca", "random"]:
        p, _ = _model.initialize(X, init=init,
                                 generator=torch.Generator().manual_seed(0), **kw)
        B = p["Bs"] * math.sqrt(30)
        D = _model.readout_matrix(p["Ds"], 30, False)
        _, eta = _model.evaluate(p["Z"], torch.ones(30, 2, dtype=B.dtype), p["A"], B,
                                 D, p["d"], None, None, alpha=0.5, n_timepoints=15)
        losses[init] = float(_model.data_loss(eta, X, "mse"))
    # The data-driven start is much closer to the data than a random one.
    assert losses["pca"] < 0.6 * losses["random"]
    assert losses["pca"] < np.var(data.X)


@pytest.mark.parametrize("which", ["kappa", "H"])
def test_hand_written_backward_with_one_output(which):
    """Only one output reaches the loss: the other's gradient is zero or None."""
    k0, A, B, gain, V = _inputs(T=5)

    def f(*a):
        kappa, H = simulate_latents(*a, 0.7, 5)
        return kappa if which == "kappa" else H

    assert torch.autograd.gradcheck(f, (k0, A, B, gain, V))


def test_backward_leaves_incoming_gradients_untouched():
    k0, A, B, gain, V = _inputs(T=6)
    out = simulate_latents(k0, A, B, gain, V, 0.6, 6)
    g_out = tuple(torch.randn_like(o) for o in out)
    saved = tuple(g.clone() for g in g_out)
    torch.autograd.grad(out, (k0, A, B, gain, V), g_out)
    for g, s in zip(g_out, saved):
        assert torch.equal(g, s)


def _readout_problem(mask, seed=0, T=4, K=3, N=6, n=5, per_trial_offset=False):
    g = torch.Generator().manual_seed(seed)

    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    H, D = torch.tanh(mk(T, K, N)).detach().requires_grad_(True), mk(n, N)
    d = mk(K, n) if per_trial_offset else mk(n)
    X = torch.randn(T, K, n, generator=g, dtype=torch.float64)
    X[0, 0, 0] = 3.0
    m = None
    if mask:
        m = torch.rand(T, K, n, generator=g) > 0.3
        m[0, 0, 0] = True
        X = torch.where(m, X, torch.zeros(()))
    n_obs = X.numel() if m is None else int(m.sum())
    return H, D, d, _model.Data(X, m, None, n_obs)


@pytest.mark.parametrize("per_trial_offset", [False, True])
@pytest.mark.parametrize("mask", [False, True])
def test_fused_readout_squared_error_passes_gradcheck(mask, per_trial_offset):
    from sklearn_ltr._dynamics import readout_squared_error

    H, D, d, data = _readout_problem(mask, per_trial_offset=per_trial_offset)
    assert torch.autograd.gradcheck(
        lambda *a: readout_squared_error(*a, data.X, data.mask, data.n_obs), (H, D, d))


@pytest.mark.parametrize("kept_rates", [True, False], ids=["kept", "formed-again"])
@pytest.mark.parametrize("per_trial_offset", [False, True])
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("drive", [True, False])
@pytest.mark.parametrize("T", [1, 2, 6])
def test_fused_recurrence_and_squared_error_passes_gradcheck(T, drive, mask,
                                                             per_trial_offset,
                                                             kept_rates, monkeypatch):
    """LatentSquaredError: exact gradients of the loss and of the trajectories.

    Both ways of getting each step's rates in the backward pass: kept from the
    forward pass (small problems) or formed again from the trajectories.
    """
    from sklearn_ltr import _dynamics
    from sklearn_ltr._dynamics import latent_squared_error

    monkeypatch.setattr(_dynamics, "KEPT_RATES_MAX", 1 << 20 if kept_rates else 0)

    k0, A, B, gain, V = _inputs(T=T, drive=drive and T > 1)
    _, D, d, data = _readout_problem(mask, seed=2, T=T, K=3, N=6,
                                     per_trial_offset=per_trial_offset)
    w = torch.randn(T, 3, 2, dtype=torch.float64)
    args = (k0, A, B, gain, D, d) + ((V,) if V is not None else ())

    def f(*a):
        drv = a[6] if len(a) > 6 else None
        loss, kappa = latent_squared_error(*a[:4], drv, *a[4:6], data.X, data.mask,
                                           0.7, T, data.n_obs)
        # A term in the trajectories, as the activity penalty adds.
        return loss + (kappa * w).sum()

    def ref(*a):
        from sklearn_ltr._dynamics import readout

        drv = a[6] if len(a) > 6 else None
        kappa, H = simulate_latents_autograd(*a[:4], drv, 0.7, T)
        return (_model.data_loss(readout(H, *a[4:6]), data, "mse")
                + (kappa * w).sum())

    assert torch.autograd.gradcheck(f, args)
    torch.testing.assert_close(f(*args), ref(*args))
    g1 = torch.autograd.grad(f(*args), args, allow_unused=True)
    g2 = torch.autograd.grad(ref(*args), args, allow_unused=True)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b)


@pytest.mark.parametrize("loss", ["mse", "poisson"])
@pytest.mark.parametrize("mask", [False, True])
def test_readout_loss_equals_readout_then_data_loss(loss, mask):
    from sklearn_ltr._dynamics import readout

    H, D, d, data = _readout_problem(mask, seed=1)
    if loss == "poisson":
        data.X = data.X.abs().round()
    fused = _model.readout_loss(H, D, d, data, loss)
    ref = _model.data_loss(readout(H, D, d), data, loss)
    torch.testing.assert_close(fused, ref)
    g1 = torch.autograd.grad(fused, (H, D, d))
    g2 = torch.autograd.grad(ref, (H, D, d))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def _loss_problem(inputs, seed, K=4, R=2, N=7, T=6, n=5, m=3):
    """Parameters (Z0, C, A, B, D, d, M), data X, inputs U and the generator."""
    g = torch.Generator().manual_seed(seed)

    def mk(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    params = [mk(K, R), mk(K, R), mk(N, R), mk(N, R), mk(n, N), mk(n),
              mk(R, m) if inputs else None]
    X = torch.randn(T, K, n, generator=g, dtype=torch.float64)
    U = torch.randn(T, K, m, generator=g, dtype=torch.float64) if inputs else None
    return params, X, U, g


@pytest.mark.parametrize("inputs", [False, True])
def test_evaluate_loss_matches_evaluate(inputs):
    """The fused training path gives the loss and gradients of evaluate + data_loss."""
    T = 6
    params, X, U, _ = _loss_problem(inputs, seed=3, T=T)
    data = _model.Data(X, None, U, X.numel())
    kw = dict(alpha=0.4, n_timepoints=T)
    kappa, value = _model.evaluate_loss(*params, data, "mse", **kw)
    kappa_ref, eta = _model.evaluate(*params, U, **kw)
    ref = _model.data_loss(eta, data, "mse")
    torch.testing.assert_close(kappa, kappa_ref)
    torch.testing.assert_close(value, ref)
    leaves = [p for p in params if p is not None]
    for a, b in zip(torch.autograd.grad(value + kappa.sum(), leaves),
                    torch.autograd.grad(ref + kappa_ref.sum(), leaves)):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- #
# teacher forcing
# --------------------------------------------------------------------------- #
def _forced_reference(Z0, C, A, B, M, U, alpha, T, gamma, targets):
    """Teacher-forced latent recurrence written out step by step (autograd)."""
    gain, drive = _model._gain_drive(C, A, M, U, alpha)
    k = (1 - gamma) * Z0 + gamma * targets[0]
    kappas, Hs = [k], []
    for t in range(T):
        h = torch.tanh(k @ A.t())
        Hs.append(h)
        if t == T - 1:
            break
        free = (1 - alpha) * k + gain * (h @ B)
        if drive is not None:
            free = free + drive[t]
        k = (1 - gamma) * free + gamma * targets[t + 1]
        kappas.append(k)
    return torch.stack(kappas), torch.stack(Hs)


@pytest.mark.parametrize("loss", ["mse", "poisson"])
@pytest.mark.parametrize("inputs", [False, True])
def test_forced_loss_matches_step_by_step_reference(loss, inputs):
    """evaluate_loss(forcing=(g, targets)) mixes every state with its target."""
    from sklearn_ltr._dynamics import readout

    K, R, T, alpha, gamma = 4, 2, 6, 0.4, 0.3
    params, X, U, g = _loss_problem(inputs, seed=5, K=K, R=R, T=T)
    targets = torch.randn(T, K, R, generator=g, dtype=torch.float64)
    if loss == "poisson":
        X = X.abs().round()
    data = _model.Data(X, None, U, X.numel())
    kappa, value = _model.evaluate_loss(*params, data, loss, alpha=alpha,
                                         n_timepoints=T, forcing=(gamma, targets))
    Z0, C, A, B, D, d, M = params
    kappa_ref, H_ref = _forced_reference(Z0, C, A, B, M, U, alpha, T, gamma, targets)
    ref = _model.data_loss(readout(H_ref, D, d), data, loss)
    torch.testing.assert_close(kappa, kappa_ref)
    torch.testing.assert_close(value, ref)
    leaves = [p for p in params if p is not None]
    for a, b in zip(torch.autograd.grad(value + kappa.sum(), leaves),
                    torch.autograd.grad(ref + kappa_ref.sum(), leaves)):
        torch.testing.assert_close(a, b)
    # The forcing is real: without it the loss differs, and gamma=0 is no forcing.
    _, free = _model.evaluate_loss(*params, data, loss, alpha=alpha, n_timepoints=T)
    _, zero = _model.evaluate_loss(*params, data, loss, alpha=alpha, n_timepoints=T,
                                    forcing=(0.0, targets))
    assert abs(float(free.detach()) - float(value.detach())) > 1e-3
    assert float(zero.detach()) == float(free.detach())


def _quadratic_with_forcing(seen):
    """A loss that forcing makes easier: its forced values are below every free one."""
    target = torch.tensor([1.0, -2.0], dtype=torch.float64)

    def loss(p, gamma=0.0):
        seen.append(gamma)
        return ((p["w"] - target) ** 2).sum() * (1 - gamma) + 0.5 - 100 * gamma

    return loss


def test_forced_warm_start_schedule_and_best():
    """forcing_iter forced Adam steps with gamma falling linearly, then free ones."""
    seen = []
    params = {"w": torch.zeros(2, dtype=torch.float64)}
    res = _solver.optimize(_quadratic_with_forcing(seen), params, learning_rate=0.05,
                           max_iter=30, tol=0.0, n_iter_no_change=10 ** 6,
                           forcing=0.5, forcing_iter=10, forcing_lr=0.1)
    np.testing.assert_allclose(seen[:10], 0.5 * (1 - np.arange(10) / 10))
    assert all(s == 0.0 for s in seen[10:])
    assert res.n_forced == 10 and res.n_iter == 30 and len(res.loss_curve) == 30
    # The kept loss is the best free-running one, never a (lower) forced value.
    assert min(res.loss_curve[:10]) < res.loss
    assert res.loss == min(res.loss_curve[10:])
    assert res.loss == pytest.approx(
        float(_quadratic_with_forcing([])({"w": params["w"]})), abs=1e-12)


def test_forced_warm_start_leaves_one_free_iteration():
    seen = []
    res = _solver.optimize(_quadratic_with_forcing(seen),
                           {"w": torch.zeros(2, dtype=torch.float64)}, max_iter=5,
                           forcing=0.5, forcing_iter=100)
    assert res.n_forced == 4 and res.n_iter == 5 and seen[-1] == 0.0
    assert math.isfinite(res.loss)


def test_forced_warm_start_backs_off_from_divergence():
    """A non-finite forced loss restarts the warm start from the start, lr halved."""
    n_nan = [0]

    def loss(p, gamma=0.0):
        w = p["w"]
        if float(w.detach().abs().max()) > 2.0:
            n_nan[0] += 1
            return w.sum() * float("nan")
        return ((w - 0.4) ** 2).sum() * (1 - gamma)

    params = {"w": torch.zeros(2)}
    res = _solver.optimize(loss, params, learning_rate=0.01, max_iter=40, warmup=1,
                           forcing=0.5, forcing_iter=20, forcing_lr=8.0)
    assert n_nan[0] >= 1
    assert res.n_forced == 20 and len(res.loss_curve) == 40
    assert all(math.isfinite(v) for v in res.loss_curve)
    assert torch.isfinite(params["w"]).all() and math.isfinite(res.loss)
    with pytest.raises(_solver.FitDiverged, match="teacher-forced"):
        _solver.optimize(lambda p, gamma=0.0: p["w"].sum() * float("inf"),
                         {"w": torch.zeros(2)}, max_iter=50, forcing=0.5,
                         forcing_iter=10)


def test_interrupt_in_forced_warm_start_keeps_free_loss():
    seen = []

    def callback(n_iter, value):
        if n_iter == 5:
            raise KeyboardInterrupt

    params = {"w": torch.zeros(2, dtype=torch.float64)}
    res = _solver.optimize(_quadratic_with_forcing(seen), params, max_iter=100,
                           forcing=0.5, forcing_iter=20, forcing_lr=0.1,
                           callback=callback)
    assert res.interrupted and res.n_iter == 5 and res.n_forced == 5
    # The loss reported is the free-running loss where the warm start stopped.
    assert seen[-1] == 0.0
    assert res.loss == pytest.approx(
        float(_quadratic_with_forcing([])({"w": params["w"]})), abs=1e-12)
    assert res.loss < float(_quadratic_with_forcing([])(
        {"w": torch.zeros(2, dtype=torch.float64)}))


def test_per_trial_inference_runs_until_its_own_plateau():
    # Each trial's problem stops at its own plateau or at max_iter, not after
    # n_iter_no_change iterations whatever happens (the first finite loss is
    # progress: a rule comparing with ``inf - tol * inf`` never saw any).
    calls = []

    def loss_fn(p):
        calls.append(1)
        return ((p["w"] - torch.tensor([[3.0], [0.5]])) ** 2).sum(1)

    params = {"w": torch.zeros(2, 2)}
    _solver.optimize_per_trial(loss_fn, params, max_iter=500, n_iter_no_change=10)
    assert 10 < len(calls) < 500
    np.testing.assert_allclose(params["w"].numpy(), [[3.0, 3.0], [0.5, 0.5]], atol=1e-2)


def test_fit_memory_counts_the_kept_unit_rates(monkeypatch):
    """The memory guard counts the rates a small fit keeps for its backward pass."""
    from sklearn_ltr import rnn

    # Many units, few neurons and held-out entries (whose evaluation holds the
    # rates too): a training step, not the initialisation, sets the peak, so the
    # kept rates (4 bytes each) show in the estimate.
    shape, kw = (100, 50, 5), dict(n_units=500, rank=2, holdout=True)
    kept = sum(rnn._fit_memory(*shape, **kw))
    monkeypatch.setattr(rnn, "KEPT_RATES_MAX", 0)
    formed_again = sum(rnn._fit_memory(*shape, **kw))
    assert kept - formed_again == 4 * 100 * 50 * 500
