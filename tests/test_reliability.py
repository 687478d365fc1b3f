"""Reliability beyond the bad-input catalogue (issue 19): no silent wrong result, no
raw traceback, nothing half-done.

1. A fit is all or nothing: a failed fit leaves the estimator unfitted, and the
   fitted state is published in one step (a pickle or save from another thread
   sees the old complete state or the new one).
2. Ctrl-C from the first instruction of ``fit``: before the first parameters
   exist the estimator is left unfitted and the interrupt propagates; after, the
   best parameters are kept with a warning; no import is left half-done.
"""

import io
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from _checks import ALL, RNNS, WRAPPERS, assert_same_state, class_id, make_small
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

import sklearn_ltr
from sklearn_ltr import TCA, _solver, rnn
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

_ids = class_id


@pytest.fixture(scope="module")
def X():
    X = make_low_tensor_rank_rnn(n_trials=12, n_timepoints=8, n_neurons=6, rank=2,
                                 random_state=0).X
    X.setflags(write=False)
    return X


def _assert_unfitted(est):
    """Unfitted, and nothing of an earlier fit is left (not even private state)."""
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    assert set(vars(est)) == set(est.get_params(deep=False))


# --------------------------------------------------------------------------- #
# 1. all or nothing
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ALL + WRAPPERS, ids=_ids)
def test_failed_refit_leaves_the_estimator_unfitted(Est, X):
    est = make_small(Est).fit(X)
    with pytest.raises(ValueError):
        est.fit(X[0])  # 2D: refused
    _assert_unfitted(est)
    if hasattr(est, "save"):
        with pytest.raises(NotFittedError):
            est.save(io.BytesIO())
    est.fit(X)
    check_is_fitted(est)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_refit_with_an_invalid_parameter_leaves_the_estimator_unfitted(Est, X):
    # The case: a refit refused for its parameters kept the old fit, which
    # save then wrote to a file that load refused.
    est = make_small(Est).fit(X)
    with pytest.raises(ValueError, match="rank=99 must be <= n_units"):
        est.set_params(rank=99).fit(X)
    _assert_unfitted(est)


def _unpickled_state(blob):
    """'unfitted', or the fitted state of a pickle, checked to predict."""
    est = pickle.loads(blob)
    try:
        check_is_fitted(est)
    except NotFittedError:
        assert set(vars(est)) == set(est.get_params(deep=False))
        return "unfitted"
    return est


def _same_state(a, b):
    try:
        assert_same_state(a, b)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("Est", RNNS + [TCA], ids=_ids)
def test_concurrent_pickles_and_saves_see_a_complete_state(Est, X):
    # A fit in this thread while another pickles and saves the estimator in a loop:
    # every copy is the previous fit or the new one, complete, never a mixture.
    est = make_small(Est, rnn={"max_iter": 60}, tca={"max_iter": 1500, "tol": 0})
    est.fit(X[:8])
    old = pickle.loads(pickle.dumps(est))
    stop = threading.Event()
    blobs, saved, errors = [], [], []

    def copy_in_a_loop():
        while not stop.is_set():
            try:
                blobs.append(pickle.dumps(est))
                buffer = io.BytesIO()
                est.save(buffer)
                saved.append(buffer.getvalue())
            except Exception as exc:  # any failure of a copy is a failure
                errors.append(exc)
            time.sleep(0.01)  # leave the fit most of the time

    thread = threading.Thread(target=copy_in_a_loop)
    thread.start()
    try:
        est.fit(X)  # more trials: a different state
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert len(blobs) > 3 and not _same_state(est, old)
    for blob in blobs:
        copy = _unpickled_state(blob)
        assert copy != "unfitted"  # the previous fit was complete
        assert _same_state(copy, old) or _same_state(copy, est)
        assert np.isfinite(copy.predict(X[:2])).all()
    predictions = [old.predict(X[:2]), est.predict(X[:2])]
    for data in saved:
        pred = sklearn_ltr.load(io.BytesIO(data)).predict(X[:2])
        assert any(np.array_equal(pred, p) for p in predictions)


# --------------------------------------------------------------------------- #
# 2. Ctrl-C from the first instruction of fit
# --------------------------------------------------------------------------- #
def _interrupt_first_call(monkeypatch, owner, name):
    """Make ``owner.name`` raise KeyboardInterrupt on its first call only."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupting)
    return calls


@pytest.mark.parametrize("target", ["optimizer", "snapshot"])
@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_interrupt_while_the_optimiser_is_built_keeps_the_initialisation(
        Est, X, monkeypatch, target):
    # Ctrl-C as the first optimiser (or the solver's first snapshot) is built:
    # the initial parameters are the best so far; kept, with a warning.
    if target == "optimizer":
        calls = _interrupt_first_call(monkeypatch, torch.optim, "Adam")
    else:
        calls = _interrupt_first_call(monkeypatch, _solver, "BestSnapshot")
    est = make_small(Est, solver="adam")
    with pytest.warns(UserWarning, match="interrupted after 0 iterations; the best "
                                         "parameters so far are kept"):
        est.fit(X)
    assert calls["n"] >= 1
    monkeypatch.undo()
    assert est.n_iter_ == 0 and np.isfinite(est.best_loss_)
    assert np.isfinite(est.predict(X[:3])).all()
    buffer = io.BytesIO()
    est.save(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(sklearn_ltr.load(buffer).predict(X[:3]),
                                  est.predict(X[:3]))
    # The next fit in the process is a normal one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = est.fit(X)
    assert not [w for w in caught if "interrupted" in str(w.message)]
    assert again.n_iter_ > 0
    np.testing.assert_array_equal(again.predict(X[:3]),
                                  make_small(Est, solver="adam").fit(X).predict(X[:3]))


@pytest.mark.parametrize("where", ["check_training_trials", "_standardisation"])
@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_interrupt_before_any_parameter_leaves_the_estimator_unfitted(
        Est, X, monkeypatch, where):
    # Nothing fitted yet to keep: the interrupt propagates and the earlier fit is
    # gone (as after any failed fit); the next fit works.
    est = make_small(Est).fit(X)
    _interrupt_first_call(monkeypatch, rnn, where)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X)
    _assert_unfitted(est)
    est.fit(X)
    assert np.isfinite(est.predict(X[:2])).all()


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_interrupt_after_the_last_iteration_keeps_the_fit(Est, X, monkeypatch):
    _interrupt_first_call(monkeypatch, rnn, "_store_candidates")
    with pytest.warns(UserWarning, match="interrupted after its last iteration"):
        est = make_small(Est).fit(X)
    monkeypatch.undo()
    np.testing.assert_array_equal(est.predict(X[:3]),
                                  make_small(Est).fit(X).predict(X[:3]))


_LAZY_IMPORTS = textwrap.dedent("""
    import sys, warnings
    import numpy as np
    from sklearn_ltr import (TCA, ConditionAverage, LowRankRNN, LowTensorRankRNN,
                             TrialPCA, preprocessing)
    warnings.simplefilter("ignore")
    X = np.abs(np.random.RandomState(0).standard_normal((12, 8, 6)))
    before = set(sys.modules)
    small = dict(rank=2, n_units=8, max_iter=5, infer_max_iter=3)
    models = [LowTensorRankRNN(solver="adam", verbose=1, **small),
              LowTensorRankRNN(solver="lbfgs-adam", **small),
              LowRankRNN(loss="poisson", **small), TCA(rank=2, max_iter=5),
              TCA(rank=2, max_iter=5, nonneg=True), TrialPCA(rank=2),
              ConditionAverage(), preprocessing.StandardScaler3D(),
              preprocessing.SoftNormalizer(), preprocessing.GaussianSmoother(),
              preprocessing.TrialCropper(1)]
    for est in models:
        est.fit(X)
        for method in ("transform", "predict", "score"):
            if hasattr(est, method):
                getattr(est, method)(X)
    print(sorted(set(sys.modules) - before))
""")


@pytest.mark.slow  # a fresh process: imports the package (seconds)
def test_fits_import_nothing_a_ctrl_c_could_cut_in_half():
    # A fresh process: everything a fit needs is imported with the package (the
    # first optimiser used to import torch._dynamo and sympy, 800 modules, in the
    # first fit; a Ctrl-C there broke every later fit of the process).
    out = subprocess.run([sys.executable, "-c", _LAZY_IMPORTS], capture_output=True,
                         text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
