"""Every example script runs to completion in its fast mode and saves its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("plot_*.py"))


def test_examples_exist():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_in_fast_mode(script, tmp_path):
    # The checkout under test comes first on the path, whatever is installed.
    path = os.pathsep.join([str(ROOT)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = dict(os.environ, SKLEARN_LTR_EXAMPLES_FAST="1",
               SKLEARN_LTR_EXAMPLES_OUT=str(tmp_path), MPLBACKEND="Agg",
               PYTHONWARNINGS="ignore", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if proc.stdout.startswith("Skipping:"):
        # An example of recordings that are not on this machine says so and stops.
        pytest.skip(proc.stdout.strip())
    figure = tmp_path / (script.stem + ".png")
    assert figure.is_file() and figure.stat().st_size > 5000
    assert proc.stdout.strip()
