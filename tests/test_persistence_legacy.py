"""Model files written by an earlier version still load and give the same outputs.

``tests/data/v0.1/`` holds one file per saveable class, written by sklearn_ltr
0.1.0.dev0 (``make_files.py`` beside them), with what each returned on the trials of
``inputs.npz``. They stand for files users already have: never regenerate them. The
outputs must be identical, not close: loading restores the very arrays that were
saved, and inference from them is deterministic on the CPU.
"""

from pathlib import Path

import numpy as np
import pytest

import sklearn_ltr
from sklearn_ltr._registry import registered_classes

DATA = Path(__file__).parent / "data" / "v0.1"
FILES = sorted(p.name[: -len(".npz")] for p in DATA.glob("*.npz")
               if p.name != "inputs.npz")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_every_class_of_0_1_has_a_legacy_file():
    # A class added later has no file from 0.1; every class of 0.1 is still saveable.
    assert set(FILES) <= set(registered_classes())
    assert {"LowTensorRankRNN", "LowRankRNN", "TCA", "TrialPCA", "StandardScaler3D",
            "SoftNormalizer", "GaussianSmoother", "TrialCropper"} == set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_legacy_file_loads_and_gives_the_same_output(name):
    est = sklearn_ltr.load(DATA / f"{name}.npz")
    assert type(est).__name__ == name
    with np.load(DATA / "inputs.npz") as data:
        X, y, inputs = data["X"], data["y"], data["inputs"]
    if name == "LowTensorRankRNN":
        # The only file fitted with condition labels and external inputs.
        out = est.predict(X, y, inputs=inputs)
    elif hasattr(est, "predict"):
        out = est.predict(X)
    else:
        out = est.transform(X)
    expected = np.load(DATA / f"{name}.expected.npy", allow_pickle=False)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", ["LowTensorRankRNN", "LowRankRNN"])
def test_legacy_network_keeps_the_settings_it_was_fitted_with(name):
    # 0.1 had no drift of the readout offsets, stepped the readout and held no
    # entries out: the parameters added since then say so, not their new
    # defaults, so that a clone refits as the file's model was fitted.
    from sklearn.base import clone

    est = sklearn_ltr.load(DATA / f"{name}.npz")
    expected = {"drift_length_scale": None, "exact_readout": False,
                "early_stopping": False}
    assert {k: est.get_params()[k] for k in expected} == expected
    assert {k: clone(est).get_params()[k] for k in expected} == expected
    assert est.readout_drift_ is None and est.readout_ridge_ is None
    # A file written now has every parameter: they are kept.
    params = type(est)._complete_params(type(est)().get_params(deep=False))
    assert params == type(est)().get_params(deep=False)
