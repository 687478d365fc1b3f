"""Progress a person can see: fits done out of all, elapsed, time left, on stderr."""

import io
import re

import pytest

from sklearn_ltr import TrialPCA
from sklearn_ltr._progress import Progress, format_duration
from sklearn_ltr.datasets import make_low_tensor_rank_rnn
from sklearn_ltr.model_selection import compare_estimators, learning_test


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("seconds, text", [
    (0.2, "0 s"), (59.4, "59 s"), (60, "1 min 00 s"), (3599, "59 min 59 s"),
    (3600, "1 h 00 min"), (90061, "25 h 01 min"), (-1, "0 s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_progress_rewrites_one_line_on_a_terminal():
    stream = Terminal()
    progress = Progress(4, stream=stream, interval=0.0)
    for _ in range(4):
        progress.update()
    progress.close()
    text = stream.getvalue()
    # One line, rewritten in place: carriage returns, a single newline at the end.
    assert text.count("\n") == 1 and text.endswith("\n")
    states = [s.rstrip() for s in text.strip().split("\r")]
    assert [s.split(" ")[0] for s in states] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
    # While fits remain, an estimate of the time left; none once done.
    assert all(re.fullmatch(r"\d/4 fits done, \d+ s elapsed, about \d+ s left", s)
               for s in states[1:4])
    assert states[-1] == "4/4 fits done, 0 s elapsed"


def test_progress_writes_periodic_lines_to_a_log():
    stream = io.StringIO()
    progress = Progress(100, stream=stream, what="folds")
    for _ in range(100):
        progress.update()
    progress.close()
    # A log gets the start, at most a line every 10 s, and the end.
    assert stream.getvalue().splitlines() == ["0/100 folds done, 0 s elapsed",
                                              "100/100 folds done, 0 s elapsed"]


@pytest.fixture(scope="module")
def X():
    return make_low_tensor_rank_rnn(24, 12, 10, rank=2, random_state=0).X


def test_compare_estimators_verbose_shows_progress_on_stderr(X, capsys):
    # (Results arrive in any order from parallel jobs: test_model_selection checks
    # that each lands in its place with n_jobs=2.)
    compare_estimators({"a": TrialPCA(), "b": TrialPCA()}, X, ranks=[1, 2], cv=3,
                       verbose=1, as_frame=False)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == "0/12 fits done, 0 s elapsed"
    assert re.fullmatch(r"12/12 fits done, \d+ s elapsed", lines[-1])


def test_compare_estimators_quiet_by_default(X, capsys):
    compare_estimators([TrialPCA()], X, ranks=[1, 2], cv=3, as_frame=False)
    assert capsys.readouterr() == ("", "")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_learning_test_verbose_shows_progress_on_stderr(capsys):
    data = make_low_tensor_rank_rnn(40, 10, 8, rank=2, random_state=0)
    learning_test(data.X, data.y, rank=1, cv=2, random_state=0, verbose=1,
                  estimator_params={"n_units": 8, "max_iter": 20})
    captured = capsys.readouterr()
    assert captured.out == ""
    # Two networks on two folds.
    assert re.fullmatch(r"4/4 fits done, \d+ s elapsed", captured.err.splitlines()[-1])
