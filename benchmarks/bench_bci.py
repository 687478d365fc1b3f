"""Brain-computer-interface learning: the networks against the target average.

The recording ``../shared/data/bci_learning_hennig2018.npz`` (Hennig et al. 2018:
334 trials x 12 bins of 45 ms x 87 motor-cortex units, spike counts, 4 targets, the
decoder perturbed from trial 167) under the protocol of ``select-rank
bci_learning_hennig2018.npz --y-key target_deg --epoch-key block``: five folds of
held-out blocks of trials (``TrialBlockKFold(5, block_size=16, guard=3)``, the
command's folds), each held-out trial predicted from its target and its place in
the session (trial number and decoder block) -- the predicting score, R² of the
held-out trials after the same preprocessing (Gaussian smoothing over time of
``sigma=1`` bin, z-scoring fitted on the training folds).

Every setting (``--settings``) is run on the same folds with
``sklearn_ltr.model_selection.compare_estimators``: ``ConditionAverage`` (the mean
trajectory of each target; plain, and weighted over the session by a Gaussian of
10 trials) and both networks at ``--ranks``. For each network the table gives the
mean and standard error over folds at every rank, the best and the
one-standard-error rank, and at that rank the paired difference to the plain
``ConditionAverage`` (mean and standard error over the folds, and each fold's).

Settings
--------
old
    The worked example of ``doc/command_line.rst`` before this benchmark:
    ``n_units=60``, the estimators' defaults otherwise (``drift_length_scale=50``:
    each neuron's offset drifts over the session, a nuisance both networks fit),
    and ``trial_length_scale=100`` for ``LowTensorRankRNN``.
best
    The settings found best on these folds: no offset drift
    (``drift_length_scale=None``), the target given to both networks as a
    constant one-hot input (the animal sees it: the network is driven by it
    instead of having to generate each target's trajectory from its initial
    state alone), and ``LowTensorRankRNN`` with ``trial_length_scale=1000``
    (trial factors nearly constant within each decoder block, independent across
    blocks); the rest as ``old``.

``--setting NAME=JSON`` adds a setting: a JSON object with optional keys
``"both"``, ``"ltr"``, ``"lr"`` (estimator parameters for both networks, for
``LowTensorRankRNN``, for ``LowRankRNN``) and ``"inputs"`` (``"constant"``: a
one-hot of the target on every time bin, ``sklearn_ltr.preprocessing.
condition_inputs``, given to the networks as inputs).

Usage::

    python benchmarks/bench_bci.py                      # old and best, ranks 2-12
    python benchmarks/bench_bci.py --ranks 4 6 --json out.json
    python benchmarks/bench_bci.py --settings best --setting \\
        'inputs={"both": {"drift_length_scale": null}, "inputs": "constant"}'
    python benchmarks/bench_bci.py --quick              # a smoke run (seconds)

The fits run in ``--n-jobs`` joblib worker processes, one torch thread each.
Nothing is written unless ``--json PATH`` is given; the machine and the load
average before and after each setting are recorded with the numbers.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
from sklearn.pipeline import make_pipeline

from sklearn_ltr import ConditionAverage, LowRankRNN, LowTensorRankRNN
from sklearn_ltr.model_selection import (
    TrialBlockKFold,
    compare_estimators,
    rank_selection_summary,
)
from sklearn_ltr.preprocessing import (
    GaussianSmoother,
    StandardScaler3D,
    condition_inputs,
)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import finish, loadavg, machine_info, print_table  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data", "bci_learning_hennig2018.npz")
NETWORKS = ("LowTensorRankRNN", "LowRankRNN")
REFERENCE = "ConditionAverage"
SMOOTHED = "ConditionAverage (smoothed)"
SETTINGS = {
    "old": {"ltr": {"trial_length_scale": 100.0}},
    "best": {"both": {"drift_length_scale": None},
             "ltr": {"trial_length_scale": 1000.0}, "inputs": "constant"},
}
SETTING_KEYS = {"both", "ltr", "lr", "inputs"}
QUICK = {"ranks": [2], "n_splits": 2, "n_units": 8, "max_iter": 20}


# ------------------------------------------------------------------------ data
def load(path, quick=False):
    """Counts, targets, blocks; or the reason to skip as a string."""
    if not os.path.exists(path):
        return f"Skipping: the recording {os.path.abspath(path)} is not there."
    with np.load(path) as f:
        X, y, block = f["X"].astype(float), f["target_deg"], f["block"]
    if quick:  # 40 trials on each side of the perturbation, 25 units
        keep = np.r_[0:40, 166:206]
        X, y, block = X[keep][:, :, :25], y[keep], block[keep]
    return X, y, block


def folds(n_trials, n_splits):
    """The folds of ``select-rank`` with ``--epoch-key``: blocks of ~5% of trials."""
    size = max(2, n_trials // (4 * n_splits))
    return TrialBlockKFold(n_splits, block_size=size, guard=max(1, size // 5))


# -------------------------------------------------------------------- settings
def estimators(setting, args):
    """The four pipelines of one setting: references and both networks."""
    def pipe(est):
        return make_pipeline(GaussianSmoother(sigma=args.smooth), StandardScaler3D(),
                             est)

    both = {"n_units": args.n_units, "max_iter": args.max_iter, "random_state": 0,
            "n_threads": 1, **setting.get("both", {})}
    return {
        REFERENCE: pipe(ConditionAverage()),
        SMOOTHED: pipe(ConditionAverage(trial_smoothing=10.0)),
        "LowTensorRankRNN": pipe(LowTensorRankRNN(**{**both,
                                                     **setting.get("ltr", {})})),
        "LowRankRNN": pipe(LowRankRNN(**{**both, **setting.get("lr", {})})),
    }


def run_setting(name, setting, X, y, block, splits, args):
    """compare_estimators on the given folds; records, summary and differences."""
    inputs = None
    if setting.get("inputs") == "constant":
        inputs = condition_inputs(y, X.shape[1])
    before, t0 = loadavg(), time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = compare_estimators(
            estimators(setting, args), X, y, ranks=args.ranks, cv=splits,
            trial_index=np.arange(len(X), dtype=float), epochs=block,
            inputs=inputs, n_jobs=args.n_jobs, as_frame=False)
    seconds = time.perf_counter() - t0
    summary = rank_selection_summary(records)
    out = {"setting": setting, "records": records, "seconds": seconds,
           "loadavg_before": before, "loadavg_after": loadavg(),
           "warnings": sorted({str(w.message)[:200] for w in caught}),
           "table": summary.table, "best_rank": summary.best_rank,
           "one_se_rank": summary.one_se_rank, "references": summary.references}
    out["versus_reference"] = versus_reference(records, summary)
    print_setting(name, out, args)
    return out


def scores(records, name, rank):
    """Fold -> score of one estimator at one rank (None: a reference)."""
    return {r["fold"]: r["score"] for r in records
            if r["estimator"] == name and r["rank"] == rank}


def versus_reference(records, summary):
    """At each network's one-SE and best rank: the paired difference to the average."""
    ref = scores(records, REFERENCE, None)
    out = {}
    for name in NETWORKS:
        for how, rank in (("one_se", summary.one_se_rank.get(name)),
                          ("best", summary.best_rank.get(name))):
            own = scores(records, name, rank)
            d = np.array([own[f] - ref[f] for f in sorted(ref)])
            out[f"{name} {how}"] = {
                "rank": rank, "mean": float(d.mean()),
                "se": float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else
                float("nan"), "per_fold": d.tolist()}
    return out


def print_setting(name, out, args):
    table = {(r["estimator"], r["rank"]): r for r in out["table"]}
    rows = []
    for rank in args.ranks:
        row = [rank]
        for net in NETWORKS:
            r = table.get((net, rank))
            row += [r["mean"], r["se"]] if r else [None, None]
        rows.append(row)
    refs = out["references"]
    note = (f"{REFERENCE}: {refs[REFERENCE]['mean']:.4f} +/- "
            f"{refs[REFERENCE]['se']:.4f}; {SMOOTHED}: {refs[SMOOTHED]['mean']:.4f} "
            f"+/- {refs[SMOOTHED]['se']:.4f}. {out['seconds']:.0f} s, load "
            f"{out['loadavg_before'][0]:.2f} -> {out['loadavg_after'][0]:.2f}.")
    print_table(f"setting {name!r} {json.dumps(out['setting'])}: predicting R² of "
                f"held-out blocks, mean and SE over {args.n_splits} folds",
                ["rank", "LTR", "SE", "LR", "SE"], rows, note=note)
    rows = [[key, v["rank"], v["mean"], v["se"],
             " ".join(f"{d:+.4f}" for d in v["per_fold"])]
            for key, v in out["versus_reference"].items()]
    print_table(f"setting {name!r}: network minus {REFERENCE} at the chosen rank "
                f"(paired over folds)", ["network, rank rule", "rank", "mean", "SE",
                                         "per fold"], rows)


# ------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA, help="the .npz recording")
    p.add_argument("--settings", default="old,best",
                   help="comma-separated names of the settings to run")
    p.add_argument("--setting", action="append", default=[],
                   help="NAME=JSON: an extra setting (see the module docstring)")
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12])
    p.add_argument("--n-splits", type=int, default=5)
    p.add_argument("--n-units", type=int, default=60)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--smooth", type=float, default=1.0,
                   help="Gaussian smoothing over time, in bins")
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke run on a small subset")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    settings = dict(SETTINGS)
    for item in args.setting:
        name, sep, text = item.partition("=")
        try:
            value = json.loads(text) if sep and name else None
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not set(value) <= SETTING_KEYS:
            p.error(f"--setting {item!r}: expected NAME=JSON with a JSON object of "
                    f"keys among {sorted(SETTING_KEYS)}")
        if value.get("inputs") not in (None, "constant"):
            p.error(f"--setting {item!r}: inputs must be \"constant\"")
        settings[name] = value
        if name not in args.settings.split(","):
            args.settings += f",{name}"
    chosen = [s for s in args.settings.split(",") if s]
    unknown = sorted(set(chosen) - set(settings))
    if unknown:
        p.error(f"unknown setting(s) {unknown}; choose from {sorted(settings)} or "
                f"add one with --setting")
    args.chosen = {name: settings[name] for name in chosen}
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    loaded = load(args.data, args.quick)
    if isinstance(loaded, str):
        print(loaded)
        return
    X, y, block = loaded
    cv = folds(len(X), args.n_splits)
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(X)]
    machine = machine_info()
    t_start = time.perf_counter()
    print(f"{os.path.basename(args.data)}: X {X.shape}, {cv!r}, ranks {args.ranks}, "
          f"n_units={args.n_units}, max_iter={args.max_iter}, smoothing "
          f"sigma={args.smooth:g} bins and z-scoring")
    out = {"config": {k: v for k, v in vars(args).items()}, "machine": machine,
           "quick": args.quick, "shape": list(X.shape), "cv": repr(cv),
           "settings": {}}
    for name, setting in args.chosen.items():
        out["settings"][name] = run_setting(name, setting, X, y, block, splits, args)
    finish(out, machine, args, t_start)


if __name__ == "__main__":
    main()
