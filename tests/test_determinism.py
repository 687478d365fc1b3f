"""Determinism and robustness of fitting: seeds, joblib backends, global state,
thread counts, interruption, divergence, and the memory check before a fit."""

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from _checks import ESTIMATORS, RNNS, class_id, make_small
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_info

import sklearn_ltr
from sklearn_ltr import (
    TCA,
    LowRankRNN,
    LowTensorRankRNN,
    TrialPCA,
    _memory,
    _model,
    _solver,
    _torch_utils,
)
from sklearn_ltr.baselines import _TRIALPCA_BYTES_PER_ENTRY, _tca_bytes_per_entry
from sklearn_ltr.datasets import make_low_tensor_rank_rnn
from sklearn_ltr.rnn import _check_fit_memory, _fit_memory

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

K, T, N, RANK = 16, 10, 8, 2
_ids = class_id


def _data():
    return make_low_tensor_rank_rnn(n_trials=K, n_timepoints=T, n_neurons=N, rank=RANK,
                                    random_state=0).X


@pytest.fixture(scope="module")
def X():
    X = _data()
    X.setflags(write=False)
    return X


def _fitted_state(Est, X=None):
    """Every fitted array and number of a fit, plus its outputs on a few trials.

    Module-level (and rebuilding the data when X is None) so that joblib's process
    backend can run it in a worker.
    """
    X = _data() if X is None else X
    est = make_small(Est).fit(X)
    state = {k: v for k, v in vars(est).items()
             if k.endswith("_") and isinstance(v, (np.ndarray, float, int, list))}
    state["transform"] = est.transform(X[:3])
    state["predict"] = est.predict(X[:3])
    state["score"] = est.score(X[:3])
    return state


def _assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]),
                                      err_msg=key)


# --------------------------------------------------------------------------- #
# 1. same seed, same result
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_joblib_backends_match_a_serial_fit(backend, X):
    serial = [_fitted_state(Est) for Est in ESTIMATORS]
    parallel = Parallel(n_jobs=2, backend=backend)(
        delayed(_fitted_state)(Est) for Est in ESTIMATORS)
    for Est, a, b in zip(ESTIMATORS, serial, parallel):
        _assert_bitwise_equal(a, b)


@pytest.mark.parametrize("Est", [LowRankRNN, TCA, TrialPCA], ids=_ids)
def test_grid_search_n_jobs_gives_identical_scores(Est, X):
    # (LowTensorRankRNN: tests/test_ground_truth.py.)
    cv = KFold(2, shuffle=True, random_state=0)
    grid = {"rank": [1, 2]}
    one = GridSearchCV(make_small(Est), grid, cv=cv, n_jobs=1,
                       error_score="raise").fit(X)
    two = GridSearchCV(make_small(Est), grid, cv=cv, n_jobs=2,
                       error_score="raise").fit(X)
    np.testing.assert_array_equal(one.cv_results_["mean_test_score"],
                                  two.cv_results_["mean_test_score"])
    assert np.isfinite(one.cv_results_["mean_test_score"]).all()


# --------------------------------------------------------------------------- #
# 2. no global side effects
# --------------------------------------------------------------------------- #
def _blas_threads():
    return [(info["internal_api"], info["num_threads"]) for info in threadpool_info()]


@pytest.fixture
def two_torch_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(old)


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize("Est, target", [
    (LowTensorRankRNN, "sklearn_ltr._solver.optimize"),
    (LowRankRNN, "sklearn_ltr._model.initialize"),
    (TCA, "tensorly.decomposition.parafac"),
    (TrialPCA, "sklearn.decomposition.PCA.fit"),
], ids=["LowTensorRankRNN", "LowRankRNN", "TCA", "TrialPCA"])
def test_thread_counts_restored_when_fit_raises(Est, target, X, two_torch_threads,
                                                monkeypatch):
    blas = _blas_threads()
    monkeypatch.setattr(target, _boom)
    est = make_small(Est, n_threads=1)
    with pytest.raises(RuntimeError, match="boom"):
        est.fit(X)
    assert torch.get_num_threads() == two_torch_threads
    assert _blas_threads() == blas
    # A failed fit leaves the estimator unfitted, not half-fitted.
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_thread_count_restored_when_inference_raises(Est, X, two_torch_threads,
                                                     monkeypatch):
    est = make_small(Est, n_threads=1).fit(X)
    monkeypatch.setattr(_solver, "optimize_per_trial", _boom)
    for method in ("transform", "predict", "score"):
        with pytest.raises(RuntimeError, match="boom"):
            getattr(est, method)(X[:3])
        assert torch.get_num_threads() == two_torch_threads


@pytest.fixture(params=[False, True], ids=["denormals-kept", "denormals-flushed"])
def caller_denormal_mode(request):
    """The caller's flush-denormal mode, restored to torch's default afterwards."""
    assert torch.set_flush_denormal(request.param) or not request.param
    yield request.param
    torch.set_flush_denormal(False)


def test_flush_denormals_sets_and_restores_the_mode(caller_denormal_mode):
    tiny = torch.full((3,), 1e-40, dtype=torch.float32)  # a float32 denormal
    with _torch_utils.flush_denormals():
        assert _torch_utils._flushing_denormals()
        assert float((tiny * 1.0).max()) == 0.0
    assert _torch_utils._flushing_denormals() == caller_denormal_mode
    with pytest.raises(RuntimeError, match="boom"):
        with _torch_utils.flush_denormals():
            _boom()
    assert _torch_utils._flushing_denormals() == caller_denormal_mode
    if not caller_denormal_mode:
        assert float((tiny * 1.0).max()) > 0.0


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_rnn_calls_leave_the_callers_denormal_mode(Est, X, caller_denormal_mode,
                                                   monkeypatch):
    est = make_small(Est).fit(X)
    assert _torch_utils._flushing_denormals() == caller_denormal_mode
    for method in ("transform", "predict", "score"):
        getattr(est, method)(X[:3])
        assert _torch_utils._flushing_denormals() == caller_denormal_mode, method
    monkeypatch.setattr(_solver, "optimize", _boom)
    with pytest.raises(RuntimeError, match="boom"):
        make_small(Est).fit(X)
    assert _torch_utils._flushing_denormals() == caller_denormal_mode


def test_threading_backend_leaves_caller_threads(X, two_torch_threads):
    Parallel(n_jobs=2, backend="threading")(
        delayed(_fitted_state)(Est, X) for Est in RNNS * 2)
    assert torch.get_num_threads() == two_torch_threads


# --------------------------------------------------------------------------- #
# 3. Ctrl-C during fit
# --------------------------------------------------------------------------- #
def _interrupt_at(monkeypatch, module, name, at):
    """Make ``module.name`` raise KeyboardInterrupt on its ``at``-th call."""
    original = getattr(module, name)
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupting)
    return calls


@pytest.mark.parametrize("forcing", [0.0, 0.5], ids=["free", "warm-start"])
@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_interrupted_rnn_fit_is_usable(Est, X, monkeypatch, tmp_path, forcing):
    # Adam evaluates the loss once per iteration: Ctrl-C in the 12th evaluation
    # stops it after 11 iterations (test_rnn_features covers the default solver);
    # with teacher forcing, inside the warm start (100 iterations), whose
    # free-running loss is also evaluated after its 10th iteration. Every
    # evaluation, forced or with the projected readout, computes _gain_drive once.
    _interrupt_at(monkeypatch, _model, "_gain_drive", at=13 if forcing else 12)
    est = make_small(Est, max_iter=500, solver="adam", teacher_forcing=forcing)
    with pytest.warns(UserWarning, match="interrupted after 11 iterations; the best "
                                         "parameters so far are kept"):
        est.fit(X)
    monkeypatch.undo()
    assert est.n_iter_ == 11 and len(est.loss_curve_) == 11
    if forcing:
        # Only forced losses so far: best_loss_ is the free-running loss of the
        # parameters where the warm start stopped, evaluated once more. The
        # readout was stepped throughout: no least-squares ridge was used.
        assert est.n_forced_ == 11
        assert np.isfinite(est.best_loss_) and est.best_loss_ > 0
        assert est.readout_ridge_ is None
    else:
        assert est.n_forced_ == 0
        assert est.best_loss_ == pytest.approx(min(est.loss_curve_), rel=1e-6)
        assert est.readout_ridge_ in _model.READOUT_RIDGES
    for value in (est.left_factors_, est.right_factors_, est.readout_):
        assert np.isfinite(value).all()
    assert np.isfinite(est.predict(X[:3])).all() and np.isfinite(est.score(X[:3]))
    est.save(tmp_path / "interrupted.npz")
    np.testing.assert_array_equal(sklearn_ltr.load(tmp_path / "interrupted.npz")
                                  .predict(X[:3]), est.predict(X[:3]))


def test_interrupt_in_a_later_initialisation_keeps_the_best(X, monkeypatch):
    # 25 iterations of the first initialisation (and one evaluation of where its
    # 8-iteration warm start ended), then Ctrl-C in the second.
    _interrupt_at(monkeypatch, _model, "_gain_drive", at=26 + 6)
    est = make_small(LowTensorRankRNN, n_init=2, max_iter=25, n_iter_no_change=100,
                     solver="adam")
    with pytest.warns(UserWarning, match="interrupted after 5 iterations of "
                                         "initialisation 2/2"):
        est.fit(X)
    monkeypatch.undo()
    first = make_small(LowTensorRankRNN, max_iter=25, n_iter_no_change=100,
                       solver="adam").fit(X)
    # Either the first initialisation (complete) or the second (5 iterations) is
    # kept, whichever reached the lower loss.
    assert est.best_loss_ <= first.best_loss_
    assert np.isfinite(est.predict(X[:3])).all()


def test_interrupt_between_initialisations_keeps_the_earlier_ones(X, monkeypatch):
    _interrupt_at(monkeypatch, _model, "initialize", at=2)
    est = make_small(LowRankRNN, n_init=3)
    with pytest.warns(UserWarning, match="interrupted after 0 iterations of "
                                         "initialisation 2/3"):
        est.fit(X)
    monkeypatch.undo()
    single = make_small(LowRankRNN, n_init=1).fit(X)
    np.testing.assert_array_equal(est.left_factors_, single.left_factors_)
    # With no initialisation done yet, there is nothing to keep.
    _interrupt_at(monkeypatch, _model, "initialize", at=1)
    est = make_small(LowRankRNN)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X)
    with pytest.raises(NotFittedError):
        check_is_fitted(est)


def test_interrupted_tca_keeps_the_last_iterate(X, monkeypatch):
    import tensorly.decomposition._cp as cp_module

    _interrupt_at(monkeypatch, cp_module, "unfolding_dot_khatri_rao", at=3 * 6 + 1)
    with pytest.warns(UserWarning, match="TCA.fit was interrupted after 6 iterations"):
        est = make_small(TCA, tol=0).fit(X)
    monkeypatch.undo()
    assert est.n_iter_ == 6
    reference = make_small(TCA, tol=0, max_iter=6).fit(X)
    np.testing.assert_allclose(est.trial_factors_, reference.trial_factors_,
                               rtol=1e-10, atol=1e-12)
    assert np.isfinite(est.predict(X[:3])).all()


def test_interrupted_nonneg_tca(X, monkeypatch):
    import tensorly.decomposition._nn_cp as nn_module

    # In the first (only) fit there is nothing to keep: the interrupt propagates and
    # the estimator stays unfitted.
    _interrupt_at(monkeypatch, nn_module, "unfolding_dot_khatri_rao", at=5)
    est = make_small(TCA, nonneg=True)
    with pytest.raises(KeyboardInterrupt):
        est.fit(np.abs(X))
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    monkeypatch.undo()
    # In a later initialisation, the earlier ones are kept.
    calls = _interrupt_at(monkeypatch, nn_module, "unfolding_dot_khatri_rao",
                          at=10 ** 9)
    make_small(TCA, nonneg=True, n_init=1, tol=0, max_iter=20).fit(np.abs(X))
    per_fit = calls["n"]
    monkeypatch.undo()
    _interrupt_at(monkeypatch, nn_module, "unfolding_dot_khatri_rao", at=per_fit + 5)
    with pytest.warns(UserWarning, match="TCA.fit was interrupted"):
        est = make_small(TCA, nonneg=True, n_init=2, tol=0, max_iter=20).fit(np.abs(X))
    assert np.isfinite(est.predict(np.abs(X[:3]))).all()


# --------------------------------------------------------------------------- #
# 4. diverging fits
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("solver", ["adam", "lbfgs-adam"])
@pytest.mark.parametrize("Est", RNNS, ids=_ids)
@pytest.mark.parametrize("scale", [1.0, 1e8])
def test_absurd_learning_rate_never_gives_nan(Est, scale, X, solver):
    est = make_small(Est, learning_rate=1e3, max_iter=60, solver=solver)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(X * scale)
    except ValueError as exc:
        assert "diverged" in str(exc) and "lower learning_rate" in str(exc)
        return
    for key in ("left_factors_", "right_factors_", "readout_", "readout_bias_",
                "initial_states_"):
        assert np.isfinite(getattr(est, key)).all(), key
    assert np.isfinite(est.predict(X[:3] * scale)).all()
    if solver != "adam":
        # The L-BFGS start lowered the loss before Adam's steps overshoot; its best
        # point is kept.
        assert est.best_loss_ < est.loss_curve_[est.n_forced_]
        return
    # The steps overshoot from the first one: the user is told to lower the rate.
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert any("did not decrease the loss" in m and "lower learning_rate" in m
               for m in messages), messages


@pytest.mark.parametrize("forcing, remedy", [
    # The warm start diverges first; it runs at its own rate, which learning_rate
    # does not change.
    (0.5, r"warm start became non-finite .* Remedies: teacher_forcing=0 "),
    # L-BFGS (solver='auto' with the projected readout) at its initial step 1.
    (0.0, r"Remedies: lower learning_rate \(now 1.0\)")])
@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_persistently_nonfinite_loss_is_a_clear_error(Est, X, monkeypatch, forcing,
                                                      remedy):
    # Every loss non-finite: the forced and probed ones (evaluate_loss) and
    # those of the projected readout (readout_loss).
    evaluate_loss, readout_loss = _model.evaluate_loss, _model.readout_loss

    def nan_loss(*args, **kwargs):
        kappa, value = evaluate_loss(*args, **kwargs)
        return kappa, value * float("nan")

    monkeypatch.setattr(_model, "evaluate_loss", nan_loss)
    monkeypatch.setattr(_model, "readout_loss",
                        lambda *a, **k: readout_loss(*a, **k) * float("nan"))
    est = make_small(Est, teacher_forcing=forcing)
    with pytest.raises(ValueError, match=r"fit diverged: .*" + remedy):
        est.fit(X)
    with pytest.raises(NotFittedError):
        est.predict(X)


# --------------------------------------------------------------------------- #
# 5. memory
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ESTIMATORS, ids=_ids)
def test_fit_refuses_when_memory_is_short(Est, X, monkeypatch):
    monkeypatch.setattr(_memory, "_available_memory", lambda device: 1000)
    est = make_small(Est)
    with pytest.raises(ValueError, match=rf"{Est.__name__}.fit on X of shape "
                                         rf"\({K}, {T}, {N}\).* would need about "
                                         rf"[\d.]+ (KiB|MiB) of memory on cpu, but "
                                         rf"only 1000 B is available\."):
        est.fit(X)
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    monkeypatch.setattr(_memory, "_available_memory", lambda device: 10 ** 12)
    est.fit(X)


def test_rnn_memory_check_on_cuda_counts_host_and_device(monkeypatch):
    available = {"cpu": 10 ** 12, "cuda": 10 ** 6}
    monkeypatch.setattr(_memory, "_available_memory",
                        lambda device: available[torch.device(device).type])
    est = LowTensorRankRNN(rank=3, n_units=200)
    shape = (300, 100, 80)
    # The default fit: L-BFGS (solver='auto') with the least-squares readout.
    host, device = _fit_memory(*shape, n_units=200, rank=3, device_type="cuda",
                               lbfgs_iter=est.max_iter, exact_readout=True)
    assert device > 10 ** 6
    with pytest.raises(ValueError, match=r"on cuda, but only 976.6 KiB is available. "
                                         r".*Or use device='cpu'"):
        _check_fit_memory(est, shape, 0, torch.device("cuda"))
    available["cuda"] = device
    _check_fit_memory(est, shape, 0, torch.device("cuda"))
    available["cpu"] = host - 1
    with pytest.raises(ValueError, match="on cpu"):
        _check_fit_memory(est, shape, 0, torch.device("cuda"))


def test_available_memory_sources(monkeypatch):
    cpu = _memory._available_memory("cpu")
    assert isinstance(cpu, int) and cpu > 0
    with open("/proc/meminfo") as f:
        total = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    assert cpu <= total * 1024
    # Without /proc/meminfo (and psutil), the free pages reported by sysconf.
    monkeypatch.setitem(sys.modules, "psutil", None)

    def no_file(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(_memory, "open", no_file, raising=False)
    pages = _memory._available_memory("cpu")
    assert pages == os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") or (
        abs(pages - os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        < 2 ** 27)  # free pages move while the test runs
    # Devices whose free memory cannot be known are not checked.
    assert _memory._available_memory("meta") is None
    _memory.check_memory(10 ** 18, "meta", what="anything", remedy="")


_MEASURE = textwrap.dedent("""
    import json, warnings
    import numpy as np, torch
    torch.set_num_threads(1)
    from sklearn_ltr import LowTensorRankRNN
    warnings.simplefilter("ignore")
    K, T, n, N, R = {shape}
    rng = np.random.RandomState(0)
    X = rng.standard_normal((K, T, n))
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    def status(field):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))
    # Warm up so that lazy initialisations inside torch are not counted.
    LowTensorRankRNN(rank=R, n_units=N, max_iter=2, infer_max_iter=2).fit(X[:4, :3])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident memory (VmHWM)
    before = status("VmRSS")
    LowTensorRankRNN(rank=R, n_units=N, max_iter=2, infer_max_iter=2).fit(X)
    print(json.dumps(status("VmHWM") - before))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="needs Linux's resettable peak resident memory")
def test_rnn_memory_estimate_matches_measured_peak():
    shape = (100, 50, 200, 200, 5)
    out = subprocess.run([sys.executable, "-c", _MEASURE.format(shape=shape)],
                         capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    host, device = _fit_memory(*shape[:3], n_units=shape[3], rank=shape[4])
    # About 72 MB measured; the estimate must be close, and not below by much.
    assert 0.85 * measured <= host + device <= 1.5 * measured, (measured, host + device)


@pytest.mark.parametrize("Est, params, missing, per_entry", [
    (TCA, {}, False, _tca_bytes_per_entry(False, False)),
    (TCA, {}, True, _tca_bytes_per_entry(False, True)),
    (TCA, {"nonneg": True}, True, _tca_bytes_per_entry(True, True)),
    (TrialPCA, {}, True, _TRIALPCA_BYTES_PER_ENTRY),
], ids=["TCA", "TCA-missing", "TCA-nonneg", "TrialPCA"])
def test_baseline_memory_estimates_match_tracemalloc(Est, params, missing, per_entry):
    rng = np.random.RandomState(0)
    X = rng.uniform(size=(60, 25, 40))
    if missing:
        X[rng.uniform(size=X.shape) < 0.1] = np.nan
    est = Est(rank=3, max_iter=3, **params) if Est is TCA else Est(rank=3, **params)
    tracemalloc.start()
    try:
        est.fit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    estimate = per_entry * X.size
    assert 0.9 * peak <= estimate <= 2.0 * peak, (peak / X.size, per_entry)
