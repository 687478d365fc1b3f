"""The model at the end of a Pipeline, for the functions that accept either.

Plotting, model selection and :class:`~sklearn_ltr.preprocessing.TrialFactors` take a
model of this package or a ``Pipeline`` ending in one (e.g. a scaler then a model),
and need the model itself: its fitted attributes, its score kind, its per-trial
features.
"""

from sklearn.pipeline import Pipeline

__all__ = ["final_step", "through_pipeline"]


def final_step(estimator):
    """The last step of a Pipeline, or the estimator itself.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_ltr import StandardScaler3D, TrialPCA
    >>> from sklearn_ltr._pipeline import final_step
    >>> final_step(make_pipeline(StandardScaler3D(), TrialPCA(rank=2)))
    TrialPCA(rank=2)
    >>> final_step(TrialPCA(rank=2))
    TrialPCA(rank=2)
    """
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def through_pipeline(estimator, X):
    """The final step of a fitted estimator, and X as that step receives it.

    For a Pipeline, ``X`` is transformed by every step before the last; an estimator
    that is not a Pipeline gets ``X`` unchanged.

    Returns
    -------
    final : estimator
        The last step (see :func:`final_step`).
    X : array-like
        The input of the last step.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_ltr import TrialCropper, TrialPCA
    >>> from sklearn_ltr._pipeline import through_pipeline
    >>> X = np.random.RandomState(0).standard_normal((6, 5, 3))
    >>> pipe = make_pipeline(TrialCropper(start=1), TrialPCA(rank=2)).fit(X)
    >>> final, Xt = through_pipeline(pipe, X)
    >>> final, Xt.shape
    (TrialPCA(rank=2), (6, 4, 3))
    """
    if isinstance(estimator, Pipeline):
        return estimator[-1], estimator[:-1].transform(X)
    return estimator, X
