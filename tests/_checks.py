"""What the test modules share: the public classes of the package, grouped by what
they can do; the one helper that builds small, fast instances of any of them;
helpers that collect and compare what a fitted instance returns; and helpers that
take model files (zip archives of .npy members) apart and put them together."""

import inspect
import io
import json
import struct
import zipfile

import joblib
import numpy as np
from sklearn.base import BaseEstimator

import sklearn_ltr
from sklearn_ltr import TCA, TrialPCA
from sklearn_ltr._persistence import _checksum

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


def _required_params(Est):
    """The parameters ``Est`` cannot be built without."""
    return [p.name for p in inspect.signature(Est).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


# Every public estimator and transformer, found in sklearn_ltr.__all__, so that a new
# class is covered without editing the tests. The groups below are drawn from it by
# capability, not by name.
PUBLIC = [obj for obj in (getattr(sklearn_ltr, name) for name in sklearn_ltr.__all__)
          if isinstance(obj, type) and issubclass(obj, BaseEstimator)]
# Wrappers of another estimator of the package (TrialFactors).
WRAPPERS = [Est for Est in PUBLIC if "estimator" in _required_params(Est)]
# Latent models: transform (latents), predict and score new trials; a rank.
ESTIMATORS = [Est for Est in PUBLIC
              if hasattr(Est, "predict") and hasattr(Est, "transform")]
# Model-free references (ConditionAverage): predict and score, no latents.
REFERENCES = [Est for Est in PUBLIC
              if hasattr(Est, "predict") and not hasattr(Est, "transform")]
# The recurrent networks: a weight tensor, and a fit by gradient descent.
RNNS = [Est for Est in ESTIMATORS if hasattr(Est, "weight_tensor")]
# The models without dynamics (TCA, TrialPCA).
BASELINES = [Est for Est in ESTIMATORS if Est not in RNNS]
# The 3D transformers of sklearn_ltr.preprocessing: trials in, trials out.
TRANSFORMERS = [Est for Est in PUBLIC
                if Est not in ESTIMATORS + REFERENCES + WRAPPERS]
# The classes that wrap no other.
ALL = ESTIMATORS + TRANSFORMERS + REFERENCES

# The methods that take new trials after fit.
NEW_TRIAL_METHODS = ("transform", "predict", "score", "inverse_transform")


def class_id(cls):
    return cls.__name__


def has_param(Est, name):
    """Whether ``Est`` takes the parameter ``name``."""
    return name in inspect.signature(Est).parameters


def make_small(Est, *, rank=2, rnn=None, tca=None, **params):
    """A small, fast instance of any class of the package.

    Models get ``rank`` and ``random_state=0``; the recurrent networks few units and
    iterations; TCA a random initialisation (so that its ``random_state`` is used);
    the transformers and references their defaults; a wrapper a small TrialPCA (the
    fastest model).
    ``rnn`` and ``tca`` override the settings of those model families only;
    ``params`` override everything.
    """
    kw = {}
    if Est in WRAPPERS:
        kw["estimator"] = make_small(TrialPCA, rank=rank)
    if has_param(Est, "rank"):
        kw["rank"] = rank
    if has_param(Est, "random_state"):
        kw["random_state"] = 0
    if Est in RNNS:
        kw.update({"n_units": 8, "max_iter": 15, "infer_max_iter": 15, **(rnn or {})})
    elif Est is TCA:
        kw.update({"max_iter": 50, "init": "random", **(tca or {})})
    kw.update(params)
    return Est(**kw)


def methods(est):
    """The methods of ``est`` (an instance or a class) that take new trials."""
    return [m for m in NEW_TRIAL_METHODS if hasattr(est, m)]


def outputs(est, X, **kwargs):
    """Everything a fitted instance returns for new trials X, by method."""
    return {m: np.asarray(getattr(est, m)(X, **kwargs)) for m in methods(est)}


def assert_same_params(est, other):
    """Two instances have equal parameters (an estimator parameter compared by its
    own parameters, not by identity)."""
    assert joblib.hash(est.get_params()) == joblib.hash(other.get_params())


def assert_same_outputs(a, b):
    """Two results of :func:`outputs` are identical, to the bit."""
    assert a.keys() == b.keys() and a
    for method in a:
        np.testing.assert_array_equal(a[method], b[method], err_msg=method)


def assert_same_state(est, other):
    """Two fitted instances hold the same fitted state, to the bit and the type."""
    params = est.get_params(deep=False)
    state = {k: v for k, v in vars(est).items() if k not in params}
    assert set(state) == {k for k in vars(other) if k not in params}
    for key, value in state.items():
        other_value = getattr(other, key)
        if isinstance(value, np.ndarray):
            assert other_value.dtype == value.dtype, key
            assert other_value.shape == value.shape, key
            np.testing.assert_array_equal(other_value, value, err_msg=key)
        elif isinstance(value, BaseEstimator):  # the fitted model of a wrapper
            assert type(other_value) is type(value), key
            assert_same_state(value, other_value)
        else:
            assert other_value == value and type(other_value) is type(value), key


# --------------------------------------------------------------------------- #
# model files
# --------------------------------------------------------------------------- #
def npy_bytes(array):
    """``array`` as the bytes of a .npy file (objects pickled, as a forger could)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def archive_members(content):
    """The members of the zip archive ``content`` (bytes), by name."""
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def archive_bytes(members, methods=None):
    """A zip archive of ``members`` (pairs of name and bytes), stored unless
    ``methods`` gives a member another compression method."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members:
            zf.writestr(name, content, (methods or {}).get(name, zipfile.ZIP_STORED))
    return buffer.getvalue()


CENTRAL, LOCAL = b"PK\x01\x02", b"PK\x03\x04"
# Offsets (in a central directory entry, in a local file header) and struct formats
# of the fields of a zip archive's records (APPNOTE 4.3.7 and 4.3.12).
ZIP_FIELDS = {"flags": (8, 6, "<H"), "method": (10, 8, "<H"), "crc": (16, 14, "<I"),
              "compress_size": (20, 18, "<I"), "file_size": (24, 22, "<I"),
              "name_length": (28, 26, "<H"), "extra_length": (30, 28, "<H"),
              "offset": (42, None, "<I")}


def zip_records(content, signature):
    """Offsets of the records starting with ``signature`` in ``content``."""
    at, found = content.find(signature), []
    while at >= 0:
        found.append(at)
        at = content.find(signature, at + 1)
    return found


def set_zip_field(content, record, field, value):
    """``content`` with ``field`` of the record at offset ``record`` (a central
    directory entry or a local header) set to ``value``; also returns the old."""
    central, local, fmt = ZIP_FIELDS[field]
    at = record + (central if content[record:record + 4] == CENTRAL else local)
    size = struct.calcsize(fmt)
    old = struct.unpack(fmt, content[at:at + size])[0]
    return content[:at] + struct.pack(fmt, value) + content[at + size:], old


def member_record(content, name, signature=CENTRAL):
    """Offset of the central directory entry (or local header) of member ``name``."""
    skip = 46 if signature == CENTRAL else 30
    for at in zip_records(content, signature):
        if content[at + skip:at + skip + len(name)] == name.encode():
            return at
    raise KeyError(name)


def model_header(members):
    """The JSON header of a model file's ``members``."""
    raw = np.load(io.BytesIO(members["__header__.npy"]))
    return json.loads(raw.tobytes().decode())


def set_model_header(members, header, *, sign=False):
    """Write ``header`` into ``members``; ``sign``: with the checksum of the new
    content, as a deliberately crafted file would have (not a damaged one)."""
    if sign:
        arrays = {name[:-len(".npy")]: np.load(io.BytesIO(content))
                  for name, content in members.items() if name != "__header__.npy"}
        header = {**header, "sha256": _checksum(header, arrays)}
    members["__header__.npy"] = npy_bytes(
        np.frombuffer(json.dumps(header, allow_nan=True).encode(), dtype=np.uint8))
