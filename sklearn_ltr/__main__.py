"""Command line: ``python -m sklearn_ltr`` (also the ``sklearn-ltr`` script).

* ``select-rank DATA``: cross-validated rank selection on a file of recordings
  (``.npz``, ``.npy`` or ``.mat``), comparing the low-tensor-rank RNN with the
  low-rank RNN, TCA and PCA on the same folds; prints a table and writes
  ``results.json`` and ``rank_selection.png``.
* ``demo``: the same on the built-in dataset: the
  activity of a task-trained network learning a curl field
  (:func:`sklearn_ltr.datasets.make_motor_learning`), with the CP rank of its weight
  changes printed as the ground truth.

Errors in the input (missing file, missing key, wrong dimensionality, ...) print one
line on stderr and exit with status 1.
"""

import argparse
import importlib.util
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ESTIMATORS = {
    "ltr": "LowTensorRankRNN",
    "lr": "LowRankRNN",
    "tca": "TCA",
    "pca": "TrialPCA",
}
AXES = ("trial", "time", "neuron")


class InputError(ValueError):
    """A problem with the user's input, reported as one line on stderr."""


# --------------------------------------------------------------------------- #
# reading recordings
# --------------------------------------------------------------------------- #
def _pick(arrays, key, path):
    if key is not None:
        if key not in arrays:
            raise InputError(f"{path} has no array {key!r}; it has "
                             f"{sorted(arrays)}. Choose one with --key.")
        return arrays[key]
    if "X" in arrays:
        return arrays["X"]
    candidates = [k for k, v in arrays.items() if np.ndim(v) == 3]
    if len(candidates) == 1:
        return arrays[candidates[0]]
    raise InputError(f"{path} has no array 'X' and {len(candidates)} 3D arrays "
                     f"({sorted(arrays)}); name the data with --key.")


def load_recordings(path, *, key=None, y_key="y", axis_order=AXES):
    """Read ``X`` (and labels when present) from ``.npz``, ``.npy`` or ``.mat``.

    Parameters
    ----------
    path : str or Path
        The file.
    key : str, default=None
        Name of the data array; by default ``X``, or the only 3D array of the file.
    y_key : str, default="y"
        Name of the optional condition labels (one per trial).
    axis_order : sequence of {'trial', 'time', 'neuron'}, default=AXES
        The order of the axes in the file, e.g. ``('time', 'trial', 'neuron')``;
        by default ``('trial', 'time', 'neuron')``.

    Returns
    -------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
    y : ndarray of shape (n_trials,) or None
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        elif suffix == ".npy":
            arrays = {"X": np.load(path, allow_pickle=False)}
        elif suffix == ".mat":
            from scipy.io import loadmat

            arrays = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
        else:
            raise InputError(f"{path}: unsupported file type {suffix!r}; use .npz "
                             f"(array 'X', optional 'y'), .npy or .mat.")
    except InputError:
        raise
    except Exception as exc:  # corrupt or foreign files: one line, no traceback
        raise InputError(f"could not read {path}: {exc}") from None
    X = np.asarray(_pick(arrays, key, path))
    if X.dtype.kind not in "fiub":
        raise InputError(f"the data in {path} are not numeric (dtype {X.dtype}).")
    if X.ndim != 3:
        raise InputError(
            f"the data in {path} have shape {X.shape}; expected 3 axes "
            f"({', '.join(axis_order)}). Reshape them into trials first.")
    if sorted(axis_order) != sorted(AXES):
        raise InputError(f"--axis-order must name trial, time and neuron once each, "
                         f"got {' '.join(axis_order)}.")
    X = np.transpose(X, [list(axis_order).index(a) for a in AXES])
    y = arrays.get(y_key)
    if y is not None:
        y = np.ravel(y)
        if y.shape[0] != X.shape[0]:
            raise InputError(f"{y_key!r} has {y.shape[0]} labels but the data have "
                             f"{X.shape[0]} trials.")
    return X.astype(float), y


# --------------------------------------------------------------------------- #
# the cross-validated comparison
# --------------------------------------------------------------------------- #
def _build(names, *, n_units, tau, max_iter, random_state, sigma, zscore):
    from sklearn.pipeline import make_pipeline

    from . import TCA, LowRankRNN, LowTensorRankRNN, TrialPCA
    from .preprocessing import GaussianSmoother, StandardScaler3D

    steps = []
    if sigma:
        steps.append(GaussianSmoother(sigma=sigma))
    if zscore:
        steps.append(StandardScaler3D())
    make = {
        "ltr": lambda: LowTensorRankRNN(n_units=n_units, tau=tau, max_iter=max_iter,
                                        random_state=random_state),
        "lr": lambda: LowRankRNN(n_units=n_units, tau=tau, max_iter=max_iter,
                                 random_state=random_state),
        "tca": lambda: TCA(n_init=3, tol=1e-6, random_state=random_state),
        "pca": lambda: TrialPCA(random_state=random_state),
    }
    return {ESTIMATORS[n]: make_pipeline(*steps, make[n]()) for n in names}


def run_selection(X, y, args, title, *, extra=None):
    """Cross-validate, print the table, write results.json and rank_selection.png."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from .model_selection import compare_estimators, rank_selection_summary

    # Fail before hours of fitting, not after.
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("the figure needs matplotlib: pip install matplotlib "
                         "(or the package's [plot] extra).")
    if args.cv < 2 or args.cv > X.shape[0]:
        raise InputError(f"--cv {args.cv} must be between 2 and the number of trials "
                         f"({X.shape[0]}).")
    ranks = sorted(set(args.ranks))
    if ranks[0] < 1:
        raise InputError(f"--ranks must be positive integers, got {args.ranks}.")
    estimators = _build(args.estimators, n_units=args.n_units, tau=args.tau,
                        max_iter=args.max_iter,
                        random_state=args.random_state, sigma=args.smooth,
                        zscore=args.zscore)
    if y is None:
        cv = KFold(args.cv, shuffle=True, random_state=args.random_state)
    else:
        # Condition labels set per-condition initial states, so every condition must
        # be in every training fold: stratify the folds by condition.
        _, counts = np.unique(y, return_counts=True)
        if counts.min() < args.cv:
            raise InputError(
                f"condition {np.unique(y)[counts.argmin()].item()!r} has only "
                f"{counts.min()} trial(s), fewer than --cv {args.cv} folds.")
        cv = StratifiedKFold(args.cv, shuffle=True, random_state=args.random_state)
    print(f"{title}: X of shape {X.shape} (trials x time x neurons).")
    print(f"Cross-validating ranks {ranks} of {', '.join(estimators)} with "
          f"{args.cv}-fold CV over trials (co-smoothing score), "
          f"n_jobs={args.n_jobs} ...", flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = compare_estimators(estimators, X, y, ranks=ranks, cv=cv,
                                     n_jobs=args.n_jobs, verbose=args.verbose,
                                     as_frame=False)
    # compare_estimators reports each distinct warning of the fits once.
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    summary = rank_selection_summary(records)
    print()
    print(summary.text)
    print()
    for name in estimators:
        if name in summary.best_rank:
            print(f"{name}: best rank {summary.best_rank[name]}, "
                  f"one-standard-error rank {summary.one_se_rank[name]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig_path = out / "rank_selection.png"
    _plot(summary, fig_path, title)
    payload = {
        "title": title, "shape": list(X.shape), "ranks": ranks, "cv": args.cv,
        "score": summary.score_name, "seconds": elapsed,
        "best_rank": summary.best_rank, "one_se_rank": summary.one_se_rank,
        "table": summary.table, "folds": records, **(extra or {}),
    }
    with open(out / "results.json", "w") as fh:
        json.dump(payload, fh, indent=2, default=_json_default)
    print(f"\nWrote {fig_path} and {out / 'results.json'} ({elapsed:.0f} s).")
    return summary


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _plot(summary, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import plot_rank_selection

    fig, ax = plt.subplots(figsize=(5.5, 4))
    plot_rank_selection(summary, ax=ax)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- #
# subcommands
# --------------------------------------------------------------------------- #
def select_rank(args):
    """The ``select-rank`` subcommand: rank selection on a file of recordings."""
    X, y = load_recordings(args.data, key=args.key, y_key=args.y_key,
                           axis_order=args.axis_order)
    run_selection(X, y, args, Path(args.data).name,
                  extra={"data": str(args.data), "smooth": args.smooth,
                         "zscore": args.zscore})
    return 0


# A smaller session for a quick look (and the tests): 40 units, 30 bins, 112 trials.
QUICK_SESSION = {"n_units": 40, "n_timepoints": 30, "n_baseline": 2,
                 "n_perturbation": 8, "n_washout": 4}


def demo(args):
    """The ``demo`` subcommand: rank selection on the built-in dataset."""
    from .analysis import tensor_rank_curve
    from .datasets import make_motor_learning

    print("Built-in dataset: a recurrent network trained on centre-out reaching, "
          "recorded while it adapts to a curl force field and back (baseline, "
          "perturbation, washout; one gradient step per trial) ...", flush=True)
    data = make_motor_learning(**(QUICK_SESSION if args.quick else {}),
                               random_state=args.random_state)
    ranks = sorted(set(args.ranks))
    # The ground truth the cross-validated rank is compared with: how many CP
    # components the network's weight changes over the session need.
    curve = tensor_rank_curve(data.weights - data.weights[0], ranks, n_init=2,
                              random_state=args.random_state)
    print("Ground truth, CP variance explained of its weight changes W - W[0]: "
          + ", ".join(f"rank {r}: {v:.3f}" for r, v in
                      zip(curve.ranks, curve.variance_explained)))
    args.tau = data.tau_bins
    run_selection(
        data.X, data.y, args, "Task-trained RNN adapting to a curl field",
        extra={"dataset": "make_motor_learning",
               "weight_change_cp_variance_explained": dict(zip(
                   curve.ranks.tolist(), curve.variance_explained.tolist()))})
    return 0


def _common_options(p, *, estimators, n_units):
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3, 4, 5],
                   help="ranks to compare (default: 1 2 3 4 5)")
    p.add_argument("--cv", type=int, default=5, help="number of folds over trials")
    p.add_argument("--estimators", nargs="+", choices=sorted(ESTIMATORS),
                   default=estimators, help="ltr: LowTensorRankRNN, lr: LowRankRNN, "
                   "tca: TCA, pca: TrialPCA (default: %(default)s)")
    p.add_argument("--n-units", type=int, default=n_units,
                   help="units of the fitted RNNs (default: %(default)s)")
    p.add_argument("--max-iter", type=int, default=1000,
                   help="iterations per RNN fit (default: %(default)s)")
    p.add_argument("--n-jobs", type=int, default=-1,
                   help="parallel fits (default: all cores)")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--verbose", type=int, default=5,
                   help="progress messages (0: none; default: %(default)s)")


def main(argv=None):
    """Run the command line; return the exit status (0, or 1 after an error line)."""
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_ltr",
        description="Low-tensor-rank RNN models of neural activity over learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "select-rank", help="cross-validated rank selection on a file of recordings",
        description="Cross-validated rank selection on recordings: compares the "
        "models on the same folds of trials, prints a table and writes "
        "OUT/results.json and OUT/rank_selection.png.")
    p.add_argument("data", help=".npz (array 'X', optional labels 'y'), .npy or .mat")
    p.add_argument("--key", default=None, help="name of the data array in the file")
    p.add_argument("--y-key", default="y", help="name of the condition labels")
    p.add_argument("--axis-order", nargs=3, choices=AXES, default=list(AXES),
                   metavar="AXIS", help="axis order in the file, e.g. "
                   "'time trial neuron' (default: trial time neuron)")
    p.add_argument("--smooth", type=float, default=0.0, metavar="SIGMA",
                   help="Gaussian smoothing along time, in bins (0: none)")
    p.add_argument("--zscore", action="store_true",
                   help="z-score each neuron (fitted on the training folds)")
    p.add_argument("--out", default="sklearn_ltr_results", help="output folder")
    p.add_argument("--tau", type=float, default=2.0,
                   help="time constant of the fitted RNNs' units, in time bins "
                   "(default: %(default)s)")
    _common_options(p, estimators=["ltr", "lr", "tca", "pca"], n_units=100)
    p.set_defaults(func=select_rank)

    p = sub.add_parser("demo", help="cross-validated rank selection on the built-in "
                       "dataset: prints a table and writes a figure")
    p.add_argument("--out", default="sklearn_ltr_demo", help="output folder")
    p.add_argument("--quick", action="store_true",
                   help="a smaller session (40 units, 112 trials) for a quick look")
    _common_options(p, estimators=["ltr", "lr"], n_units=50)
    # The RNNs take the time constant of the simulated network.
    p.set_defaults(func=demo, smooth=0.0, zscore=False, tau=None)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
