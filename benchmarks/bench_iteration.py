"""Time one training iteration of LowTensorRankRNN against a naive dense RNN.

Measures, on one torch thread by default and in float32:

1. our training iteration: forward with the same parametrisation as
   the fit's loss (``_model.LatentRNN.loss``: ``C = mu + Phi Wc`` on
   ``TrialGP(range(K), None, 10.0).basis``, ``B = sqrt(N) Bs``, ``D = Ds / sqrt(N)``,
   ``_model.evaluate_loss`` (latent recurrence, readout and MSE fused step by step,
   ``_dynamics.LatentSquaredError``) plus
   ``_model.activity_loss``), backward, and one Adam step (the default solver);
   and one iteration of ``solver='lbfgs'`` (``_solver.optimize``: line search,
   history of 100 steps), with its number of loss evaluations;
2. the naive dense comparator of ``benchmarks/naive_dense.py`` (builds the
   (K, N, N) weight tensor and iterates the N-dimensional unit states with
   ``torch.bmm``) on the same data and parameters;
3. their ratio;
4. an arithmetic floor: FLOPs of the readout and of the latent recurrence divided by
   the measured single-thread matmul speed;

plus the forward-only time of our model and a breakdown of our iteration (fused
forward / backward, Adam step), against the same loss unfused (the recurrence storing
the (T, K, N) unit rates for a separate readout + MSE, the previous implementation). It
first checks that both implementations compute the same loss, readout and gradients
on the same parameters.

Usage::

    python benchmarks/bench_iteration.py                  # default size, 1 thread
    python benchmarks/bench_iteration.py --profile        # + torch.profiler op table
    python benchmarks/bench_iteration.py --json out.json  # also save the numbers

Nothing is written unless ``--json`` is given.
"""

import argparse
import math
import os
import statistics
import sys
import time

import numpy as np
import torch

from sklearn_ltr import _model, _solver
from sklearn_ltr._dynamics import latent_squared_error, simulate_latents
from sklearn_ltr._priors import TrialGP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    N_WARMUP,
    TAU,
    machine_info,
    planted_data,
    save_json,
    time_ms,
)
from naive_dense import naive_loss  # noqa: E402

ACTIVITY_PENALTY = 1e-4  # LowTensorRankRNN default
LENGTH_SCALE = 10.0  # LowTensorRankRNN default trial_length_scale


# --------------------------------------------------------------------- problem
def make_problem(args, dtype):
    """Planted data, the solver's Data, trial basis and initial raw parameters."""
    bunch = planted_data(args.n_trials, args.n_timepoints, args.n_neurons,
                         args.rank, args.n_units, random_state=0)
    X = bunch.X
    alpha = 1.0 / TAU
    data = _model.Data.from_numpy(X, None, "cpu", dtype)
    basis = torch.as_tensor(
        TrialGP(np.arange(args.n_trials), None, LENGTH_SCALE).basis, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    params, _ = _model.initialize(
        data, rank=args.rank, n_units=args.n_units, alpha=alpha,
        n_states=args.n_trials, state_index=None, loss="mse",
        orthonormal_readout=False, init="pca", generator=gen)
    del params["M"]  # no inputs
    params["mu"] = torch.ones(args.rank, dtype=torch.float64)
    # Trial factors away from exactly constant, so that W_k varies over k.
    params["Wc"] = 0.1 * torch.randn(basis.shape[1], args.rank, generator=gen,
                                     dtype=torch.float64)
    params = {k: v.to(dtype).contiguous() for k, v in params.items()}
    return X, data, basis, params, alpha


def make_our_loss(data, basis, n_units, alpha, n_timepoints, activity_penalty):
    """The fit's loss, ``LatentRNN.loss`` of a low-tensor-rank model, written out.

    (mse, no conditions, no inputs).
    """
    n_trials = basis.shape[0]
    N = n_units

    def shared(p):
        C = p["mu"].expand(n_trials, -1)
        C = C + basis @ p["Wc"]
        B = p["Bs"] * math.sqrt(N)
        D = _model.readout_matrix(p["Ds"], N, False)
        return p["Z"], C, p["A"], B, D, p["d"], p.get("M")

    def loss_fn(p):
        kappa, value = _model.evaluate_loss(
            *shared(p), data, "mse", alpha=alpha, n_timepoints=n_timepoints)
        if activity_penalty:
            value = value + activity_penalty * _model.activity_loss(kappa, p["A"])
        return value

    def readout_fn(p):
        """The model's readout (T, K, n), for the agreement check."""
        return _model.evaluate(*shared(p), data.inputs, alpha=alpha,
                                n_timepoints=n_timepoints)[1]

    loss_fn.readout = readout_fn
    return loss_fn


def fresh_params(params):
    return {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}


# --------------------------------------------------------------------- timing
def make_train_step(loss, params):
    tensors = list(params.values())
    opt = torch.optim.Adam(tensors, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        value = loss(params)
        value.backward()
        opt.step()
        return value

    return step, opt


def lbfgs_iteration(loss, params, repeats, history_size=100):
    """Time per iteration of ``solver='lbfgs'`` once its history is full.

    ``_solver.optimize`` as the estimators call it (line search, reuse of the last
    evaluation, snapshot of the best point); the times between successive
    iterations after the first ``history_size`` are summarised, with the loss
    evaluations they took.
    """
    stamps = []
    result = _solver.optimize(
        loss, fresh_params(params), solver="lbfgs", learning_rate=1.0,
        max_iter=history_size + repeats + 1, tol=0.0, n_iter_no_change=10 ** 9,
        history_size=history_size,
        callback=lambda i, v: stamps.append(time.perf_counter()))
    full = stamps[history_size:]
    times = [1e3 * (b - a) for a, b in zip(full, full[1:])]
    return {"median_ms": statistics.median(times), "min_ms": min(times),
            "repeats": len(times), "n_iter": result.n_iter, "n_evals": result.n_evals,
            "evals_per_iter": result.n_evals / result.n_iter}


def matmul_gflops(repeats, dtype):
    """Single-call speed of the readout-shaped matmul (12500 x 200) @ (200 x 100)."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(12500, 200, generator=g, dtype=dtype)
    b = torch.randn(200, 100, generator=g, dtype=dtype)
    out = torch.empty(12500, 100, dtype=dtype)
    t = time_ms(lambda: torch.mm(a, b, out=out), max(repeats, 20), warmup=5)
    flops = 2.0 * 12500 * 200 * 100
    return flops / (t["median_ms"] * 1e-3) / 1e9, flops / (t["min_ms"] * 1e-3) / 1e9, t


def recurrence_flops(K, T, N, R):
    """Matmul FLOPs of LatentRecurrence forward + hand-written backward."""
    per = 2.0 * K * N * R
    fwd = per * (T + (T - 1))  # kappa A^T each step, H B on T-1 steps
    bwd = per * ((T - 1) + T + T + (T - 1))  # (dk*g) B^T, dpre A, g_A, g_B
    return fwd, bwd


def readout_flops(K, T, N, n):
    fwd = 2.0 * K * T * N * n
    return fwd, 2.0 * fwd  # backward: dL/dH and dL/dD


def naive_flops(K, T, N, R, n):
    """Rough matmul FLOPs of the dense comparator (for context)."""
    build = 2.0 * K * N * N * R * 2  # forward build + its backward (approx.)
    steps = (T - 1) * 2.0 * K * N * N * 3  # bmm forward, dL/dh, dL/dW outer products
    rf, rb = readout_flops(K, T, N, n)
    return build + steps + rf + rb


# --------------------------------------------------------------------- checks
def agreement(args, dtype):
    """Max abs differences between our loss/readout/grads and the dense model."""
    _, data, basis, params, alpha = make_problem(args, dtype)
    ours = make_our_loss(data, basis, args.n_units, alpha, args.n_timepoints,
                         ACTIVITY_PENALTY)
    p1, p2 = fresh_params(params), fresh_params(params)
    v1 = ours(p1)
    with torch.no_grad():
        eta = ours.readout(p1)
    v2, Y, _ = naive_loss(p2, basis, data.X, alpha=alpha,
                          activity_penalty=ACTIVITY_PENALTY, return_parts=True)
    v1.backward()
    v2.backward()
    grad_abs = max(float((p1[k].grad - p2[k].grad).abs().max()) for k in p1)
    grad_rel = max(float((p1[k].grad - p2[k].grad).abs().max()
                         / p2[k].grad.abs().max().clamp_min(1e-30)) for k in p1)
    return {
        "loss_ours": float(v1.detach()), "loss_naive": float(v2.detach()),
        "loss_abs_diff": abs(float(v1.detach()) - float(v2.detach())),
        "readout_max_abs_diff": float((eta - Y).detach().abs().max()),
        "grad_max_abs_diff": grad_abs, "grad_max_rel_diff": grad_rel,
    }


# --------------------------------------------------------------------- breakdown
def breakdown(data, basis, params, alpha, args):
    """Time the pieces of our iteration separately (same shapes, same thread)."""
    T, K, n = data.shape
    N, R = args.n_units, args.rank
    reps = args.repeats
    p = fresh_params(params)
    res = {}

    def prep():
        C = p["mu"].expand(K, -1) + basis @ p["Wc"]
        B = p["Bs"] * math.sqrt(N)
        D = p["Ds"] / math.sqrt(N)
        gain = C * (alpha / N)
        return gain, B, D

    res["param_prep_fwd"] = time_ms(prep, reps)

    # Leaves at the inputs of the recurrence and the readout.
    with torch.no_grad():
        gain0, B0, D0 = prep()
    A = params["A"].detach().clone().requires_grad_(True)
    B = B0.clone().requires_grad_(True)
    gain = gain0.clone().requires_grad_(True)
    Z0 = params["Z"].detach().clone().requires_grad_(True)
    D = D0.clone().requires_grad_(True)
    d = params["d"].detach().clone().requires_grad_(True)

    g = torch.Generator().manual_seed(2)
    w_kappa = 1e-3 * torch.randn(T, K, R, generator=g, dtype=A.dtype)

    def fused_fwd():
        # What the fit runs: recurrence, readout and squared error in one pass.
        value, kappa = latent_squared_error(
            Z0, A, B, gain, None, D, d, data.X, data.mask, 1.0 - alpha, T, data.n_obs)
        return value + (kappa * w_kappa).sum()

    res["fused_fwd"] = time_ms(fused_fwd, reps)
    res["fused_bwd"] = time_ms(lambda v: v.backward(), reps, setup=fused_fwd)

    # The same loss unfused: the recurrence stores the (T, K, N) unit rates and the
    # readout + squared error reads them (the previous implementation).
    def unfused_fwd():
        kappa, H = simulate_latents(Z0, A, B, gain, None, 1.0 - alpha, T)
        value = _model.readout_loss(H, D, d, data, "mse")
        return value + (kappa * w_kappa).sum()

    res["unfused_fwd"] = time_ms(unfused_fwd, reps)
    res["unfused_bwd"] = time_ms(lambda v: v.backward(), reps, setup=unfused_fwd)

    # Adam step alone (grads present, as after backward).
    q = fresh_params(params)
    opt = torch.optim.Adam(list(q.values()), lr=1e-3)
    for v in q.values():
        v.grad = 1e-3 * torch.randn(v.shape, generator=g, dtype=v.dtype)
    res["adam_step"] = time_ms(opt.step, reps)
    res["zero_grad"] = time_ms(lambda: opt.zero_grad(set_to_none=True), reps)
    res["fused_over_unfused"] = (
        (res["fused_fwd"]["median_ms"] + res["fused_bwd"]["median_ms"])
        / (res["unfused_fwd"]["median_ms"] + res["unfused_bwd"]["median_ms"]))
    return res


def profile_ops(step, n_iter=5, row_limit=22):
    """Per-iteration self CPU time of the top (op, input shapes) of ``step``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(n_iter):
            step()
    events = sorted(prof.key_averages(group_by_input_shape=True),
                    key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = []
    for e in events[:row_limit]:
        shapes = [s for s in (e.input_shapes or []) if s]
        rows.append({
            "op": e.key.replace("aten::", ""),
            "shapes": " ".join("x".join(map(str, s)) for s in shapes),
            "calls_per_iter": e.count / n_iter,
            "self_ms_per_iter": e.self_cpu_time_total / n_iter / 1e3,
            "percent": 100.0 * e.self_cpu_time_total / max(total, 1e-9),
        })
    return rows, total / n_iter / 1e3


# --------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-trials", type=int, default=250)
    ap.add_argument("--n-timepoints", type=int, default=50)
    ap.add_argument("--n-neurons", type=int, default=100)
    ap.add_argument("--n-units", type=int, default=200)
    ap.add_argument("--rank", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20,
                    help="timed iterations per measurement (after 3 warm-ups)")
    ap.add_argument("--json", metavar="PATH", default=None,
                    help="save the numbers as JSON to PATH (default: do not write)")
    ap.add_argument("--profile", action="store_true",
                    help="also print torch.profiler's top ops of our iteration")
    ap.add_argument("--skip-naive", action="store_true",
                    help="do not time the naive dense comparator")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    return args


def _row(label, value, unit="ms", extra=""):
    if isinstance(value, dict):
        txt = f"{value['median_ms']:10.2f} {unit}   (min {value['min_ms']:.2f})"
    elif isinstance(value, str):
        txt = f"{value:>10s}"
    else:
        txt = f"{value:10.2f} {unit}"
    print(f"  {label:<44s}{txt}{extra}")


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch.float32
    K, T, n, N, R = (args.n_trials, args.n_timepoints, args.n_neurons, args.n_units,
                     args.rank)
    results = {
        "config": {"n_trials": K, "n_timepoints": T, "n_neurons": n, "n_units": N,
                   "rank": R, "threads": torch.get_num_threads(), "dtype": "float32",
                   "repeats": args.repeats, "warmup": N_WARMUP,
                   "torch": torch.__version__},
        "machine": machine_info(),
    }

    # 0. Same model? float64 (tight) and float32 (what is timed).
    results["agreement_float64"] = agreement(args, torch.float64)
    results["agreement_float32"] = agreement(args, torch.float32)

    load_before = os.getloadavg()[0]
    X, data, basis, params, alpha = make_problem(args, dtype)
    # Matmul speed first, next to our iteration (the naive run heats the allocator).
    gflops, gflops_best, mm_t = matmul_gflops(args.repeats, dtype)
    our = make_our_loss(data, basis, N, alpha, T, ACTIVITY_PENALTY)

    # 1. Our iteration.
    p_ours = fresh_params(params)
    step, _ = make_train_step(our, p_ours)
    results["ours_iteration"] = time_ms(step, args.repeats)
    results["ours_lbfgs_iteration"] = lbfgs_iteration(our, params, args.repeats)
    p_fwd = fresh_params(params)
    results["ours_forward_grad"] = time_ms(lambda: our(p_fwd), args.repeats)
    with torch.no_grad():
        results["ours_forward_nograd"] = time_ms(lambda: our(p_fwd), args.repeats)
    results["breakdown"] = breakdown(data, basis, params, alpha, args)

    # 2. Naive dense comparator.
    if not args.skip_naive:
        p_naive = fresh_params(params)
        nstep, _ = make_train_step(
            lambda p: naive_loss(p, basis, data.X, alpha=alpha,
                                 activity_penalty=ACTIVITY_PENALTY), p_naive)
        results["naive_iteration"] = time_ms(nstep, args.repeats)
        # 3. Ratio.
        results["ratio_naive_over_ours"] = (results["naive_iteration"]["median_ms"]
                                            / results["ours_iteration"]["median_ms"])

    # 4. Arithmetic floor.
    rf, rb = readout_flops(K, T, N, n)
    cf, cb = recurrence_flops(K, T, N, R)
    floor_ms = (rf + rb + cf + cb) / (gflops * 1e9) * 1e3
    results["floor"] = {
        "matmul_gflops": gflops, "matmul_gflops_best": gflops_best,
        "matmul_ms": mm_t["median_ms"],
        "readout_mflop_fwd": rf / 1e6, "readout_mflop_bwd": rb / 1e6,
        "recurrence_mflop_fwd": cf / 1e6, "recurrence_mflop_bwd": cb / 1e6,
        "total_mflop": (rf + rb + cf + cb) / 1e6, "floor_ms": floor_ms,
        "ours_over_floor": results["ours_iteration"]["median_ms"] / floor_ms,
        "floor_ms_best": (rf + rb + cf + cb) / (gflops_best * 1e9) * 1e3,
        "naive_mflop_approx": naive_flops(K, T, N, R, n) / 1e6,
    }

    if args.profile:
        results["profile"], results["profile_total_ms"] = profile_ops(step)
    results["config"]["loadavg_1min"] = [load_before, os.getloadavg()[0]]

    # ------------------------------------------------------------------ print
    c = results["config"]
    print(f"sklearn_ltr training iteration: K={K} trials x T={T} bins x n={n} neurons, "
          f"N={N} units, rank {R}")
    print(f"torch {c['torch']}, {c['threads']} thread(s), float32, median of "
          f"{args.repeats} after {N_WARMUP} warm-ups; 1-min load avg "
          f"{c['loadavg_1min'][0]:.2f} -> {c['loadavg_1min'][1]:.2f} on "
          f"{os.cpu_count()} CPUs")
    print("-" * 78)
    _row("ours: iteration (fwd + bwd + Adam)", results["ours_iteration"])
    lb = results["ours_lbfgs_iteration"]
    _row("ours: L-BFGS iteration (solver='lbfgs')", lb,
         extra=f"  ({lb['evals_per_iter']:.2f} loss evaluations per iteration)")
    _row("ours: forward only (grad enabled)", results["ours_forward_grad"])
    _row("ours: forward only (no_grad)", results["ours_forward_nograd"])
    b = results["breakdown"]
    _row("  recurrence + readout + MSE forward", b["fused_fwd"])
    _row("  recurrence + readout + MSE backward", b["fused_bwd"])
    _row("  param prep forward (C, B, D)", b["param_prep_fwd"])
    _row("  Adam step", b["adam_step"])
    _row("  zero_grad", b["zero_grad"])
    parts = sum(b[k]["median_ms"] for k in (
        "fused_fwd", "fused_bwd", "param_prep_fwd", "adam_step", "zero_grad"))
    _row("  sum of parts / unaccounted glue", f"{parts:.2f} / "
         f"{results['ours_iteration']['median_ms'] - parts:.2f}")
    _row("  unfused (rates stored) forward", b["unfused_fwd"])
    _row("  unfused (rates stored) backward", b["unfused_bwd"])
    _row("  fused / unfused, fwd + bwd", f"{b['fused_over_unfused']:.2f}x")
    if "naive_iteration" in results:
        _row("naive dense: iteration (fwd + bwd + Adam)", results["naive_iteration"])
        _row("ratio naive / ours", f"{results['ratio_naive_over_ours']:.1f}x")
    f = results["floor"]
    _row("matmul speed (12500x200 @ 200x100)", f["matmul_gflops"], "GFLOP/s",
         f"  (best {f['matmul_gflops_best']:.1f})")
    _row("FLOPs readout fwd + bwd",
         f"{f['readout_mflop_fwd']:.0f} + {f['readout_mflop_bwd']:.0f}", "",
         " MFLOP")
    _row("FLOPs recurrence fwd + bwd",
         f"{f['recurrence_mflop_fwd']:.0f} + {f['recurrence_mflop_bwd']:.0f}", "",
         " MFLOP")
    _row("arithmetic floor", f["floor_ms"], "ms",
         f"  (at best speed {f['floor_ms_best']:.2f})")
    _row("ours / floor", f"{f['ours_over_floor']:.2f}x")
    for key, label in (("agreement_float64", "float64"),
                       ("agreement_float32", "float32")):
        a = results[key]
        _row(f"agreement {label}: |loss ours - naive|", f"{a['loss_abs_diff']:.2e}",
             extra=f"  (loss {a['loss_ours']:.6g})")
        _row(f"agreement {label}: max |readout diff|",
             f"{a['readout_max_abs_diff']:.2e}")
        _row(f"agreement {label}: max rel grad diff", f"{a['grad_max_rel_diff']:.2e}")
    if args.profile:
        print("-" * 78)
        print(f"torch.profiler, our iteration: self CPU ms per iteration "
              f"(total {results['profile_total_ms']:.2f} ms incl. profiler overhead)")
        print(f"  {'op':<26s}{'input shapes':<30s}{'calls':>6s}{'ms':>8s}{'%':>6s}")
        for r in results["profile"]:
            print(f"  {r['op'][:25]:<26s}{r['shapes'][:29]:<30s}"
                  f"{r['calls_per_iter']:6.0f}{r['self_ms_per_iter']:8.2f}"
                  f"{r['percent']:6.1f}")

    if args.json:
        save_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
