"""sklearn_ltr.io: spike times to counts, from arrays, NWB files and pynapple."""

from pathlib import Path

import numpy as np
import pytest

from sklearn_ltr.io import (
    EDGE_TOLERANCE,
    bin_centers,
    bin_spikes,
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
