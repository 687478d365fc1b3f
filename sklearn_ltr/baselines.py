"""Baselines on the same protocol as the RNN estimators: TCA and trial-unfolded PCA.

Both estimators share :class:`~sklearn_ltr.base.BaseLatentModel` with the recurrent
networks: the same 3D input validation, the same ``rank`` parameter and the same
leak-free co-smoothing ``score``, so one ``GridSearchCV(est, {"rank": [...]})`` and one
set of folds compare all of them fairly.

* :class:`TCA` -- tensor component analysis (Williams et al., 2018), a CP decomposition
  of the ``(n_trials, n_timepoints, n_neurons)`` data tensor fitted with tensorly.
  New trials get their trial factors by (non-negative) least squares with the time and
  neuron factors frozen.
* :class:`TrialPCA` -- PCA of the ``(n_trials * n_timepoints, n_neurons)`` unfolding
  with :class:`sklearn.decomposition.PCA`. New trials get their latents, time point by
  time point, by least squares on the observed neurons with the components frozen.
* :class:`ConditionAverage` -- no model: the mean trajectory of each condition,
  optionally weighted over the session; the reference every model must beat.
"""

import warnings
from numbers import Integral, Real

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, _fit_context
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ._cp import fit_best_cp
from ._memory import check_memory
from ._schema import Array, Value
from ._torch_utils import limit_threads
from ._validation import (
    check_conditions,
    check_counts,
    check_known_conditions,
    check_session,
    check_training_trials,
    unit_scale,
)
from .base import BaseLatentModel, SaveMixin, TrialsInputMixin, publishes_fit
from .metrics import bits_per_spike, r2_observed

__all__ = ["TCA", "TrialPCA", "ConditionAverage"]


# --------------------------------------------------------------------------- #
# shared helpers
# --------------------------------------------------------------------------- #
def _reject_inputs(est, inputs):
    if inputs is not None:
        raise ValueError(
            f"{type(est).__name__} does not take external inputs; call it without "
            f"inputs=... (only the recurrent network models use them).")


# Relative ridge of the per-trial / per-time-point least-squares problems. The normal
# matrices are singular when a trial (or time point) has too few observed entries --
# e.g. every neuron of a co-smoothing fold missing -- and the ridge then returns the
# minimum-norm-like solution instead of failing; on well-posed problems it changes the
# solution by a relative 1e-8, far below any noise level.
_RIDGE = 1e-8


def _masked_least_squares(design, X, *, nonneg=False):
    """Solve ``min_c ||X_p - design @ c_p||^2`` over the observed entries of each row p.

    Parameters
    ----------
    design : ndarray of shape (n_entries, rank)
        Frozen regressors, shared by every problem.
    X : ndarray of shape (n_problems, n_entries)
        Data; NaN marks a missing entry, which is left out of its problem.
    nonneg : bool
        Constrain the solutions to be non-negative.

    Returns
    -------
    coef : ndarray of shape (n_problems, rank)
    """
    rank = design.shape[1]
    observed = ~np.isnan(X)
    X_obs = np.where(observed, X, 0.0)
    mask = observed.astype(np.float64)
    # Normal equations, batched: G_p = D^T diag(m_p) D, b_p = D^T (m_p * x_p).
    G = np.einsum("pe,er,es->prs", mask, design, design, optimize=True)
    b = X_obs @ design
    scale = np.einsum("prr->p", G) / rank
    lam = _RIDGE * np.where(scale > 0, scale, 1.0) + 1e-300
    G = G + lam[:, None, None] * np.eye(rank)
    if not nonneg:
        return np.linalg.solve(G, b[..., None])[..., 0]
    # ||D c - x||^2 over the observed entries equals ||L^T c - L^{-1} b||^2 + const
    # with G = L L^T, so each NNLS runs on a (rank x rank) system instead of one with
    # n_entries rows.
    L = np.linalg.cholesky(G)
    rhs = np.linalg.solve(L, b[..., None])[..., 0]
    Lt = np.swapaxes(L, 1, 2)
    return np.stack([nnls(Lt[p], rhs[p])[0] for p in range(G.shape[0])])


def _check_fit_memory(est, shape, bytes_per_entry):
    """Refuse a fit whose estimated peak memory exceeds the available memory.

    ``bytes_per_entry`` times the number of entries of X: the working copies of the
    data made by the fit (checked against ``tracemalloc`` by the test suite).
    """
    check_memory(
        int(bytes_per_entry * np.prod(shape, dtype=np.float64)), "cpu",
        what=f"{type(est).__name__}.fit on X of shape {tuple(shape)}",
        remedy="Fit on fewer trials, time points or neurons.")


def _tca_bytes_per_entry(nonneg, missing):
    """Peak working memory of :meth:`TCA.fit` per entry of X, in bytes.

    The masked and zero-filled copies of X, tensorly's unfoldings and the
    reconstruction of each ALS iteration, plus the imputed tensors with missing
    entries and the multiplicative updates of the non-negative fit.
    """
    # Measured with tracemalloc: 41-44 bytes per entry without missing entries,
    # 65-66 with, 89 non-negative with; the constants leave a margin.
    return 48 + (24 if missing else 0) + (24 if nonneg else 0)


def _is_exactly_rank_one(X, observed):
    """Whether the observed entries of X form an exact rank-1 tensor (e.g. constant).

    A rank-1 tensor equals ``a o b o c / x**2`` with ``a``, ``b`` and ``c`` the three
    fibres through any of its non-zero entries ``x``; this checks that identity (to
    1e-12 of the largest entry) on the observed entries, through the largest entry
    whose three fibres are observed (False when there is none). O(size of X) time,
    no decomposition; one trial at a time, so its memory is that of one trial.

    Parameters
    ----------
    X : ndarray of shape (n_trials, n_timepoints, n_neurons)
        Data with missing entries set to 0.
    observed : ndarray of bool, same shape
    """
    across_trials, across_time, across_neurons = (observed.all(0), observed.all(1),
                                                  observed.all(2))
    pivot, largest = None, 0.0
    for k, trial in enumerate(np.abs(X)):
        largest = max(largest, trial.max())
        usable = across_trials & across_time[k][None, :] & across_neurons[k][:, None]
        magnitude = np.where(usable, trial, 0.0)
        t, n = np.unravel_index(np.argmax(magnitude), magnitude.shape)
        if magnitude[t, n] > 0 and (pivot is None or magnitude[t, n] > abs(
                X[pivot])):
            pivot = (k, t, n)
    if pivot is None:
        return False
    k, t, n = pivot
    a, b, c = X[:, t, n] / X[pivot], X[k, :, n] / X[pivot], X[k, t, :]
    outer = np.outer(b, c)
    return all(np.abs(np.where(observed[i], X[i] - a[i] * outer, 0.0)).max()
               <= 1e-12 * largest for i in range(X.shape[0]))


# TrialPCA.fit: mean-filled unfolding, centred copy and SVD factors (tracemalloc
# measured 11-19 bytes per entry).
_TRIALPCA_BYTES_PER_ENTRY = 24


# --------------------------------------------------------------------------- #
# TCA
# --------------------------------------------------------------------------- #
class TCA(BaseLatentModel):
    """Tensor component analysis: CP decomposition of the data tensor.

    Approximates the recorded activity by a sum of ``rank`` rank-one tensors,

        X[k, t, n] ~ sum_r trial_factors_[k, r] * time_factors_[t, r]
                           * neuron_factors_[n, r],

    fitted by alternating least squares (``tensorly.decomposition.parafac``), or by
    multiplicative updates with non-negative factors when ``nonneg=True``
    (``tensorly.decomposition.non_negative_parafac``). NaN entries of ``X`` are
    missing: they are excluded from the fit through tensorly's ``mask``.

    Unlike the recurrent networks, TCA has no dynamics: the time factors are fixed
    waveforms, so a fitted model only describes trials of the same length. It is the
    usual descriptive baseline for changes in activity over learning (Williams et
    al., 2018): its trial factors play the role of the RNN's trial factors, but in
    activity rather than connectivity.

    For trials not seen in :meth:`fit` (``transform``, ``predict`` and the
    co-smoothing ``score``), each trial's factor is solved by least squares on the
    trial's observed entries with the time and neuron factors frozen (non-negative
    least squares when ``nonneg=True``), the pattern of ``NMF.transform``.

    Parameters
    ----------
    rank : int, default=3
        Number of components R. The fit needs fewer free parameters,
        ``rank * (n_trials + n_timepoints + n_neurons - 2)``, than observed entries.
    nonneg : bool, default=False
        Constrain all factors to be non-negative (for rates or spike counts).
    n_init : int, default=1
        Number of fits from different initialisations; the one with the lowest
        reconstruction error on the observed entries is kept. The first uses
        ``init``, the others random factors.
    max_iter : int, default=500
        Maximum number of iterations of each fit.
    tol : float, default=1e-7
        The fit stops when the relative reconstruction error changes by less than
        ``tol`` between iterations.
    init : {'svd', 'random'}, default='svd'
        Initialisation of the first fit: leading singular vectors of each unfolding
        (missing entries imputed by tensorly) or random factors.
    random_state : int, RandomState instance or None, default=None
        Seeds the random initialisations (and the imputation of missing entries in
        the SVD initialisation) through a local ``RandomState``; the global numpy
        seed is never touched. The same value gives identical fits.
    cosmoothing_folds : int, default=5
        Number of neuron folds of the co-smoothing score.
    n_threads : int or None, default=1
        BLAS threads used during fit, transform, predict and score, restored
        afterwards (as ``n_threads`` of the recurrent network models). These
        problems are small, so one thread is usually fastest; None leaves the BLAS
        setting alone.

    Attributes
    ----------
    trial_factors_ : ndarray of shape (n_trials, rank)
        Trial factors; they carry the scale of each component.
    time_factors_ : ndarray of shape (n_timepoints, rank)
        Time factors, each column of unit Euclidean norm.
    neuron_factors_ : ndarray of shape (n_neurons, rank)
        Neuron factors, each column of unit Euclidean norm. Signs are fixed so that
        the largest-magnitude entry of each time and neuron factor is positive, and
        components are sorted by decreasing norm of their trial factor.
    reconstruction_error_ : float
        Relative error ``||X - X_hat|| / ||X||`` over the observed entries of the
        training data, for the kept fit.
    n_iter_ : int
        Iterations run by the kept fit.
    n_features_in_ : int
        Number of recorded neurons (the last axis of X).

    See Also
    --------
    TrialPCA : PCA of the trial-unfolded data, a baseline without trial factors.
    LowTensorRankRNN : Low-tensor-rank connectivity instead of low-rank activity.

    References
    ----------
    .. [1] A. H. Williams et al. "Unsupervised Discovery of Demixed, Low-Dimensional
       Neural Dynamics across Multiple Timescales through Tensor Component
       Analysis". Neuron 98(6), 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr import TCA
    >>> rng = np.random.RandomState(0)
    >>> C, T, N = rng.rand(20, 2), rng.rand(15, 2), rng.rand(8, 2)
    >>> X = np.einsum("kr,tr,nr->ktn", C, T, N) + 0.01 * rng.randn(20, 15, 8)
    >>> tca = TCA(rank=2, random_state=0).fit(X)
    >>> tca.trial_factors_.shape, tca.time_factors_.shape, tca.neuron_factors_.shape
    ((20, 2), (15, 2), (8, 2))
    >>> tca.transform(X[:3]).shape
    (3, 15, 2)
    >>> bool(tca.score(X) > 0.9)
    True
    """

    # The fitted state a saved TCA must hold (see sklearn_ltr._registry).
    _fitted_schema = {
        "n_features_in_": Value("int", low=1), "n_iter_": Value("int", low=0),
        "reconstruction_error_": Value("float", low=0, finite=False),
        # Normalised by normalize_cp: the scale is in the trial factors.
        "trial_factors_": ("n_trials", "rank"),
        "time_factors_": Array(("n_timepoints", "rank"), unit_norm=0),
        "neuron_factors_": Array(("n_features_in_", "rank"), unit_norm=0),
    }
    _parameter_constraints = {
        "rank": [Interval(Integral, 1, None, closed="left")],
        "nonneg": ["boolean"],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "init": [StrOptions({"svd", "random"})],
        "random_state": ["random_state"],
        "cosmoothing_folds": [Interval(Integral, 2, None, closed="left")],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, rank=3, *, nonneg=False, n_init=1, max_iter=500, tol=1e-7,
                 init="svd", random_state=None, cosmoothing_folds=5, n_threads=1):
        self.rank = rank
        self.nonneg = nonneg
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.random_state = random_state
        self.cosmoothing_folds = cosmoothing_folds
        self.n_threads = n_threads

    @publishes_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, trial_index=None, epochs=None, inputs=None):
        """Fit the CP decomposition to trials.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Recorded activity. NaN marks a missing entry, which is neither fitted nor
            scored.
        y : None
            Ignored; accepted for API symmetry with the recurrent network models.
        trial_index, epochs : array-like of shape (n_trials,), default=None
            Places in the session; validated, then ignored: TCA's trial factors
            have no prior over the session, so ``score`` always infers them
            (co-smoothing).
        inputs : None
            Not supported (TCA has no inputs); must be None.

        Returns
        -------
        self : object
            Fitted estimator.

        Raises
        ------
        ValueError
            Invalid X (see :func:`~sklearn_ltr.base.check_training_trials`);
            rank too large for the data, data that are all zero, exactly rank 1
            (e.g. constant) with ``rank > 1``, or have fewer independent components
            than ``rank``;
            a fit estimated to need more memory than is available.

        Warns
        -----
        MissingDataWarning
            A trial or a neuron of X is more than half missing.
        ConvergenceWarning
            max_iter was reached first.
        UserWarning
            The fit was interrupted (Ctrl-C): the latest factors are kept and the
            estimator is usable (in the first fit of ``nonneg=True``, which keeps no
            iterate, the interrupt propagates).
        """
        _reject_inputs(self, inputs)
        X, observed = check_training_trials(X)
        check_session(trial_index, epochs, X.shape[0])
        n_trials, n_timepoints, n_neurons = X.shape
        n_free = self.rank * (n_trials + n_timepoints + n_neurons - 2)
        n_observed = int(observed.sum())
        if n_free > n_observed:
            raise ValueError(
                f"rank={self.rank} is too large for X of shape {X.shape}: the CP model "
                f"has {n_free} free parameters but X has only {n_observed} observed "
                f"entries. Lower rank.")
        missing = not observed.all()
        _check_fit_memory(self, X.shape, _tca_bytes_per_entry(self.nonneg, missing))

        mask = observed.astype(np.float64)
        # tensorly multiplies the data by the mask, so missing entries must be finite;
        # their value is then replaced by the current model at every iteration.
        # The CP model is fitted on the data divided by a power of two (unit_scale),
        # exactly, so that its squares neither underflow nor overflow; the trial
        # factors carry the scale back.
        s = unit_scale(X)
        X0 = np.where(observed, X, 0.0)
        X0 /= s
        norm = np.sqrt(np.sum(X0 ** 2))
        if norm == 0:
            raise ValueError(
                "Every observed entry of X is 0: there is nothing for TCA to "
                "decompose (its factors would be undetermined).")
        if self.rank > 1 and _is_exactly_rank_one(X0, observed):
            # Every component beyond the first would have nothing to fit: the
            # least-squares systems are singular, and whether the solver notices
            # depends on the BLAS. Refused on every machine instead.
            raise ValueError(
                f"X is exactly a rank-1 tensor (e.g. constant data): TCA has "
                f"nothing to fit beyond one component, so rank={self.rank} is "
                f"undetermined. Use rank=1.")
        rng = check_random_state(self.random_state)
        with limit_threads(self.n_threads):
            fit = fit_best_cp(
                X0, self.rank, random_states=[rng] * self.n_init, init=self.init,
                max_iter=self.max_iter, tol=self.tol, mask=mask if missing else None,
                nonneg=self.nonneg, keep_interrupted=True, name="TCA", data_name="X")
        if fit.interrupted is not None:
            warnings.warn(
                f"TCA.fit was interrupted after {fit.interrupted} iterations; the best "
                f"factors so far are kept.", UserWarning)
        elif fit.n_iter >= self.max_iter and self.tol > 0:
            warnings.warn(
                f"TCA reached max_iter={self.max_iter} before converging "
                f"(tol={self.tol}); increase max_iter.", ConvergenceWarning)
        C, self.time_factors_, self.neuron_factors_ = fit.factors
        self.trial_factors_ = C * s
        self.reconstruction_error_ = float(np.sqrt(fit.sse) / norm)
        self.n_iter_ = fit.n_iter
        self.n_features_in_ = n_neurons
        return self

    def _infer_trial_factors(self, X, y, inputs):
        _reject_inputs(self, inputs)
        n_trials, n_timepoints, n_neurons = X.shape
        T, N = self.time_factors_, self.neuron_factors_
        if n_timepoints != T.shape[0]:
            raise ValueError(
                f"X has {n_timepoints} time points per trial, but TCA was fitted on "
                f"trials of {T.shape[0]} time points: its time factors describe "
                f"exactly that many. Crop or pad X (pad with NaN) to {T.shape[0]} time "
                f"points.")
        # Each entry of trial k is a linear function of its trial factor c_k:
        # X[k, t, n] = sum_r c_kr T[t, r] N[n, r] = design[(t, n)] @ c_k.
        design = np.einsum("tr,nr->tnr", T, N).reshape(-1, self.rank)
        C = _masked_least_squares(design, X.reshape(n_trials, -1), nonneg=self.nonneg)
        latents = C[:, None, :] * T[None, :, :]
        recon = latents @ N.T
        return latents, recon, C

    def _infer(self, X, y, inputs, session=None):
        latents, recon, _ = self._infer_trial_factors(X, y, inputs)
        return latents, recon

    def _trial_features(self, X, y, inputs):
        return self._infer_trial_factors(X, y, inputs)[2]

    def _trial_feature_name(self):
        return "trial_factor"


# --------------------------------------------------------------------------- #
# TrialPCA
# --------------------------------------------------------------------------- #
class TrialPCA(BaseLatentModel):
    """PCA of the trial-unfolded data: one neural subspace for all trials.

    Unfolds the ``(n_trials, n_timepoints, n_neurons)`` data into
    ``(n_trials * n_timepoints, n_neurons)`` and fits
    :class:`sklearn.decomposition.PCA` with ``rank`` components. NaN entries are
    filled with their neuron's mean over the observed entries before fitting (a
    single imputation: PCA has no notion of missing data; with few missing entries
    the components change little).

    For trials not seen in :meth:`fit` (``transform``, ``predict`` and the
    co-smoothing ``score``), the latents of each time point of each trial are
    solved by least squares on that time point's observed neurons with the
    components frozen::

        z[k, t] = argmin_z || m * (x[k, t] - mean_ - components_.T @ z) ||^2,

    with a negligible ridge for the time points that observe fewer neurons than
    ``rank``. The reconstruction is ``mean_ + z @ components_``. Missing entries are
    never used, so the co-smoothing score predicts held-out neurons from held-in ones.

    TrialPCA has neither trial factors nor dynamics: it is the "one subspace, no
    learning-specific structure" baseline.

    Parameters
    ----------
    rank : int, default=3
        Number of principal components; at most ``n_neurons`` (and
        ``n_trials * n_timepoints``).
    random_state : int, RandomState instance or None, default=None
        Passed to :class:`~sklearn.decomposition.PCA` (used by its randomized SVD
        solver on large data).
    cosmoothing_folds : int, default=5
        Number of neuron folds of the co-smoothing score.
    n_threads : int or None, default=1
        BLAS threads used during fit, transform, predict and score, restored
        afterwards (as ``n_threads`` of the recurrent network models). These
        problems are small, so one thread is usually fastest; None leaves the BLAS
        setting alone.

    Attributes
    ----------
    components_ : ndarray of shape (rank, n_neurons)
        Principal axes in neuron space, orthonormal rows.
    mean_ : ndarray of shape (n_neurons,)
        Per-neuron mean over observed entries of the training data.
    explained_variance_ : ndarray of shape (rank,)
        Variance of the (mean-filled) training data along each component.
    explained_variance_ratio_ : ndarray of shape (rank,)
        Fraction of the total variance explained by each component.
    n_features_in_ : int
        Number of recorded neurons (the last axis of X).

    See Also
    --------
    TCA : Low-rank decomposition with per-trial factors.
    sklearn.decomposition.PCA : The underlying estimator.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr import TrialPCA
    >>> rng = np.random.RandomState(0)
    >>> Z, W = rng.randn(20, 15, 2), rng.randn(2, 8)
    >>> X = Z @ W + 0.01 * rng.randn(20, 15, 8)
    >>> pca = TrialPCA(rank=2).fit(X)
    >>> pca.components_.shape
    (2, 8)
    >>> pca.transform(X[:3]).shape
    (3, 15, 2)
    >>> bool(pca.score(X) > 0.9)
    True
    """

    # The fitted state a saved TrialPCA must hold (see sklearn_ltr._registry).
    _fitted_schema = {
        "n_features_in_": Value("int", low=1),
        "components_": Array(("rank", "n_features_in_"), unit_norm=1),
        "mean_": ("n_features_in_",),
        "explained_variance_": ("rank",),
        "explained_variance_ratio_": ("rank",),
    }
    _parameter_constraints = {
        "rank": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "cosmoothing_folds": [Interval(Integral, 2, None, closed="left")],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, rank=3, *, random_state=None, cosmoothing_folds=5,
                 n_threads=1):
        self.rank = rank
        self.random_state = random_state
        self.cosmoothing_folds = cosmoothing_folds
        self.n_threads = n_threads

    @publishes_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, trial_index=None, epochs=None, inputs=None):
        """Fit PCA to the trial-unfolded data.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Recorded activity. NaN entries are filled with their neuron's mean for
            the fit.
        y : None
            Ignored; accepted for API symmetry with the recurrent network models.
        trial_index, epochs : array-like of shape (n_trials,), default=None
            Places in the session; validated, then ignored: TrialPCA has no
            per-trial parameter to predict, so ``score`` always infers its latents
            (co-smoothing).
        inputs : None
            Not supported (TrialPCA has no inputs); must be None.

        Returns
        -------
        self : object
            Fitted estimator.

        Raises
        ------
        ValueError
            Invalid X (see :func:`~sklearn_ltr.base.check_training_trials`);
            rank above ``n_neurons`` or ``n_trials * n_timepoints``;
            values above 1e154, whose variances overflow;
            a fit estimated to need more memory than is available.

        Warns
        -----
        MissingDataWarning
            A trial or a neuron of X is more than half missing.
        """
        _reject_inputs(self, inputs)
        X, observed = check_training_trials(X)
        check_session(trial_index, epochs, X.shape[0])
        n_trials, n_timepoints, n_neurons = X.shape
        n_samples = n_trials * n_timepoints
        if self.rank > min(n_samples, n_neurons):
            bound = (f"n_neurons={n_neurons}" if n_neurons <= n_samples else
                     f"n_trials * n_timepoints={n_samples}")
            raise ValueError(
                f"rank={self.rank} must be <= {bound} for TrialPCA; lower rank.")
        _check_fit_memory(self, X.shape, _TRIALPCA_BYTES_PER_ENTRY)
        # PCA of the data divided by a power of two (unit_scale), exactly, so that
        # its squares neither underflow nor overflow.
        s = unit_scale(X)
        if s > 2.0 ** 510:
            raise ValueError(
                f"X has values up to {np.nanmax(np.abs(X)):.3g}: their variances "
                f"(TrialPCA's explained_variance_) exceed the largest float64. Divide "
                f"X by a constant (the components do not depend on it).")
        flat = X.reshape(n_samples, n_neurons) / s
        mean = np.nanmean(flat, axis=0)
        flat = np.where(np.isnan(flat), mean, flat)
        with limit_threads(self.n_threads), np.errstate(invalid="ignore",
                                                        divide="ignore"):
            pca = PCA(n_components=self.rank, random_state=self.random_state).fit(flat)
        self.components_ = pca.components_
        self.mean_ = pca.mean_ * s
        self.explained_variance_ = pca.explained_variance_ * s ** 2
        # Constant data have no variance to explain: 0 / 0, reported as 0.
        self.explained_variance_ratio_ = np.nan_to_num(pca.explained_variance_ratio_,
                                                       nan=0.0)
        self.n_features_in_ = n_neurons
        return self

    def _infer(self, X, y, inputs, session=None):
        _reject_inputs(self, inputs)
        n_trials, n_timepoints, n_neurons = X.shape
        # Missing entries stay NaN after centring and drop out of their time point.
        flat = (X - self.mean_).reshape(-1, n_neurons)
        Z = _masked_least_squares(self.components_.T, flat)
        latents = Z.reshape(n_trials, n_timepoints, self.rank)
        recon = self.mean_ + latents @ self.components_
        return latents, recon


# --------------------------------------------------------------------------- #
# ConditionAverage
# --------------------------------------------------------------------------- #
class ConditionAverage(SaveMixin, TrialsInputMixin, BaseEstimator):
    """Model-free reference: the mean trajectory of each condition.

    Predicts a trial by the average of the training trials of its condition ``y``
    (of all training trials without conditions), entry by entry over their observed
    values. With ``trial_smoothing``, the average is weighted by closeness in the
    session, ``exp(-(t - t_j)^2 / (2 trial_smoothing^2))`` for a trial at number
    ``t`` and a training trial at ``t_j`` of the same condition (and epoch, when
    epochs are given): a model-free description of how the activity itself changes
    over learning. A trial is predicted from its condition and place alone, never
    from its own data, so its score is the same under co-smoothing and under the
    predicting score of the networks: a network that does not beat it explains
    nothing the trial average does not.

    Parameters
    ----------
    trial_smoothing : float or None, default=None
        Length scale, in trials, of the weights over the session; None: the plain
        condition average. Used only when ``predict`` and ``score`` get
        ``trial_index``.
    loss : {'mse', 'poisson'}, default='mse'
        Which score ``score`` reports, as the networks' ``loss``: R^2, or bits per
        spike for spike counts.

    Attributes
    ----------
    conditions_ : ndarray of shape (n_conditions,) or None
        Condition labels seen in fit.
    condition_means_ : ndarray of shape (n_conditions, n_timepoints, n_neurons)
        Mean trajectory of each condition (one row without conditions).
    trials_ : ndarray of shape (n_trials, n_timepoints, n_neurons)
        The training trials, for the weighted averages (missing entries as 0).
    observed_ : ndarray of bool, shape (n_trials, n_timepoints, n_neurons)
        Where they were observed.
    trial_conditions_ : ndarray of int, shape (n_trials,)
        Index of each training trial's condition in ``conditions_`` (0 without).
    trial_index_ : ndarray of shape (n_trials,)
    epochs_ : ndarray of shape (n_trials,) or None
    n_features_in_ : int

    See Also
    --------
    sklearn_ltr.model_selection.learning_test : Networks on held-out trials.

    Examples
    --------
    >>> from sklearn_ltr import ConditionAverage
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> data = make_low_tensor_rank_rnn(40, 10, 6, rank=2, random_state=0)
    >>> avg = ConditionAverage().fit(data.X[:30], data.y[:30])
    >>> avg.predict(data.X[30:], data.y[30:]).shape
    (10, 10, 6)
    >>> bool(avg.score(data.X[30:], data.y[30:]) > 0.5)
    True
    """

    _fitted_schema = {
        "n_features_in_": Value("int", low=1),
        # One mean per condition (one in all without conditions).
        "conditions_?": Array(("n_means",), "label", increasing=True),
        "condition_means_": ("n_means", "n_timepoints", "n_features_in_"),
        "trials_": ("n_trials", "n_timepoints", "n_features_in_"),
        "observed_": Array(("n_trials", "n_timepoints", "n_features_in_"), "bool"),
        "trial_conditions_": Array(("n_trials",), "int", index_of="n_means"),
        "trial_index_": Array(("n_trials",), distinct=True),
        "epochs_?": Array(("n_trials",), "label"),
    }
    _parameter_constraints = {
        "trial_smoothing": [Interval(Real, 0, None, closed="neither"), None],
        "loss": [StrOptions({"mse", "poisson"})],
    }
    __metadata_request__fit = {"trial_index": True, "epochs": True, "inputs": True}
    __metadata_request__predict = {"trial_index": True, "epochs": True,
                                   "inputs": True}
    __metadata_request__score = {"trial_index": True, "epochs": True, "inputs": True}

    def __init__(self, trial_smoothing=None, *, loss="mse"):
        self.trial_smoothing = trial_smoothing
        self.loss = loss

    def _score_kind(self):
        return "bits_per_spike" if self.loss == "poisson" else "r2"

    @publishes_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, trial_index=None, epochs=None, inputs=None):
        """Store the training trials and the mean trajectory of each condition.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Training trials; NaN entries are left out of the averages.
        y : array-like of shape (n_trials,), default=None
            Condition labels.
        trial_index, epochs : array-like of shape (n_trials,), default=None
            Places in the session (for ``trial_smoothing``).
        inputs : ignored
            Accepted for API symmetry with the networks (the average does not
            depend on them).

        Returns
        -------
        self : object
        """
        X, observed = check_training_trials(X)
        if self.loss == "poisson":
            check_counts(X)
        labels, index = check_conditions(y, X.shape[0])
        self.trial_index_, self.epochs_ = check_session(trial_index, epochs,
                                                        X.shape[0])
        self.conditions_ = labels
        self.trial_conditions_ = (np.zeros(X.shape[0], dtype=int) if index is None
                                  else index)
        n_means = 1 if labels is None else len(labels)
        self.trials_, self.observed_ = np.where(observed, X, 0.0), observed
        self.condition_means_ = np.stack([
            _weighted_mean(self.trials_[sel], self.observed_[sel])
            for sel in (self.trial_conditions_ == c for c in range(n_means))])
        self.n_features_in_ = X.shape[2]
        return self

    def predict(self, X, y=None, *, trial_index=None, epochs=None, inputs=None):
        """The condition average of each trial (weighted over the session).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials; only their number and shape are used.
        y : array-like of shape (n_trials,), default=None
            Their conditions (required when fitted with conditions).
        trial_index, epochs : array-like of shape (n_trials,), default=None
            Their places in the session, for ``trial_smoothing``.
        inputs : ignored

        Returns
        -------
        X_hat : ndarray of shape (n_trials, n_timepoints, n_neurons)
        """
        X = self._check_X_new(X)
        if X.shape[1] != self.condition_means_.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} time points per trial, but ConditionAverage "
                f"was fitted on trials of {self.condition_means_.shape[1]}.")
        cond = np.zeros(X.shape[0], dtype=int)
        if self.conditions_ is not None:
            if y is None:
                raise ValueError(
                    "ConditionAverage was fitted with conditions: pass each trial's "
                    "condition as y.")
            cond = check_known_conditions(y, self.conditions_, X.shape[0])
        index, labels = check_session(trial_index, epochs, X.shape[0], required=True)
        if index is None or self.trial_smoothing is None:
            return self.condition_means_[cond].copy()
        if (labels is None) != (self.epochs_ is None):
            raise ValueError("epochs must be given exactly when they were given to "
                             "fit.")
        return np.stack([self._smoothed(c, t, None if labels is None else e)
                         for c, t, e in zip(cond, index,
                                            labels if labels is not None
                                            else [None] * len(cond))])

    def _smoothed(self, condition, t, epoch):
        """Session-weighted average of the training trials of one condition."""
        same = self.trial_conditions_ == condition
        if epoch is not None and np.any(same & (self.epochs_ == epoch)):
            same &= self.epochs_ == epoch
        weights = np.exp(-0.5 * ((self.trial_index_[same] - t)
                                 / self.trial_smoothing) ** 2)
        return _weighted_mean(self.trials_[same], self.observed_[same], weights)

    def score(self, X, y=None, *, trial_index=None, epochs=None, inputs=None,
              sample_weight=None):
        """R^2 (bits per spike with ``loss='poisson'``) of :meth:`predict` on X.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials to score.
        y, trial_index, epochs, inputs : see :meth:`predict`.
        sample_weight : array-like of shape (n_trials,), default=None
            A weight per trial.

        Returns
        -------
        score : float
        """
        X = self._check_X_new(X)
        pred = self.predict(X, y, trial_index=trial_index, epochs=epochs)
        if self._score_kind() == "bits_per_spike":
            return bits_per_spike(X, pred, sample_weight)
        return r2_observed(X, pred, sample_weight)


def _weighted_mean(trials, observed, weights=None):
    """Mean over trials of each (time, neuron) entry, over its observed values.

    ``trials`` holds 0 where ``observed`` is False. An entry that no trial observed
    gets its neuron's mean over everything observed (0 for a neuron never seen).
    """
    w = np.ones(len(trials)) if weights is None else weights
    w = w[:, None, None] * observed
    total = w.sum(0)
    mean = np.divide((w * trials).sum(0), total, out=np.zeros(trials.shape[1:]),
                     where=total > 0)
    count = observed.sum((0, 1))
    fill = np.divide(trials.sum((0, 1)), count, out=np.zeros(count.shape),
                     where=count > 0)
    return np.where(total > 0, mean, fill[None, :])
