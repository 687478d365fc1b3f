"""Validation of trials, condition labels and external inputs.

Every message says what was wrong, what was expected, and how to fix it.
"""

import warnings

import numpy as np
import torch

__all__ = [
    "MissingDataWarning", "MOSTLY_MISSING", "check_trials_array", "check_counts",
    "unit_scale",
    "check_training_trials", "check_conditions", "check_known_conditions",
    "check_inputs", "check_session",
]


def _describe(a):
    return f"{a.ndim}D array of shape {a.shape}"


def _unmask(X, name):
    """A masked array as a float array with its masked entries missing (NaN)."""
    if X.dtype.kind in "Mm":
        raise TypeError(f"{name} must hold numbers, got a masked array of dtype "
                        f"{X.dtype}.")
    try:
        data = np.ma.getdata(X).astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold numbers, got a masked array of dtype "
                        f"{X.dtype}.") from None
    return np.where(np.ma.getmaskarray(X), np.nan, data)


def unit_scale(X, axis=None):
    """The power of two nearest below the largest magnitude of the entries of X.

    Computations on ``X / unit_scale(X)``, whose entries lie within [-2, 2], are
    unit-free: dividing by a power of two only shifts exponents, so it is exact,
    and results scaled back equal those on X bit for bit whenever the
    computations on X itself neither overflow nor underflow. They do at both ends
    of the float range: squares of values below 1e-154 underflow to 0 (a variance
    of 0 reads as constant data), and of values above 1e154 overflow to inf.

    Parameters
    ----------
    X : ndarray
        Data; NaN entries are ignored.
    axis : int or tuple of int, optional
        Axes over which to take the largest magnitude; None: all of them.

    Returns
    -------
    scale : float or ndarray
        Powers of two (1.0 where there is no finite non-zero entry), with the axes
        of ``axis`` kept (of size 1) when it is given.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr._validation import unit_scale
    >>> unit_scale(np.array([3.0, -5.0, np.nan])), unit_scale(np.zeros(2))
    (4.0, 1.0)
    >>> x = np.array([3e-200, 1e-200])
    >>> float(np.var(x)), float(np.var(x / unit_scale(x)) > 0)
    (0.0, 1.0)
    """
    X = np.asarray(X, dtype=np.float64)
    keep = axis is not None
    largest = np.fmax.reduce(np.abs(X), axis=axis, keepdims=keep, initial=0.0)
    exponent = np.frexp(largest)[1]
    usable = np.isfinite(largest) & (largest > 0)
    scale = np.where(usable, np.ldexp(1.0, np.where(usable, exponent - 1, 0)), 1.0)
    return scale if keep else float(scale)


def check_counts(X, *, name="X"):
    """Refuse negative values in data fitted or scored as Poisson counts.

    Parameters
    ----------
    X : ndarray
        Validated data (NaN marks missing entries).
    name : str
        Name used in the error message.

    Raises
    ------
    ValueError
        When an observed entry is negative.
    """
    if np.nanmin(X, initial=0.0) < 0:
        where = tuple(int(i) for i in np.argwhere(X < 0)[0])
        raise ValueError(
            f"loss='poisson' needs non-negative counts, but {name} has negative "
            f"values (first at index {where}); use loss='mse' for standardised "
            f"data.")


def check_trials_array(X, *, name="X", allow_nan=True, min_trials=1, min_timepoints=1,
                       dtype=np.float64, what="(n_trials, n_timepoints, n_neurons)"):
    """Validate a 3D array of trials and return it as a float array.

    Parameters
    ----------
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Data. NaN marks a missing entry when ``allow_nan`` is True, and so does a
        masked entry of a ``numpy.ma`` masked array.
    name : str
        Name used in error messages.
    allow_nan : bool
        Whether NaN entries are accepted. Infinite values are always rejected.
    min_trials, min_timepoints : int
        Smallest sizes accepted along the first two axes.
    dtype : numpy dtype
        Floating dtype of the returned array.

    Returns
    -------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)

    Raises
    ------
    ValueError
        Wrong dimensionality, empty axes, infinite or (when not allowed) NaN values,
        values beyond +-1e300 (``MAX_MAGNITUDE``), ragged trials, complex values.
    TypeError
        Non-numeric data, dates or durations (datetime64, timedelta64).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.base import check_trials_array
    >>> check_trials_array(np.zeros((4, 10, 3))).shape
    (4, 10, 3)
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if isinstance(X, np.ma.MaskedArray):
        X = _unmask(X, name)
    if isinstance(X, (list, tuple)):
        try:
            shapes = {np.shape(x) for x in X}
        except ValueError:  # a trial that is itself ragged
            raise ValueError(
                f"{name} holds a trial whose time points have different numbers of "
                f"neurons; every trial must be a regular (n_timepoints, n_neurons) "
                f"array (pad with NaN: missing entries are allowed).") from None
        if len(shapes) > 1:
            raise ValueError(
                f"{name} is a list of trials with different shapes {sorted(shapes)[:3]}"
                f"...; trials must share n_timepoints and n_neurons. Crop or pad them "
                f"to a common length (pad with NaN: missing entries are allowed).")
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(
            f"{name} could not be converted to a regular array ({exc}); trials must "
            f"share n_timepoints and n_neurons (pad with NaN).") from None
    if arr.dtype.kind in "Mm":
        raise TypeError(
            f"{name} holds {arr.dtype} values (dates or durations), not measurements; "
            f"convert them to numbers in a unit of your choice, e.g. "
            f"{name} / np.timedelta64(1, 's').")
    if arr.dtype == object or arr.dtype.kind in "USV":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must hold numbers, got an array of dtype {arr.dtype}. Convert "
                f"it with np.asarray({name}, dtype=float).") from None
    if arr.dtype.kind == "c":
        raise ValueError(
            f"{name} is complex ({arr.dtype}); pass real values (e.g. np.abs({name}) "
            f"or {name}.real).")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}.")
    if arr.ndim != 3:
        hint = ""
        if arr.ndim == 2:
            hint = (f" For a single trial use {name}[np.newaxis]; for a 2D "
                    f"(n_samples, n_neurons) recording, reshape it into trials.")
        raise ValueError(
            f"Expected {name} to be a 3D array of shape {what}, got a "
            f"{_describe(arr)}.{hint}")
    n_trials, n_timepoints, n_neurons = arr.shape
    if n_trials < min_trials:
        raise ValueError(
            f"{name} has {n_trials} trial(s); at least {min_trials} are required.")
    if n_timepoints < min_timepoints:
        raise ValueError(
            f"{name} has {n_timepoints} time point(s) per trial; at least "
            f"{min_timepoints} are required.")
    if n_neurons < 1:
        raise ValueError(f"{name} has 0 neurons (shape {arr.shape}).")
    arr = np.asarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        if np.isinf(arr).any():
            where = tuple(int(i) for i in np.argwhere(np.isinf(arr))[0])
            raise ValueError(
                f"{name} contains infinite values (first at index {where}). "
                f"Replace them, or mark them missing with NaN.")
        if not allow_nan:
            raise ValueError(f"{name} contains NaN, which is not allowed here.")
    largest = np.fmax.reduce(np.abs(arr), axis=None, initial=0.0)
    if largest > MAX_MAGNITUDE:
        raise ValueError(
            f"{name} has values up to {largest:.3g}; values beyond +-{MAX_MAGNITUDE:g} "
            f"leave no room for the sums of a fit before float64 overflows (at "
            f"1.8e308). Divide {name} by a constant (e.g. {name} / {largest:.0e}).")
    return arr


# Largest magnitude accepted in the data: sums over up to 1e8 entries of such values
# stay below float64's largest number (1.8e308).
MAX_MAGNITUDE = 1e300


class MissingDataWarning(UserWarning):
    """Warning issued by ``fit`` when a trial or a neuron is mostly missing (NaN).

    Such a trial's (or neuron's) parameters are fitted from few entries and are
    poorly determined; the fit still ignores every missing entry.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from sklearn_ltr import TrialPCA
    >>> from sklearn_ltr.base import MissingDataWarning
    >>> X = np.random.RandomState(0).standard_normal((6, 10, 4))
    >>> X[0, :8] = np.nan  # trial 0 is 80% missing
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = TrialPCA(rank=1).fit(X)
    >>> any(issubclass(w.category, MissingDataWarning) for w in caught)
    True
    """


# A trial or neuron with more than this fraction of its entries missing is reported
# by a MissingDataWarning at fit.
MOSTLY_MISSING = 0.5


def check_training_trials(X, *, min_trials=2, min_timepoints=1):
    """Validate training trials: :func:`check_trials_array`, no all-NaN trial or neuron.

    A :class:`MissingDataWarning` is issued when a trial or a neuron has more than
    ``MOSTLY_MISSING`` (half) of its entries missing.

    Parameters
    ----------
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Training data; NaN marks a missing entry.
    min_trials, min_timepoints : int
        Smallest sizes accepted along the first two axes.

    Returns
    -------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
    observed : ndarray of bool, same shape
        Where X is not NaN.

    Raises
    ------
    ValueError
        As :func:`check_trials_array`, or when a whole trial or neuron is missing.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from sklearn_ltr.base import check_training_trials
    >>> X = np.ones((3, 4, 2))
    >>> X[0, :3] = np.nan  # trial 0: 6 of its 8 entries missing
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = check_training_trials(X)
    >>> caught[0].category.__name__, "trial 0: 75% missing" in str(caught[0].message)
    ('MissingDataWarning', True)
    """
    X = check_trials_array(X, min_trials=min_trials, min_timepoints=min_timepoints)
    observed = ~np.isnan(X)
    if observed.all():
        return X, observed
    for axes, what in [((1, 2), "trial"), ((0, 1), "neuron")]:
        fraction = 1.0 - observed.mean(axis=axes)
        empty = np.flatnonzero(fraction == 1.0)
        if empty.size:
            raise ValueError(
                f"X has {empty.size} {what}(s) with no observed entry (all NaN), e.g. "
                f"{what} {empty[0]}; drop them before fitting.")
        mostly = np.flatnonzero(fraction > MOSTLY_MISSING)
        if mostly.size:
            worst = mostly[np.argmax(fraction[mostly])]
            warnings.warn(
                f"X has {mostly.size} {what}(s) with more than "
                f"{MOSTLY_MISSING:.0%} of their entries missing (e.g. {what} {worst}: "
                f"{fraction[worst]:.0%} missing); their parameters are poorly "
                f"determined. Drop them, or pass fewer NaN.", MissingDataWarning,
                stacklevel=2)
    return X, observed


def _check_labels(labels, name, what):
    """Labels that can be sorted and compared: no missing label, one kind of value.

    ``np.unique`` and ``np.searchsorted`` sort the labels; an object array that
    mixes kinds (None, str and int) or holds a missing label (None, NaN) would
    fail there with a bare TypeError, or give NaN its own label each time.
    """
    if labels.dtype.kind in "fc" and not np.isfinite(labels).all():
        raise ValueError(f"{name} ({what}) contains NaN or infinite values.")
    if labels.dtype.kind in "Mm":
        raise TypeError(
            f"{name} ({what}) holds {labels.dtype} values; use numbers or strings.")
    if labels.dtype != object:
        return labels
    values = labels.tolist()
    missing = [v for v in values if v is None or (isinstance(v, float) and v != v)]
    if missing:
        raise ValueError(
            f"{name} ({what}) contains missing labels ({missing[0]!r}); give every "
            f"trial a label.")
    kinds = {"number" if isinstance(v, (int, float, np.number)) and not isinstance(
        v, (bool, np.bool_)) else type(v).__name__ for v in values}
    if len(kinds) > 1:
        raise TypeError(
            f"{name} ({what}) mixes kinds of labels ({', '.join(sorted(kinds))}), "
            f"which cannot be sorted; use labels of one kind, e.g. "
            f"np.asarray({name}).astype(str).")
    try:
        np.unique(labels)
    except TypeError:
        raise TypeError(
            f"{name} ({what}) holds labels of type {kinds.pop()} that cannot be "
            f"sorted; use numbers or strings.") from None
    return labels


def check_conditions(y, n_trials):
    """Validate condition labels; return (labels, index into labels) or (None, None)."""
    if y is None:
        return None, None
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_trials:
        raise ValueError(
            f"y must hold one condition label per trial: expected shape ({n_trials},), "
            f"got {y.shape}.")
    y = _check_labels(y, "y", "condition labels")
    labels, index = np.unique(y, return_inverse=True)
    return labels, index


def check_known_conditions(y, conditions, n_trials):
    """Index of each label of ``y`` in the labels ``conditions`` seen in fit."""
    y = np.asarray(y)
    if y.shape != (n_trials,):
        raise ValueError(
            f"y must hold one condition label per trial: expected shape "
            f"({n_trials},), got {y.shape}.")
    y = _check_labels(y, "y", "condition labels")
    try:
        index = np.clip(np.searchsorted(conditions, y), 0, len(conditions) - 1)
        unknown = np.asarray(conditions[index] != y, dtype=bool)
    except TypeError:  # e.g. str labels in fit, numbers now
        raise TypeError(
            f"y holds labels of dtype {y.dtype} that cannot be compared with the "
            f"condition labels seen in fit ({list(conditions)[:10]}); pass labels "
            f"of the same kind.") from None
    if unknown.any():
        raise ValueError(
            f"y contains condition labels not seen in fit, e.g. {y[unknown][0]!r}; "
            f"known: {list(conditions)[:10]}.")
    return index


def check_inputs(inputs, n_trials, n_timepoints, n_inputs=None):
    """Validate external inputs of shape (n_trials, n_timepoints, n_inputs)."""
    if inputs is None:
        if n_inputs:
            raise ValueError(
                f"This model was fitted with external inputs ({n_inputs} channels); "
                f"pass inputs=... of shape ({n_trials}, {n_timepoints}, {n_inputs}).")
        return None
    U = check_trials_array(inputs, name="inputs", allow_nan=False,
                           what="(n_trials, n_timepoints, n_inputs)")
    if U.shape[:2] != (n_trials, n_timepoints):
        raise ValueError(
            f"inputs must have shape (n_trials, n_timepoints, n_inputs) = "
            f"({n_trials}, {n_timepoints}, ...) to match X, got {U.shape}.")
    if n_inputs is not None and U.shape[2] != n_inputs:
        if n_inputs == 0:
            raise ValueError(
                "This model was fitted without external inputs; do not pass inputs.")
        raise ValueError(
            f"inputs has {U.shape[2]} channels, but the model was fitted with "
            f"{n_inputs}.")
    return U


def check_session(trial_index, epochs, n_trials, *, required=False):
    """Validate each trial's place in the session: its number and its epoch.

    Parameters
    ----------
    trial_index : array-like of shape (n_trials,) or None
        Each trial's number in the session (any unit of trials, e.g. 0, 1, 2, ...,
        with gaps where trials were dropped or held out). None: the trials are
        numbered ``0 .. n_trials - 1`` in the order given, unless ``required``.
    epochs : array-like of shape (n_trials,) or None
        A label per trial for blocks of the session (baseline / perturbation /
        washout, decoder blocks); None: one epoch.
    n_trials : int
        Number of trials of X.
    required : bool, default=False
        Return ``(None, None)`` when ``trial_index`` is None instead of numbering
        the trials.

    Returns
    -------
    trial_index : ndarray of float64, shape (n_trials,), or None
    epochs : ndarray of shape (n_trials,) or None

    Raises
    ------
    ValueError
        Wrong length, non-finite or repeated trial numbers, missing epoch labels.
    """
    if trial_index is None:
        if epochs is not None and required:
            raise ValueError(
                "epochs were given without trial_index; pass each trial's number in "
                "the session as trial_index as well.")
        if required:
            return None, None
        index = np.arange(n_trials, dtype=np.float64)
    else:
        index = np.asarray(trial_index)
        if index.shape != (n_trials,):
            raise ValueError(
                f"trial_index must hold one number per trial: expected shape "
                f"({n_trials},), got {index.shape}.")
        if index.dtype.kind not in "iuf":
            raise TypeError(
                f"trial_index must hold numbers (each trial's place in the session), "
                f"got dtype {index.dtype}.")
        index = index.astype(np.float64)
        if not np.isfinite(index).all():
            raise ValueError("trial_index contains NaN or infinite values.")
        if np.unique(index).size != n_trials:
            raise ValueError(
                "trial_index contains repeated trial numbers; every trial must have "
                "its own place in the session.")
    if epochs is None:
        return index, None
    labels = np.asarray(epochs)
    if labels.shape != (n_trials,):
        raise ValueError(
            f"epochs must hold one label per trial: expected shape ({n_trials},), "
            f"got {labels.shape}.")
    labels = _check_labels(labels, "epochs", "epoch labels")
    if labels.dtype == object:
        labels = labels.astype(str)
    return index, labels
