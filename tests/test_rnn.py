"""The fitted state of the recurrent networks: attributes and the weight tensor.

Their API contract is checked with every other class in test_common.py; their
features (inputs, conditions, losses, solvers) in test_rnn_features.py.
"""

import numpy as np
import pytest
from _checks import RNNS, class_id, make_small

from sklearn_ltr import LowRankRNN, LowTensorRankRNN

# Small models stop at max_iter on purpose (speed); that is not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RANK = 2  # make_small's default


@pytest.fixture(scope="module")
def fitted(small):
    return {Est: make_small(Est).fit(small.X) for Est in RNNS}


@pytest.mark.parametrize("Est", RNNS, ids=class_id)
def test_fitted_attributes_shapes(Est, small, fitted):
    est = fitted[Est]
    n_trials, _, n_neurons = small.X.shape
    n_units = est.n_units
    assert est.left_factors_.shape == (n_units, RANK)
    assert est.right_factors_.shape == (n_units, RANK)
    assert est.readout_.shape == (n_neurons, n_units)
    if Est is LowTensorRankRNN:
        assert est.trial_factors_.shape == (n_trials, RANK)
    else:
        assert not hasattr(est, "trial_factors_")
    assert isinstance(est.loss_curve_, list)
    assert len(est.loss_curve_) == est.n_iter_
    assert 1 <= est.n_iter_ <= est.max_iter
    for name in ["left_factors_", "right_factors_", "readout_"]:
        value = getattr(est, name)
        assert isinstance(value, np.ndarray), name
        assert np.all(np.isfinite(value)), name
    assert np.all(np.isfinite(est.loss_curve_))
    # Fitting reduced the loss (the first n_forced_ losses are teacher-forced).
    assert est.n_forced_ == min(est.forcing_iter, est.max_iter // 3)
    assert est.loss_curve_[-1] < est.loss_curve_[est.n_forced_]


@pytest.mark.parametrize("Est", RNNS, ids=class_id)
def test_weight_tensor(Est, small, fitted):
    est = fitted[Est]
    n_trials = small.X.shape[0]
    W = est.weight_tensor()
    assert W.shape == (n_trials, est.n_units, est.n_units)
    A, B = est.left_factors_, est.right_factors_
    if Est is LowTensorRankRNN:
        C = est.trial_factors_
    else:
        C = np.ones((n_trials, RANK))
    expected = np.einsum("kr,ir,jr->kij", C, A, B) / est.n_units
    np.testing.assert_allclose(W, expected, rtol=1e-10, atol=1e-12)
    if Est is LowRankRNN:
        np.testing.assert_array_equal(W, np.broadcast_to(W[0], W.shape))
    # The stack of weight matrices is (at most) rank R in every unfolding.
    assert np.linalg.matrix_rank(W.reshape(n_trials * est.n_units, -1)) <= RANK
