"""The benchmark scripts run end to end at smoke-test sizes and report sound numbers."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def run_script(name, *args):
    env = dict(os.environ)
    # The scripts must import this checkout, as they do when run from the repository.
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = subprocess.run([sys.executable, os.path.join(BENCHMARKS, name), *args],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, (
        f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return out.stdout


def test_bench_iteration_tiny(tmp_path):
    path = tmp_path / "iteration.json"
    stdout = run_script(
        "bench_iteration.py", "--n-trials", "10", "--n-timepoints", "8", "--n-neurons",
        "6", "--n-units", "12", "--rank", "2", "--repeats", "1", "--json", str(path))
    res = json.loads(path.read_text())
    assert "ours: iteration (fwd + bwd + Adam)" in stdout
    # The latent implementation and the dense comparator are the same model.
    assert res["agreement_float64"]["loss_abs_diff"] < 1e-10
    assert res["agreement_float64"]["grad_max_rel_diff"] < 1e-8
    assert res["ours_iteration"]["median_ms"] > 0
    assert res["naive_iteration"]["median_ms"] > 0
    assert res["machine"]["torch"] == torch.__version__
    assert res["config"]["threads"] == 1


@pytest.mark.slow
def test_bench_fit_quick(tmp_path):
    path = tmp_path / "fit.json"
    sections = ["fit", "scaling", "memory", "threads", "gridsearch"]
    stdout = run_script("bench_fit.py", "--quick", "--sections", ",".join(sections),
                        "--json", str(path))
    res = json.loads(path.read_text())
    assert list(res["sections"]) == sections
    assert res["quick"] is True
    machine = res["machine"]
    assert machine["torch"] == torch.__version__ and machine["logical_cpus"] >= 1
    assert len(machine["loadavg"]) == 3 and machine["cpu_model"]
    cfg = res["config"]

    fit = res["sections"]["fit"]
    assert fit["n_train"] == cfg["size"]["n_trials"] and fit["n_test"] == cfg["n_test"]
    assert {(r["schedule"], r["seed"]) for r in fit["runs"]} == {
        (s, seed) for s in ("default", "long") for seed in cfg["seeds"]}
    for r in fit["runs"]:
        assert r["fit_s"] > 0 and r["score_s"] > 0
        assert np.isfinite(r["test_score"]) and r["test_score"] <= 1
        assert r["ms_per_iter"] == pytest.approx(1e3 * r["fit_s"] / r["n_iter"])
        if r["schedule"] == "long":
            # tol=0 with a window as long as max_iter: runs to max_iter exactly.
            assert r["n_iter"] == cfg["long"]["max_iter"] and not r["converged"]
        else:
            assert 1 <= r["n_iter"] <= 1000
    assert 0 < fit["noise_ceiling_r2"] <= 1

    scaling = res["sections"]["scaling"]
    assert set(scaling["axes"]) == set(cfg["axes"])
    for axis, points in scaling["axes"].items():
        assert [p[axis] for p in points] == cfg["axes"][axis]
        base = [p for p in points if p[axis] == cfg["size"][axis]]
        assert len(base) == 1 and base[0]["iter_ratio"] == 1.0
        assert all(p["iter_ms"] > 0 and p["fit_s"] > 0 for p in points)
    assert [(u["from"], u["to"]) for u in scaling["units_4x"]] == [(6, 24)]
    assert scaling["units_4x"][0]["fit_ratio"] > 0
    pair = scaling["units_4x"][0]
    assert len(pair["iter_ms_paired"]) == 2 and min(pair["iter_ms_paired"]) > 0
    assert pair["iter_ratio"] == pytest.approx(
        pair["iter_ms_paired"][1] / pair["iter_ms_paired"][0])

    memory = res["sections"]["memory"]
    for run in ("cold", "warm"):
        readings = memory[run]["readings"]
        assert list(readings) == ["after_imports", "before_fit", "after_fit",
                                  "after_score"]
        # The high-water mark never decreases and bounds the resident size.
        hwm = [v["vm_hwm_mib"] for v in readings.values()]
        assert hwm == sorted(hwm)
        assert all(v["vm_rss_mib"] <= v["vm_hwm_mib"] for v in readings.values())
        assert memory[run]["increment_fit_mib"] >= 0
        assert memory[run]["peak_fit_mib"] == readings["after_fit"]["vm_hwm_mib"]
        assert memory[run]["n_iter"] == cfg["memory_params"]["max_iter"]

    threads = res["sections"]["threads"]
    assert [p["threads"] for p in threads["points"]] == cfg["thread_counts"]
    assert threads["points"][0]["fit_speedup"] == 1.0

    grid = res["sections"]["gridsearch"]
    n_candidates = len(next(iter(cfg["grid"]["param_grid"].values())))
    assert grid["n_fits"] == n_candidates * cfg["grid"]["cv"]
    assert len(grid["mean_test_score"]) == n_candidates
    # Worker processes reproduce the sequential search.
    assert grid["max_abs_score_diff"] <= 1e-12
    assert grid["speedup"] == pytest.approx(grid["n_jobs_1_s"] / grid["n_jobs_2_s"])

    names = [t["target"] for t in res["targets"]]
    assert "default fit time (s), worst seed" in names
    assert "GridSearchCV n_jobs=2 speedup" in names
    assert all(isinstance(t["pass"], bool) for t in res["targets"])
    for title in ("fit to convergence", "scaling around", "memory of a fresh process",
                  "torch threads per fit", "GridSearchCV over", "targets"):
        assert title in stdout


def load_bench_fit():
    spec = importlib.util.spec_from_file_location(
        "bench_fit", os.path.join(BENCHMARKS, "bench_fit.py"))
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # puts benchmarks/ on sys.path
    finally:
        sys.path[:] = path
    return module


def test_bench_fit_command_line_is_validated(capsys):
    bench_fit = load_bench_fit()
    args = bench_fit.parse_args(["--sections", "memory,fit", "--schedule",
                                 'lr={"learning_rate": 0.02}'])
    # Sections run in their canonical order, whatever order they were given in.
    assert args.sections == ["fit", "memory"]
    assert args.schedule == {"lr": {"learning_rate": 0.02}}
    for bad, message in [
        (["--sections", "fit,speed"], "unknown section(s) ['speed']"),
        (["--schedule", "long={}"], "expected NAME=JSON"),
        (["--schedule", "x=[1]"], "expected NAME=JSON"),
        (["--seeds", "0"], "--seeds must be >= 1"),
    ]:
        with pytest.raises(SystemExit) as exc:
            bench_fit.parse_args(bad)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_bench_learning_test_quick(tmp_path):
    path = tmp_path / "learning.json"
    stdout = run_script("bench_learning_test.py", "--quick", "--sections",
                        "calibration,length_scale", "--json", str(path))
    res = json.loads(path.read_text())
    assert "wins every fold" in stdout
    ((planted, seed, chosen, ratio, within),) = res["length_scale"]
    assert planted == 10.0 and ratio == chosen / planted and within in (True, False)
    conditions = [row[0] for row in res["summary"]]
    assert conditions == ["learning", "constant", "recurrent gain", "readout gain",
                          "offset drift"]
    for rec in res["records"]:
        assert 0.0 <= rec["pvalue"] <= 1.0 and len(rec["per_fold"]) == 5
        assert rec["ceiling"] <= 1.0


def test_bench_recovery_quick(tmp_path):
    path = tmp_path / "recovery.json"
    stdout = run_script("bench_recovery.py", "--quick", "--json", str(path))
    res = json.loads(path.read_text())
    assert "schedule p95" in stdout
    (rec,) = res["records"]
    assert 0.0 <= rec["similarity"] <= 1.0
    assert 0.0 <= rec["pvalue_smooth"] <= 1.0 and 0.0 <= rec["pvalue_schedule"] <= 1.0
    assert len(rec["column_angles"]) == 3
    assert all(0.0 <= a <= 90.0 for a in rec["column_angles"] + rec["row_angles"])
