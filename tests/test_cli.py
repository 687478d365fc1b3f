"""The command line: the README's main-job command and ``select-rank``, fast."""

import json
import re

import numpy as np
import pytest

from sklearn_ltr.__main__ import load_recordings, main
from sklearn_ltr.datasets import make_low_tensor_rank_rnn

pytest.importorskip("matplotlib")

FAST = ["--cv", "2", "--n-jobs", "1", "--max-iter", "40", "--verbose", "0"]


@pytest.fixture(scope="module")
def recordings():
    data = make_low_tensor_rank_rnn(n_trials=16, n_timepoints=10, n_neurons=8, rank=2,
                                    random_state=0)
    return data.X, data.y


def test_demo_prints_table_and_writes_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--ranks", "1", "3", "--cv", "2", "--n-jobs", "1",
                 "--max-iter", "150", "--verbose", "0", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "curl force field" in printed and "CP variance explained" in printed
    assert "LowTensorRankRNN" in printed and "one-standard-error rank" in printed
    assert (out / "rank_selection.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "make_motor_learning"
    assert results["best_rank"]["LowTensorRankRNN"] == 3
    table = {(r["estimator"], r["rank"]): r["mean"] for r in results["table"]}
    assert table["LowTensorRankRNN", 3] > table["LowTensorRankRNN", 1]
    curve = results["weight_change_cp_variance_explained"]
    assert curve["3"] > curve["1"]
    # Held-out blocks predicted from their place in the session, beside the
    # model-free reference, and the learning test on the same folds.
    assert results["score"] == "predicting R²"
    assert results["cv"].startswith("TrialBlockKFold(n_splits=2")
    assert set(results["references"]) == {"ConditionAverage",
                                          "ConditionAverage (smoothed)"}
    learning = results["learning_test"]
    assert learning["rank"] in (1, 3) and len(learning["per_fold"]) == 2
    np.testing.assert_allclose(learning["difference"], np.mean(learning["per_fold"]))
    assert "Learning test at rank" in printed and "one-sided p" in printed


def test_select_rank_npz_all_estimators(tmp_path, capsys, recordings):
    X, y = recordings
    path = tmp_path / "rec.npz"
    np.savez(path, X=X, y=y)
    out = tmp_path / "out"
    code = main(["select-rank", str(path), "--ranks", "1", "2", "--n-units", "20",
                 "--smooth", "1", "--zscore", "--out", str(out), *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ["LowTensorRankRNN", "LowRankRNN", "TCA", "TrialPCA"]:
        assert f"{name}: best rank" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["shape"] == list(X.shape)
    # Four models at two ranks and two references, two folds each.
    assert len(results["folds"]) == (4 * 2 + 2) * 2
    assert set(results["references"]) == {"ConditionAverage",
                                          "ConditionAverage (smoothed)"}
    # Folds are stratified by condition, so every fit knows every condition.
    assert all(np.isfinite(r["score"]) for r in results["folds"])
    assert set(results["one_se_rank"]) == {"LowTensorRankRNN", "LowRankRNN", "TCA",
                                           "TrialPCA"}
    assert results["smooth"] == 1.0 and results["zscore"] is True
    assert (out / "rank_selection.png").stat().st_size > 1000


def test_select_rank_npy_axis_order_and_mat(tmp_path, recordings):
    from scipy.io import savemat

    X, _ = recordings
    # The reference code stores time x trial x neuron.
    np.save(tmp_path / "rec.npy", X.transpose(1, 0, 2))
    X_read, y = load_recordings(tmp_path / "rec.npy",
                                axis_order=["time", "trial", "neuron"])
    np.testing.assert_array_equal(X_read, X)
    assert y is None
    savemat(tmp_path / "rec.mat", {"rates": X, "y": np.arange(X.shape[0])})
    X_mat, y_mat = load_recordings(tmp_path / "rec.mat")
    np.testing.assert_array_equal(X_mat, X)
    np.testing.assert_array_equal(y_mat, np.arange(X.shape[0]))
    code = main(["select-rank", str(tmp_path / "rec.npy"), "--axis-order", "time",
                 "trial", "neuron", "--estimators", "pca", "--ranks", "1", "2",
                 "--out", str(tmp_path / "o"), *FAST])
    assert code == 0


@pytest.mark.parametrize("setup, args, match", [
    (None, [], "no such file"),
    ("npz_no_X", [], "has no array 'X'"),
    ("npz_no_X", ["--key", "nope"], "has no array 'nope'"),
    ("2d", [], r"have shape \(16, 10\); expected 3 axes"),
    ("txt", [], "unsupported file type '.txt'"),
    ("corrupt", [], "could not read"),
    ("strings", [], "not numeric"),
    ("bad_y", [], "'y' has 3 labels but the data have 16 trials"),
    ("ok", ["--axis-order", "time", "time", "neuron"], "must name trial, time and"),
    ("ok", ["--cv", "1"], "--cv 1 must be between 2"),
    ("ok", ["--ranks", "0", "1"], "--ranks must be positive"),
    ("rare_y", [], "condition 1 has only 1 trial"),
])
def test_select_rank_bad_input_one_line_on_stderr(tmp_path, capsys, recordings, setup,
                                                  args, match):
    X, _ = recordings
    path = tmp_path / "rec.npz"
    if setup == "npz_no_X":
        np.savez(path, a=X, b=X)
    elif setup == "2d":
        np.savez(path, X=X[:, :, 0])
    elif setup == "txt":
        path = tmp_path / "rec.txt"
        path.write_text("1 2 3")
    elif setup == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip file")
    elif setup == "strings":
        np.savez(path, X=np.full((2, 2, 2), "a"))
    elif setup == "bad_y":
        np.savez(path, X=X, y=[0, 1, 2])
    elif setup == "rare_y":
        np.savez(path, X=X, y=np.r_[1, np.zeros(15)].astype(int))
    elif setup == "ok":
        np.savez(path, X=X)
    cli = ["select-rank", str(path), "--out", str(tmp_path / "o"), "--estimators",
           "pca", "--verbose", "0"]
    code = main(cli + args)
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err
    assert re.search(match, err)


def test_bad_command_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code != 0


def test_select_rank_held_out_blocks_with_epochs(tmp_path, capsys):
    data = make_low_tensor_rank_rnn(n_trials=48, n_timepoints=10, n_neurons=8, rank=2,
                                    random_state=0)
    path = tmp_path / "session.npz"
    np.savez(path, X=data.X, y=data.y, block=np.repeat([0, 1], 24),
             trial=np.arange(48) * 2)
    out = tmp_path / "out"
    code = main(["select-rank", str(path), "--ranks", "1", "2", "--n-units", "10",
                 "--estimators", "ltr", "lr", "avg", "--epoch-key", "block",
                 "--trial-index-key", "trial", "--out", str(out), *FAST])
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out blocks of trials" in printed and "Learning test at rank" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["score"] == "predicting R²"
    assert results["learning_test"]["method"].startswith("one-sided")
    assert (out / "rank_selection.png").stat().st_size > 1000


def test_select_rank_session_keys_are_checked(tmp_path, capsys, recordings):
    X, y = recordings
    path = tmp_path / "rec.npz"
    np.savez(path, X=X, y=y, block=np.zeros(5))
    assert main(["select-rank", str(path), "--epoch-key", "nope", *FAST]) == 1
    assert "has no array 'nope'" in capsys.readouterr().err
    assert main(["select-rank", str(path), "--epoch-key", "block", *FAST]) == 1
    assert "epochs has 5 values but the data have 16 trials" in capsys.readouterr().err


def test_select_rank_blocks_that_would_drop_a_condition_are_refused(tmp_path, capsys):
    # Blocks of 4 trials with guards of 1, and 4 conditions in turn: each fold's
    # guards would remove two conditions from its training trials.
    data = make_low_tensor_rank_rnn(n_trials=32, n_timepoints=6, n_neurons=5, rank=1,
                                    random_state=0)
    path = tmp_path / "session.npz"
    np.savez(path, X=data.X, y=data.y)
    assert main(["select-rank", str(path), "--blocks", *FAST]) == 1
    assert "have no trial of condition(s)" in capsys.readouterr().err
