"""Spike counts: co-smoothing of the recurrent networks against the field's baselines.

The protocol of the Neural Latents Benchmark's co-smoothing, cross-validated on one
recording (``../shared/data/mc_maze_small_test.nwb``: monkey motor and premotor
cortex, delayed centre-out reaching; 100 trials x 35 bins of 20 ms from -250 to
+450 ms around movement onset x 107 units). The trials are split into
``--trial-folds`` folds (shuffled, ``--seed``) and the neurons into
``--neuron-folds`` folds (``sklearn_ltr.metrics.cosmoothing_folds``, the fixed
assignment of the estimators' own ``score``). For every pair of folds the neuron
fold is *held out*: the models are fitted on the training trials, all neurons
included, and the held-out neurons of the test trials are predicted from the test
trials' held-in neurons only. Score: ``sklearn_ltr.metrics.bits_per_spike`` on the
held-out neurons of the test trials (log-likelihood gain over each neuron's mean
rate in those trials, per spike); tables give the mean +/- standard error over the
``trial folds x neuron folds`` pairs (the folds share training data, so the error
is a guide, not an independent-sample one) and the pooled score (every held-out
entry once: the spike-weighted mean of the folds).

Methods
-------
mean rate
    Each held-out neuron's mean count per bin in the training trials (constant).
    A constant rate never beats the test trials' own mean, so it scores <= 0.
PSTH
    Each held-out neuron's mean over the training trials at each bin (the
    condition-independent time course; the file has no condition labels, so no
    per-condition PSTH), smoothed with the baseline's kernel and floored at a
    tenth of the neuron's mean rate.
smoothing
    The benchmark's first baseline: each trial's held-in counts convolved along
    time with a Gaussian kernel of standard deviation ``--kernel-sd-ms`` (default
    40 ms = 2 bins) truncated at +/-3 standard deviations, within the trial,
    renormalised to unit weight over the taps inside the trial at its edges; then
    ``log(smoothed + 1e-4)`` (the benchmark's features, not standardised); then a
    ``PoissonRegressor`` (log link, Newton-Cholesky solver) per held-out neuron
    from the held-in features at the same bin, fitted on the training trials. Its
    L2 penalty ``alpha`` is chosen per fold by an inner cross-validation on the training
    trials (``--inner-folds`` trial folds, pooled bits per spike) from
    ``--alphas``; the score of each fixed alpha on the test folds is printed too.
LowRankRNN / LowTensorRankRNN
    ``loss="poisson"``, fitted on the training trials (``trial_index``: their rows
    in the trials table), one torch thread per fit. The test trials are given to
    ``predict`` with the held-out neurons set to NaN; ``predict`` infers the
    per-trial parameters (initial state, trial factors) from the observed entries
    only, the network frozen, and returns rates for every entry, missing ones
    included. All neuron folds of a test fold go to one ``predict`` call
    (``metrics.cosmoothing_predict``), which is what the estimators' ``score`` does:
    each fit's ``score`` with ``cosmoothing_folds=--neuron-folds`` is recorded
    as a check and must equal the pooled score of its predictions.

Sections (``--sections``, comma-separated; default ``baselines,rnn,long``):

baselines
    Mean rate, PSTH and smoothing (the smoothing's folds are the reference of
    every other table: ``/ smoothing`` is the ratio of mean scores, ``-
    smoothing`` the mean paired difference over the folds and its standard error).
rnn
    Both networks at ``--ranks`` with the default fit (``--params`` adds estimator
    parameters to every fit). The *cross-validated rank* of each network, marked
    ``*``, is the rank of the lowest mean held-out loss of its fits
    (``best_validation_loss_``: with ``loss="poisson"`` a fit holds out 10 % of the
    (trial, neuron) pairs of its training trials by default), so the test folds
    play no part in it; fits without held-out entries fall back to the best mean
    test score (optimistic).
long
    ``LowRankRNN`` at its cross-validated rank fitted longer: ``max_iter=
    --long-max-iter, tol=0`` (with Adam, ``tol=0`` can still end a fit early:
    ``n_iter_no_change`` iterations without any decrease of the loss -- the
    held-out loss with early stopping -- are a plateau, and the third one ends
    it), beside the default fit; ``long - default`` is the mean paired difference
    of their scores over the folds.
levers
    Candidate parameter sets (``--candidate NAME=JSON``, repeatable, a candidate
    may set ``rank``; by default the defaults, each of the Poisson defaults
    ``early_stopping``, ``activity_penalty`` and ``tol`` set back to the squared
    error's, and ``activity_penalty=0.3``) for
    ``LowRankRNN`` at ``--rank`` (default: the cross-validated rank of ``rnn``),
    each with the default and the long fit (``--no-long-levers``: the default fit
    only).

Usage::

    python benchmarks/bench_spikes.py                   # baselines, rnn, long
    python benchmarks/bench_spikes.py --sections baselines,levers --rank 4
    python benchmarks/bench_spikes.py --quick           # smoke run (seconds)

The fits run in ``--n-jobs`` joblib worker processes, longest first. Nothing is
written unless ``--json PATH`` is given; the machine and the load average before
and after each section are recorded with the numbers.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
from joblib import Parallel, delayed
from scipy.ndimage import correlate1d
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold

from sklearn_ltr import LowRankRNN, LowTensorRankRNN
from sklearn_ltr.metrics import bits_per_spike, cosmoothing_folds, cosmoothing_predict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import finish, loadavg, machine_info, print_table  # noqa: E402

DATA = os.path.join(HERE, "..", "..", "shared", "data", "mc_maze_small_test.nwb")
SECTIONS = ("baselines", "rnn", "long", "levers")
MODELS = {"LowRankRNN": LowRankRNN, "LowTensorRankRNN": LowTensorRankRNN}
LOG_OFFSET = 1e-4  # added to the smoothed counts before the log (as the NLB baseline)
# Regularisation levers tried by the `levers` section unless --candidate is given:
# the defaults of loss="poisson" (early stopping, activity_penalty=0.1, tol=1e-4)
# beside each of them undone, and a stronger activity penalty.
DEFAULT_CANDIDATES = {
    "default": {},
    "early_stopping=False": {"early_stopping": False},
    "activity_penalty=1e-4": {"activity_penalty": 1e-4},
    "tol=5e-3": {"tol": 5e-3},
    "activity_penalty=0.3": {"activity_penalty": 0.3},
}
QUICK = {"n_trials": 24, "n_neurons": 16, "trial_folds": 2, "neuron_folds": 2,
         "ranks": [2], "models": ["LowRankRNN"], "alphas": [1.0, 3.0],
         "inner_folds": 2, "params": {"n_units": 8, "max_iter": 20,
                                             "infer_max_iter": 50},
         "long_max_iter": 40, "lever_candidates": {"default": {},
                                                   "n_units=6": {"n_units": 6}}}


# ------------------------------------------------------------------------ data
def load_counts(path, n_trials=None, n_neurons=None):
    """Counts (float64), trial rows, bin size; or the reason to skip as a string."""
    if not os.path.exists(path):
        return f"Skipping: the recording {os.path.abspath(path)} is not there."
    try:
        import pynwb  # noqa: F401
    except ImportError:
        return "Skipping: reading NWB files needs pynwb (pip install pynwb)."
    from sklearn_ltr.io import read_nwb

    data = read_nwb(path, align="move_onset_time", window=(-0.25, 0.45),
                    bin_size=0.02)
    X = data.X.astype(np.float64)[:n_trials, :, :n_neurons]
    return X, data.trial_index[:n_trials], 0.02


def fold_pairs(n_trials, n_neurons, args):
    """``(trial_fold, train, test)`` splits and the neuron fold of each neuron."""
    kf = KFold(args.trial_folds, shuffle=True, random_state=args.seed)
    splits = [(i, tr, te) for i, (tr, te) in enumerate(kf.split(np.arange(n_trials)))]
    return splits, cosmoothing_folds(n_neurons, args.neuron_folds)


def score_folds(X_test, rates, neuron_fold, trial_fold):
    """Bits per spike and spike count of each neuron fold of one test fold."""
    out = []
    for f in range(neuron_fold.max() + 1):
        held = neuron_fold == f
        out.append({"trial_fold": trial_fold, "neuron_fold": f,
                    "bits": bits_per_spike(X_test[:, :, held], rates[:, :, held]),
                    "spikes": float(X_test[:, :, held].sum())})
    return out


def summarise(folds):
    """Mean, standard error and pooled (spike-weighted) bits per spike over folds."""
    bits = np.array([f["bits"] for f in folds])
    spikes = np.array([f["spikes"] for f in folds])
    se = bits.std(ddof=1) / np.sqrt(len(bits)) if len(bits) > 1 else float("nan")
    return {"mean": float(bits.mean()), "se": float(se), "n_folds": len(bits),
            "pooled": float((bits * spikes).sum() / spikes.sum())}


# ------------------------------------------------------------------- baselines
def smooth(X, sd_bins, truncate=3.0):
    """Gaussian smoothing along time within each trial, edges renormalised."""
    half = int(np.ceil(truncate * sd_bins))
    taps = np.exp(-0.5 * (np.arange(-half, half + 1) / sd_bins) ** 2)
    num = correlate1d(X, taps, axis=1, mode="constant")
    den = correlate1d(np.ones(X.shape[1]), taps, mode="constant")
    return num / den[None, :, None]


def glm_rates(S_train, Y_train, S_test, alpha):
    """Poisson GLM per output neuron; ``S`` are smoothed held-in counts (K, T, h).

    The features are ``log(S + LOG_OFFSET)`` as they are (in [-9.2, 1.4] for counts
    of at most 4 per bin): z-scoring them would turn a neuron that fired once in
    the training trials into a feature of huge values wherever it fires in a test
    trial.
    """
    from sklearn.linear_model import PoissonRegressor

    F_tr = np.log(S_train + LOG_OFFSET).reshape(-1, S_train.shape[2])
    F_te = np.log(S_test + LOG_OFFSET).reshape(-1, S_test.shape[2])
    Y = Y_train.reshape(-1, Y_train.shape[2])
    rates = np.empty((F_te.shape[0], Y.shape[1]))
    for j in range(Y.shape[1]):
        if Y[:, j].sum() == 0:  # silent in training: the fitted rate is ~0
            rates[:, j] = 0.0
            continue
        glm = PoissonRegressor(alpha=alpha, solver="newton-cholesky",
                               max_iter=100).fit(F_tr, Y[:, j])
        rates[:, j] = glm.predict(F_te)
    return rates.reshape(S_test.shape[:2] + (Y.shape[1],))


def inner_alpha(S, Y, alphas, n_folds, seed):
    """The alpha of the best pooled bits per spike over inner trial folds."""
    kf = KFold(n_folds, shuffle=True, random_state=seed)
    gain = np.zeros(len(alphas))
    for tr, te in kf.split(S):
        n_spikes = Y[te].sum()
        for i, alpha in enumerate(alphas):
            gain[i] += bits_per_spike(Y[te], glm_rates(S[tr], Y[tr], S[te], alpha)) \
                * n_spikes
    return alphas[int(np.argmax(gain))], gain.tolist()


def smoothing_fold(X, train, test, held, sd_bins, args, trial_fold, neuron_fold):
    """The smoothing baseline on one pair of folds: each alpha and the inner-CV one."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one BLAS thread per job, as the RNN fits
        return _smoothing_fold(X, train, test, held, sd_bins, args, trial_fold,
                               neuron_fold)


def _smoothing_fold(X, train, test, held, sd_bins, args, trial_fold, neuron_fold):
    S = smooth(X[:, :, ~held], sd_bins)
    Y = X[:, :, held]
    alpha, inner = inner_alpha(S[train], Y[train], args.alphas, args.inner_folds,
                               args.seed)
    out = {"trial_fold": trial_fold, "neuron_fold": neuron_fold, "alpha": alpha,
           "inner_gain": inner, "spikes": float(Y[test].sum()), "by_alpha": {}}
    for a in args.alphas:
        out["by_alpha"][a] = bits_per_spike(Y[test],
                                            glm_rates(S[train], Y[train], S[test], a))
    out["bits"] = out["by_alpha"][alpha]
    return out


def reference_rates(X, train, test, sd_bins):
    """Mean-rate and PSTH predictions of every neuron for the test trials.

    The PSTH is smoothed with the baseline's kernel and floored at a tenth of the
    neuron's mean rate (a bin where a neuron never fired in the training trials
    would otherwise predict a rate of 0).
    """
    mean = X[train].mean((0, 1))
    psth = np.maximum(smooth(X[train], sd_bins).mean(0), 0.1 * mean)
    return {"mean rate": np.broadcast_to(mean, X[test].shape),
            "PSTH": np.broadcast_to(psth, X[test].shape)}


def section_baselines(X, splits, neuron_fold, args):
    sd_bins = args.kernel_sd_ms / (1e3 * args.bin_size)
    jobs = [(tf, tr, te, f) for tf, tr, te in splits
            for f in range(neuron_fold.max() + 1)]
    smoothing = Parallel(n_jobs=args.n_jobs)(
        delayed(smoothing_fold)(X, tr, te, neuron_fold == f, sd_bins, args, tf, f)
        for tf, tr, te, f in jobs)
    methods = {"mean rate": [], "PSTH": []}
    for tf, tr, te in splits:
        for name, rates in reference_rates(X, tr, te, sd_bins).items():
            methods[name] += score_folds(X[te], rates, neuron_fold, tf)
    methods["smoothing"] = smoothing
    summary = {name: summarise(folds) for name, folds in methods.items()}
    for a in args.alphas:
        summary[f"smoothing, alpha={a:g} (test-chosen)"] = summarise(
            [dict(f, bits=f["by_alpha"][a]) for f in smoothing])
    rows = [[name, s["mean"], s["se"], s["pooled"]] for name, s in summary.items()]
    print_table(
        f"baselines: held-out neurons of test trials, bits/spike over "
        f"{len(jobs)} folds (smoothing: {args.kernel_sd_ms:g} ms Gaussian, "
        f"Poisson GLM, alpha by inner {args.inner_folds}-fold CV)",
        ["method", "mean", "SE", "pooled"], rows,
        note="alphas chosen: " + json.dumps(
            {str(a): sum(f["alpha"] == a for f in smoothing) for a in args.alphas}))
    return {"folds": methods, "summary": summary, "sd_bins": sd_bins}


# ------------------------------------------------------------------------- RNN
def fit_and_predict(model, params, X, trial_index, train, test, neuron_fold, tf):
    """Fit on the training trials; co-smooth the test trials; one record."""
    est = MODELS[model](loss="poisson", n_threads=1, **params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(X[train], trial_index=trial_index[train])
        fit_s = time.perf_counter() - t0
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    n_folds = neuron_fold.max() + 1
    t0 = time.perf_counter()
    rates = cosmoothing_predict(lambda Xm, y, u: est.predict(Xm), X[test], n_folds)
    predict_s = time.perf_counter() - t0
    folds = score_folds(X[test], rates, neuron_fold, tf)
    est.set_params(cosmoothing_folds=int(n_folds))
    score = est.score(X[test])
    pooled = summarise(folds)["pooled"]
    return {"model": model, "params": params, "trial_fold": tf, "fit_s": fit_s,
            "predict_s": predict_s, "n_iter": est.n_iter_, "converged": converged,
            "best_loss": est.best_loss_,
            "validation_loss": est.best_validation_loss_, "folds": folds,
            "score": score,
            "score_minus_pooled": score - pooled}


def run_fits(X, trial_index, splits, neuron_fold, configs, args):
    """Fit every ``(name, model, params)`` config on every trial fold, in parallel.

    Longest first (by ``max_iter``, then rank and units): the workers stay busy.
    """
    jobs = [(name, model, params, tf, tr, te) for name, model, params in configs
            for tf, tr, te in splits]
    order = sorted(range(len(jobs)), key=lambda i: -np.prod([
        jobs[i][2].get("max_iter", 1000), jobs[i][2].get("rank", 3),
        jobs[i][2].get("n_units", 100), 2 if jobs[i][1] == "LowTensorRankRNN" else 1]))
    out = Parallel(n_jobs=args.n_jobs)(
        delayed(fit_and_predict)(jobs[i][1], jobs[i][2], X, trial_index, jobs[i][4],
                                 jobs[i][5], neuron_fold, jobs[i][3]) for i in order)
    records = {name: [] for name, _, _ in configs}
    for i, rec in zip(order, out):
        records[jobs[i][0]].append(rec)
    return {name: sorted(recs, key=lambda r: r["trial_fold"])
            for name, recs in records.items()}


def summarise_fits(records, reference):
    """One summary per config: scores, ratio and paired difference to ``reference``."""
    ref = {(f["trial_fold"], f["neuron_fold"]): f["bits"] for f in reference}
    out = {}
    for name, recs in records.items():
        folds = [f for r in recs for f in r["folds"]]
        diff = np.array([f["bits"] - ref[f["trial_fold"], f["neuron_fold"]]
                         for f in folds])
        s = summarise(folds)
        ref_mean = np.mean(list(ref.values()))
        s.update({
            # A ratio of two scores means nothing unless the baseline's is positive.
            "ratio_to_smoothing": s["mean"] / ref_mean if ref_mean > 0 else np.nan,
            "diff_to_smoothing": float(diff.mean()),
            "diff_se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "fit_s_mean": float(np.mean([r["fit_s"] for r in recs])),
            # The fits' own held-out loss (early stopping: held-out (trial,
            # neuron) pairs of the training trials), None without it.
            "validation_loss_mean": (None if any(r["validation_loss"] is None
                                                 for r in recs)
                                     else float(np.mean([r["validation_loss"]
                                                         for r in recs]))),
            "n_iter_mean": float(np.mean([r["n_iter"] for r in recs])),
            "converged": int(sum(r["converged"] for r in recs)), "n_fits": len(recs),
            "max_abs_score_check": float(max(abs(r["score_minus_pooled"])
                                             for r in recs))})
        out[name] = s
    return out


def paired_difference(longer, shorter):
    """Mean and standard error of ``longer - shorter`` bits/spike over shared folds."""
    a = {(f["trial_fold"], f["neuron_fold"]): f["bits"] for r in longer
         for f in r["folds"]}
    diff = np.array([a[f["trial_fold"], f["neuron_fold"]] - f["bits"]
                     for r in shorter for f in r["folds"]])
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return float(diff.mean()), float(se)


def print_fits(title, summary, marked=(), note=None):
    """One row per fit; names in ``marked`` get a ``*``."""
    rows = [[name + (" *" if name in marked else ""), s["mean"], s["se"],
             s["pooled"], s["ratio_to_smoothing"], s["diff_to_smoothing"],
             s["diff_se"], s["validation_loss_mean"], s["fit_s_mean"],
             s["n_iter_mean"], f"{s['converged']}/{s['n_fits']}"]
            for name, s in summary.items()]
    print_table(title, ["fit", "mean", "SE", "pooled", "/ smoothing", "- smoothing",
                        "SE", "val loss", "fit s", "iters", "converged"], rows,
                note=note)


def _rank_of(name):
    return int(name.split("rank=")[1].split(",")[0])


def best_rank(summary, model="LowRankRNN"):
    """The cross-validated rank of ``model`` and how it was chosen.

    The rank of the lowest mean held-out loss of the fits themselves (early
    stopping's held-out (trial, neuron) pairs of the training trials: the test
    folds play no part), or, for fits without early stopping, of the best mean
    test score (chosen on the test folds: optimistic).
    """
    fits = {name: s for name, s in summary.items() if name.startswith(model)}
    if all(s["validation_loss_mean"] is not None for s in fits.values()):
        name = min(fits, key=lambda n: fits[n]["validation_loss_mean"])
        return _rank_of(name), "lowest held-out loss of the fits (training trials)"
    name = max(fits, key=lambda n: fits[n]["mean"])
    return _rank_of(name), "best test score (chosen on the test folds)"


def section_rnn(X, trial_index, splits, neuron_fold, reference, args):
    configs = [(f"{model} rank={rank}", model, {**args.params, "rank": rank,
                                                 "random_state": args.seed})
               for model in args.models for rank in args.ranks]
    records = run_fits(X, trial_index, splits, neuron_fold, configs, args)
    summary = summarise_fits(records, reference)
    chosen = {model: best_rank(summary, model) for model in args.models}
    print_fits(f"recurrent networks, loss='poisson', default fit "
               f"(params {json.dumps(args.params)})", summary,
               marked=[f"{model} rank={rank}" for model, (rank, _) in chosen.items()],
               note="* cross-validated rank: " + "; ".join(
                   f"{model} {rank} ({how})" for model, (rank, how) in chosen.items()))
    return {"records": records, "summary": summary,
            "cv_rank": {model: rank for model, (rank, _) in chosen.items()}}


def section_long(X, trial_index, splits, neuron_fold, reference, rank, args,
                 done=None):
    """The default and the long fit at ``rank``; ``done``: records of the rnn section.

    The default fit is taken from there when it was run (same parameters and seed:
    the same fit).
    """
    base = {**args.params, "rank": rank, "random_state": args.seed}
    long = {**base, "max_iter": args.long_max_iter, "tol": 0.0}
    name = f"LowRankRNN rank={rank}, default"
    configs = [(name, "LowRankRNN", base),
               (f"LowRankRNN rank={rank}, max_iter={args.long_max_iter} tol=0",
                "LowRankRNN", long)]
    fitted = (done or {}).get(f"LowRankRNN rank={rank}")
    if fitted:
        configs = configs[1:]
    records = run_fits(X, trial_index, splits, neuron_fold, configs, args)
    if fitted:
        records = {name: fitted, **records}
    summary = summarise_fits(records, reference)
    diff = paired_difference(*[records[c[0]] for c in configs[-1:]], records[name])
    print_fits(f"fitting longer: LowRankRNN at rank {rank}", summary,
               note=f"long - default: {diff[0]:+.4f} bits/spike (SE {diff[1]:.4f}) "
                    f"over the folds")
    return {"rank": rank, "records": records, "summary": summary,
            "long_minus_default": diff}


def section_levers(X, trial_index, splits, neuron_fold, reference, rank, args):
    configs = []
    for name, extra in args.candidates.items():
        # A candidate may set its own rank.
        base = {**args.params, "rank": rank, "random_state": args.seed, **extra}
        configs.append((f"{name}, default", "LowRankRNN", base))
        if not args.no_long_levers:
            configs.append((f"{name}, long", "LowRankRNN",
                            {**base, "max_iter": args.long_max_iter, "tol": 0.0}))
    records = run_fits(X, trial_index, splits, neuron_fold, configs, args)
    summary = summarise_fits(records, reference)
    diffs = {} if args.no_long_levers else {
        name: paired_difference(records[f"{name}, long"], records[f"{name}, default"])
        for name in args.candidates}
    print_fits(f"regularisation levers: LowRankRNN at rank {rank}, default fit and "
               f"max_iter={args.long_max_iter} tol=0", summary,
               note="long - default (bits/spike, SE): " + "; ".join(
                   f"{name} {d:+.4f} ({se:.4f})" for name, (d, se) in diffs.items()))
    return {"rank": rank, "candidates": args.candidates, "records": records,
            "summary": summary, "long_minus_default": diffs}


# ------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DATA, help="the .nwb recording")
    p.add_argument("--sections", default="baselines,rnn,long")
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--params", type=json.loads, default={},
                   help="JSON of estimator parameters added to every fit")
    p.add_argument("--candidate", action="append", default=[],
                   help='NAME=JSON parameter set for the levers section, e.g. '
                        '\'n_units=10={"n_units": 10}\'')
    p.add_argument("--rank", type=int, default=None,
                   help="rank of the long and levers sections (default: the best "
                        "LowRankRNN rank of the rnn section)")
    p.add_argument("--long-max-iter", type=int, default=3000)
    p.add_argument("--no-long-levers", action="store_true",
                   help="the levers section fits the candidates' default fits only")
    p.add_argument("--trial-folds", type=int, default=4)
    p.add_argument("--neuron-folds", type=int, default=4)
    p.add_argument("--kernel-sd-ms", type=float, default=40.0)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    p.add_argument("--inner-folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke run on a small subset")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    given = args.sections.split(",")
    bad = sorted(set(given) - set(SECTIONS))
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    # Every score is compared with the smoothing baseline: it always runs.
    args.sections = [s for s in SECTIONS if s in given or s == "baselines"]
    if not {"long", "levers"}.isdisjoint(args.sections) and "rnn" not in args.sections \
            and args.rank is None:
        p.error("the long and levers sections need --rank, or the rnn section to "
                "choose it")
    if not {"long", "levers"}.isdisjoint(args.sections) and args.rank is None \
            and "LowRankRNN" not in args.models:
        p.error("the long and levers sections fit LowRankRNN: give --rank, or "
                "include LowRankRNN in --models")
    args.candidates = {}
    for item in args.candidate:
        # NAME may hold "=" itself (e.g. "n_units=10={...}"): the JSON object is
        # what follows the first "={".
        name, sep, text = item.partition("={")
        try:
            params = json.loads("{" + text) if sep and name else None
        except json.JSONDecodeError:
            params = None
        if not isinstance(params, dict):
            p.error(f"--candidate {item!r}: expected NAME=JSON with a JSON object of "
                    f"estimator parameters")
        args.candidates[name] = params
    args.n_trials = args.n_neurons = None
    if args.quick:
        for key, value in QUICK.items():
            if key != "lever_candidates":
                setattr(args, key, value)
        args.candidates = args.candidates or QUICK["lever_candidates"]
    args.candidates = args.candidates or dict(DEFAULT_CANDIDATES)
    return args


def main(argv=None):
    args = parse_args(argv)
    loaded = load_counts(args.data, args.n_trials, args.n_neurons)
    if isinstance(loaded, str):
        print(loaded)
        return
    X, trial_index, args.bin_size = loaded
    splits, neuron_fold = fold_pairs(X.shape[0], X.shape[2], args)
    t_start = time.perf_counter()
    machine = machine_info()
    out = {"config": {k: v for k, v in vars(args).items()}, "machine": machine,
           "quick": args.quick, "shape": list(X.shape),
           "mean_count": float(X.mean()), "sections": {}}
    run = {
        "rnn": lambda: section_rnn(X, trial_index, splits, neuron_fold, ref, args),
        "long": lambda: section_long(
            X, trial_index, splits, neuron_fold, ref, rank, args,
            out["sections"].get("rnn", {}).get("records")),
        "levers": lambda: section_levers(X, trial_index, splits, neuron_fold, ref,
                                         rank, args),
    }
    ref, rank = None, args.rank
    for name in args.sections:
        before, t0 = loadavg(), time.perf_counter()
        if name == "baselines":
            res = section_baselines(X, splits, neuron_fold, args)
            ref = res["folds"]["smoothing"]
        else:
            res = run[name]()
        if name == "rnn" and "LowRankRNN" in res["cv_rank"]:
            rank = args.rank or res["cv_rank"]["LowRankRNN"]
        res.update(seconds=time.perf_counter() - t0, loadavg_before=before,
                   loadavg_after=loadavg())
        out["sections"][name] = res
    finish(out, machine, args, t_start)


if __name__ == "__main__":
    main()
