"""Safe persistence of fitted estimators: one ``.npz`` file that loads without pickle.

``pickle`` and ``joblib`` files run code when they are loaded, so a model file from
an untrusted source is a program. The format here holds only data, and
:func:`load` never imports a name read from the file:

* one ``.npz`` archive (numpy's zip of ``.npy`` arrays), read with
  ``allow_pickle=False``, so no Python object is ever unpickled;
* a JSON header in the archive (member ``__header__``, stored as UTF-8 bytes) with
  the format name and version, the versions of sklearn_ltr, numpy, torch,
  scikit-learn and Python that wrote it, the estimator's class name, its parameters
  (``get_params``) and a description of every fitted attribute (kind, and for arrays
  their dtype and shape);
* one array per fitted array attribute (public ones with a trailing underscore and
  the private ones inference needs, e.g. ``_cand_states`` of the recurrent networks),
  stored as ``attr.<name>``.

At load the class name is looked up in an allow-list of this package's estimator
classes (those registered in :mod:`sklearn_ltr._registry` as they were defined), the
parameters are validated by the estimator's ``_parameter_constraints``, and each
array is checked against the header and against the fitted state the class declares
in its ``_fitted_schema`` (e.g. ``left_factors_`` of shape ``(n_units, rank)``); a
truncated, tampered or foreign file raises a :class:`ValueError` that says what is
wrong. This module imports none of the estimator modules: it finds their classes in
the registry, so that the estimators (whose ``save`` comes from here) and this module
never import each other.
"""

import json
import os
import re
import sys
import uuid
import zipfile
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._registry import registered_classes
from ._torch_utils import usable_device
from ._version import __version__

__all__ = ["save", "load", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "sklearn_ltr.model"
FORMAT_VERSION = 1
_HEADER_KEY = "__header__"
_ARRAY_PREFIX = "attr."
_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")
# A header describes a few dozen attributes; anything far larger is not ours.
_MAX_HEADER_BYTES = 2 ** 24


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
        if value.dtype.kind not in "biufcUS" or value.dtype.fields is not None:
            raise ValueError(
                f"{name} is an array of dtype {value.dtype}, which cannot be saved "
                f"without pickle.")
        arrays[key] = value
        return {"kind": "array", "dtype": value.dtype.str, "shape": list(value.shape)}
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


def _header_bytes(header):
    return np.frombuffer(json.dumps(header, allow_nan=True).encode("utf-8"),
                         dtype=np.uint8)


def save(estimator, file):
    """Save a fitted estimator of this package to ``file`` in the safe ``.npz`` format.

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
        ``RandomState``).

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
    name = type(estimator).__name__
    if registered_classes().get(name) is not type(estimator):
        raise TypeError(
            f"Only estimators of sklearn_ltr can be saved in this format, got "
            f"{type(estimator).__module__}.{name}; use pickle or joblib instead.")
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
        "params": {k: _encode(f"parameter {k!r}", v, arrays, f"param.{k}")
                   for k, v in params.items()},
        "attributes": {},
    }
    for key, value in vars(estimator).items():
        if key in params or key.startswith("__"):
            continue
        header["attributes"][key] = _encode(
            f"attribute {key!r}", value, arrays, _ARRAY_PREFIX + key)
    arrays[_HEADER_KEY] = _header_bytes(header)
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


def _decode(file, name, entry, npz, key, used):
    if not isinstance(entry, dict) or "kind" not in entry:
        raise _invalid(file, f"the header entry of {name} is malformed.")
    kind, value = entry["kind"], entry.get("value")
    scalar_types = {"bool": bool, "int": int, "float": (int, float), "str": str}
    if kind == "none":
        return None
    if kind in scalar_types:
        if not isinstance(value, scalar_types[kind]) or (
                kind in ("int", "float") and isinstance(value, bool)):
            raise _invalid(file, f"{name} should be a {kind}, got {value!r}.")
        return float(value) if kind == "float" else value
    if kind in ("list", "tuple"):
        if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise _invalid(file, f"{name} should be a list of numbers.")
        return list(value) if kind == "list" else tuple(value)
    if kind == "json":
        return value
    if kind == "device":
        try:
            return torch.device(value)
        except (RuntimeError, TypeError):
            raise _invalid(file, f"{name} is not a torch device: {value!r}.") from None
    if kind == "RandomState":
        try:
            state = (value[0], np.asarray(value[1], dtype=np.uint32), int(value[2]),
                     int(value[3]), float(value[4]))
            rs = np.random.RandomState()
            rs.set_state(state)
        except (TypeError, ValueError, IndexError, OverflowError):
            raise _invalid(file, f"{name} is not a valid RandomState.") from None
        return rs
    if kind == "array":
        if key not in npz.files:
            raise _invalid(file, f"the array of {name} is missing.")
        try:
            # The .npy header is compared with the JSON header before the data are
            # read: numpy allocates the declared shape up front, so a tampered
            # shape must not get that far.
            with npz.zip.open(key + ".npy") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
            if (dtype.str != entry.get("dtype") or list(shape) != entry.get("shape")):
                raise _invalid(
                    file, f"{name} has dtype {dtype.str} and shape {tuple(shape)}, but "
                          f"the header says {entry.get('dtype')} and "
                          f"{entry.get('shape')}.")
            size = npz.zip.getinfo(key + ".npy").file_size
            if size < int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise _invalid(file, f"the array of {name} is truncated.")
            array = npz[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            if str(exc).startswith(repr(file)):
                raise
            raise _invalid(
                file, f"the array of {name} cannot be read ({exc}).") from None
        used.add(key)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise _invalid(file, f"{name} holds non-finite values.")
        return array
    raise _invalid(file, f"{name} has an unknown kind {kind!r}.")


def _check_state(file, est, state, expected):
    """Check the fitted attributes against the class's schema ``expected``.

    All must be present, and the arrays' shapes consistent with the schema, the
    parameters and each other.
    """
    params = est.get_params(deep=False)
    bound = {}
    for spec_name, shape in expected.items():
        nullable = spec_name.endswith("?")
        attr = spec_name.rstrip("?")
        if attr not in state:
            raise _invalid(file, f"the fitted attribute {attr} is missing.")
        value = state[attr]
        if shape is None or (nullable and value is None):
            continue
        if not isinstance(value, np.ndarray):
            raise _invalid(file, f"{attr} should be an array.")
        if value.ndim != len(shape):
            raise _invalid(file, f"{attr} has {value.ndim} dimensions, expected "
                                 f"{len(shape)}.")
        for axis, (dim, size) in enumerate(zip(shape, value.shape)):
            if isinstance(dim, int):
                want = dim
            elif dim in params:
                want = params[dim]
            elif dim in state and dim != attr:
                want = state[dim]
            else:
                want = bound.setdefault(dim, size)
            if not isinstance(want, (int, np.integer)) or want != size:
                wanted = want if isinstance(dim, int) else f"{dim}={want}"
                raise _invalid(
                    file, f"{attr} has shape {value.shape}, which does not match "
                          f"{wanted} (axis {axis}).")
    n_features = state.get("n_features_in_")
    if not isinstance(n_features, int) or n_features < 1:
        raise _invalid(file, f"n_features_in_ should be a positive int, got "
                             f"{n_features!r}.")


def load(file):
    """Load an estimator saved with its ``save`` method (or :func:`save`).

    No code from the file is run: the archive is read with ``allow_pickle=False``,
    the class is taken from an allow-list of this package's estimators, parameters
    are validated and every array is checked against the shapes the estimator
    expects. A model fitted on a GPU loads on a machine without one: its ``device_``
    falls back to the CPU, with a warning.

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
        text file), is truncated or was tampered with (unknown class, invalid
        parameters, missing or reshaped arrays), or was written by a newer version
        of the format.

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
        npz = np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _invalid(
            label, f"it cannot be read as a numpy .npz archive ({exc}).") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _invalid(label, "it holds a single array, not a model archive.")
    with npz:
        if _HEADER_KEY not in npz.files:
            raise _invalid(label, "it has no sklearn_ltr header (another .npz file?).")
        try:
            if npz.zip.getinfo(_HEADER_KEY + ".npy").file_size > _MAX_HEADER_BYTES:
                raise ValueError("the header is implausibly large")
            raw = npz[_HEADER_KEY]
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ValueError("the header is not a byte string")
            header = json.loads(raw.tobytes().decode("utf-8"))
        except (ValueError, OSError, EOFError, zipfile.BadZipFile,
                UnicodeDecodeError) as exc:
            raise _invalid(label, f"its header cannot be read ({exc}).") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise _invalid(
                label, f"its header does not name the format {FORMAT_NAME!r}.")
        version = header.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _invalid(label, f"its format version {version!r} is not valid.")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{label!r} was written in format version {version} by sklearn_ltr "
                f"{header.get('versions', {}).get('sklearn_ltr')}; this version of "
                f"sklearn_ltr reads up to version {FORMAT_VERSION}. Upgrade "
                f"sklearn_ltr.")
        registry = registered_classes()
        class_name = header.get("class")
        if not isinstance(class_name, str) or class_name not in registry:
            raise _invalid(label, f"its class {class_name!r} is not one of the "
                                  f"estimators of sklearn_ltr {sorted(registry)}.")
        cls = registry[class_name]
        params_in, attrs_in = header.get("params"), header.get("attributes")
        if not isinstance(params_in, dict) or not isinstance(attrs_in, dict):
            raise _invalid(label, "its header lacks the parameters or attributes.")
        valid = cls().get_params(deep=False)
        unknown = sorted(set(params_in) - set(valid))
        if unknown:
            raise _invalid(label, f"{class_name} has no parameter(s) {unknown}.")
        used = set()
        params = {k: _decode(label, f"parameter {k!r}", v, npz, f"param.{k}", used)
                  for k, v in params_in.items()}
        est = cls(**params)
        try:
            est._validate_params()
        except ValueError as exc:
            raise _invalid(label, f"invalid parameters ({exc}).") from None
        state = {}
        for key, entry in attrs_in.items():
            if (not isinstance(key, str) or not _NAME.match(key) or key in valid
                    or hasattr(cls, key)):
                raise _invalid(label, f"{key!r} is not a fitted attribute of "
                                      f"{class_name}.")
            state[key] = _decode(label, f"attribute {key!r}", entry, npz,
                                 _ARRAY_PREFIX + key, used)
        extra = sorted(set(npz.files) - used - {_HEADER_KEY})
        if extra:
            raise _invalid(label, f"it holds arrays the header does not describe: "
                                  f"{extra[:5]}.")
    state = cls._complete_fitted_state(state)
    _check_state(label, est, state, cls._fitted_schema)
    for key, value in state.items():
        if isinstance(value, torch.device):
            value = usable_device(value, class_name)
        setattr(est, key, value)
    return est
