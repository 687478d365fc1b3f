"""Base classes of every estimator and transformer in the package.

* :class:`TrialsInputMixin`: the tags and the after-fit input check of everything
  that takes ``(n_trials, n_timepoints, n_neurons)`` arrays;
* :class:`SaveMixin`: ``save`` in the safe format of :func:`sklearn_ltr.load`;
* :class:`BaseLatentModel`: ``transform``, ``predict`` and the leak-free co-smoothing
  ``score``, implemented once for all latent models on top of one hook, ``_infer``.

The validation functions, torch utilities and scores used to live here; they are
re-exported from their modules (:mod:`sklearn_ltr.metrics` and private ones) so
that existing imports keep working.
"""

import contextlib
import functools
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from ._memory import check_memory
from ._persistence import save
from ._registry import register
from ._torch_utils import (
    flush_denormals,
    limit_threads,
    resolve_device,
    seed_from,
    to_numpy,
    to_tensor,
)
from ._validation import (
    MOSTLY_MISSING,
    MissingDataWarning,
    check_conditions,
    check_counts,
    check_inputs,
    check_session,
    check_training_trials,
    check_trials_array,
)
from .metrics import bits_per_spike, cosmoothing_folds, cosmoothing_predict, r2_observed

__all__ = [
    "BaseLatentModel", "SaveMixin", "TrialsInputMixin", "publishes_fit",
    "clear_fitted",
    # re-exported
    "MissingDataWarning", "MOSTLY_MISSING", "check_memory", "check_trials_array",
    "check_training_trials", "check_conditions", "check_inputs", "cosmoothing_folds",
    "r2_observed", "bits_per_spike", "flush_denormals", "limit_threads",
    "resolve_device", "seed_from", "to_numpy", "to_tensor",
]


def _is_fitted_name(est, name, params):
    """Whether the attribute ``name`` of ``est`` is fitted state.

    Fitted state is what ``fit`` sets: public names with a trailing underscore and
    the private names a class declares in its ``_fitted_schema``. Parameters and
    scikit-learn's own configuration (``set_output``, metadata requests) are not.
    """
    if name in params or name.startswith("__"):
        return False
    schema = getattr(type(est), "_fitted_schema", None) or {}
    return name.endswith("_") or name in schema or f"{name}?" in schema


def _unfitted_state(est):
    """A new dict of ``est``'s attributes without its fitted state."""
    params = est.get_params(deep=False)
    return {k: v for k, v in vars(est).items()
            if not _is_fitted_name(est, k, params)}


def clear_fitted(est):
    """Remove the fitted state of ``est`` in one step (after a failed fit).

    The estimator then reads as unfitted instead of half-fitted. The attribute
    dict is replaced, never edited in place, so that a pickle or ``save`` taken
    from another thread sees the old state or the unfitted one.
    """
    est.__dict__ = _unfitted_state(est)


def _check_finite_state(est):
    """Refuse a fit that computed non-finite (NaN or infinite) fitted arrays.

    The last line of defence behind every estimator's own numerical guards: no
    estimator returns NaN parameters silently.
    """
    params = est.get_params(deep=False)
    for name, value in vars(est).items():
        if (_is_fitted_name(est, name, params) and isinstance(value, np.ndarray)
                and value.dtype.kind in "fc" and not np.isfinite(value).all()):
            raise ValueError(
                f"{type(est).__name__}.fit computed non-finite values in {name}; the "
                f"fit is refused. Check that X is not degenerate, and divide it by a "
                f"constant if its values are very large.")


def publishes_fit(fit):
    """Decorator of every ``fit`` of the package: all or nothing, in one step.

    ``fit`` runs on an unfitted copy of the estimator (the same parameter
    objects, no fitted attribute). When it returns, the copy's attribute dict
    becomes the estimator's in one assignment, so that a pickle or ``save``
    taken from another thread during a fit sees the previous fitted state or the
    new one, never a mixture. When it raises (a ``ValueError`` for bad data, a
    ``KeyboardInterrupt`` before anything could be kept) or computes a non-finite
    fitted array, the estimator is left unfitted, as the README promises of a
    failed fit.

    Parameters
    ----------
    fit : callable
        The method ``fit(self, X, ...)``, returning ``self``.

    Returns
    -------
    wrapper : callable
    """
    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        staged = object.__new__(type(self))
        staged.__dict__.update(_unfitted_state(self))
        try:
            fit(staged, *args, **kwargs)
            _check_finite_state(staged)
        except BaseException:
            clear_fitted(self)
            raise
        self.__dict__ = staged.__dict__
        return self

    return wrapper


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
        """Validate X after fit: fitted, 3D, finite or NaN, same neurons as in fit.

        Models of spike counts (``loss='poisson'``) refuse negative values, as
        their ``fit`` does.
        """
        check_is_fitted(self)
        X = check_trials_array(X)
        if X.shape[2] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[2]} neurons, but {type(self).__name__} was fitted "
                f"with {self.n_features_in_} neurons; X must have shape (n_trials, "
                f"n_timepoints, {self.n_features_in_}).")
        if getattr(self, "loss", None) == "poisson":
            check_counts(X)
        return X


class SaveMixin:
    """``save`` for every estimator and transformer of the package.

    A subclass that can be saved declares ``_fitted_schema``: its fitted attributes
    and what each value must be (type, range, and for arrays dtype and shape), in
    the language of :mod:`sklearn_ltr._schema` (e.g. ``{"n_features_in_":
    Value("int", low=1), "mean_?": ("n_features_in_",)}``). A subclass defined in
    this package, with a public name and a schema, is registered when its class
    statement runs, which puts it on the allow-list of :func:`sklearn_ltr.load`.
    Private bases (and abstract public ones, which declare no schema) are not; nor
    is any class defined outside the package, so that a file can only ever build a
    class of sklearn_ltr.
    """

    # None: not saveable (no schema); saveable classes declare their own.
    _fitted_schema = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        in_package = cls.__module__.partition(".")[0] == __name__.partition(".")[0]
        if (in_package and not cls.__name__.startswith("_")
                and cls._fitted_schema is not None):
            register(cls)

    @classmethod
    def _complete_params(cls, params):
        """Fill in parameters that files of an earlier version lack.

        :func:`sklearn_ltr.load` calls it with the parameters read from a file,
        before it builds the estimator. A parameter missing there takes its default
        unless a class that added it says here which value reproduces how the
        earlier version fitted (so that ``get_params`` describes the fitted model,
        and a clone refits it the same way).

        Parameters
        ----------
        params : dict
            Parameters by name.

        Returns
        -------
        params : dict
        """
        return params

    @classmethod
    def _complete_fitted_state(cls, state):
        """Fill in fitted attributes that files of an earlier version lack.

        :func:`sklearn_ltr.load` calls it with the attributes read from a file,
        before checking them against ``_fitted_schema``. A class that adds a fitted
        attribute overrides it to say what a file without it stands for.

        Parameters
        ----------
        state : dict
            Fitted attributes by name.

        Returns
        -------
        state : dict
        """
        return state

    @classmethod
    def _check_fitted_state(cls, state):
        """Check relations between fitted values that ``_fitted_schema`` cannot state.

        :func:`sklearn_ltr.load` (and ``save``) call it once the state has passed the
        schema: every attribute is present, with its type, dtype, shape and range. A
        class whose inference needs more (e.g. outputs that stay finite) overrides
        it.

        Parameters
        ----------
        state : dict
            Fitted attributes by name.

        Raises
        ------
        ValueError
            Saying which values are inconsistent.
        """

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
        """The context of every computation.

        ``limit_threads(n_threads)``, and ``flush_denormals()`` for models that set
        ``_flush_denormal``.
        """
        stack = contextlib.ExitStack()
        stack.enter_context(limit_threads(getattr(self, "n_threads", None)))
        if self._flush_denormal:
            stack.enter_context(flush_denormals())
        return stack

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    def _validate_params(self):
        """scikit-learn's parameter validation, and no bool where an int is expected.

        ``Interval(Integral, ...)`` accepts ``True`` (bool subclasses int), which
        would then silently mean ``rank=1`` or fail deep inside a solver.
        """
        super()._validate_params()
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            integer = any(isinstance(c, Interval) and c.type is Integral
                          for c in constraints)
            if (isinstance(value, (bool, np.bool_)) and "boolean" not in constraints
                    and integer):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be an int, "
                    f"not a bool. Got {value!r} instead.")

    # -- public API ------------------------------------------------------------
    # scikit-learn's metadata routing (``sklearn.set_config(enable_metadata_routing=
    # True)``): a GridSearchCV, cross_validate or Pipeline given these per-trial
    # arrays passes each fold's part of them on, without a set_*_request call.
    __metadata_request__fit = {"trial_index": True, "epochs": True, "inputs": True}
    __metadata_request__transform = {"trial_index": True, "epochs": True,
                                     "inputs": True}
    __metadata_request__predict = {"trial_index": True, "epochs": True,
                                   "inputs": True}
    __metadata_request__score = {"trial_index": True, "epochs": True, "inputs": True}

    def transform(self, X, y=None, *, trial_index=None, epochs=None, inputs=None):
        """Latent trajectories of the given trials.

        Per-trial parameters are inferred from the observed entries of ``X`` with
        every shared parameter frozen (the pattern of ``NMF.transform``), so trials
        never seen in ``fit`` are handled. Given their places in the session
        (``trial_index``), models with trial factors predict them there instead of
        inferring them (see :meth:`score`).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials; NaN marks missing entries.
        y : array-like of shape (n_trials,), default=None
            Condition labels, for models fitted with per-condition initial states.
        trial_index : array-like of shape (n_trials,), default=None
            Each trial's number in the session (as given to ``fit``).
        epochs : array-like of shape (n_trials,), default=None
            Each trial's epoch label, for models fitted with epochs.
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, required when the model was fitted with them.

        Returns
        -------
        latents : ndarray of shape (n_trials, n_timepoints, rank)
        """
        X = self._check_X_new(X)
        session = self._check_new_session(X.shape[0], trial_index, epochs)
        self._check_inference_memory(X.shape)
        with self._torch_context():
            latents, _ = self._infer(X, y, inputs, session)
        return latents

    def predict(self, X, y=None, *, trial_index=None, epochs=None, inputs=None):
        """Reconstruction of the given trials (rates for ``loss='poisson'``).

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials; NaN marks missing entries, which are predicted too.
        y : array-like of shape (n_trials,), default=None
            Condition labels (see :meth:`transform`).
        trial_index, epochs : array-like of shape (n_trials,), default=None
            Places in the session (see :meth:`transform`).
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, required when the model was fitted with them.

        Returns
        -------
        X_hat : ndarray of shape (n_trials, n_timepoints, n_neurons)
        """
        X = self._check_X_new(X)
        session = self._check_new_session(X.shape[0], trial_index, epochs)
        self._check_inference_memory(X.shape)
        with self._torch_context():
            _, recon = self._infer(X, y, inputs, session)
        return recon

    def score(self, X, y=None, *, trial_index=None, epochs=None, inputs=None,
              sample_weight=None):
        """Score of held-out trials, leak-free: higher is better.

        **Without** ``trial_index``: the co-smoothing score. The neurons are split
        into ``cosmoothing_folds`` folds (a fixed assignment shared by every
        estimator). For each fold, the per-trial parameters (initial state, trial
        factor, ...) are inferred from the *other* neurons only, with all shared
        parameters frozen, and the fold's neurons are predicted. No entry that is
        scored is used to infer the parameters that predict it. It measures how well
        the family of dynamics describes each trial.

        **With** ``trial_index`` (each trial's number in the session; and ``epochs``
        when the model was fitted with them): the predicting score. Per-trial
        parameters that a model can predict from the trial's place in the session
        are predicted, not inferred: the trial factors of
        :class:`~sklearn_ltr.LowTensorRankRNN` from its Gaussian-process prior over
        the fitted trials, the initial state from the condition ``y``, the nuisance
        offsets from their drift. What cannot be predicted (an initial state without
        ``y``) is inferred as above, fold by fold. This is the score that tests
        whether connectivity changed over a session (see
        :func:`~sklearn_ltr.model_selection.learning_test`).

        Either way the score is the variance-weighted R^2 over all observed entries
        (NaN entries are neither used nor scored), or with ``loss='poisson'`` the
        log-likelihood in bits per spike relative to each neuron's mean rate, as in
        the Neural Latents Benchmark.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials to score.
        y : array-like of shape (n_trials,), default=None
            Condition labels (see :meth:`transform`).
        trial_index, epochs : array-like of shape (n_trials,), default=None
            Places in the session: with them, the predicting score.
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, required when the model was fitted with them.
        sample_weight : array-like of shape (n_trials,), default=None
            A weight per trial in the score (as scikit-learn's ``sample_weight``;
            a ``Pipeline`` passes it, None, to every final estimator's ``score``).

        Returns
        -------
        score : float
        """
        X = self._check_X_new(X)
        if np.isnan(X).all():
            raise ValueError(
                "X has no observed (non-NaN) entry, so there is nothing to score; pass "
                "trials with observed entries.")
        session = self._check_new_session(X.shape[0], trial_index, epochs)
        with self._torch_context():
            if session is not None and self._predicts_from_session(y):
                self._check_inference_memory(X.shape)
                pred = self._infer(X, y, inputs, session)[1]
            else:
                pred = self._cosmooth_predict(X, y, inputs, session)
        if self._score_kind() == "bits_per_spike":
            return bits_per_spike(X, pred, sample_weight)
        return r2_observed(X, pred, sample_weight)

    def _check_new_session(self, n_trials, trial_index, epochs):
        """Places in the session of trials after fit, or None without them."""
        index, labels = check_session(trial_index, epochs, n_trials, required=True)
        return None if index is None else Bunch(trial_index=index, epochs=labels)

    def _predicts_from_session(self, y):
        """Whether trials at known places are predicted without any of their data.

        Then the predicting score needs no co-smoothing folds. Models that infer
        some per-trial parameter from the trial's own data in any case say False.
        """
        return False

    def trial_features(self, X, y=None, *, inputs=None):
        """Per-trial parameters of the given trials, as ``(n_trials, rank)`` features.

        Inferred from the observed entries of ``X`` with every shared parameter
        frozen, like :meth:`transform`: trial factors for models that have them
        (:class:`~sklearn_ltr.LowTensorRankRNN`, :class:`~sklearn_ltr.TCA`), latent
        initial states for :class:`~sklearn_ltr.LowRankRNN`, each trial's
        time-averaged latents for :class:`~sklearn_ltr.TrialPCA`.
        :class:`~sklearn_ltr.preprocessing.TrialFactors` wraps this method as a
        transformer for 2D estimators (e.g. decoders) in a ``Pipeline``.

        Parameters
        ----------
        X : array-like of shape (n_trials, n_timepoints, n_neurons)
            Trials, seen in ``fit`` or new; NaN marks missing entries.
        y : array-like of shape (n_trials,), default=None
            Condition labels (see :meth:`transform`).
        inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
            External inputs, required when the model was fitted with them.

        Returns
        -------
        features : ndarray of shape (n_trials, rank)
            Named by :meth:`get_trial_feature_names_out`.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_ltr import TCA
        >>> rng = np.random.RandomState(0)
        >>> X = np.einsum("kr,tr,nr->ktn", rng.rand(20, 2), rng.rand(10, 2),
        ...               rng.rand(6, 2))
        >>> tca = TCA(rank=2, random_state=0).fit(X)
        >>> tca.trial_features(X[:3]).shape
        (3, 2)
        >>> tca.get_trial_feature_names_out()
        array(['trial_factor0', 'trial_factor1'], dtype=object)
        """
        X = self._check_X_new(X)
        self._check_inference_memory(X.shape)
        with self._torch_context():
            return self._trial_features(X, y, inputs)

    def get_trial_feature_names_out(self):
        """Names of the columns of :meth:`trial_features`.

        A prefix that says what the features are (``trial_factor``,
        ``initial_state``, ``mean_latent``) followed by the column index.

        Returns
        -------
        names : ndarray of str objects, shape (rank,)

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_ltr import TrialPCA
        >>> X = np.random.RandomState(0).standard_normal((10, 5, 4))
        >>> TrialPCA(rank=2).fit(X).get_trial_feature_names_out()
        array(['mean_latent0', 'mean_latent1'], dtype=object)
        """
        check_is_fitted(self)
        prefix = self._trial_feature_name()
        return np.asarray([f"{prefix}{i}" for i in range(self.rank)], dtype=object)

    # Subclasses with per-trial parameters override the two hooks below; X is
    # already validated and the torch context entered by trial_features.
    def _trial_features(self, X, y, inputs):
        """Per-trial features, shape ``(n_trials, rank)``.

        By default each trial's time-averaged latent state.
        """
        latents, _ = self._infer(X, y, inputs)
        return latents.mean(axis=1)

    def _trial_feature_name(self):
        return "mean_latent"

    def _check_inference_memory(self, shape):
        """Refuse inference on trials of ``shape`` that would not fit in memory.

        Called before ``_infer`` allocates anything. Models whose inference needs
        memory beyond a few copies of the data (the recurrent networks: their unit
        states and gradients) override it; by default nothing is checked.
        """

    def _cosmooth_predict(self, X, y, inputs, session=None):
        """Predict each neuron from parameters inferred without it (folds at once)."""
        n_folds = min(self.cosmoothing_folds, X.shape[2])
        # Inferred at once, stacked along the trial axis.
        self._check_inference_memory((n_folds * X.shape[0],) + X.shape[1:])
        if session is not None:
            # The folds are stacked along the trial axis: so are the places.
            session = Bunch(
                trial_index=np.tile(session.trial_index, n_folds),
                epochs=None if session.epochs is None else np.tile(session.epochs,
                                                                   n_folds))
        return cosmoothing_predict(
            lambda Xm, ym, um: self._infer(Xm, ym, um, session)[1], X,
            self.cosmoothing_folds, y=y, inputs=inputs)
