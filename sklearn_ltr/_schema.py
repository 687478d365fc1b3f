"""The language of ``_fitted_schema``, and the check of a fitted state against it.

Each saveable class declares, next to the code that sets it, the fitted state its
inference needs (see :mod:`sklearn_ltr._registry`): a dict from the name of each fitted
attribute to what its value must be. :func:`sklearn_ltr.load` checks a file against it
before it builds anything, and ``save`` checks an estimator against it before it writes,
so that a file ``save`` writes is always one ``load`` accepts.

The value of each entry is one of:

* a :class:`Value`: a scalar, a list of floats or a device, with its type and range;
* an :class:`Array`: an array with its shape, dtype and range;
* a tuple of dimensions: shorthand for ``Array(shape)``, an array of finite floats.

A shape has one entry per axis, each an int, the name of a parameter (``"rank"``), the
name of an integer fitted attribute (``"n_features_in_"``), or any other name: a symbol
that must have the same size in every array where it appears (``"n_states"``). A
trailing ``?`` on the attribute name means that it may also be None.

This module imports no other module of the package.
"""

import math
import re
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch

__all__ = ["Array", "Declared", "Value", "allowed_dtype", "attribute_names",
           "check_schema", "check_state"]

_ATTRIBUTE = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*\??$")
_DIMENSION = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")
_CLOSED = ("both", "left", "right", "neither")

# The dtypes each kind of array may have: native little-endian numbers only (and
# strings for labels), never structured, object, complex or big-endian data.
_INTS = frozenset({"|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8"})
_FLOATS = frozenset({"<f4", "<f8"})
_DTYPES = {
    "float": _FLOATS,
    "int": _INTS,
    "bool": frozenset({"|b1"}),
    # Condition and epoch labels: whatever np.unique returns for the user's labels.
    "label": _FLOATS | _INTS | {"|b1"},
}
_STRING_LABEL = re.compile(r"^(<U|\|S)[1-9][0-9]{0,5}$")


@dataclass(frozen=True)
class Value:
    """A fitted attribute that is not an array.

    Parameters
    ----------
    kind : {'int', 'float', 'bool', 'str', 'device', 'floats'}
        Its type; 'floats' is a list of floats (e.g. ``loss_curve_``).
    low, high : float, default=None
        Bounds of the value (of every entry of a list); None: unbounded.
    closed : {'both', 'left', 'right', 'neither'}, default='both'
        Which bounds are included, as in scikit-learn's ``Interval``.
    finite : bool, default=True
        Whether NaN and infinite floats are refused (False for diagnostics such as
        ``best_loss_``, which inference never reads).
    """

    kind: str
    low: float = None
    high: float = None
    closed: str = "both"
    finite: bool = True


@dataclass(frozen=True)
class Array:
    """A fitted array attribute.

    Parameters
    ----------
    shape : tuple
        One entry per axis (see the module docstring).
    dtype : {'float', 'int', 'bool', 'label'}, default='float'
        Float32 or float64; an integer type; bool; or labels (numbers, bools or
        strings, as ``np.unique`` returns the labels given to ``fit``).
    low, high, closed : see :class:`Value`
        Bounds of every entry.
    finite : bool, default=True
        Whether NaN and infinite entries are refused.
    index_of : str, default=None
        The entries are indices along this dimension (a name of the shape language):
        each in ``[0, size)``.
    distinct : bool, default=False
        No entry is repeated (e.g. trial numbers).
    increasing : bool, default=False
        The entries are strictly increasing (labels as ``np.unique`` returns them).
    unit_norm : int, default=None
        The vectors along this axis have unit Euclidean norm, or are zero (e.g. 0:
        the columns of a factor matrix normalised by ``normalize_cp``).
    """

    shape: tuple
    dtype: str = "float"
    low: float = None
    high: float = None
    closed: str = "both"
    finite: bool = True
    index_of: str = None
    distinct: bool = False
    increasing: bool = False
    unit_norm: int = None


def _as_spec(spec):
    return Array(spec) if isinstance(spec, tuple) else spec


def _valid_range(spec):
    return (spec.closed in _CLOSED and isinstance(spec.finite, bool)
            and all(b is None or (isinstance(b, Real) and not isinstance(b, bool))
                    for b in (spec.low, spec.high)))


def _valid_spec(spec):
    spec = _as_spec(spec)
    if isinstance(spec, Value):
        return (spec.kind in ("int", "float", "bool", "str", "device", "floats")
                and _valid_range(spec))
    if not isinstance(spec, Array) or not isinstance(spec.shape, tuple):
        return False
    dims_ok = all((isinstance(dim, Integral) and not isinstance(dim, bool) and dim >= 0)
                  or (isinstance(dim, str) and _DIMENSION.match(dim))
                  for dim in spec.shape)
    index_ok = spec.index_of is None or (
        spec.dtype == "int" and isinstance(spec.index_of, str)
        and _DIMENSION.match(spec.index_of) is not None)
    norm_ok = spec.unit_norm is None or (
        spec.dtype == "float" and spec.unit_norm in range(len(spec.shape)))
    return (dims_ok and index_ok and norm_ok and spec.dtype in _DTYPES
            and _valid_range(spec) and isinstance(spec.distinct, bool)
            and isinstance(spec.increasing, bool))


def check_schema(schema, owner):
    """Check a ``_fitted_schema`` against the language of this module.

    Parameters
    ----------
    schema : dict
        The schema to check.
    owner : str
        Name of the class that declares it, for the error message.

    Raises
    ------
    TypeError
        If the schema is not a non-empty dict of attribute names to a
        :class:`Value`, an :class:`Array` or a shape tuple.
    """
    if not isinstance(schema, dict) or not schema:
        raise TypeError(
            f"{owner}._fitted_schema must be a non-empty dict of fitted attribute "
            f"names to what their values must be, got {schema!r}.")
    for name, spec in schema.items():
        if not isinstance(name, str) or not _ATTRIBUTE.match(name):
            raise TypeError(
                f"{owner}._fitted_schema has the key {name!r}; keys must be attribute "
                f"names, with a trailing '?' when the attribute may be None.")
        if not _valid_spec(spec):
            raise TypeError(
                f"{owner}._fitted_schema[{name!r}] is {spec!r}; it must be a Value "
                f"(kind int, float, bool, str, device or floats), an Array (dtype "
                f"float, int, bool or label) or a shape: a tuple of sizes, each a "
                f"non-negative int or the name of a parameter, a fitted attribute or "
                f"a symbol (see sklearn_ltr._schema).")


def attribute_names(schema):
    """The attribute names of ``schema``, without the trailing ``?``."""
    return [name.rstrip("?") for name in schema]


def allowed_dtype(spec, dtype):
    """Whether an array of ``spec`` (a schema value) may have dtype ``dtype``."""
    spec = _as_spec(spec)
    if not isinstance(spec, Array):
        return False
    text = np.dtype(dtype).str
    return text in _DTYPES[spec.dtype] or (
        spec.dtype == "label" and _STRING_LABEL.match(text) is not None)


# --------------------------------------------------------------------------- #
# checking a state
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Declared:
    """An array known only by the dtype and shape a file declares for it.

    Before the data are read, the shapes are checked; the values later.
    """

    dtype: np.dtype
    shape: tuple


def _describe_range(spec):
    left = "[" if spec.closed in ("both", "left") else "("
    right = "]" if spec.closed in ("both", "right") else ")"
    low = "-inf" if spec.low is None else spec.low
    high = "inf" if spec.high is None else spec.high
    return f"{left}{low}, {high}{right}"


def _in_range(spec, low, high):
    """Whether values from ``low`` to ``high`` lie in the range of ``spec``."""
    if spec.low is not None and (low < spec.low or (
            low == spec.low and spec.closed in ("right", "neither"))):
        return False
    return spec.high is None or not (high > spec.high or (
        high == spec.high and spec.closed in ("left", "neither")))


def _check_value(name, value, spec):
    types = {"int": int, "float": float, "bool": bool, "str": str,
             "device": torch.device, "floats": list}
    if not isinstance(value, types[spec.kind]) or (
            spec.kind == "int" and isinstance(value, bool)):
        what = {"floats": "a list of floats", "int": "an int"}.get(spec.kind,
                                                                  f"a {spec.kind}")
        raise ValueError(f"{name} should be {what}, got {value!r:.80}.")
    if spec.kind not in ("int", "float", "floats"):
        return
    numbers = value if spec.kind == "floats" else [value]
    if not all(isinstance(v, float) for v in numbers) and spec.kind == "floats":
        raise ValueError(f"{name} should be a list of floats.")
    finite = [v for v in numbers if isinstance(v, int) or math.isfinite(v)]
    if spec.finite and len(finite) < len(numbers):
        raise ValueError(f"{name} should be finite, got {value!r:.80}.")
    if finite and not _in_range(spec, min(finite), max(finite)):
        raise ValueError(f"{name} should be in {_describe_range(spec)}, got "
                         f"{value!r:.80}.")


def _dimension_size(dim, attr, size, params, state, bound):
    """The size ``dim`` stands for (binding a symbol to ``size`` on first use)."""
    if isinstance(dim, int):
        return dim
    if dim in params:
        return params[dim]
    if dim in state and dim != attr:
        return state[dim]
    return bound.setdefault(dim, size)


def _check_shape(attr, value, spec, params, state, bound, max_size):
    shape = tuple(value.shape)
    if len(shape) != len(spec.shape):
        raise ValueError(f"{attr} has {len(shape)} dimensions, expected "
                         f"{len(spec.shape)}.")
    for axis, (dim, size) in enumerate(zip(spec.shape, shape)):
        want = _dimension_size(dim, attr, size, params, state, bound)
        if not isinstance(want, Integral) or isinstance(want, bool) or want != size:
            wanted = want if isinstance(dim, int) else f"{dim}={want!r:.40}"
            raise ValueError(f"{attr} has shape {shape}, which does not match "
                             f"{wanted} (axis {axis}).")
        if max_size is not None and size > max_size:
            raise ValueError(f"{attr} declares {size} entries along axis {axis}, more "
                             f"than the file can hold.")


def _check_array_values(attr, value, spec, sizes):
    if not value.size:
        return
    numeric = value.dtype.kind in "biuf"
    if numeric and value.dtype.kind == "f" and (spec.finite or spec.dtype == "label"):
        if not np.isfinite(value).all():
            raise ValueError(f"{attr} holds non-finite values.")
    if numeric and (spec.low is not None or spec.high is not None):
        with np.errstate(invalid="ignore"):
            low, high = value.min(), value.max()
        if not _in_range(spec, low, high):
            raise ValueError(f"{attr} holds values outside {_describe_range(spec)} "
                             f"(from {low} to {high}).")
    if spec.index_of is not None:
        size = sizes.get(spec.index_of)
        if size is None or value.min() < 0 or value.max() >= size:
            raise ValueError(f"{attr} holds indices outside [0, {spec.index_of}="
                             f"{size}).")
    if spec.increasing and not np.all(value[1:] > value[:-1]):
        raise ValueError(f"{attr} should hold distinct labels in increasing order.")
    if spec.distinct and np.unique(value).size != value.size:
        raise ValueError(f"{attr} should hold distinct values.")
    if spec.unit_norm is not None:
        with np.errstate(over="ignore"):  # inf norms are refused below
            norms = np.linalg.norm(value.astype(np.float64), axis=spec.unit_norm)
        if not np.all((norms == 0) | (np.abs(norms - 1) <= 1e-6)):
            raise ValueError(f"{attr} should have vectors of unit norm along axis "
                             f"{spec.unit_norm}, got norms {norms.round(6)}.")


def check_state(state, schema, params, owner, *, partial=False, max_size=None):
    """Check a fitted state against ``schema``.

    Parameters
    ----------
    state : dict
        Fitted attributes by name. An array may be a :class:`Declared` stand-in, whose
        dtype and shape are checked but not its values.
    schema : dict
        A ``_fitted_schema``.
    params : dict
        The estimator's parameters (sizes the shapes may name).
    owner : str
        Name of the class, for the messages.
    partial : bool, default=False
        Accept a state that lacks some attributes (a file of an earlier version,
        before :meth:`_complete_fitted_state` fills them in).
    max_size : int, default=None
        Largest size an axis may have, or an integer attribute that the schema names
        as a size (a bound from the size of the file); None: no bound.

    Raises
    ------
    ValueError
        Saying which attribute is wrong and how: missing, unknown, of the wrong type,
        dtype or shape, or with values out of range.
    """
    specs = {name.rstrip("?"): (_as_spec(spec), name.endswith("?"))
             for name, spec in schema.items()}
    unknown = sorted(set(state) - set(specs))
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a fitted attribute of {owner} (those "
                         f"are {sorted(specs)}).")
    missing = [attr for attr in specs if attr not in state]
    if missing and not partial:
        raise ValueError(f"the fitted attribute {missing[0]} is missing.")
    arrays = {}
    for attr, (spec, nullable) in specs.items():
        if attr not in state:
            continue
        value = state[attr]
        if value is None and nullable:
            continue
        if isinstance(spec, Value):
            _check_value(attr, value, spec)
        elif not isinstance(value, (np.ndarray, Declared)):
            raise ValueError(f"{attr} should be an array, got {type(value).__name__}.")
        elif not allowed_dtype(spec, value.dtype):
            raise ValueError(f"{attr} has dtype {np.dtype(value.dtype).str}, which is "
                             f"not a native little-endian {spec.dtype} dtype.")
        else:
            arrays[attr] = (value, spec)
    if max_size is not None:
        # An integer attribute that sizes arrays (e.g. _n_trials_fit) may size an
        # array that a file of an earlier version lacks and load fills in.
        for dim in {d for spec, _ in specs.values() if isinstance(spec, Array)
                    for d in spec.shape}:
            value = state.get(dim) if isinstance(dim, str) else None
            if isinstance(value, int) and value > max_size:
                raise ValueError(f"{dim}={value} is larger than the file can hold.")
    bound = {}
    for attr, (value, spec) in arrays.items():
        _check_shape(attr, value, spec, params, state, bound, max_size)
    sizes = {**bound, **{k: v for k, v in {**state, **params}.items()
                         if isinstance(v, int)}}
    for attr, (value, spec) in arrays.items():
        if isinstance(value, np.ndarray):
            _check_array_values(attr, value, spec, sizes)
