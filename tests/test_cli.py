"""The README's main-job command, in a fast mode."""

import json

import pytest

from sklearn_ltr.__main__ import main

pytest.importorskip("matplotlib")


def test_demo_prints_table_and_writes_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--ranks", "1", "3", "--cv", "2", "--n-jobs", "1",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "LowTensorRankRNN" in printed and "one-standard-error rank" in printed
    assert (out / "rank_selection.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    ltr = results["results"]["LowTensorRankRNN"]
    assert ltr["best_rank"] == 3 and ltr["mean"][1] > ltr["mean"][0]


def test_bad_command_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code != 0
