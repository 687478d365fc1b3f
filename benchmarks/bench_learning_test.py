"""Power and false-positive rate of ``model_selection.learning_test``, measured.

Planted sessions (``make_low_tensor_rank_rnn``, condition labels given) in five
conditions, each over many seeds:

* ``learning``: trial factors change along learning curves (by 50-90 %);
* ``constant``: fixed connectivity, no nuisance;
* ``recurrent gain``: fixed connectivity, the recurrence's gain jitters from trial
  to trial (independent, standard deviation ``--jitter``);
* ``readout gain``: fixed connectivity, the recorded activity's gain jitters from
  trial to trial (independent, ``--jitter``);
* ``offset drift``: fixed connectivity, each neuron's offset drifts slowly over the
  session (``--drift`` times the activity's standard deviation).

For each session ``learning_test`` fits both networks on the same trial-block folds
and scores the held-out blocks with the predicting score. The table gives, per
condition, the fraction of seeds with p < alpha (power for ``learning``, the
false-positive rate for the others), the fraction where the low-tensor-rank network
beat the low-rank one on every fold, and the median difference of scores; the
ConditionAverage reference (smoothed over the session) and the noise ceiling on the
same folds are printed beside them.

A second section (``--sections length_scale``) plants trial factors drawn from a
Gaussian process with a known length scale and lets ``GridSearchCV``, with the
predicting score routed through scikit-learn's metadata routing and
``TrialBlockKFold`` folds, choose ``trial_length_scale``.

A third section (``--sections rank_selected``) measures the learning test of the
command line (``select-rank --learning-test`` with held-out blocks): both networks
are fitted at every rank of ``--ranks`` on the same folds (``compare_estimators``),
the rank is chosen from those folds by the command line's rule (the best mean score
of both networks together, ties to the smaller rank) and the test is made at that
rank (``paired_comparison``). Its table gives, per condition of
``--rank-conditions``, the fraction of seeds with p < alpha at the chosen rank, at
the planted rank, and at any rank (looking at every rank, uncorrected).

Usage::

    python benchmarks/bench_learning_test.py                    # 20 seeds each
    python benchmarks/bench_learning_test.py --seeds 30 --json out.json
    python benchmarks/bench_learning_test.py --sections length_scale
    python benchmarks/bench_learning_test.py --sections rank_selected --ranks 1 2 3 4
    python benchmarks/bench_learning_test.py --quick            # a smoke test
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

from sklearn_ltr import ConditionAverage, LowRankRNN, LowTensorRankRNN
from sklearn_ltr.datasets import make_low_tensor_rank_rnn
from sklearn_ltr.metrics import r2_observed
from sklearn_ltr.model_selection import (
    _default_blocks,
    _learning_test_rank,
    compare_estimators,
    learning_test,
    paired_comparison,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, print_table, save_json  # noqa: E402


def conditions(jitter, drift):
    """Name -> keyword arguments of ``make_low_tensor_rank_rnn``."""
    return {
        "learning": {"trial_factors": "learning"},
        "constant": {"trial_factors": "constant"},
        "recurrent gain": {"trial_factors": "constant",
                           "recurrent_gain_jitter": jitter},
        "readout gain": {"trial_factors": "constant", "readout_gain_jitter": jitter},
        "offset drift": {"trial_factors": "constant", "offset_drift": drift},
    }


def references(data, result):
    """Smoothed condition average and noise ceiling on the test's folds."""
    avg, ceiling = [], []
    index = np.arange(len(data.X), dtype=float)
    for train, test in result.cv.split(data.X):
        ref = ConditionAverage(trial_smoothing=5.0).fit(
            data.X[train], data.y[train], trial_index=index[train])
        avg.append(ref.score(data.X[test], data.y[test], trial_index=index[test]))
        ceiling.append(r2_observed(data.X[test], data.X_clean[test]))
    return float(np.mean(avg)), float(np.mean(ceiling))


def run(args):
    size = dict(n_trials=args.n_trials, n_timepoints=args.n_timepoints,
                n_neurons=args.n_neurons)
    params = {"n_units": args.n_units, "max_iter": args.max_iter}
    records = []
    for name, kwargs in conditions(args.jitter, args.drift).items():
        for seed in range(args.seeds):
            data = make_low_tensor_rank_rnn(
                **size, rank=args.rank, n_units=60, noise=args.noise,
                random_state=seed, **kwargs)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = learning_test(data.X, data.y, rank=args.rank, random_state=0,
                                    estimator_params=params, n_jobs=args.n_jobs)
            seconds = time.perf_counter() - t0
            avg, ceiling = references(data, res)
            records.append({
                "condition": name, "seed": seed, "pvalue": res.pvalue,
                "difference": res.difference, "se": res.se,
                "per_fold": res.per_fold, "ltr": float(res.scores[
                    "LowTensorRankRNN"].mean()),
                "lr": float(res.scores["LowRankRNN"].mean()),
                "condition_average": avg, "ceiling": ceiling, "seconds": seconds})
            if args.verbose:
                print(f"{name:>15} seed {seed:2d}: p={res.pvalue:.4f} "
                      f"diff={res.difference:+.4f} ({seconds:.0f} s)", flush=True)
    return records


def summarise(records, alpha):
    rows = []
    for name in dict.fromkeys(r["condition"] for r in records):
        sel = [r for r in records if r["condition"] == name]
        p = np.array([r["pvalue"] for r in sel])
        rows.append([
            name, len(sel), float(np.mean(p < alpha)),
            float(np.mean([np.all(np.asarray(r["per_fold"]) > 0) for r in sel])),
            float(np.median(p)),
            float(np.median([r["difference"] for r in sel])),
            float(np.median([r["ltr"] for r in sel])),
            float(np.median([r["lr"] for r in sel])),
            float(np.median([r["condition_average"] for r in sel])),
            float(np.median([r["ceiling"] for r in sel]))])
    return rows


def length_scale_section(args):
    """GridSearchCV's choice of trial_length_scale on planted smooth trial factors."""
    import sklearn
    from sklearn.model_selection import GridSearchCV

    from sklearn_ltr import LowTensorRankRNN
    from sklearn_ltr.model_selection import TrialBlockKFold

    n_trials = 120 if not args.quick else 40
    grid = [2.5, 5.0, 10.0, 20.0, 40.0, 80.0]
    rows = []
    for planted in args.planted_length_scales:
        for seed in range(args.length_seeds):
            data = make_low_tensor_rank_rnn(
                n_trials, args.n_timepoints, args.n_neurons, rank=args.rank,
                n_units=60, noise=args.noise, trial_factors="smooth",
                trial_length_scale=planted, random_state=seed)
            est = LowTensorRankRNN(rank=args.rank, n_units=args.n_units,
                                   max_iter=args.max_iter, random_state=0)
            with sklearn.config_context(enable_metadata_routing=True), \
                    warnings.catch_warnings():
                warnings.simplefilter("ignore")
                search = GridSearchCV(est, {"trial_length_scale": grid},
                                      cv=TrialBlockKFold(5, n_trials // 20, 1),
                                      n_jobs=args.n_jobs, error_score="raise")
                search.fit(data.X, data.y, trial_index=np.arange(n_trials, dtype=float))
            chosen = search.best_params_["trial_length_scale"]
            rows.append([planted, seed, chosen, chosen / planted,
                         bool(0.5 <= chosen / planted <= 2.0)])
            if args.verbose:
                print(f"planted {planted}: chose {chosen}", flush=True)
    return rows


def rank_selected_session(data, args):
    """The command line's learning test on one session: (chosen rank, p per rank)."""
    names = ("LowTensorRankRNN", "LowRankRNN")
    params = {"n_units": args.n_units, "max_iter": args.max_iter, "random_state": 0}
    cv = _default_blocks(len(data.X))
    splits = list(cv.split(data.X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = compare_estimators(
            {names[0]: LowTensorRankRNN(**params), names[1]: LowRankRNN(**params)},
            data.X, data.y, ranks=args.ranks, cv=cv,
            trial_index=np.arange(len(data.X), dtype=float), n_jobs=args.n_jobs,
            as_frame=False)
    chosen, pairs = _learning_test_rank(records, names)
    tests = {rank: paired_comparison(*pair, splits, names=names)
             for rank, pair in pairs.items()}
    return chosen, tests


def rank_selected_section(args):
    """Error rates of the learning test at the rank chosen from the same folds."""
    size = dict(n_trials=args.n_trials, n_timepoints=args.n_timepoints,
                n_neurons=args.n_neurons)
    kwargs = conditions(args.jitter, args.drift)
    records = []
    for name in args.rank_conditions:
        for seed in range(args.seeds):
            data = make_low_tensor_rank_rnn(
                **size, rank=args.rank, n_units=60, noise=args.noise,
                random_state=seed, **kwargs[name])
            t0 = time.perf_counter()
            chosen, tests = rank_selected_session(data, args)
            p = {int(r): t.pvalue for r, t in tests.items()}
            records.append({
                "condition": name, "seed": seed, "chosen": chosen,
                "pvalue": p.get(chosen, np.nan), "pvalues": p,
                "differences": {int(r): t.difference for r, t in tests.items()},
                "seconds": time.perf_counter() - t0})
            if args.verbose:
                print(f"{name:>15} seed {seed:2d}: rank {chosen}, "
                      f"p={p.get(chosen, np.nan):.4f}, min p over ranks "
                      f"{min(p.values(), default=np.nan):.4f} "
                      f"({records[-1]['seconds']:.0f} s)", flush=True)
    return records


def summarise_rank_selected(records, alpha, planted):
    rows = []
    for name in dict.fromkeys(r["condition"] for r in records):
        sel = [r for r in records if r["condition"] == name]
        chosen = [r["chosen"] for r in sel]
        ranks = sorted(set(chosen), key=lambda k: (k is None, k or 0))
        rows.append([
            name, len(sel),
            ", ".join(f"{k}: {chosen.count(k)}" for k in ranks),
            int(sum(r["pvalue"] < alpha for r in sel)),
            int(sum(r["pvalues"].get(planted, np.nan) < alpha for r in sel)),
            int(sum(min(r["pvalues"].values(), default=np.nan) < alpha for r in sel)),
            float(np.median([r["pvalue"] for r in sel]))])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--n-trials", type=int, default=80)
    p.add_argument("--n-timepoints", type=int, default=20)
    p.add_argument("--n-neurons", type=int, default=20)
    p.add_argument("--rank", type=int, default=2)
    p.add_argument("--n-units", type=int, default=30,
                   help="units of the fitted networks (the planted one has 60)")
    p.add_argument("--max-iter", type=int, default=400)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--jitter", type=float, default=0.15,
                   help="standard deviation of the gain jitters")
    p.add_argument("--drift", type=float, default=0.3,
                   help="size of the offset drift, relative to the activity")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--sections", default="calibration",
                   help="comma-separated: calibration, length_scale, rank_selected")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3, 4],
                   help="ranks searched by the rank_selected section")
    p.add_argument("--rank-conditions", nargs="+", default=["constant", "learning"],
                   choices=list(conditions(0.0, 0.0)),
                   help="conditions of the rank_selected section")
    p.add_argument("--planted-length-scales", type=float, nargs="+",
                   default=[10.0, 20.0])
    p.add_argument("--length-seeds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="1 seed, small sessions")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.n_trials, args.n_timepoints = 1, 40, 10
        args.n_neurons, args.n_units, args.max_iter = 8, 12, 60
        args.length_seeds, args.planted_length_scales = 1, [10.0]
        args.ranks = [1, 2]
    sections = args.sections.split(",")
    t0 = time.perf_counter()
    machine = machine_info()
    out = {"config": vars(args), "machine": machine}
    if "calibration" in sections:
        out["records"] = run(args)
        out["summary"] = summarise(out["records"], args.alpha)
        print_table(
            f"learning_test on planted sessions ({args.n_trials} trials x "
            f"{args.n_timepoints} bins x {args.n_neurons} neurons, rank {args.rank}, "
            f"{args.seeds} seeds each; held-out blocks, predicting score)",
            ["condition", "seeds", f"p<{args.alpha}", "wins every fold", "median p",
             "median diff", "LTR R²", "LR R²", "cond. avg R²", "ceiling"],
            out["summary"])
    if "length_scale" in sections:
        out["length_scale"] = length_scale_section(args)
        print_table("trial_length_scale chosen by GridSearchCV (predicting score, "
                    "held-out blocks) on planted smooth trial factors",
                    ["planted", "seed", "chosen", "ratio", "within 2x"],
                    out["length_scale"])
    if "rank_selected" in sections:
        out["rank_selected"] = rank_selected_section(args)
        out["rank_selected_summary"] = summarise_rank_selected(
            out["rank_selected"], args.alpha, args.rank)
        print_table(
            f"the command line's learning test: rank chosen from ranks {args.ranks} "
            f"on the same folds (best mean of both networks, ties to the smaller); "
            f"counts of seeds",
            ["condition", "seeds", "chosen ranks", f"p<{args.alpha} at chosen",
             f"at rank {args.rank}", "at any rank", "median p at chosen"],
            out["rank_selected_summary"])
    print(f"{time.perf_counter() - t0:.0f} s on {machine['cpu_model']}, "
          f"load {machine['loadavg'][0]:.2f}")
    if args.json:
        save_json(args.json, out)


if __name__ == "__main__":
    main()
