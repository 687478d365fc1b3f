"""Safe persistence of fitted estimators: one ``.npz`` file that loads without pickle.

``pickle`` and ``joblib`` files run code when they are loaded, so a model file from
an untrusted source is a program. The format here holds only data, and
:func:`load` never imports a name read from the file:

* one ``.npz`` archive (numpy's zip of ``.npy`` arrays), whose members hold plain
  numeric arrays (and strings for condition labels), never Python objects;
* a JSON header in the archive (member ``__header__``, stored as UTF-8 bytes) with
  the format name and version, the versions of sklearn_ltr, numpy, torch,
  scikit-learn and Python that wrote it, the estimator's class name, its parameters
  (``get_params``), a description of every fitted attribute (kind, and for arrays
  their dtype and shape) and the SHA-256 checksum of all of it;
* one array per fitted array attribute (public ones with a trailing underscore and
  the private ones inference needs, e.g. ``_cand_states`` of the recurrent networks),
  stored as ``attr.<name>``.

The fitted attributes are those the class declares in its ``_fitted_schema`` (see
:mod:`sklearn_ltr._schema`), with the type, dtype, shape and range of each value.

Loading bounds its work and trusts nothing in the file:

1. the class name is looked up in an allow-list of this package's estimator classes
   (those registered in :mod:`sklearn_ltr._registry` as they were defined), and the
   parameters are validated by the estimator's ``_parameter_constraints``;
2. the header must describe exactly the attributes of the class's schema, with the
   types, dtypes and shapes it declares, before any array is read; only the members
   it describes are read, each after its size in the archive was checked against
   that shape (:mod:`sklearn_ltr._npz`), so a zip bomb or a huge declared shape is
   refused from a few bytes of the archive's directory;
3. the checksum must match (a file damaged or edited by hand is refused), and every
   value must be in range (finite, positive scales, indices in bounds, labels
   sorted) and consistent with the others (``_check_fitted_state`` of the class).

Anything else is a :class:`ValueError` that says what is wrong. Files of format
version 1 written before the checksum existed (sklearn_ltr 0.1) load without it.
This module imports none of the estimator modules: it finds their classes in the
registry, so that the estimators (whose ``save`` comes from here) and this module
never import each other.
"""

import hashlib
import json
import os
import re
import sys
import uuid
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._npz import Archive
from ._registry import registered_classes
from ._schema import Array, Declared, allowed_dtype, attribute_names, check_state
from ._torch_utils import usable_device
from ._version import __version__

__all__ = ["save", "load", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "sklearn_ltr.model"
FORMAT_VERSION = 1
_HEADER_KEY = "__header__"
_ARRAY_PREFIX = "attr."
_PARAM_PREFIX = "param."
_CHECKSUM = "sha256"
_HEADER_FIELDS = {"format", "format_version", "class", "versions", "params",
                  "attributes", _CHECKSUM}
# A header describes a few dozen attributes (the longest part is loss_curve_, one
# float per iteration); anything far larger is not ours.
_MAX_HEADER_BYTES = 2 ** 24
# What a header may say an array's dtype is (checked before numpy parses it).
_DTYPE_TEXT = re.compile(
    r"^(\|[biu]1|<[iuf][248]|<U[1-9][0-9]{0,5}|\|S[1-9][0-9]{0,5})$")
_ENTRY_FIELDS = {"none": set(), "array": {"dtype", "shape"}}


class _NewerFormat(ValueError):
    """A file of a later format version (its message names the fix: upgrade)."""


# --------------------------------------------------------------------------- #
# encoding
# --------------------------------------------------------------------------- #
def _is_number(v):
    return isinstance(v, (Real, np.number)) and not isinstance(v, (bool, np.bool_))


def _encode(name, value, arrays, key):
    """JSON description of ``value``; arrays go to ``arrays[key]``."""
    if value is None:
        return {"kind": "none"}
    if isinstance(value, (bool, np.bool_)):
        return {"kind": "bool", "value": bool(value)}
    if isinstance(value, (Integral, np.integer)):
        return {"kind": "int", "value": int(value)}
    if _is_number(value) and not isinstance(value, (complex, np.complexfloating)):
        return {"kind": "float", "value": float(value)}
    if isinstance(value, str):
        return {"kind": "str", "value": value}
    if isinstance(value, torch.device):
        return {"kind": "device", "value": str(value)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufUS" or value.dtype.fields is not None:
            raise ValueError(
                f"{name} is an array of dtype {value.dtype}, which cannot be saved "
                f"without pickle.")
        # Files hold little-endian data only; the values are the same.
        arrays[key] = value.astype(value.dtype.newbyteorder("<"), copy=False)
        return {"kind": "array", "dtype": arrays[key].dtype.str,
                "shape": list(value.shape)}
    if isinstance(value, np.random.RandomState):
        kind, keys, pos, has_gauss, cached = value.get_state()
        return {"kind": "RandomState", "value": [kind, keys.tolist(), int(pos),
                                                 int(has_gauss), float(cached)]}
    if isinstance(value, (list, tuple)) and all(_is_number(v) for v in value):
        return {"kind": "tuple" if isinstance(value, tuple) else "list",
                "value": [int(v) if isinstance(v, (Integral, np.integer)) else float(v)
                          for v in value]}
    if isinstance(value, dict):
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            pass
        else:
            return {"kind": "json", "value": json.loads(text)}
    raise ValueError(
        f"{name} of type {type(value).__name__} cannot be saved without pickle; use "
        f"pickle or joblib for this estimator.")


def _checksum(header, arrays):
    """SHA-256 of the header (without its checksum) and of every array's content."""
    digest = hashlib.sha256(json.dumps(
        {k: v for k, v in header.items() if k != _CHECKSUM}, sort_keys=True,
        separators=(",", ":"), allow_nan=True).encode("utf-8"))
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"\0{key}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8"))
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def save(estimator, file):
    """Save a fitted estimator of this package to ``file`` in the safe ``.npz`` format.

    Only the fitted state the class declares (its ``_fitted_schema``) and its
    parameters are written; other attributes (e.g. the configuration of
    ``set_output`` or of metadata routing) are not part of the format.

    Parameters
    ----------
    estimator : estimator
        A fitted estimator of sklearn_ltr (the recurrent networks, the baselines or
        a transformer of :mod:`sklearn_ltr.preprocessing`).
    file : str, os.PathLike or binary file object
        Destination. A path is written exactly as given (no ``.npz`` suffix is
        added) and atomically: the data go to a temporary file in the same folder,
        which then replaces ``file``, so an interrupted save never leaves a
        truncated model behind.

    Raises
    ------
    NotFittedError
        If the estimator is not fitted.
    TypeError
        If the estimator is not one of this package's classes.
    ValueError
        If a parameter or fitted attribute cannot be stored without pickle (e.g.
        ``random_state`` set to something other than None, an int or a
        ``RandomState``), or the fitted state is not one :func:`load` would accept
        (an attribute missing, non-finite or out of range).

    See Also
    --------
    load : Read the file back.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import sklearn_ltr
    >>> from sklearn_ltr import TrialPCA
    >>> X = np.random.RandomState(0).standard_normal((10, 5, 4))
    >>> pca = TrialPCA(rank=2).fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "pca.npz")
    >>> pca.save(path)
    >>> loaded = sklearn_ltr.load(path)
    >>> np.array_equal(loaded.predict(X), pca.predict(X))
    True
    """
    check_is_fitted(estimator)
    cls, name = type(estimator), type(estimator).__name__
    if registered_classes().get(name) is not cls:
        raise TypeError(
            f"Only estimators of sklearn_ltr can be saved in this format, got "
            f"{cls.__module__}.{name}; use pickle or joblib instead.")
    import sklearn

    arrays = {}
    params = estimator.get_params(deep=False)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class": name,
        "versions": {
            "sklearn_ltr": __version__, "numpy": np.__version__,
            "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "python": sys.version.split()[0],
        },
        "params": {k: _encode(f"parameter {k!r}", v, arrays, _PARAM_PREFIX + k)
                   for k, v in params.items()},
        "attributes": {
            key: _encode(f"attribute {key!r}", getattr(estimator, key), arrays,
                         _ARRAY_PREFIX + key)
            for key in attribute_names(cls._fitted_schema) if hasattr(estimator, key)},
    }
    # The state exactly as load will read it back, checked as load checks it: save
    # never writes a file that load refuses.
    state = {key: _decode(f"attribute {key!r}", entry,
                          lambda key, dtype, shape: arrays[key], _ARRAY_PREFIX + key)
             for key, entry in header["attributes"].items()}
    try:
        _check_fitted(cls, params, state)
    except ValueError as exc:
        raise ValueError(f"This {name} cannot be saved: its fitted state is not "
                         f"valid ({exc}) Fit it again.") from None
    header[_CHECKSUM] = _checksum(header, arrays)
    arrays[_HEADER_KEY] = np.frombuffer(
        json.dumps(header, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    _write(file, arrays)


def _write(file, arrays):
    if hasattr(file, "write"):
        np.savez(file, **arrays)
        return
    path = os.fspath(file)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------- #
# decoding
# --------------------------------------------------------------------------- #
def _invalid(file, reason):
    return ValueError(f"{file!r} is not a valid sklearn_ltr model file: {reason}")


def _declared(name, entry):
    """The dtype and shape the header declares for an array, checked for form."""
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if not isinstance(dtype, str) or not _DTYPE_TEXT.match(dtype):
        raise ValueError(f"{name} has dtype {dtype!r:.40}; model files hold native "
                         f"little-endian numbers or strings only.")
    if not isinstance(shape, list) or len(shape) > 8 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"{name} has an invalid shape {shape!r:.80}.")
    return Declared(np.dtype(dtype), tuple(shape))


def _decode(name, entry, read_array, key):
    """The value an entry of the header describes.

    ``read_array(key, dtype, shape)`` reads (or stands for) an array member.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise ValueError(f"the header entry of {name} is malformed.")
    kind, value = entry["kind"], entry.get("value")
    if set(entry) - {"kind"} != _ENTRY_FIELDS.get(kind, {"value"}):
        raise ValueError(f"the header entry of {name} has fields {sorted(entry)}.")
    scalar_types = {"bool": bool, "int": int, "float": float, "str": str}
    if kind == "none":
        return None
    if kind in scalar_types:
        if not isinstance(value, scalar_types[kind]) or (
                kind == "int" and isinstance(value, bool)):
            article = "an" if kind == "int" else "a"
            raise ValueError(f"{name} should be {article} {kind}, got {value!r:.80}.")
        return value
    if kind in ("list", "tuple"):
        if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{name} should be a list of numbers.")
        return list(value) if kind == "list" else tuple(value)
    if kind == "json":
        return value
    if kind == "device":
        try:
            return torch.device(value)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"{name} is not a torch device: {value!r:.80}.") from None
    if kind == "RandomState":
        return _random_state(name, value)
    if kind == "array":
        declared = _declared(name, entry)
        return read_array(key, declared.dtype, declared.shape)
    raise ValueError(f"{name} has an unknown kind {kind!r:.40}.")


def _random_state(name, value):
    try:
        if len(value[1]) != 624:
            raise ValueError
        state = (value[0], np.asarray(value[1], dtype=np.uint32), int(value[2]),
                 int(value[3]), float(value[4]))
        rs = np.random.RandomState()
        rs.set_state(state)
    except (TypeError, ValueError, IndexError, OverflowError, KeyError):
        raise ValueError(f"{name} is not a valid RandomState.") from None
    return rs


def _check_fitted(cls, params, state):
    """Check a whole fitted state: the class's schema, then its own checks."""
    check_state(state, cls._fitted_schema, params, cls.__name__)
    with np.errstate(all="ignore"):
        cls._check_fitted_state(state)


def _read_header(archive):
    if _HEADER_KEY not in archive.names:
        raise ValueError("it has no sklearn_ltr header (another .npz file?).")
    try:
        raw = archive.read(_HEADER_KEY, np.uint8, max_length=_MAX_HEADER_BYTES)
    except ValueError as exc:
        raise ValueError(f"its header cannot be read ({exc}).") from None
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # RecursionError: a header nested deeper than the interpreter's limit.
        raise ValueError(f"its header cannot be read ({type(exc).__name__}: "
                         f"{str(exc)[:100]}).") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ValueError(f"its header does not name the format {FORMAT_NAME!r}.")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"its format version {version!r:.40} is not valid.")
    if version > FORMAT_VERSION:
        versions = header.get("versions")
        writer = versions.get("sklearn_ltr") if isinstance(versions, dict) else None
        raise _NewerFormat(
            f"was written in format version {version} by sklearn_ltr {writer!r:.40}; "
            f"this version of sklearn_ltr reads up to version {FORMAT_VERSION}. "
            f"Upgrade sklearn_ltr.")
    unknown = sorted(set(header) - _HEADER_FIELDS)
    if unknown:
        raise ValueError(f"its header has unknown fields {unknown[:5]}.")
    if not isinstance(header.get("params"), dict) or not isinstance(
            header.get("attributes"), dict):
        raise ValueError("its header lacks the parameters or attributes.")
    versions = header.get("versions", {})
    if not isinstance(versions, dict) or not all(
            isinstance(v, str) for v in versions.values()):
        raise ValueError("its header's versions are not a dict of version strings.")
    checksum = header.get(_CHECKSUM)
    if checksum is not None and not (isinstance(checksum, str)
                                     and re.fullmatch("[0-9a-f]{64}", checksum)):
        raise ValueError(f"its checksum {checksum!r:.80} is not a SHA-256 digest.")
    return header


def _read_params(cls, header, archive, arrays):
    """The estimator, built from the parameters of the header and validated."""
    params_in = header["params"]
    valid = cls().get_params(deep=False)
    unknown = sorted(set(params_in) - set(valid))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {unknown[:5]}.")

    def read_array(key, dtype, shape):
        if not allowed_dtype(Array(shape, "label"), dtype):
            raise ValueError(f"{key} has dtype {dtype.str}; parameters hold numbers "
                             f"or strings only.")
        if int(np.prod(shape, dtype=object)) > archive.max_elements:
            raise ValueError(f"{key} declares a shape {shape} larger than the file "
                             f"can hold.")
        arrays[key] = archive.read(key, dtype, shape)
        return arrays[key]

    est = cls(**cls._complete_params(
        {k: _decode(f"parameter {k!r}", v, read_array, _PARAM_PREFIX + k)
         for k, v in params_in.items()}))
    try:
        est._validate_params()
    except ValueError as exc:
        raise ValueError(f"invalid parameters ({exc}).") from None
    return est


def _read_state(cls, header, archive, params, arrays):
    """Read the fitted attributes.

    Their types and shapes are checked against the schema from the header alone,
    before any array is read.
    """
    names = set(attribute_names(cls._fitted_schema))
    attrs_in = header["attributes"]
    unknown = sorted(set(attrs_in) - names)
    if unknown:
        raise ValueError(f"{unknown[0]!r:.80} is not a fitted attribute of "
                         f"{cls.__name__}.")
    declared = {key: _decode(f"attribute {key!r}", entry,
                             lambda key, dtype, shape: Declared(dtype, shape),
                             _ARRAY_PREFIX + key)
                for key, entry in attrs_in.items()}
    # Sizes and types are checked before a single array is read; what files of an
    # earlier version lack is filled in afterwards (from checked sizes).
    check_state(declared, cls._fitted_schema, params, cls.__name__, partial=True,
                max_size=archive.max_elements)

    def read_array(key, dtype, shape):
        arrays[key] = archive.read(key, dtype, shape)
        return arrays[key]

    state = {key: read_array(_ARRAY_PREFIX + key, value.dtype, value.shape)
             if isinstance(value, Declared) else value
             for key, value in declared.items()}
    extra = sorted(archive.names - set(arrays) - {_HEADER_KEY})
    if extra:
        raise ValueError(f"it holds arrays the header does not describe: "
                         f"{extra[:5]}.")
    return state


def load(file):
    """Load an estimator saved with its ``save`` method (or :func:`save`).

    No code from the file is run, and the work is bounded by the file's size: the
    class is taken from an allow-list of this package's estimators, parameters are
    validated, the header must describe exactly the fitted state the class declares,
    every array is checked against the shape the estimator expects before it is
    read, and the file's checksum and every value are checked before the estimator
    is built. A model fitted on a GPU loads on a machine without one: its
    ``device_`` falls back to the CPU, with a warning.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        A file written by ``save``.

    Returns
    -------
    estimator : estimator
        The fitted estimator, giving the same ``transform``, ``predict`` and
        ``score`` as the one saved.

    Raises
    ------
    FileNotFoundError
        If ``file`` does not exist.
    ValueError
        If the file is not a model file of this format (e.g. another ``.npz``, a
        text file), is truncated, damaged or was tampered with (unknown class or
        attribute, invalid parameters or values, missing, reshaped or oversized
        arrays, another compression method, a checksum that does not match), or was
        written by a newer version of the format.

    Examples
    --------
    >>> import io
    >>> import numpy as np
    >>> import sklearn_ltr
    >>> from sklearn_ltr import TCA
    >>> X = np.random.RandomState(0).rand(10, 6, 4)
    >>> buffer = io.BytesIO()
    >>> TCA(rank=2, random_state=0).fit(X).save(buffer)
    >>> _ = buffer.seek(0)
    >>> sklearn_ltr.load(buffer).trial_factors_.shape
    (10, 2)
    """
    if isinstance(file, (str, os.PathLike)):
        label = os.fspath(file)
    else:
        label = str(getattr(file, "name", "<file object>"))
    try:
        with Archive(file) as archive:
            header = _read_header(archive)
            registry = registered_classes()
            cls = registry.get(header.get("class")) if isinstance(
                header.get("class"), str) else None
            if cls is None:
                raise ValueError(f"its class {header.get('class')!r:.80} is not one "
                                 f"of the estimators of sklearn_ltr "
                                 f"{sorted(registry)}.")
            arrays = {}
            est = _read_params(cls, header, archive, arrays)
            params = est.get_params(deep=False)
            state = _read_state(cls, header, archive, params, arrays)
        if header.get(_CHECKSUM) not in (None, _checksum(header, arrays)):
            raise ValueError("its content does not match the checksum in its header "
                             "(the file was damaged or edited).")
        state = cls._complete_fitted_state(state)
        _check_fitted(cls, params, state)
    except _NewerFormat as exc:
        raise ValueError(f"{label!r} {exc}") from None
    except ValueError as exc:
        raise _invalid(label, exc) from None
    for key, value in state.items():
        if isinstance(value, torch.device):
            value = usable_device(value, cls.__name__)
        setattr(est, key, value)
    return est
