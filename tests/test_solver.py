"""The parts of the optimisers: stopping rule, best-snapshot keeper, phase runner."""

import math

import numpy as np
import pytest
import torch

from sklearn_ltr._solver import (
    BestSnapshot,
    FitDiverged,
    Phase,
    PlateauRule,
    _Run,
    optimize,
    run_phase,
)


# --------------------------------------------------------------------- PlateauRule
def test_plateau_rule_counts_since_the_last_relative_improvement():
    rule = PlateauRule(tol=0.1, patience=3)
    flags = [rule.update(v) for v in [10.0, 9.5, 8.0, 7.9, 7.5, 7.3, 7.1]]
    # 9.5 is not below 10 - 1; 8.0 is; then 7.9, 7.5 and 7.3 are not below 7.2.
    assert flags == [False, False, False, False, False, True, False]
    assert rule.best == 7.1 and rule.since == 0


def test_plateau_rule_ignores_non_finite_losses():
    rule = PlateauRule(tol=0.0, patience=2)
    assert not rule.update(math.nan)
    assert rule.update(math.inf)  # two losses without improvement
    rule.restart_count()
    assert not rule.update(1.0) and rule.best == 1.0


def test_plateau_rule_is_element_wise_on_tensors():
    rule = PlateauRule(tol=0.0, patience=2)
    steps = [torch.tensor([3.0, 3.0, math.nan]), torch.tensor([2.0, 3.0, 1.0]),
             torch.tensor([1.0, 3.0, 1.0])]
    flags = [rule.update(v).tolist() for v in steps]
    # Row 0 improves every time; row 1 never after its first loss; row 2 starts
    # late (its first finite loss is an improvement).
    assert flags == [[False, False, False], [False, False, False],
                     [False, True, False]]
    np.testing.assert_array_equal(rule.best.numpy(), [1.0, 3.0, 1.0])


# -------------------------------------------------------------------- BestSnapshot
def test_best_snapshot_keeps_the_lowest_loss_point():
    w = torch.zeros(3)
    best = BestSnapshot([w])
    for value in [5.0, 2.0, 4.0, math.nan]:
        best.offer(value)
        w.add_(1.0)
    best.restore()
    assert best.value == 2.0
    np.testing.assert_array_equal(w.numpy(), [1.0, 1.0, 1.0])


def test_best_snapshot_takes_a_given_copy_of_the_point():
    w = torch.zeros(2)
    best = BestSnapshot([w])
    point = [torch.full((2,), 7.0)]
    assert best.offer(1.0, point)
    best.restore()
    np.testing.assert_array_equal(w.numpy(), [7.0, 7.0])


def test_best_snapshot_per_row_keeps_each_rows_best():
    w = torch.zeros(3, 2)
    best = BestSnapshot([w], per_row=True)
    for i, losses in enumerate([[3.0, 1.0, math.nan], [2.0, 5.0, 4.0],
                                [9.0, 9.0, math.inf]]):
        w.fill_(float(i + 1))
        improved = best.offer(torch.tensor(losses))
    assert improved.tolist() == [False, False, False]
    best.restore()
    np.testing.assert_array_equal(w[:, 0].numpy(), [2.0, 1.0, 2.0])
    np.testing.assert_array_equal(best.value.numpy(), [2.0, 1.0, 4.0])


# ------------------------------------------------------------------------ run_phase
def _quadratic_run(target=3.0, max_iter=500, tol=1e-6, patience=5, loss=None):
    params = {"w": torch.zeros(2, requires_grad=True)}

    def loss_fn(p, gamma=None):
        if loss is not None:
            return loss(p["w"])
        return ((p["w"] - target) ** 2).sum()

    return _Run(loss_fn, params, max_iter, PlateauRule(tol, patience)), params


def test_run_phase_ends_at_its_length():
    run, _ = _quadratic_run()
    assert run_phase(run, Phase("adam", 0.1, 7, n_decays=None)) == "length"
    assert run.n_iter == 7 and len(run.curve) == 7 and run.n_evals == 7


def test_run_phase_decays_then_ends_at_a_plateau():
    run, params = _quadratic_run()
    reason = run_phase(run, Phase("adam", 0.1, 10_000, n_decays=2))
    assert reason == "plateau" and run.n_iter < 500
    run.snapshot.restore()
    np.testing.assert_allclose(params["w"].detach().numpy(), [3.0, 3.0], atol=1e-3)


def test_run_phase_lbfgs_reuses_the_last_evaluation():
    run, params = _quadratic_run(tol=1e-9)
    run_phase(run, Phase("lbfgs", 1.0, 20, n_decays=0))
    # About one evaluation per iteration, not two: the line search's last point
    # is where the next iteration starts.
    assert run.n_evals < 1.5 * run.n_iter
    np.testing.assert_allclose(params["w"].detach().numpy(), [3.0, 3.0], atol=1e-5)


def test_run_phase_backs_off_on_a_non_finite_loss():
    calls = {"n": 0}

    def loss(w):
        calls["n"] += 1
        value = ((w - 3.0) ** 2).sum()
        return value * math.nan if calls["n"] == 4 else value

    run, _ = _quadratic_run(loss=loss)
    run_phase(run, Phase("adam", 0.1, 10, n_decays=None))
    assert run.backoffs == 1 and run.n_iter == 10
    assert all(math.isfinite(v) for v in run.curve)


def test_run_phase_raises_after_max_backoffs():
    run, _ = _quadratic_run(loss=lambda w: w.sum() * math.inf)
    run.max_backoffs = 3
    with pytest.raises(FitDiverged, match="after 3 halvings"):
        run_phase(run, Phase("adam", 0.1, 10, n_decays=None, name="the loss"))


def test_forced_phase_passes_the_falling_weight_and_keeps_no_best():
    seen = []
    params = {"w": torch.zeros(1, requires_grad=True)}

    def loss_fn(p, gamma=None):
        seen.append(gamma)
        return ((p["w"] - 1.0) ** 2).sum()

    run = _Run(loss_fn, params, 100, PlateauRule(0.0, 5))
    run_phase(run, Phase("adam", 0.05, 4, forcing=0.8, n_decays=None))
    np.testing.assert_allclose(seen, [0.8, 0.6, 0.4, 0.2])
    assert run.snapshot.value == math.inf  # forced losses are not comparable


def test_forced_phase_probes_hand_over_the_best_free_running_point():
    # The free-running loss is lowest at w = 1, which the forced steps pass on
    # their way to w = 3 (the forced loss's minimum): the probe every second step
    # keeps that point, and optimize starts its solver from it.
    params = {"w": torch.zeros(1)}
    free_at_start = []

    def loss_fn(p, gamma=0.0):
        target = 3.0 if gamma else 1.0
        return ((p["w"] - target) ** 2).sum()

    def callback(n_iter, loss):
        if n_iter == 21:  # first step of the solver, after 20 forced ones
            free_at_start.append(loss)

    res = optimize(loss_fn, params, forcing=0.5, forcing_iter=20, forcing_lr=0.2,
                   forcing_probe=2, solver="adam", learning_rate=1e-6, warmup=1,
                   max_iter=21, tol=0.0, n_iter_no_change=50, callback=callback)
    assert free_at_start[0] < 0.05  # near w = 1, not at w = 3 (loss 4)
    assert res.loss < 0.05 and abs(float(params["w"]) - 1.0) < 0.25
    without = optimize(loss_fn, {"w": torch.zeros(1)}, forcing=0.5, forcing_iter=20,
                       forcing_lr=0.2, solver="adam", learning_rate=1e-6, warmup=1,
                       max_iter=21, tol=0.0, n_iter_no_change=50)
    assert without.loss > 1.0  # where the pull ended: far from w = 1


def test_optimize_runs_warm_start_lbfgs_and_adam_in_order():
    log = []
    params = {"w": torch.zeros(2)}

    def loss_fn(p, gamma=0.0):
        log.append("forced" if gamma else "free")
        return ((p["w"] - 2.0) ** 2).sum()

    res = optimize(loss_fn, params, forcing=0.5, forcing_iter=5, lbfgs_iter=3,
                   learning_rate=0.1, max_iter=60, tol=1e-6, n_iter_no_change=5)
    assert log[:5] == ["forced"] * 5 and set(log[5:]) == {"free"}
    assert res.n_forced == 5 and res.n_iter == len(res.loss_curve) <= 60
    assert not params["w"].requires_grad
    np.testing.assert_allclose(params["w"].numpy(), [2.0, 2.0], atol=1e-3)


def test_optimize_projects_the_linear_part_after_the_warm_start():
    # loss(w, b) = |x w + b - y|^2: b is set to its optimum given w by the loss
    # itself when asked to project (and never stepped), w by Adam; projection is
    # not asked for in the warm start.
    x = torch.linspace(0, 2, 20)
    y = 2.0 * x + 0.7
    params = {"w": torch.zeros(1), "b": torch.zeros(1)}
    calls = {"project": 0, "forced": 0}

    def loss_fn(p, gamma=0.0, project=False):
        calls["forced"] += bool(gamma)
        if project:
            assert not gamma and not p["b"].requires_grad
            calls["project"] += 1
            with torch.no_grad():
                p["b"].copy_((y - x * p["w"]).mean())
        value = ((x * p["w"] + p["b"] - y) ** 2).mean()
        return (value, None) if project else value

    res = optimize(loss_fn, params, forcing=0.5, forcing_iter=3, learning_rate=0.1,
                   max_iter=300, tol=1e-6, n_iter_no_change=10, projected=("b",))
    assert calls["forced"] == 3
    assert calls["project"] == res.n_evals - 3  # every free evaluation, once
    np.testing.assert_allclose(float(params["w"]), 2.0, atol=1e-3)
    np.testing.assert_allclose(float(params["b"]), 0.7, atol=2e-3)
    # b is the projection at the final w, which no optimiser step moved.
    assert float(params["b"]) == float((y - x * params["w"]).mean())
    with pytest.raises(ValueError, match="variable projection needs"):
        optimize(loss_fn, params, projected=("b",), holdout=True)


def test_projection_penalty_is_added_to_the_loss_the_optimiser_sees():
    # b tanh(x w) fitted to y, with b set by ridge regression given w: the
    # gradient with respect to w at that b is that of the loss plus the ridge
    # penalty, which the loss returns with its value when it projects. L-BFGS's
    # line searches must compare values of that sum: given the loss alone they
    # failed, evaluating the loss over and over (measured: 1374 evaluations in
    # 100 iterations, against 7).
    # The loss recorded and kept is the loss alone.
    x = torch.linspace(0, 2, 20, dtype=torch.float64)
    y = 1.3 * torch.tanh(1.5 * x) + 0.05 * torch.sin(7 * x)
    lam = 0.5
    params = {"w": torch.full((1,), 0.5, dtype=torch.float64),
              "b": torch.zeros(1, dtype=torch.float64)}
    seen = []

    def loss_fn(p, project=False):
        t = torch.tanh(x * p["w"])
        if not project:
            return ((t * p["b"] - y) ** 2).sum()
        with torch.no_grad():
            p["b"].copy_((t * y).sum() / ((t * t).sum() + lam))
        seen.append(float(p["w"].detach()))
        return ((t * p["b"] - y) ** 2).sum(), lam * float(p["b"]) ** 2

    res = optimize(loss_fn, params, solver="lbfgs", learning_rate=1.0, max_iter=100,
                   tol=0.0, n_iter_no_change=100, projected=("b",))
    assert res.n_iter == 100 and res.n_evals <= 20, res.n_evals
    assert res.loss == float(loss_fn(params))
    # The line searches went to the minimiser of the sum (1.7355 on a fine grid),
    # past that of the loss alone (1.5188).
    assert max(seen) == pytest.approx(1.7355, abs=1e-3)


def test_lbfgs_with_projection_reuses_the_last_evaluation():
    # The line search leaves the projected tensor at its value of the previous
    # point (it does not step it); the next iteration's first evaluation is still
    # that of the line search's last point, whose projected value is copied back.
    x = torch.linspace(0, 2, 20)
    y = torch.tanh(1.5 * x) + 0.7
    params = {"w": torch.zeros(1), "b": torch.zeros(1)}
    calls = {"project": 0}

    def loss_fn(p, project=False):
        if project:
            calls["project"] += 1
            with torch.no_grad():
                p["b"].copy_((y - torch.tanh(x * p["w"])).mean())
        value = ((torch.tanh(x * p["w"]) + p["b"] - y) ** 2).mean()
        return (value, None) if project else value

    # 8 iterations, all before convergence (reached at the 9th).
    res = optimize(loss_fn, params, solver="lbfgs", learning_rate=1.0, max_iter=8,
                   tol=0.0, n_iter_no_change=100, projected=("b",))
    assert calls["project"] == res.n_evals  # every evaluation projects, once
    # Measured: 9 evaluations for 8 iterations (16 when each iteration
    # evaluated its starting point again).
    assert res.n_iter == 8 and res.n_evals < 1.5 * res.n_iter, res.n_evals
    np.testing.assert_allclose(float(params["w"]), 1.5, atol=1e-2)
    assert float(params["b"]) == float((y - torch.tanh(x * params["w"])).mean())
