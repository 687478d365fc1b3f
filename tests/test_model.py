"""The model object: one LatentRNN for fitting and for per-trial inference."""

import math

import numpy as np
import pytest
import torch

from sklearn_ltr import LowRankRNN, LowTensorRankRNN, _model
from sklearn_ltr._model import (
    BasisFactors,
    Data,
    FreeFactors,
    FrozenNetwork,
    GivenFactors,
    InitialStates,
    LatentRNN,
    SharedFactors,
    TrainableNetwork,
)
from sklearn_ltr._priors import GaussianProcessPrior, TrialInvariant
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


def _trainable_model(K=6, T=5, n=4, N=8, R=2, seed=0, factors=None):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    network = TrainableNetwork(rand(N, R), 0.3 * rand(N, R), rand(n, N), rand(n))
    states = InitialStates(rand(K, R))
    if factors is None:
        factors = BasisFactors(torch.ones(R), 0.3 * rand(3, R), rand(K, 3))
    model = LatentRNN(network, states, factors, alpha=0.5, activity_penalty=1e-3)
    X = rand(K, T, n).numpy()
    return model, Data.from_numpy(X, None, "cpu")


def test_mean_and_per_trial_losses_agree():
    # Fit (fused, mean over entries) and inference (per trial) evaluate the same
    # objective: with fully observed trials the mean of the per-trial data losses
    # is the mean loss.
    model, data = _trainable_model(factors=GivenFactors(torch.ones(6, 2)))
    model.activity_penalty = 0.0
    with torch.no_grad():
        mean = model.loss(data)
        per_trial = model.loss(data, per_trial=True)
    assert per_trial.shape == (6,)
    np.testing.assert_allclose(float(per_trial.mean()), float(mean), rtol=1e-5)


def test_trainable_parts_are_parameters_and_frozen_parts_buffers():
    model, _ = _trainable_model()
    assert list(model.trainable()) == [
        "network.A", "network.Bs", "network.Ds", "network.d", "states.Z",
        "factors.mu", "factors.Wc"]
    net = model.network.network()
    frozen = LatentRNN(
        FrozenNetwork(net.A.detach(), net.B.detach(), net.D.detach(), net.d.detach()),
        InitialStates(torch.zeros(3, 2)), FreeFactors(torch.ones(3, 2), torch.ones(2)),
        alpha=0.5)
    # Inference: only the per-trial parts move.
    assert list(frozen.trainable()) == ["states.Z", "factors.c"]


def test_frozen_network_reproduces_the_trainable_one():
    model, data = _trainable_model()
    state = model.export()
    frozen = FrozenNetwork(*(torch.as_tensor(state[k], dtype=torch.float32)
                             for k in ("A", "B", "D", "d")))
    C = torch.as_tensor(state["C"], dtype=torch.float32)
    twin = LatentRNN(frozen, InitialStates(model.states.Z.detach(), trainable=False),
                     GivenFactors(C), alpha=0.5)
    with torch.no_grad():
        _, eta = model.simulate(None, 5)
        _, eta_twin = twin.simulate(None, 5)
    # Normalising the trial factors moves their scale into B: the same network.
    np.testing.assert_allclose(eta_twin.numpy(), eta.numpy(), atol=1e-5)


def test_export_normalises_trial_factors():
    model, _ = _trainable_model(factors=BasisFactors(
        -2.0 * torch.ones(2), torch.zeros(3, 2), torch.randn(6, 3)))
    C = model.export()["C"]
    np.testing.assert_allclose(np.sqrt(np.mean(C ** 2, axis=0)), [1.0, 1.0])
    assert (C.mean(0) > 0).all()


def test_free_factors_penalty_pulls_toward_the_centre():
    factors = FreeFactors(torch.tensor([[1.0, 1.0], [3.0, 1.0]]), torch.ones(2))
    np.testing.assert_allclose(factors.penalty().detach().numpy(), [0.0, 1e-3 * 2.0])


def test_shared_factors_are_one_vector_for_every_trial():
    C = SharedFactors(torch.tensor([1.0, 2.0]), 4)()
    assert C.shape == (4, 2) and bool((C == torch.tensor([1.0, 2.0])).all())


def test_initialize_returns_raw_parameters_and_latents():
    data = make_low_tensor_rank_rnn(12, 8, 6, rank=2, random_state=0)
    d = Data.from_numpy(data.X, None, "cpu", torch.float64)
    params, latents = _model.initialize(
        d, rank=2, n_units=10, alpha=0.5, n_states=4,
        state_index=torch.as_tensor(data.y), loss="mse", orthonormal_readout=False,
        init="pca", generator=torch.Generator().manual_seed(0))
    assert params["Z"].shape == (4, 2) and params["M"] is None
    assert latents.shape == (8, 12, 2)
    # Principal-component scores scaled to unit variance.
    np.testing.assert_allclose(latents.reshape(-1, 2).std(0).numpy(), [1.0, 1.0],
                               rtol=1e-6)


@pytest.mark.parametrize("Est, Prior", [(LowTensorRankRNN, GaussianProcessPrior),
                                        (LowRankRNN, TrialInvariant)])
def test_each_estimator_asks_its_prior(Est, Prior):
    data = make_low_tensor_rank_rnn(12, 8, 6, rank=2, random_state=0)
    est = Est(rank=2, n_units=8, max_iter=10, random_state=0).fit(data.X)
    prior = est._trial_prior()
    assert isinstance(prior, Prior)
    C = prior.fitted_factors(est)
    assert C.shape == (12, 2)
    W = est.weight_tensor()
    np.testing.assert_allclose(
        W[3], (est.left_factors_ * C[3]) @ est.right_factors_.T / 8, atol=1e-12)
    assert est._trial_feature_name() == prior.feature_name


def test_fit_and_inference_minimise_the_same_loss(monkeypatch):
    # Per-trial inference on the training trials, started from the fitted states and
    # factors, must not raise the loss the fit reached on them: both minimise
    # LatentRNN.loss, the shared part frozen in inference.
    seen = {}
    original = LatentRNN.loss

    def recording(self, data, *, per_trial=False, forcing=None):
        value = original(self, data, per_trial=per_trial, forcing=forcing)
        if per_trial:
            seen.setdefault("first", value.detach().clone())
            seen["last"] = value.detach().clone()
        return value

    data = make_low_tensor_rank_rnn(16, 8, 6, rank=2, random_state=0)
    est = LowTensorRankRNN(rank=2, n_units=10, max_iter=40, random_state=0,
                           activity_penalty=0.0).fit(data.X)
    monkeypatch.setattr(LatentRNN, "loss", recording)
    est.predict(data.X[:4])
    assert math.isfinite(float(seen["last"].mean()))
    assert float(seen["last"].mean()) <= float(seen["first"].mean()) + 1e-7


# --------------------------------------------------------- the least-squares readout
def test_readout_least_squares_matches_numpy():
    rng = np.random.RandomState(0)
    H = rng.standard_normal((7, 5, 6)).astype(np.float32)
    Y = rng.standard_normal((7, 5, 3)).astype(np.float32)
    D, d = _model.readout_least_squares(torch.tensor(H), torch.tensor(Y), ridge=0.0)
    F = np.hstack([H.reshape(-1, 6), np.ones((35, 1))]).astype(np.float64)
    coef = np.linalg.lstsq(F, Y.reshape(-1, 3).astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(D.numpy(), coef[:6].T, atol=1e-4)
    np.testing.assert_allclose(d.numpy(), coef[6], atol=1e-4)
    bad = torch.tensor(H)
    bad[0, 0, 0] = math.nan
    assert _model.readout_least_squares(bad, torch.tensor(Y)) is None


def _ridge_cv_by_hand(H, Y, ridges, n_groups):
    """readout_ridge_cv written out: one solve per group and ridge, in numpy."""
    H, Y = H.numpy().astype(np.float64), Y.numpy().astype(np.float64)
    N = H.shape[-1]
    errors = np.zeros((n_groups, len(ridges)))
    for g in range(n_groups):
        train = [k for k in range(H.shape[1]) if k % n_groups != g]
        Ht, Yt = H[:, train].reshape(-1, N), Y[:, train].reshape(-1, Y.shape[-1])
        Hv, Yv = H[:, g::n_groups].reshape(-1, N), Y[:, g::n_groups].reshape(
            -1, Y.shape[-1])
        gram = Ht.T @ Ht
        for i, lam in enumerate(ridges):
            D = np.linalg.solve(gram + (lam * np.trace(gram) / N + 1e-12) * np.eye(N),
                                Ht.T @ Yt)
            errors[g, i] = ((Hv @ D - Yv) ** 2).sum() / (Yv ** 2).sum()
    mean = errors.mean(0)
    best = int(np.argmin(mean))
    se = errors[:, best].std(ddof=1) / np.sqrt(n_groups)
    return ridges[max(i for i in range(len(ridges)) if mean[i] <= mean[best] + se)]


@pytest.mark.parametrize("noise", [0.0, 0.3, 3.0, None])
def test_readout_ridge_cv_is_grouped_cross_validation_with_the_one_se_rule(noise):
    # Rates with a few nearly collinear units (where the ridge matters); targets
    # a readout of them plus noise (None: targets unrelated to the rates).
    rng = np.random.RandomState(0)
    base = rng.standard_normal((9, 23, 4))
    H = np.concatenate([base, base[..., :3] + 1e-3 * rng.standard_normal((9, 23, 3))],
                       axis=-1)
    Y = rng.standard_normal((9, 23, 5)) if noise is None else (
        H @ rng.standard_normal((7, 5)) + noise * rng.standard_normal((9, 23, 5)))
    H, Y = torch.tensor(H - H.mean((0, 1))), torch.tensor(Y - Y.mean((0, 1)))
    chosen = _model.readout_ridge_cv(H, Y)
    assert chosen == _ridge_cv_by_hand(H, Y, _model.READOUT_RIDGES, 5)
    if noise == 0.0:
        assert chosen == min(_model.READOUT_RIDGES)
    if noise is None:  # nothing to predict: shrink as far as the grid goes
        assert chosen == max(_model.READOUT_RIDGES)
    # Fewer trials than groups: one group per trial; one trial: no choice.
    assert _model.readout_ridge_cv(H[:, :3], Y[:, :3]) == _ridge_cv_by_hand(
        H[:, :3], Y[:, :3], _model.READOUT_RIDGES, 3)
    assert _model.readout_ridge_cv(H[:, :1], Y[:, :1]) is None
    bad = H.clone()
    bad[0, 0, 0] = math.nan
    assert _model.readout_ridge_cv(bad, Y) is None


def test_readout_ridge_is_chosen_every_so_many_calls():
    rng = np.random.RandomState(1)
    H = torch.tensor(rng.standard_normal((6, 10, 4)))
    clean = H @ torch.tensor(rng.standard_normal((4, 3)))
    noise = torch.tensor(rng.standard_normal((6, 10, 3)))
    ridge = _model.ReadoutRidge(every=3)
    first = ridge(H, clean, 2.0)
    assert ridge.value == _model.readout_ridge_cv(H, clean)
    assert first == ridge.absolute == 2.0 * ridge.value
    # Kept between choices, even when the targets change, relative to the
    # rates' variance of each call...
    assert ridge(H, noise, 5.0) == 5.0 * ridge.value == 2.5 * first
    assert ridge.value == _model.readout_ridge_cv(H, clean)
    ridge(H, noise, 1.0)
    # ...and chosen anew on the next one.
    assert ridge(H, noise, 3.0) == 3.0 * _model.readout_ridge_cv(H, noise)
    assert ridge.value == _model.readout_ridge_cv(H, noise) != _model.readout_ridge_cv(
        H, clean)
    # Held (L-BFGS's), the ridge itself stays between choices, whatever the
    # rates' variance.
    held = _model.ReadoutRidge(every=3, hold=True)
    assert [held(H, clean, v) for v in (2.0, 5.0, 1.0)] == [first] * 3
    assert held(H, noise, 3.0) == 3.0 * _model.readout_ridge_cv(H, noise)
    # A number stays; the solver takes either as its ridge.
    fixed = _model.ReadoutRidge(0.1)
    assert (fixed(H, noise, 2.0), fixed(H, noise, 9.0)) == (0.2, pytest.approx(0.9))
    D, _ = _model.readout_least_squares(H.clone(), noise.clone(), _model.ReadoutRidge())
    D_fixed, _ = _model.readout_least_squares(
        H.clone(), noise.clone(), _model.readout_ridge_cv(H - H.mean((0, 1)),
                                                          noise - noise.mean((0, 1))))
    torch.testing.assert_close(D, D_fixed)


@pytest.mark.parametrize("held", [True, False])
def test_projected_loss_has_the_gradient_it_is_given(held):
    # The loss the optimiser sees after fit_readout -- the loss plus the penalty
    # fit_readout returns, the readout set anew at every point -- is a function of
    # the other parameters whose derivative along any direction is the autograd
    # gradient's (central differences in float64), exactly for a held ridge
    # (hold=True, L-BFGS's). Without the penalty it is not: the readout's ridge
    # (large here, to make the gap plain) shifts the optimum. Adam's ridge follows
    # the rates' variance, whose derivative the gradient leaves out: a far
    # smaller gap.
    # Free trial factors: the prior of basis factors is weighed by the loss's own
    # (detached) estimate of the noise variance, a MAP weight whose derivative no
    # gradient carries (2 prior / n_obs of the loss: 2e-5 in the fits of
    # doc/performance.rst, but 0.4 % of this tiny problem's).
    g = torch.Generator().manual_seed(3)
    model, data = _trainable_model(seed=2, factors=FreeFactors(
        torch.randn(6, 2, generator=g), torch.ones(2)))
    model.double()
    data = Data.from_numpy(data.X.transpose(0, 1).numpy(), None, "cpu", torch.float64)
    ridge = _model.ReadoutRidge(0.5, hold=held)
    others = [p for name, p in model.named_parameters() if name not in model.READOUT]
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in others]

    def projected(step, with_penalty=True):
        with torch.no_grad():
            for p, v in zip(others, direction):
                p.add_(step * v)
            penalty = model.fit_readout(data, ridge)
            value = float(model.loss(data))
            for p, v in zip(others, direction):
                p.sub_(step * v)
        return value + penalty if with_penalty else value

    projected(0.0)  # the readout at the point itself
    for p in others:
        p.grad = None
    model.loss(data).backward()
    slope = sum(float((p.grad * v).sum()) for p, v in zip(others, direction))
    h = 1e-5
    gap = abs((projected(h) - projected(-h)) / (2 * h) - slope)
    gap_without = abs((projected(h, False) - projected(-h, False)) / (2 * h) - slope)
    assert gap_without > 1e-2 * abs(slope), (gap_without, slope)
    if held:
        assert gap < 1e-6 * abs(slope), (gap, slope)
    else:
        assert gap < 0.2 * gap_without, (gap, gap_without)  # 0.0028, 0.018


@pytest.mark.parametrize("with_drift", [False, True])
def test_projected_loss_is_fit_readout_then_the_loss(with_drift):
    # loss(project=ridge) solves the readout from the simulation it computes the
    # loss from: the same readout, loss, penalty and gradient as fit_readout
    # followed by loss, in one simulation instead of two.
    def grads(seed):
        model, data = _trainable_model()
        model.double()
        data = Data.from_numpy(data.X.transpose(0, 1).numpy(), None, "cpu",
                               torch.float64)
        if with_drift:
            g = torch.Generator().manual_seed(seed)
            model.drift = _model.OffsetDrift(
                torch.randn(2, 4, generator=g, dtype=torch.float64),
                torch.randn(6, 2, generator=g, dtype=torch.float64))
        for name in model.READOUT:
            model.get_parameter(name).requires_grad_(False)
        return model, data

    model, data = grads(1)
    penalty = model.fit_readout(data, 0.3)
    value = model.loss(data)
    value.backward()
    fused, fused_data = grads(1)
    fused_value, fused_penalty = fused.loss(fused_data, project=0.3)
    fused_value.backward()
    assert fused_penalty == pytest.approx(penalty, rel=1e-12) and penalty > 0
    torch.testing.assert_close(fused_value, value)
    for (name, p), q in zip(model.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q, p)
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, msg=name)
    assert float(model.network.A.grad.abs().max()) > 1e-3


@pytest.mark.parametrize("with_drift", [False, True])
def test_fit_readout_minimises_the_loss_over_the_readout(with_drift):
    # After fit_readout the loss's gradient with respect to the readout vanishes,
    # and the loss is below what the random readout gave; the drift's current
    # offsets are taken as they are.
    model, data = _trainable_model()
    if with_drift:
        g = torch.Generator().manual_seed(1)
        model.drift = _model.OffsetDrift(torch.randn(2, 4, generator=g),
                                         torch.randn(6, 2, generator=g))
    with torch.no_grad():
        before = float(model.loss(data))
    model.fit_readout(data)
    value = model.loss(data)
    value.backward()
    assert float(value) < before
    for p in (model.network.Ds, model.network.d):
        assert float(p.grad.abs().max()) < 1e-4 * (1 + float(p.abs().max()))
    # The other parameters still have a gradient.
    assert float(model.network.A.grad.abs().max()) > 1e-3
