"""Command line: ``python -m sklearn_ltr`` (also the ``sklearn-ltr`` script).

* ``select-rank DATA``: cross-validated rank selection on a file of recordings
  (``.npz``, ``.npy`` or ``.mat``, or an NWB file's spike times binned with
  ``--align``, ``--window`` and ``--bin``), comparing the low-tensor-rank RNN with
  the low-rank RNN, TCA, PCA and the condition average on the same folds; prints a
  table and writes ``results.json`` and ``rank_selection.png``. With ``--blocks``
  (or the trials' numbers or epochs from the file, or an NWB file's trials table)
  it holds out blocks of trials, scores them by prediction from their place in the
  session, and runs the learning test.
* ``learning-test DATA --rank R``: :func:`~sklearn_ltr.model_selection.learning_test`
  on the same files, beside the condition averages on the same folds; prints the
  result and writes ``learning_test.json`` and ``learning_test.png`` (per-fold
  differences, and the trial factors fitted on all trials with the epochs).
* ``demo``: the same on the built-in dataset, with held-out blocks and the learning
  test: the activity of a task-trained network learning a curl field
  (:func:`sklearn_ltr.datasets.make_motor_learning`), with the CP rank of its weight
  changes printed as the ground truth.

Every argument and the data are checked before the first fit. Exit status: 0 when
the run finished; 1 after an error in the input (missing file, missing key, wrong
dimensionality, an option out of range, ...), reported as one ``error:`` line on
stderr; 2 for a command line argparse cannot parse; 130 when interrupted (Ctrl-C):
the run stops, no fit cut short is scored, and nothing is written. Outputs are
written atomically (a temporary file in the same folder, then renamed), so an
earlier ``results.json`` is either left as it was or replaced by a complete one.
Progress (fits done out of all, elapsed time, time left) goes to stderr, results
to stdout.
"""

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import signal
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from ._pipeline import final_step

ESTIMATORS = {
    "ltr": "LowTensorRankRNN",
    "lr": "LowRankRNN",
    "tca": "TCA",
    "pca": "TrialPCA",
    "avg": "ConditionAverage",
    "avg-smooth": "ConditionAverage (smoothed)",
}
AXES = ("trial", "time", "neuron")


class InputError(ValueError):
    """A problem with the user's input, reported as one line on stderr."""


class Interrupted(BaseException):
    """Ctrl-C during a command: the run stops.

    Raised by the command line's SIGINT handler in place of ``KeyboardInterrupt``,
    which the estimators catch to keep a fit cut short; this one no estimator
    catches, so the fit in progress is abandoned rather than scored.
    """


# Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

# Set by the SIGINT handler: an Interrupted raised where Python swallows
# exceptions (a __del__, a weakref callback) still stops the run at the next check.
_interrupt_requested = threading.Event()


def _raise_if_interrupted():
    if _interrupt_requested.is_set():
        raise Interrupted


# --------------------------------------------------------------------------- #
# reading recordings
# --------------------------------------------------------------------------- #
def _pick(shapes, key, path):
    """Name of the data array among ``shapes`` (array name -> shape)."""
    if key is not None:
        if key not in shapes:
            raise InputError(f"{path} has no array {key!r}; it has "
                             f"{sorted(shapes)}. Choose one with --key.")
        return key
    if "X" in shapes:
        return "X"
    candidates = [k for k, shape in shapes.items() if len(shape) == 3]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(f"{path} has no array 'X' and {len(candidates)} 3D arrays "
                     f"({sorted(shapes)}); name the data with --key.")


def _npz_shapes(npz):
    """Shape of every array of an open ``.npz`` file, from the member headers only.

    No array is read: a file may hold large arrays the command does not use.
    """
    shapes = {}
    for name in npz.files:
        with npz.zip.open(name + ".npy") as member:
            version = np.lib.format.read_magic(member)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shapes[name] = read(member, max_header_size=10000)[0]
    return shapes


def _label_key(shapes, y_key, path):
    """Name of the labels array: an explicit ``--y-key`` must exist, ``y`` may not."""
    if y_key is not None and y_key not in shapes:
        raise InputError(f"{path} has no array {y_key!r} of condition labels; it has "
                         f"{sorted(shapes)}. Name them with --y-key.")
    return "y" if y_key is None else y_key


def _read_arrays(path, suffix, key, y_key):
    """The data array and the labels (or None) of a recordings file."""
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            shapes = _npz_shapes(f)
            name = _pick(shapes, key, path)
            y_key = _label_key(shapes, y_key, path)
            return f[name], (f[y_key] if y_key in shapes else None)
    if suffix == ".npy":
        arrays = {"X": np.load(path, allow_pickle=False)}
    elif suffix == ".mat":
        from scipy.io import loadmat

        arrays = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    else:
        raise InputError(f"{path}: unsupported file type {suffix!r}; use .npz "
                         f"(array 'X', optional 'y'), .npy, .mat, or .nwb "
                         f"(with --align, --window and --bin).")
    shapes = {k: np.shape(v) for k, v in arrays.items()}
    name = _pick(shapes, key, path)
    return arrays[name], arrays.get(_label_key(shapes, y_key, path))


def load_recordings(path, *, key=None, y_key=None, axis_order=AXES):
    """Read ``X`` (and labels when present) from ``.npz``, ``.npy`` or ``.mat``.

    Parameters
    ----------
    path : str or Path
        The file.
    key : str, default=None
        Name of the data array; by default ``X``, or the only 3D array of the file.
    y_key : str, default=None
        Name of the condition labels (one per trial), which the file must then
        hold; None: the array ``y`` when the file has one.
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
        X, y = _read_arrays(path, suffix, key, y_key)
    except InputError:
        raise
    except Exception as exc:  # corrupt or foreign files: one line, no traceback
        raise InputError(f"could not read {path}: {exc}") from None
    X = np.asarray(X)
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
    if y is not None:
        y = np.ravel(y)
        if y.shape[0] != X.shape[0]:
            raise InputError(f"{y_key or 'y'!r} has {y.shape[0]} labels but the data "
                             f"have {X.shape[0]} trials.")
    return X.astype(float), y


# --------------------------------------------------------------------------- #
# checking the arguments, before any fit
# --------------------------------------------------------------------------- #
# Numeric options: (flag, attribute, valid, requirement). An option a subcommand
# does not have (or leaves None, such as the demo's tau) is skipped.
OPTION_RULES = [
    ("--ranks", "ranks", lambda v: v >= 1, "positive integers"),
    ("--cv", "cv", lambda v: v >= 2, "an integer >= 2"),
    ("--n-units", "n_units", lambda v: v >= 1, "a positive integer"),
    ("--max-iter", "max_iter", lambda v: v >= 1, "a positive integer"),
    # The networks move 1/tau of the way to their input per time bin: tau < 1
    # would overshoot it.
    ("--tau", "tau", lambda v: 1 <= v < math.inf,
     "a finite number of time bins >= 1"),
    ("--trial-length-scale", "trial_length_scale", lambda v: 0 < v < math.inf,
     "a finite positive number of trials"),
    ("--drift-length-scale", "drift_length_scale", lambda v: 0 < v < math.inf,
     "a finite positive number of trials, or none"),
    ("--tol", "tol", lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    ("--smooth", "smooth", lambda v: 0 <= v < math.inf,
     "a finite number of time bins >= 0 (0: no smoothing)"),
    ("--n-jobs", "n_jobs", lambda v: v != 0,
     "a non-zero integer (-1: all cores)"),
    ("--random-state", "random_state", lambda v: 0 <= v < 2 ** 32,
     "an integer between 0 and 2**32 - 1"),
    ("--verbose", "verbose", lambda v: v >= 0, "0 (quiet) or more"),
    ("--rank", "rank", lambda v: v >= 1, "a positive integer"),
    ("--bin", "bin_size", lambda v: 0 < v < math.inf,
     "a finite positive number of seconds"),
]

# Options that only one kind of file has: arrays (.npz, .npy, .mat) or NWB files.
ARRAY_OPTIONS = {"--key": "key", "--y-key": "y_key",
                 "--trial-index-key": "trial_index_key", "--epoch-key": "epoch_key"}
NWB_OPTIONS = {"--align": "align", "--window": "window", "--bin": "bin_size",
               "--condition-column": "condition_column",
               "--epoch-column": "epoch_column"}

# The smoothing of NWB spike counts fitted with squared error when --smooth is not
# given: a Gaussian of this standard deviation, in seconds (2.5 bins of 20 ms), a
# common width for single-trial rates of motor cortex. Counts in bins of tens of
# ms are mostly 0 and 1 (MC_Maze: 0.09 spikes per 20 ms bin on average), and
# their squared error is dominated by Poisson noise that no model predicts.
NWB_SMOOTH_SECONDS = 0.05

# Estimators that fit spike counts with the Poisson loss, as --loss poisson asks.
POISSON_ESTIMATORS = ("ltr", "lr", "avg", "avg-smooth")
# Estimators that take no external inputs (--condition-inputs).
NO_INPUTS = ("tca", "pca")


def check_options(args):
    """Check every option that does not need the data; resolve the defaults.

    Raises
    ------
    InputError
        An option out of range, an output folder that cannot be one, or a figure
        without matplotlib.
    """
    for flag, attr, valid, requirement in OPTION_RULES:
        value = getattr(args, attr, None)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not all(valid(v) for v in values):
            shown = " ".join(str(v) for v in values)
            raise InputError(f"{flag} must be {requirement}, got {shown}.")
    if getattr(args, "command", None) == "demo":
        _demo_session(args)
    if getattr(args, "rank", None) is not None:
        args.ranks = [args.rank]
    if getattr(args, "ranks", None) is not None:
        args.ranks = sorted(set(args.ranks))
    if hasattr(args, "data"):
        _check_source(args)
    if hasattr(args, "estimators"):
        _check_estimators(args)
    if getattr(args, "out", None) is not None:
        _check_output_folder(Path(args.out))
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("the figure needs matplotlib: pip install matplotlib "
                         "(or the package's [plot] extra).")


def _is_nwb(path):
    return Path(path).suffix.lower() == ".nwb"


def _check_source(args):
    """The options of the data file's kind, and no other; the default smoothing."""
    nwb = _is_nwb(args.data)
    given = {flag for flag, attr in {**ARRAY_OPTIONS, **NWB_OPTIONS}.items()
             if getattr(args, attr, None) is not None}
    if list(args.axis_order) != list(AXES):
        given.add("--axis-order")
    if nwb:
        missing = [flag for flag in ("--align", "--window", "--bin")
                   if flag not in given]
        if missing:
            raise InputError(
                f"{args.data} is an NWB file: its spike times are binned around an "
                f"event of each trial; add {' '.join(missing)} (e.g. --align "
                f"move_onset_time --window -0.25 0.45 --bin 0.02).")
        wrong = sorted(given - set(NWB_OPTIONS))
        fix = ("name trials-table columns with --condition-column and "
               "--epoch-column")
    else:
        wrong = sorted(given & set(NWB_OPTIONS))
        fix = "they bin the spike times of an .nwb file"
    if wrong:
        raise InputError(f"{' '.join(wrong)} cannot be used with "
                         f"{Path(args.data).name}: {fix}.")
    if getattr(args, "smooth", 0.0) is None:
        # Recorded, so that the run can say it smoothed without being asked.
        args.default_smooth = nwb and getattr(args, "loss", "mse") == "mse"
        args.smooth = (NWB_SMOOTH_SECONDS / args.bin_size if args.default_smooth
                       else 0.0)


def _rank_flag(args):
    """The option that set the ranks: ``--rank`` (learning-test) or ``--ranks``."""
    return "--rank" if getattr(args, "rank", None) is not None else "--ranks"


def _check_estimators(args):
    """The default estimators of the loss and the inputs; networks' ranks; the loss."""
    loss = getattr(args, "loss", "mse")
    inputs = getattr(args, "condition_inputs", False)
    if args.estimators is None:
        args.estimators = [e for e in args.default_estimators
                           if (loss == "mse" or e in POISSON_ESTIMATORS)
                           and not (inputs and e in NO_INPUTS)]
    if inputs and set(args.estimators) & set(NO_INPUTS):
        raise InputError(
            f"--condition-inputs: "
            f"{', '.join(ESTIMATORS[e] for e in NO_INPUTS if e in args.estimators)} "
            f"take(s) no inputs; choose --estimators among ltr lr avg avg-smooth.")
    networks = [ESTIMATORS[e] for e in args.estimators if e in ("ltr", "lr")]
    if networks and max(args.ranks) > args.n_units:
        raise InputError(
            f"{_rank_flag(args)} {max(args.ranks)} is larger than --n-units "
            f"{args.n_units}: a "
            f"network's rank is at most its number of units ({', '.join(networks)})."
            f" Lower the ranks or raise --n-units.")
    if loss != "poisson":
        return
    other = [e for e in args.estimators if e not in POISSON_ESTIMATORS]
    if other:
        raise InputError(
            f"--loss poisson: {', '.join(ESTIMATORS[e] for e in other)} fit(s) "
            f"squared error, not spike counts; choose --estimators among "
            f"{' '.join(POISSON_ESTIMATORS)}.")
    for flag, on in [("--zscore", args.zscore), ("--smooth", args.smooth)]:
        if on:
            raise InputError(f"--loss poisson fits spike counts as they are; drop "
                             f"{flag} (it turns counts into other numbers).")


def _check_output_folder(out):
    """``out`` is, or can be created as, a folder we may write in."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file, not a folder; name a "
                         f"folder (it is created when missing).")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {out} cannot be created: {parent} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: no permission to write in {parent}.")


def check_data(X, y, args):
    """Check the data and the options that depend on them, before any fit.

    Raises
    ------
    InputError
        No observed entry in a trial or a neuron (or in X), too few trials for
        the folds, smoothing longer than a trial, counts that are not counts.
    """
    from ._validation import check_training_trials

    try:
        with warnings.catch_warnings():
            # Mostly missing trials are reported by the fits themselves.
            warnings.simplefilter("ignore")
            check_training_trials(X, min_trials=2, min_timepoints=2)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    n_trials, n_timepoints = X.shape[:2]
    if args.cv > n_trials:
        raise InputError(f"--cv {args.cv} must be between 2 and the number of trials "
                         f"({n_trials}).")
    if getattr(args, "smooth", 0) > n_timepoints:
        raise InputError(f"--smooth {args.smooth} is longer than a trial "
                         f"({n_timepoints} time bins); use a smaller width.")
    if getattr(args, "loss", "mse") == "poisson":
        values = X[~np.isnan(X)]
        bad = values[(values < 0) | (values != np.round(values))]
        if bad.size:
            raise InputError(
                f"--loss poisson needs spike counts (integers >= 0), but the data "
                f"hold {bad.size} other value(s), e.g. {bad[0]:g}; use --loss mse "
                f"for rates or standardised data.")


def _largest_rank(code, shape, n_observed):
    """The largest rank estimator ``code`` fits on training trials of ``shape``.

    Returns the bound and why, or ``(None, None)`` for a model without a rank.
    """
    n_train, n_timepoints, n_neurons = shape
    if code == "pca":
        if n_neurons <= n_train * n_timepoints:
            return n_neurons, f"the data's {n_neurons} neurons"
        return n_train * n_timepoints, (f"the {n_train * n_timepoints} time bins of "
                                        f"the smallest training fold")
    if code == "tca":
        # A CP model of rank R has R * (trials + time points + neurons - 2) free
        # parameters; TCA refuses more than the observed entries.
        bound = n_observed // (n_train + n_timepoints + n_neurons - 2)
        return bound, (f"the {n_observed} observed entries of the smallest training "
                       f"fold ({bound} components of {n_train} trials, "
                       f"{n_timepoints} time bins and {n_neurons} neurons)")
    return None, None


def check_folds(splits, cv, args):
    """Every fold has at least 2 training trials and 1 test trial.

    Held-out blocks leave the guard trials beside each block out of training: on a
    short session, short blocks can leave a fold almost nothing to train on.
    """
    for fold, (train, test) in enumerate(splits):
        if len(train) < 2 or len(test) < 1:
            raise InputError(
                f"--cv {args.cv} leaves fold {fold} with {len(train)} training and "
                f"{len(test)} test trial(s) ({cv!r}; the guard trials beside each "
                f"held-out block are not trained on); every fold needs 2 training "
                f"trials or more. Use fewer folds or more trials.")


def check_ranks(X, splits, args, n_inputs=0):
    """Every rank fits every estimator on every fold; RNN fits fit in memory."""
    import torch

    from .rnn import LowTensorRankRNN, _check_fit_memory

    smallest = min(splits, key=lambda s: np.sum(~np.isnan(X[s[0]])))[0]
    shape = (len(smallest),) + X.shape[1:]
    n_observed = int(np.sum(~np.isnan(X[smallest])))
    top = max(args.ranks)
    for code in args.estimators:
        bound, why = _largest_rank(code, shape, n_observed)
        if bound is not None and top > bound:
            raise InputError(
                f"{_rank_flag(args)} {top} is too large for {ESTIMATORS[code]}: at "
                f"most {bound}, from {why}. Lower the ranks or leave it out of "
                f"--estimators.")
    if {"ltr", "lr"} & set(args.estimators):
        largest = (max(len(train) for train, _ in splits),) + X.shape[1:]
        est = LowTensorRankRNN(rank=top, n_units=args.n_units,
                               loss=getattr(args, "loss", "mse"))
        _check_fit_memory(est, largest, n_inputs, torch.device("cpu"))


# --------------------------------------------------------------------------- #
# the cross-validated comparison
# --------------------------------------------------------------------------- #
def _exact_readout(args):
    """The networks' ``exact_readout``: False with ``--stepped-readout``."""
    return False if getattr(args, "stepped_readout", False) else "auto"


def _build(names, *, n_units, tau, max_iter, random_state, sigma, zscore,
           trial_length_scale=10.0, loss="mse", drift_length_scale=50.0,
           drift_epochs=False, tol=5e-3, exact_readout="auto", solver="auto"):
    from sklearn.pipeline import make_pipeline

    from . import TCA, ConditionAverage, LowRankRNN, LowTensorRankRNN, TrialPCA
    from .preprocessing import GaussianSmoother, StandardScaler3D

    steps = []
    if sigma:
        steps.append(GaussianSmoother(sigma=sigma))
    if zscore:
        steps.append(StandardScaler3D())
    rnn = {"n_units": n_units, "tau": tau, "max_iter": max_iter, "loss": loss,
           "drift_length_scale": drift_length_scale, "drift_epochs": drift_epochs,
           "tol": tol, "exact_readout": exact_readout, "solver": solver,
           "random_state": random_state}
    make = {
        "ltr": lambda: LowTensorRankRNN(trial_length_scale=trial_length_scale,
                                        **rnn),
        "lr": lambda: LowRankRNN(**rnn),
        "tca": lambda: TCA(n_init=3, tol=1e-6, random_state=random_state),
        "pca": lambda: TrialPCA(random_state=random_state),
        "avg": lambda: ConditionAverage(loss=loss),
        "avg-smooth": lambda: ConditionAverage(trial_smoothing=SMOOTHING_TRIALS,
                                               loss=loss),
    }
    return {ESTIMATORS[n]: make_pipeline(*steps, make[n]()) for n in names}


# The session-weighted condition average of the commands: a Gaussian over trial
# numbers with this standard deviation.
SMOOTHING_TRIALS = 10.0


def _folds(X, y, args, blocks):
    """Contiguous blocks of trials, or (stratified) shuffled K-fold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from .model_selection import TrialBlockKFold, check_fold_conditions

    if blocks:
        size = max(2, X.shape[0] // (4 * args.cv))
        cv = TrialBlockKFold(args.cv, block_size=size, guard=max(1, size // 5))
        check_fold_conditions(list(cv.split(X)), y)
        return cv
    if y is None:
        return KFold(args.cv, shuffle=True, random_state=args.random_state)
    # Condition labels set per-condition initial states, so every condition must
    # be in every training fold: stratify the folds by condition.
    _, counts = np.unique(y, return_counts=True)
    if counts.min() < args.cv:
        raise InputError(
            f"condition {np.unique(y)[counts.argmin()].item()!r} has only "
            f"{counts.min()} trial(s), fewer than --cv {args.cv} folds.")
    return StratifiedKFold(args.cv, shuffle=True, random_state=args.random_state)


def _held_out_blocks(meta):
    """Whether the trials have places in the session: held-out blocks of trials.

    ``meta`` may hold the networks' ``inputs`` alone (``--condition-inputs``
    without blocks), scored by co-smoothing.
    """
    return meta is not None and "trial_index" in meta


def with_condition_inputs(X, y, meta, args):
    """``meta`` with the one-hot condition inputs of ``--condition-inputs``.

    Raises
    ------
    InputError
        ``--condition-inputs`` without condition labels.
    """
    if not getattr(args, "condition_inputs", False):
        return meta
    if y is None:
        raise InputError(
            "--condition-inputs gives the networks each trial's condition, but the "
            "data have no condition labels; name them with --y-key (an array "
            "file) or --condition-column (an .nwb file).")
    from .preprocessing import condition_inputs

    return {**(meta or {}), "inputs": condition_inputs(y, X.shape[1])}


def _prepare(X, y, args, meta):
    """Check the data against the options; the folds and the estimators."""
    check_data(X, y, args)
    cv = _folds(X, y, args, blocks=_held_out_blocks(meta))
    splits = list(cv.split(X, y))
    check_folds(splits, cv, args)
    inputs = (meta or {}).get("inputs")
    check_ranks(X, splits, args, n_inputs=0 if inputs is None else inputs.shape[2])
    estimators = _build(args.estimators, n_units=args.n_units, tau=args.tau,
                        max_iter=args.max_iter, random_state=args.random_state,
                        sigma=args.smooth, zscore=args.zscore,
                        trial_length_scale=args.trial_length_scale,
                        loss=getattr(args, "loss", "mse"),
                        drift_length_scale=args.drift_length_scale,
                        drift_epochs=args.drift_epochs, tol=args.tol,
                        exact_readout=_exact_readout(args),
                        solver=getattr(args, "solver", "auto"))
    if _held_out_blocks(meta):
        # TCA and PCA have no prior over the session: they infer each held-out
        # trial's parameters from its held-in neurons, a different score.
        estimators = {(f"{name} (co-smoothing)" if name in ("TCA", "TrialPCA")
                       else name): est for name, est in estimators.items()}
    return cv, estimators


def _start_workers(n_jobs):
    """Start joblib's worker processes with Ctrl-C ignored, which they inherit.

    A Ctrl-C at a terminal reaches every process of its foreground group. Workers
    that react to it each print a traceback (while starting) or cut their fit
    short; ignoring it, they leave it to this process, whose interruption stops
    them. The comparison then reuses these workers. Only the moment of starting
    the processes ignores Ctrl-C here (a fraction of a second): waiting for them is
    interruptible.
    """
    from joblib import Parallel, delayed, effective_n_jobs

    n_workers = effective_n_jobs(n_jobs)
    if n_workers == 1 or os.name != "posix":
        return
    with _interrupts_ignored():
        # A generator returns once its first tasks are dispatched: the workers
        # are started (forked and executed) by then.
        started = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(os.getpid)() for _ in range(n_workers))
    for _ in started:
        pass


def _is_interruption(message):
    """A fit's warning that it was interrupted and kept a partial result."""
    return ".fit was interrupted" in message


# joblib's process pool replaces a worker that stopped (e.g. one idle past its
# timeout) and re-runs its jobs; every result still arrives, so the message it
# warns with says nothing a user could act on.
_WORKER_RESTART = "A worker stopped while some jobs were given to the executor"


def _for_the_command_line(messages):
    """The fits' warnings as a command-line user can act on them.

    Drops joblib's notice of a replaced worker, and names the options, not the
    Python parameters, in the advice of a fit that reached its iteration limit.
    """
    said = []
    for message in messages:
        if message.startswith(_WORKER_RESTART):
            continue
        message = message.replace(
            "increase max_iter or learning_rate.",
            "its score is kept; a larger --max-iter lets such fits converge.")
        message = message.replace("; increase max_iter.",
                                  "; its score is kept.")
        said.append(message)
    return list(dict.fromkeys(said))


def _fitting(function, *args, **kwargs):
    """``function(*args, **kwargs)`` and the distinct messages of its warnings.

    Raises
    ------
    Interrupted
        A fit was interrupted (in a worker process that caught the Ctrl-C, or in
        this one): its result is not that of a complete fit.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    if any(_is_interruption(m) for m in messages):
        raise Interrupted
    _raise_if_interrupted()
    return result, _for_the_command_line(messages)


def _compare(estimators, X, y, cv, args, meta):
    """The comparison's records and the distinct warnings of its fits.

    Raises
    ------
    Interrupted
        A fit was interrupted (in a worker process that caught the Ctrl-C): its
        score is not that of a complete fit.
    InputError
        Every fit failed.
    """
    from .model_selection import compare_estimators

    records, messages = _fitting(
        compare_estimators, estimators, X, y, ranks=args.ranks, cv=cv,
        n_jobs=args.n_jobs, verbose=args.verbose, as_frame=False, **(meta or {}))
    for record in records:
        # Given the trials' places, TCA and PCA still infer every parameter of a
        # held-out trial from its held-in neurons (see _prepare).
        if record["estimator"].endswith("(co-smoothing)"):
            record["score_name"] = record["score_name"].replace("predicting",
                                                                "co-smoothing")
    if not any(np.isfinite(r["score"]) for r in records):
        failures = [m for m in messages if m.startswith("Fitting ")]
        raise InputError("every fit failed"
                         + (f"; the first: {failures[0]}" if failures else "."))
    return records, messages


def run_selection(X, y, args, title, *, meta=None, extra=None):
    """Cross-validate, print the table, write results.json and rank_selection.png.

    With ``meta`` (``trial_index``, and ``epochs`` and ``inputs`` when known) the
    folds are contiguous blocks of trials scored by the predicting score, and with
    ``args.learning_test`` the two networks' scores on those folds give the
    learning test. The data and options are checked before the first fit; the
    outputs are written only when every fit has finished.
    """
    from .model_selection import rank_selection_summary

    cv, estimators = _prepare(X, y, args, meta)
    _start_workers(args.n_jobs)
    protocol = ("held-out blocks of trials, predicted from their place in the "
                "session" if _held_out_blocks(meta) else "co-smoothing score")
    if getattr(args, "loss", "mse") == "poisson":
        protocol += "; spike counts, Poisson loss, scored in bits per spike"
    print(f"{title}: X of shape {X.shape} (trials x time x neurons).")
    print(f"Cross-validating ranks {args.ranks} of {', '.join(estimators)} with "
          f"{args.cv} folds over trials ({protocol}), n_jobs={args.n_jobs} ...",
          flush=True)
    t0 = time.perf_counter()
    records, messages = _compare(estimators, X, y, cv, args, meta)
    # compare_estimators reports each distinct warning of the fits once.
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    summary = rank_selection_summary(records)
    print()
    print(summary.text)
    print()
    for name in estimators:
        if name in summary.best_rank:
            print(f"{name}: best rank {summary.best_rank[name]}, "
                  f"one-standard-error rank {summary.one_se_rank[name]}")
    learning = None
    if _held_out_blocks(meta) and getattr(args, "learning_test", False):
        learning = _learning_test(records, cv, X, y)
    elapsed = time.perf_counter() - t0
    out = Path(args.out)
    payload = {
        "title": title, "shape": list(X.shape), "ranks": args.ranks, "cv": repr(cv),
        "score": summary.score_name, "seconds": elapsed,
        "best_rank": summary.best_rank, "one_se_rank": summary.one_se_rank,
        "references": summary.references, "table": summary.table,
        "learning_test": learning, "folds": records, **(extra or {}),
    }
    write_outputs(out, {"rank_selection.png": _figure_png(summary, title, learning),
                        "results.json": strict_json(payload)},
                  done=f"({elapsed:.0f} s)")
    return summary


def _learning_test(records, cv, X, y):
    """The learning test on the comparison's own folds; printed and returned.

    Both networks were fitted on the same folds, so their per-fold scores at one
    rank are the learning test's (:func:`~sklearn_ltr.model_selection.
    paired_comparison`). The rank is where the two networks' mean score is best
    (``model_selection._learning_test_rank``): a choice that favours neither. Its
    error rates, chosen from the same folds, are measured in doc/learning_test.rst.
    """
    from .model_selection import _learning_test_rank, paired_comparison

    names = ("LowTensorRankRNN", "LowRankRNN")
    rank, pairs = _learning_test_rank(records, names)
    if rank is None:
        print("\nLearning test skipped: it needs both networks (--estimators ltr lr).")
        return None
    splits = list(cv.split(X, y))
    res = paired_comparison(*pairs[rank], splits, names=names)
    return _report_learning(res, rank, " (the best rank of both networks together)")


def _report_learning(res, rank, why=""):
    """Print the learning test's result (a ``paired_comparison``); as a dict."""
    print(f"\nLearning test at rank {rank}{why}: LowTensorRankRNN minus LowRankRNN "
          f"on the same held-out blocks = {res.difference:+.4f} +/- {res.se:.4f} "
          f"(per fold: {', '.join(f'{d:+.4f}' for d in res.per_fold)}); one-sided "
          f"p = {res.pvalue:.3g} ({res.method}).")
    verdict = ("connectivity changed over the session" if res.pvalue < 0.05 else
               "no evidence that connectivity changed beyond a fixed network")
    print(f"At p < 0.05: {verdict}.")
    return {"rank": int(rank), "difference": res.difference, "se": res.se,
            "statistic": res.statistic, "pvalue": res.pvalue,
            "per_fold": res.per_fold.tolist(),
            "scores": {k: v.tolist() for k, v in res.scores.items()},
            "n_train": res.n_train, "n_test": res.n_test, "method": res.method}


# --------------------------------------------------------------------------- #
# writing the outputs
# --------------------------------------------------------------------------- #
def _jsonable(obj):
    """``obj`` with numpy values as Python ones and NaN and infinities as None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def strict_json(payload):
    """``payload`` as strict JSON: ``null`` where a number is NaN or infinite.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.__main__ import strict_json
    >>> strict_json({"score": np.float64("nan"), "rank": np.int64(2)}).split()
    ['{', '"score":', 'null,', '"rank":', '2', '}']
    """
    return json.dumps(_jsonable(payload), indent=2, allow_nan=False)


@contextlib.contextmanager
def _on_sigint(handler):
    """Ctrl-C handled by ``handler`` (or ignored: ``signal.SIG_IGN``) in the block.

    Nothing changes outside the main thread, where signals are not ours to handle.
    """
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupts_ignored():
    """Ctrl-C is ignored, for a moment (renaming finished files, starting workers)."""
    return _on_sigint(signal.SIG_IGN)


def _umask():
    """The process's file-creation mask (set to a value, read, and restored)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _write_temporary(path, data):
    """``data`` in a new hidden file beside ``path``, flushed to disk; its path."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                # mkstemp makes a file only its owner may read; the outputs get the
                # permissions of any new file (0o666 less the umask), as open's.
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_outputs(out, files, *, done=""):
    """Write ``{name: str or bytes}`` into the folder ``out`` atomically.

    Every file is first written in full to a temporary file in ``out`` and flushed
    to disk; only then are they renamed over their names (``os.replace``, atomic).
    A failure on the way (a full disk, Ctrl-C) removes the temporary files and
    leaves the earlier outputs as they were; no reader ever sees a partial file.
    """
    out.mkdir(parents=True, exist_ok=True)
    temporary = {}
    try:
        for name, data in files.items():
            if isinstance(data, str):
                data = data.encode("utf-8")
            temporary[name] = _write_temporary(out / name, data)
        _raise_if_interrupted()
        with _interrupts_ignored():
            for name, tmp in temporary.items():
                os.replace(tmp, out / name)
            if os.name == "posix":  # the renames themselves, to disk
                fd = os.open(out, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            print(f"\nWrote {' and '.join(str(out / n) for n in files)} {done}"
                  .rstrip() + ".")
    finally:
        for tmp in temporary.values():
            Path(tmp).unlink(missing_ok=True)


def _pyplot():
    """``matplotlib.pyplot``, drawing into files (no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig):
    """The figure as PNG bytes; closed."""
    png = io.BytesIO()
    fig.tight_layout()
    fig.savefig(png, format="png", dpi=120)
    _pyplot().close(fig)
    return png.getvalue()


def _figure_png(summary, title, learning=None):
    """The rank selection, and beside it the learning test's folds: PNG bytes."""
    from .plotting import plot_rank_selection

    plt = _pyplot()
    if learning is None:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        plot_rank_selection(summary, ax=ax)
    else:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2),
                                      gridspec_kw={"width_ratios": [1.4, 1]})
        # Scores near 1 stay apart as 1 - R^2 on a log scale.
        scale = "residual" if summary.score_name.endswith("R²") else "linear"
        plot_rank_selection(summary, ax=ax, scale=scale)
        _plot_learning(ax2, learning)
    # A long title (a file's name and its binning) is wrapped to its axes' width.
    ax.set_title(textwrap.fill(title, 55 if learning is None else 70), fontsize=10)
    return _png(fig)


def _learning_figure_png(learning, factors, epochs, title):
    """The learning test's folds, and the trial factors fitted on all trials."""
    from .plotting import plot_trial_factors

    fig, (ax, ax2) = _pyplot().subplots(1, 2, figsize=(11, 4.2),
                                        gridspec_kw={"width_ratios": [1, 1.4]})
    _plot_learning(ax, learning)
    plot_trial_factors(factors, epochs=epochs, ax=ax2)
    ax2.set_xlabel("trial (in session order)")
    ax2.set_title(f"trial factors of LowTensorRankRNN (rank {factors.shape[1]}) "
                  f"fitted on all trials", fontsize=10)
    fig.suptitle(textwrap.fill(title, 110), fontsize=11)
    return _png(fig)


def _plot_learning(ax, learning):
    """Per-fold differences LowTensorRankRNN - LowRankRNN, with mean and SE."""
    diffs = np.asarray(learning["per_fold"])
    folds = np.arange(1, len(diffs) + 1)
    ax.bar(folds, diffs, color=np.where(diffs > 0, "C0", "C3"), alpha=0.8)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axhline(learning["difference"], color="0.3", ls="--", lw=1.2,
               label=f"mean {learning['difference']:+.4f} ± {learning['se']:.4f}")
    ax.axhspan(learning["difference"] - learning["se"],
               learning["difference"] + learning["se"], color="0.3", alpha=0.15,
               lw=0, label="± standard error (corrected)")
    ax.set_xticks(folds)
    ax.set_xlabel("fold (held-out blocks of trials)")
    ax.set_ylabel("score of LowTensorRankRNN minus LowRankRNN")
    ax.set_title(f"learning test at rank {learning['rank']}: one-sided "
                 f"p = {learning['pvalue']:.2g}", fontsize=10)
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- #
# subcommands
# --------------------------------------------------------------------------- #
def _session_arrays(path, args, n_trials):
    """Places in the session from the recordings file, or None.

    None when the folds are not blocks of trials (no ``--blocks``,
    ``--trial-index-key`` or ``--epoch-key``).
    """
    keys = {"trial_index": args.trial_index_key, "epochs": args.epoch_key}
    if not (args.blocks or any(keys.values())):
        return None
    arrays = {}
    if any(keys.values()):
        if Path(path).suffix.lower() != ".npz":
            raise InputError("--trial-index-key and --epoch-key read arrays of an "
                             ".npz file.")
        with np.load(path, allow_pickle=False) as f:
            for name, key in keys.items():
                if key is None:
                    continue
                if key not in f.files:
                    raise InputError(f"{path} has no array {key!r}; it has "
                                     f"{sorted(f.files)}.")
                arrays[name] = np.ravel(f[key])
    arrays.setdefault("trial_index", np.arange(n_trials, dtype=float))
    for name, values in arrays.items():
        if len(values) != n_trials:
            raise InputError(f"{name} has {len(values)} values but the data have "
                             f"{n_trials} trials.")
    return arrays


def _trials_column(data, column, flag, path):
    """A column of the trials table read by ``read_nwb``, or None."""
    if column is None:
        return None
    if column not in data.trials:
        raise InputError(
            f"{flag} {column}: the trials table of {path} has no column "
            f"{column!r} with one value per trial; it has {list(data.trials)}.")
    values = data.trials[column]
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError(
            f"{flag} {column}: {np.sum(~np.isfinite(values))} of the {values.size} "
            f"trials have no value (NaN) in column {column!r}; every trial needs "
            f"one.")
    return values


def _load_nwb(args):
    """Spike counts of an NWB file (``read_nwb``), labels and places in the session."""
    from .io import read_nwb

    path = Path(args.data)
    how = (f"--align {args.align} --window {args.window[0]:g} {args.window[1]:g} "
           f"--bin {args.bin_size:g}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            data = read_nwb(path, align=args.align, window=tuple(args.window),
                            bin_size=args.bin_size)
        except ValueError as exc:
            raise InputError(f"{how}: {exc}") from None
    y = _trials_column(data, args.condition_column, "--condition-column", path)
    epochs = _trials_column(data, args.epoch_column, "--epoch-column", path)
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"warning: {' '.join(message.split())}", file=sys.stderr)
    _describe_binning(path, data.X.shape, args)
    # The trials' rows of the trials table are their places in the session.
    meta = {"trial_index": data.trial_index.astype(float)}
    if epochs is not None:
        meta["epochs"] = epochs
    source = {"align": args.align, "window": list(args.window),
              "bin_size": args.bin_size, "condition_column": args.condition_column,
              "epoch_column": args.epoch_column,
              "trial_ids": data.trial_ids.tolist(),
              "unit_ids": data.unit_ids.tolist()}
    return data.X.astype(float), y, meta, source


def _describe_binning(path, shape, args):
    """Say how an NWB file's spikes were binned, and smoothed when not asked."""
    n_trials, n_bins, n_units = shape
    print(f"{path.name}: {n_units} units binned in {n_bins} bins of "
          f"{args.bin_size:g} s from {args.window[0]:g} to {args.window[1]:g} s "
          f"around {args.align}, {n_trials} trials.")
    if getattr(args, "default_smooth", False):
        print(f"Spike counts smoothed along time by a Gaussian of "
              f"{NWB_SMOOTH_SECONDS * 1000:g} ms ({args.smooth:g} bins), the "
              f"default for NWB counts with --loss mse: --smooth 0 for none, or "
              f"--loss poisson to fit the counts themselves.")


def load_data(args):
    """The recordings a subcommand's arguments name.

    Returns
    -------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
    y : ndarray of shape (n_trials,) or None
        Condition labels.
    meta : dict or None
        ``trial_index`` and ``epochs`` (when known) of the trials: always for an
        NWB file (its trials table orders the trials), for an array file with
        ``--blocks``, ``--trial-index-key`` or ``--epoch-key``; None otherwise.
    source : dict
        What to record of where the data came from (NWB files: the binning).
    """
    if _is_nwb(args.data):
        return _load_nwb(args)
    X, y = load_recordings(args.data, key=args.key, y_key=args.y_key,
                           axis_order=args.axis_order)
    return X, y, _session_arrays(args.data, args, X.shape[0]), {}


def _title(args):
    """The data's name for the printout and the figure: the file, how binned."""
    title = Path(args.data).name
    if _is_nwb(args.data):
        title += f", {args.bin_size * 1000:g} ms bins around {args.align}"
    if args.smooth:
        title += f", smoothed (σ = {args.smooth:g} bins)"
    return title


def select_rank(args):
    """The ``select-rank`` subcommand: rank selection on a file of recordings."""
    X, y, meta, source = load_data(args)
    meta = with_condition_inputs(X, y, meta, args)
    run_selection(X, y, args, _title(args), meta=meta,
                  extra={"data": str(args.data), "smooth": args.smooth,
                         "zscore": args.zscore, "loss": args.loss,
                         "condition_inputs": args.condition_inputs,
                         "tol": args.tol, "exact_readout": _exact_readout(args),
                         "solver": args.solver,
                         "drift_length_scale": args.drift_length_scale,
                         "drift_epochs": args.drift_epochs, **source})
    return 0


def learning_test_command(args):
    """The ``learning-test`` subcommand: the learning test on a file of recordings.

    :func:`~sklearn_ltr.model_selection.learning_test` on the folds and networks
    ``select-rank`` would use at ``--rank``, the condition averages on the same
    folds, and ``LowTensorRankRNN`` fitted on all trials for its trial factors.
    """
    from sklearn.base import clone

    from .model_selection import learning_test, rank_selection_summary

    X, y, meta, source = load_data(args)
    meta = with_condition_inputs(X, y, meta, args)
    title = _title(args)
    cv, estimators = _prepare(X, y, args, meta)
    network = final_step(estimators["LowTensorRankRNN"])
    _start_workers(args.n_jobs)
    print(f"{title}: X of shape {X.shape} (trials x time x neurons).")
    print(f"Learning test at rank {args.rank}: LowTensorRankRNN and LowRankRNN on "
          f"the same {args.cv} folds of held-out blocks of trials ({cv!r}), each "
          f"trial predicted from its condition and its place in the session, beside "
          f"the condition averages; n_jobs={args.n_jobs} ...", flush=True)
    t0 = time.perf_counter()
    # The smoothing of the pipelines, once: it is within each trial, so smoothing
    # all trials before the folds are drawn is the same.
    X_fit = _smoothed(X, args.smooth)
    params = {k: v for k, v in network.get_params().items()
              if k not in ("rank", "random_state")}
    res, messages = _fitting(
        learning_test, X_fit, y, rank=args.rank, cv=cv, estimator_params=params,
        n_jobs=args.n_jobs, random_state=args.random_state, verbose=args.verbose,
        **meta)
    references = {name: est for name, est in estimators.items()
                  if name.startswith("ConditionAverage")}
    records, more = _compare(references, X, y, cv, args, meta)
    if args.verbose:
        print(f"fitting LowTensorRankRNN on all {X.shape[0]} trials, for its trial "
              f"factors ...", file=sys.stderr, flush=True)
    fitted, last = _fitting(clone(network).set_params(rank=args.rank).fit, X_fit, y,
                            **meta)
    for message in dict.fromkeys(messages + more + last):
        print(f"warning: {message}", file=sys.stderr)
    summary = rank_selection_summary(
        [{"estimator": name, "rank": args.rank, "fold": fold, "score": score,
          "score_name": res.score_name}
         for name, scores in res.scores.items() for fold, score in
         enumerate(scores)] + records)
    _print_scores(summary, args.rank)
    learning = _report_learning(res, args.rank)
    factors = fitted.trial_factors_
    epochs = _epoch_labels(meta.get("epochs"), args)
    _print_factors(factors, epochs)
    elapsed = time.perf_counter() - t0
    payload = {
        "title": title, "data": str(args.data), "shape": list(X.shape),
        "rank": args.rank, "cv": repr(cv), "score": res.score_name,
        "seconds": elapsed, "learning_test": learning,
        "scores": {r["estimator"]: {k: r[k] for k in ("mean", "se", "n_splits")}
                   for r in summary.table},
        "references": summary.references, "reference_folds": records,
        "trial_factors": factors, "trial_index": meta["trial_index"],
        "epochs": meta.get("epochs"), "loss": args.loss, "smooth": args.smooth,
        "condition_inputs": args.condition_inputs,
        "estimator_params": params, "random_state": args.random_state, **source}
    write_outputs(Path(args.out), {
        "learning_test.png": _learning_figure_png(learning, factors, epochs, title),
        "learning_test.json": strict_json(payload)}, done=f"({elapsed:.0f} s)")
    return 0


def _smoothed(X, sigma):
    """``X`` smoothed along time (a Gaussian of ``sigma`` bins), or ``X``."""
    from .preprocessing import GaussianSmoother

    return GaussianSmoother(sigma=sigma).fit_transform(X) if sigma else X


def _print_scores(summary, rank):
    """The networks' and the references' mean scores over the folds."""
    print(f"\n{summary.score_name} of the held-out blocks, mean +/- standard error "
          f"over folds:")
    rows = [(f"{r['estimator']} (rank {rank})", r) for r in summary.table]
    rows += list(summary.references.items())
    for name, r in rows:
        print(f"  {name:<30} {r['mean']:.4f} +/- {r['se']:.4f}")
    best = max((r["mean"] for r in summary.references.values()), default=-np.inf)
    if all(r["mean"] <= best for r in summary.table):
        print("Neither network predicts the held-out trials better than a condition "
              "average: they explain nothing the average does not.")


def _print_factors(factors, epochs):
    """The mean trial factors of each epoch (of all trials without epochs)."""
    print(f"\nTrial factors of LowTensorRankRNN fitted on all {len(factors)} trials "
          f"(drawn in the figure), mean of each component:")
    labels = np.zeros(len(factors), dtype=int) if epochs is None else epochs
    for label in dict.fromkeys(labels.tolist()):
        means = factors[labels == label].mean(axis=0)
        print(f"  {'all trials' if epochs is None else label}: "
              f"{', '.join(f'{m:+.3f}' for m in means)}")


def _epoch_labels(epochs, args):
    """Epoch labels for the figure's legend, named after their array or column."""
    if epochs is None:
        return None
    name = args.epoch_key or args.epoch_column
    return np.array([f"{name} {label}" for label in epochs.tolist()])


# The demo's session: 40 units, 30 bins, 112 trials, learning twice as fast as the
# default session of make_motor_learning (its perturbation is shorter), so that the
# demo runs in under two minutes on 2 cores; --full runs that default session.
DEMO_SESSION = {"n_units": 40, "n_timepoints": 30, "n_baseline": 2,
                "n_perturbation": 8, "n_washout": 4, "learning_rate": 0.01}
# Ranks and folds of each session, unless --ranks and --cv are given.
DEMO_RANKS = {"small": [2, 4, 6], "full": [2, 4, 6, 8]}
DEMO_FOLDS = {"small": 4, "full": 5}


def _demo_session(args):
    """The demo's session, 'small' or 'full' (``--full``); sets its ranks and folds.

    ``--ranks`` and ``--cv``, when given, are kept.
    """
    session = "full" if args.full else "small"
    if args.ranks is None:
        args.ranks = list(DEMO_RANKS[session])
    if args.cv is None:
        args.cv = DEMO_FOLDS[session]
    return session


def demo(args):
    """The ``demo`` subcommand: rank selection on the built-in dataset."""
    from .analysis import tensor_rank_curve
    from .datasets import make_motor_learning

    print("Built-in dataset: a recurrent network trained on centre-out reaching, "
          "recorded while it adapts to a curl force field and back (baseline, "
          "perturbation, washout; one gradient step per trial) ...", flush=True)
    data = make_motor_learning(**({} if args.full else DEMO_SESSION),
                               random_state=args.random_state)
    # The ground truth the cross-validated rank is compared with: how many CP
    # components the network's weight changes over the session need.
    curve = tensor_rank_curve(data.weights - data.weights[0], args.ranks, n_init=2,
                              random_state=args.random_state)
    print("Ground truth, CP variance explained of its weight changes W - W[0]: "
          + ", ".join(f"rank {r}: {v:.3f}" for r, v in
                      zip(curve.ranks, curve.variance_explained)))
    args.tau = data.tau_bins
    # Each held-out trial is predicted from its target (y), the task's inputs and
    # its place in the session: trial number and epoch.
    meta = {"trial_index": np.arange(len(data.X), dtype=float),
            "epochs": data.epoch, "inputs": data.inputs}
    run_selection(
        data.X, data.y, args, "Task-trained RNN adapting to a curl field",
        meta=meta,
        extra={"dataset": "make_motor_learning",
               "weight_change_cp_variance_explained": dict(zip(
                   curve.ranks.tolist(), curve.variance_explained.tolist()))})
    return 0



def _length_or_none(text):
    """A length scale in trials, or None for 'none' (an argparse type)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of trials or none, got {text!r}") from None


def _fit_options(p, *, n_units, max_iter=1000, trial_length_scale=10.0):
    """Folds, the networks' size and training, parallelism, seed and progress."""
    p.add_argument("--cv", type=int, default=5, help="number of folds over trials")
    p.add_argument("--n-units", type=int, default=n_units,
                   help="units of the fitted RNNs (default: %(default)s)")
    p.add_argument("--max-iter", type=int, default=max_iter,
                   help="iterations per RNN fit (default: %(default)s)")
    p.add_argument("--trial-length-scale", type=float, default=trial_length_scale,
                   help="length scale, in trials, of the prior of LowTensorRankRNN's "
                   "trial factors (default: %(default)s)")
    p.add_argument("--tol", type=float, default=5e-3,
                   help="relative decrease of the loss below which an RNN fit has "
                   "converged, after 10 iterations without it with L-BFGS and 50 "
                   "with Adam (default: %(default)s)")
    p.add_argument("--drift-length-scale", type=_length_or_none, default=50.0,
                   metavar="TRIALS",
                   help="length scale, in trials, of the slow drift of each "
                   "recorded neuron's offset that the RNNs fit as a nuisance; none: "
                   "no drift (default: %(default)s)")
    p.add_argument("--drift-epochs", action="store_true",
                   help="the drift restarts at every epoch (--epoch-key, "
                   "--epoch-column): each neuron's offset may also jump between "
                   "epochs, in both RNNs alike")
    p.add_argument("--stepped-readout", action="store_true",
                   help="step the RNNs' readout with the optimiser, as the rest "
                   "(exact_readout=False), instead of setting it by least squares "
                   "before every step with a cross-validated ridge, which is the "
                   "default for the squared error (see the fitting page)")
    p.add_argument("--solver", choices=["auto", "adam", "lbfgs"], default="auto",
                   help="the RNNs' optimiser: auto takes L-BFGS where the readout "
                   "is set by least squares and Adam elsewhere (default: "
                   "%(default)s)")
    p.add_argument("--n-jobs", type=int, default=-1,
                   help="parallel fits (default: all cores)")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1,
                   help="0: quiet; 1: progress on stderr, the fits done out of "
                   "all, elapsed time and time left (default: %(default)s)")


def _common_options(p, *, estimators, n_units, ranks=(1, 2, 3, 4, 5), max_iter=1000,
                    trial_length_scale=10.0):
    p.add_argument("--ranks", type=int, nargs="+",
                   default=None if ranks is None else list(ranks),
                   help="ranks to compare (default: "
                   + ("%(default)s)" if ranks is not None else "the session's)"))
    p.add_argument("--estimators", nargs="+", choices=sorted(ESTIMATORS),
                   default=None, help="ltr: LowTensorRankRNN, lr: LowRankRNN, "
                   "tca: TCA, pca: TrialPCA, avg: ConditionAverage, avg-smooth: "
                   "ConditionAverage weighted over the session "
                   f"(default: {' '.join(estimators)})")
    p.set_defaults(default_estimators=list(estimators))
    _fit_options(p, n_units=n_units, max_iter=max_iter,
                 trial_length_scale=trial_length_scale)
    p.add_argument("--no-learning-test", dest="learning_test",
                   action="store_false",
                   help="skip the learning test (with held-out blocks of trials)")


def _data_options(p):
    """The data file: arrays (.npz, .npy, .mat) or an NWB file and its binning."""
    p.add_argument("data", help=".npz (array 'X', optional labels 'y'), .npy, .mat, "
                   "or .nwb (spike times, binned with --align, --window and --bin)")
    arrays = p.add_argument_group("arrays (.npz, .npy, .mat)")
    arrays.add_argument("--key", default=None,
                        help="name of the data array in the file")
    arrays.add_argument("--y-key", default=None,
                        help="name of the condition labels (default: 'y' when the "
                        "file has it)")
    arrays.add_argument("--axis-order", nargs=3, choices=AXES, default=list(AXES),
                        metavar="AXIS", help="axis order in the file, e.g. "
                        "'time trial neuron' (default: trial time neuron)")
    arrays.add_argument("--trial-index-key", default=None,
                        help="array of the trials' numbers in the session (.npz)")
    arrays.add_argument("--epoch-key", default=None,
                        help="array of the trials' epoch labels, e.g. blocks (.npz)")
    nwb = p.add_argument_group(
        "NWB files (.nwb: the units' spike times and a trials table; needs pynwb)",
        "Spike counts in a window around an event of each trial, trials in the "
        "order of the trials table (their places in the session).")
    nwb.add_argument("--align", metavar="COLUMN",
                     help="column of the trials table with each trial's alignment "
                     "time, e.g. move_onset_time (required for .nwb)")
    nwb.add_argument("--window", type=float, nargs=2, metavar=("START", "STOP"),
                     help="seconds around the alignment, e.g. -0.25 0.45: a whole "
                     "number of bins inside every trial (required for .nwb)")
    nwb.add_argument("--bin", dest="bin_size", type=float, metavar="SECONDS",
                     help="bin width in seconds, e.g. 0.02 (required for .nwb)")
    nwb.add_argument("--condition-column", metavar="COLUMN",
                     help="column of the trials table with condition labels")
    nwb.add_argument("--epoch-column", metavar="COLUMN",
                     help="column of the trials table with epoch labels")


def _model_options(p, *, out="sklearn_ltr_results"):
    """Loss, smoothing, the networks' time constant, and the output folder."""
    p.add_argument("--loss", choices=("mse", "poisson"), default="mse",
                   help="mse: squared error, scored by R²; poisson: spike counts, "
                   "fitted with the Poisson loss and scored in bits per spike (the "
                   "networks and condition averages; default: %(default)s)")
    p.add_argument("--smooth", type=float, default=None, metavar="SIGMA",
                   help="Gaussian smoothing along time, in bins (0: none; default: "
                   f"0, and {NWB_SMOOTH_SECONDS * 1000:g} ms for the counts of an "
                   ".nwb file with --loss mse)")
    p.add_argument("--out", default=out, help="output folder (default: %(default)s)")
    p.add_argument("--tau", type=float, default=2.0,
                   help="time constant of the fitted RNNs' units, in time bins "
                   "(default: %(default)s)")
    p.add_argument("--condition-inputs", action="store_true",
                   help="give the RNNs each trial's condition as an input, a "
                   "one-hot on every time bin (a task cue, such as the target the "
                   "animal sees; needs condition labels). TCA and TrialPCA take no "
                   "inputs")


def _add_select_rank(sub):
    p = sub.add_parser(
        "select-rank", help="cross-validated rank selection on a file of recordings",
        description="Cross-validated rank selection on recordings: compares the "
        "models on the same folds of trials, prints a table and writes "
        "OUT/results.json and OUT/rank_selection.png.")
    _data_options(p)
    _model_options(p)
    p.add_argument("--zscore", action="store_true",
                   help="z-score each neuron (fitted on the training folds)")
    p.add_argument("--blocks", action="store_true",
                   help="hold out contiguous blocks of trials and score them by "
                   "prediction from their place in the session (implied by "
                   "--trial-index-key, --epoch-key and .nwb files); trials in "
                   "session order")
    _common_options(p, estimators=["ltr", "lr", "tca", "pca", "avg", "avg-smooth"],
                    n_units=100)
    p.set_defaults(func=select_rank)


def _add_learning_test(sub):
    p = sub.add_parser(
        "learning-test", help="did connectivity change over the session? The "
        "learning test on a file of recordings",
        description="The learning test (sklearn_ltr.model_selection.learning_test): "
        "LowTensorRankRNN and LowRankRNN of the same rank fitted on the same folds "
        "of held-out blocks of trials, each held-out trial predicted from its "
        "condition and its place in the session, beside the condition averages; "
        "prints the result and writes OUT/learning_test.json and "
        "OUT/learning_test.png. Trials must be in session order.")
    _data_options(p)
    p.add_argument("--rank", type=int, required=True,
                   help="rank of both networks (choose it with select-rank)")
    _model_options(p)
    _fit_options(p, n_units=100)
    p.set_defaults(func=learning_test_command, blocks=True, zscore=False,
                   estimators=["ltr", "lr", "avg", "avg-smooth"])


def _add_demo(sub):
    p = sub.add_parser("demo", help="cross-validated rank selection on the built-in "
                       "dataset: prints a table and writes a figure")
    p.add_argument("--out", default="sklearn_ltr_demo", help="output folder")
    p.add_argument("--full", action="store_true",
                   help="the default session of make_motor_learning (100 units, 50 "
                   "bins, 280 trials; ranks 2 4 6 8 and 5 folds unless given; about "
                   "12 minutes on 2 cores) instead of a smaller one (40 units, 30 "
                   "bins, 112 trials; ranks 2 4 6 and 4 folds; under 2 minutes)")
    # The sessions adapt over about five blocks of eight targets, the time scale of
    # the trial factors' prior.
    _common_options(p, estimators=["ltr", "lr", "avg", "avg-smooth"], n_units=100,
                    ranks=None, max_iter=3000, trial_length_scale=40.0)
    # The RNNs take the time constant of the simulated network; the session sets
    # the default ranks and folds (DEMO_RANKS, DEMO_FOLDS).
    p.set_defaults(func=demo, smooth=0.0, zscore=False, tau=None, loss="mse",
                   cv=None)


def build_parser():
    """The command line's parser: one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_ltr",
        description="Low-tensor-rank RNN models of neural activity over learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_select_rank(sub)
    _add_learning_test(sub)
    _add_demo(sub)
    return parser


@contextlib.contextmanager
def _stop_on_interrupt():
    """Ctrl-C raises :class:`Interrupted`; a second one exits at once."""
    def again(signum, frame):
        os._exit(EXIT_INTERRUPTED)

    def stop(signum, frame):
        _interrupt_requested.set()
        # While the run unwinds (the workers are stopped), a second Ctrl-C
        # does not wait for it.
        signal.signal(signal.SIGINT, again)
        raise Interrupted

    _interrupt_requested.clear()
    try:
        with _on_sigint(stop):
            yield
    finally:
        _interrupt_requested.clear()


def main(argv=None):
    """Run the command line; return the exit status.

    0 when the run finished, 1 after an ``error:`` line on stderr, 130 when
    interrupted (one ``interrupted:`` line; nothing written).
    """
    args = build_parser().parse_args(argv)
    with _stop_on_interrupt():
        try:
            check_options(args)
            return args.func(args)
        except Interrupted:
            print("interrupted: the run stopped before it finished; nothing was "
                  "written (earlier results are unchanged).", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (ValueError, OSError, ImportError, MemoryError) as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
