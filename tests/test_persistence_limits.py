"""Loading bounds its work and trusts no value in the file (issue 19, rows 3, 8, 9).

* Zip bombs: a member's size is checked against the shape the header declares, and
  its compression method against those numpy writes, before anything is
  decompressed; members the header does not describe are never read.
* Crafted containers: deep JSON nesting, huge declared shapes, unsupported or
  encrypted members, and arrays that are structured, strings, big-endian or objects
  are refused with a ValueError.
* Tampered values, even with a checksum that matches them: every attribute must
  have the type, dtype, shape and range its class declares, no unknown name, and
  the class must be consistent with its attributes.

``save`` applies the same checks, so that it never writes a file ``load`` refuses.
"""

import io
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
import sklearn
from _checks import (
    archive_bytes,
    archive_members,
    make_small,
    member_record,
    model_header,
    npy_bytes,
    set_model_header,
    set_zip_field,
)

from sklearn_ltr import TCA, LowRankRNN, LowTensorRankRNN, load
from sklearn_ltr._npz import Archive
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning"),
]

BOMB_BYTES = 32 * 2 ** 20  # what a bomb member decompresses to


@pytest.fixture(scope="module")
def data():
    return make_low_tensor_rank_rnn(n_trials=12, n_timepoints=8, n_neurons=6, rank=2,
                                    random_state=0)


@pytest.fixture(scope="module")
def fitted(data):
    return {Est: make_small(Est).fit(data.X, data.y)
            for Est in (LowTensorRankRNN, LowRankRNN, TCA)}


def _saved_members(est):
    buffer = io.BytesIO()
    est.save(buffer)
    return archive_members(buffer.getvalue())


@pytest.fixture
def members(fitted):
    """The members of a LowTensorRankRNN file (fitted with conditions), to edit."""
    return _saved_members(fitted[LowTensorRankRNN])


def _load(members, *, methods=None):
    return load(io.BytesIO(archive_bytes(members.items(), methods)))


def _peak_while_loading(content, match):
    """Load ``content`` (must fail with ``match``); the peak of traced memory."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            load(io.BytesIO(content))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _deflated_bomb_member(members, name, head, *, honest=True):
    """``members`` as an archive where ``name`` is deflated ``head`` + BOMB_BYTES
    zeros; unless ``honest``, its directory entry claims the original size."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for other, content in members.items():
            if other != name:
                zf.writestr(other, content)
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            f.write(head)
            zeros = bytes(2 ** 20)
            for _ in range(BOMB_BYTES // len(zeros)):
                f.write(zeros)
    content = buffer.getvalue()
    if not honest:
        record = member_record(content, name)
        content = set_zip_field(content, record, "file_size", len(members[name]))[0]
    return content


# --------------------------------------------------------------------------- #
# row 3: zip bombs
# --------------------------------------------------------------------------- #
def test_bomb_member_is_refused_from_its_declared_size(members):
    # 32 MiB of zeros deflated into a member that should hold 6 x 8 floats: refused
    # from the directory's sizes, with nothing decompressed.
    head = members["attr.readout_.npy"][:128]
    content = _deflated_bomb_member(members, "attr.readout_.npy", head)
    assert len(content) < BOMB_BYTES // 100
    peak = _peak_while_loading(content, rf"the member attr.readout_.npy holds "
                                        rf"{BOMB_BYTES + 128} bytes, but the array "
                                        rf"it should hold takes 384 bytes")
    assert peak < 2 ** 20


def test_bomb_member_lying_about_its_size_is_caught_by_its_crc(members):
    # The directory claims the right size: decompression stops there, and the CRC
    # of what was read does not match.
    head = members["attr.readout_.npy"][:128]
    content = _deflated_bomb_member(members, "attr.readout_.npy", head, honest=False)
    peak = _peak_while_loading(content, "the member attr.readout_.npy cannot be read "
                                        r"\(Bad CRC-32")
    assert peak < 2 ** 20


def test_members_the_header_does_not_describe_are_not_read(members):
    content = _deflated_bomb_member({**members, "attr.payload.npy": b""},
                                    "attr.payload.npy", b"")
    peak = _peak_while_loading(content, r"it holds arrays the header does not "
                                        r"describe: \['attr.payload'\]")
    assert peak < 2 ** 20


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_other_compression_methods_are_refused_before_decompression(members, method):
    # The bzip2 bomb of the issue: a high ratio, and a method numpy never writes.
    with pytest.raises(ValueError, match=rf"the member attr.readout_.npy is "
                                         rf"compressed with zip method {method}; "
                                         rf"numpy writes stored \(0\) or deflated"):
        _load(members, methods={"attr.readout_.npy": method})


def test_deflated_members_load(members, fitted, data):
    # What numpy.savez_compressed writes is a valid model file.
    loaded = _load(members, methods=dict.fromkeys(members, zipfile.ZIP_DEFLATED))
    np.testing.assert_array_equal(loaded.predict(data.X[:2]),
                                  fitted[LowTensorRankRNN].predict(data.X[:2]))


def test_member_larger_than_the_archive_is_refused(members):
    content = archive_bytes(members.items())
    record = member_record(content, "attr.readout_.npy")
    content = set_zip_field(content, record, "compress_size", 2 ** 32 - 1)[0]
    with pytest.raises(ValueError, match="declares 512 bytes from 4294967295 stored "
                                         "bytes .* which is impossible"):
        load(io.BytesIO(content))


# --------------------------------------------------------------------------- #
# row 8: crafted containers
# --------------------------------------------------------------------------- #
def test_deeply_nested_header_is_refused(members):
    raw = ('{"format": "sklearn_ltr.model", "deep": ' + "[" * 200_000 + "]" * 200_000
           + "}").encode()
    members["__header__.npy"] = npy_bytes(np.frombuffer(raw, dtype=np.uint8))
    with pytest.raises(ValueError, match="its header cannot be read "
                                         r"\(RecursionError"):
        _load(members)


@pytest.mark.parametrize("method", [9, 99])  # deflate64, AE-x encryption
def test_unsupported_zip_methods_are_refused(members, method):
    content = archive_bytes(members.items())
    record = member_record(content, "attr.left_factors_.npy")
    content = set_zip_field(content, record, "method", method)[0]
    with pytest.raises(ValueError, match=rf"attr.left_factors_.npy is compressed "
                                         rf"with zip method {method}"):
        load(io.BytesIO(content))


def test_encrypted_member_is_refused(members):
    content = archive_bytes(members.items())
    record = member_record(content, "attr.left_factors_.npy")
    content, flags = set_zip_field(content, record, "flags", 0)
    content = set_zip_field(content, record, "flags", flags | 0x1)[0]
    with pytest.raises(ValueError, match="attr.left_factors_.npy is encrypted"):
        load(io.BytesIO(content))


def test_huge_shape_in_a_npy_header_is_refused_before_allocation(members):
    # The .npy header claims 10**12 elements, the JSON header the right shape.
    real = members["attr.readout_.npy"]
    members["attr.readout_.npy"] = real.replace(b"(6, 8)", b"(1000000000000, 8)")
    assert members["attr.readout_.npy"] != real
    with pytest.raises(ValueError, match=r"attr.readout_.npy cannot be read \(its .npy "
                                         r"header declares dtype <f8 and shape "
                                         r"\(1000000000000, 8\)"):
        _load(members)


@pytest.mark.parametrize("array, match", [
    (np.zeros((6, 8), dtype=">f8"), "has dtype '>f8'; model files hold native "
                                    "little-endian numbers or strings only"),
    (np.full((6, 8), "a", dtype="<U1"), "readout_ has dtype <U1, which is not a "
                                        "native little-endian float dtype"),
    (np.zeros((6, 8), dtype=[("a", "<f4"), ("b", "<f4")]), "has dtype .*; model files "
                                                           "hold native little-endian"),
    (np.array([None] * 48, dtype=object).reshape(6, 8), "has dtype '\\|O'; model "
                                                         "files hold native"),
    (np.zeros((6, 8), dtype=np.int64), "readout_ has dtype <i8, which is not a native "
                                       "little-endian float dtype"),
    (np.zeros((6, 8), dtype=np.complex128), "has dtype '<c16'; model files hold"),
], ids=["big-endian", "unicode", "structured", "object", "int", "complex"])
def test_arrays_of_other_dtypes_are_refused(members, array, match):
    # Header and member changed together, with a matching checksum.
    members["attr.readout_.npy"] = npy_bytes(array)
    header = model_header(members)
    descr = np.lib.format.dtype_to_descr(array.dtype)
    header["attributes"]["readout_"]["dtype"] = descr
    # (An object array has no content to checksum: refused before the checksum.)
    set_model_header(members, header, sign=array.dtype != object)
    with pytest.raises(ValueError, match=match):
        _load(members)


def test_string_labels_are_not_other_dtypes(data, tmp_path):
    # Condition labels may be strings: the schema says which arrays may.
    labels = np.array(["left", "right", "up", "down"])[data.y]
    est = make_small(LowRankRNN).fit(data.X, labels)
    est.save(tmp_path / "model.npz")
    loaded = load(tmp_path / "model.npz")
    assert loaded.conditions_.dtype == np.dtype("<U5")
    np.testing.assert_array_equal(loaded.predict(data.X[:2], labels[:2]),
                                  est.predict(data.X[:2], labels[:2]))


# --------------------------------------------------------------------------- #
# row 9: tampered values (signed: the checksum matches the new content)
# --------------------------------------------------------------------------- #
def _tamper(members, name, *, value=None, entry=None):
    """Set attribute ``name`` to the array ``value`` or the header ``entry``."""
    header = model_header(members)
    if entry is not None:
        header["attributes"][name] = entry
        members.pop(f"attr.{name}.npy", None)
    else:
        members[f"attr.{name}.npy"] = npy_bytes(value)
    set_model_header(members, header, sign=True)
    return members


def test_unsigned_edits_are_refused_by_the_checksum(members):
    header = model_header(members)
    header["attributes"]["_data_scale"]["value"] *= 2
    set_model_header(members, header)
    with pytest.raises(ValueError, match="its content does not match the checksum in "
                                         "its header"):
        _load(members)


@pytest.mark.parametrize("name, entry, match", [
    ("_data_scale", {"kind": "float", "value": float("nan")},
     "_data_scale should be finite, got nan"),
    ("_data_scale", {"kind": "float", "value": 0.0},
     r"_data_scale should be in \(0, inf\], got 0.0"),
    ("_data_scale", {"kind": "float", "value": -1.0},
     r"_data_scale should be in \(0, inf\], got -1.0"),
    ("n_iter_", {"kind": "json", "value": {"a": 1}},
     "n_iter_ should be an int, got {'a': 1}"),
    ("n_iter_", {"kind": "float", "value": 20.0}, "n_iter_ should be an int"),
    ("n_features_in_", {"kind": "int", "value": 7},
     r"readout_ has shape \(6, 8\), which does not match n_features_in_=7"),
    ("_n_trials_fit", {"kind": "int", "value": 10 ** 15},
     "_n_trials_fit=1000000000000000 is larger than the file can hold"),
    ("device_", {"kind": "int", "value": 0}, "device_ should be a device"),
    ("loss_curve_", {"kind": "list", "value": [1, 2]},
     "loss_curve_ should be a list of floats"),
    ("foo_", {"kind": "int", "value": 1},
     "'foo_' is not a fitted attribute of LowTensorRankRNN"),
    ("predict", {"kind": "int", "value": 1},
     "'predict' is not a fitted attribute of LowTensorRankRNN"),
    ("readout_", {"kind": "none"}, "readout_ should be an array, got NoneType"),
    # Fitted without inputs: inputs would be required, with no map to take them.
    ("n_inputs_", {"kind": "int", "value": 2}, "n_inputs_=2, but input_map_ is None"),
    ("_cand_condition", {"kind": "none"},
     "conditions_ and _cand_condition must both be None or both be given"),
], ids=["scale-nan", "scale-zero", "scale-negative", "n_iter_-dict", "n_iter_-float",
        "n_features", "huge-count", "device-int", "loss-ints", "unknown-name",
        "method-name", "array-none", "inputs-without-map", "conditions-halfway"])
def test_tampered_values_are_refused(members, name, entry, match):
    with pytest.raises(ValueError, match=match):
        _load(_tamper(members, name, entry=entry))


@pytest.mark.parametrize("name, change, match", [
    ("readout_bias_", lambda a: np.full_like(a, 1e308),
     r"the readout .* can reach 1e\+308 .* its predictions would not be finite"),
    ("readout_", lambda a: np.full_like(a, 1e308),
     r"the readout .* can reach inf in the units of X"),
    ("readout_bias_", lambda a: a + 1e15,
     r"the readout .* times _data_scale=.* from _data_offset"),
    ("left_factors_", lambda a: np.full_like(a, 1e20),
     r"left_factors_ holds values outside \[-4294967296.0, 4294967296.0\]"),
    ("readout_", lambda a: np.where(a == a.flat[0], np.nan, a),
     "readout_ holds non-finite values"),
    ("_cand_condition", lambda a: np.full_like(a, 4),
     r"_cand_condition holds indices outside \[0, n_states=4\)"),
    ("_cand_condition", lambda a: np.full_like(a, -1),
     r"_cand_condition holds indices outside \[0, n_states=4\)"),
    ("conditions_", lambda a: a[::-1].copy(),
     "conditions_ should hold distinct labels in increasing order"),
    ("trial_index_", lambda a: np.zeros_like(a),
     "trial_index_ should hold distinct values"),
], ids=["bias-1e308", "readout-overflow", "bias-1e15", "huge-factors", "nan",
        "index-high", "index-negative", "unsorted-labels", "repeated-trials"])
def test_tampered_arrays_are_refused(members, name, change, match):
    array = np.load(io.BytesIO(members[f"attr.{name}.npy"]))
    with pytest.raises(ValueError, match=match):
        _load(_tamper(members, name, value=change(array)))


def _relabelled(est, cls, *, keep_params=False):
    """The members of ``est``'s file claiming the class ``cls`` (keeping only the
    parameters ``cls`` has, unless ``keep_params``), signed."""
    members = _saved_members(est)
    header = model_header(members)
    header["class"] = cls.__name__
    if not keep_params:
        params = cls().get_params()
        header["params"] = {k: v for k, v in header["params"].items() if k in params}
    set_model_header(members, header, sign=True)
    return members


def test_a_class_must_be_consistent_with_its_attributes(fitted):
    ltr, low_rank = fitted[LowTensorRankRNN], fitted[LowRankRNN]
    # Relabelled only: the parameters of the other class give it away.
    with pytest.raises(ValueError, match=r"LowRankRNN has no parameter\(s\) "
                                         r"\['trial_amplitude'"):
        _load(_relabelled(ltr, LowRankRNN, keep_params=True))
    # Relabelled with the parameters of the other class: its attributes.
    with pytest.raises(ValueError, match="'trial_factors_' is not a fitted attribute "
                                         "of LowRankRNN"):
        _load(_relabelled(ltr, LowRankRNN))
    with pytest.raises(ValueError, match="the fitted attribute trial_factors_ is "
                                         "missing"):
        _load(_relabelled(low_rank, LowTensorRankRNN))


def test_unit_norm_factors_of_tca(fitted):
    members = _saved_members(fitted[TCA])
    factors = np.load(io.BytesIO(members["attr.time_factors_.npy"]))
    members = _tamper(members, "time_factors_", value=2 * factors)
    with pytest.raises(ValueError, match="time_factors_ should have vectors of unit "
                                         "norm along axis 0"):
        _load(members)


# --------------------------------------------------------------------------- #
# save checks what load checks
# --------------------------------------------------------------------------- #
def test_save_refuses_a_state_that_load_would_refuse(fitted, tmp_path):
    est = pickle.loads(pickle.dumps(fitted[LowTensorRankRNN]))
    est._data_scale = 0.0
    with pytest.raises(ValueError, match=r"This LowTensorRankRNN cannot be saved: its "
                                         r"fitted state is not valid \(_data_scale "
                                         r"should be in \(0, inf\], got 0.0\.\) Fit it "
                                         r"again"):
        est.save(tmp_path / "model.npz")
    est = pickle.loads(pickle.dumps(fitted[LowTensorRankRNN]))
    del est.readout_
    with pytest.raises(ValueError, match="the fitted attribute readout_ is missing"):
        est.save(tmp_path / "model.npz")
    assert not list(tmp_path.iterdir())


def test_only_the_declared_fitted_state_is_saved(fitted, data, tmp_path):
    # Configuration such as metadata routing is not part of the file (and no longer
    # stops a save); the model it gives back predicts the same.
    est = pickle.loads(pickle.dumps(fitted[LowTensorRankRNN]))
    with sklearn.config_context(enable_metadata_routing=True):
        est.set_score_request(sample_weight=True)
    est.note_ = "mine"
    est.save(tmp_path / "model.npz")
    loaded = load(tmp_path / "model.npz")
    assert not hasattr(loaded, "note_")
    np.testing.assert_array_equal(loaded.predict(data.X[:2], data.y[:2]),
                                  est.predict(data.X[:2], data.y[:2]))


def test_big_endian_arrays_are_saved_little_endian(fitted, data, tmp_path):
    est = pickle.loads(pickle.dumps(fitted[LowTensorRankRNN]))
    est.readout_ = est.readout_.astype(">f8")
    est.save(tmp_path / "model.npz")
    loaded = load(tmp_path / "model.npz")
    assert loaded.readout_.dtype == np.dtype("<f8")
    np.testing.assert_array_equal(loaded.predict(data.X[:2], data.y[:2]),
                                  fitted[LowTensorRankRNN].predict(data.X[:2],
                                                                   data.y[:2]))


# --------------------------------------------------------------------------- #
# the bounded reader itself
# --------------------------------------------------------------------------- #
def test_archive_reads_what_numpy_writes():
    # Fortran order, format version 2.0 headers, deflated members, empty arrays.
    fortran = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, f=fortran, e=np.zeros((0, 3)), b=np.ones(2, bool))
    members = archive_members(buffer.getvalue())
    with io.BytesIO() as v2:
        np.lib.format.write_array(v2, np.arange(3), version=(2, 0))
        members["v2.npy"] = v2.getvalue()
    with Archive(io.BytesIO(archive_bytes(members.items()))) as archive:
        assert archive.names == {"f", "e", "b", "v2"}
        got = archive.read("f", np.float64, (3, 4))
        assert got.flags.f_contiguous and got.flags.writeable
        np.testing.assert_array_equal(got, fortran)
        assert archive.read("e", np.float64, (0, 3)).shape == (0, 3)
        np.testing.assert_array_equal(archive.read("b", np.bool_, (2,)), [True, True])
        np.testing.assert_array_equal(archive.read("v2", np.int64, None,
                                                   max_length=3), [0, 1, 2])
        with pytest.raises(ValueError, match=r"declares dtype <i8 and shape \(3,\), "
                                             r"but dtype <i8 and shape \(n,\) with "
                                             r"n <= 2 were expected"):
            archive.read("v2", np.int64, None, max_length=2)


def test_archive_refuses_what_is_not_an_archive(tmp_path):
    with pytest.raises(FileNotFoundError):
        Archive(tmp_path / "missing.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="holds a single array"):
        Archive(tmp_path / "single.npy")
    with pytest.raises(ValueError, match="cannot be read as a numpy .npz archive"):
        Archive(io.BytesIO(b"PK\x03\x04 not really"))
    twice = archive_bytes([("a.npy", npy_bytes(np.zeros(1)))] * 2)
    with pytest.raises(ValueError, match="names a member twice"):
        Archive(io.BytesIO(twice))
