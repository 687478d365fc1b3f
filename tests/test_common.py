"""The API contract of every public estimator and transformer of the package.

Each test is parametrised over the classes found in ``sklearn_ltr.__all__`` (see
``_checks.PUBLIC``), so a new class is checked without editing this file. Where a check
applies to some classes only, they are selected by what they can do (a method, a
parameter), never by name.

scikit-learn's data-free checks are called one by one; the data-dependent checks of
``check_estimator`` (which assume 2D ``(n_samples, n_features)`` input) are rewritten
here for 3D ``(n_trials, n_timepoints, n_neurons)`` trials, on small planted data and
small, fast models. What one family does with an input (its maths, or which edge
cases it accepts) is tested in that family's module.
"""

import contextlib
import importlib
import pickle
import pkgutil
import sys

import joblib
import numpy as np
import pytest
import scipy.sparse
import torch
from _checks import (
    DATA_FREE_CHECKS,
    PUBLIC,
    TRANSFORMERS,
    WRAPPERS,
    assert_same_outputs,
    assert_same_params,
    assert_same_state,
    class_id,
    has_param,
    make_small,
    methods,
    outputs,
)
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits
from torch.overrides import TorchFunctionMode

import sklearn_ltr
from sklearn_ltr import preprocessing

# Small models stop at max_iter on purpose (speed); that is not what is tested here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore::sklearn_ltr.base.MissingDataWarning"),
]

RANK = 2  # make_small's default


def _with(predicate):
    """The classes for which ``predicate(Est)`` holds."""
    return [Est for Est in PUBLIC if predicate(Est)]


@pytest.fixture(scope="module")
def X(small):
    X = small.X.copy()
    X.setflags(write=False)  # tests must not modify the shared data
    return X


@pytest.fixture(scope="module")
def X_nan(X):
    X_nan = X.copy()
    X_nan[np.random.RandomState(1).uniform(size=X.shape) < 0.15] = np.nan
    X_nan.setflags(write=False)
    return X_nan


class _FittedOnX(dict):
    """One instance per class, fitted on first use, shared by read-only tests."""

    def __init__(self, X):
        super().__init__()
        self.X = X

    def __missing__(self, Est):
        self[Est] = est = make_small(Est).fit(self.X)
        return est


@pytest.fixture(scope="module")
def fitted(X):
    return _FittedOnX(X)


def _float32(Est):
    """Whether ``Est`` computes in float32 with torch (its results agree to about
    1e-5 across batch sizes, not to the bit)."""
    return has_param(Est, "device")


# --------------------------------------------------------------------------- #
# 1. the classes, and scikit-learn's data-free checks
# --------------------------------------------------------------------------- #
def test_every_public_class_is_covered():
    # Every estimator a module of the package exports is exported by the package,
    # hence checked here.
    for info in pkgutil.iter_modules(sklearn_ltr.__path__, "sklearn_ltr."):
        if info.name == "sklearn_ltr.__main__":
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseEstimator):
                # (A base class is checked through the classes built on it.)
                assert any(issubclass(Est, obj) for Est in PUBLIC), (
                    f"{info.name}.{name}")
    assert {Est.__name__ for Est in TRANSFORMERS} == {
        name for name in preprocessing.__all__
        if isinstance(getattr(preprocessing, name), type)}
    for Est in PUBLIC:
        assert hasattr(Est, "fit"), Est
        assert hasattr(Est, "transform") or hasattr(Est, "predict"), Est


@pytest.mark.parametrize("Est, check_name", [
    pytest.param(Est, check, id=f"{Est.__name__}-{check}")
    for Est in PUBLIC for check in DATA_FREE_CHECKS
    # (scikit-learn runs this check only where parameters declare constraints.)
    if check != "check_param_validation" or hasattr(Est, "_parameter_constraints")])
def test_sklearn_data_free_check(Est, check_name):
    # Every check in 1.9.1 takes (name, estimator_orig); those that need data use
    # tiny 2D sets, so an estimator with default (large) parameters is fine. A
    # wrapper needs an estimator to wrap.
    est = make_small(Est) if Est in WRAPPERS else Est()
    getattr(estimator_checks, check_name)(Est.__name__, est)


@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
def test_tags_declare_3d_input_with_nan(Est):
    tags = make_small(Est).__sklearn_tags__()
    assert tags.input_tags.three_d_array and tags.input_tags.allow_nan
    assert not tags.input_tags.two_d_array


# --------------------------------------------------------------------------- #
# 2. fit, clone, parameters, outputs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
def test_fit_returns_self_and_keeps_params(Est, X):
    est = make_small(Est)
    before = clone(est)
    assert est.fit(X) is est
    assert_same_params(est, before)
    assert est.n_features_in_ == X.shape[2]


@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
@pytest.mark.parametrize("n_new", [1, 3])
def test_output_shapes_on_new_trials(Est, n_new, X, fitted):
    # One new trial is enough after fit (only fit needs several).
    est = fitted[Est]
    X_new = X[:n_new]
    out = outputs(est, X_new)
    _, n_timepoints, n_neurons = X.shape
    if "predict" in out:
        assert out["predict"].shape == (n_new, n_timepoints, n_neurons)
        score = est.score(X_new)
        assert np.isscalar(score) and np.isfinite(score)
        if "transform" in out:  # the latents
            assert out["transform"].shape == (n_new, n_timepoints, RANK)
    elif isinstance(est, OneToOneFeatureMixin):  # trials in, trials out
        assert out["transform"].shape[::2] == (n_new, n_neurons)
    else:  # one row of features per trial
        assert out["transform"].shape == (n_new, len(est.get_feature_names_out()))
    if "inverse_transform" in out:
        assert out["inverse_transform"].shape == X_new.shape


@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
@pytest.mark.parametrize("how", ["new", "clone-of-fitted"])
def test_unfitted_raises_not_fitted(Est, how, X, fitted):
    if how == "new":
        est = make_small(Est)
    else:
        check_is_fitted(fitted[Est])
        est = clone(fitted[Est])
        assert_same_params(est, fitted[Est])
    assert not hasattr(est, "n_features_in_")
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    for method in methods(est):
        with pytest.raises(NotFittedError):
            getattr(est, method)(X)
    if hasattr(est, "weight_tensor"):
        with pytest.raises(NotFittedError):
            est.weight_tensor()


@pytest.mark.parametrize(
    "Est", _with(lambda Est: hasattr(Est, "get_feature_names_out")), ids=class_id)
def test_feature_names(Est, X, fitted):
    names = fitted[Est].get_feature_names_out()
    if issubclass(Est, OneToOneFeatureMixin):  # the neurons
        assert list(names) == [f"x{i}" for i in range(X.shape[2])]
    else:  # one per output column
        assert len(names) == fitted[Est].transform(X[:1]).shape[-1]


@pytest.mark.parametrize("Est", _with(lambda Est: hasattr(Est, "inverse_transform")),
                         ids=class_id)
def test_inverse_transform_round_trip(Est, X_nan):
    est = make_small(Est).fit(X_nan)
    back = est.inverse_transform(est.transform(X_nan))
    np.testing.assert_array_equal(np.isnan(back), np.isnan(X_nan))
    np.testing.assert_allclose(back, X_nan, rtol=1e-12, atol=1e-12)
    # New trials, other units.
    X_new = 3.0 * X_nan[:2] + 1.0
    np.testing.assert_allclose(est.inverse_transform(est.transform(X_new)), X_new,
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- #
# 3. determinism, global state, threads
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
def test_same_random_state_gives_identical_fits(Est, X):
    a = make_small(Est).fit(X)
    b = make_small(Est).fit(X)
    assert_same_state(a, b)
    assert_same_outputs(outputs(a, X[:3]), outputs(b, X[:3]))


@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
def test_global_rngs_untouched(Est, X):
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    est = make_small(Est).fit(X)
    outputs(est, X[:3])
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]


# The linear algebra whose thread count n_threads sets: LAPACK through numpy and
# scipy, and torch's matrix products and factorisations.
_LAPACK = {"solve", "lstsq", "svd", "eig", "eigh", "eigvalsh", "qr", "cholesky", "inv",
           "pinv"}
_TORCH_PRODUCTS = {"matmul", "mm", "bmm", "addmm", "addmm_", "baddbmm", "einsum"}


class _ThreadProbe(TorchFunctionMode):
    """Records the torch and BLAS thread counts at every matrix product and
    factorisation of torch, numpy and scipy run in the block, wherever it is called
    from (so it needs no knowledge of the package's internals)."""

    def __enter__(self):
        self.seen = []
        self._blas = [lib for lib in ThreadpoolController().lib_controllers
                      if lib.user_api == "blas"]
        self.outside = self._counts()
        super().__enter__()
        self._outer_profile = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(self._outer_profile)
        return super().__exit__(*exc)

    def _counts(self):
        """(torch threads, BLAS threads of every BLAS library)."""
        return torch.get_num_threads(), tuple(lib.num_threads for lib in self._blas)

    def _record(self, where):
        self.seen.append((where, self._counts()))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _TORCH_PRODUCTS or name.startswith("linalg_"):
            self._record(f"torch.{name}")
        return func(*args, **(kwargs or {}))

    def _profile(self, frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_name in _LAPACK and "linalg" in code.co_filename:
            self._record(f"{code.co_filename}:{code.co_name}")


def _thread_counts():
    return torch.get_num_threads(), [(info["internal_api"], info["num_threads"])
                                     for info in threadpool_info()]


@contextlib.contextmanager
def _torch_threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("Est", _with(lambda Est: has_param(Est, "n_threads")),
                         ids=class_id)
@pytest.mark.parametrize("n_threads", [1, None])
def test_n_threads_applied_and_restored(Est, n_threads, X):
    # The caller runs 2 threads; n_threads=1 must hold inside every call and be
    # undone after it, n_threads=None must leave the caller's setting alone.
    # (Few iterations: two threads on a busy machine are slow.)
    est = make_small(Est, n_threads=n_threads,
                     rnn={"max_iter": 3, "infer_max_iter": 3})
    with _torch_threads(2), threadpool_limits(limits=2, user_api="blas"):
        before = _thread_counts()
        for method in ["fit"] + methods(est):
            with _ThreadProbe() as probe:
                getattr(est, method)(X if method == "fit" else X[:3])
            assert probe.seen, f"{method} ran no linear algebra"
            n_blas = len(probe.outside[1])
            inside = (1, (1,) * n_blas) if n_threads == 1 else probe.outside
            wrong = [(where, counts) for where, counts in probe.seen
                     if counts != inside]
            assert not wrong, (method, inside, wrong[:5])
            assert _thread_counts() == before, method


# --------------------------------------------------------------------------- #
# 4. persistence by pickle and joblib
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
def test_pickle_and_joblib_round_trips(Est, X, fitted, tmp_path):
    est = fitted[Est]
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    for loaded in (pickle.loads(pickle.dumps(est)), joblib.load(path)):
        assert type(loaded) is Est
        assert_same_params(loaded, est)
        assert_same_outputs(outputs(est, X[:4]), outputs(loaded, X[:4]))


# --------------------------------------------------------------------------- #
# 5. the input array
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
def test_input_is_never_written(Est, X, X_nan, fitted, tmp_path):
    # Read-only input (the shared X, and a memory-mapped file) is accepted.
    assert not X.flags.writeable
    outputs(fitted[Est], X[:4])
    path = tmp_path / "X.dat"
    X.tofile(path)
    X_mm = np.memmap(path, dtype=X.dtype, mode="r", shape=X.shape)
    est = make_small(Est).fit(X_mm)
    for method, value in outputs(est, X_mm[:4]).items():
        assert np.all(np.isfinite(value)), method
    del X_mm
    # Writeable input, with missing entries, is left as it was by fit and every
    # method (a transformer writing in place would change it).
    X_w = X_nan.copy()
    est = make_small(Est).fit(X_w)
    outputs(est, X_w)
    np.testing.assert_array_equal(X_w, X_nan)


@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
def test_neuron_count_mismatch_after_fit(Est, X, fitted):
    est = fitted[Est]
    n_neurons = X.shape[2]
    # A wrapper reports the check of the model it wraps.
    owner = type(est.estimator_ if Est in WRAPPERS else est).__name__
    for X_bad in (X[:3, :, :-2], np.concatenate([X[:3], X[:3, :, :1]], axis=2)):
        for method in methods(est):
            with pytest.raises(ValueError, match=rf"X has {X_bad.shape[2]} neurons, "
                                                 rf"but {owner} was fitted "
                                                 rf"with {n_neurons} neurons"):
                getattr(est, method)(X_bad)


@pytest.mark.parametrize("Est, method", [
    pytest.param(Est, method, id=f"{Est.__name__}-{method}")
    for Est in _with(lambda Est: hasattr(Est, "transform"))
    for method in ("transform", "predict") if hasattr(Est, method)])
def test_inference_is_per_trial(Est, method, X_nan, fitted):
    # Trials are inferred independently, each with its own stopping rule: the
    # result for a trial does not depend on which trials share the call, nor on
    # their order. (fit itself depends on trial order by design: the smoothness
    # prior over trials of LowTensorRankRNN.) A class without transform infers
    # nothing from a trial's data (a reference predicts from its condition).
    tol = dict(rtol=1e-4, atol=1e-5) if _float32(Est) else dict(rtol=1e-10, atol=1e-10)
    infer = getattr(fitted[Est], method)
    out = infer(X_nan)
    perm = np.random.RandomState(1).permutation(X_nan.shape[0])
    np.testing.assert_allclose(infer(X_nan[perm]), out[perm], **tol)
    np.testing.assert_allclose(infer(X_nan[:3]), out[:3], **tol)
    # ... while a wrong pairing of trials would be far outside that tolerance.
    assert np.nanmax(np.abs(out[perm] - out)) > 1e-2


def _bad_X_cases():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((12, 8, 6))
    X_inf, X_ninf = X.copy(), X.copy()
    X_inf[3, 4, 5] = np.inf
    X_ninf[0, 0, 0] = -np.inf
    objects = np.empty(X.shape, dtype=object)
    for idx in np.ndindex(objects.shape):
        objects[idx] = {"spikes": 1}
    ragged_inner = [[[1.0, 2.0], [3.0]], [[1.0, 2.0], [3.0, 4.0]]]
    return [
        pytest.param([X[0], X[1], X[2, :-2]], ValueError, "different shapes",
                     id="ragged-list-of-trials"),
        pytest.param([X[0], X[1][:, :-1]], ValueError, "different shapes",
                     id="ragged-neurons"),
        pytest.param(ragged_inner, ValueError, "regular", id="ragged-within-a-trial"),
        pytest.param(np.full(X.shape, "a"), TypeError, "must hold numbers",
                     id="strings"),
        pytest.param(objects, TypeError, "must hold numbers", id="object-dicts"),
        pytest.param(X.astype(np.complex128), ValueError, "complex", id="complex"),
        pytest.param(X + 1j, ValueError, "complex", id="complex-imaginary"),
        pytest.param(np.float64(1.0), ValueError, "3D array", id="0d"),
        pytest.param(X[0, 0], ValueError, "3D array", id="1d"),
        pytest.param(X[0], ValueError, r"3D array of shape .* got a 2D array .*"
                                       r"X\[np.newaxis\]", id="2d"),
        pytest.param(X[..., None], ValueError, r"3D array of shape .* got a 4D",
                     id="4d"),
        pytest.param(scipy.sparse.csr_matrix(X[0]), TypeError, "must hold numbers",
                     id="sparse-matrix"),
        pytest.param(torch.as_tensor(X[0]), ValueError, "3D array", id="2d-tensor"),
        pytest.param(X[:0], ValueError, r"0 trial\(s\)", id="zero-trials"),
        pytest.param(X[:, :0], ValueError, r"0 time point\(s\)", id="zero-timepoints"),
        pytest.param(X[:, :, :0], ValueError, "0 neurons", id="zero-neurons"),
        pytest.param(X_inf, ValueError, r"X contains infinite values \(first at "
                                        r"index \(3, 4, 5\)\)", id="inf"),
        pytest.param(X_ninf, ValueError, "infinite", id="-inf"),
        pytest.param([], ValueError, "3D array", id="empty-list"),
    ]


@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
@pytest.mark.parametrize("X_bad, error, match", _bad_X_cases())
def test_bad_X_rejected_at_fit(Est, X_bad, error, match):
    with pytest.raises(error, match=match):
        make_small(Est).fit(X_bad)


@pytest.mark.parametrize("Est", PUBLIC, ids=class_id)
@pytest.mark.parametrize("X_bad, error, match", _bad_X_cases())
def test_bad_X_rejected_after_fit(Est, X_bad, error, match, fitted):
    est = fitted[Est]
    for method in methods(est):
        with pytest.raises(error, match=match):
            getattr(est, method)(X_bad)


# --------------------------------------------------------------------------- #
# 6. parameters shared by several classes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", _with(lambda Est: has_param(Est, "rank")), ids=class_id)
@pytest.mark.parametrize("rank", [0, -1, 2.5, 2.0, "2", None, True],
                         ids=lambda r: repr(r))
def test_invalid_rank(Est, rank, X):
    # InvalidParameterError is a ValueError.
    with pytest.raises(ValueError, match="The 'rank' parameter of"):
        make_small(Est, rank=rank).fit(X)


@pytest.mark.parametrize("Est", _with(lambda Est: has_param(Est, "rank")), ids=class_id)
def test_numpy_integer_rank_accepted(Est, X):
    est = make_small(Est, rank=np.int64(RANK)).fit(X)
    assert est.transform(X[:2]).shape == (2, X.shape[1], RANK)


@pytest.mark.parametrize("Est", _with(lambda Est: has_param(Est, "device")),
                         ids=class_id)
def test_invalid_device_string_is_a_clear_error(Est, X):
    with pytest.raises(ValueError, match="device"):
        make_small(Est, device="bogus").fit(X)
