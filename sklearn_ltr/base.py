"""Shared machinery of every estimator in the package.

* validation of ``(n_trials, n_timepoints, n_neurons)`` arrays, condition labels and
  external inputs, with messages that say what was wrong and how to fix it;
* the torch plumbing: device resolution, the thread-count context, conversions;
* the leak-free co-smoothing score (DESIGN section 4), implemented once for all
  estimators on top of a single hook, ``_infer``.
"""

import contextlib
import os
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import InvalidParameterError, Interval
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "BaseLatentModel", "MissingDataWarning", "check_memory", "check_trials_array",
    "check_training_trials", "cosmoothing_folds",
]


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _describe(a):
    return f"{a.ndim}D array of shape {a.shape}"


def check_trials_array(X, *, name="X", allow_nan=True, min_trials=1, min_timepoints=1,
                       dtype=np.float64, what="(n_trials, n_timepoints, n_neurons)"):
    """Validate a 3D array of trials and return it as a float array.

    Parameters
    ----------
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Data. NaN marks a missing entry when ``allow_nan`` is True.
    name : str
        Name used in error messages.
    allow_nan : bool
        Whether NaN entries are accepted. Infinite values are always rejected.
    min_trials, min_timepoints : int
        Smallest sizes accepted along the first two axes.
    dtype : numpy dtype
        Floating dtype of the returned array.

    Returns
    -------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)

    Raises
    ------
    ValueError
        Wrong dimensionality, empty axes, infinite or (when not allowed) NaN values,
        ragged trials, complex values.
    TypeError
        Non-numeric data.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.base import check_trials_array
    >>> check_trials_array(np.zeros((4, 10, 3))).shape
    (4, 10, 3)
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if isinstance(X, (list, tuple)):
        try:
            shapes = {np.shape(x) for x in X}
        except ValueError:  # a trial that is itself ragged
            raise ValueError(
                f"{name} holds a trial whose time points have different numbers of "
                f"neurons; every trial must be a regular (n_timepoints, n_neurons) "
                f"array (pad with NaN: missing entries are allowed).") from None
        if len(shapes) > 1:
            raise ValueError(
                f"{name} is a list of trials with different shapes {sorted(shapes)[:3]}"
                f"...; trials must share n_timepoints and n_neurons. Crop or pad them "
                f"to a common length (pad with NaN: missing entries are allowed).")
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(
            f"{name} could not be converted to a regular array ({exc}); trials must "
            f"share n_timepoints and n_neurons (pad with NaN).") from None
    if arr.dtype == object or arr.dtype.kind in "USVMm":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must hold numbers, got an array of dtype {arr.dtype}. Convert "
                f"it with np.asarray({name}, dtype=float).") from None
    if arr.dtype.kind == "c":
        raise ValueError(
            f"{name} is complex ({arr.dtype}); pass real values (e.g. np.abs({name}) "
            f"or {name}.real).")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}.")
    if arr.ndim != 3:
        hint = ""
        if arr.ndim == 2:
            hint = (f" For a single trial use {name}[np.newaxis]; for a 2D "
                    f"(n_samples, n_neurons) recording, reshape it into trials.")
        raise ValueError(
            f"Expected {name} to be a 3D array of shape {what}, got a "
            f"{_describe(arr)}.{hint}")
    n_trials, n_timepoints, n_neurons = arr.shape
    if n_trials < min_trials:
        raise ValueError(
            f"{name} has {n_trials} trial(s); at least {min_trials} are required.")
    if n_timepoints < min_timepoints:
        raise ValueError(
            f"{name} has {n_timepoints} time point(s) per trial; at least "
            f"{min_timepoints} are required.")
    if n_neurons < 1:
        raise ValueError(f"{name} has 0 neurons (shape {arr.shape}).")
    arr = np.asarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        if np.isinf(arr).any():
            where = tuple(int(i) for i in np.argwhere(np.isinf(arr))[0])
            raise ValueError(
                f"{name} contains infinite values (first at index {where}). "
                f"Replace them, or mark them missing with NaN.")
        if not allow_nan:
            raise ValueError(f"{name} contains NaN, which is not allowed here.")
    return arr


class MissingDataWarning(UserWarning):
    """Warning issued by ``fit`` when a trial or a neuron is mostly missing (NaN).

    Such a trial's (or neuron's) parameters are fitted from few entries and are
    poorly determined; the fit still ignores every missing entry.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from sklearn_ltr import TrialPCA
    >>> from sklearn_ltr.base import MissingDataWarning
    >>> X = np.random.RandomState(0).standard_normal((6, 10, 4))
    >>> X[0, :8] = np.nan  # trial 0 is 80% missing
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = TrialPCA(rank=1).fit(X)
    >>> any(issubclass(w.category, MissingDataWarning) for w in caught)
    True
    """


# A trial or neuron with more than this fraction of its entries missing is reported
# by a MissingDataWarning at fit.
MOSTLY_MISSING = 0.5


def check_training_trials(X, *, min_trials=2, min_timepoints=1):
    """Validate training trials: :func:`check_trials_array` plus no all-NaN trial or neuron.

    A :class:`MissingDataWarning` is issued when a trial or a neuron has more than
    ``MOSTLY_MISSING`` (half) of its entries missing.

    Parameters
    ----------
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Training data; NaN marks a missing entry.
    min_trials, min_timepoints : int
        Smallest sizes accepted along the first two axes.

    Returns
    -------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
    observed : ndarray of bool, same shape
        Where X is not NaN.

    Raises
    ------
    ValueError
        As :func:`check_trials_array`, or when a whole trial or neuron is missing.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from sklearn_ltr.base import check_training_trials
    >>> X = np.ones((3, 4, 2))
    >>> X[0, :3] = np.nan  # trial 0: 6 of its 8 entries missing
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = check_training_trials(X)
    >>> caught[0].category.__name__, "trial 0: 75% missing" in str(caught[0].message)
    ('MissingDataWarning', True)
    """
    X = check_trials_array(X, min_trials=min_trials, min_timepoints=min_timepoints)
    observed = ~np.isnan(X)
    if observed.all():
        return X, observed
    for axes, what in [((1, 2), "trial"), ((0, 1), "neuron")]:
        fraction = 1.0 - observed.mean(axis=axes)
        empty = np.flatnonzero(fraction == 1.0)
        if empty.size:
            raise ValueError(
                f"X has {empty.size} {what}(s) with no observed entry (all NaN), e.g. "
                f"{what} {empty[0]}; drop them before fitting.")
        mostly = np.flatnonzero(fraction > MOSTLY_MISSING)
        if mostly.size:
            worst = mostly[np.argmax(fraction[mostly])]
            warnings.warn(
                f"X has {mostly.size} {what}(s) with more than "
                f"{MOSTLY_MISSING:.0%} of their entries missing (e.g. {what} {worst}: "
                f"{fraction[worst]:.0%} missing); their parameters are poorly "
                f"determined. Drop them, or pass fewer NaN.", MissingDataWarning,
                stacklevel=2)
    return X, observed


def check_conditions(y, n_trials):
    """Validate condition labels; return (labels, index into labels) or (None, None)."""
    if y is None:
        return None, None
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_trials:
        raise ValueError(
            f"y must hold one condition label per trial: expected shape ({n_trials},), "
            f"got {y.shape}.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y (condition labels) contains NaN or infinite values.")
    labels, index = np.unique(y, return_inverse=True)
    return labels, index


def check_inputs(inputs, n_trials, n_timepoints, n_inputs=None):
    """Validate external inputs of shape (n_trials, n_timepoints, n_inputs)."""
    if inputs is None:
        if n_inputs:
            raise ValueError(
                f"This model was fitted with external inputs ({n_inputs} channels); "
                f"pass inputs=... of shape ({n_trials}, {n_timepoints}, {n_inputs}).")
        return None
    U = check_trials_array(inputs, name="inputs", allow_nan=False,
                           what="(n_trials, n_timepoints, n_inputs)")
    if U.shape[:2] != (n_trials, n_timepoints):
        raise ValueError(
            f"inputs must have shape (n_trials, n_timepoints, n_inputs) = "
            f"({n_trials}, {n_timepoints}, ...) to match X, got {U.shape}.")
    if n_inputs is not None and U.shape[2] != n_inputs:
        if n_inputs == 0:
            raise ValueError(
                "This model was fitted without external inputs; do not pass inputs.")
        raise ValueError(
            f"inputs has {U.shape[2]} channels, but the model was fitted with "
            f"{n_inputs}.")
    return U


# --------------------------------------------------------------------------- #
# torch plumbing
# --------------------------------------------------------------------------- #
def resolve_device(device):
    """Map the ``device`` parameter ('cpu', 'cuda', 'cuda:1', 'auto') to a torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device={device!r} is not a valid device; use 'cpu', 'cuda', 'cuda:N' "
            f"or 'auto'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            f"machine; use device='cpu' or device='auto'.")
    return dev


@contextlib.contextmanager
def torch_threads(n_threads):
    """Set torch's intra-op thread count for the duration of the block, then restore.

    Small recurrent models run several times slower with intra-op threads on few
    cores, and joblib workers must not oversubscribe; ``None`` leaves it unchanged.
    """
    if n_threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _flushing_denormals():
    """Whether this thread treats float denormals as zero (torch has no getter)."""
    # In that mode a denormal input reads as zero (and a denormal result is flushed).
    return bool(torch.full((1,), 1e-40, dtype=torch.float32).mul(1.0).item() == 0.0)


@contextlib.contextmanager
def flush_denormals():
    """Treat float denormals as zero on this thread for the block, then restore.

    A recurrence run over many time steps shrinks some gradients by the decay factor
    at every step until they fall below float32's smallest normal number (1e-38),
    where the CPU computes on them tens of times slower. Flushing them to zero
    changes results by less than 1e-38 and nearly halved the time of a fit with 200
    time bins. The previous mode of the thread is restored on exit.
    """
    before = _flushing_denormals()
    if not torch.set_flush_denormal(True):  # not supported by this CPU
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def to_tensor(a, device, dtype=torch.float32):
    """numpy array (or None) -> tensor on ``device``."""
    if a is None:
        return None
    return torch.as_tensor(np.asarray(a), dtype=dtype).to(device)


def to_numpy(t):
    """tensor (or None) -> float64 numpy array on the CPU."""
    if t is None:
        return None
    return t.detach().to("cpu", torch.float64).numpy()


def seed_from(random_state):
    """Draw an integer seed for a local torch.Generator from ``random_state``."""
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


# --------------------------------------------------------------------------- #
# memory
# --------------------------------------------------------------------------- #
def _format_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"  # pragma: no cover


def _cgroup_memory_left():
    """Bytes left under this process's cgroup memory limit, or None without a limit.

    In a container /proc/meminfo describes the host; the cgroup limit is what the
    kernel enforces (an allocation past it gets the process killed, not a MemoryError).
    """
    for limit_file, usage_file in [
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/memory/memory.usage_in_bytes")]:
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        # "max" (v2) or a huge sentinel (v1) means no limit.
        if limit == "max" or int(limit) >= 2 ** 60:
            return None
        return max(int(limit) - usage, 0)
    return None


def _available_memory(device):
    """Bytes that can still be allocated on ``device``, or None when unknown.

    CPU: ``psutil.virtual_memory().available`` when psutil is installed, else
    ``MemAvailable`` of /proc/meminfo, else ``os.sysconf('SC_AVPHYS_PAGES')`` pages
    (free pages only: an underestimate that ignores reclaimable caches); capped by
    the cgroup limit when there is one. CUDA: the free memory reported by the driver
    (``torch.cuda.mem_get_info``) plus what torch's caching allocator holds unused.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(cached, 0))
    if device.type != "cpu":
        return None
    available = None
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        available = int(psutil.virtual_memory().available)
    else:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        available = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    left = _cgroup_memory_left()
    if left is not None:
        available = left if available is None else min(available, left)
    return available


def check_memory(needed, device, *, what, remedy):
    """Raise a ValueError when ``needed`` bytes will not fit in ``device``'s memory.

    Called before a large allocation, so that an oversized problem fails at once with
    a message instead of swapping, being killed by the kernel's out-of-memory killer,
    or failing deep inside torch.

    Parameters
    ----------
    needed : int
        Estimated peak number of bytes.
    device : str or torch.device
    what : str
        What needs the memory, e.g. ``"LowTensorRankRNN.fit on X of shape (...)"``.
    remedy : str
        How to need less, appended to the message.

    Raises
    ------
    ValueError
        When the available memory is known and smaller than ``needed``.

    Examples
    --------
    >>> from sklearn_ltr.base import check_memory
    >>> check_memory(1024, "cpu", what="a tiny fit", remedy="")  # fits: no error
    """
    available = _available_memory(device)
    if available is None or needed <= available:
        return
    raise ValueError(
        f"{what} would need about {_format_bytes(needed)} of memory on "
        f"{torch.device(device)}, but only {_format_bytes(available)} is available. "
        f"{remedy}")


# --------------------------------------------------------------------------- #
# co-smoothing
# --------------------------------------------------------------------------- #
def cosmoothing_folds(n_neurons, n_folds):
    """Assign neurons to co-smoothing folds: a fixed, seed-independent permutation.

    The assignment depends only on ``n_neurons`` and ``n_folds``, so every estimator
    scored on the same data uses the same folds (a fair comparison).

    Returns
    -------
    fold : ndarray of shape (n_neurons,)
        Fold index of each neuron, in ``range(min(n_folds, n_neurons))``.

    Examples
    --------
    >>> from sklearn_ltr.base import cosmoothing_folds
    >>> fold = cosmoothing_folds(12, 5)
    >>> sorted(set(fold.tolist())), int((fold == 0).sum())
    ([0, 1, 2, 3, 4], 3)
    """
    n_folds = min(n_folds, n_neurons)
    perm = np.random.RandomState(0).permutation(n_neurons)
    fold = np.empty(n_neurons, dtype=int)
    fold[perm] = np.arange(n_neurons) % n_folds
    return fold


def r2_observed(X, P):
    """Variance-weighted R^2 of predictions ``P`` over the non-NaN entries of ``X``.

    Missing entries of ``X`` are never scored, whatever ``P`` holds there. When the
    observed entries have no variance around their neuron means, R^2 is undefined;
    as scikit-learn's ``r2_score`` (``force_finite=True``) the score is then 1.0 for
    a perfect prediction and 0.0 otherwise, so that a cross-validation fold of
    constant data neither wins nor returns -inf.
    """
    obs = ~np.isnan(X)
    with warnings.catch_warnings():
        # A neuron with no observed entry has no mean; it is not scored either.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(X, axis=(0, 1), keepdims=True)
    mean = np.where(np.isnan(mean), 0.0, mean)
    sse = np.sum(np.where(obs, (X - P) ** 2, 0.0))
    sst = np.sum(np.where(obs, (X - mean) ** 2, 0.0))
    if sst <= 0:
        return 1.0 if sse <= 0 else 0.0
    return float(1.0 - sse / sst)


def bits_per_spike(X, rate):
    """Co-smoothing log-likelihood gain over a per-neuron mean-rate model, in bits/spike."""
    from scipy.special import xlogy

    obs = ~np.isnan(X)
    Xo = np.where(obs, X, 0.0)
    mean = Xo.sum((0, 1)) / np.maximum(obs.sum((0, 1)), 1)
    rate = np.maximum(rate, 1e-9)
    null = np.broadcast_to(np.maximum(mean, 1e-9), X.shape)
    ll_model = np.sum(np.where(obs, xlogy(Xo, rate) - rate, 0.0))
    ll_null = np.sum(np.where(obs, xlogy(Xo, null) - null, 0.0))
    n_spikes = Xo.sum()
    if n_spikes <= 0:
        return 0.0
    return float((ll_model - ll_null) / (n_spikes * np.log(2)))


class TrialsInputMixin:
    """Tags and the after-fit input check of everything that takes 3D trials.

    The neurons (last axis) are the features: ``n_features_in_`` is ``n_neurons``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.allow_nan = True
        return tags

    def _check_X_new(self, X):
        """Validate X after fit: fitted, 3D, finite or NaN, same neurons as in fit."""
        check_is_fitted(self)
        X = check_trials_array(X)
        if X.shape[2] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[2]} neurons, but {type(self).__name__} was fitted "
                f"with {self.n_features_in_} neurons; X must have shape (n_trials, "
                f"n_timepoints, {self.n_features_in_}).")
        return X


class SaveMixin:
    """``save`` for every estimator and transformer of the package."""

    def save(self, file):
        """Save the fitted estimator in a format that loads without running code.

        One ``.npz`` archive with a JSON header (format, versions, class name,
        parameters) and the fitted arrays; read it back with :func:`sklearn_ltr.load`.
        Unlike a pickle, loading it never executes code from the file, and it loads
        on a machine without the GPU the model was fitted on.

        Parameters
        ----------
        file : str, os.PathLike or binary file object
            Destination, written atomically and exactly as named (no suffix added).

        See Also
        --------
        sklearn_ltr.load : Load a saved estimator.

        Examples
        --------
        >>> import io
        >>> import numpy as np
        >>> import sklearn_ltr
        >>> from sklearn_ltr import TrialPCA
        >>> X = np.random.RandomState(0).standard_normal((10, 5, 4))
        >>> pca = TrialPCA(rank=2).fit(X)
        >>> buffer = io.BytesIO()
        >>> pca.save(buffer)
        >>> _ = buffer.seek(0)
        >>> np.array_equal(sklearn_ltr.load(buffer).transform(X), pca.transform(X))
        True
        """
        from ._persistence import save

        save(self, file)


class BaseLatentModel(SaveMixin, TrialsInputMixin, TransformerMixin, BaseEstimator):
    """Base class of the latent-variable models of trials (RNNs and baselines).

    Subclasses implement ``fit`` and ``_infer(X, y, inputs)``, which infers every
    per-trial parameter from the observed (non-NaN) entries of ``X`` with all shared
    parameters frozen and returns ``(latents, reconstruction)`` of shapes
    ``(n_trials, n_timepoints, rank)`` and ``(n_trials, n_timepoints, n_neurons)``.
    ``transform``, ``predict`` and the co-smoothing ``score`` are built on it here,
    once for all estimators.

    Examples
    --------
    >>> from sklearn_ltr import TCA, LowRankRNN, LowTensorRankRNN, TrialPCA
    >>> from sklearn_ltr.base import BaseLatentModel
    >>> all(issubclass(Est, BaseLatentModel)
    ...     for Est in (LowTensorRankRNN, LowRankRNN, TCA, TrialPCA))
    True
    """

    # Which score `score` reports; Poisson models set "bits_per_spike".
    def _score_kind(self):
        return "r2"

    # Models computing with torch recurrences flush denormals (flush_denormals).
    _flush_denormal = False

    def _torch_context(self):
        """The context of every computation: ``torch_threads(n_threads)``, and
        ``flush_denormals()`` for models that set ``_flush_denormal``."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch_threads(getattr(self, "n_threads", None)))
        if self._flush_denormal:
            stack.enter_context(flush_denormals())
        return stack

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def _clear_fitted(self):
        """Remove the fitted attributes, e.g. after a failed fit, so that the estimator
        reads as unfitted instead of half-fitted."""
        params = self.get_params(deep=False)
        for key in [k for k in vars(self) if k.endswith("_") and k not in params
                    and not k.startswith("__")]:
            delattr(self, key)

    def _validate_params(self):
        """scikit-learn's parameter validation, and no bool where an int is expected.

        ``Interval(Integral, ...)`` accepts ``True`` (bool subclasses int), which
        would then silently mean ``rank=1`` or fail deep inside a solver.
        """
        super()._validate_params()
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) and "boolean" not in constraints and any(
                    isinstance(c, Interval) and c.type is Integral for c in constraints):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be an int, "
                    f"not a bool. Got {value!r} instead.")

    # -- public API ------------------------------------------------------------
    def transform(self, X, y=None, *, inputs=None):
        """Latent trajectories of the given trials.

        Per-trial parameters are inferred from the observed entries of ``X`` with
        every shared parameter frozen (the pattern of ``NMF.transform``), so trials
        never seen in ``fit`` are handled.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials; NaN marks missing entries.
        y : array-like of shape (n_trials,), default=None
            Condition labels, for models fitted with per-condition initial states.
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, required when the model was fitted with them.

        Returns
        -------
        latents : ndarray of shape (n_trials, n_timepoints, rank)
        """
        X = self._check_X_new(X)
        with self._torch_context():
            latents, _ = self._infer(X, y, inputs)
        return latents

    def predict(self, X, y=None, *, inputs=None):
        """Reconstruction of the given trials (rates for ``loss='poisson'``).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials; NaN marks missing entries, which are predicted too.
        y : array-like of shape (n_trials,), default=None
            Condition labels (see :meth:`transform`).
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, required when the model was fitted with them.

        Returns
        -------
        X_hat : ndarray of shape (n_trials, n_timepoints, n_neurons)
        """
        X = self._check_X_new(X)
        with self._torch_context():
            _, recon = self._infer(X, y, inputs)
        return recon

    def score(self, X, y=None, *, inputs=None):
        """Co-smoothing score of the given trials: held-out, leak-free, greater is better.

        The neurons are split into ``cosmoothing_folds`` folds (a fixed assignment
        shared by every estimator). For each fold, the per-trial parameters (initial
        state, trial factor, ...) are inferred from the *other* neurons only, with all
        shared parameters frozen, and the fold's neurons are predicted. No entry that
        is scored is used to infer the parameters that predict it. The score is the
        variance-weighted R^2 over all observed entries (NaN entries are neither used
        nor scored); with ``loss='poisson'`` it is the co-smoothing log-likelihood in
        bits per spike relative to each neuron's mean rate, as in the Neural Latents
        Benchmark.

        Within ``GridSearchCV`` the trials scored are the held-out trials of the fold,
        so shared parameters are fitted on other trials and per-trial parameters on
        other neurons: a bi-cross-validated score that does not grow with rank for
        free.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials to score.
        y : array-like of shape (n_trials,), default=None
            Condition labels (see :meth:`transform`).
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, required when the model was fitted with them.

        Returns
        -------
        score : float
        """
        X = self._check_X_new(X)
        if np.isnan(X).all():
            raise ValueError(
                "X has no observed (non-NaN) entry, so there is nothing to score; pass "
                "trials with observed entries.")
        with self._torch_context():
            pred = self._cosmooth_predict(X, y, inputs)
        if self._score_kind() == "bits_per_spike":
            return bits_per_spike(X, pred)
        return r2_observed(X, pred)

    def _trial_features(self, X, y, inputs):
        """Per-trial features, shape ``(n_trials, rank)``.

        Used by :class:`sklearn_ltr.model_selection.TrialFactors`. Models with
        per-trial factors override this (and ``_trial_feature_name``); the default is
        each trial's time-averaged latent state.
        """
        latents, _ = self._infer(X, y, inputs)
        return latents.mean(axis=1)

    def _trial_feature_name(self):
        return "mean_latent"

    def _cosmooth_predict(self, X, y, inputs):
        """Predict each neuron from parameters inferred without it (all folds at once).

        The fold-masked copies of X are stacked along the trial axis and inferred in a
        single batched call, which costs one inference rather than one per fold.
        """
        n_trials, _, n_neurons = X.shape
        fold = cosmoothing_folds(n_neurons, self.cosmoothing_folds)
        n_folds = fold.max() + 1
        if n_folds < 2:
            raise ValueError(
                f"co-smoothing needs at least 2 neurons to hold one out, X has "
                f"{n_neurons}.")
        stacked = np.repeat(X[None], n_folds, axis=0)
        for f in range(n_folds):
            stacked[f][:, :, fold == f] = np.nan
        stacked = stacked.reshape((n_folds * n_trials,) + X.shape[1:])
        y_s = None if y is None else np.tile(np.asarray(y), n_folds)
        in_s = None if inputs is None else np.tile(np.asarray(inputs), (n_folds, 1, 1))
        _, recon = self._infer(stacked, y_s, in_s)
        recon = recon.reshape((n_folds, n_trials) + X.shape[1:])
        pred = np.empty_like(X)
        for f in range(n_folds):
            pred[:, :, fold == f] = recon[f][:, :, fold == f]
        return pred
