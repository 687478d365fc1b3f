"""Shared lists for the test modules."""

# scikit-learn checks that need no data (or only tiny 2D data that our estimators
# reject only after the check has what it needs).
DATA_FREE_CHECKS = [
    "check_parameters_default_constructible",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_repr",
    # Uses 2D data, but NotFittedError must be raised before X is validated.
    "check_estimators_unfitted",
    "check_param_validation",
    "check_estimator_cloneable",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
    "check_valid_tag_types",
    "check_estimator_tags_renamed",
]

from sklearn_ltr import (  # noqa: E402
    TCA,
    ConditionAverage,
    LowRankRNN,
    LowTensorRankRNN,
    TrialPCA,
    preprocessing,
)

RNNS = [LowTensorRankRNN, LowRankRNN]
BASELINES = [TCA, TrialPCA]
ESTIMATORS = RNNS + BASELINES
# Every transformer of the package, so a new one is covered without editing tests.
TRANSFORMERS = [getattr(preprocessing, name) for name in preprocessing.__all__
                if isinstance(getattr(preprocessing, name), type)]
# Model-free references: fit, predict and score, no latents.
REFERENCES = [ConditionAverage]
ALL = ESTIMATORS + TRANSFORMERS + REFERENCES


def class_id(cls):
    return cls.__name__


def make_small(Est, *, rank=2, rnn=None, tca=None, **params):
    """A small, fast instance of any class of the package.

    ``rnn`` and ``tca`` override the defaults of those model families only; ``params``
    override everything.
    """
    if Est in RNNS:
        kw = {"rank": rank, "n_units": 8, "max_iter": 15, "infer_max_iter": 15,
              "random_state": 0, **(rnn or {})}
    elif Est is TCA:
        kw = {"rank": rank, "max_iter": 50, "random_state": 0, **(tca or {})}
    elif Est is TrialPCA:
        kw = {"rank": rank, "random_state": 0}
    else:
        kw = {}
    kw.update(params)
    return Est(**kw)
