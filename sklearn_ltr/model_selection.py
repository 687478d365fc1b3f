"""Choosing the rank and defending it against simpler models.

* :func:`compare_estimators` cross-validates several estimators over a rank grid on
  one set of folds and returns a tidy table;
* :func:`rank_selection_summary` turns that table, or a fitted ``GridSearchCV``, into
  mean and standard error per estimator and rank, with the best rank and the rank
  chosen by the one-standard-error rule; :func:`one_se_refit` applies that rule as
  ``GridSearchCV(refit=...)``;
* :func:`block_mask` and :func:`masked_score` implement the entry-wise protocol of the
  paper's reference code (held-out blocks with guard bands) for users who want it;
* :class:`~sklearn_ltr.preprocessing.TrialFactors`, which turns a fitted latent model
  into a 2D ``(n_trials, rank)`` transformer, now lives in
  :mod:`sklearn_ltr.preprocessing` and is still importable from here.

The estimators' own ``score`` (co-smoothing) is the default protocol:
folds over trials, and within the held-out trials, folds over neurons.
"""

import numbers
import time
import warnings
from collections import OrderedDict

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import check_cv
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_is_fitted

from ._pipeline import final_step
from ._progress import Progress
from ._validation import MissingDataWarning, check_session, check_trials_array
from .metrics import bits_per_spike, r2_observed
from .preprocessing import TrialFactors  # moved there; importable from here too

__all__ = [
    "block_mask", "masked_score", "rank_selection_summary", "one_se_refit",
    "compare_estimators", "TrialBlockKFold", "learning_test", "paired_comparison",
    "check_fold_conditions",
    "TrialFactors",
]


# --------------------------------------------------------------------------- #
# entry-wise block masks
# --------------------------------------------------------------------------- #
def _pair(value, name):
    if isinstance(value, numbers.Integral):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair (trials, time bins), got "
                         f"{value!r}.")
    return value


def block_mask(shape, *, block_size=(1, 5), test_fraction=0.2, guard=(0, 2),
               random_state=None):
    """Entry masks with held-out blocks and guard bands (the paper's protocol).

    For every neuron, the (trial, time) plane is tiled into blocks of ``block_size``;
    a random ``test_fraction`` of the blocks is held out for testing. Entries within
    ``guard`` trials and time bins of a test block (of the same neuron) form a guard
    band that is used neither for training nor for testing. Everything else is
    training data.

    Why blocks and guard bands rather than an i.i.d. ("speckled") mask: recorded
    activity is smoothed spike counts, so the noise of one entry is shared with its
    neighbours in time. A held-out entry whose neighbours were fitted is predicted
    partly from *its own noise*; a more flexible model (a larger rank) fits that
    noise better and scores higher, so the i.i.d. score keeps growing with rank.
    Holding out contiguous blocks and discarding a guard band wider than the noise
    correlation removes that leak. The estimators' default ``score`` (co-smoothing
    over held-out trials and neurons) has no such leak and needs no mask.

    Parameters
    ----------
    shape : tuple of int
        ``(n_trials, n_timepoints, n_neurons)``.
    block_size : int or (int, int), default=(1, 5)
        Size of a block in trials and time bins.
    test_fraction : float in (0, 1), default=0.2
        Fraction of the blocks of each neuron held out for testing.
    guard : int or (int, int), default=(0, 2)
        Width of the guard band in trials and time bins. Make the time guard at least
        the width of the smoothing kernel of the data.
    random_state : int, RandomState instance or None, default=None
        Chooses the test blocks.

    Returns
    -------
    train : ndarray of bool, shape ``shape``
        Entries used for fitting.
    test : ndarray of bool, shape ``shape``
        Entries scored. ``~(train | test)`` is the guard band; ``train & test`` is
        empty.

    See Also
    --------
    masked_score : fit on the training entries, score on the test blocks.

    Examples
    --------
    >>> from sklearn_ltr.model_selection import block_mask
    >>> train, test = block_mask((10, 20, 3), random_state=0)
    >>> bool((train & test).any())
    False
    >>> round(float(test.mean()), 2)
    0.2
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (n_trials, n_timepoints, n_neurons) with "
                         f"positive sizes, got {shape}.")
    bk, bt = _pair(block_size, "block_size")
    gk, gt = _pair(guard, "guard")
    if bk < 1 or bt < 1:
        raise ValueError(f"block_size must be positive, got {(bk, bt)}.")
    if gk < 0 or gt < 0:
        raise ValueError(f"guard must be non-negative, got {(gk, gt)}.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    n_trials, n_timepoints, n_neurons = shape
    rng = check_random_state(random_state)
    grid = (-(-n_trials // bk), -(-n_timepoints // bt))
    n_blocks = grid[0] * grid[1]
    n_test = max(1, int(round(test_fraction * n_blocks)))
    if n_test >= n_blocks:
        raise ValueError(
            f"With block_size={(bk, bt)} the data have only {n_blocks} block(s) per "
            f"neuron, too few to hold out test_fraction={test_fraction}; use smaller "
            f"blocks.")
    chosen = np.zeros((n_neurons, n_blocks), dtype=bool)
    for n in range(n_neurons):
        chosen[n, rng.choice(n_blocks, n_test, replace=False)] = True
    # Expand the block grid to entries: (neuron, block_k, block_t) -> (k, t, neuron).
    blocks = chosen.reshape(n_neurons, *grid)
    test = np.repeat(np.repeat(blocks, bk, axis=1), bt, axis=2)
    test = test[:, :n_trials, :n_timepoints].transpose(1, 2, 0)
    near = _dilate(test, gk, gt)
    train = ~near
    return train, test


def _dilate(mask, gk, gt):
    """Entries within ``gk`` trials and ``gt`` bins of a True entry (per neuron)."""
    out = mask.copy()
    for shift in range(1, gk + 1):
        out[shift:] |= mask[:-shift]
        out[:-shift] |= mask[shift:]
    grown = out.copy()
    for shift in range(1, gt + 1):
        grown[:, shift:] |= out[:, :-shift]
        grown[:, :-shift] |= out[:, shift:]
    return grown


def masked_score(estimator, X, train, test, *, y=None, inputs=None):
    """Fit on the training entries of ``X`` and score the test entries.

    A clone of ``estimator`` is fitted to ``X`` with every entry outside ``train``
    set to NaN (missing), then predicts all entries of the same trials from the
    training entries only; the score is computed over the ``test`` entries.

    Parameters
    ----------
    estimator : estimator of this package
        Any of :class:`~sklearn_ltr.LowTensorRankRNN`, :class:`~sklearn_ltr.LowRankRNN`,
        :class:`~sklearn_ltr.TCA`, :class:`~sklearn_ltr.TrialPCA` (or a ``Pipeline``
        ending in one, whose earlier steps accept NaN).
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Data.
    train, test : ndarray of bool, same shape as X
        Masks, e.g. from :func:`block_mask`. They must not overlap.
    y : array-like of shape (n_trials,), default=None
        Condition labels passed to ``fit`` and ``predict``.
    inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
        External inputs passed to ``fit`` and ``predict``.

    Returns
    -------
    score : float
        R^2 over the observed test entries (variance-weighted, per-neuron means), or
        bits per spike for estimators fitted with ``loss='poisson'``.

    Examples
    --------
    >>> from sklearn_ltr import TCA
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> from sklearn_ltr.model_selection import block_mask, masked_score
    >>> X = make_low_tensor_rank_rnn(20, 15, 8, rank=2, random_state=0).X
    >>> train, test = block_mask(X.shape, random_state=0)
    >>> score = masked_score(TCA(rank=2, random_state=0), X, train, test)
    >>> bool(0 < score < 1)
    True
    """
    X = check_trials_array(X)
    train = np.asarray(train, dtype=bool)
    test = np.asarray(test, dtype=bool)
    for name, mask in [("train", train), ("test", test)]:
        if mask.shape != X.shape:
            raise ValueError(f"{name} mask has shape {mask.shape}, X has {X.shape}; "
                             f"they must match.")
    if (train & test).any():
        raise ValueError("train and test masks overlap: an entry used for fitting "
                         "would be scored. Build them with block_mask.")
    X_test = np.where(test, X, np.nan)
    if np.isnan(X_test).all():
        raise ValueError("No observed entry to score: the test mask is empty or covers "
                         "only NaN entries.")
    X_train = np.where(train, X, np.nan)
    kwargs = {} if inputs is None else {"inputs": inputs}
    with warnings.catch_warnings():
        # The mask hides entries on purpose; a trial left mostly missing by it is
        # expected, not a problem in the user's data.
        warnings.simplefilter("ignore", MissingDataWarning)
        est = clone(estimator).fit(X_train, y, **kwargs)
    pred = est.predict(X_train, y, **kwargs)
    final = final_step(est)
    if getattr(final, "_score_kind", lambda: "r2")() == "bits_per_spike":
        return bits_per_spike(X_test, pred)
    return r2_observed(X_test, pred)


# --------------------------------------------------------------------------- #
# rank-selection summaries
# --------------------------------------------------------------------------- #
def _estimator_name(est):
    return type(final_step(est)).__name__


def _score_name(est, predicting=False):
    """What ``est.score`` reports: the protocol and the unit."""
    kind = getattr(final_step(est), "_score_kind", None)
    if kind is None:
        return "score"
    protocol = "predicting" if predicting else "co-smoothing"
    unit = "bits/spike" if kind() == "bits_per_spike" else "R²"
    return f"{protocol} {unit}"


def _param_keys(names, param):
    """The parameter names that denote ``param``: itself or a nested ``...__param``."""
    return [k for k in names if k == param or k.endswith("__" + param)]


def _rank_key(params, param):
    keys = _param_keys(params, param)
    if len(keys) != 1:
        raise ValueError(
            f"Expected exactly one parameter named {param!r} (or ending in "
            f"'__{param}') in the search's parameter grid, got "
            f"{sorted(params)}; pass param=... to name the rank parameter.")
    return keys[0]


def _split_scores(cv_results):
    n_splits = sum(1 for k in cv_results if k.startswith("split")
                   and k.endswith("_test_score"))
    if n_splits == 0 or "split0_test_score" not in cv_results:
        raise ValueError(
            "cv_results_ holds no per-split test scores 'splitN_test_score'; "
            "multi-metric searches are not supported: use a single scoring.")
    return np.array([cv_results[f"split{i}_test_score"] for i in range(n_splits)],
                    dtype=float).T


def _mean_se(scores):
    """Mean and standard error (ddof=1) of each row, ignoring failed (NaN) splits."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    n = np.sum(np.isfinite(scores), axis=1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(scores, axis=1)
        se = np.nanstd(scores, axis=1, ddof=1) / np.sqrt(n)
    se = np.where(n > 1, se, 0.0)
    return mean, se, n


def _one_se_choice(ranks, mean, se):
    """Index of the best mean and of the smallest rank within one SE of it."""
    ranks = np.asarray(ranks)
    valid = np.isfinite(mean)
    if not valid.any():
        return None, None
    best = int(np.nanargmax(np.where(valid, mean, -np.inf)))
    ok = np.flatnonzero(valid & (mean >= mean[best] - se[best]))
    # Smallest rank; among equal ranks the higher mean.
    one_se = int(ok[np.lexsort((-mean[ok], ranks[ok]))[0]])
    return best, one_se


def one_se_refit(cv_results, *, param="rank"):
    """``GridSearchCV(refit=one_se_refit)``: refit the one-standard-error rank.

    Among all candidates, find the best mean test score; choose the smallest rank
    whose mean is within one standard error (over folds, ``ddof=1``) of it. Larger
    ranks that tie with a smaller one within noise are not preferred: the
    one-standard-error rule of Hastie, Tibshirani & Friedman (The Elements of
    Statistical Learning, section 7.10).

    Parameters
    ----------
    cv_results : dict
        ``GridSearchCV.cv_results_`` (passed by the search).
    param : str, default="rank"
        Name of the rank parameter (a grid key equal to it or ending in ``__param``).
        Use ``functools.partial(one_se_refit, param=...)`` to change it.

    Returns
    -------
    index : int
        Index of the chosen candidate in ``cv_results['params']``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.model_selection import one_se_refit
    >>> cv_results = {"params": [{"rank": 1}, {"rank": 2}, {"rank": 3}],
    ...               "split0_test_score": np.array([0.5, 0.80, 0.79]),
    ...               "split1_test_score": np.array([0.5, 0.82, 0.85]),
    ...               "split2_test_score": np.array([0.5, 0.81, 0.82])}
    >>> one_se_refit(cv_results)
    1
    """
    params = cv_results["params"]
    ranks = [p[_rank_key(p, param)] for p in params]
    mean, se, _ = _mean_se(_split_scores(cv_results))
    best, one_se = _one_se_choice(ranks, mean, se)
    if best is None:
        raise ValueError("Every candidate failed (NaN scores); nothing to refit.")
    return one_se


def _records_from_search(search, param):
    check_is_fitted(search, "cv_results_")
    cv_results = search.cv_results_
    scores = _split_scores(cv_results)
    base_name = _estimator_name(search.estimator)
    records = []
    for i, params in enumerate(cv_results["params"]):
        key = _rank_key(params, param)
        name = base_name
        extra = []
        for k, v in params.items():
            if k == key:
                continue
            if isinstance(v, BaseEstimator):
                name = _estimator_name(v)
            else:
                extra.append(f"{k}={v}")
        if extra:
            name = f"{name} ({', '.join(extra)})"
        for fold, s in enumerate(scores[i]):
            records.append({"estimator": name, "rank": int(params[key]), "fold": fold,
                            "score": float(s)})
    return records, _score_name(search.estimator)


def rank_selection_summary(results, *, param="rank"):
    """Mean and standard error per estimator and rank; the best and one-SE ranks.

    Parameters
    ----------
    results : fitted GridSearchCV, list of dict, or pandas DataFrame
        A search over ``rank`` (alone, or with other parameters, which then name
        separate lines of the table), or the per-fold output of
        :func:`compare_estimators` (records with keys ``estimator``, ``rank`` and
        ``score``), or an earlier summary (returned unchanged).
    param : str, default="rank"
        Name of the rank parameter in a search.

    Returns
    -------
    summary : :class:`~sklearn.utils.Bunch`
        ``table``: list of records ``{"estimator", "rank", "mean", "se",
        "n_splits"}``, one per estimator and rank (standard error with ``ddof=1``
        over the folds, failed folds ignored); ``best_rank`` and ``one_se_rank``:
        dicts from estimator name to rank (the highest mean, and the smallest rank
        within one standard error of it); ``score_name``: what was scored (the
        records' several names joined by " / " when they differ);
        ``references``: dict from the name of each estimator evaluated without a
        rank (a model-free reference such as
        :class:`~sklearn_ltr.ConditionAverage`) to its ``mean``, ``se`` and
        ``n_splits``; ``text``: the table formatted for printing; ``frame``: the
        table as a pandas DataFrame, or None without pandas.

    See Also
    --------
    compare_estimators, one_se_refit

    Examples
    --------
    >>> from sklearn_ltr.model_selection import rank_selection_summary
    >>> records = [{"estimator": "TCA", "rank": r, "fold": f, "score": s}
    ...            for r, scores in [(1, [.5, .6]), (2, [.80, .82]), (3, [.81, .82])]
    ...            for f, s in enumerate(scores)]
    >>> summary = rank_selection_summary(records)
    >>> summary.best_rank, summary.one_se_rank
    ({'TCA': 3}, {'TCA': 2})
    """
    if isinstance(results, Bunch) and "table" in results:
        return results
    if hasattr(results, "cv_results_") or hasattr(results, "param_grid"):
        records, score_name = _records_from_search(results, param)
    elif hasattr(results, "to_dict"):  # pandas DataFrame
        records, score_name = results.to_dict("records"), "score"
    else:
        records, score_name = list(results), "score"
    if not records:
        raise ValueError("No results to summarise.")
    missing = {"estimator", "rank", "score"} - set(records[0])
    if missing:
        raise ValueError(
            f"Records need the keys 'estimator', 'rank' and 'score' (per fold); "
            f"missing {sorted(missing)}. Pass a fitted GridSearchCV or the output of "
            f"compare_estimators.")
    # Records of several scores (e.g. predicting and co-smoothing) name them all.
    names = list(OrderedDict.fromkeys(r["score_name"] for r in records
                                      if "score_name" in r))
    if names:
        score_name = " / ".join(names)
    groups, reference_scores = OrderedDict(), OrderedDict()
    for rec in records:
        if _no_rank(rec["rank"]):
            reference_scores.setdefault(rec["estimator"], []).append(
                float(rec["score"]))
            continue
        groups.setdefault(rec["estimator"], OrderedDict()).setdefault(
            int(rec["rank"]), []).append(float(rec["score"]))
    references = OrderedDict()
    for name, scores in reference_scores.items():
        mean, se, n = _mean_se(scores)
        references[name] = {"mean": float(mean[0]), "se": float(se[0]),
                            "n_splits": int(n[0])}
    table, best_rank, one_se_rank = [], {}, {}
    for name, by_rank in groups.items():
        ranks = sorted(by_rank)
        n_max = max(len(v) for v in by_rank.values())
        padded = np.full((len(ranks), n_max), np.nan)
        for i, r in enumerate(ranks):
            padded[i, :len(by_rank[r])] = by_rank[r]
        mean, se, n = _mean_se(padded)
        for i, r in enumerate(ranks):
            table.append({"estimator": name, "rank": r, "mean": float(mean[i]),
                          "se": float(se[i]), "n_splits": int(n[i])})
        best, one_se = _one_se_choice(ranks, mean, se)
        if best is not None:
            best_rank[name] = ranks[best]
            one_se_rank[name] = ranks[one_se]
    summary = Bunch(table=table, best_rank=best_rank, one_se_rank=one_se_rank,
                    references=references, score_name=score_name)
    summary.text = _format_table(summary)
    frame = _to_frame(table, "auto")
    summary.frame = frame if frame is not table else None
    return summary


def _no_rank(rank):
    """Whether a record's rank says "evaluated without a rank" (None, or NaN)."""
    return rank is None or (isinstance(rank, float) and rank != rank)


def _format_table(summary):
    names = list(OrderedDict.fromkeys(r["estimator"] for r in summary.table))
    ranks = sorted({r["rank"] for r in summary.table})
    cell = {(r["estimator"], r["rank"]): r for r in summary.table}
    width = max(20, *(len(n) for n in names))

    def row(label, cells):
        return f"{label:>11}  " + "  ".join(f"{c:>{width}}" for c in cells)

    lines = [f"{summary.score_name}, mean +/- standard error over folds",
             row("rank", names)]
    for rank in ranks:
        lines.append(row(rank, [
            "" if (n, rank) not in cell else
            f"{cell[n, rank]['mean']:.4f} +/- {cell[n, rank]['se']:.4f}"
            for n in names]))
    lines.append(row("best rank", [str(summary.best_rank.get(n, "-")) for n in names]))
    lines.append(row("one-SE rank",
                     [str(summary.one_se_rank.get(n, "-")) for n in names]))
    for name, ref in summary.get("references", {}).items():
        lines.append(f"{'reference':>11}  {name}: {ref['mean']:.4f} +/- "
                     f"{ref['se']:.4f} (no rank)")
    return "\n".join(lines)


def _to_frame(records, as_frame):
    """Records as a pandas DataFrame when asked (or 'auto' and pandas is installed)."""
    if as_frame is False:
        return records
    try:
        import pandas as pd
    except ImportError:
        if as_frame == "auto":
            return records
        raise ImportError("as_frame=True needs pandas: pip install pandas") from None
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- #
# comparing estimators on the same folds
# --------------------------------------------------------------------------- #
def _takes_trials(est):
    """Whether the (last step of the) estimator takes 3D arrays of trials."""
    try:
        return bool(final_step(est).__sklearn_tags__().input_tags.three_d_array)
    except AttributeError:
        return False


def _find_param(est, param):
    keys = _param_keys(est.get_params(deep=True), param)
    if param in keys:
        return param
    if len(keys) == 1:
        return keys[0]
    if not keys and _takes_trials(est):
        return None  # a reference without ranks (e.g. ConditionAverage)
    raise ValueError(
        f"{_estimator_name(est)} has no unique parameter {param!r} (found {keys}); "
        f"compare_estimators varies the rank through it.")


def _index(a, idx):
    return None if a is None else np.asarray(a)[idx]


def _fit_and_score(est, X, y, meta, train, test, error_score, label):
    """Fit on the training trials and score the test trials; warnings are returned.

    ``meta`` holds per-trial arrays (``trial_index``, ``epochs``, ``inputs``) given
    to both ``fit`` and ``score``, each fold's part of them; they reach the last
    step of a Pipeline by scikit-learn's metadata routing. Warnings raised in a
    worker process would be printed there, once per fit; they are recorded instead
    and handed back, so the caller sees them in its own process, each distinct
    message once (and can filter or summarise them).
    """
    from sklearn import config_context

    t0 = time.perf_counter()
    fit_meta = {k: _index(v, train) for k, v in meta.items()}
    test_meta = {k: _index(v, test) for k, v in meta.items()}
    with warnings.catch_warnings(record=True) as caught, \
            config_context(enable_metadata_routing=bool(meta)):
        warnings.simplefilter("always")
        try:
            est.fit(X[train], _index(y, train), **fit_meta)
            fit_time = time.perf_counter() - t0
            t1 = time.perf_counter()
            score = float(est.score(X[test], _index(y, test), **test_meta))
            score_time = time.perf_counter() - t1
        except Exception as exc:
            if isinstance(error_score, str) and error_score == "raise":
                raise
            warnings.warn(f"Fitting {label} failed; its score is set to "
                          f"{error_score}. {type(exc).__name__}: {exc}",
                          FitFailedWarning)
            score, fit_time, score_time = (float(error_score),
                                           time.perf_counter() - t0, 0.0)
    raised = [(w.category, str(w.message)) for w in caught]
    return score, fit_time, score_time, raised


def _indexed(i, function, args):
    return i, function(*args)


def _fit_cost(est, rank=None):
    """A rough relative cost of fitting ``est`` (at ``rank``), to order the fits.

    Recurrent networks cost about ``max_iter x n_units`` (times the rank's share of
    the recurrence); references without an iterative fit (condition averages, PCA)
    cost next to nothing; TCA's alternating least squares sits in between. Only the
    order matters: the most expensive fits are dispatched first, so that no long
    fit starts when the other workers are about to run out of work.
    """
    params = est.get_params(deep=True)

    def largest(suffix, default):
        values = [v for k, v in params.items() if k.split("__")[-1] == suffix
                  and isinstance(v, (int, float)) and not isinstance(v, bool)]
        return max(values, default=default)

    units = largest("n_units", 0)
    iterations = largest("max_iter", 1)
    rank = rank if rank is not None else largest("rank", 1)
    if units:
        return float(iterations) * (units + rank)
    return float(iterations) * rank * 1e-3


def _longest_first(costs):
    """Positions of the tasks in the order to dispatch them: costliest first.

    Ties keep their given order (a stable sort), so equal fits run as listed.
    """
    return sorted(range(len(costs)), key=lambda i: -costs[i])


def _run_tasks(function, arguments, *, n_jobs, verbose, what="fits", costs=None):
    """``[function(*args) for args in arguments]`` in one ``joblib.Parallel`` call.

    ``costs`` (one number per task) balances the workers: the tasks are dispatched
    costliest first (longest-processing-time-first scheduling), and the outputs
    come back in the order of ``arguments`` whatever the dispatch order.

    With ``verbose``, the finished tasks out of all, the elapsed time and an
    estimate of the time left are shown on stderr as results arrive (in any order;
    all at the end with a joblib backend that returns no generator, such as
    multiprocessing or dask).
    """
    order = (range(len(arguments)) if costs is None else _longest_first(costs))
    try:
        parallel = Parallel(n_jobs=n_jobs, return_as="generator_unordered")
    except ValueError:  # the active backend returns lists only
        parallel = Parallel(n_jobs=n_jobs)
    progress = Progress(len(arguments), what=what) if verbose else None
    outputs = [None] * len(arguments)
    try:
        for i, output in parallel(delayed(_indexed)(i, function, arguments[i])
                                  for i in order):
            outputs[i] = output
            if progress is not None:
                progress.update()
    finally:
        if progress is not None:
            progress.close()
    return outputs


def compare_estimators(estimators, X, y=None, *, ranks=None, param="rank", cv=5,
                       groups=None, trial_index=None, epochs=None, inputs=None,
                       n_jobs=None, verbose=0, error_score=np.nan, as_frame="auto"):
    """Cross-validated scores of several estimators over a rank grid, on the same folds.

    The folds are drawn once (``cv.split`` is called a single time), so every
    estimator and rank is fitted and scored on exactly the same training and test
    trials: differences between models are not differences between folds. All fits
    run in one ``joblib.Parallel`` call (``n_jobs``), each with the estimator's own
    thread setting (one torch thread by default: parallelise across fits).

    Parameters
    ----------
    estimators : dict of str to estimator, or list of estimators
        The models, e.g. ``{"LTR": LowTensorRankRNN(), "TCA": TCA()}``; a list is
        named by class. Pipelines are accepted; the rank parameter is found by name.
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Data; NaN marks missing entries.
    y : array-like of shape (n_trials,), default=None
        Condition labels, passed to ``fit`` and ``score`` (and to ``cv.split``, so a
        stratified splitter can use them).
    ranks : sequence of int or dict of str to sequence, default=None
        Ranks to evaluate, for all estimators or per estimator name. None evaluates
        each estimator at its own ``rank``. An estimator without a rank parameter
        (a reference such as :class:`~sklearn_ltr.ConditionAverage`) is evaluated
        once per fold, with rank None.
    param : str, default="rank"
        The parameter that is varied (a name or a Pipeline path ending in it).
    cv : int, cross-validation generator or iterable, default=5
        Folds over trials, as in ``GridSearchCV`` (an int means ``KFold``).
    groups : array-like of shape (n_trials,), default=None
        Group labels for group-aware splitters.
    trial_index, epochs : array-like of shape (n_trials,), default=None
        Places in the session, given to ``fit`` and ``score`` (each fold's part):
        with ``trial_index`` the estimators are scored by their predicting score
        (see :meth:`~sklearn_ltr.base.BaseLatentModel.score`). Use folds of
        contiguous blocks then (:class:`TrialBlockKFold`).
    inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
        External inputs, given to ``fit`` and ``score`` likewise.
    n_jobs : int, default=None
        Number of parallel fits (joblib). The fits are dispatched costliest first
        (networks before references, larger ``max_iter x n_units`` first), so
        that the workers finish together; the records come back in the usual
        order.
    verbose : int, default=0
        Progress on stderr: 0 none; 1 or more the fits done out of all, the
        elapsed time and an estimate of the time left (one line rewritten on a
        terminal, otherwise a line every 10 s). The estimators print nothing
        unless their own ``verbose`` is set.
    error_score : 'raise' or float, default=np.nan
        Score recorded, with a ``FitFailedWarning``, when a fit fails (e.g. a rank
        too large for one estimator); ``'raise'`` re-raises.
    as_frame : bool or 'auto', default='auto'
        Return a pandas DataFrame ('auto': when pandas is installed).

    Returns
    -------
    results : list of dict or pandas.DataFrame
        One record per estimator, rank and fold: ``estimator``, ``rank``, ``fold``,
        ``score``, ``fit_time``, ``score_time``, ``n_train``, ``n_test``,
        ``score_name``. Summarise with :func:`rank_selection_summary`.

    Examples
    --------
    >>> from sklearn_ltr import TCA, TrialPCA
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> from sklearn_ltr.model_selection import (compare_estimators,
    ...                                          rank_selection_summary)
    >>> X = make_low_tensor_rank_rnn(24, 12, 10, rank=2, random_state=0).X
    >>> results = compare_estimators([TCA(random_state=0), TrialPCA()], X,
    ...                              ranks=[1, 2, 3], cv=3, as_frame=False)
    >>> len(results)
    18
    >>> sorted(rank_selection_summary(results).one_se_rank)
    ['TCA', 'TrialPCA']
    """
    if isinstance(estimators, dict):
        named = list(estimators.items())
    else:
        named, seen = [], {}
        for est in estimators:
            name = _estimator_name(est)
            seen[name] = seen.get(name, 0) + 1
            named.append((name if seen[name] == 1 else f"{name}_{seen[name]}", est))
    if not named:
        raise ValueError("estimators is empty; pass at least one estimator.")
    X = check_trials_array(X)
    if y is not None and len(y) != X.shape[0]:
        raise ValueError(f"y has {len(y)} labels but X has {X.shape[0]} trials.")
    index, labels = check_session(trial_index, epochs, X.shape[0], required=True)
    meta = {k: v for k, v in [("trial_index", index), ("epochs", labels),
                              ("inputs", inputs)] if v is not None}
    cv = check_cv(cv)
    # Draw the folds once: a shuffling splitter without a fixed random_state would
    # otherwise give each estimator different folds.
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(X, y, groups)]

    tasks = []
    for name, est in named:
        est_ranks = ranks.get(name) if isinstance(ranks, dict) else ranks
        key = _find_param(est, param)
        if key is None:
            est_ranks = [None]
        elif est_ranks is None:
            est_ranks = [est.get_params(deep=True)[key]]
        for rank in est_ranks:
            for fold, (train, test) in enumerate(splits):
                candidate = clone(est)
                if key is not None:
                    candidate.set_params(**{key: rank})
                    rank = int(rank)
                tasks.append((name, rank, fold, candidate, train, test))
    outputs = _run_tasks(
        _fit_and_score,
        [(cand, X, y, meta, train, test, error_score,
          f"{name} with {param}={rank} on fold {fold}")
         for name, rank, fold, cand, train, test in tasks],
        n_jobs=n_jobs, verbose=verbose,
        costs=[_fit_cost(cand, rank) for _, rank, _, cand, _, _ in tasks])
    score_names = {name: _score_name(est, index is not None) for name, est in named}
    records, raised = [], OrderedDict()
    for (name, rank, fold, _, train, test), (score, fit_t, score_t, caught) in zip(
            tasks, outputs):
        records.append({"estimator": name, "rank": rank, "fold": fold,
                        "score": score, "fit_time": fit_t, "score_time": score_t,
                        "n_train": len(train), "n_test": len(test),
                        "score_name": score_names[name]})
        for category, message in caught:
            raised.setdefault((category, message), None)
    for category, message in raised:
        warnings.warn(message, category, stacklevel=2)
    return _to_frame(records, as_frame)


# --------------------------------------------------------------------------- #
# held-out blocks of trials, and the test of learning
# --------------------------------------------------------------------------- #
class TrialBlockKFold:
    """K-fold over contiguous blocks of trials, with guard trials left out.

    The trials (in session order: the order of the rows of X) are cut into
    contiguous blocks of ``block_size``; block ``b`` is held out in fold
    ``b % n_splits``, so each fold tests several blocks spread over the session.
    The ``guard`` trials on each side of every test block are dropped from that
    fold's training set: a trial right next to a held-out block would otherwise
    carry its slow fluctuations into training. This is the split that tests
    whether a model predicts a trial from its place in the session (the predicting
    score of the estimators, with ``trial_index``).

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds (at least 2).
    block_size : int, default=10
        Trials per held-out block.
    guard : int, default=2
        Trials dropped from training on each side of a test block.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.model_selection import TrialBlockKFold
    >>> cv = TrialBlockKFold(n_splits=2, block_size=3, guard=1)
    >>> train, test = next(cv.split(np.zeros((12, 4, 2))))
    >>> test.tolist(), train.tolist()  # trials 3, 5 and 9 are guards
    ([0, 1, 2, 6, 7, 8], [4, 10, 11])
    """

    def __init__(self, n_splits=5, block_size=10, guard=2):
        self.n_splits = n_splits
        self.block_size = block_size
        self.guard = guard

    def _check(self, n_trials):
        for name, value, minimum in [("n_splits", self.n_splits, 2),
                                     ("block_size", self.block_size, 1),
                                     ("guard", self.guard, 0)]:
            if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
                    or value < minimum):
                raise ValueError(f"{name} must be an integer >= {minimum}, got "
                                 f"{value!r}.")
        n_blocks = -(-n_trials // self.block_size)
        if n_blocks < self.n_splits:
            raise ValueError(
                f"{n_trials} trials make {n_blocks} block(s) of block_size="
                f"{self.block_size}, fewer than n_splits={self.n_splits}; use smaller "
                f"blocks or fewer splits.")

    def split(self, X, y=None, groups=None):
        """Yield ``(train, test)`` trial indices of each fold.

        Parameters
        ----------
        X : array-like of shape (n_trials, ...)
            Trials, in session order.
        y, groups : ignored
            For compatibility with scikit-learn's splitters.

        Yields
        ------
        train, test : ndarray of int
        """
        n_trials = len(X)
        self._check(n_trials)
        block = np.arange(n_trials) // self.block_size
        for fold in range(self.n_splits):
            test = block % self.n_splits == fold
            near = test.copy()
            for shift in range(1, self.guard + 1):
                near[shift:] |= test[:-shift]
                near[:-shift] |= test[shift:]
            yield np.flatnonzero(~near), np.flatnonzero(test)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of folds.

        Parameters
        ----------
        X, y, groups : ignored

        Returns
        -------
        n_splits : int
        """
        return self.n_splits

    def __repr__(self):
        return (f"TrialBlockKFold(n_splits={self.n_splits}, block_size="
                f"{self.block_size}, guard={self.guard})")


def _default_blocks(n_trials, n_splits=5):
    """Blocks of about 5% of the session, a fifth of a block of guard on each side."""
    block = max(2, n_trials // (4 * n_splits))
    return TrialBlockKFold(n_splits=n_splits, block_size=block,
                           guard=max(1, block // 5))


def _session_cv(cv, n_trials):
    if cv is None:
        return _default_blocks(n_trials)
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        return _default_blocks(n_trials, int(cv))
    return check_cv(cv)


def check_fold_conditions(splits, y):
    """Raise a ValueError when a fold's training trials lack a condition of its test.

    A model fitted with conditions has one initial state per condition it saw; a
    held-out trial of a condition absent from training cannot be predicted. With
    contiguous blocks and guard trials this happens when the blocks are short and
    the conditions cycle in step with them.

    Parameters
    ----------
    splits : sequence of (train, test) index arrays
    y : array-like of shape (n_trials,) or None
        Condition labels; nothing is checked without them.
    """
    if y is None:
        return
    y = np.asarray(y)
    for fold, (train, test) in enumerate(splits):
        missing = sorted(set(y[test].tolist()) - set(y[train].tolist()))
        if missing:
            raise ValueError(
                f"The training trials of fold {fold} have no trial of condition(s) "
                f"{missing[:5]}, which its test trials need; use longer blocks of "
                f"trials, shorter guards or fewer folds.")


def _fit_and_score_session(est, X, y, meta, train, test):
    """Fit on the training trials and score the test trials with their places."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X[train], _index(y, train),
                **{k: _index(v, train) for k, v in meta.items()})
        score = float(est.score(X[test], _index(y, test),
                                **{k: _index(v, test) for k, v in meta.items()}))
    return score, [(w.category, str(w.message)) for w in caught]


def _corrected_t_test(differences, n_train, n_test):
    """One-sided paired t-test over folds, corrected for overlapping training sets.

    Cross-validation folds share most of their training trials, so their scores are
    not independent, and the plain paired t-test over folds rejects too often. The
    corrected resampled t-test of Nadeau & Bengio (Machine Learning 52, 2003)
    inflates the variance of the mean difference from ``s^2 / k`` to
    ``(1 / k + n_test / n_train) s^2``.

    Returns
    -------
    mean, se, statistic, pvalue : float
    """
    from scipy.stats import t as student

    d = np.asarray(differences, dtype=float)
    k = d.size
    mean = float(d.mean())
    var = float(d.var(ddof=1)) if k > 1 else 0.0
    se = float(np.sqrt((1.0 / k + n_test / n_train) * var))
    if se == 0.0:
        statistic = np.inf if mean > 0 else (-np.inf if mean < 0 else 0.0)
    else:
        statistic = mean / se
    pvalue = float(student.sf(statistic, df=max(k - 1, 1)))
    return mean, se, float(statistic), pvalue


def _learning_test_rank(records, names=("LowTensorRankRNN", "LowRankRNN")):
    """The rank of the command line's learning test, chosen from the same folds.

    The rank where the two networks' mean score over folds (both networks
    together) is best, ties to the smaller rank. Only ranks where both networks
    have a finite score on every fold, the same folds for both, are candidates.

    Parameters
    ----------
    records : list of dict
        Records of :func:`compare_estimators` (``estimator``, ``rank``, ``fold``,
        ``score``); other estimators and rank-less records are ignored.
    names : (str, str), default=("LowTensorRankRNN", "LowRankRNN")
        The network and its null twin.

    Returns
    -------
    rank : int or None
        The chosen rank; None when no rank is a candidate.
    pairs : dict of int to (ndarray, ndarray)
        Per candidate rank, the two networks' per-fold scores in fold order.
    """
    by_rank = {}
    for rec in records:
        if rec["estimator"] in names and rec["rank"] is not None:
            by_rank.setdefault(rec["rank"], {}).setdefault(
                rec["estimator"], {})[rec["fold"]] = rec["score"]
    pairs = {}
    for rank, scores in by_rank.items():
        if set(scores) != set(names) or set(scores[names[0]]) != set(scores[names[1]]):
            continue
        pair = tuple(np.array([scores[name][f] for f in sorted(scores[name])],
                              dtype=float) for name in names)
        if np.isfinite(np.concatenate(pair)).all():
            pairs[rank] = pair
    if not pairs:
        return None, pairs
    return max(pairs, key=lambda r: (np.mean(pairs[r]), -r)), pairs


def learning_test(X, y=None, *, rank, trial_index=None, epochs=None, inputs=None,
                  cv=None, estimator_params=None, n_jobs=None, random_state=None,
                  verbose=0):
    """Test whether connectivity changed over a session, on held-out trials.

    Fits :class:`~sklearn_ltr.LowTensorRankRNN` (connectivity that changes over
    trials) and :class:`~sklearn_ltr.LowRankRNN` (the same network with fixed
    connectivity) of the same ``rank`` on the same folds, and scores each held-out
    trial by the *predicting* score: its trial factors from the fitted model's prior
    at its place in the session, its initial state from its condition ``y``, its
    readout offsets from their drift -- nothing re-fitted on the trial's own data
    (the initial state is inferred from held-in neurons only when ``y`` is not
    given). Both networks share the same nuisance terms, so the low-tensor-rank
    model can beat its twin only by predicting how the dynamics change over the
    session. Holding out contiguous blocks of trials (``TrialBlockKFold``) keeps
    trial-to-trial fluctuations that are not learning from helping it.

    The p-value is one-sided (the low-tensor-rank model scores higher), from the
    corrected resampled t-test over folds (Nadeau & Bengio, 2003), which accounts
    for the folds' shared training trials.

    Parameters
    ----------
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Trials in session order.
    y : array-like of shape (n_trials,), default=None
        Condition labels (strongly recommended: then held-out trials are predicted
        from their condition and place alone). Every condition must appear in every
        training fold.
    rank : int
        Rank of both networks.
    trial_index : array-like of shape (n_trials,), default=None
        Each trial's number in the session (default ``0 .. n_trials - 1``).
    epochs : array-like of shape (n_trials,), default=None
        Epoch label of each trial (the trial-factor prior is independent across
        epochs).
    inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
        External inputs of both networks.
    cv : int, cross-validation splitter or iterable, default=None
        Folds over trials. None: ``TrialBlockKFold`` with 5 folds, blocks of about
        5% of the session and guards of a fifth of a block; an int sets the number
        of folds of that default.
    estimator_params : dict, default=None
        Further parameters of both networks (e.g. ``n_units``, ``tau``,
        ``max_iter``); ``trial_length_scale`` and the other parameters of the
        low-tensor-rank model's prior are given to it alone.
    n_jobs : int, default=None
        Parallel fits (joblib).
    random_state : int, RandomState instance or None, default=None
        ``random_state`` of both networks (the same for both).
    verbose : int, default=0
        Progress on stderr, as :func:`compare_estimators`.

    Returns
    -------
    result : Bunch
        ``difference``: mean over folds of the low-tensor-rank minus the low-rank
        score; ``se``: its corrected standard error; ``statistic``: their ratio;
        ``pvalue``; ``per_fold``: the differences, shape (n_splits,); ``scores``:
        dict of the per-fold scores of ``"LowTensorRankRNN"`` and
        ``"LowRankRNN"``; ``score_name``; ``n_train``, ``n_test``: mean sizes of
        the folds; ``cv``: the splitter; ``method``: how the p-value was computed.

    See Also
    --------
    TrialBlockKFold : The default folds.

    Examples
    --------
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> from sklearn_ltr.model_selection import learning_test
    >>> data = make_low_tensor_rank_rnn(40, 10, 8, rank=2, random_state=0)
    >>> result = learning_test(data.X, data.y, rank=2, cv=2, random_state=0,
    ...                        estimator_params={"n_units": 12, "max_iter": 40})
    >>> sorted(result.scores), result.per_fold.shape
    (['LowRankRNN', 'LowTensorRankRNN'], (2,))
    """
    from .rnn import LowRankRNN, LowTensorRankRNN

    X = check_trials_array(X)
    n_trials = X.shape[0]
    index, labels = check_session(trial_index, epochs, n_trials)
    if y is not None and len(y) != n_trials:
        raise ValueError(f"y has {len(y)} labels but X has {n_trials} trials.")
    meta = {"trial_index": index, "epochs": labels, "inputs": inputs}
    meta = {k: v for k, v in meta.items() if v is not None}
    cv = _session_cv(cv, n_trials)
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in cv.split(X, y)]
    check_fold_conditions(splits, y)
    params = dict(estimator_params or {}, rank=rank, random_state=random_state)
    shared = set(LowRankRNN().get_params())
    models = {"LowTensorRankRNN": LowTensorRankRNN(**params),
              "LowRankRNN": LowRankRNN(**{k: v for k, v in params.items()
                                           if k in shared})}
    tasks = [(name, fold, clone(est)) for fold in range(len(splits))
             for name, est in models.items()]
    outputs = _run_tasks(_fit_and_score_session,
                         [(est, X, y, meta, *splits[fold]) for _, fold, est in tasks],
                         n_jobs=n_jobs, verbose=verbose)
    scores = {name: np.full(len(splits), np.nan) for name in models}
    raised = OrderedDict()
    for (name, fold, _), (score, caught) in zip(tasks, outputs):
        scores[name][fold] = score
        for category, message in caught:
            raised.setdefault((category, message), None)
    for category, message in raised:
        warnings.warn(message, category, stacklevel=2)
    return paired_comparison(
        scores["LowTensorRankRNN"], scores["LowRankRNN"], splits,
        names=("LowTensorRankRNN", "LowRankRNN"),
        score_name=_score_name(models["LowTensorRankRNN"], True), cv=cv)


def paired_comparison(scores, null_scores, splits, *, names=("model", "null"),
                      score_name="score", cv=None):
    """Compare two models scored on the same folds: difference, SE, p-value.

    The statistics of :func:`learning_test`, for per-fold scores obtained
    elsewhere (e.g. from :func:`compare_estimators`, whose folds are shared by
    every estimator). The p-value is one-sided (the first model scores higher),
    from the corrected resampled t-test over folds of Nadeau & Bengio (2003),
    which inflates the variance of the mean difference by ``1 + k n_test /
    n_train`` for ``k`` folds that share their training trials.

    Parameters
    ----------
    scores, null_scores : array-like of shape (n_splits,)
        Per-fold scores of the model and of its null (nested) twin.
    splits : sequence of (train, test) index arrays
        The folds, for their sizes.
    names : (str, str), default=("model", "null")
        Keys of ``result.scores``.
    score_name : str, default="score"
        What was scored.
    cv : object, default=None
        The splitter, recorded in the result.

    Returns
    -------
    result : Bunch
        As :func:`learning_test`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.model_selection import paired_comparison
    >>> splits = [(np.arange(8), np.arange(8, 10))] * 3
    >>> res = paired_comparison([0.9, 0.85, 0.88], [0.7, 0.72, 0.7], splits)
    >>> round(res.difference, 3), bool(res.pvalue < 0.05)
    (0.17, True)
    """
    scores = np.asarray(scores, dtype=float)
    null_scores = np.asarray(null_scores, dtype=float)
    per_fold = scores - null_scores
    n_train = float(np.mean([len(tr) for tr, _ in splits]))
    n_test = float(np.mean([len(te) for _, te in splits]))
    mean, se, statistic, pvalue = _corrected_t_test(per_fold, n_train, n_test)
    return Bunch(difference=mean, se=se, statistic=statistic, pvalue=pvalue,
                 per_fold=per_fold, scores=dict(zip(names, (scores, null_scores))),
                 score_name=score_name, n_train=n_train, n_test=n_test, cv=cv,
                 method="one-sided corrected resampled t-test over folds "
                        "(Nadeau & Bengio, 2003)")
