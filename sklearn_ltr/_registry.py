"""The classes :func:`sklearn_ltr.load` may build, and what each holds once fitted.

Each saveable class of the package declares its fitted state in a class attribute,
``_fitted_schema``, next to the code that sets that state, and registers itself when
it is defined (:class:`sklearn_ltr.base.SaveMixin` calls :func:`register` from
``__init_subclass__``). The persistence code looks classes up here by name: it never
imports an estimator module, and an estimator module never has to be imported by
it, so the two cannot import each other in a cycle. This module imports no other
module of the package but :mod:`sklearn_ltr._schema`, for the same reason.

The schema is a dict from the name of each fitted attribute to what its value must
be, in the language of :mod:`sklearn_ltr._schema`: a ``Value`` (type and range), an
``Array`` (dtype, shape and range) or a shape tuple (an array of finite floats).
"""

from ._schema import check_schema

__all__ = ["register", "registered_classes"]

# Filled once, as the package's modules define their classes; read-only afterwards.
# It is module state by necessity: the classes register from wherever they are
# defined, and load finds them here by the name written in a file.
_CLASSES = {}


def register(cls):
    """Add ``cls`` to the classes :func:`sklearn_ltr.load` may build.

    Parameters
    ----------
    cls : type
        A class with a valid ``_fitted_schema``, registered under its ``__name__``.

    Returns
    -------
    cls : type
        The same class, so that ``register`` also works as a decorator.

    Raises
    ------
    TypeError
        If the schema is invalid, or another class is already registered under the
        same name (a file names its class by name only, so names must be unique).
    """
    check_schema(cls._fitted_schema, cls.__name__)
    other = _CLASSES.get(cls.__name__)
    # The same class defined again (a reloaded module) replaces itself.
    if other is not None and (other.__module__, other.__qualname__) != (
            cls.__module__, cls.__qualname__):
        raise TypeError(
            f"Cannot register {cls.__module__}.{cls.__qualname__}: the saveable class "
            f"{other.__module__}.{other.__qualname__} already has the name "
            f"{cls.__name__!r}, and a model file names its class by name only. Rename "
            f"one of them, or give it a name starting with '_' so it is not saveable.")
    _CLASSES[cls.__name__] = cls
    return cls


def registered_classes():
    """The saveable classes, by name.

    Returns
    -------
    classes : dict
        A copy of the registry: ``{class name: class}``.
    """
    return dict(_CLASSES)
