"""Transformers for ``(n_trials, n_timepoints, n_neurons)`` arrays.

scikit-learn's own scalers reject 3D input; these work inside ``Pipeline`` and
``GridSearchCV`` and are fitted on the training trials only. NaN marks a missing entry
and passes through every transformer: it is never filled in silently, so the model
downstream neither fits nor scores it.

* :class:`StandardScaler3D` -- z-score each neuron over trials and time.
* :class:`SoftNormalizer` -- divide each neuron by its range plus a soft offset.
* :class:`GaussianSmoother` -- NaN-aware Gaussian smoothing along time (spike counts to
  rates).
* :class:`TrialCropper` -- keep a window of time bins of every trial.
* :class:`TrialFactors` -- the per-trial parameters of a fitted latent model as
  ``(n_trials, rank)`` features, the bridge to 2D estimators (e.g. decoders); the
  latent model handles the missing entries.

And one function, :func:`condition_inputs`: condition labels as the networks'
external ``inputs`` (a one-hot of each trial's condition over time).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    OneToOneFeatureMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._memory import check_memory
from ._pipeline import final_step, through_pipeline
from ._schema import Array, Value
from ._validation import check_training_trials, check_trials_array, unit_scale
from .base import SaveMixin, TrialsInputMixin, publishes_fit

# The 3D-to-3D transformers, and condition_inputs. TrialFactors is public too
# (exported by the package and by model_selection) but stays out of this list: the
# tests' catalogue of saveable 3D transformers is built from its classes, and
# TrialFactors wraps a model (save it with pickle or joblib).
__all__ = ["StandardScaler3D", "SoftNormalizer", "GaussianSmoother", "TrialCropper",
           "condition_inputs"]


class _Base3DTransformer(SaveMixin, TrialsInputMixin, OneToOneFeatureMixin,
                         TransformerMixin, BaseEstimator):
    """Shared base of the 3D transformers: tags, input checks, ``save``.

    Feature names (the neurons) pass through unchanged.
    """


# --------------------------------------------------------------------------- #
# scalers
# --------------------------------------------------------------------------- #
class _PerNeuronAffine(_Base3DTransformer):
    """Shared ``fit``, ``transform`` and inverse of the scalers.

    Both compute ``(X - mean_) / scale_`` per neuron.

    Both have a ``with_mean`` parameter. Subclasses implement ``_fit_scale(X)``,
    which returns each neuron's divisor (an array of shape (n_neurons,), or None to
    skip scaling) from the validated training trials, and may record other
    statistics.
    """

    @publishes_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Compute the per-neuron statistics on training trials.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Training trials; NaN marks missing entries, which are ignored.
        y : None
            Ignored.

        Returns
        -------
        self : object
            Fitted transformer.
        """
        X, _ = check_training_trials(X, min_trials=1)
        self.n_features_in_ = X.shape[2]
        # Each neuron's statistics on its own power-of-two scale (unit_scale), so
        # that sums and squares neither overflow nor underflow.
        neuron_scale = unit_scale(X, axis=(0, 1))[0, 0]
        self.mean_ = (np.nanmean(X / neuron_scale, axis=(0, 1)) * neuron_scale
                      if self.with_mean else None)
        scale = self._fit_scale(X)
        # Constant neurons (zero scale) are left unscaled instead of becoming NaN.
        self.scale_ = None if scale is None else np.where(scale > 0, scale, 1.0)
        return self

    def transform(self, X):
        """Centre and scale each neuron with the fitted statistics.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials to transform; NaN stays NaN.

        Returns
        -------
        X_new : ndarray of shape (n_trials, n_timepoints, n_neurons)
            Transformed trials.
        """
        X = self._check_X_new(X)
        if self.mean_ is not None:
            X = X - self.mean_
        if self.scale_ is not None:
            X = X / self.scale_
        return X

    def inverse_transform(self, X):
        """Undo :meth:`transform`.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Transformed trials.

        Returns
        -------
        X_original : ndarray of shape (n_trials, n_timepoints, n_neurons)
            Trials in the original units.
        """
        X = self._check_X_new(X)
        if self.scale_ is not None:
            X = X * self.scale_
        if self.mean_ is not None:
            X = X + self.mean_
        return X


class StandardScaler3D(_PerNeuronAffine):
    """Z-score each neuron over trials and time.

    Means and standard deviations are computed per neuron over all trials and time
    points of the training data, ignoring NaN (missing entries stay NaN). Neurons with
    zero variance are centred but not scaled.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract each neuron's mean.
    with_std : bool, default=True
        Divide by each neuron's standard deviation.

    Attributes
    ----------
    mean_ : ndarray of shape (n_neurons,) or None
        Per-neuron mean (None when ``with_mean=False``).
    scale_ : ndarray of shape (n_neurons,) or None
        Per-neuron scale (None when ``with_std=False``); 1 for constant neurons.
    n_features_in_ : int
        Number of neurons.

    See Also
    --------
    SoftNormalizer : Range normalisation that does not inflate weakly active neurons.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.preprocessing import StandardScaler3D
    >>> X = np.arange(24.0).reshape(2, 3, 4)
    >>> Xt = StandardScaler3D().fit_transform(X)
    >>> np.allclose(Xt.mean(axis=(0, 1)), 0), np.allclose(Xt.std(axis=(0, 1)), 1)
    (True, True)
    """

    # The fitted state a saved scaler must hold (see sklearn_ltr._registry).
    _fitted_schema = {
        "n_features_in_": Value("int", low=1),
        "mean_?": ("n_features_in_",),
        "scale_?": Array(("n_features_in_",), low=0, closed="right"),
    }
    _parameter_constraints = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, *, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    def _fit_scale(self, X):
        if not self.with_std:
            return None
        neuron_scale = unit_scale(X, axis=(0, 1))[0, 0]
        return np.nanstd(X / neuron_scale, axis=(0, 1)) * neuron_scale


class SoftNormalizer(_PerNeuronAffine):
    """Divide each neuron by its range plus a soft offset ("soft normalization").

    ``X_new = (X - mean) / (max - min + soft)`` per neuron, with the range (max - min)
    taken over all trials and time points of the training data, ignoring NaN. The
    offset keeps weakly active, noisy neurons from being inflated to the size of
    strongly tuned ones, as z-scoring does: a neuron whose range is much larger than
    ``soft`` ends with a range close to 1, one whose range is much smaller stays
    small. This is the normalisation of Churchland et al. (2012), common before
    fitting population dynamics models.

    Parameters
    ----------
    soft : float, default=5.0
        Soft offset added to each neuron's range, in the units of X (>= 0).
        Churchland et al. used 5 spikes/s on rates in spikes/s; for spike counts in
        bins of ``dt`` seconds the same choice is ``5 * dt``. With ``soft=0`` this is
        plain range scaling (constant neurons are then left unscaled).
    with_mean : bool, default=False
        Also subtract each neuron's mean over trials and time (useful before models
        fitted with a squared error).

    Attributes
    ----------
    data_min_ : ndarray of shape (n_neurons,)
        Per-neuron minimum of the training data.
    data_max_ : ndarray of shape (n_neurons,)
        Per-neuron maximum of the training data.
    scale_ : ndarray of shape (n_neurons,)
        Per-neuron divisor ``data_max_ - data_min_ + soft`` (1 where that is 0).
    mean_ : ndarray of shape (n_neurons,) or None
        Per-neuron mean (None when ``with_mean=False``).
    n_features_in_ : int
        Number of neurons.

    See Also
    --------
    StandardScaler3D : Z-scoring of each neuron.

    References
    ----------
    .. [1] M. M. Churchland, J. P. Cunningham, M. T. Kaufman, J. D. Foster,
       P. Nuyujukian, S. I. Ryu, K. V. Shenoy. "Neural population dynamics during
       reaching". Nature 487, 51-56 (2012).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.preprocessing import SoftNormalizer
    >>> X = np.array([[[0.0, 0.0], [50.0, 1.0]]])  # 1 trial, 2 bins, 2 neurons
    >>> norm = SoftNormalizer(soft=5.0).fit(X)
    >>> norm.scale_
    array([55.,  6.])
    >>> norm.transform(X)[0, 1].round(3)
    array([0.909, 0.167])
    """

    # The fitted state a saved normaliser must hold (see sklearn_ltr._registry).
    _fitted_schema = {
        "n_features_in_": Value("int", low=1),
        "data_min_": ("n_features_in_",),
        "data_max_": ("n_features_in_",),
        "scale_": Array(("n_features_in_",), low=0, closed="right"),
        "mean_?": ("n_features_in_",),
    }
    _parameter_constraints = {
        "soft": [Interval(Real, 0, None, closed="left")],
        "with_mean": ["boolean"],
    }

    def __init__(self, soft=5.0, *, with_mean=False):
        self.soft = soft
        self.with_mean = with_mean

    def _fit_scale(self, X):
        self.data_min_ = np.nanmin(X, axis=(0, 1))
        self.data_max_ = np.nanmax(X, axis=(0, 1))
        return self.data_max_ - self.data_min_ + self.soft


# --------------------------------------------------------------------------- #
# time-axis transformers (stateless)
# --------------------------------------------------------------------------- #
def _kernel_radius(sigma, truncate, shape):
    """Radius of the kernel, in bins, as in scipy.ndimage.gaussian_filter1d.

    Refuses, before anything is allocated, a kernel whose smoothing of X of
    ``shape`` would not fit in memory: the kernel (24 bytes per bin while it is
    built), scipy's extended line buffers (16 bytes per bin of a trial and of
    the kernel) and the arrays of the normalised convolution (32 bytes per entry
    of X; measured with ``tracemalloc``).
    """
    radius = truncate * sigma + 0.5
    if not np.isfinite(radius) or radius > 2.0 ** 62:
        raise ValueError(
            f"GaussianSmoother(sigma={sigma!r}, truncate={truncate!r}) has a kernel "
            f"of about {2 * radius:.3g} time bins, too many to build. Use a sigma "
            f"of the order of the trial length or less (the kernel has "
            f"2 * int(truncate * sigma + 0.5) + 1 bins).")
    radius = int(radius)
    n_entries = int(np.prod(shape, dtype=np.float64))
    check_memory(
        24 * (2 * radius + 1) + 16 * (shape[1] + 2 * radius) + 32 * n_entries, "cpu",
        what=(f"GaussianSmoother(sigma={sigma!r}, truncate={truncate!r}) on X of "
              f"shape {tuple(shape)} (a kernel of {2 * radius + 1} time bins)"),
        remedy="Use a smaller sigma (or truncate), or fewer trials at a time.")
    return radius


def _gaussian_kernel(sigma, truncate, radius):
    """Normalised Gaussian kernel of the given radius (see :func:`_kernel_radius`)."""
    if radius == 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


class GaussianSmoother(_Base3DTransformer):
    """Smooth every neuron along time with a Gaussian kernel, ignoring missing bins.

    Turns binned spike counts into smooth firing rates (in counts per bin: divide by
    the bin width for spikes/s). Missing bins (NaN) are handled by normalised
    convolution: the data with missing bins set to zero and the indicator of observed
    bins are smoothed separately, and their ratio is the rate. A missing bin therefore
    does not pull its neighbours towards zero: each output is the Gaussian-weighted
    mean of the *observed* bins around it. Where no bin within the kernel's support is
    observed, the output is NaN.

    The transformer is stateless: ``fit`` only records the number of neurons, so it
    can be placed anywhere in a ``Pipeline``.

    Parameters
    ----------
    sigma : float, default=1.0
        Standard deviation of the kernel, in time bins (>= 0). ``sigma=0`` leaves
        the data unchanged, which lets a grid search include "no smoothing".
    truncate : float, default=4.0
        The kernel is cut at ``truncate`` standard deviations, as in
        :func:`scipy.ndimage.gaussian_filter1d` (its radius is
        ``int(truncate * sigma + 0.5)`` bins).
    mode : {'reflect', 'nearest', 'mirror', 'wrap', 'constant'}, default='reflect'
        How each trial is extended beyond its first and last bins, with the meaning
        of :func:`scipy.ndimage.gaussian_filter1d`, except for 'constant': bins
        outside the trial are treated as missing, so the kernel is renormalised at
        the edges instead of pulling the rate towards zero.
    fill_missing : bool, default=False
        If False, missing entries of X stay NaN in the output, so the downstream
        model neither fits nor scores them. If True, they are replaced by the
        smoothed estimate from their observed neighbours (interpolation).

    Attributes
    ----------
    n_features_in_ : int
        Number of neurons.

    See Also
    --------
    scipy.ndimage.gaussian_filter1d : The same filter, for data without NaN.
    TrialCropper : Keep a window of time bins.

    Notes
    -----
    There is no ``inverse_transform``: undoing a Gaussian blur is deconvolution, an
    ill-posed problem whose solution amplifies noise at high frequencies without
    bound.

    A pipeline's ``score`` compares predictions with the *transformed* data. Scores of
    pipelines with different ``sigma`` are therefore computed against different
    targets (smoother data are easier to predict), and a grid search over ``sigma``
    with the pipeline's own score favours heavy smoothing. Select ``sigma`` with a
    criterion on a common target, or fix it on scientific grounds.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.preprocessing import GaussianSmoother
    >>> X = np.zeros((1, 7, 1))
    >>> X[0, 3, 0] = 1.0  # one spike in the middle bin
    >>> GaussianSmoother(sigma=1.0).fit_transform(X)[0, :, 0].round(3)
    array([0.005, 0.054, 0.242, 0.399, 0.242, 0.054, 0.005])
    >>> X[0, 2, 0] = np.nan  # a missing bin neither counts as zero nor is filled in
    >>> GaussianSmoother(sigma=1.0).fit_transform(X)[0, :, 0].round(3)
    array([0.005, 0.071,   nan, 0.526, 0.256, 0.054, 0.005])
    >>> X_filled = GaussianSmoother(sigma=1.0, fill_missing=True).fit_transform(X)
    >>> round(float(X_filled[0, 2, 0]), 3)  # interpolated from its neighbours
    0.403
    """

    # Nothing is learned: fit only records the number of neurons.
    _fitted_schema = {"n_features_in_": Value("int", low=1)}
    _parameter_constraints = {
        "sigma": [Interval(Real, 0, None, closed="left")],
        "truncate": [Interval(Real, 0, None, closed="neither")],
        "mode": [StrOptions({"reflect", "nearest", "mirror", "wrap", "constant"})],
        "fill_missing": ["boolean"],
    }

    def __init__(self, sigma=1.0, *, truncate=4.0, mode="reflect", fill_missing=False):
        self.sigma = sigma
        self.truncate = truncate
        self.mode = mode
        self.fill_missing = fill_missing

    @publishes_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check X and record the number of neurons (nothing is learned).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials.
        y : None
            Ignored.

        Returns
        -------
        self : object
            This transformer.
        """
        X = check_trials_array(X)
        _kernel_radius(self.sigma, self.truncate, X.shape)
        self.n_features_in_ = X.shape[2]
        return self

    def transform(self, X):
        """Smooth every trial and neuron along time.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials (e.g. binned spike counts); NaN marks missing bins.

        Returns
        -------
        X_new : ndarray of shape (n_trials, n_timepoints, n_neurons)
            Smoothed trials. NaN where X is missing (unless ``fill_missing``) and
            where no bin within the kernel's support is observed.
        """
        from scipy.ndimage import correlate1d

        X = self._check_X_new(X)
        kernel = _gaussian_kernel(
            self.sigma, self.truncate,
            _kernel_radius(self.sigma, self.truncate, X.shape))
        observed = ~np.isnan(X)
        # Normalised convolution (Knutsson & Westin, 1993): smooth the zero-filled
        # data and the observation indicator with the same kernel and boundary rule;
        # their ratio is the kernel-weighted mean of the observed bins only.
        values = correlate1d(np.where(observed, X, 0.0), kernel, axis=1,
                             mode=self.mode, cval=0.0)
        weights = correlate1d(observed.astype(np.float64), kernel, axis=1,
                              mode=self.mode, cval=0.0)
        # Weights are sums of non-negative kernel entries over observed bins, hence
        # exactly 0 only when the whole support is missing.
        supported = weights > 0
        out = np.full_like(values, np.nan)
        np.divide(values, weights, out=out, where=supported)
        if not self.fill_missing:
            out[~observed] = np.nan
        return out


class TrialCropper(_Base3DTransformer):
    """Keep the time bins ``start:stop`` of every trial.

    Selects a window of each trial, e.g. to drop the preparatory period before
    movement onset or a noisy end, inside a ``Pipeline``. ``start`` and ``stop`` follow
    Python's slicing rules (negative values count from the end; None means the first
    or last bin), but must lie within the trial: a window outside it is an error,
    not an empty or silently shorter result. Stateless: ``fit`` only records the number
    of neurons.

    Parameters
    ----------
    start : int or None, default=None
        First time bin kept (None: the first bin of the trial).
    stop : int or None, default=None
        One past the last time bin kept (None: to the end of the trial).

    Attributes
    ----------
    n_features_in_ : int
        Number of neurons.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.preprocessing import TrialCropper
    >>> X = np.arange(20.0).reshape(2, 5, 2)
    >>> TrialCropper(start=1, stop=-1).fit_transform(X).shape
    (2, 3, 2)
    >>> TrialCropper(start=3).fit_transform(X)[0, :, 0]
    array([6., 8.])
    """

    # Nothing is learned: fit only records the number of neurons.
    _fitted_schema = {"n_features_in_": Value("int", low=1)}
    _parameter_constraints = {
        "start": [Integral, None],
        "stop": [Integral, None],
    }

    def __init__(self, start=None, stop=None):
        self.start = start
        self.stop = stop

    def _window(self, n_timepoints):
        """The slice of time bins kept for trials of ``n_timepoints`` bins."""
        for name in ("start", "stop"):
            value = getattr(self, name)
            if value is not None and not -n_timepoints <= value <= n_timepoints:
                raise ValueError(
                    f"{name}={value} is outside trials of {n_timepoints} time bins; "
                    f"use a value in [-{n_timepoints}, {n_timepoints}] or None.")
        window = slice(self.start, self.stop)
        n_kept = len(range(*window.indices(n_timepoints)))
        if n_kept == 0:
            raise ValueError(
                f"TrialCropper(start={self.start}, stop={self.stop}) keeps no time bin "
                f"of trials of {n_timepoints} bins; start must come before stop.")
        return window

    @publishes_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check X and the window, and record the number of neurons.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials.
        y : None
            Ignored.

        Returns
        -------
        self : object
            This transformer.
        """
        X = check_trials_array(X)
        self._window(X.shape[1])
        self.n_features_in_ = X.shape[2]
        return self

    def transform(self, X):
        """Crop every trial to the window.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials.

        Returns
        -------
        X_new : ndarray of shape (n_trials, n_kept, n_neurons)
            A copy of the kept time bins.
        """
        X = self._check_X_new(X)
        return X[:, self._window(X.shape[1])].copy()


# --------------------------------------------------------------------------- #
# condition labels as external inputs
# --------------------------------------------------------------------------- #
def condition_inputs(y, n_timepoints, *, conditions=None, duration=None):
    """A one-hot of each trial's condition over time, as the networks' ``inputs``.

    Channel ``j`` of trial ``k`` is 1 on the time bins where the input is on when
    trial ``k`` is of condition ``conditions[j]``, and 0 elsewhere. Given as
    ``inputs`` to :class:`~sklearn_ltr.LowTensorRankRNN` or
    :class:`~sklearn_ltr.LowRankRNN` (``fit``, and ``predict`` and ``score`` of
    new trials), it models a task cue the animal sees (e.g. the target): each
    condition drives the network through its own input direction, instead of the
    network having to generate each condition's trajectory from its initial state
    alone.

    Parameters
    ----------
    y : array-like of shape (n_trials,)
        Condition label of each trial.
    n_timepoints : int
        Time bins per trial (``X.shape[1]``).
    conditions : array-like of shape (n_conditions,), default=None
        The labels, one channel each, in this order. Default: the sorted distinct
        labels of ``y``. Build the inputs of all trials at once, or pass the same
        ``conditions`` for training and new trials, so that a channel means the
        same condition in both.
    duration : int, default=None
        Number of time bins, from the first, on which the input is on (a pulse
        at the start of the trial); None: every time bin.

    Returns
    -------
    inputs : ndarray of shape (n_trials, n_timepoints, n_conditions)
        float64.

    Raises
    ------
    ValueError
        ``y`` not one label per trial, a label of ``y`` not in ``conditions``,
        repeated ``conditions``, or ``n_timepoints`` or ``duration`` below 1.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.preprocessing import condition_inputs
    >>> U = condition_inputs(["left", "right", "left"], 4, duration=2)
    >>> U.shape
    (3, 4, 2)
    >>> U[1].tolist()  # 'right': the second channel, on the first two bins
    [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    """
    for name, value in [("n_timepoints", n_timepoints), ("duration", duration)]:
        if value is not None and (not isinstance(value, Integral)
                                  or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must hold one condition label per trial (a 1D array), "
                         f"got shape {y.shape}.")
    labels = np.unique(y) if conditions is None else np.asarray(conditions)
    if labels.ndim != 1 or len(np.unique(labels)) != labels.size:
        raise ValueError(f"conditions must be distinct labels in a 1D array, got "
                         f"{labels.tolist()[:10]}.")
    onehot = y[:, None] == labels[None, :]
    unknown = ~onehot.any(axis=1)
    if unknown.any():
        raise ValueError(
            f"y holds label(s) {np.unique(y[unknown]).tolist()[:5]} that are not "
            f"in conditions={labels.tolist()[:10]}; pass every condition's label.")
    inputs = np.zeros((y.size, n_timepoints, labels.size))
    on = n_timepoints if duration is None else min(duration, n_timepoints)
    inputs[:, :on] = onehot[:, None, :]
    return inputs


# --------------------------------------------------------------------------- #
# per-trial parameters of a latent model, as 2D features
# --------------------------------------------------------------------------- #
class TrialFactors(TrialsInputMixin, TransformerMixin, BaseEstimator):
    """Per-trial factors of a latent model, as ``(n_trials, rank)`` features.

    Fits a clone of ``estimator`` on 3D trials and transforms trials into the
    per-trial parameters inferred with every shared parameter frozen (the model's
    :meth:`~sklearn_ltr.base.BaseLatentModel.trial_features`): trial factors for
    :class:`~sklearn_ltr.LowTensorRankRNN` and :class:`~sklearn_ltr.TCA`, latent
    initial states for :class:`~sklearn_ltr.LowRankRNN` (its only per-trial
    parameter), time-averaged principal-component scores for
    :class:`~sklearn_ltr.TrialPCA`. Training and new trials go through the same
    inference, so a downstream classifier sees features with the same distribution
    in both. It is the bridge from the 3D models to 2D scikit-learn estimators, e.g.
    to decode condition or learning epoch.

    Also importable from :mod:`sklearn_ltr.model_selection`, where it was first
    defined.

    Parameters
    ----------
    estimator : estimator of this package, or Pipeline ending in one
        The latent model. Labels given to :meth:`fit` are *not* passed to it (in a
        decoding pipeline they are the classifier's targets, not conditions).

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone.
    n_features_in_ : int
        Number of neurons.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_ltr import TCA, TrialFactors
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> data = make_low_tensor_rank_rnn(40, 12, 10, rank=2, random_state=0)
    >>> late = (np.arange(40) >= 20).astype(int)  # learning epoch
    >>> decoder = make_pipeline(TrialFactors(TCA(rank=2, random_state=0)),
    ...                         LogisticRegression())
    >>> decoder.fit(data.X, late)[0].get_feature_names_out()
    array(['trial_factor0', 'trial_factor1'], dtype=object)
    """

    def __init__(self, estimator):
        self.estimator = estimator

    @publishes_fit
    def fit(self, X, y=None, **fit_params):
        """Fit the latent model to trials ``X`` (``y`` is ignored).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials.
        y : ignored
            Accepted for Pipeline compatibility; not passed to the latent model.
        **fit_params : dict
            Passed to the latent model's ``fit`` (e.g. ``inputs``).

        Returns
        -------
        self : object
        """
        final = final_step(self.estimator)
        if not hasattr(final, "trial_features"):
            raise TypeError(
                f"TrialFactors needs an estimator of sklearn_ltr (LowTensorRankRNN, "
                f"LowRankRNN, TCA, TrialPCA) or a Pipeline ending in one, got "
                f"{type(final).__name__}.")
        self.estimator_ = clone(self.estimator).fit(X, **fit_params)
        self.n_features_in_ = final_step(self.estimator_).n_features_in_
        return self

    def transform(self, X, *, inputs=None):
        """Per-trial factors of the trials ``X``.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials, seen in ``fit`` or new.
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, for models fitted with them.

        Returns
        -------
        factors : ndarray of shape (n_trials, rank)
        """
        check_is_fitted(self)
        final, X = through_pipeline(self.estimator_, X)
        return final.trial_features(X, inputs=inputs)

    def get_feature_names_out(self, input_features=None):
        """Names of the output features: ``trial_factor0``, ``trial_factor1``, ...

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        names : ndarray of str objects
        """
        check_is_fitted(self)
        return final_step(self.estimator_).get_trial_feature_names_out()
