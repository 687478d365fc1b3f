import numpy as np
import pytest

from sklearn_ltr.datasets import make_low_tensor_rank_rnn

# tests/data holds model files written once by an old version, with the script that
# wrote them. --doctest-modules would import that script, which runs it and rewrites
# the files with the current version: they would no longer stand for users' files.
collect_ignore_glob = ["data/*"]


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
