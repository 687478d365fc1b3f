"""Recovery of the task-trained network's learning, against fair nulls.

Fits ``LowTensorRankRNN`` to the activity of the built-in session
(``make_motor_learning``: inputs, targets, trial numbers and epochs given) and
compares what it recovered with the network's true weights:

* trial factors: the fitted components that change most against the trial factors
  of a CP fit of the true weight changes ``W - W[0]`` (centred over trials), set
  beside two nulls (``analysis.trial_factor_recovery``): curves from the session's
  schedule alone (epoch indicators, ramps, decays) and random smooth curves with
  the fitted length scale; the ceiling of the schedule's span is printed too;
* connectivity: principal angles between fitted and true column and row spaces of
  the weight changes (in the recorded neurons' coordinates) against random
  subspaces, and the relative error of the fitted changes against the same fit
  with its trial factors shuffled over trials (``analysis.connectivity_recovery``).

Usage::

    python benchmarks/bench_recovery.py                  # rank 6, default session
    python benchmarks/bench_recovery.py --rank 4 --json out.json
    python benchmarks/bench_recovery.py --quick          # a smoke test
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

from sklearn_ltr import LowTensorRankRNN
from sklearn_ltr.analysis import (
    connectivity_recovery,
    tensor_rank_curve,
    trial_factor_recovery,
)
from sklearn_ltr.datasets import make_motor_learning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, print_table, save_json  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=6, help="rank of the fitted network")
    p.add_argument("--true-rank", type=int, default=3,
                   help="rank of the CP fit of the true weight changes")
    p.add_argument("--n-units", type=int, default=100)
    p.add_argument("--max-iter", type=int, default=3000)
    p.add_argument("--trial-length-scale", type=float, default=40.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="random_state of the fits")
    p.add_argument("--n-null", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="a small session")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    session = {}
    if args.quick:
        session = dict(n_units=20, n_timepoints=15, n_targets=4, n_baseline=1,
                       n_perturbation=4, n_washout=2, pretrain_iter=200,
                       learning_rate=0.02)
        args.n_units, args.max_iter, args.n_null = 20, 100, 50
        args.rank, args.true_rank = 3, 2
    t0 = time.perf_counter()
    machine = machine_info()
    data = make_motor_learning(**session, random_state=0)
    index = np.arange(len(data.X), dtype=float)
    dW = data.weights - data.weights[0]
    true = tensor_rank_curve(dW, [args.true_rank], n_init=3,
                             random_state=0).factors[0][0]
    rows, records = [], []
    for seed in args.seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = LowTensorRankRNN(
                rank=args.rank, n_units=args.n_units, tau=data.tau_bins,
                max_iter=args.max_iter, trial_length_scale=args.trial_length_scale,
                random_state=seed).fit(data.X, data.y, trial_index=index,
                                        epochs=data.epoch, inputs=data.inputs)
        C = est.trial_factors_
        # The fitted components that change most over the session.
        changing = np.argsort(-C.std(axis=0))[:args.true_rank]
        factors = trial_factor_recovery(
            C[:, changing], true, epochs=data.epoch,
            length_scale=args.trial_length_scale, n_null=args.n_null,
            random_state=seed)
        conn = connectivity_recovery(est, data.weights, n_null=min(args.n_null, 200),
                                     random_state=seed)
        rec = {
            "seed": seed, "similarity": factors.similarity,
            "null_schedule_p95": float(np.percentile(factors.null_schedule, 95)),
            "null_smooth_p95": float(np.percentile(factors.null_smooth, 95)),
            "pvalue_schedule": factors.pvalue_schedule,
            "pvalue_smooth": factors.pvalue_smooth,
            "schedule_ceiling": factors.schedule_ceiling,
            "column_angles": conn.column_angles, "row_angles": conn.row_angles,
            "null_angles": conn.null_column_angles,
            "relative_error": conn.relative_error, "scaled_error": conn.scaled_error,
            "null_error_median": float(np.median(conn.null_relative_error)),
            "null_scaled_error_median": float(np.median(conn.null_scaled_error)),
            "pvalue_error": conn.pvalue_error, "n_iter": est.n_iter_}
        records.append(rec)
        rows.append([seed, rec["similarity"], rec["null_schedule_p95"],
                     rec["schedule_ceiling"], rec["null_smooth_p95"],
                     rec["pvalue_smooth"],
                     float(np.median(rec["column_angles"])),
                     float(np.median(rec["row_angles"])),
                     float(np.median(rec["null_angles"])), rec["scaled_error"],
                     rec["null_scaled_error_median"], rec["relative_error"]])
    print_table(
        f"Recovery on the task-trained network ({data.X.shape[0]} trials, "
        f"LowTensorRankRNN rank {args.rank}; {args.true_rank} changing components "
        f"against the CP factors of W - W[0])",
        ["seed", "similarity", "schedule p95", "schedule best", "smooth p95",
         "p (smooth)", "col. angle", "row angle", "random angle", "scaled error",
         "shuffled", "raw error"], rows,
        note=f"angles: median principal angle in degrees; errors: relative Frobenius "
             f"error of W_k - W_0 in the neurons' coordinates (scaled: after the "
             f"best single scale; shuffled: trial factors shuffled, median). "
             f"{time.perf_counter() - t0:.0f} s on {machine['cpu_model']}, load "
             f"{machine['loadavg'][0]:.2f}")
    if args.json:
        save_json(args.json, {"config": vars(args), "machine": machine,
                              "records": records})


if __name__ == "__main__":
    main()
