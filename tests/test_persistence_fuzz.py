"""Model files damaged at random: ``load`` gives back the very model, or a ValueError.

For every saveable class, a small fitted model is saved once, and thousands of
damaged copies of its file are loaded (seeded, in memory): bytes flipped, inserted or
cut off, fields of the zip directory changed (compression method, flags, sizes,
CRC), members dropped, duplicated, added or recompressed, ``.npy`` headers replaced,
and the JSON header edited (values, types, nesting, raw text). Each load must either
raise a ``ValueError`` (no other exception) or return a model of the same class and
parameters whose outputs on new trials are identical and finite.
"""

import io
import json
import struct
import warnings
import zipfile

import numpy as np
import pytest
from _checks import (
    ALL,
    CENTRAL,
    ESTIMATORS,
    LOCAL,
    ZIP_FIELDS,
    archive_bytes,
    archive_members,
    class_id,
    make_small,
    model_header,
    npy_bytes,
    set_model_header,
    set_zip_field,
    zip_records,
)

import sklearn_ltr
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # Archives with a member twice are among the mutants.
    pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning"),
]

N_MUTANTS = 2000
N_CRAFTED = 400
_METHODS = [0, 1, 6, 8, 9, 12, 14, 93, 95, 98, 99, 65535]
_ODD_VALUES = [None, True, False, 0, -1, 1, 2 ** 31, 10 ** 12, 10 ** 400, 1e308,
               -1e308, float("nan"), float("inf"), 1e-320, "", "x", "cuda:0", [], {},
               [1.5, "a"], {"kind": "int", "value": 3}, {"kind": "pickle"}]


@pytest.fixture(scope="module")
def data():
    # With condition labels, so that the files hold them (conditions_ and the
    # indices into them).
    return make_low_tensor_rank_rnn(n_trials=10, n_timepoints=6, n_neurons=5, rank=2,
                                    random_state=0)


def _prediction(est, data):
    """The prediction of one new trial, of its condition (the transform of a
    transformer)."""
    X, y = data.X[:1], data.y[:1]
    return est.predict(X, y) if hasattr(est, "predict") else est.transform(X)


@pytest.fixture(scope="module")
def originals(data):
    """For each class: the fitted model, its file's bytes and its prediction (a few
    iterations of inference for the networks: every model that loads is run)."""
    result = {}
    for Est in ALL:
        est = make_small(Est, rnn={"infer_max_iter": 3}).fit(data.X, data.y)
        buffer = io.BytesIO()
        est.save(buffer)
        result[Est] = est, buffer.getvalue(), _prediction(est, data)
    return result


# --------------------------------------------------------------------------- #
# mutations: each takes the file's bytes and a generator, returns new bytes
# --------------------------------------------------------------------------- #
def _flip(data, rng):
    data = bytearray(data)
    for _ in range(rng.integers(1, 9)):
        data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
    return bytes(data)


def _truncate(data, rng):
    return data[:rng.integers(len(data))]


def _splice(data, rng):
    """Insert random bytes, or delete or repeat a span."""
    at, n = int(rng.integers(len(data))), int(rng.integers(1, 64))
    choice = rng.integers(3)
    if choice == 0:
        return data[:at] + rng.bytes(n) + data[at:]
    if choice == 1:
        return data[:at] + data[at + n:]
    return data[:at] + data[at:at + n] + data[at:]


def _zip_field(data, rng):
    """Change one field of one member, in the central directory or local header."""
    field = list(ZIP_FIELDS)[rng.integers(len(ZIP_FIELDS))]
    local = ZIP_FIELDS[field][1] is not None and rng.integers(2)
    records = zip_records(data, LOCAL if local else CENTRAL)
    if not records:
        return _flip(data, rng)
    record = records[rng.integers(len(records))]
    size = struct.calcsize(ZIP_FIELDS[field][2])
    data, old = set_zip_field(data, record, field, 0)
    limit = 2 ** (8 * size)
    new = {
        "method": lambda: _METHODS[rng.integers(len(_METHODS))],
        "flags": lambda: old ^ (1 << int(rng.integers(16))),
    }.get(field, lambda: [0, 1, old + 1, max(old - 1, 0), limit - 1,
                          int(rng.integers(limit))][rng.integers(6)])()
    return set_zip_field(data, record, field, int(new) % limit)[0]


def _rearrange(data, rng):
    """Drop, repeat, add, rename or recompress a member (a well-formed archive)."""
    members = list(archive_members(data).items())
    i = int(rng.integers(len(members)))
    name, content = members[i]
    choice = rng.integers(5)
    if choice == 0:
        del members[i]
    elif choice == 1:
        members.append((name, content))
    elif choice == 2:
        extra = np.zeros(int(rng.integers(1, 1000)))
        members.append((f"attr.{['payload', 'foo_', 'n_iter_'][rng.integers(3)]}.npy",
                        npy_bytes(extra)))
    elif choice == 3:
        members[i] = (name.replace("attr.", "param.") if rng.integers(2)
                      else name[:-4] + "x.npy", content)
    else:
        method = [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                  zipfile.ZIP_LZMA][rng.integers(3)]
        return archive_bytes(members, {name: method})
    return archive_bytes(members)


def _npy_header(data, rng):
    """Give one array member another .npy header (and the data to match it)."""
    members = archive_members(data)
    names = [n for n in members if n != "__header__.npy"]
    if not names:
        return _flip(data, rng)
    name = names[rng.integers(len(names))]
    array = np.load(io.BytesIO(members[name]))
    kind = rng.integers(6)
    if kind == 0:
        new = array.astype(array.dtype.newbyteorder(">"))
    elif kind == 1:
        new = np.full(array.shape, "a", dtype="<U1")
    elif kind == 2:
        new = np.zeros(array.shape, dtype=[("a", "<f4"), ("b", "<f4")])
    elif kind == 3:
        new = np.asfortranarray(array.reshape(array.shape[::-1]) if array.ndim > 1
                                else array.astype(np.float32))
    elif kind == 4:
        new = array.reshape(-1)
    else:
        header = npy_bytes(array)
        text = header.replace(b"'shape': (", b"'shape': (1000000000000, ", 1)
        members[name] = text
        return archive_bytes(members.items())
    members[name] = npy_bytes(new)
    return archive_bytes(members.items())


def _json_paths(node, path=()):
    yield path
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, value in items:
        yield from _json_paths(value, path + (key,))


def _edit_json(header, rng):
    paths = list(_json_paths(header))[1:]
    path = paths[rng.integers(len(paths))]
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    choice = rng.integers(4)
    if choice == 0:
        del parent[path[-1]]
    elif choice == 1:
        parent[path[-1]] = _ODD_VALUES[rng.integers(len(_ODD_VALUES))]
    elif choice == 2 and isinstance(parent, dict):
        parent[f"{path[-1]}x"] = parent[path[-1]]
    else:
        # Nested (within what json itself can write; deeper in _header_text).
        depth = int(rng.integers(1, 300))
        parent[path[-1]] = json.loads("[" * depth + "]" * depth)
    return json.dumps(header, allow_nan=True)


def _header_text(data, rng):
    """Edit the JSON header: a value, a type, the nesting, or its raw text."""
    members = archive_members(data)
    text = np.load(io.BytesIO(members["__header__.npy"])).tobytes().decode()
    choice = rng.integers(4)
    if choice == 0:
        text = _edit_json(json.loads(text), rng)
    elif choice == 1:
        at = int(rng.integers(len(text)))
        text = text[:at] + chr(int(rng.integers(32, 127))) + text[at + 1:]
    elif choice == 2:
        # Nested far deeper than the interpreter's recursion limit.
        depth = int(rng.integers(1000, 200_000))
        text = text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    else:
        header = json.loads(text)
        header["class"] = [c.__name__ for c in ALL][rng.integers(len(ALL))]
        text = json.dumps(header, allow_nan=True)
    members["__header__.npy"] = npy_bytes(np.frombuffer(text.encode(), np.uint8))
    return archive_bytes(members.items())


MUTATIONS = [_flip, _flip, _truncate, _splice, _zip_field, _zip_field, _rearrange,
             _npy_header, _header_text, _header_text]


def _check_mutant(content, est, data, expected):
    """Load ``content``: a ValueError, or the same model with the same prediction."""
    try:
        loaded = sklearn_ltr.load(io.BytesIO(content))
    except ValueError:
        return False
    assert type(loaded) is type(est)
    assert loaded.get_params() == est.get_params()
    got = _prediction(loaded, data)
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(got).all()
    return True


@pytest.mark.parametrize("Est", ALL, ids=class_id)
def test_damaged_files_load_identically_or_raise_value_error(Est, originals, data):
    est, original, expected = originals[Est]
    rng = np.random.default_rng(ALL.index(Est))
    loaded = 0
    for i in range(N_MUTANTS):
        mutate = MUTATIONS[i % len(MUTATIONS)]
        content = mutate(original, rng)
        try:
            loaded += _check_mutant(content, est, data, expected)
        except AssertionError as exc:
            raise AssertionError(f"mutant {i} ({mutate.__name__}) loaded a different "
                                 f"model: {exc}") from None
        except Exception as exc:
            raise AssertionError(f"mutant {i} ({mutate.__name__}) raised "
                                 f"{type(exc).__name__}: {exc}") from exc
    # Damage that leaves the content alone (a timestamp, a recompressed member)
    # loads; most damage is refused.
    assert 0 < loaded < N_MUTANTS // 2


# --------------------------------------------------------------------------- #
# crafted files: edited values with a checksum that matches them
# --------------------------------------------------------------------------- #
_ODD_NUMBERS = [np.nan, np.inf, -np.inf, 1e308, -1e308, 1e30, -1e30, 0.0, -1.0, 1e-310]
_SAME_KIND = {
    "int": [0, 1, 2, 3, 5, 7, -1, 10 ** 6, 2 ** 31, 2 ** 63],
    "float": [np.nan, np.inf, 0.0, -1.0, 1e-310, 1e308, 0.5, 2.0],
    "bool": [True, False], "device": ["cpu", "cuda:0", "meta", "mps", "cpu:1"],
    "list": [[], [np.nan], [1.0, 2.0], [1]],
}


def _odd_array(array, rng):
    """``array`` with some entries replaced by odd values of its dtype."""
    new = array.copy()
    if not new.size:
        return new
    flat = new.reshape(-1)
    choice = rng.integers(3)
    if choice == 0 and new.ndim == 1 and new.size > 1:
        return new[::-1].copy()  # reversed (unsorted labels)
    if choice == 1 and new.size > 1:
        flat[1] = flat[0]  # a repeated entry
        return new
    at = rng.integers(flat.size, size=int(rng.integers(1, 4)))
    if new.dtype.kind == "f":
        with np.errstate(over="ignore"):  # 1e308 in float32 is inf
            flat[at] = _ODD_NUMBERS[rng.integers(len(_ODD_NUMBERS))]
    elif new.dtype.kind in "iu":
        info = np.iinfo(new.dtype)
        flat[at] = [info.min, info.max, -1, 0, 10 ** 6][rng.integers(5)] % (
            info.max + 1) if new.dtype.kind == "u" else [info.min, info.max, -1, 0,
                                                          10 ** 6][rng.integers(5)]
    elif new.dtype.kind == "b":
        flat[at] = ~flat[at]
    return new


def _craft(data, rng):
    """Edit the fitted state (an array's values, a scalar, an attribute, the class)
    and sign the result, as someone crafting a file would."""
    members = archive_members(data)
    header = model_header(members)
    arrays = {name[:-4]: np.load(io.BytesIO(content))
              for name, content in members.items() if name != "__header__.npy"}
    attributes = header["attributes"]
    name = list(attributes)[rng.integers(len(attributes))]
    key = f"attr.{name}"
    choice = rng.integers(6)
    if choice in (0, 1) and key in arrays:
        arrays[key] = _odd_array(arrays[key], rng)
    elif choice in (0, 1) and attributes[name]["kind"] in _SAME_KIND:
        # Another value of the same kind.
        values = _SAME_KIND[attributes[name]["kind"]]
        attributes[name]["value"] = values[rng.integers(len(values))]
    elif choice in (0, 1, 2):
        value = _ODD_VALUES[rng.integers(len(_ODD_VALUES))]
        kind = ["int", "float", "bool", "str", "list", "json", "device",
                "none"][rng.integers(8)]
        attributes[name] = {"kind": kind} if kind == "none" else {
            "kind": kind, "value": value}
        arrays.pop(key, None)
    elif choice == 3:
        del attributes[name]
        arrays.pop(key, None)
    elif choice == 4:
        attributes[f"{name.strip('_')}_x_"] = attributes[name]
        if key in arrays:
            arrays[f"attr.{name.strip('_')}_x_"] = arrays[key]
    else:
        cls = ALL[rng.integers(len(ALL))]
        header["class"] = cls.__name__
        params = cls().get_params()
        header["params"] = {k: v for k, v in header["params"].items() if k in params}
    members = {f"{k}.npy": npy_bytes(v) for k, v in arrays.items()}
    set_model_header(members, header, sign=True)
    return archive_bytes(members.items())


@pytest.mark.parametrize("Est", ALL, ids=class_id)
def test_crafted_files_give_usable_models_or_raise_value_error(Est, originals, data):
    # A crafted file may hold another valid model; it must not hold one that fails
    # or predicts non-finite values.
    est, original, expected = originals[Est]
    rng = np.random.default_rng(100 + ALL.index(Est))
    for i in range(N_CRAFTED):
        content = _craft(original, rng)
        try:
            with warnings.catch_warnings():
                # A device that is not there (a warning, and the CPU).
                warnings.simplefilter("ignore", UserWarning)
                loaded = sklearn_ltr.load(io.BytesIO(content))
        except ValueError:
            continue
        except Exception as exc:
            raise AssertionError(f"crafted file {i} raised {type(exc).__name__}: "
                                 f"{exc}") from exc
        labels = [getattr(e, "conditions_", None) for e in (loaded, est)]
        if loaded.n_features_in_ != est.n_features_in_ or not np.array_equal(*labels):
            continue  # a model of other neurons or conditions than those of data
        try:
            with np.errstate(all="ignore"):  # (a transformer's overflow: see below)
                got = _prediction(loaded, data)
        except Exception as exc:
            raise AssertionError(f"crafted file {i} loads a {type(loaded).__name__} "
                                 f"whose prediction raises {type(exc).__name__}: "
                                 f"{exc}") from exc
        assert got.shape == expected.shape, i
        # The models' outputs are bounded by their parameters (the networks' tanh,
        # unit-norm factors); a transformer or the condition average is a map in
        # the units of the data, valid for data of the scale of its parameters.
        if Est in ESTIMATORS:
            assert np.isfinite(got).all(), i
