"""Spike times to ``(n_trials, n_bins, n_units)`` counts.

Recordings as users keep them -- spike times and trial events -- binned from arrays
(:func:`bin_spikes`), NWB files (:func:`read_nwb`) and pynapple objects
(:func:`from_pynapple`).

The binning rule
----------------
Trial ``i`` is the window ``[align_times[i] + window[0], align_times[i] + window[1])``
cut into bins of ``bin_size`` seconds (any unit of time, the same for every argument).
Bin ``j`` holds the spikes at relative times ``r = t - align_times[i]`` with::

    window[0] + j * bin_size  <=  r  <  window[0] + (j + 1) * bin_size

(half-open bins: a spike on an edge opens the next bin; a spike on the window's stop
belongs to no bin). Spikes outside every window are dropped; where windows overlap, a
spike counts in each trial whose window holds it.

Edges are exact multiples of ``bin_size`` in the sense of the decimal numbers the
user wrote, not of their binary approximations: a spike is placed by the bin number
``q = (r - window[0]) / bin_size``, and a ``q`` within ``EDGE_TOLERANCE`` (a
millionth of a bin) of a whole number ``n`` counts as exactly ``n``. Without this
rule, times written with a few decimals (a spike at 0.86 s, a trial aligned at
1.05 s, 20 ms bins) land on either side of an edge depending on float rounding
(``(0.86 - 1.05 + 0.25) / 0.02`` is 2.999999999999997 in float64, not 3). The rule
moves a spike by at most a millionth of a bin (20 ns at 20 ms bins), far below the
resolution of any spike clock (33 us at 30 kHz). Times so large that their float64
resolution is coarser than the tolerance are refused (subtract the session's start
from every time first).
"""

import math
import warnings
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

__all__ = ["EDGE_TOLERANCE", "bin_spikes", "bin_centers", "read_nwb", "from_pynapple"]

#: Distance to a bin edge, in bins, under which a spike counts as on the edge.
EDGE_TOLERANCE = 1e-6

_INSTALL_NWB = ('pip install pynwb (or, in a checkout of sklearn_ltr, '
                'pip install -e ".[nwb]")')


# --------------------------------------------------------------------------- #
# checks
# --------------------------------------------------------------------------- #
def _check_window(window, bin_size):
    """Check a window; ``(start, stop, bin_size, n_bins)``, n_bins a whole number."""
    try:
        start, stop = (float(w) for w in window)
    except (TypeError, ValueError):
        raise ValueError(
            f"window must be two numbers (start, stop) relative to each alignment "
            f"time, e.g. window=(-0.25, 0.45); got {window!r}.") from None
    try:
        bin_size = float(bin_size)
    except (TypeError, ValueError):
        raise ValueError(f"bin_size must be a number, got {bin_size!r}.") from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"window must be finite, got ({start}, {stop}).")
    if stop <= start:
        raise ValueError(
            f"window stop must be greater than its start, got window=({start:g}, "
            f"{stop:g}); pass (start, stop), e.g. window=(-0.25, 0.45).")
    if not (math.isfinite(bin_size) and bin_size > 0):
        raise ValueError(f"bin_size must be a positive number, got {bin_size}.")
    n_bins = (stop - start) / bin_size
    whole = round(n_bins)
    if abs(n_bins - whole) > EDGE_TOLERANCE or whole < 1:
        low = max(math.floor(n_bins), 1)
        raise ValueError(
            f"window=({start:g}, {stop:g}) is {n_bins:.6g} bins of bin_size="
            f"{bin_size:g}; its length must be a whole number of bins. Use "
            f"window=({start:g}, {start + low * bin_size:.10g}) or "
            f"({start:g}, {start + (low + 1) * bin_size:.10g}), or a bin_size that "
            f"divides {stop - start:.10g}.")
    return start, stop, bin_size, int(whole)


def _check_times(times, name):
    """``times`` as a 1D float64 array of finite values."""
    try:
        arr = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must hold numbers (times), got {times!r:.80}.") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1D array of times, got shape {arr.shape}.")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} contains {bad.sum()} NaN or infinite time(s) (first at position "
            f"{np.flatnonzero(bad)[0]}); drop them before binning.")
    return arr


def _spike_trains(spike_times, unit_ids):
    """One sorted float64 array per unit; the units in the order of the output."""
    if unit_ids is not None:
        times = _check_times(spike_times, "spike_times")
        ids = np.asarray(unit_ids)
        if ids.shape != times.shape:
            raise ValueError(
                f"unit_ids must give the unit of every spike: expected shape "
                f"{times.shape} (that of spike_times), got {ids.shape}.")
        labels, unit = np.unique(ids, return_inverse=True)
        order = np.argsort(unit, kind="stable")
        ends = np.cumsum(np.bincount(unit, minlength=labels.size))[:-1]
        return [np.sort(t) for t in np.split(times[order], ends)]
    if isinstance(spike_times, np.ndarray) and spike_times.dtype != object:
        raise ValueError(
            f"spike_times is a {spike_times.ndim}D array of numbers: pass either a "
            f"list of one array of spike times per unit (for one unit: "
            f"[spike_times]), or every spike in one array with unit_ids giving the "
            f"unit of each.")
    if isinstance(spike_times, (str, bytes)) or not hasattr(spike_times, "__iter__"):
        raise TypeError(
            f"spike_times must be a list of one array of spike times per unit, got "
            f"{type(spike_times).__name__}.")
    trains = list(spike_times)
    if any(np.ndim(t) == 0 for t in trains):
        raise ValueError(
            "spike_times holds single numbers: pass a list of one array of spike "
            "times per unit (for one unit: [spike_times]), or every spike in one "
            "array with unit_ids giving the unit of each.")
    return [np.sort(_check_times(t, f"spike_times[{u}]"))
            for u, t in enumerate(trains)]


def _check_resolution(trains, align_times, bin_size):
    """Refuse times whose float spacing is coarser than the edge tolerance."""
    largest = max([np.abs(align_times).max(initial=0.0)]
                  + [np.abs(t).max(initial=0.0) for t in trains])
    if 8 * np.spacing(largest) > EDGE_TOLERANCE * bin_size:
        raise ValueError(
            f"times up to {largest:g} are too large to be binned exactly in bins of "
            f"{bin_size:g}: their float64 resolution is coarser than "
            f"{EDGE_TOLERANCE:g} of a bin. Subtract the session's start (or the "
            f"first alignment time) from every spike and alignment time first.")


# --------------------------------------------------------------------------- #
# binning
# --------------------------------------------------------------------------- #
def _bin_number(relative, start, bin_size):
    """The bin of each relative time, edges snapped (see the module's docstring)."""
    q = (relative - start) / bin_size
    nearest = np.rint(q)
    return np.where(np.abs(q - nearest) <= EDGE_TOLERANCE, nearest,
                    np.floor(q)).astype(np.int64)


def _count_unit(times, align_times, start, bin_size, n_bins):
    """Counts of one unit's sorted spike times, shape (n_trials, n_bins)."""
    n_trials = align_times.size
    pad = 2 * EDGE_TOLERANCE * bin_size  # the snapped edges reach this far out
    first = np.searchsorted(times, align_times + start - pad, side="left")
    last = np.searchsorted(times, align_times + start + n_bins * bin_size + pad,
                           side="right")
    n_near = np.maximum(last - first, 0)
    total = int(n_near.sum())
    if total == 0:
        return np.zeros((n_trials, n_bins), dtype=np.int64)
    # The spikes near trial i are times[first[i]:last[i]], in one flat gather.
    trial = np.repeat(np.arange(n_trials), n_near)
    spike = np.arange(total) - np.repeat(np.cumsum(n_near) - n_near - first, n_near)
    bins = _bin_number(times[spike] - align_times[trial], start, bin_size)
    inside = (bins >= 0) & (bins < n_bins)
    flat = np.bincount(trial[inside] * n_bins + bins[inside],
                       minlength=n_trials * n_bins)
    return flat.reshape(n_trials, n_bins)


def bin_centers(window, bin_size):
    """Centre of each bin of :func:`bin_spikes`, relative to the alignment.

    Parameters
    ----------
    window : tuple of 2 floats
        ``(start, stop)`` relative to each alignment time; ``stop - start`` a whole
        number of bins.
    bin_size : float
        Width of a bin, in the unit of ``window``.

    Returns
    -------
    centers : ndarray of shape (n_bins,)
        ``window[0] + (j + 0.5) * bin_size`` for bin ``j``.

    Examples
    --------
    >>> from sklearn_ltr.io import bin_centers
    >>> bin_centers((-0.1, 0.1), 0.05)
    array([-0.075, -0.025,  0.025,  0.075])
    """
    start, _, bin_size, n_bins = _check_window(window, bin_size)
    return start + (np.arange(n_bins) + 0.5) * bin_size


def bin_spikes(spike_times, align_times, window, bin_size, *, unit_ids=None):
    """Count spikes in bins of a window around each trial's alignment time.

    Parameters
    ----------
    spike_times : list of array-like, or array-like of shape (n_spikes,)
        One array of spike times per unit (in any order; a unit may have none), or
        every spike in one array with ``unit_ids``.
    align_times : array-like of shape (n_trials,)
        One alignment time per trial (e.g. movement onset), in the unit of the
        spike times.
    window : tuple of 2 floats
        ``(start, stop)`` relative to each alignment time, e.g. ``(-0.25, 0.45)``;
        ``stop - start`` must be a whole number of bins.
    bin_size : float
        Width of a bin.
    unit_ids : array-like of shape (n_spikes,), default=None
        The unit of each spike, when ``spike_times`` is one array; the units of the
        output are then ``numpy.unique(unit_ids)``, in that order.

    Returns
    -------
    counts : ndarray of int64, shape (n_trials, n_bins, n_units)
        Spikes per trial, bin and unit, with ``n_bins = (stop - start) /
        bin_size``; bin ``j`` holds relative times ``[start + j * bin_size,
        start + (j + 1) * bin_size)`` (see the module's docstring for the exact
        rule at edges). :func:`bin_centers` gives the bins' centres.

    Raises
    ------
    ValueError
        Non-finite times, ``stop <= start``, ``bin_size <= 0``, a window that is
        not a whole number of bins, ``unit_ids`` of the wrong length.

    Examples
    --------
    >>> from sklearn_ltr.io import bin_spikes
    >>> spikes = [[0.05, 0.1, 0.15, 1.02], []]   # unit 0 and a silent unit 1
    >>> counts = bin_spikes(spikes, [0.0, 1.0], window=(0.0, 0.2), bin_size=0.1)
    >>> counts.shape
    (2, 2, 2)
    >>> counts[:, :, 0]                          # 0.1 opens the second bin
    array([[1, 2],
           [1, 0]])
    """
    start, _, bin_size, n_bins = _check_window(window, bin_size)
    align = _check_times(align_times, "align_times")
    trains = _spike_trains(spike_times, unit_ids)
    _check_resolution(trains, align, bin_size)
    counts = np.zeros((align.size, n_bins, len(trains)), dtype=np.int64)
    for unit, times in enumerate(trains):
        counts[:, :, unit] = _count_unit(times, align, start, bin_size, n_bins)
    return counts


# --------------------------------------------------------------------------- #
# windows inside the recorded time
# --------------------------------------------------------------------------- #
def _outside_intervals(starts, ends, lows, highs, tol):
    """Windows ``[lows, highs)`` inside none of the intervals, summarised.

    None when every window is inside an interval, else ``(how many are not, the
    first one's position, that window as text)``.
    """
    order = np.argsort(starts, kind="stable")
    starts, reach = np.asarray(starts)[order], np.maximum.accumulate(
        np.asarray(ends)[order])
    # The interval reaching furthest among those that open before the window does.
    j = np.searchsorted(starts, lows + tol, side="right") - 1
    outside = (j < 0) | (reach[np.maximum(j, 0)] < highs - tol)
    if not outside.any():
        return None
    i = np.flatnonzero(outside)[0]
    return outside.sum(), i, f"{lows[i]:.6g}..{highs[i]:.6g}"


def _windows(align_times, window):
    lows = align_times + window[0]
    return lows, align_times + window[1]


def _check_observed(unit_ids, observed, lows, highs, tol, trial_ids):
    """Refuse a window outside a unit's observation intervals (fake zeros)."""
    for unit, intervals in zip(unit_ids, observed):
        if len(intervals) == 0:  # no intervals recorded: nothing to check against
            continue
        outside = _outside_intervals(intervals[:, 0], intervals[:, 1], lows, highs,
                                     tol)
        if outside is not None:
            n, i, where = outside
            raise ValueError(
                f"unit {unit} was not observed during the whole window of {n} "
                f"trial(s) (first: trial id {trial_ids[i]}, window {where}); its "
                f"obs_intervals would make "
                f"the unrecorded time count as zero spikes. Use a narrower window, "
                f"leave those trials out with trial_filter, or leave the unit out "
                f"with units.")


# --------------------------------------------------------------------------- #
# NWB files
# --------------------------------------------------------------------------- #
def _import_pynwb():
    try:
        import pynwb
    except ImportError as exc:
        raise ImportError(
            f"read_nwb reads NWB files with pynwb, which is not installed: "
            f"{_INSTALL_NWB}.") from exc
    return pynwb


def _listing(values, limit=12):
    """``values`` for a message, the middle elided when there are many."""
    values = list(np.asarray(values).tolist())
    if len(values) <= limit:
        return str(values)
    return (f"[{', '.join(map(str, values[:limit // 2]))}, ..., "
            f"{', '.join(map(str, values[-limit // 2:]))}] ({len(values)} in all)")


def _per_trial_values(column):
    """A trials-table column as one value per trial, or None when it is not."""
    from hdmf.common import DynamicTableRegion, VectorIndex

    if isinstance(column, (VectorIndex, DynamicTableRegion)):
        return None  # ragged, or references to other tables
    values = np.asarray(column.data[:])
    if values.ndim != 1 or values.dtype.names is not None:
        return None  # several values per trial, or compound references
    if values.dtype.kind == "S":
        return values.astype(str)
    if values.dtype == object:
        if not all(isinstance(v, (str, bytes)) for v in values):
            return None
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values],
                        dtype=str)
    return values


def _read_trials(nwb, path):
    """The trials table's ids and its columns of one value per trial."""
    table = nwb.trials
    if table is None:
        raise ValueError(
            f"{path} has no trials table to align on; bin its units' spike times "
            f"with sklearn_ltr.io.bin_spikes and alignment times of your own.")
    columns = {}
    for name in table.colnames:
        values = _per_trial_values(table[name])
        if values is not None:
            columns[name] = values
    return np.asarray(table.id[:]), columns


def _pick_units(ids, units, path):
    """Positions in the units table of the units asked for (all when None)."""
    if units is None:
        return np.arange(ids.size)
    wanted = np.atleast_1d(np.asarray(units)).tolist()
    position = {unit: i for i, unit in enumerate(ids.tolist())}
    missing = [unit for unit in wanted if unit not in position]
    if missing:
        raise ValueError(
            f"units {_listing(missing)} are not in the units table of {path}; its "
            f"unit ids are {_listing(ids)}.")
    if not wanted or len(set(wanted)) != len(wanted):
        raise ValueError(
            f"units must list distinct unit ids of the units table, at least one; "
            f"got {_listing(wanted)}.")
    return np.array([position[unit] for unit in wanted])


def _ragged(index):
    """The rows of a ragged column (a VectorIndex) as a list of arrays."""
    ends = np.asarray(index.data[:], dtype=np.int64)
    flat = np.asarray(index.target.data[:], dtype=np.float64)
    return np.split(flat, ends[:-1]) if ends.size else []


def _read_units(nwb, units, path):
    """Unit ids, spike trains and observation intervals (or None) of the units."""
    table = nwb.units
    if table is None or "spike_times" not in table.colnames or len(table) == 0:
        raise ValueError(f"{path} has no units table with spike times.")
    ids = np.asarray(table.id[:])
    pick = _pick_units(ids, units, path)
    trains = _ragged(table["spike_times"])
    observed = None
    if "obs_intervals" in table.colnames:
        intervals = _ragged(table["obs_intervals"])
        observed = [intervals[i].reshape(-1, 2) for i in pick]
    return ids[pick], [trains[i] for i in pick], observed


def _filter_mask(trial_filter, ids, columns):
    """The trials ``trial_filter`` keeps, as a boolean mask over the trials table."""
    if callable(trial_filter):
        import pandas as pd

        frame = pd.DataFrame(columns, index=pd.Index(ids, name="id"))
        mask, what = np.asarray(trial_filter(frame)), "trial_filter(trials) returned"
    else:
        mask, what = np.asarray(trial_filter), "trial_filter is"
    if mask.shape != ids.shape or mask.dtype != bool:
        raise ValueError(
            f"{what} an array of dtype {mask.dtype} and shape {mask.shape}; expected "
            f"one boolean per trial of the trials table (shape {ids.shape}), e.g. "
            f"trial_filter=lambda trials: trials['split'] == 'train'.")
    return mask


def _select_trials(ids, columns, align, trial_filter, path):
    """The trials kept (a mask) and their alignment times."""
    if align not in columns or columns[align].dtype.kind != "f":
        times = [name for name, v in columns.items() if v.dtype.kind == "f"]
        raise ValueError(
            f"align={align!r} is not a column of times in the trials table of "
            f"{path}; its columns of times are {times} (all its columns: "
            f"{list(columns)}).")
    keep = (np.ones(ids.shape, dtype=bool) if trial_filter is None
            else _filter_mask(trial_filter, ids, columns))
    align_times = columns[align].astype(np.float64)
    undefined = keep & ~np.isfinite(align_times)
    if undefined.any():
        warnings.warn(
            f"{undefined.sum()} of the {keep.sum()} selected trials have no "
            f"{align} (NaN) and were left out: trial ids {_listing(ids[undefined])}. "
            f"To choose trials yourself and silence this, pass e.g. "
            f"trial_filter=lambda trials: trials[{align!r}].notna().", UserWarning,
            stacklevel=3)
        keep &= ~undefined
    if not keep.any():
        raise ValueError(f"no trial of {path} is left to bin (trial_filter and NaN "
                         f"{align} left out all {ids.size}).")
    return keep, align_times[keep]


def _check_trial_windows(starts, stops, align_times, window, tol, align, trial_ids):
    """Refuse windows that run outside their trial's start_time..stop_time."""
    lows, highs = _windows(align_times, window)
    bad = (lows < starts - tol) | (highs > stops + tol)
    if not bad.any():
        return
    i = np.flatnonzero(bad)[0]
    low, high = np.max(starts - align_times), np.min(stops - align_times)
    fits = (f"the widest window inside every selected trial is ({low:.6g}, "
            f"{high:.6g})" if low < high else "no window fits inside every trial")
    raise ValueError(
        f"window=({window[0]:g}, {window[1]:g}) around {align} runs outside "
        f"{bad.sum()} of the {bad.size} trials (first: trial id {trial_ids[i]}, "
        f"window {lows[i]:.6g}..{highs[i]:.6g}, trial {starts[i]:.6g}.."
        f"{stops[i]:.6g}); {fits}. Narrow the window, or leave those trials out "
        f"with trial_filter.")


def _open_nwb(pynwb, path):
    try:
        return pynwb.NWBHDF5IO(str(path), "r")
    except OSError as exc:
        raise ValueError(f"could not open {path} as an NWB file: {exc}") from exc


def read_nwb(path, *, align, window, bin_size, units=None, trial_filter=None):
    """Spike counts of an NWB file's units, aligned on a column of its trials table.

    Reads the units table (spike times, and observation intervals where it has
    them) and the trials table of a Neurodata Without Borders file (NWB 2, as on the
    DANDI archive and in the Neural Latents Benchmark), and bins the spikes with
    :func:`bin_spikes` in a window around each trial's time in column ``align``.
    Needs ``pynwb``: ``pip install pynwb``, or ``pip install -e ".[nwb]"`` in a
    checkout.

    Parameters
    ----------
    path : str or path-like
        The ``.nwb`` file.
    align : str
        Column of the trials table holding each trial's alignment time, in seconds
        (e.g. ``"move_onset_time"``, ``"start_time"``).
    window : tuple of 2 floats
        ``(start, stop)`` in seconds relative to the alignment, e.g.
        ``(-0.25, 0.45)``; a whole number of bins. Every window must lie inside its
        trial (``start_time`` .. ``stop_time``) and inside each unit's
        ``obs_intervals`` where the file has them: outside, counts would be zeros
        for time that was not recorded.
    bin_size : float
        Width of a bin in seconds.
    units : array-like of unit ids, default=None
        The units to keep, in this order (ids of the units table); None: all.
    trial_filter : callable or array-like of bool, default=None
        The trials to keep: a boolean mask over the rows of the trials table, or a
        function of the trials table (a ``pandas.DataFrame`` of its columns, indexed
        by trial id) returning one, e.g. ``lambda trials: trials["split"] ==
        "train"``. Trials whose ``align`` time is NaN (e.g. failed trials without a
        movement onset) are left out with a warning; a filter that leaves them out
        itself silences it.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        X : ndarray of int64, shape (n_trials, n_bins, n_units)
            Spike counts (:func:`bin_spikes`).
        bin_centers : ndarray of shape (n_bins,)
            Centre of each bin, in seconds from the alignment.
        unit_ids : ndarray of shape (n_units,)
            The units table's id of each unit of ``X``.
        trial_ids : ndarray of shape (n_trials,)
            The trials table's id of each trial of ``X``.
        trial_index : ndarray of int64, shape (n_trials,)
            Each trial's row in the trials table: its place in the session (with
            gaps where trials were left out), for the estimators' ``trial_index``.
        align_times : ndarray of shape (n_trials,)
            Each trial's alignment time, in seconds of the file.
        trials : :class:`~sklearn.utils.Bunch` of ndarrays of shape (n_trials,)
            Every column of the trials table with one number or string per trial
            (``start_time``, ``stop_time``, conditions, outcomes...), for ``y`` or
            ``epochs``; ragged columns and references to other tables are left out.

    Raises
    ------
    ValueError
        ``align`` not a column of times, windows outside the trials or the units'
        observation intervals, unknown units, a bad ``trial_filter``, a file
        without units or trials table.
    ImportError
        pynwb is not installed.

    See Also
    --------
    bin_spikes : the same counts from arrays of spike times.

    Examples
    --------
    >>> from sklearn_ltr.io import read_nwb
    >>> data = read_nwb("mc_maze_small_test.nwb", align="move_onset_time",
    ...                 window=(-0.25, 0.45), bin_size=0.02)  # doctest: +SKIP
    >>> data.X.shape                                           # doctest: +SKIP
    (100, 35, 107)
    """
    start, stop, bin_size, _ = _check_window(window, bin_size)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no NWB file at {path}.")
    pynwb = _import_pynwb()
    with _open_nwb(pynwb, path) as io, warnings.catch_warnings():
        # pynwb's deprecation notes on how the file was written (e.g. a Device's
        # "manufacturer" field) are for its writer, not for the reader.
        warnings.simplefilter("ignore", DeprecationWarning)
        nwb = io.read()
        trial_ids, columns = _read_trials(nwb, path)
        unit_ids, trains, observed = _read_units(nwb, units, path)
    keep, align_times = _select_trials(trial_ids, columns, align, trial_filter, path)
    tol = EDGE_TOLERANCE * bin_size
    _check_trial_windows(columns["start_time"][keep], columns["stop_time"][keep],
                         align_times, (start, stop), tol, align, trial_ids[keep])
    if observed is not None:
        _check_observed(unit_ids, observed, *_windows(align_times, (start, stop)),
                        tol, trial_ids[keep])
    return Bunch(
        X=bin_spikes(trains, align_times, (start, stop), bin_size),
        bin_centers=bin_centers((start, stop), bin_size), unit_ids=unit_ids,
        trial_ids=trial_ids[keep], trial_index=np.flatnonzero(keep),
        align_times=align_times,
        trials=Bunch(**{name: values[keep] for name, values in columns.items()}))


# --------------------------------------------------------------------------- #
# pynapple
# --------------------------------------------------------------------------- #
def from_pynapple(tsgroup, align, window, bin_size):
    """Spike counts of a pynapple ``TsGroup`` in a window around each event.

    Parameters
    ----------
    tsgroup : pynapple.TsGroup
        One ``Ts`` of spike times per unit. Every window must lie inside its
        ``time_support`` (where the units were recorded).
    align : pynapple.Ts, pynapple.Tsd, pynapple.IntervalSet or array-like
        One alignment time per trial: the times of a ``Ts``/``Tsd``, the starts of
        an ``IntervalSet``, or an array.
    window : tuple of 2 floats
        ``(start, stop)`` relative to each alignment, a whole number of bins.
    bin_size : float
        Width of a bin, in the unit of the times (pynapple's: seconds).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        X : ndarray of int64, shape (n_trials, n_bins, n_units)
            Spike counts (:func:`bin_spikes`), units in the order of
            ``tsgroup.keys()``.
        bin_centers : ndarray of shape (n_bins,)
            Centre of each bin, relative to the alignment.
        unit_ids : ndarray of shape (n_units,)
            The keys of ``tsgroup``.
        align_times : ndarray of shape (n_trials,)
            The alignment times.

    Raises
    ------
    TypeError
        ``tsgroup`` is not a TsGroup.
    ValueError
        As :func:`bin_spikes`, and windows outside the group's time support.
    """
    start, stop, bin_size, _ = _check_window(window, bin_size)
    if not (hasattr(tsgroup, "keys") and hasattr(tsgroup, "time_support")):
        raise TypeError(
            f"from_pynapple expects a pynapple TsGroup, got "
            f"{type(tsgroup).__name__}; for arrays of spike times use "
            f"sklearn_ltr.io.bin_spikes.")
    unit_ids = np.asarray(list(tsgroup.keys()))
    trains = [np.asarray(tsgroup[unit].t) for unit in unit_ids.tolist()]
    if hasattr(align, "t"):
        align = align.t
    elif hasattr(align, "start") and hasattr(align, "end"):
        align = align.start
    align_times = _check_times(align, "align")
    lows, highs = _windows(align_times, (start, stop))
    support = tsgroup.time_support
    outside = _outside_intervals(np.asarray(support.start), np.asarray(support.end),
                                 lows, highs, EDGE_TOLERANCE * bin_size)
    if outside is not None:
        n, i, where = outside
        raise ValueError(
            f"the windows of {n} of {align_times.size} trials run outside the "
            f"TsGroup's time_support (first: trial {i}, window {where}), where the "
            f"units were not recorded and would count zero spikes. Narrow the "
            f"window, drop those trials from align, or build the TsGroup with the "
            f"time_support it was recorded over.")
    return Bunch(X=bin_spikes(trains, align_times, (start, stop), bin_size),
                 bin_centers=bin_centers((start, stop), bin_size),
                 unit_ids=unit_ids, align_times=align_times)
