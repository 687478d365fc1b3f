"""Mini-batches of trials (``batch_size``): the loss they estimate, the epochs of the
solver, the estimators' parameter, and the memory guard's estimate."""

import numpy as np
import pytest
import torch
from _checks import RNNS, assert_same_state, class_id, make_small
from sklearn.base import clone

from sklearn_ltr import LowRankRNN, LowTensorRankRNN, _memory, _model
from sklearn_ltr._solver import MiniBatches, optimize
from sklearn_ltr.rnn import _check_fit_memory, _fit_memory

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


# --------------------------------------------------------------------------- #
# the model: the loss of a mini-batch
# --------------------------------------------------------------------------- #
def _model_and_data(K=9, T=6, n=5, N=8, R=2, missing=True, loss="mse"):
    """A LatentRNN with every whole-session term (trial-factor prior, drift) and data
    with missing entries that differ from trial to trial."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    network = _model.TrainableNetwork(rand(N, R), 0.3 * rand(N, R), rand(n, N), rand(n))
    factors = _model.BasisFactors(torch.ones(R), 0.3 * rand(4, R), rand(K, 4))
    drift = _model.OffsetDrift(0.1 * rand(3, n), rand(K, 3))
    model = _model.LatentRNN(network, _model.InitialStates(rand(K, R)), factors,
                             alpha=0.5, loss=loss, activity_penalty=1e-2,
                             drift=drift)
    model = model.to(torch.float64)
    X = rand(K, T, n).numpy().astype(np.float64)
    if loss == "poisson":
        X = np.round(np.exp(X))
    if missing:
        X[np.random.RandomState(0).uniform(size=X.shape) < 0.3] = np.nan
    return model, _model.Data.from_numpy(X, None, "cpu", torch.float64), K


@pytest.mark.parametrize("loss", ["mse", "poisson"])
def test_losses_of_a_partition_weighted_by_size_sum_to_the_full_loss(loss):
    # For any partition of the trials into batches, sum_b (|b| / K) loss(b) is the
    # loss on all trials: so the mean over the batches of a random partition is an
    # unbiased estimate, and the chunked evaluation of the solver is exact.
    model, data, K = _model_and_data(loss=loss)
    with torch.no_grad():
        full = float(model.loss(data))
        for sizes in ([4, 5], [1, 3, 5], [9]):
            order = torch.randperm(K, generator=torch.Generator().manual_seed(1))
            parts = torch.split(order, sizes)
            total = sum(len(p) / K * float(model.loss(data, trials=p)) for p in parts)
            assert total == pytest.approx(full, rel=1e-12)
        # A single batch is not the full loss (its trials' own entries count).
        assert float(model.loss(data, trials=torch.arange(3))) != pytest.approx(
            full, rel=1e-3)


def test_the_full_loss_of_all_trials_equals_the_loss_without_batches():
    model, data, K = _model_and_data()
    with torch.no_grad():
        np.testing.assert_allclose(float(model.loss(data, trials=torch.arange(K))),
                                   float(model.loss(data)), rtol=1e-12)


def test_trials_outside_the_batch_get_no_data_gradient_but_priors_stay_whole():
    model, data, K = _model_and_data()
    params = model.trainable()
    batch = torch.tensor([1, 4, 7])
    loss = model.loss(data, trials=batch)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    outside = torch.ones(K, dtype=torch.bool)
    outside[batch] = False
    assert torch.all(grads["states.Z"][outside] == 0)
    assert torch.all(grads["states.Z"][batch].abs().sum(1) > 0)


def test_the_batch_loss_weighs_the_whole_session_priors_against_all_data():
    # MAP weight of the priors (of all the coefficients, for the whole session):
    # 2 * mse * prior / n_obs, with the batch's unbiased mse and the whole data's
    # number of observed entries.
    model, data, K = _model_and_data()
    model.activity_penalty = 0.0
    batch = torch.tensor([1, 4, 7])
    with torch.no_grad():
        value = float(model.loss(data, trials=batch))
        plain = _model.LatentRNN(
            model.network, model.states, _model.GivenFactors(model.factors()),
            alpha=0.5, drift=_model.GivenOffsets(model.drift()))
        mse = float(plain.loss(data, trials=batch))
        prior = float(model.factors.prior() + model.drift.prior())
    assert prior > 0
    assert value == pytest.approx(mse * (1 + 2 * prior / data.n_obs), rel=1e-12)


def test_batch_targets_of_teacher_forcing_are_the_batch_trials():
    model, data, K = _model_and_data(missing=False)
    targets = torch.randn(data.X.shape[0], K, 2, dtype=torch.float64)
    batch = torch.tensor([0, 5, 8])
    with torch.no_grad():
        whole = model.loss(data, forcing=(0.5, targets), trials=batch)
        sub = model.loss(data, forcing=(0.5, targets + 1.0), trials=batch)
        # The targets of trials outside the batch do not matter.
        other = targets.clone()
        other[:, [1, 2, 3]] += 5.0
        same = model.loss(data, forcing=(0.5, other), trials=batch)
    assert float(whole) != float(sub)
    assert float(whole) == float(same)


# --------------------------------------------------------------------------- #
# the solver: epochs of mini-batches
# --------------------------------------------------------------------------- #
def test_mini_batches_cover_every_trial_once_per_epoch_in_near_equal_sizes():
    batches = MiniBatches(23, 5, torch.Generator().manual_seed(0))
    assert len(batches) == 5
    epochs = [batches.epoch() for _ in range(3)]
    for epoch in epochs:
        assert sorted(len(b) for b in epoch) == [4, 4, 5, 5, 5]
        assert sorted(torch.cat(epoch).tolist()) == list(range(23))
    # A new random order each epoch, the same ones from the same seed.
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))
    again = MiniBatches(23, 5, torch.Generator().manual_seed(0))
    assert all(torch.equal(torch.cat(again.epoch()), torch.cat(e)) for e in epochs)
    assert [c.tolist() for c in batches.chunks()][0] == [0, 1, 2, 3, 4]


def _least_squares(K=12, batch_size=4, **kwargs):
    """A per-trial least-squares problem whose loss is a mean over trials."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(K, 3, generator=g)
    calls = []

    def loss_fn(params, gamma=None, trials=None):
        calls.append(None if trials is None else trials.tolist())
        rows = target if trials is None else target[trials]
        w = params["w"] if trials is None else params["w"][trials]
        return ((w - rows) ** 2).mean() + 0.01 * (params["w"] ** 2).mean()

    params = {"w": torch.zeros(K, 3)}
    batches = MiniBatches(K, batch_size, torch.Generator().manual_seed(1))
    result = optimize(loss_fn, params, batches=batches, **kwargs)
    return result, calls, target


def test_optimize_with_mini_batches_counts_epochs_and_minimises():
    result, calls, target = _least_squares(max_iter=300, learning_rate=0.05, tol=0.0,
                                           n_iter_no_change=400)
    assert result.n_iter == len(result.loss_curve) == 300
    # Three mini-batches of four trials per epoch, each trial once per epoch.
    assert len(calls) == 900 and all(len(c) == 4 for c in calls)
    assert sorted(sum(calls[:3], [])) == list(range(12))
    # Ridge solution w = target / 1.01.
    np.testing.assert_allclose(result.params["w"], target / 1.01, atol=2e-2)
    assert result.loss_curve[-1] < 0.02 * result.loss_curve[0]


def test_optimize_with_mini_batches_probes_the_exact_loss_in_chunks():
    result, calls, _ = _least_squares(max_iter=30, forcing=0.5, forcing_iter=10,
                                      forcing_probe=5, tol=0.0, n_iter_no_change=50)
    # Probes after forced epochs 5 and 10: the three chunks in order, no gradient.
    chunks = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert calls[15:18] == chunks and calls[33:36] == chunks
    assert result.n_forced == 10 and result.n_iter == 30


def test_optimize_refuses_mini_batches_with_lbfgs():
    for kwargs in ({"solver": "lbfgs"}, {"lbfgs_iter": 5}):
        with pytest.raises(ValueError, match="mini-batches need solver='adam'"):
            _least_squares(max_iter=5, **kwargs)


# --------------------------------------------------------------------------- #
# the estimators
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", RNNS, ids=class_id)
def test_batch_size_at_or_above_n_trials_is_the_full_batch_exactly(Est, small):
    X = small.X
    reference = make_small(Est).fit(X)
    assert reference.batch_size is None
    for batch_size in (X.shape[0], X.shape[0] + 7):
        assert_same_state(make_small(Est, batch_size=batch_size).fit(X), reference)


@pytest.mark.parametrize("Est", RNNS, ids=class_id)
def test_mini_batch_fits_are_reproducible_and_differ_from_the_full_batch(Est, small):
    X, y = small.X, small.y
    a = make_small(Est, batch_size=6).fit(X, y)
    b = make_small(Est, batch_size=6).fit(X, y)
    assert_same_state(a, b)
    full = make_small(Est).fit(X, y)
    assert a.n_iter_ == full.n_iter_ == 15  # epochs, as max_iter
    assert not np.array_equal(a.left_factors_, full.left_factors_)
    # Another random_state draws other batches (and another initialisation).
    c = make_small(Est, batch_size=6, random_state=1).fit(X, y)
    assert not np.array_equal(a.loss_curve_, c.loss_curve_)


@pytest.mark.parametrize("Est", [LowTensorRankRNN, LowRankRNN], ids=class_id)
def test_mini_batch_fit_scores_close_to_the_full_batch(Est, planted):
    # 50 training trials of the planted session, 10 held out (interleaved).
    test = np.arange(2, 60, 6)
    train = np.setdiff1d(np.arange(60), test)
    params = dict(rank=3, n_units=30, max_iter=150, random_state=0,
                  infer_max_iter=50)
    # The same optimiser on all trials: the least-squares readout (on with full
    # batches, not with mini-batches) reaches a lower loss in 150 iterations.
    full = Est(exact_readout=False, **params).fit(planted.X[train])
    mini = Est(batch_size=10, **params).fit(planted.X[train])
    s_full, s_mini = full.score(planted.X[test]), mini.score(planted.X[test])
    assert s_full > 0.5
    assert s_mini > s_full - 0.05, (s_mini, s_full)
    # The epoch losses estimate the same objective (measured: within 8 %; a batch
    # loss not scaled to the whole data's entries is 4-5 times smaller).
    assert 0.75 < mini.best_loss_ / full.best_loss_ < 1.33, (mini.best_loss_,
                                                             full.best_loss_)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "10", [4]])
def test_bad_batch_size_is_refused(batch_size, small):
    est = make_small(LowTensorRankRNN, batch_size=batch_size)
    with pytest.raises(ValueError, match="'batch_size' parameter"):
        est.fit(small.X)


@pytest.mark.parametrize("solver", ["lbfgs", "lbfgs-adam"])
def test_mini_batches_with_lbfgs_are_refused_before_the_fit(solver, small):
    est = make_small(LowTensorRankRNN, batch_size=5, solver=solver)
    with pytest.raises(ValueError, match=r"batch_size=5 \(below n_trials=20\) "
                                         r"needs solver='adam', got solver="):
        est.fit(small.X)
    assert not hasattr(est, "n_iter_")
    # All trials in every step: L-BFGS is fine.
    make_small(LowTensorRankRNN, batch_size=20, solver=solver).fit(small.X)


@pytest.mark.parametrize("Est", RNNS, ids=class_id)
def test_batch_size_is_a_cloneable_parameter(Est):
    est = Est(batch_size=32)
    assert est.get_params()["batch_size"] == 32
    assert clone(est).batch_size == 32
    assert est.set_params(batch_size=None).batch_size is None
    assert Est().batch_size is None


# --------------------------------------------------------------------------- #
# the memory guard
# --------------------------------------------------------------------------- #
def test_memory_estimate_counts_one_mini_batch_of_the_training_steps():
    # Poisson counts through autograd keep the (trials, bins, units) rates: with
    # many units the training step, not the initialisation, sets the peak.
    shape, kw = (2000, 50, 20), dict(n_units=1000, rank=3, loss="poisson")
    full = sum(_fit_memory(*shape, **kw))
    mini = sum(_fit_memory(*shape, batch_size=100, **kw))
    same = sum(_fit_memory(*shape, batch_size=5000, **kw))
    assert same == full
    assert mini < full / 2
    # A mini-batch's copy of its data is counted: never below the full batch's
    # estimate when the initialisation sets both peaks.
    small = (2000, 50, 100)
    assert sum(_fit_memory(*small, n_units=200, rank=5, batch_size=100)) == sum(
        _fit_memory(*small, n_units=200, rank=5))


def test_memory_guard_accepts_a_session_that_fits_in_mini_batches(monkeypatch):
    shape = (2000, 50, 20)
    kw = dict(n_units=1000, rank=3, loss="poisson")
    mini = sum(_fit_memory(*shape, batch_size=100, **kw))
    monkeypatch.setattr(_memory, "_available_memory", lambda device: mini + 1)
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match=r"LowTensorRankRNN.fit on X of shape "
                                         r"\(2000, 50, 20\).* Or set a smaller "
                                         r"batch_size .*now None"):
        _check_fit_memory(LowTensorRankRNN(**kw), shape, 0, cpu)
    _check_fit_memory(LowTensorRankRNN(batch_size=100, **kw), shape, 0, cpu)
    # Where the initialisation sets the peak, batch_size is not suggested.
    monkeypatch.setattr(_memory, "_available_memory", lambda device: 1000)
    with pytest.raises(ValueError, match="Lower n_units") as info:
        _check_fit_memory(LowTensorRankRNN(), (2000, 50, 100), 0, cpu)
    assert "batch_size" not in str(info.value)


def test_memory_estimate_counts_the_gaussian_processes_over_many_trials():
    # An n_trials x n_trials eigendecomposition: 48 bytes per pair of trials.
    host, device = _fit_memory(20000, 2, 3, n_units=4, rank=1)
    assert host + device >= 48 * 20000 ** 2
