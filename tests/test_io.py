"""sklearn_ltr.io: spike times to counts, from arrays, NWB files and pynapple."""

import datetime
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from sklearn_ltr.io import (
    EDGE_TOLERANCE,
    bin_centers,
    bin_spikes,
    from_pynapple,
    read_nwb,
)

ROOT = Path(__file__).resolve().parents[1]
MC_MAZE = ROOT.parent / "shared" / "data" / "mc_maze_small_test.nwb"


# --------------------------------------------------------------------------- #
# bin_spikes against numpy.histogram
# --------------------------------------------------------------------------- #
def _edges(align, window, bin_size, n_bins):
    """The float edges the docs promise: align + window[0] + j * bin_size."""
    return align + window[0] + np.arange(n_bins + 1) * bin_size


def _histogram_counts(trains, align_times, window, bin_size, n_bins):
    """Direct numpy.histogram counts, half-open bins (numpy closes its last bin, so
    one extra bin takes the spikes on the window's stop)."""
    counts = np.zeros((len(align_times), n_bins, len(trains)), dtype=np.int64)
    for i, align in enumerate(align_times):
        edges = _edges(align, window, bin_size, n_bins)
        edges = np.append(edges, edges[-1] + bin_size)
        for u, times in enumerate(trains):
            counts[i, :, u] = np.histogram(times, bins=edges)[0][:n_bins]
    return counts


def _near_but_not_on_an_edge(times, align_times, window, bin_size, n_bins):
    """Spikes within 10 tolerances of some trial's float edge without being on it:
    there numpy.histogram (float edges) and the documented rule (decimal edges)
    differ by design, so the comparison leaves them out."""
    ambiguous = np.zeros(times.shape, dtype=bool)
    for align in align_times:
        edges = _edges(align, window, bin_size, n_bins)
        q = (times - edges[0]) / bin_size
        j = np.clip(np.rint(q).astype(int), 0, n_bins)
        near = (np.abs(q - np.rint(q)) < 10 * EDGE_TOLERANCE) & (q > -1) & (
            q < n_bins + 1)
        ambiguous |= near & (times != edges[j])
    return ambiguous


def _random_session(seed, window, bin_size, n_units=6, n_trials=25):
    """Random spike trains (a silent unit among them), random alignment times with
    overlapping windows, and spikes placed on every kind of edge."""
    rng = np.random.RandomState(seed)
    n_bins = int(round((window[1] - window[0]) / bin_size))
    align_times = np.sort(rng.uniform(1.0, 20.0, n_trials))
    align_times[1] = align_times[0] + 0.3  # windows overlapping
    trains = []
    for u in range(n_units):
        times = rng.uniform(0.0, 22.0, rng.randint(200, 2000)) if u != 2 else []
        times = np.asarray(times)
        # On edges of randomly chosen trials, the window's start and stop included.
        picks = rng.randint(0, n_trials, 40)
        j = rng.randint(0, n_bins + 1, 40)
        on_edges = [_edges(align_times[i], window, bin_size, n_bins)[k]
                    for i, k in zip(picks, j)]
        times = np.concatenate([times, on_edges if u != 2 else []])
        times = times[~_near_but_not_on_an_edge(times, align_times, window, bin_size,
                                                n_bins)]
        trains.append(rng.permutation(times))  # unsorted, as files may hold them
    return trains, align_times, n_bins


@pytest.mark.parametrize("window, bin_size", [
    ((-0.25, 0.45), 0.02), ((0.0, 1.0), 0.05), ((-0.5, 0.25), 0.001),
    ((-0.3, 0.3), 0.1), ((-1.0, 1.0), 2 / 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_bin_spikes_agrees_with_numpy_histogram(window, bin_size, seed):
    trains, align_times, n_bins = _random_session(seed, window, bin_size)
    expected = _histogram_counts(trains, align_times, window, bin_size, n_bins)
    counts = bin_spikes(trains, align_times, window, bin_size)
    assert counts.dtype == np.int64 and counts.shape == expected.shape
    np.testing.assert_array_equal(counts, expected)
    assert counts[:, :, 2].sum() == 0  # the silent unit
    # Edge spikes are in the data: the comparison covers them.
    edges = np.concatenate([_edges(a, window, bin_size, n_bins) for a in align_times])
    assert sum(np.isin(t, edges).sum() for t in trains) > 150


def test_bin_spikes_flat_array_with_unit_ids_gives_the_same_counts():
    trains, align_times, _ = _random_session(3, (-0.25, 0.45), 0.02)
    labels = np.array([17, 3, 99, 42, 5, 8])  # ids out of order: output sorts them
    times = np.concatenate(trains)
    ids = np.repeat(labels, [len(t) for t in trains])
    order = np.random.RandomState(0).permutation(times.size)
    counts = bin_spikes(times[order], align_times, (-0.25, 0.45), 0.02,
                        unit_ids=ids[order])
    by_unit = bin_spikes(trains, align_times, (-0.25, 0.45), 0.02)
    present = [u for u in np.argsort(labels) if len(trains[u])]  # unit 99 is silent
    np.testing.assert_array_equal(counts, by_unit[:, :, present])


def test_spikes_on_decimal_edges_fall_in_the_bin_they_open():
    # Times in whole microseconds, written as seconds like a file stores them: the
    # expected bins come from integer arithmetic, with no float anywhere.
    rng = np.random.RandomState(0)
    start_us, bin_us, n_bins = -250_000, 20_000, 35
    align_us = np.arange(40) * 800_000 + 250_000 + rng.randint(0, 50, 40) * 10_000
    on_edges = (align_us[:, None] + start_us + bin_us * np.arange(n_bins + 1)).ravel()
    spikes_us = np.concatenate([on_edges, rng.randint(0, 33_000_000, 3000)])
    expected = np.zeros((40, n_bins), dtype=np.int64)
    for i, a in enumerate(align_us):
        rel = spikes_us - a - start_us
        inside = (rel >= 0) & (rel < n_bins * bin_us)
        np.add.at(expected[i], rel[inside] // bin_us, 1)
    times, align_times = spikes_us / 1e6, align_us / 1e6
    counts = bin_spikes([times], align_times, (-0.25, 0.45), 0.02)
    np.testing.assert_array_equal(counts[:, :, 0], expected)
    # The rule matters: a plain floor of the float bin number misplaces some of them.
    rel = times[None, :] - align_times[:, None]
    naive = np.floor((rel + 0.25) / 0.02)
    exact = (spikes_us[None, :] - align_us[:, None] - start_us) // bin_us
    assert ((naive != exact) & (exact >= 0) & (exact < n_bins)).sum() > 10


def test_half_open_bins_and_overlapping_windows():
    spikes = [np.array([0.0, 0.1, 0.2, 0.3, 0.35, 0.4])]
    counts = bin_spikes(spikes, [0.1, 0.2], window=(-0.1, 0.2), bin_size=0.1)
    # trial 0: [0, 0.1) [0.1, 0.2) [0.2, 0.3); trial 1: [0.1, 0.2) [0.2, 0.3)
    # [0.3, 0.4): 0.3 and 0.35 there, 0.4 on the stop of trial 1's window.
    np.testing.assert_array_equal(counts[:, :, 0], [[1, 1, 1], [1, 1, 2]])


def test_spikes_outside_every_window_are_dropped():
    rng = np.random.RandomState(1)
    times = rng.uniform(0, 100, 5000)
    align_times = np.array([10.0, 30.0, 50.5])
    counts = bin_spikes([times], align_times, (-0.5, 1.5), 0.25)
    inside = sum(((times >= a - 0.5) & (times < a + 1.5)).sum() for a in align_times)
    assert counts.sum() == inside < times.size


def test_empty_units_and_no_spikes():
    counts = bin_spikes([[], np.array([]), [0.5]], [0.0, 1.0], (0.0, 1.0), 0.5)
    assert counts.shape == (2, 2, 3)
    np.testing.assert_array_equal(counts.sum(axis=(0, 1)), [0, 0, 1])


def test_bin_centers():
    np.testing.assert_allclose(bin_centers((-0.25, 0.45), 0.02),
                               -0.24 + 0.02 * np.arange(35))
    assert bin_centers((0, 3), 1).tolist() == [0.5, 1.5, 2.5]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(spike_times=[[0.1, np.nan]]), ValueError, r"spike_times\[0\].*NaN"),
    (dict(spike_times=[[0.1], [np.inf]]), ValueError, r"spike_times\[1\].*infinite"),
    (dict(align_times=[0.0, np.nan]), ValueError, "align_times contains 1 NaN"),
    (dict(window=(0.5, 0.5)), ValueError, "stop must be greater than its start"),
    (dict(window=(0.5, -0.5)), ValueError, "stop must be greater than its start"),
    (dict(window=(0.0, np.inf)), ValueError, "window must be finite"),
    (dict(window=0.5), ValueError, r"two numbers \(start, stop\)"),
    (dict(bin_size=0.0), ValueError, "bin_size must be a positive number"),
    (dict(bin_size=-0.1), ValueError, "bin_size must be a positive number"),
    (dict(bin_size=0.3), ValueError,
     r"3\.33333 bins.*whole number of bins. Use window=\(0, 0\.9\) or \(0, 1\.2\)"),
    (dict(bin_size=2.0), ValueError, r"Use window=\(0, 2\) or \(0, 4\)"),
    (dict(spike_times=np.array([0.1, 0.2])), ValueError,
     r"pass either a list .*\[spike_times\].*unit_ids"),
    (dict(spike_times=np.zeros((2, 3))), ValueError, "2D array of numbers"),
    (dict(spike_times=[[[0.1]]]), ValueError, r"spike_times\[0\] must be a 1D"),
    (dict(spike_times=[0.1, 0.2]), ValueError, r"single numbers.*\[spike_times\]"),
    (dict(spike_times=3.0), TypeError, "list of one array of spike times per unit"),
    (dict(spike_times=[["a"]]), TypeError, r"spike_times\[0\] must hold numbers"),
    (dict(spike_times=[0.1, 0.2, 0.3], unit_ids=[0, 1]), ValueError,
     r"unit_ids must give the unit of every spike: expected shape \(3,\)"),
    (dict(spike_times=[[1e9]], align_times=[1e9], bin_size=1e-3, window=(0, 1)),
     ValueError, "Subtract the session's start"),
])
def test_bin_spikes_refuses_bad_input(kwargs, error, match):
    args = dict(spike_times=[[0.1, 0.2]], align_times=[0.0, 1.0], window=(0.0, 1.0),
                bin_size=0.1) | kwargs
    with pytest.raises(error, match=match):
        bin_spikes(**args)


# --------------------------------------------------------------------------- #
# read_nwb, on files written here with pynwb
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def pynwb():
    return pytest.importorskip(
        "pynwb", reason='read_nwb needs pynwb: pip install -e ".[nwb]"')


def _write_nwb(path, pynwb, *, trials=True, obs_intervals=None):
    """Six trials of 0.8 s (the third without a go time) and three units."""
    nwb = pynwb.NWBFile(
        session_description="test", identifier=path.stem,
        session_start_time=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    if trials:
        nwb.add_trial_column("go_time", "go cue")
        nwb.add_trial_column("target", "target number")
        nwb.add_trial_column("outcome", "outcome")
        nwb.add_trial_column("samples", "a ragged column", index=True)
        for k in range(6):
            nwb.add_trial(start_time=k * 1.0, stop_time=k + 0.8,
                          go_time=np.nan if k == 2 else k + 0.3, target=k % 3,
                          outcome="hit" if k % 2 else "miss",
                          samples=[1.0] * (k + 1))
    rng = np.random.RandomState(0)
    trains = [np.sort(rng.uniform(0, 6, n)) for n in (300, 200)]
    # Unit 12: a spike on the start of every window, one on the stop of every trial.
    trains.append(np.sort(np.concatenate([np.arange(6) + 0.1, np.arange(6) + 0.8])))
    for u, (unit, times) in enumerate(zip([10, 11, 12], trains)):
        extra = {} if obs_intervals is None else {"obs_intervals": obs_intervals[u]}
        nwb.add_unit(spike_times=times, id=unit, **extra)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return trains


@pytest.fixture
def nwb_file(tmp_path, pynwb):
    path = tmp_path / "session.nwb"
    return path, _write_nwb(path, pynwb)


def _read(path, **kwargs):
    args = dict(align="go_time", window=(-0.2, 0.5), bin_size=0.1,
                trial_filter=lambda trials: trials["go_time"].notna()) | kwargs
    return read_nwb(path, **args)


def test_read_nwb_counts_and_trial_columns(nwb_file):
    path, trains = nwb_file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a filter that leaves NaN trials out: silent
        data = _read(path)
    kept = np.array([0, 1, 3, 4, 5])
    np.testing.assert_array_equal(data.trial_index, kept)
    np.testing.assert_array_equal(data.trial_ids, kept)
    np.testing.assert_array_equal(data.align_times, kept + 0.3)
    np.testing.assert_array_equal(data.unit_ids, [10, 11, 12])
    np.testing.assert_allclose(data.bin_centers, [-0.15, -0.05, 0.05, 0.15, 0.25,
                                                  0.35, 0.45])
    np.testing.assert_array_equal(
        data.X, bin_spikes(trains, kept + 0.3, (-0.2, 0.5), 0.1))
    np.testing.assert_array_equal(data.X[:, :, 2], np.eye(7, dtype=int)[[0] * 5])
    assert sorted(data.trials) == ["go_time", "outcome", "start_time", "stop_time",
                                   "target"]  # the ragged column left out
    assert data.trials.outcome.tolist() == ["miss", "hit", "hit", "miss", "hit"]
    np.testing.assert_array_equal(data.trials.target, [0, 1, 0, 1, 2])
    np.testing.assert_array_equal(data.trials.start_time, kept * 1.0)


def test_read_nwb_leaves_out_trials_without_alignment_with_a_warning(nwb_file):
    path, _ = nwb_file
    with pytest.warns(UserWarning, match=r"1 of the 6 selected trials have no "
                                         r"go_time \(NaN\).*trial ids \[2\]"):
        data = _read(path, trial_filter=None)
    np.testing.assert_array_equal(data.trial_index, [0, 1, 3, 4, 5])
    assert data.X.shape == (5, 7, 3)


def test_read_nwb_trial_filter(nwb_file):
    path, _ = nwb_file
    full = _read(path)
    hits = _read(path, trial_filter=lambda trials: trials["outcome"] == "hit")
    np.testing.assert_array_equal(hits.trial_index, [1, 3, 5])
    np.testing.assert_array_equal(hits.X, full.X[[1, 2, 4]])
    mask = np.array([True, False, False, True, False, False])
    np.testing.assert_array_equal(_read(path, trial_filter=mask).trial_index, [0, 3])
    for bad in ([True, False], np.ones(6, dtype=int), lambda trials: trials["target"]):
        with pytest.raises(ValueError, match=r"one boolean per trial of the trials "
                                             r"table \(shape \(6,\)\)"):
            _read(path, trial_filter=bad)
    with pytest.raises(ValueError, match="no trial of .* is left"):
        _read(path, trial_filter=np.zeros(6, dtype=bool))


def test_read_nwb_units(nwb_file):
    path, _ = nwb_file
    full = _read(path)
    some = _read(path, units=[12, 10])
    np.testing.assert_array_equal(some.unit_ids, [12, 10])
    np.testing.assert_array_equal(some.X, full.X[:, :, [2, 0]])
    with pytest.raises(ValueError, match=r"units \[99\] are not in the units table "
                                         r".*unit ids are \[10, 11, 12\]"):
        _read(path, units=[10, 99])
    with pytest.raises(ValueError, match="distinct unit ids"):
        _read(path, units=[10, 10])


@pytest.mark.parametrize("align", ["nope", "outcome", "target"])
def test_read_nwb_refuses_a_column_that_is_not_times(nwb_file, align):
    with pytest.raises(ValueError, match=(
            rf"align='{align}' is not a column of times .* its columns of times are "
            r"\['start_time', 'stop_time', 'go_time'\] \(all its columns: "
            r"\['start_time', 'stop_time', 'go_time', 'target', 'outcome'\]\)")):
        _read(nwb_file[0], align=align)


def test_read_nwb_refuses_windows_outside_the_trials(nwb_file):
    path, _ = nwb_file
    with pytest.raises(ValueError, match=(
            r"window=\(-0.4, 0.5\) around go_time runs outside 5 of the 5 trials "
            r"\(first: trial id 0, window -0.1..0.8, trial 0..0.8\); the widest "
            r"window inside every selected trial is \(-0.3, 0.5\)")):
        _read(path, window=(-0.4, 0.5))
    assert _read(path, window=(-0.3, 0.5)).X.shape == (5, 8, 3)  # the widest


def test_read_nwb_refuses_windows_where_a_unit_was_not_observed(tmp_path, pynwb):
    path = tmp_path / "observed.nwb"
    whole, first_half = [[0.0, 6.0]], [[0.0, 3.0]]
    _write_nwb(path, pynwb, obs_intervals=[whole, first_half, whole])
    with pytest.raises(ValueError, match=r"unit 11 was not observed during the whole "
                                         r"window of 3 trial\(s\) \(first: trial id 3"):
        _read(path)
    assert _read(path, units=[10, 12]).X.shape == (5, 7, 2)
    assert _read(path, trial_filter=[True, True, False, False, False, False]).X.shape \
        == (2, 7, 3)


def test_read_nwb_refuses_files_it_cannot_use(tmp_path, pynwb):
    with pytest.raises(FileNotFoundError, match="no NWB file at"):
        _read(tmp_path / "absent.nwb")
    text = tmp_path / "text.nwb"
    text.write_text("not an NWB file")
    with pytest.raises(ValueError, match="could not open .*text.nwb as an NWB file"):
        _read(text)
    no_trials = tmp_path / "no_trials.nwb"
    _write_nwb(no_trials, pynwb, trials=False)
    with pytest.raises(ValueError, match="has no trials table to align on; bin its "
                                         "units' spike times with "
                                         "sklearn_ltr.io.bin_spikes"):
        _read(no_trials)


def test_read_nwb_says_how_to_install_pynwb(tmp_path, monkeypatch):
    path = tmp_path / "session.nwb"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pynwb", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install pynwb .*pip install -e '
                                          r'"\.\[nwb\]"'):
        _read(path)


# --------------------------------------------------------------------------- #
# read_nwb on a real recording: the Neural Latents Benchmark's MC_Maze (test split)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def mc_maze(pynwb):
    if not MC_MAZE.is_file():
        pytest.skip(f"needs the shared recording {MC_MAZE}, which is absent (it is "
                    f"not part of a clone)")
    with pynwb.NWBHDF5IO(str(MC_MAZE), "r") as io, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # on the file's Device
        nwb = io.read()
        trials = nwb.trials.to_dataframe()
        units = nwb.units
        spikes = [np.asarray(units.get_unit_spike_times(i)) for i in range(len(units))]
        unit_ids = np.asarray(units.id[:])
    data = read_nwb(MC_MAZE, align="move_onset_time", window=(-0.25, 0.45),
                    bin_size=0.02)
    return data, trials, spikes, unit_ids


def test_mc_maze_counts_every_spike_inside_the_windows(mc_maze):
    data, trials, spikes, unit_ids = mc_maze
    assert data.X.shape == (100, 35, 107)
    np.testing.assert_array_equal(data.unit_ids, unit_ids)
    np.testing.assert_array_equal(data.trial_index, np.arange(100))
    assert set(data.trials.split) == {"test"}
    # Computed apart from read_nwb: the file's times in whole microseconds, the
    # windows from the trials table's own start times, bins by integer division.
    us = [np.rint(t * 1e6).astype(np.int64) for t in spikes]
    assert max(np.abs(t * 1e6 - u).max() for t, u in zip(spikes, us)) < 1e-3
    start_us = np.rint(trials["start_time"].to_numpy() * 1e6).astype(np.int64)
    align_us = np.rint(trials["move_onset_time"].to_numpy() * 1e6).astype(np.int64)
    np.testing.assert_array_equal(align_us - 250_000, start_us)  # window = trial
    expected = np.zeros((100, 35, len(spikes)), dtype=np.int64)
    for u, times in enumerate(us):
        for i, first in enumerate(start_us):
            rel = times[(times >= first) & (times < first + 700_000)] - first
            expected[i, :, u] = np.bincount(rel // 20_000, minlength=35)
    np.testing.assert_array_equal(data.X, expected)
    # The per-bin check above covers the spikes that lie exactly on bin edges.
    on_edges = sum((((t[:, None] - start_us[None, :]) % 20_000 == 0)
                    & (t[:, None] >= start_us) & (t[:, None] < start_us + 700_000)
                    ).sum() for t in us)
    assert on_edges > 10


def test_mc_maze_total_equals_spikes_inside_the_trials(mc_maze):
    data, trials, spikes, _ = mc_maze
    start, stop = trials["start_time"].to_numpy(), trials["stop_time"].to_numpy()
    inside = sum(((t[:, None] >= start) & (t[:, None] < stop)).sum() for t in spikes)
    assert data.X.sum() == inside > 0


# --------------------------------------------------------------------------- #
# from_pynapple
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def nap():
    return pytest.importorskip(
        "pynapple", reason="from_pynapple is tested with pynapple: pip install "
                           "pynapple")


def _tsgroup(nap):
    rng = np.random.RandomState(0)
    trains = {3: np.sort(rng.uniform(0, 10, 2000)), 7: np.sort(rng.uniform(0, 10, 500)),
              8: np.array([])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynapple's notes on the empty unit
        group = nap.TsGroup({k: nap.Ts(t=v) for k, v in trains.items()},
                            time_support=nap.IntervalSet(start=0, end=10))
    return group, list(trains.values())


def test_from_pynapple_agrees_with_bin_spikes_and_pynapple_counts(nap):
    group, trains = _tsgroup(nap)
    align = np.array([1.0, 2.0, 5.123, 9.25])
    expected = bin_spikes(trains, align, (-0.25, 0.45), 0.02)
    for events in (align, nap.Ts(t=align), nap.Tsd(t=align, d=np.arange(4)),
                   nap.IntervalSet(start=align, end=align + 0.5)):
        data = from_pynapple(group, events, (-0.25, 0.45), 0.02)
        np.testing.assert_array_equal(data.X, expected)
    np.testing.assert_array_equal(data.unit_ids, [3, 7, 8])
    np.testing.assert_array_equal(data.align_times, align)
    np.testing.assert_allclose(data.bin_centers, bin_centers((-0.25, 0.45), 0.02))
    # pynapple's own binning of the same (non-overlapping) windows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = group.count(0.02, nap.IntervalSet(start=align - 0.25,
                                                   end=align + 0.45))
    np.testing.assert_array_equal(np.asarray(counts).reshape(4, 35, 3), data.X)
    assert data.X.sum() > 100


def test_from_pynapple_refuses_windows_outside_the_time_support(nap):
    group, _ = _tsgroup(nap)
    with pytest.raises(ValueError, match=r"the windows of 1 of 2 trials run outside "
                                         r"the TsGroup's time_support \(first: trial "
                                         r"1, window 9.75..10.45\)"):
        from_pynapple(group, [1.0, 10.0], (-0.25, 0.45), 0.02)


def test_from_pynapple_refuses_other_objects():
    with pytest.raises(TypeError, match="expects a pynapple TsGroup, got list"):
        from_pynapple([[0.1, 0.2]], [0.0], (0, 1), 0.5)
