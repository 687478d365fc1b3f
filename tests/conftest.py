import numpy as np
import pytest

from sklearn_ltr.datasets import make_low_tensor_rank_rnn

# tests/data holds model files written once by an old version, with the script that
# wrote them. --doctest-modules would import that script, which runs it and rewrites
# the files with the current version: they would no longer stand for users' files.
collect_ignore_glob = ["data/*"]

# Scheduling for ``pytest -n auto``: with two workers the suite's wall time is set by
# its longest tests, so they start first, longest first, and the many short tests fill
# in behind them. Seconds from --durations of the whole suite on 2 workers (shared
# 2-core machine, load 3-5, 2026-12-04); the order is what matters, and a test missing
# here only starts later.
SLOW_TESTS = {
    "test_benchmarks.py::test_bench_fit_large_quick": 63,
    "test_benchmarks.py::test_bench_fit_quick": 40,
    "test_learning.py::"
    "test_grid_search_chooses_the_trial_length_scale_within_a_factor_of_two": 32,
    "test_ground_truth.py::test_no_false_discovery_of_learning": 30,
    "test_dask.py::test_grid_search_on_dask_cluster_matches_loky": 30,
    "test_benchmarks.py::test_bench_learning_test_quick": 25,
    "test_reliability.py::test_memory_estimate_of_large_networks_matches_measured_peak"
    "[many-trials]": 23,
    "test_benchmarks.py::test_bench_spikes_quick": 21,
    "test_cli.py::test_demo_prints_table_and_writes_figure": 21,
    "test_motor_learning.py::test_default_session_shows_its_learning_above_the_noise":
        21,
    "test_cli.py::test_ctrl_c_stops_the_run_and_keeps_earlier_results[2]": 20,
    "test_cli.py::test_ctrl_c_stops_the_run_and_keeps_earlier_results[1]": 19,
    "test_examples.py::test_example_runs_in_fast_mode[plot_quick_start.py]": 17,
    "test_examples.py::test_example_runs_in_fast_mode[plot_compare_baselines.py]": 17,
    "test_determinism.py::test_rnn_memory_estimate_matches_measured_peak": 17,
    "test_examples.py::test_example_runs_in_fast_mode[plot_task_trained_rnn.py]": 16,
    "test_determinism.py::test_grid_search_n_jobs_gives_identical_scores[LowRankRNN]":
        16,
    "test_reliability.py::test_memory_estimate_of_large_networks_matches_measured_peak"
    "[lbfgs-history]": 16,
    "test_examples.py::test_example_runs_in_fast_mode[plot_bci_learning.py]": 15,
    "test_cli.py::test_select_rank_reads_an_nwb_file": 13,
    "test_persistence.py::test_importing_the_package_registers_every_class": 13,
    "test_examples.py::test_example_runs_in_fast_mode[plot_pipeline_grid_search.py]":
        12,
    "test_cli.py::test_ctrl_c_stops_the_learning_test": 12,
    "test_cli.py::test_both_networks_match_the_target_average_on_the_bci_recordings":
        11,
    "test_ground_truth.py::test_grid_search_n_jobs_gives_identical_scores": 12,
    "test_reliability.py::test_memory_estimate_of_large_networks_matches_measured_peak"
    "[network-size]": 12,
}
# Module-scoped fixtures that take tens of seconds, with the tests that use them and
# their seconds together: such a group runs on one worker, so that its fixture is
# computed once.
SHARED_FIXTURES = {
    ("test_ground_truth.py", "ltr_search"): (61, [
        "test_grid_search_recovers_planted_rank",
        "test_ltr_beats_low_rank_when_connectivity_learns"]),
    ("test_motor_learning.py", "session"): (50, [
        "test_shapes_and_contents", "test_weights_change_only_through_learning",
        "test_pretraining_reaches_proficiency", "test_learning_curve",
        "test_lateral_after_effect", "test_weight_changes_have_low_tensor_rank",
        "test_fitted_trial_factors_recover_weight_tensor_factors",
        "test_held_out_score_prefers_tensor_rank_over_rank_one",
        "test_networks_with_inputs_beat_the_condition_average_on_held_out_blocks"]),
}
GROUP_OF = {f"{module}::{test}": f"{module}::{fixture}"
            for (module, fixture), (_, tests) in SHARED_FIXTURES.items()
            for test in tests}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Longest work first: the groups of SHARED_FIXTURES, then SLOW_TESTS."""
    key = {}
    for item in items:
        name = f"{item.path.name}::{item.name}"
        key[item] = (True, -SLOW_TESTS.get(name, 0), "")
        for (module, fixture), (seconds, tests) in SHARED_FIXTURES.items():
            uses = (item.path.name == module
                    and fixture in getattr(item, "fixturenames", ()))
            if uses != (item.name in tests and item.path.name == module):
                raise pytest.UsageError(
                    f"{name} {'uses' if uses else 'does not use'} the fixture "
                    f"{fixture!r}: {'add it to' if uses else 'remove it from'} that "
                    f"fixture's tests in SHARED_FIXTURES (tests/conftest.py).")
            if uses:
                key[item] = (False, -seconds, fixture)
    # Ties keep the collection order (sorted is stable), so the tests of a module
    # still share its module-scoped fixtures.
    items[:] = sorted(items, key=key.__getitem__)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """For ``-n`` (``--dist load``): tests one by one in the order above, each group
    of SHARED_FIXTURES as one unit.

    (xdist's own ``xdist_group`` marks do not group under pytest 9.2: xdist 3.8 sets a
    node id attribute that pytest no longer reads.)
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SlowFirstScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return GROUP_OF.get(nodeid.rpartition("/")[2], nodeid)

    return SlowFirstScheduling(config, log)


@pytest.fixture(scope="session")
def planted():
    """Planted rank-3 low-tensor-rank RNN data; trial factors follow learning curves."""
    return make_low_tensor_rank_rnn(n_trials=60, n_timepoints=25, n_neurons=30, rank=3,
                                    noise=0.2, random_state=0)


@pytest.fixture(scope="session")
def planted_constant():
    """The same generator with constant trial factors (no learning)."""
    return make_low_tensor_rank_rnn(n_trials=60, n_timepoints=25, n_neurons=30, rank=3,
                                    noise=0.2, trial_factors="constant", random_state=0)


@pytest.fixture(scope="session")
def small():
    """Small planted data for fast API tests."""
    return make_low_tensor_rank_rnn(n_trials=20, n_timepoints=12, n_neurons=10, rank=2,
                                    random_state=0)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture(scope="session")
def cp_data():
    """Planted rank-2 CP tensor (trials x time x neurons) with smoothed noise."""
    rng = np.random.RandomState(0)
    n_trials, n_timepoints, n_neurons = 40, 20, 12
    trial = 1 + 0.5 * np.stack([np.linspace(0, 1, n_trials),
                                np.cos(np.linspace(0, 3, n_trials))], 1)
    time_f = np.stack([np.sin(np.linspace(0, np.pi, n_timepoints)),
                       np.linspace(-1, 1, n_timepoints)], 1)
    neuron = rng.randn(n_neurons, 2)
    X = np.einsum("kr,tr,nr->ktn", trial, time_f, neuron)
    noise = rng.randn(*X.shape)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), 1, noise)
    X = X + 0.3 * noise / noise.std()
    # Learning epoch: the first trial factor rises over trials.
    epoch = (np.arange(n_trials) >= n_trials // 2).astype(int)
    X.setflags(write=False)  # shared by the whole session: tests must not modify it
    return X, epoch
