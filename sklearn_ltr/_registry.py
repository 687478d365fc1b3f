"""The classes :func:`sklearn_ltr.load` may build, and what each holds once fitted.

Each saveable class of the package declares its fitted state in a class attribute,
``_fitted_schema``, next to the code that sets that state, and registers itself when
it is defined (:class:`sklearn_ltr.base.SaveMixin` calls :func:`register` from
``__init_subclass__``). The persistence code looks classes up here by name: it never
imports an estimator module, and an estimator module never has to be imported by
it, so the two cannot import each other in a cycle. This module imports no other
module of the package for the same reason.

The schema is a dict from the name of each fitted attribute that inference needs to
the shape of its value:

* ``None``: a scalar, list or device attribute that must be present;
* a tuple with one entry per axis of an array attribute, each entry an int, the name
  of a parameter (``"rank"``), the name of an integer fitted attribute
  (``"n_features_in_"``), or any other name: a symbol that must have the same size in
  every array where it appears (``"n_states"``);
* a trailing ``?`` on the attribute name: the attribute may also be None.
"""

import re
from numbers import Integral

__all__ = ["check_schema", "register", "registered_classes"]

_ATTRIBUTE = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*\??$")
_DIMENSION = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")

# Filled once, as the package's modules define their classes; read-only afterwards.
# It is module state by necessity: the classes register from wherever they are
# defined, and load finds them here by the name written in a file.
_CLASSES = {}


def check_schema(schema, owner):
    """Check a ``_fitted_schema`` against the mini-language of this module.

    Parameters
    ----------
    schema : dict
        The schema to check.
    owner : str
        Name of the class that declares it, for the error message.

    Raises
    ------
    TypeError
        If the schema is not a dict of attribute names to None or to tuples of
        dimensions (ints or names).
    """
    if not isinstance(schema, dict) or not schema:
        raise TypeError(
            f"{owner}._fitted_schema must be a non-empty dict of fitted attribute "
            f"names to shapes, got {schema!r}.")
    for name, shape in schema.items():
        if not isinstance(name, str) or not _ATTRIBUTE.match(name):
            raise TypeError(
                f"{owner}._fitted_schema has the key {name!r}; keys must be attribute "
                f"names, with a trailing '?' when the attribute may be None.")
        if shape is None:
            continue
        if not isinstance(shape, tuple) or not all(
                (isinstance(dim, Integral) and not isinstance(dim, bool) and dim >= 0)
                or (isinstance(dim, str) and _DIMENSION.match(dim)) for dim in shape):
            raise TypeError(
                f"{owner}._fitted_schema[{name!r}] is {shape!r}; a shape must be None "
                f"(not an array) or a tuple of sizes, each a non-negative int or the "
                f"name of a parameter, a fitted attribute or a symbol.")


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
