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
