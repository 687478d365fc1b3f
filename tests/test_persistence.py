"""Persistence: the safe ``.npz`` format of ``est.save`` / ``sklearn_ltr.load`` (pickle
and joblib round trips are checked for every class in test_common.py).

The safe format must give back an estimator with identical outputs, and must refuse
(with a ValueError that says why) every file it did not write: truncated, tampered
with, or foreign.
"""

import importlib
import io
import os
import pickle
import pkgutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from _checks import (
    ALL,
    RNNS,
    archive_bytes,
    archive_members,
    assert_same_outputs,
    assert_same_state,
    class_id,
    make_small,
    model_header,
    npy_bytes,
    outputs,
    set_model_header,
)
from sklearn.exceptions import NotFittedError

import sklearn_ltr
from sklearn_ltr import TCA, LowRankRNN, LowTensorRankRNN, TrialPCA, _registry
from sklearn_ltr._persistence import FORMAT_NAME, FORMAT_VERSION, load, save
from sklearn_ltr._registry import registered_classes
from sklearn_ltr._schema import Array, Value, check_schema
from sklearn_ltr.base import BaseLatentModel, SaveMixin
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

K, T, N, RANK = 14, 8, 6, 2
_ids = class_id


def _assert_same(est, loaded, X, **kwargs):
    assert type(loaded) is type(est)
    assert loaded.get_params() == est.get_params()
    assert_same_outputs(outputs(est, X, **kwargs), outputs(loaded, X, **kwargs))


@pytest.fixture(scope="module")
def data():
    return make_low_tensor_rank_rnn(n_trials=K, n_timepoints=T, n_neurons=N, rank=RANK,
                                    random_state=0)


@pytest.fixture(scope="module")
def X(data):
    X = data.X.copy()
    X[np.random.RandomState(0).uniform(size=X.shape) < 0.05] = np.nan
    X.setflags(write=False)
    return X


@pytest.fixture(scope="module")
def fitted(X):
    return {Est: make_small(Est).fit(X) for Est in ALL}


@pytest.fixture
def saved(fitted, tmp_path):
    """A LowTensorRankRNN file to tamper with, and its estimator."""
    est = fitted[LowTensorRankRNN]
    path = tmp_path / "model.npz"
    est.save(path)
    return path, est


def _members(path):
    return archive_members(path.read_bytes())


def _write_members(path, members):
    path.write_bytes(archive_bytes(members.items()))


# --------------------------------------------------------------------------- #
# 1. round trips
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ALL, ids=_ids)
def test_safe_round_trip_gives_identical_outputs(Est, X, fitted, tmp_path):
    est = fitted[Est]
    path = tmp_path / "model.npz"
    save(est, path)
    loaded = load(path)
    _assert_same(est, loaded, X[:4])
    assert_same_state(est, loaded)


@pytest.mark.parametrize("Est", ALL, ids=_ids)
def test_save_method_and_top_level_load(Est, X, fitted, tmp_path):
    path = tmp_path / "model.npz"
    fitted[Est].save(path)
    _assert_same(fitted[Est], sklearn_ltr.load(path), X[:4])
    assert "load" in sklearn_ltr.__all__


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_round_trip_with_conditions_and_inputs(Est, data, tmp_path):
    X = data.X
    labels = np.array(["left", "right", "up", "down"])[data.y]  # string labels
    inputs = np.random.RandomState(0).standard_normal((K, T, 2))
    est = make_small(Est).fit(X, labels, inputs=inputs)
    path = tmp_path / "model.npz"
    est.save(path)
    loaded = load(path)
    assert_same_state(est, loaded)
    _assert_same(est, loaded, X[:4], y=labels[:4], inputs=inputs[:4])
    np.testing.assert_array_equal(loaded.weight_tensor(), est.weight_tensor())


@pytest.mark.parametrize("Est", RNNS, ids=_ids)
def test_round_trip_of_early_stopping(Est, data, tmp_path):
    # A Poisson fit holds out entries by default: its held-out loss curve and
    # best held-out loss are saved; files written before early stopping, without
    # them (and without its parameters), load with None.
    counts = np.round(np.abs(data.X) * 3)
    est = make_small(Est, loss="poisson").fit(counts)
    assert est.validation_loss_curve_ is not None
    path = tmp_path / "model.npz"
    est.save(path)
    loaded = load(path)
    assert_same_state(est, loaded)
    _assert_same(est, loaded, counts[:4])
    members = _members(path)
    header = model_header(members)
    for name in ("validation_loss_curve_", "best_validation_loss_"):
        del header["attributes"][name]
    for name in ("early_stopping", "validation_fraction"):
        del header["params"][name]
    set_model_header(members, header, sign=True)
    _write_members(path, members)
    older = load(path)
    assert older.validation_loss_curve_ is None and older.best_validation_loss_ is None
    assert_same_outputs(outputs(est, counts[:4]), outputs(older, counts[:4]))


def test_round_trip_of_random_state_instance(X, tmp_path):
    rs = np.random.RandomState(7)
    est = make_small(LowRankRNN, random_state=rs).fit(X)
    path = tmp_path / "model.npz"
    est.save(path)
    loaded = load(path)
    assert isinstance(loaded.random_state, np.random.RandomState)
    # The generator continues from the same state.
    assert loaded.random_state.randint(10 ** 9) == rs.randint(10 ** 9)


def test_file_objects_and_exact_path(X, fitted, tmp_path):
    est = fitted[TCA]
    buffer = io.BytesIO()
    est.save(buffer)
    buffer.seek(0)
    _assert_same(est, load(buffer), X[:3])
    # No suffix is added, and no temporary file is left behind.
    path = tmp_path / "tca.model"
    est.save(str(path))
    assert os.listdir(tmp_path) == ["tca.model"]
    _assert_same(est, load(str(path)), X[:3])
    # Saving again replaces the file.
    fitted[TrialPCA].save(path)
    assert type(load(path)) is TrialPCA


def test_header_records_format_and_versions(saved):
    path, est = saved
    header = model_header(_members(path))
    assert header["format"] == FORMAT_NAME
    assert header["format_version"] == FORMAT_VERSION
    assert header["class"] == "LowTensorRankRNN"
    assert header["versions"]["sklearn_ltr"] == sklearn_ltr.__version__
    assert header["versions"]["torch"] == torch.__version__
    assert header["versions"]["numpy"] == np.__version__
    assert {"scikit-learn", "python"} <= set(header["versions"])
    assert header["params"]["rank"] == {"kind": "int", "value": RANK}
    assert header["attributes"]["left_factors_"] == {
        "kind": "array", "dtype": "<f8", "shape": [8, RANK]}
    # No member of the archive needs pickle.
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            assert npz[key].dtype != object


def test_gpu_fitted_model_loads_on_cpu_only_machine(X, fitted, tmp_path, monkeypatch):
    # Fitted on the CPU; the file then records a CUDA device, as after a GPU fit.
    est = fitted[LowTensorRankRNN]
    gpu_like = pickle.loads(pickle.dumps(est))
    gpu_like.device_ = torch.device("cuda", 0)
    path = tmp_path / "gpu.npz"
    gpu_like.save(path)
    assert model_header(_members(path))["attributes"]["device_"]["value"] == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="fitted on cuda:0, which is not available on "
                                         "this machine; running on the CPU"):
        loaded = load(path)
    assert loaded.device_ == torch.device("cpu")
    # Once loaded, it runs on the CPU without warning at every call.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(loaded.predict(X[:3]), est.predict(X[:3]))


def test_gpu_fitted_pickle_falls_back_to_cpu(X, fitted, monkeypatch):
    est = fitted[LowRankRNN]
    gpu_like = pickle.loads(pickle.dumps(est))
    gpu_like.device_ = torch.device("cuda", 0)
    blob = pickle.dumps(gpu_like)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    loaded = pickle.loads(blob)
    with pytest.warns(UserWarning, match="fitted on cuda:0, which is not available on "
                                         "this machine; running on the CPU"):
        pred = loaded.predict(X[:3])
    np.testing.assert_array_equal(pred, est.predict(X[:3]))


# --------------------------------------------------------------------------- #
# 2. what cannot be saved
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("Est", ALL, ids=_ids)
def test_unfitted_cannot_be_saved(Est, tmp_path):
    with pytest.raises(NotFittedError):
        save(make_small(Est), tmp_path / "model.npz")
    assert not os.listdir(tmp_path)


def test_foreign_class_cannot_be_saved(X, tmp_path):
    class MyTCA(TCA):
        pass

    est = MyTCA(rank=2, random_state=0).fit(X)
    with pytest.raises(TypeError, match="Only estimators of sklearn_ltr can be saved"):
        est.save(tmp_path / "model.npz")


def test_unsaveable_value_is_a_clear_error(X, fitted, tmp_path):
    est = pickle.loads(pickle.dumps(fitted[TrialPCA]))
    est.random_state = lambda: 0
    with pytest.raises(ValueError, match="parameter 'random_state' of type function "
                                         "cannot be saved without pickle"):
        est.save(tmp_path / "model.npz")
    est = pickle.loads(pickle.dumps(fitted[TrialPCA]))
    est.mean_ = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ValueError,
                       match="attribute 'mean_' is an array of dtype object"):
        est.save(tmp_path / "model.npz")
    assert not os.listdir(tmp_path)  # nothing half-written


# --------------------------------------------------------------------------- #
# 3. files that must be refused
# --------------------------------------------------------------------------- #
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")


@pytest.mark.parametrize("cut", [0.3, 0.9, 0.999])
def test_truncated_file(saved, cut):
    path, _ = saved
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * cut)])
    with pytest.raises(ValueError, match="is not a valid sklearn_ltr model file"):
        load(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("rank=3, n_units=100\n")
    with pytest.raises(ValueError, match="cannot be read as a numpy .npz archive"):
        load(text)
    other = tmp_path / "other.npz"
    np.savez(other, X=np.zeros(3), y=np.ones(2))
    with pytest.raises(ValueError, match="no sklearn_ltr header"):
        load(other)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="holds a single array"):
        load(single)
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"rank": 3}))
    with pytest.raises(ValueError, match="cannot be read"):
        load(pickled)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="cannot be read"):
        load(empty)


def _tamper_header(path, change, *, sign=True):
    members = _members(path)
    header = model_header(members)
    change(header)
    set_model_header(members, header, sign=sign)
    _write_members(path, members)


@pytest.mark.parametrize("change, match", [
    (lambda h: h.update({"class": "os.system"}), "its class 'os.system' is not one of"),
    (lambda h: h.update({"class": "Pipeline"}), "its class 'Pipeline' is not one of"),
    (lambda h: h.update({"class": None}), "its class None is not one of"),
    (lambda h: h.update({"format": "joblib"}), "does not name the format"),
    (lambda h: h.update({"format_version": "1"}), "format version '1' is not valid"),
    (lambda h: h.update({"format_version": FORMAT_VERSION + 1}),
     f"written in format version {FORMAT_VERSION + 1} .* Upgrade sklearn_ltr"),
    (lambda h: h.pop("attributes"), "lacks the parameters or attributes"),
    (lambda h: h["params"].update({"__reduce__": {"kind": "int", "value": 1}}),
     r"has no parameter\(s\) \['__reduce__'\]"),
    (lambda h: h["params"].update({"rank": {"kind": "int", "value": -1}}),
     "invalid parameters .*'rank' parameter"),
    (lambda h: h["params"].update({"rank": {"kind": "int", "value": "3"}}),
     "parameter 'rank' should be an int"),
    (lambda h: h["params"].update({"rank": {"kind": "pickle", "value": "x"}}),
     "unknown kind 'pickle'"),
    (lambda h: h["attributes"].update({"predict": {"kind": "int", "value": 1}}),
     "'predict' is not a fitted attribute"),
    (lambda h: h["attributes"].update({"__class__": {"kind": "str", "value": "x"}}),
     "'__class__' is not a fitted attribute"),
    (lambda h: h["attributes"].pop("readout_"), "holds arrays the header does not "
                                               "describe"),
    (lambda h: h["attributes"].update({"n_features_in_": {"kind": "int", "value": 0}}),
     r"n_features_in_ should be in \[1, inf\], got 0"),
    (lambda h: h["attributes"]["left_factors_"].update({"shape": [9, RANK]}),
     r"left_factors_ has shape \(9, 2\), which does not match n_units=8"),
    (lambda h: h["attributes"].update({"device_": {"kind": "device", "value": "gpu!"}}),
     "'device_' is not a torch device"),
], ids=["class-os.system", "class-Pipeline", "class-None", "format", "version-type",
        "newer-version", "no-attributes", "unknown-param", "invalid-param",
        "param-type", "unknown-kind", "method-name", "dunder-name", "undescribed-array",
        "n_features_in_", "header-shape", "device"])
def test_tampered_header(saved, change, match):
    path, _ = saved
    _tamper_header(path, change)
    with pytest.raises(ValueError, match=match):
        load(path)


def test_header_not_json(saved):
    path, _ = saved
    members = _members(path)
    members["__header__.npy"] = npy_bytes(np.frombuffer(b"{not json", dtype=np.uint8))
    _write_members(path, members)
    with pytest.raises(ValueError, match="its header cannot be read"):
        load(path)
    members["__header__.npy"] = npy_bytes(np.array(["a string header"]))
    _write_members(path, members)
    with pytest.raises(ValueError, match=r"its header cannot be read .*declares dtype "
                                         r"<U15 and shape \(1,\), but dtype \|u1"):
        load(path)


def test_missing_array(saved):
    path, _ = saved
    members = _members(path)
    del members["attr._cand_recon.npy"]
    _write_members(path, members)
    with pytest.raises(ValueError, match=r"the member attr._cand_recon.npy is missing"):
        load(path)


def test_missing_attribute(saved):
    path, _ = saved
    members = _members(path)
    del members["attr.trial_factors_.npy"]
    header = model_header(members)
    del header["attributes"]["trial_factors_"]
    set_model_header(members, header, sign=True)
    _write_members(path, members)
    with pytest.raises(ValueError,
                       match="the fitted attribute trial_factors_ is missing"):
        load(path)


def test_changed_shapes_consistent_with_header(saved):
    # Array and header changed together: the estimator's own shape rules catch it.
    path, est = saved
    members = _members(path)
    bigger = np.vstack([est.left_factors_, est.left_factors_[:1]])
    members["attr.left_factors_.npy"] = npy_bytes(bigger)
    header = model_header(members)
    header["attributes"]["left_factors_"]["shape"] = list(bigger.shape)
    set_model_header(members, header, sign=True)
    _write_members(path, members)
    with pytest.raises(ValueError, match=r"left_factors_ has shape \(9, 2\), which "
                                         r"does not match n_units=8"):
        load(path)


def test_changed_array_values(saved):
    path, est = saved
    members = _members(path)
    bad = est.readout_.copy()
    bad[0, 0] = np.nan
    members["attr.readout_.npy"] = npy_bytes(bad)
    _write_members(path, members)
    # Edited values no longer match the checksum of the header.
    with pytest.raises(ValueError, match="its content does not match the checksum"):
        load(path)
    # Edited with a new checksum: the values themselves are checked.
    set_model_header(members, model_header(members), sign=True)
    _write_members(path, members)
    with pytest.raises(ValueError, match="readout_ holds non-finite values"):
        load(path)
    # An object array (which would need pickle) is refused, not unpickled, whether
    # the header was left alone or changed to match.
    members["attr.readout_.npy"] = npy_bytes(np.array([{"a": 1}], dtype=object))
    _write_members(path, members)
    with pytest.raises(ValueError, match=r"the member attr.readout_.npy holds \d+ "
                                         r"bytes, but the array it should hold "
                                         r"takes 384"):
        load(path)
    # The same size, another dtype: refused from the .npy header, before the data.
    members["attr.readout_.npy"] = npy_bytes(np.zeros((6, 8), dtype=np.int64))
    _write_members(path, members)
    with pytest.raises(ValueError, match=r"attr.readout_.npy cannot be read \(its "
                                         r".npy header declares dtype <i8 and shape "
                                         r"\(6, 8\), but dtype <f8 and shape "
                                         r"\(6, 8\)"):
        load(path)
    members["attr.readout_.npy"] = npy_bytes(np.array([{"a": 1}], dtype=object))
    header = model_header(members)
    header["attributes"]["readout_"].update({"dtype": "|O", "shape": [1]})
    set_model_header(members, header)
    _write_members(path, members)
    with pytest.raises(ValueError, match="attribute 'readout_' has dtype '\\|O'; model "
                                         "files hold native little-endian numbers"):
        load(path)


def test_declared_shape_is_checked_before_reading(fitted, tmp_path):
    # A .npy member whose header (and the JSON header) claim a huge array: refused
    # from the sizes alone, before numpy would allocate it. (TCA's number of trials
    # is bound by no parameter: only the size of the file bounds it.)
    path = tmp_path / "tca.npz"
    fitted[TCA].save(path)
    members = _members(path)
    real = npy_bytes(np.zeros((3, RANK)))
    huge = real.replace(b"(3, 2)", b"(100000000000, 2)")
    assert huge != real
    members["attr.trial_factors_.npy"] = huge
    header = model_header(members)
    header["attributes"]["trial_factors_"].update({"shape": [10 ** 11, RANK]})
    set_model_header(members, header, sign=False)
    _write_members(path, members)
    with pytest.raises(ValueError, match="trial_factors_ declares 100000000000 entries "
                                         "along axis 0, more than the file can hold"):
        load(path)


def test_extra_array(saved):
    path, _ = saved
    members = _members(path)
    members["attr.payload.npy"] = npy_bytes(np.zeros(3))
    _write_members(path, members)
    with pytest.raises(ValueError, match=r"arrays the header does not describe: "
                                         r"\['attr.payload'\]"):
        load(path)


def test_load_never_imports_names_from_the_file(saved, monkeypatch):
    # The class is looked up in the allow-list only: no import machinery is used.
    import builtins

    path, _ = saved
    _tamper_header(path, lambda h: h.update({"class": "subprocess.Popen"}))
    imported = []
    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy)
    with pytest.raises(ValueError, match="is not one of the estimators"):
        load(path)
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert "subprocess" not in imported


# --------------------------------------------------------------------------- #
# 4. the allow-list: classes register themselves with their fitted-state schema
# --------------------------------------------------------------------------- #
def test_registry_holds_exactly_the_saveable_classes():
    registry = registered_classes()
    assert registry == {Est.__name__: Est for Est in ALL}
    # Abstract bases declare no schema, private ones have private names.
    assert BaseLatentModel not in registry.values()
    assert all(not name.startswith("_") for name in registry)
    # A copy: changing it does not change what load accepts.
    registry.clear()
    assert registered_classes() == {Est.__name__: Est for Est in ALL}


def test_importing_the_package_registers_every_class():
    # load finds classes in the registry, which the modules fill as they are
    # imported: `import sklearn_ltr` alone must import every module that defines a
    # saveable class.
    for module in pkgutil.iter_modules(sklearn_ltr.__path__, "sklearn_ltr."):
        if module.name != "sklearn_ltr.__main__":
            importlib.import_module(module.name)
    code = ("import sklearn_ltr; from sklearn_ltr._registry import registered_classes; "
            "print(sklearn_ltr.__file__); print(*sorted(registered_classes()))")
    # Run from the folder holding this copy of the package, so that it is the one
    # imported.
    root = os.path.dirname(os.path.dirname(sklearn_ltr.__file__))
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, cwd=root).stdout.splitlines()
    assert fresh[0] == sklearn_ltr.__file__
    assert fresh[1].split() == sorted(registered_classes())


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry, restored after the test: classes defined here do not stay."""
    monkeypatch.setattr(_registry, "_CLASSES", dict(_registry._CLASSES))


def test_classes_of_the_package_register_when_defined(scratch_registry):
    schema = {"n_features_in_": Value("int", low=1), "w_": ("n_features_in_",)}

    class Saveable(SaveMixin):
        __module__ = "sklearn_ltr.extra"
        _fitted_schema = schema

    class _PrivateBase(SaveMixin):
        __module__ = "sklearn_ltr.extra"
        _fitted_schema = schema

    class AbstractBase(SaveMixin):
        __module__ = "sklearn_ltr.extra"

    class Outside(SaveMixin):  # defined in this test module, not in the package
        _fitted_schema = schema

    registry = registered_classes()
    assert registry["Saveable"] is Saveable
    assert not {"_PrivateBase", "AbstractBase", "Outside"} & set(registry)

    # The same class defined again (a reloaded module) replaces the first.
    class Saveable(SaveMixin):
        __module__ = "sklearn_ltr.extra"
        _fitted_schema = schema

    assert registered_classes()["Saveable"] is Saveable


def test_two_saveable_classes_cannot_share_a_name(scratch_registry):
    with pytest.raises(TypeError, match=r"Cannot register sklearn_ltr\.extra\..*TCA: "
                                        r"the saveable class sklearn_ltr.baselines.TCA "
                                        r"already has the name 'TCA'"):
        class TCA(SaveMixin):
            __module__ = "sklearn_ltr.extra"
            _fitted_schema = {"n_features_in_": Value("int", low=1)}
    assert registered_classes()["TCA"] is sklearn_ltr.TCA


@pytest.mark.parametrize("schema, match", [
    ({}, "must be a non-empty dict"),
    ([("n_features_in_", Value("int"))], "must be a non-empty dict"),
    ({"n features": Value("int")}, "has the key 'n features'"),
    ({"w_": ["rank"]}, r"\['rank'\]; it must be a Value"),
    ({"w_": ("rank", 2.5)}, "it must be a Value"),
    ({"w_": ("rank", True)}, "it must be a Value"),
    ({"w_": ("rank", "")}, "it must be a Value"),
    # Every value is typed: no "anything goes".
    ({"w_": None}, r"\['w_'\] is None; it must be a Value"),
    ({"w_": Value("dict")}, "it must be a Value"),
    ({"w_": Value("float", closed="open")}, "it must be a Value"),
    ({"w_": Array(("rank",), "object")}, "an Array .dtype float, int, bool or label"),
    ({"w_": Array(("rank",), "float", index_of="rank")}, "it must be a Value"),
], ids=["empty", "not-a-dict", "bad-key", "list-shape", "float-dim", "bool-dim",
        "empty-dim", "untyped", "unknown-kind", "unknown-closed", "object-dtype",
        "float-index"])
def test_invalid_schema_is_refused_when_the_class_is_defined(scratch_registry, schema,
                                                             match):
    with pytest.raises(TypeError, match=match):
        class Broken(SaveMixin):
            __module__ = "sklearn_ltr.extra"
            _fitted_schema = schema
    assert "Broken" not in registered_classes()


@pytest.mark.parametrize("Est", ALL, ids=_ids)
def test_every_schema_is_valid_and_describes_fitted_attributes(Est, fitted):
    # Exactly: fit sets no attribute that save would leave out.
    check_schema(Est._fitted_schema, Est.__name__)
    params = fitted[Est].get_params(deep=False)
    state = {k for k in vars(fitted[Est]) if k not in params}
    assert state == {name.rstrip("?") for name in Est._fitted_schema}


def test_load_checks_the_schema_of_the_class(saved, monkeypatch):
    # The shapes checked at load are those the class declares, nothing hard-coded.
    path, _ = saved
    schema = LowTensorRankRNN._fitted_schema
    load(path)
    monkeypatch.setattr(LowTensorRankRNN, "_fitted_schema",
                        {**schema, "readout_": ("n_features_in_", 3)})
    with pytest.raises(ValueError, match=r"readout_ has shape \(6, 8\), which does not "
                                         r"match 3 \(axis 1\)"):
        load(path)
    monkeypatch.setattr(LowTensorRankRNN, "_fitted_schema",
                        {**schema, "extra_": Value("int")})
    with pytest.raises(ValueError, match="the fitted attribute extra_ is missing"):
        load(path)
