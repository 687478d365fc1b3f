"""Early stopping on held-out (trial, neuron) pairs: solver, data, fits, defaults."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from sklearn_ltr import LowRankRNN, LowTensorRankRNN
from sklearn_ltr._model import Data
from sklearn_ltr._solver import FitResult, optimize
from sklearn_ltr.datasets import make_low_tensor_rank_rnn
from sklearn_ltr.rnn import _holdout_entries, _warn_about_fit

RNNS = [LowRankRNN, LowTensorRankRNN]


@pytest.fixture(scope="module")
def counts():
    """Spike counts of a planted rank-2 network: 40 trials, 20 bins, 16 neurons."""
    data = make_low_tensor_rank_rnn(n_trials=40, n_timepoints=20, n_neurons=16,
                                    rank=2, noise=0.0, random_state=1)
    rates = np.log1p(np.exp(1.5 * data.X_clean - 1.0))  # softplus
    return np.random.RandomState(0).poisson(rates).astype(float)


# --------------------------------------------------------------------- solver
def _diverging_losses(params):
    # The training loss pulls w from 0 to 2; the held-out loss is lowest at 1.
    w = params["w"]
    return ((w - 2.0) ** 2).sum(), float(((w.detach() - 1.0) ** 2).sum())


def test_optimize_keeps_the_point_of_lowest_held_out_loss():
    w = torch.zeros(1)
    result = optimize(_diverging_losses, {"w": w}, learning_rate=0.02, max_iter=3000,
                      tol=0.0, n_iter_no_change=20, holdout=True)
    assert abs(w.item() - 1.0) < 0.03, w.item()
    # The held-out loss stopped the fit long before max_iter, at a plateau.
    assert result.converged and result.n_iter < 1000
    assert len(result.holdout_curve) == result.n_iter == len(result.loss_curve)
    assert result.holdout_loss == min(result.holdout_curve)
    # ``loss`` is the training loss where the kept parameters were evaluated.
    assert result.loss == pytest.approx((w.item() - 2.0) ** 2, rel=1e-5)
    # Without held-out entries the same problem is minimised: w goes to 2.
    w2 = torch.zeros(1)
    plain = optimize(lambda p: _diverging_losses(p)[0], {"w": w2},
                     learning_rate=0.02, max_iter=3000, tol=0.0,
                     n_iter_no_change=20)
    assert abs(w2.item() - 2.0) < 0.01 and plain.holdout_curve is None


def test_optimize_held_out_loss_with_warm_start_and_lbfgs():
    # The forced warm start's probes and an L-BFGS start offer points by their
    # held-out loss too.
    w = torch.zeros(1)

    def loss_fn(params, gamma=0.0):
        return _diverging_losses(params)

    result = optimize(loss_fn, {"w": w}, learning_rate=0.02, max_iter=400, tol=0.0,
                      n_iter_no_change=20, holdout=True, lbfgs_iter=5, forcing=0.5,
                      forcing_iter=30, forcing_probe=10)
    # The kept point is the best of those evaluated (by a probe, L-BFGS's line
    # search or Adam), not the training loss's minimum at w = 2.
    assert result.holdout_loss == pytest.approx((w.item() - 1.0) ** 2, rel=1e-5)
    assert result.holdout_loss <= min(result.holdout_curve[30:])
    assert abs(w.item() - 2.0) > 0.3, w.item()


def test_held_out_curve_restarts_with_a_diverged_warm_start():
    # The forced warm start gives a non-finite loss once, at its 5th iteration:
    # it starts over from where it began, and both curves forget its iterations.
    w = torch.zeros(1)
    calls = {"forced": 0}

    def loss_fn(params, gamma=0.0):
        loss, held = _diverging_losses(params)
        if gamma:
            calls["forced"] += 1
            if calls["forced"] == 5:
                return loss * float("nan"), held
        return loss, held

    result = optimize(loss_fn, {"w": w}, learning_rate=0.02, max_iter=200, tol=0.0,
                      n_iter_no_change=20, holdout=True, forcing=0.5,
                      forcing_iter=30)
    assert calls["forced"] > 30  # the warm start ran again after the back-off
    assert len(result.holdout_curve) == result.n_iter == len(result.loss_curve)


# ----------------------------------------------------------------------- data
def test_held_out_pairs_are_whole_observed_time_courses():
    rng = np.random.RandomState(0)
    X = rng.poisson(1.0, (20, 7, 10)).astype(float)
    X[0, :, 3] = np.nan  # an unobserved pair is never held out
    X[1, 2, 4] = np.nan
    est = LowRankRNN(loss="poisson", validation_fraction=0.25)
    held = _holdout_entries(est, X, seed=3)
    pairs = held.any(1)
    assert held.shape == X.shape and (held == pairs[:, None, :]).all()
    assert pairs.sum() == round(0.25 * 199) and not pairs[0, 3]
    np.testing.assert_array_equal(held, _holdout_entries(est, X, seed=3))
    assert not np.array_equal(held, _holdout_entries(est, X, seed=4))
    # 'auto': on for Poisson counts only.
    assert _holdout_entries(LowRankRNN(), X, 3) is None
    assert _holdout_entries(LowRankRNN(loss="poisson", early_stopping=False), X,
                            3) is None
    assert _holdout_entries(LowRankRNN(early_stopping=True), X, 3) is not None
    # At least one pair held out, at least one left to fit.
    tiny = X[:2, :, :1]
    assert _holdout_entries(LowRankRNN(early_stopping=True,
                                       validation_fraction=0.01), tiny, 0).any()
    assert not _holdout_entries(LowRankRNN(early_stopping=True,
                                           validation_fraction=0.99), tiny, 0).all()

    data = Data.from_numpy(X, None, "cpu", holdout=held)
    mask = np.swapaxes(data.mask.numpy(), 0, 1)
    holdout = np.swapaxes(data.holdout.numpy(), 0, 1)
    observed = ~np.isnan(X)
    assert not (mask & holdout).any()
    np.testing.assert_array_equal(mask | holdout, observed)
    assert (data.n_obs, data.n_holdout) == (mask.sum(), holdout.sum())
    np.testing.assert_array_equal(np.swapaxes(data.X.numpy(), 0, 1),
                                  np.where(observed, X, 0.0))


# ----------------------------------------------------------------------- fits
@pytest.mark.parametrize("Est", RNNS)
def test_poisson_fit_keeps_its_best_held_out_point(Est, counts):
    est = Est(rank=2, n_units=20, loss="poisson", max_iter=200, random_state=0)
    est.fit(counts[:30])
    curve = est.validation_loss_curve_
    assert len(curve) == est.n_iter_ == len(est.loss_curve_)
    # The kept point is the best held-out point evaluated (a probe of the warm
    # start included), better than where the free-running fit began.
    free = curve[est.n_forced_:]
    assert est.best_validation_loss_ <= min(free)
    assert est.best_validation_loss_ < free[0]
    assert np.isfinite(est.best_loss_)
    plain = Est(rank=2, n_units=20, loss="poisson", max_iter=50, early_stopping=False,
                random_state=0).fit(counts[:30])
    assert plain.validation_loss_curve_ is None and plain.best_validation_loss_ is None


@pytest.mark.slow
def test_poisson_fit_run_longer_does_not_get_worse(counts):
    """At 4 times the iterations with tol=0, the held-out score does not fall.

    With the defaults of ``loss='poisson'`` (early stopping, activity penalty
    0.1). Without them (the defaults of 'mse') the same long fit falls: the
    negative control, which shows that the test can fail.
    """
    train, test = counts[:16], counts[24:]
    params = dict(rank=2, n_units=40, loss="poisson", cosmoothing_folds=4,
                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        short = LowRankRNN(max_iter=200, **params).fit(train).score(test)
        long = LowRankRNN(max_iter=800, tol=0.0, **params).fit(train).score(test)
        plain = LowRankRNN(max_iter=800, tol=0.0, early_stopping=False,
                           activity_penalty=1e-4, **params).fit(train).score(test)
    assert long >= short - 0.01, (short, long)
    assert plain < long - 0.03, (plain, long)


def test_poisson_fits_are_reproducible(counts):
    a = LowRankRNN(rank=2, n_units=12, loss="poisson", max_iter=60,
                   random_state=5).fit(counts[:20])
    b = LowRankRNN(rank=2, n_units=12, loss="poisson", max_iter=60,
                   random_state=5).fit(counts[:20])
    np.testing.assert_array_equal(a.readout_, b.readout_)
    assert a.validation_loss_curve_ == b.validation_loss_curve_
    c = LowRankRNN(rank=2, n_units=12, loss="poisson", max_iter=60,
                   random_state=6).fit(counts[:20])
    assert c.validation_loss_curve_ != a.validation_loss_curve_


def test_mse_fit_with_early_stopping(counts):
    X = np.log1p(counts)
    est = LowRankRNN(rank=2, n_units=12, max_iter=60, early_stopping=True,
                     random_state=0).fit(X[:20])
    assert len(est.validation_loss_curve_) == est.n_iter_
    assert est.best_validation_loss_ <= min(est.validation_loss_curve_[est.n_forced_:])
    # The default for 'mse' is unchanged: no held-out entries.
    assert LowRankRNN(rank=2, n_units=12, max_iter=20, random_state=0).fit(
        X[:20]).validation_loss_curve_ is None


def test_auto_parameters_depend_on_the_loss(counts):
    from sklearn_ltr.rnn import _resolved

    names = ("activity_penalty", "tol", "n_iter_no_change", "early_stopping")
    mse, poisson = LowRankRNN(), LowRankRNN(loss="poisson")
    assert [_resolved(mse, name) for name in names] == [1e-4, 5e-3, 50, False]
    assert [_resolved(poisson, name) for name in names] == [0.1, 1e-4, 150, True]
    assert _resolved(LowRankRNN(loss="poisson", activity_penalty=0.0),
                     "activity_penalty") == 0.0
    # The fitted model and its inference on new trials use the resolved weight.
    est = LowRankRNN(rank=2, n_units=8, loss="poisson", max_iter=5,
                     random_state=0).fit(counts[:10])
    model = est._latent_model(est._frozen_network("cpu"), None, None)
    assert model.activity_penalty == 0.1


@pytest.mark.parametrize("params, match", [
    ({"activity_penalty": "big"}, "activity_penalty"),
    ({"activity_penalty": -1.0}, "activity_penalty"),
    ({"tol": "small"}, "tol"),
    ({"n_iter_no_change": "long"}, "n_iter_no_change"),
    ({"n_iter_no_change": 0}, "n_iter_no_change"),
    ({"early_stopping": "yes"}, "early_stopping"),
    ({"early_stopping": 1.5}, "early_stopping"),
    ({"validation_fraction": 0.0}, "validation_fraction"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"validation_fraction": "0.1"}, "validation_fraction"),
])
@pytest.mark.parametrize("Est", RNNS)
def test_early_stopping_parameters_are_validated(Est, params, match, counts):
    with pytest.raises(ValueError, match=match):
        Est(loss="poisson", **params).fit(counts[:10])


def test_warning_when_the_held_out_loss_never_decreases():
    result = FitResult({}, 1.0, [2.0] * 60, 60, True, False, holdout_curve=[1.0] * 60,
                       holdout_loss=1.0)
    est = LowRankRNN(loss="poisson", max_iter=60, n_iter_no_change=50)
    est.solver_ = "adam"  # as fit resolves solver='auto' for the Poisson loss
    with pytest.warns(ConvergenceWarning, match=r"did not decrease the loss of its "
                                                r"held-out entries .* set "
                                                r"early_stopping=False"):
        _warn_about_fit(est, result, None)
