"""Command line: ``python -m sklearn_ltr demo`` (also the ``sklearn-ltr`` script).

``demo`` runs the package's main job on its built-in planted dataset: cross-validated
rank selection for LowTensorRankRNN and LowRankRNN on the same folds, a printed table
and a figure.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _rank_table(results, ranks):
    lines = [f"{'rank':>4}  " + "  ".join(f"{name:>22}" for name in results)]
    for i, r in enumerate(ranks):
        cells = []
        for name, res in results.items():
            cells.append(f"{res['mean'][i]:>13.4f} +/- {res['se'][i]:.4f}")
        lines.append(f"{r:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def _search(est, X, ranks, cv, n_jobs):
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(est, {"rank": ranks}, cv=cv, n_jobs=n_jobs,
                          error_score="raise", refit=False)
    search.fit(X)
    n_splits = cv.get_n_splits()
    scores = np.array([search.cv_results_[f"split{i}_test_score"]
                       for i in range(n_splits)]).T
    mean = scores.mean(1)
    se = scores.std(1, ddof=1) / np.sqrt(n_splits)
    best = int(np.argmax(mean))
    # One-standard-error rule: the smallest rank whose score is within one standard
    # error of the best -- the defensible choice when larger ranks tie.
    one_se = int(np.flatnonzero(mean >= mean[best] - se[best])[0])
    return {"mean": mean.tolist(), "se": se.tolist(),
            "best_rank": int(ranks[best]), "one_se_rank": int(ranks[one_se])}


def _plot(results, ranks, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, res in results.items():
        line = ax.errorbar(ranks, res["mean"], yerr=res["se"], marker="o", capsize=3,
                           label=f"{name} (one-SE rank {res['one_se_rank']})")
        i = ranks.index(res["one_se_rank"])
        ax.plot(ranks[i], res["mean"][i], marker="*", markersize=14,
                color=line[0].get_color(), zorder=3)
    ax.set_xlabel("rank")
    ax.set_ylabel("co-smoothing $R^2$ (held-out trials)")
    ax.set_xticks(ranks)
    ax.set_title(title + "\n(mean +/- SE over folds; star: one-SE rank)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo(args):
    from sklearn.model_selection import KFold

    from . import LowRankRNN, LowTensorRankRNN
    from .datasets import make_low_tensor_rank_rnn

    data = make_low_tensor_rank_rnn(
        n_trials=80, n_timepoints=25, n_neurons=30, rank=3, noise=0.2,
        random_state=args.random_state)
    ranks = list(args.ranks)
    cv = KFold(args.cv, shuffle=True, random_state=args.random_state)
    print(f"Built-in dataset: planted low-tensor-rank RNN, X of shape {data.X.shape} "
          f"(trials x time x neurons), planted rank 3, trial factors that change like "
          f"learning curves.")
    print(f"Cross-validating ranks {ranks} with {args.cv}-fold CV over trials "
          f"(co-smoothing score), n_jobs={args.n_jobs} ...", flush=True)
    results = {}
    t0 = time.perf_counter()
    for name, est in [
        ("LowTensorRankRNN", LowTensorRankRNN(n_units=40, random_state=0)),
        ("LowRankRNN", LowRankRNN(n_units=40, random_state=0)),
    ]:
        results[name] = _search(est, data.X, ranks, cv, args.n_jobs)
    elapsed = time.perf_counter() - t0
    print()
    print(_rank_table(results, ranks))
    print()
    for name, res in results.items():
        print(f"{name}: best rank {res['best_rank']}, one-standard-error rank "
              f"{res['one_se_rank']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig_path = out / "rank_selection.png"
    _plot(results, ranks, fig_path, "Planted rank-3 low-tensor-rank RNN")
    with open(out / "results.json", "w") as fh:
        json.dump({"ranks": ranks, "results": results, "seconds": elapsed}, fh,
                  indent=2)
    print(f"\nWrote {fig_path} and {out / 'results.json'} ({elapsed:.0f} s).")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_ltr",
        description="Low-tensor-rank RNN models of neural activity over learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="cross-validated rank selection on the built-in "
                       "dataset: prints a table and writes a figure")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--cv", type=int, default=5, help="number of folds over trials")
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--out", default="sklearn_ltr_demo", help="output folder")
    p.add_argument("--random-state", type=int, default=0)
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
