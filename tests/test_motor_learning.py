"""The task-trained network over motor learning and its recovery by the estimator."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from sklearn_ltr import ConditionAverage, LowRankRNN, LowTensorRankRNN
from sklearn_ltr.analysis import (
    column_space,
    factor_similarity,
    gradient_rank_bounds,
    multilinear_rank,
    principal_angles,
    tensor_rank_curve,
)
from sklearn_ltr.datasets import make_motor_learning
from sklearn_ltr.model_selection import TrialBlockKFold

N_TARGETS = 8
TINY = dict(n_units=12, n_timepoints=15, n_targets=4, n_baseline=1, n_perturbation=2,
            n_washout=1, pretrain_iter=10)


@pytest.fixture(scope="module")
def session():
    """A small session: 40 units, 30 bins, 2 + 8 + 4 blocks of 8 targets.

    A weaker field learned faster than by default, so that eight blocks adapt.
    """
    return make_motor_learning(n_units=40, n_timepoints=30, n_baseline=2,
                               n_perturbation=8, n_washout=4, pretrain_iter=1500,
                               field_strength=8.0, learning_rate=0.01, noise=0.05,
                               random_state=0)


def _blocks(values):
    """Mean per block of one trial per target."""
    return np.asarray(values).reshape(-1, N_TARGETS).mean(1)


def test_shapes_and_contents(session):
    n_trials, T, N = 112, 30, 40
    assert session.X.shape == session.X_clean.shape == (n_trials, T, N)
    assert session.weights.shape == (n_trials, N, N)
    assert session.inputs.shape == (n_trials, T, 3)
    assert session.hand_position.shape == session.desired_position.shape == (
        n_trials, T, 2)
    assert session.input_weights.shape == (N, 3)
    assert session.output_weights.shape == (2, N)
    assert session.error.shape == session.lateral_error.shape == (n_trials,)
    np.testing.assert_array_equal(session.y, np.arange(n_trials) % N_TARGETS)
    assert list(np.unique(session.epoch, return_counts=True)[1]) == [16, 64, 32]
    assert list(session.epoch[[0, 16, 80]]) == ["baseline", "perturbation", "washout"]
    np.testing.assert_allclose(np.diff(session.time), 0.02)
    # Rates are tanh of the state; the noise is small.
    assert np.abs(session.X_clean).max() < 1
    resid = session.X - session.X_clean
    assert 0.04 < resid.std() / session.X_clean.std() < 0.06
    assert session.params["n_perturbation"] == 8


def learning_variance(data):
    """Variance of the clean activity that learning changes.

    Each trial's deviation from the mean baseline trajectory of its target.
    """
    Xc, y, epoch = data.X_clean, data.y, data.epoch
    base = np.stack([Xc[(epoch == "baseline") & (y == c)].mean(0)
                     for c in range(y.max() + 1)])
    return float((Xc - base[y]).var())


@pytest.mark.slow
def test_default_session_shows_its_learning_above_the_noise():
    # The built-in session of the demo: what learning changes in the activity is
    # well above the recording noise (measured: about 11 times its variance).
    data = make_motor_learning(random_state=0)
    ratio = learning_variance(data) / data.noise_std ** 2
    assert ratio > 5, ratio
    err = _blocks(data.error)  # 5 baseline, 20 perturbation, 10 washout blocks
    assert err[5] > 5 * err[:5].mean() and err[24] < 0.5 * err[5], err
    assert err[25] > 2 * err[24] and err[-1] < 0.2 * err[25], err


def test_weights_change_only_through_learning(session):
    W, epoch = session.weights, session.epoch
    base = np.flatnonzero(epoch == "baseline")
    # No learning in baseline: the weights of all baseline trials, and of the first
    # perturbation trial (updated only after it), are the pretrained ones.
    for k in list(base) + [base[-1] + 1]:
        np.testing.assert_array_equal(W[k], W[0])
    steps = np.linalg.norm(np.diff(W, axis=0), axis=(1, 2))
    assert np.all(steps[base[-1] + 1:] > 0)


def test_deterministic_given_random_state():
    a = make_motor_learning(**TINY, random_state=3)
    b = make_motor_learning(**TINY, random_state=3)
    c = make_motor_learning(**TINY, random_state=4)
    for key in ("X", "weights", "error", "hand_position"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a.X, c.X)


def test_pretraining_reaches_proficiency(session):
    curve = session.pretrain_loss_curve
    assert curve.shape == (1500,)
    # Root-mean-square distance from the desired path, in units of reach distance.
    assert np.sqrt(curve[-1]) < 0.1 < np.sqrt(curve[0])
    assert _blocks(session.error)[0] < 0.1


def test_learning_curve(session):
    err = _blocks(session.error)  # 2 baseline, 8 perturbation, 4 washout blocks
    baseline, pert, wash = err[:2], err[2:10], err[10:]
    np.testing.assert_allclose(baseline[0], baseline[1])  # nothing changes
    assert pert[0] > 1.5 * baseline.mean(), err  # the field disturbs the reach
    assert pert[-1] < 0.7 * pert[0], err  # learning reduces the error
    assert np.all(np.diff(pert) < 0), err
    assert wash[0] > 1.15 * pert[-1], err  # after-effect when the field is removed
    assert wash[-1] < 0.8 * wash[0], err  # and de-adaptation


def test_lateral_after_effect(session):
    lat = _blocks(session.lateral_error)
    baseline, pert, wash = lat[:2], lat[2:10], lat[10:]
    # The curl field pushes clockwise (negative); learning cancels part of it, and
    # the compensation pushes counter-clockwise once the field is gone.
    assert np.abs(baseline).max() < 0.02, lat
    assert pert[0] < -0.05 and abs(pert[-1]) < 0.5 * abs(pert[0]), lat
    assert wash[0] > 0.05 and wash[-1] < 0.6 * wash[0], lat


def test_weight_changes_have_low_tensor_rank(session):
    dW = session.weights - session.weights[0]
    ve = tensor_rank_curve(dW, [1, 2, 3, 4], n_init=2, random_state=0)
    ve = ve.variance_explained
    # Measured: about 0.53, 0.97, 0.99, 1.00.
    assert ve[0] < 0.8, ve
    assert ve[1] > 0.9 and ve[2] > 0.97, ve
    # Far below what the counting bound allows for tanh networks.
    n_steps = int(np.sum(session.epoch != "baseline")) - 1
    bounds = gradient_rank_bounds(40, 3, 2, 30, n_steps, init_rank=None)
    assert bounds.change_rank == 40
    measured = multilinear_rank(dW[session.epoch != "baseline"], 1e-2)
    assert max(measured[1:]) < 20, measured


def test_field_is_validated():
    with pytest.raises(ValueError, match="dt=0.1 must be <= tau"):
        make_motor_learning(**TINY, dt=0.1)
    with pytest.raises(ValueError, match="n_targets must be an integer >= 1"):
        make_motor_learning(**{**TINY, "n_targets": 0})
    with pytest.raises(ValueError, match="session is empty"):
        make_motor_learning(**{**TINY, "n_baseline": 0, "n_perturbation": 0,
                               "n_washout": 0})


def _fit(session, rank, trials=slice(None), max_iter=300, **params):
    params.setdefault("random_state", 0)
    est = LowTensorRankRNN(rank=rank, n_units=40, tau=session.tau_bins,
                           max_iter=max_iter, **params)
    return est.fit(session.X[trials], inputs=session.inputs[trials])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fitted_trial_factors_recover_weight_tensor_factors(session):
    # The estimator's latent units are not the network's units; only the trial
    # factors are comparable: with those of a CP fit of the weight changes W - W[0],
    # at the same rank. Both are centred over trials first: the fitted factors carry
    # the constant pretrained weights, and without centring any factor with a
    # positive mean would look similar to a learning curve.
    rank = 3
    dW = session.weights - session.weights[0]
    true = tensor_rank_curve(dW, [rank], n_init=2, random_state=0).factors[0][0]
    # Fits with max_iter=1000 (the default solver, L-BFGS with the least-squares
    # readout, stopped by its tolerance after 324-428 iterations on seeds 0-2).
    # The similarity depends on the optimisation's path as much as on the loss
    # reached: measured over random_state 0-19, it ranged from 0.287 to 0.905, median
    # 0.671 (3 of 20 below 0.55, 1 below 0.4); with Adam (solver='adam') from
    # 0.262 to 0.977, median 0.787, a seed-by-seed difference of +0.070 +/- 0.061
    # (doc/performance.rst); the random order below gives 0.10. Hence the median
    # of three seeds for the default, and lower bars for one seed of each variant.
    def similarity(est):
        C = est.trial_factors_
        return factor_similarity(C - C.mean(0), true - true.mean(0))

    fits = [_fit(session, rank, max_iter=1000, random_state=seed) for seed in range(3)]
    scores = [similarity(est) for est in fits]
    assert np.median(scores) > 0.4, scores  # measured: 0.709, 0.574, 0.602
    free = _fit(session, rank, max_iter=1000, teacher_forcing=0.0)
    assert similarity(free) > 0.3  # measured: 0.700
    # The stepped readout: fitted with Adam (solver='auto').
    stepped = _fit(session, rank, max_iter=1000, exact_readout=False)
    assert similarity(stepped) > 0.3  # measured: 0.827
    # Control: the same factors in a random trial order match nothing.
    order = np.random.RandomState(0).permutation(len(free.trial_factors_))
    C = free.trial_factors_
    control = factor_similarity(C[order] - C.mean(0), true - true.mean(0))
    assert control < 0.3, control  # measured: 0.10
    # The dominant trial-mode pattern of the weight changes (the leading right
    # singular vector of their trial unfolding) lies near the span of the fitted
    # trial factors and a constant, and not in that of the same factors in a
    # random order. Measured over random_state 0-19: 3.1 to 26.5 degrees, median
    # 8.1 (Adam: 2.9 to 19.3, median 4.8); in the random order 29.6-29.9 (0-2).
    pattern = column_space(dW.reshape(len(dW), -1), rank=1)
    angles = [principal_angles(np.c_[np.ones(len(order)), est.trial_factors_],
                               pattern)[0] for est in fits]
    assert np.median(angles) < 15, angles  # measured: 8.1, 9.1, 8.8
    for est in fits:
        C = est.trial_factors_[order]
        assert principal_angles(np.c_[np.ones(len(C)), C], pattern)[0] > 20


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_held_out_score_prefers_tensor_rank_over_rank_one(session):
    # A small version of the rank selection of the example script: on held-out
    # trials (co-smoothing, inputs given), rank 3 -- where the CP curve of the
    # weights saturates -- beats rank 1 clearly.
    train, test = next(KFold(3, shuffle=True, random_state=0).split(session.X))
    scores = {r: _fit(session, r, train).score(session.X[test],
                                              inputs=session.inputs[test])
              for r in (1, 3)}
    assert scores[3] > scores[1] + 0.05, scores


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_networks_with_inputs_beat_the_condition_average_on_held_out_blocks(session):
    # Held-out blocks of trials predicted from their target, inputs and place in
    # the session: both networks, fitted with Adam, predict them better than the
    # mean trajectory of each target on the training trials. Measured on the
    # four folds (rank 6): LowRankRNN +0.00021 to +0.00027, LowTensorRankRNN
    # +0.00041 to +0.00108; with the readout stepped (exact_readout=False) both
    # fell below it on the first fold (-0.00152, -0.00157). The default solver
    # (L-BFGS here) falls short on this small session: LowRankRNN +0.00010 to
    # +0.00018, LowTensorRankRNN -0.00053 to +0.00039; on the first fold it
    # stops at training losses 4 % (LowRankRNN) and 7 % above Adam's.
    train, test = next(TrialBlockKFold(4, block_size=8, guard=2).split(session.X))
    X, y = session.X, session.y
    place = {"trial_index": np.arange(len(X), dtype=float), "epochs": session.epoch,
             "inputs": session.inputs}
    fit = {k: v[train] for k, v in place.items()}
    held = {k: v[test] for k, v in place.items()}
    average = ConditionAverage().fit(X[train], y[train]).score(X[test], y[test])
    for Est in (LowRankRNN, LowTensorRankRNN):
        est = Est(rank=6, solver="adam", random_state=0).fit(X[train], y[train],
                                                             **fit)
        score = est.score(X[test], y[test], **held)
        assert score > average + 1e-4, (Est.__name__, score, average)
