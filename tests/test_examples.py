"""Every example script runs to completion in its fast mode and saves its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))


def test_examples_exist():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_in_fast_mode(script, tmp_path):
    env = dict(os.environ, SKLEARN_LTR_EXAMPLES_FAST="1",
               SKLEARN_LTR_EXAMPLES_OUT=str(tmp_path), MPLBACKEND="Agg",
               PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figure = tmp_path / (script.stem + ".png")
    assert figure.is_file() and figure.stat().st_size > 5000
    assert proc.stdout.strip()
