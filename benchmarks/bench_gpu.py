"""The GPU against the CPU: agreement of a fit, and the time of a large fit.

Run on a machine with a CUDA device (``LowTensorRankRNN(device="cuda")``)::

    python benchmarks/bench_gpu.py --json gpu.json     # about 5-10 minutes

Without one it says so and exits with status 0, having measured nothing.

Sections
--------
agreement
    The same fit -- planted data, 60 trials x 20 bins x 30 neurons, 40 units, rank
    3, ``--agreement-iter`` iterations, ``random_state=0`` -- on the CPU and on
    ``--device``, in float32. Printed: the largest difference of the loss curves
    relative to the loss, of the predictions on held-out trials relative to their
    scale, and of the scores. The two devices sum in different orders, so the
    difference starts at float32 round-off (about 1e-7 relative) and can grow over
    the iterations of a fit; the first iterations show the round-off itself.
timing
    ``--n-trials`` x ``--n-timepoints`` x ``--n-neurons`` (default 1000 x 100 x 300),
    ``--n-units`` units (1000), rank ``--rank`` (8): the time per iteration on each
    device over ``--timing-iter`` iterations (``tol=0``, no warm start: the
    difference of fits of 2 and ``2 + --timing-iter`` iterations, after a first fit
    that loads the device), their ratio, and one default fit on ``--device`` (its
    time and iterations). The CPU runs with all its threads here (one fit, no
    parallel fits to share them with).
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import finish, machine_info, planted_data, print_table  # noqa: E402

from sklearn_ltr import LowTensorRankRNN  # noqa: E402

SMALL = {"n_trials": 60, "n_timepoints": 20, "n_neurons": 30, "n_units": 40,
         "rank": 3}


def _fit(X, device, n_iter, size, threads, **params):
    """A fit of exactly ``n_iter`` iterations; ``(estimator, seconds)``."""
    est = LowTensorRankRNN(rank=size["rank"], n_units=size["n_units"], device=device,
                           random_state=0, n_threads=threads, max_iter=n_iter,
                           tol=0.0, n_iter_no_change=n_iter + 1, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return est, time.perf_counter() - t0


def section_agreement(args):
    data = planted_data(**SMALL, random_state=0)
    X, test = data.X[:50], data.X[50:]
    fits = {dev: _fit(X, dev, args.agreement_iter, SMALL, 1)[0]
            for dev in ("cpu", args.device)}
    a, b = fits["cpu"], fits[args.device]
    curve_a, curve_b = np.asarray(a.loss_curve_), np.asarray(b.loss_curve_)
    n = min(len(curve_a), len(curve_b))
    rel_curve = np.abs(curve_a[:n] - curve_b[:n]) / np.abs(curve_a[:n])
    pred_a, pred_b = a.predict(test), b.predict(test)
    rel_pred = float(np.abs(pred_a - pred_b).max() / np.abs(pred_a).max())
    scores = (a.score(test), b.score(test))
    rows = [["loss, first 10 iterations", float(rel_curve[:10].max())],
            ["loss, whole fit", float(rel_curve.max())],
            ["held-out predictions", rel_pred],
            ["held-out score (cpu, device)", f"{scores[0]:.6f}, {scores[1]:.6f}"]]
    print_table(f"agreement: cpu against {args.device}, {args.agreement_iter} "
                f"iterations (largest relative difference)", ["quantity", "value"],
                rows)
    return {"loss_curve_rel_first10": float(rel_curve[:10].max()),
            "loss_curve_rel": float(rel_curve.max()), "prediction_rel": rel_pred,
            "scores": scores, "n_iter": args.agreement_iter}


def section_timing(args):
    size = {"n_trials": args.n_trials, "n_timepoints": args.n_timepoints,
            "n_neurons": args.n_neurons, "n_units": args.n_units, "rank": args.rank}
    X = planted_data(**size, random_state=0).X
    threads = os.cpu_count()
    out, rows = {"size": size}, []
    for key, dev in (("cpu", "cpu"), ("device", args.device)):
        # A first fit loads the device's kernels and fills its allocator; then the
        # initialisation with 2 iterations, and with timing_iter more (no warm
        # start, so every iteration is the same free-running step).
        _fit(X, dev, 1, size, threads)
        t_init, t_all = (min(_fit(X, dev, n, size, threads, teacher_forcing=0.0)[1]
                             for _ in range(args.repeats))
                         for n in (2, 2 + args.timing_iter))
        per_iter = (t_all - t_init) / args.timing_iter
        out[key] = {"name": dev, "init_s": t_init, "per_iter_s": per_iter}
        rows.append([dev, t_init, per_iter])
    ratio = out["cpu"]["per_iter_s"] / out["device"]["per_iter_s"]
    print_table(f"time per iteration, {args.n_trials} x {args.n_timepoints} x "
                f"{args.n_neurons}, {args.n_units} units, rank {args.rank} "
                f"({args.timing_iter} timed iterations; cpu with {threads} threads)",
                ["device", "init + 2 iterations (s)", "per iteration (s)"], rows,
                note=f"cpu / {args.device} per iteration: {ratio:.1f}x")
    est = LowTensorRankRNN(rank=args.rank, n_units=args.n_units, device=args.device,
                           random_state=0, max_iter=args.max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        fit_s = time.perf_counter() - t0
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    print(f"default fit on {args.device} (max_iter={args.max_iter}): {fit_s:.1f} s, "
          f"{est.n_iter_} iterations, {'converged' if converged else 'max_iter'}")
    out.update(ratio=ratio, fit_s=fit_s, fit_n_iter=est.n_iter_, converged=converged)
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda",
                   help="the device compared with the CPU (default: cuda)")
    p.add_argument("--sections", default="agreement,timing")
    p.add_argument("--agreement-iter", type=int, default=200)
    p.add_argument("--n-trials", type=int, default=1000)
    p.add_argument("--n-timepoints", type=int, default=100)
    p.add_argument("--n-neurons", type=int, default=300)
    p.add_argument("--n-units", type=int, default=1000)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--timing-iter", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1,
                   help="fits per timing; the fastest counts (default: 1)")
    p.add_argument("--max-iter", type=int, default=1000,
                   help="max_iter of the default fit of the timing section")
    p.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke run at small sizes")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.agreement_iter, args.timing_iter, args.max_iter = 20, 5, 20
        args.repeats = 3
        args.n_trials, args.n_timepoints, args.n_neurons = 30, 10, 12
        args.n_units, args.rank = 24, 2
    for name in ("agreement_iter", "n_trials", "n_timepoints", "n_neurons",
                 "n_units", "rank", "timing_iter", "max_iter", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    unknown = set(args.sections.split(",")) - {"agreement", "timing"}
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from agreement, timing")
    return args


def main(argv=None):
    args = parse(argv)
    args.n_jobs = 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"No CUDA device on this machine (torch {torch.__version__}): nothing "
              f"measured. Run this script where LowTensorRankRNN(device='cuda') works.")
        return 0
    t_start = time.perf_counter()
    machine = machine_info()
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    print(f"sklearn_ltr GPU benchmark: {machine['cpu_model']}, "
          f"{machine.get('gpu', args.device)}, torch {machine['torch']}")
    out = {"machine": machine, "device": args.device, "quick": args.quick}
    runners = {"agreement": section_agreement, "timing": section_timing}
    for name in args.sections.split(","):
        out[name] = runners[name](args)
    finish(out, machine, args, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
