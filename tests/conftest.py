import numpy as np
import pytest

from sklearn_ltr.datasets import make_low_tensor_rank_rnn


@pytest.fixture(scope="session")
def planted():
    """Planted rank-3 low-tensor-rank RNN data whose trial factors follow learning curves."""
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
