"""Weight-tensor analysis: ranks, factor and subspace recovery, gradient rank bounds."""

import numpy as np
import pytest
import torch

from sklearn_ltr import TCA, LowTensorRankRNN
from sklearn_ltr.analysis import (
    column_space,
    factor_similarity,
    gradient_rank_bounds,
    latent_subspace,
    multilinear_rank,
    numerical_rank,
    principal_angles,
    tensor_rank_curve,
    weight_eigenvalues,
)

# Relative tolerance for ranks of float64 weights trained exactly in float64: the
# bounds are identities, so violations would show up as singular values of order 1e-3
# or more, while round-off stays below 1e-12.
EXACT = 1e-9


# --------------------------------------------------------------------------- #
# a small RNN trained by gradient descent, as in gradient_rank_bounds
# --------------------------------------------------------------------------- #
def _train(W0, W_in, W_out, *, phi, n_timepoints, n_steps, batch_size, seed, lr=0.05,
           alpha=0.5, optimizer="sgd"):
    """Weights W_0..W_n_steps of x_{t+1} = (1-a) x_t + a (W phi(x_t) + W_in u_t).

    Trials start from rest; inputs and target outputs are random (fresh each step);
    the loss is the mean squared error of W_out phi(x_t) for t = 1..n_timepoints.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    W_in, W_out = torch.as_tensor(W_in), torch.as_tensor(W_out)
    W = torch.as_tensor(W0, dtype=f64).clone().requires_grad_(True)
    opt = (torch.optim.SGD([W], lr=lr, momentum=0.5) if optimizer == "sgd"
           else torch.optim.Adam([W], lr=1e-2))
    N, d_in, d_out = W.shape[0], W_in.shape[1], W_out.shape[0]
    weights = [W.detach().clone()]
    for _ in range(n_steps):
        u = torch.randn(batch_size, n_timepoints, d_in, generator=g, dtype=f64)
        target = torch.randn(batch_size, n_timepoints, d_out, generator=g, dtype=f64)
        x = torch.zeros(batch_size, N, dtype=f64)
        loss = 0.0
        for t in range(n_timepoints):
            x = (1 - alpha) * x + alpha * (phi(x) @ W.T + u[:, t] @ W_in.T)
            loss = loss + ((phi(x) @ W_out.T - target[:, t]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        weights.append(W.detach().clone())
    return torch.stack(weights).numpy()


def _identity(x):
    return x


def _io(rng, N, d_in, d_out):
    return rng.randn(N, d_in), rng.randn(d_out, N) / np.sqrt(N)


def _outside(M, basis):
    """Relative size of the parts of M's columns and rows outside span(basis)."""
    Q = np.linalg.qr(basis)[0]
    P = np.eye(M.shape[0]) - Q @ Q.T
    norm = np.linalg.norm(M)
    return np.linalg.norm(P @ M) / norm, np.linalg.norm(M @ P) / norm


# --------------------------------------------------------------------------- #
# rank bounds
# --------------------------------------------------------------------------- #
def test_linear_zero_init_span_bound_holds_and_is_attained(rng):
    N, d_in, d_out, T, K = 24, 2, 3, 6, 30
    W_in, W_out = _io(rng, N, d_in, d_out)
    W = _train(np.zeros((N, N)), W_in, W_out, phi=_identity, n_timepoints=T,
               n_steps=K, batch_size=3, seed=0)
    bounds = gradient_rank_bounds(N, d_in, d_out, T, K, batch_size=3, linear=True)
    assert bounds.weight_rank == bounds.change_rank == d_in + d_out == 5
    span = np.hstack([W_in, W_out.T])
    ranks = [numerical_rank(Wk, EXACT) for Wk in W[1:]]
    assert max(ranks) <= bounds.weight_rank, ranks
    # Tight: learning uses every input and output direction.
    assert ranks[-1] == bounds.weight_rank, ranks
    for Wk in W[1:]:
        col, row = _outside(Wk, span)
        assert col < 1e-10 and row < 1e-10, (col, row)
    measured = multilinear_rank(W[1:], EXACT)
    assert all(m <= b for m, b in zip(measured, bounds.change_multilinear_rank)), (
        measured, bounds.change_multilinear_rank)
    assert measured[1:] == (5, 5)


def test_span_bound_needs_gradient_descent(rng):
    # Adam rescales each weight's gradient separately, which breaks the span argument:
    # the same training leaves the 5-dimensional span at once.
    N, d_in, d_out, T = 24, 2, 3, 6
    W_in, W_out = _io(rng, N, d_in, d_out)
    W = _train(np.zeros((N, N)), W_in, W_out, phi=_identity, n_timepoints=T,
               n_steps=10, batch_size=3, seed=0, optimizer="adam")
    assert numerical_rank(W[-1], EXACT) > d_in + d_out


def test_linear_low_rank_init_bound(rng):
    N, d_in, d_out, T, K, r0 = 30, 2, 2, 5, 25, 2
    W_in, W_out = _io(rng, N, d_in, d_out)
    L, Rt = rng.randn(N, r0), rng.randn(N, r0)
    W0 = 0.5 * L @ Rt.T / N
    W = _train(W0, W_in, W_out, phi=_identity, n_timepoints=T, n_steps=K,
               batch_size=2, seed=1)
    bounds = gradient_rank_bounds(N, d_in, d_out, T, K, batch_size=2, init_rank=r0,
                                  linear=True)
    assert bounds.span_dim == d_in + d_out + 2 * r0 == 8
    change = [numerical_rank(Wk - W0, EXACT) for Wk in W[1:]]
    weight = [numerical_rank(Wk, EXACT) for Wk in W]
    assert max(change) <= bounds.change_rank and max(weight) <= bounds.weight_rank
    # The space S = span(W_in, W_out^T, col W0, row W0) holds every change.
    span = np.hstack([W_in, W_out.T, L, Rt])
    col, row = _outside(W[-1] - W0, span)
    assert col < 1e-10 and row < 1e-10, (col, row)
    # How close training comes to the bound (reported by the assertion message).
    assert change[-1] >= d_in + d_out, (change[-1], bounds.change_rank)


@pytest.mark.parametrize("phi", [_identity, torch.tanh], ids=["linear", "tanh"])
def test_counting_bound_with_full_rank_init(rng, phi):
    # An arbitrary (full-rank) W0: only the counting bound holds. From rest with
    # phi(0) = 0, a trial of T steps contributes T - 1 outer products.
    N, d_in, d_out, T = 30, 3, 2, 4
    W_in, W_out = _io(rng, N, d_in, d_out)
    W0 = 0.9 * rng.randn(N, N) / np.sqrt(N)
    W = _train(W0, W_in, W_out, phi=phi, n_timepoints=T, n_steps=6, batch_size=1,
               seed=2)
    previous = 0
    for k in range(1, 7):
        bound = gradient_rank_bounds(N, d_in, d_out, T, k, init_rank=None,
                                     linear=phi is _identity)
        measured = numerical_rank(W[k] - W0, EXACT)
        assert bound.change_rank == min(N, k * T)
        assert measured <= bound.change_rank
        if phi is torch.tanh:
            # Attained: every outer product adds a dimension.
            assert measured == min(N, k * (T - 1)), (k, measured)
        else:
            # Linear: the first rates of every trial lie in span(W_in) and the last
            # adjoints in span(W_out^T), so trials share directions and the count is
            # not attained; every trial still adds some.
            assert measured > previous, (k, measured)
        previous = measured
        assert bound.weight_rank == N


def test_tanh_zero_init_is_approximately_low_rank(rng):
    # No exact span bound for tanh, but with small weights and inputs the units stay
    # in tanh's linear range and the learned weights are close to rank d_in + d_out:
    # the next singular value is tiny compared with the largest.
    N, d_in, d_out, T = 30, 2, 2, 6
    W_in, W_out = _io(rng, N, d_in, d_out)
    W = _train(np.zeros((N, N)), 0.1 * W_in, W_out, phi=torch.tanh, n_timepoints=T,
               n_steps=30, batch_size=2, seed=3, lr=0.2)
    s = np.linalg.svd(W[-1], compute_uv=False)
    assert numerical_rank(W[-1], EXACT) > d_in + d_out  # the exact bound fails...
    assert s[d_in + d_out] / s[0] < 0.02, s[:6] / s[0]  # ...approximately it holds
    assert numerical_rank(W[-1], 0.02) <= d_in + d_out


def test_gradient_rank_bounds_values():
    b = gradient_rank_bounds(100, 3, 2, 50, 200, linear=True)
    assert (b.change_rank, b.weight_rank, b.span_dim) == (5, 5, 5)
    assert b.change_cp_rank == 25 and b.change_multilinear_rank == (25, 5, 5)
    b = gradient_rank_bounds(100, 3, 2, 50, 1, linear=False)
    assert b.change_rank == 50 and b.weight_rank == 50  # zero init, one trial
    b = gradient_rank_bounds(100, 3, 2, 50, 1, init_rank=None)
    assert b.change_rank == 50 and b.weight_rank == 100
    b = gradient_rank_bounds(10, 3, 2, 2, 1, linear=True)
    assert b.change_cp_rank == min(b.change_rank ** 2, b.change_rank)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        gradient_rank_bounds(10, 1, 1, 5, 0)


# --------------------------------------------------------------------------- #
# ranks and CP curves
# --------------------------------------------------------------------------- #
def test_numerical_and_multilinear_rank(rng):
    assert numerical_rank(np.zeros((3, 4))) == 0
    M = rng.randn(8, 3) @ rng.randn(3, 6)
    assert numerical_rank(M) == 3
    M_noisy = M + 1e-6 * rng.randn(8, 6)
    assert numerical_rank(M_noisy) == 6 and numerical_rank(M_noisy, 1e-4) == 3
    C, A, B = rng.randn(7, 2), rng.randn(5, 2), rng.randn(6, 2)
    T = np.einsum("kr,ir,jr->kij", C, A, B)
    assert multilinear_rank(T) == (2, 2, 2)
    # A Tucker tensor with a generic (2, 2, 3) core has that multilinear rank.
    core = rng.randn(2, 2, 3)
    T = np.einsum("abc,ka,ib,jc->kij", core, rng.randn(4, 2), rng.randn(5, 2),
                  rng.randn(6, 3))
    assert multilinear_rank(T) == (2, 2, 3)
    with pytest.raises(ValueError, match="2D matrix"):
        numerical_rank(np.zeros(3))


def test_tensor_rank_curve_saturates_at_planted_rank(rng):
    C, A, B = rng.rand(40, 3) + 0.2, rng.randn(15, 3), rng.randn(15, 3)
    T = np.einsum("kr,ir,jr->kij", C, A, B)
    noisy = T + 0.01 * np.std(T) * rng.randn(*T.shape)
    curve = tensor_rank_curve(noisy, [1, 2, 3, 4], random_state=0)
    ve = curve.variance_explained
    assert list(curve.ranks) == [1, 2, 3, 4]
    assert ve[1] < 0.99 < ve[2], ve
    assert np.all(np.diff(ve) > -1e-6)
    assert abs(ve[3] - ve[2]) < 1e-3
    C3, A3, B3 = curve.factors[2]
    assert C3.shape == (40, 3) and np.allclose(np.linalg.norm(A3, axis=0), 1.0)
    assert factor_similarity([C3, A3, B3], [C, A, B]) > 0.99
    # Compression is a speed-up only: the curve is the same without it.
    full = tensor_rank_curve(noisy, [2, 3], compress_tol=None, random_state=0)
    np.testing.assert_allclose(full.variance_explained, ve[1:3], atol=1e-4)


def test_tensor_rank_curve_rejects_bad_input():
    with pytest.raises(ValueError, match="3D array"):
        tensor_rank_curve(np.zeros((3, 3)), [1])
    with pytest.raises(ValueError, match="identically zero"):
        tensor_rank_curve(np.zeros((3, 3, 3)), [1])
    with pytest.raises(ValueError, match="each rank must be an integer"):
        tensor_rank_curve(np.ones((3, 3, 3)), [0])
    # A rank the tensor cannot support: a clear error, not numpy's LinAlgError.
    rng = np.random.RandomState(0)
    T = np.einsum("kr,ir,jr->kij", rng.randn(10, 2), rng.randn(6, 2), rng.randn(6, 2))
    with pytest.raises(ValueError, match=r"singular system at rank=8: tensor has "
                                         r"fewer than 8 independent components"):
        tensor_rank_curve(T, [8], random_state=0)


def test_tensor_rank_curve_factors_have_the_normal_form_of_tca(rng):
    # One normal form for CP factors in the package: on an exactly low-rank tensor,
    # where both fits reach the same optimum, tensor_rank_curve and TCA return the
    # same factors, signs included.
    C, A, B = rng.rand(20, 2) + 0.5, rng.randn(8, 2), rng.randn(7, 2)
    X = np.einsum("kr,ir,jr->kij", C, A, B)
    curve = tensor_rank_curve(X, [2], tol=1e-12, max_iter=2000, random_state=0)
    tca = TCA(rank=2, tol=1e-12, max_iter=2000, random_state=0).fit(X)
    for F, G in zip(curve.factors[0],
                    [tca.trial_factors_, tca.time_factors_, tca.neuron_factors_]):
        np.testing.assert_allclose(F, G, atol=1e-4)
    for F in curve.factors[0][1:]:
        peak = F[np.argmax(np.abs(F), axis=0), np.arange(2)]
        assert np.all(peak > 0)


# --------------------------------------------------------------------------- #
# factor similarity and subspaces
# --------------------------------------------------------------------------- #
def test_factor_similarity_invariances(rng):
    C = rng.randn(50, 4)
    perm = [2, 0, 3, 1]
    scaled = C[:, perm] * np.array([3.0, -0.5, 2.0, -7.0])
    score, matched = factor_similarity(C, scaled, return_permutation=True)
    assert score == pytest.approx(1.0)
    assert list(matched) == [1, 3, 0, 2]
    assert factor_similarity(C, rng.randn(50, 4)) < 0.5
    # CP factors: the product over modes.
    A, B = rng.randn(10, 4), rng.randn(12, 4)
    assert factor_similarity([C, A, B], [scaled, A[:, perm], -B[:, perm]]) == \
        pytest.approx(1.0)
    assert factor_similarity([C, A, B], [C, A, rng.randn(12, 4)]) < 0.5


def test_factor_similarity_unequal_ranks(rng):
    C = rng.randn(40, 3)
    # Extra components count as zero, whichever side has them.
    assert factor_similarity(C, C[:, :2]) == pytest.approx(2 / 3)
    score, perm = factor_similarity(C[:, :2], C, return_permutation=True)
    assert score == pytest.approx(2 / 3) and list(perm) == [0, 1]
    score, perm = factor_similarity(C, C[:, [1]], return_permutation=True)
    assert list(perm) == [-1, 0, -1]
    assert factor_similarity(C, np.c_[C[:, 0], np.zeros(40)]) == pytest.approx(1 / 3)


def test_factor_similarity_rejects_mismatches(rng):
    with pytest.raises(ValueError, match="same trials"):
        factor_similarity(rng.randn(5, 2), rng.randn(6, 2))
    with pytest.raises(ValueError, match="1 mode"):
        factor_similarity(rng.randn(5, 2), [rng.randn(5, 2), rng.randn(3, 2)])
    with pytest.raises(ValueError, match="different numbers of columns"):
        factor_similarity([rng.randn(5, 2), rng.randn(3, 1)],
                          [rng.randn(5, 2), rng.randn(3, 2)])


def test_principal_angles(rng):
    U = rng.randn(10, 3)
    np.testing.assert_allclose(principal_angles(U, U @ rng.randn(3, 3)), 0, atol=1e-6)
    Q = np.linalg.qr(rng.randn(10, 5))[0]
    np.testing.assert_allclose(principal_angles(Q[:, :2], Q[:, 2:]), 90.0)
    mixed = principal_angles(Q[:, :2], np.c_[Q[:, 0], Q[:, 1] + Q[:, 2]],
                             degrees=False)
    np.testing.assert_allclose(mixed, [0.0, np.pi / 4], atol=1e-8)
    with pytest.raises(ValueError, match="same number of rows"):
        principal_angles(np.eye(3), np.eye(4))


def test_column_space(rng):
    A = rng.randn(12, 2)
    W = np.stack([A @ rng.randn(2, 12) for _ in range(5)])
    basis = column_space(W)
    assert basis.shape == (12, 2)
    np.testing.assert_allclose(basis.T @ basis, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(principal_angles(basis, A), 0, atol=1e-5)
    assert column_space(W[0], rank=1).shape == (12, 1)


# --------------------------------------------------------------------------- #
# recovery of planted structure by LowTensorRankRNN
# --------------------------------------------------------------------------- #
def test_fitted_factors_and_subspace_match_planted(planted):
    est = LowTensorRankRNN(rank=3, n_units=40, random_state=0).fit(planted.X)
    score = factor_similarity(est.trial_factors_, planted.trial_factors)
    assert score >= 0.8, score
    # Planted trial factors vary around 1: check the changes are recovered too.
    centred = factor_similarity(est.trial_factors_ - est.trial_factors_.mean(0),
                                planted.trial_factors - planted.trial_factors.mean(0))
    assert centred >= 0.8, centred
    # The subspace through which connectivity reaches the recorded neurons.
    true = column_space(planted.readout @ planted.left_factors)
    angles = principal_angles(latent_subspace(est), true)
    assert angles.max() < 30, angles


# --------------------------------------------------------------------------- #
# weight spectrum
# --------------------------------------------------------------------------- #
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_weight_eigenvalues_equal_those_of_the_weight_matrices(small):
    rank, n_trials = 2, small.X.shape[0]
    ltr = LowTensorRankRNN(rank=rank, n_units=16, max_iter=40, infer_max_iter=20,
                           random_state=0).fit(small.X)
    eig, trials = weight_eigenvalues(ltr)
    np.testing.assert_array_equal(trials, np.arange(n_trials))
    W = ltr.weight_tensor()
    for k in range(n_trials):
        full = np.linalg.eigvals(W[k])
        top = np.sort_complex(full[np.argsort(-np.abs(full))[:rank]])
        np.testing.assert_allclose(np.sort_complex(eig[k]), top, atol=1e-10)
        # The other n_units - rank eigenvalues vanish.
        rest = np.sort(np.abs(full))[:-rank]
        assert np.all(rest < 1e-8)


# --------------------------------------------------------------------------- #
# recovery against fair nulls
# --------------------------------------------------------------------------- #
def test_schedule_curves_follow_the_epochs():
    from sklearn_ltr.analysis import schedule_curves

    epochs = np.repeat(["a", "b", "c"], [4, 6, 5])
    curves = schedule_curves(15, epochs, time_constants=(0.5,))
    assert curves.shape == (15, 9)  # indicator, ramp, one decay per epoch
    np.testing.assert_array_equal(curves[:, 0], np.r_[np.ones(4), np.zeros(11)])
    np.testing.assert_allclose(curves[4:10, 4], np.linspace(0, 1, 6))
    with pytest.raises(ValueError, match="one label per trial"):
        schedule_curves(15, epochs[:3])


def test_trial_factor_recovery_separates_recovery_from_its_nulls():
    from sklearn_ltr.analysis import schedule_curves, trial_factor_recovery

    rng = np.random.RandomState(0)
    epochs = np.repeat(["base", "learn"], [20, 60])
    # A change that the schedule predicts (a decay from the epoch's onset) and
    # one it does not.
    true = np.c_[schedule_curves(80, epochs)[:, 4],
                 np.sin(np.arange(80) / 7.0)]
    good = true + 0.05 * rng.standard_normal(true.shape)
    res = trial_factor_recovery(good, true, epochs=epochs, n_null=300,
                                random_state=0)
    assert res.similarity > 0.95
    assert res.pvalue_smooth < 0.01 and res.pvalue_schedule < 0.01
    assert res.null_schedule.shape == res.null_smooth.shape == (300,)
    # A fit that only learned the schedule part is no better than the nulls allow.
    schedule_only = np.c_[true[:, 0], rng.standard_normal(80)]
    weak = trial_factor_recovery(schedule_only, true, epochs=epochs, n_null=300,
                                 random_state=0)
    assert weak.similarity < res.similarity and weak.pvalue_smooth > 0.01
    with pytest.raises(ValueError, match="same trials"):
        trial_factor_recovery(good[:10], true)


def test_connectivity_recovery_is_exact_for_the_true_factors():
    from sklearn.utils import Bunch

    from sklearn_ltr.analysis import connectivity_recovery

    rng = np.random.RandomState(0)
    K, N, R = 30, 12, 2
    A, B = rng.standard_normal((N, R)), rng.standard_normal((N, R))
    C = 1.0 + np.cumsum(rng.standard_normal((K, R)), axis=0) / 5
    weights = np.einsum("kr,ir,jr->kij", C, A, B) / N
    # A "fitted" network whose units are the neurons (identity readout).
    est = Bunch(readout_=np.eye(N), left_factors_=A, right_factors_=B,
                trial_factors_=C)
    res = connectivity_recovery(est, weights, n_null=50, random_state=0)
    np.testing.assert_allclose(res.column_angles, 0.0, atol=1e-5)
    np.testing.assert_allclose(res.row_angles, 0.0, atol=1e-5)
    assert res.relative_error < 1e-10 and res.scaled_error < 1e-10
    assert np.all(res.null_column_angles > 20)
    assert np.median(res.null_scaled_error) > 0.3 and res.pvalue_error < 0.05
    with pytest.raises(ValueError, match="to match the estimator"):
        connectivity_recovery(est, weights[:, :5, :5])
