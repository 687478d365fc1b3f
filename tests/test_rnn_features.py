"""Features of the RNN estimators: inputs, conditions, Poisson, missing data, fits."""

import re
import warnings

import numpy as np
import pytest
import torch
from _checks import make_small
from sklearn.exceptions import ConvergenceWarning

from sklearn_ltr import LowRankRNN, LowTensorRankRNN, _model
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

FAST = dict(n_units=16, max_iter=80, random_state=0)


@pytest.fixture(scope="module")
def driven():
    """A rank-2 network driven by pulses: activity depends on the inputs."""
    rng = np.random.RandomState(0)
    K, T, N, R, m = 30, 15, 24, 2, 2
    A = rng.standard_normal((N, R))
    B = A @ np.array([[1.2, 0.0], [0.0, 1.2]]) + 0.2 * rng.standard_normal((N, R))
    M = np.array([[2.0, 0.0], [0.0, 2.0]])
    U = np.zeros((K, T, m))
    U[np.arange(K), 6, rng.randint(0, m, K)] = rng.uniform(1.0, 2.0, K)
    alpha = 0.5
    x = np.zeros((K, N))
    H = np.zeros((K, T, N))
    for t in range(T):
        H[:, t] = np.tanh(x)
        x = (1 - alpha) * x + alpha * (H[:, t] @ B @ A.T / N + U[:, t] @ M.T @ A.T)
    D = 2 * rng.standard_normal((12, N)) / np.sqrt(N)
    X = H @ D.T + 0.05 * rng.standard_normal((K, T, 12))
    return X, U


def test_inputs_are_used(driven):
    X, U = driven
    est = LowRankRNN(rank=2, n_units=24, random_state=0).fit(X[:20], inputs=U[:20])
    assert est.input_map_.shape == (2, 2) and est.n_inputs_ == 2
    with_inputs = est.score(X[20:], inputs=U[20:])
    assert with_inputs > 0.99
    # The fitted network responds to the pulses it is given: with none, or on the
    # other channel, the held-out trials are predicted far worse.
    assert est.score(X[20:], inputs=np.zeros_like(U[20:])) < 0.6
    assert est.score(X[20:], inputs=U[20:, :, ::-1].copy()) < 0.0
    # An autonomous network can come close (from an inferred initial state near
    # rest along a growing mode it stays quiet, then grows: 0.995 with
    # exact_readout=True, 0.884 without), but not as close.
    without = LowRankRNN(rank=2, n_units=24, random_state=0).fit(X[:20]).score(X[20:])
    assert with_inputs > without, (with_inputs, without)
    with pytest.raises(ValueError, match="fitted with external inputs"):
        est.predict(X[20:])
    with pytest.raises(ValueError, match="inputs must have shape"):
        est.predict(X[20:], inputs=U[:5])


def test_condition_labels_share_initial_states(small):
    est = LowTensorRankRNN(rank=2, **FAST).fit(small.X, small.y)
    n_cond = len(np.unique(small.y))
    assert est.initial_states_.shape == (n_cond, 2)
    np.testing.assert_array_equal(est.conditions_, np.unique(small.y))
    assert np.isfinite(est.score(small.X, small.y))
    # With labels, initial states are taken from the condition, not re-inferred.
    Z_pred = est.transform(small.X, small.y)[:, 0]
    np.testing.assert_allclose(Z_pred, est.initial_states_[small.y], rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="not seen in fit"):
        est.predict(small.X[:2], np.array([99, 99]))
    with pytest.raises(ValueError, match="one condition label per trial"):
        est.fit(small.X, small.y[:-1])


def test_poisson_loss_on_spike_counts():
    data = make_low_tensor_rank_rnn(n_trials=40, n_timepoints=20, n_neurons=20,
                                    rank=2, noise=0.0, random_state=1)
    rng = np.random.RandomState(0)
    rates = np.log1p(np.exp(2 * data.X_clean))  # softplus
    counts = rng.poisson(rates).astype(float)
    est = LowTensorRankRNN(rank=2, n_units=30, loss="poisson", random_state=0)
    est.fit(counts[:30])
    pred = est.predict(counts[30:])
    assert (pred >= 0).all()
    bits = est.score(counts[30:])  # bits per spike over a mean-rate model
    assert 0.05 < bits < 5
    with pytest.raises(ValueError, match="non-negative"):
        LowTensorRankRNN(loss="poisson").fit(-counts)


def test_missing_entries_are_fitted_around(small):
    rng = np.random.RandomState(0)
    X = small.X.copy()
    X[rng.rand(*X.shape) < 0.1] = np.nan
    est = LowTensorRankRNN(rank=2, **FAST).fit(X)
    for name in ["left_factors_", "right_factors_", "trial_factors_", "readout_"]:
        assert np.isfinite(getattr(est, name)).all()
    assert np.isfinite(est.predict(X)).all()
    assert np.isfinite(est.transform(X)).all()
    assert np.isfinite(est.score(X))


def test_missing_entries_are_not_fitted():
    """Missing entries are zeroed and masked out of the loss; fits are deterministic."""
    data = make_low_tensor_rank_rnn(n_trials=12, n_timepoints=10, n_neurons=8, rank=2,
                                    random_state=0)
    X = data.X.copy()
    X[:, :3, :2] = np.nan
    a = LowRankRNN(rank=2, **FAST).fit(X)
    b = LowRankRNN(rank=2, **FAST).fit(X)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    from sklearn_ltr._model import Data

    d = Data.from_numpy(X, None, torch.device("cpu"))
    assert d.n_obs == np.isfinite(X).sum() and d.mask is not None
    assert float(d.X[~d.mask].abs().sum()) == 0.0


def test_convergence_warning_and_loss_curve(small):
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):
        est = LowTensorRankRNN(rank=2, n_units=16, max_iter=5, random_state=0)
        est.fit(small.X)
    assert est.n_iter_ == 5 and len(est.loss_curve_) == 5


def test_converges_before_max_iter(small):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = LowRankRNN(rank=2, n_units=16, max_iter=3000, random_state=0).fit(small.X)
    assert est.n_iter_ < 3000
    # Against the free-running loss of the initial parameters (one iteration).
    start = LowRankRNN(rank=2, n_units=16, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start.fit(small.X)
    assert est.best_loss_ < 0.5 * start.best_loss_


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_solvers_decrease_the_loss(small, solver):
    # Regression: L-BFGS with one iteration per step had a line-search budget of one
    # evaluation, took steps of length 0 and never moved.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = LowTensorRankRNN(rank=2, n_units=16, solver=solver, max_iter=60,
                               random_state=0).fit(small.X)
    assert est.loss_curve_[-1] < 0.7 * est.loss_curve_[est.n_forced_]


@pytest.mark.parametrize("solver, rate", [("adam", 0.05), ("lbfgs", 1.0),
                                          ("lbfgs-adam", 0.02)])
def test_default_learning_rate_follows_the_solver(small, solver, rate):
    # learning_rate=None: Adam's step size 0.05, L-BFGS's initial step 1.0, or 0.02
    # for Adam after the L-BFGS start (max_iter=15: 3 L-BFGS iterations, then Adam).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = [LowTensorRankRNN(rank=2, n_units=16, solver=solver, max_iter=15,
                                 learning_rate=lr, random_state=0).fit(small.X)
                for lr in (None, rate, 2 * rate)]
    assert fits[0].learning_rate is None
    np.testing.assert_array_equal(fits[0].loss_curve_, fits[1].loss_curve_)
    # The rate matters, so the equality above says which one None resolved to.
    assert not np.array_equal(fits[0].loss_curve_, fits[2].loss_curve_)


def test_n_init_keeps_the_best(small):
    single = LowTensorRankRNN(rank=2, **FAST).fit(small.X)
    multi = LowTensorRankRNN(rank=2, n_init=3, **FAST).fit(small.X)
    assert multi.best_loss_ <= single.best_loss_ + 1e-12


def test_orthonormal_readout(small):
    est = LowTensorRankRNN(rank=2, orthonormal_readout=True, **FAST).fit(small.X)
    D = est.readout_
    np.testing.assert_allclose(D @ D.T, np.eye(D.shape[0]), atol=1e-5)
    with pytest.raises(ValueError, match="n_neurons <= n_units"):
        LowTensorRankRNN(orthonormal_readout=True, n_units=5).fit(small.X)


def test_low_rank_weights_are_trial_invariant(small):
    est = LowRankRNN(rank=2, **FAST).fit(small.X)
    W = est.weight_tensor()
    assert W.shape == (small.X.shape[0], 16, 16)
    np.testing.assert_array_equal(W[0], W[-1])
    assert np.linalg.matrix_rank(W[0], tol=1e-8) <= 2
    assert not hasattr(est, "trial_factors_")


def test_trial_factors_normalised(small):
    est = LowTensorRankRNN(rank=2, **FAST).fit(small.X)
    C = est.trial_factors_
    np.testing.assert_allclose(np.sqrt((C ** 2).mean(0)), 1.0, rtol=1e-6)
    assert (C.mean(0) > 0).all()


def test_smoothness_prior_smooths_trial_factors(planted):
    X = planted.X[:40]
    rough = LowTensorRankRNN(rank=3, n_units=30, trial_length_scale=None,
                             random_state=0).fit(X)
    smooth = LowTensorRankRNN(rank=3, n_units=30, trial_length_scale=20.0,
                              random_state=0).fit(X)

    def roughness(C):
        return np.mean(np.diff(C, axis=0) ** 2)

    assert roughness(smooth.trial_factors_) < 0.5 * roughness(rough.trial_factors_)


@pytest.mark.parametrize("solver", ["adam", "lbfgs-adam"])
def test_interrupt_keeps_best_parameters(small, monkeypatch, solver):
    # A Ctrl-C arriving in the 30th evaluation of the training loss: with Adam, in
    # iteration 30; with the L-BFGS start, whose first line searches evaluate the
    # loss once to about twice per iteration (here, with the least-squares readout,
    # 30 evaluations make 14 iterations), earlier.
    # Every evaluation of the projected loss (the readout set by least squares)
    # ends in readout_loss.
    calls = {"n": 0}
    original = _model.readout_loss

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(_model, "readout_loss", interrupting)
    # Without the teacher-forced warm start (its interruption: test_determinism).
    est = LowTensorRankRNN(rank=2, n_units=16, max_iter=500, solver=solver,
                           teacher_forcing=0.0, random_state=0)
    with pytest.warns(UserWarning, match=r"interrupted after (\d+) iterations") as rec:
        est.fit(small.X)
    monkeypatch.setattr(_model, "readout_loss", original)
    n_done = int(re.search(r"after (\d+) iterations", str(rec[0].message)).group(1))
    assert est.n_iter_ == len(est.loss_curve_) == n_done
    if solver == "adam":
        assert n_done == 29
        assert est.best_loss_ == pytest.approx(min(est.loss_curve_), rel=1e-6)
    else:
        assert 10 <= n_done < 29
        # The curve holds the loss where each iteration started; the best point
        # can be one the interrupted line search had already evaluated.
        assert est.best_loss_ <= min(est.loss_curve_)
    assert np.isfinite(est.predict(small.X)).all()


def test_divergence_never_returns_nan(small):
    est = LowTensorRankRNN(rank=2, n_units=16, learning_rate=50.0, max_iter=100,
                           random_state=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(small.X * 1e3)
    except ValueError as exc:
        assert "diverged" in str(exc) and "learning_rate" in str(exc)
    else:
        for name in ["left_factors_", "right_factors_", "trial_factors_", "readout_"]:
            assert np.isfinite(getattr(est, name)).all()


def test_verbose_shows_progress(small, capsys):
    LowRankRNN(rank=1, n_units=8, max_iter=3, verbose=1, random_state=0).fit(small.X)
    err = capsys.readouterr().err
    assert "LowRankRNN" in err


def test_silent_by_default(small, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LowRankRNN(rank=1, n_units=8, max_iter=3, random_state=0).fit(small.X)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_device_resolution(small, monkeypatch):
    est = LowRankRNN(rank=1, n_units=8, max_iter=3, device="auto", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(small.X)
    assert est.device_.type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        LowRankRNN(device="cuda").fit(small.X)


@pytest.mark.parametrize("Est", [LowTensorRankRNN, LowRankRNN])
def test_teacher_forced_warm_start(small, Est):
    # max_iter=60: the warm start takes min(forcing_iter, max_iter // 3) = 20 of them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = {f: Est(rank=2, n_units=16, max_iter=60, teacher_forcing=f,
                       random_state=0).fit(small.X) for f in (0.0, 0.5)}
        rand = [Est(rank=2, n_units=16, max_iter=30, init="random", teacher_forcing=f,
                    random_state=0).fit(small.X) for f in (0.0, 0.5)]
    forced, free = fits[0.5], fits[0.0]
    assert forced.n_iter_ == len(forced.loss_curve_) == 60
    # Both start from the same PCA initialisation; forcing changes the first loss.
    assert forced.loss_curve_[0] < free.loss_curve_[0]
    assert not np.array_equal(forced.loss_curve_[20:], free.loss_curve_[20:])
    # best_loss_ is a free-running loss: after the warm start, or at a point the
    # warm start passed through (its free-running loss is evaluated every 10
    # iterations, without gradient, and the solver starts from the best).
    assert forced.best_loss_ <= min(forced.loss_curve_[20:]) * (1 + 1e-6)
    assert np.isfinite(forced.score(small.X))
    # Only init='pca' has target trajectories: with random starts, no forcing.
    np.testing.assert_array_equal(rand[0].loss_curve_, rand[1].loss_curve_)


@pytest.mark.parametrize("params, name", [
    (dict(teacher_forcing=1.0), "teacher_forcing"),
    (dict(teacher_forcing=-0.1), "teacher_forcing"),
    (dict(forcing_iter=-1), "forcing_iter"),
    (dict(forcing_iter=2.5), "forcing_iter"),
])
def test_forcing_parameters_validated(small, params, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        LowTensorRankRNN(rank=2, n_units=16, max_iter=5, **params).fit(small.X)


# ------------------------------------------------------- the least-squares readout
@pytest.mark.parametrize("Est", [LowTensorRankRNN, LowRankRNN])
def test_exact_readout_reaches_a_lower_loss_in_as_many_iterations(Est, planted):
    # The same fit with the readout stepped by Adam and set by least squares (the
    # default), 150 iterations each (50 of warm start).
    params = dict(rank=3, n_units=30, max_iter=150, tol=0.0, n_iter_no_change=200,
                  random_state=0)
    stepped = Est(exact_readout=False, **params).fit(planted.X)
    exact = Est(**params).fit(planted.X)
    assert exact.best_loss_ < stepped.best_loss_, (exact.best_loss_,
                                                    stepped.best_loss_)
    # The fitted readout is the least-squares one for the fitted rates.
    assert np.isfinite(exact.predict(planted.X)).all()


@pytest.mark.parametrize("params, why", [
    ({"loss": "poisson"}, "loss='mse'"),
    ({"orthonormal_readout": True, "n_units": 16}, "orthonormal_readout=False"),
    ({"batch_size": 5}, r"all trials in every step \(batch_size=None\)"),
    ({"early_stopping": True}, r"no held-out entries \(early_stopping=False\)"),
])
def test_exact_readout_true_is_refused_where_it_does_not_apply(params, why, small):
    X = np.abs(np.round(small.X * 3)) if params.get("loss") == "poisson" else small.X
    est = make_small(LowTensorRankRNN, exact_readout=True, **params)
    with pytest.raises(ValueError, match=f"exact_readout=True needs (.* and )?{why}"):
        est.fit(X)
    # 'auto' fits where True is refused, stepping the readout.
    make_small(LowTensorRankRNN, exact_readout="auto", **params).fit(X)


def test_auto_solver_is_lbfgs_where_the_readout_is_projected(small):
    # solver='auto' (the default) fits with L-BFGS where the readout is set by
    # least squares, with Adam everywhere else; solver_ says which, and a solver
    # given is used as given. The plateau window 'auto' is 10 for L-BFGS with the
    # squared error, else 50 (squared error) or 150 (Poisson).
    from sklearn_ltr.rnn import _plateau_window

    X_missing = small.X.copy()
    X_missing[0, 0, 0] = np.nan
    cases = [({}, small.X, "lbfgs", 10),
             ({"exact_readout": False}, small.X, "adam", 50),
             ({"loss": "poisson"}, np.abs(small.X).round(), "adam", 150),
             ({"batch_size": 8}, small.X, "adam", 50),
             ({"early_stopping": True}, small.X, "adam", 50),
             ({}, X_missing, "adam", 50),
             ({"solver": "adam"}, small.X, "adam", 50),
             ({"solver": "lbfgs", "exact_readout": False}, small.X, "lbfgs", 10),
             ({"solver": "lbfgs", "loss": "poisson"}, np.abs(small.X).round(),
              "lbfgs", 150)]
    for params, X, solver, window in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = make_small(LowRankRNN, max_iter=5, **params).fit(X)
        assert (est.solver_, _plateau_window(est)) == (solver, window), params
    with pytest.raises(ValueError, match="'solver' parameter"):
        make_small(LowRankRNN, solver="newton").fit(small.X)


def test_readout_ridge_is_chosen_given_or_absent(small):
    # 'auto' (the default) chooses from the grid; a number is used as given;
    # with the stepped readout there is none.
    from sklearn_ltr._model import READOUT_RIDGES

    stepped = make_small(LowRankRNN, exact_readout=False, readout_ridge=0.3)
    assert stepped.fit(small.X).readout_ridge_ is None
    auto = make_small(LowTensorRankRNN).fit(small.X)
    assert auto.readout_ridge_ in READOUT_RIDGES
    fixed = make_small(LowTensorRankRNN, exact_readout=True, readout_ridge=0.3)
    assert fixed.fit(small.X).readout_ridge_ == 0.3
    # A different ridge, a different fit.
    assert not np.allclose(fixed.readout_, auto.readout_)
    with pytest.raises(ValueError, match="'readout_ridge' parameter"):
        make_small(LowRankRNN, exact_readout=True, readout_ridge=-1.0).fit(small.X)


def test_exact_readout_needs_fully_observed_data(small):
    X = small.X.copy()
    X[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"X without missing \(NaN\) entries"):
        make_small(LowRankRNN, exact_readout=True).fit(X)
    auto = make_small(LowRankRNN, exact_readout="auto").fit(X)
    assert np.isfinite(auto.predict(small.X)).all()


def test_exact_readout_takes_numpy_booleans(small):
    # set_params from a grid may give numpy booleans: np.False_ steps the readout
    # (and the memory guard does not count the least-squares readout), np.True_
    # sets it.
    from sklearn_ltr.rnn import _may_project

    off = make_small(LowRankRNN, exact_readout=np.False_)
    assert not _may_project(off, 20)
    on = make_small(LowRankRNN, exact_readout=np.True_)
    assert _may_project(on, 20)
    np.testing.assert_array_equal(
        off.fit(small.X).predict(small.X),
        make_small(LowRankRNN, exact_readout=False).fit(small.X).predict(small.X))
    np.testing.assert_array_equal(on.fit(small.X).predict(small.X),
                                  make_small(LowRankRNN).fit(small.X).predict(small.X))
