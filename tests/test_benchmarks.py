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


@pytest.mark.slow
def test_bench_fit_large_quick(tmp_path):
    path = tmp_path / "large.json"
    stdout = run_script("bench_fit.py", "--quick", "--sections", "large", "--json",
                        str(path))
    res = json.loads(path.read_text())
    cfg, large = res["config"]["large"], res["sections"]["large"]
    assert len(large["runs"]) == 2 * len(cfg["trials"]) * cfg["rounds"]
    for r in large["runs"]:
        n_iter = cfg["epochs"] if r["batch_size"] else cfg["full_iters"]
        assert r["n_iter"] == n_iter and len(r["epoch_s"]) == n_iter - 1
        assert min(r["epoch_s"]) > 0 and r["peak_mib"] >= r["before_fit_mib"] > 0
    small, big = (str(n) for n in cfg["trials"])
    for name in ("mini-batch", "full batch"):
        points = large["by"][name]["points"]
        assert large["by"][name]["linearity"] == pytest.approx(
            points[big]["epoch_s"] / points[small]["epoch_s"] / 4)
    names = [t["target"] for t in res["targets"]]
    assert "large: (time per pass, 4x trials) / 4, mini-batches" in names
    assert "large sessions:" in stdout


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # puts benchmarks/ on sys.path
    finally:
        sys.path[:] = path
    return module


def assert_usage_errors(parse_args, cases, capsys):
    """Each ``(argv, message)``: ``parse_args(argv)`` exits with code 2 and says it."""
    for bad, message in cases:
        with pytest.raises(SystemExit) as exc:
            parse_args(bad)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_bench_fit_command_line_is_validated(capsys):
    bench_fit = load_benchmark("bench_fit")
    args = bench_fit.parse_args(["--sections", "memory,fit", "--schedule",
                                 'lr={"learning_rate": 0.02}'])
    # Sections run in their canonical order, whatever order they were given in.
    assert args.sections == ["fit", "memory"]
    assert args.schedule == {"lr": {"learning_rate": 0.02}}
    assert_usage_errors(bench_fit.parse_args, [
        (["--sections", "fit,speed"], "unknown section(s) ['speed']"),
        (["--schedule", "long={}"], "expected NAME=JSON"),
        (["--schedule", "x=[1]"], "expected NAME=JSON"),
        (["--seeds", "0"], "--seeds must be >= 1"),
    ], capsys)


def test_bench_learning_test_quick(tmp_path):
    path = tmp_path / "learning.json"
    stdout = run_script("bench_learning_test.py", "--quick", "--n-jobs", "1",
                        "--sections", "calibration,length_scale,rank_selected",
                        "--json", str(path))
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
    # The command line's test at the rank chosen from the same folds.
    assert "at any rank" in stdout
    assert [r["condition"] for r in res["rank_selected"]] == ["constant", "learning"]
    for rec in res["rank_selected"]:
        pvalues = {int(r): p for r, p in rec["pvalues"].items()}
        assert sorted(pvalues) == [1, 2] and rec["chosen"] in pvalues
        assert rec["pvalue"] == pvalues[rec["chosen"]]
    for row in res["rank_selected_summary"]:
        assert row[1] == 1 and row[3] <= row[5] and row[4] <= row[5]


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


SPIKES = os.path.join(ROOT, "..", "shared", "data", "mc_maze_small_test.nwb")


@pytest.mark.parametrize("name, absent", [("bench_spikes", "absent.nwb"),
                                          ("bench_bci", "absent.npz")])
def test_benchmarks_on_recordings_skip_without_them(tmp_path, capsys, name, absent):
    load_benchmark(name).main(["--quick", "--data", str(tmp_path / absent), "--json",
                               str(tmp_path / "out.json")])
    stdout = capsys.readouterr().out
    assert stdout.startswith("Skipping:") and absent in stdout
    assert not (tmp_path / "out.json").exists()


def test_bench_spikes_command_line_is_validated(capsys):
    bench_spikes = load_benchmark("bench_spikes")
    args = bench_spikes.parse_args(["--sections", "long", "--rank", "3",
                                    "--candidate", 'n_units=10={"n_units": 10}'])
    # The smoothing baseline is every score's reference: it always runs.
    assert args.sections == ["baselines", "long"]
    assert args.candidates == {"n_units=10": {"n_units": 10}}
    assert_usage_errors(bench_spikes.parse_args, [
        (["--sections", "rnn,speed"], "unknown section(s) ['speed']"),
        (["--sections", "levers"], "need --rank"),
        (["--candidate", "x=[1]"], "expected NAME=JSON"),
        (["--candidate", '={"n_units": 3}'], "expected NAME=JSON"),
    ], capsys)


def test_bench_spikes_quick(tmp_path):
    if not os.path.exists(SPIKES):
        pytest.skip(f"the recording {SPIKES} is not there")
    pytest.importorskip("pynwb")
    path = tmp_path / "spikes.json"
    stdout = run_script("bench_spikes.py", "--quick", "--n-jobs", "1", "--sections",
                        "rnn,long,levers", "--candidate", 'small={"n_units": 6}',
                        "--json", str(path))
    res = json.loads(path.read_text())
    cfg = res["config"]
    assert res["quick"] is True and res["shape"] == [cfg["n_trials"], 35,
                                                     cfg["n_neurons"]]
    assert list(res["sections"]) == ["baselines", "rnn", "long", "levers"]
    pairs = {(t, f) for t in range(cfg["trial_folds"])
             for f in range(cfg["neuron_folds"])}
    base = res["sections"]["baselines"]
    for method, folds in base["folds"].items():
        assert sorted((f["trial_fold"], f["neuron_fold"]) for f in folds) == sorted(
            pairs), method
    # A constant rate never beats the test trials' own mean rate.
    assert all(f["bits"] <= 1e-12 for f in base["folds"]["mean rate"])
    assert all(f["alpha"] in cfg["alphas"] for f in base["folds"]["smoothing"])
    summary = base["summary"]["smoothing"]
    folds = base["folds"]["smoothing"]
    assert summary["pooled"] == pytest.approx(
        sum(f["bits"] * f["spikes"] for f in folds) / sum(f["spikes"] for f in folds))

    (name,) = res["sections"]["rnn"]["records"]
    for rec in res["sections"]["rnn"]["records"][name]:
        assert len(rec["folds"]) == cfg["neuron_folds"]
        assert 1 <= rec["n_iter"] <= cfg["params"]["max_iter"] and rec["fit_s"] > 0
        # The benchmark's protocol is the estimator's own co-smoothing score.
        assert abs(rec["score_minus_pooled"]) < 1e-9
        # loss='poisson' holds out entries by default (early stopping).
        assert rec["validation_loss"] > 0
    # The long fit is at the rank of the lowest held-out loss of the fits.
    assert res["sections"]["rnn"]["cv_rank"] == {"LowRankRNN": cfg["ranks"][0]}
    assert "* cross-validated rank: LowRankRNN 2 (lowest held-out loss" in stdout
    long = res["sections"]["long"]
    assert long["rank"] == cfg["ranks"][0]
    default, longer = long["records"].values()
    assert default == res["sections"]["rnn"]["records"][name]
    assert all(1 <= r["n_iter"] <= cfg["long_max_iter"] for r in longer)
    assert all(r["params"]["tol"] == 0.0 for r in longer)
    diff = np.mean([f["bits"] for r in longer for f in r["folds"]]) - np.mean(
        [f["bits"] for r in default for f in r["folds"]])
    assert long["long_minus_default"][0] == pytest.approx(diff)
    assert "long - default:" in stdout
    levers = res["sections"]["levers"]
    assert levers["candidates"] == {"small": {"n_units": 6}}
    assert list(levers["summary"]) == ["small, default", "small, long"]
    for title in ("baselines: held-out neurons", "recurrent networks",
                  "fitting longer", "regularisation levers"):
        assert title in stdout


BCI = os.path.join(ROOT, "..", "shared", "data", "bci_learning_hennig2018.npz")


def test_bench_bci_command_line_is_validated(capsys):
    bench_bci = load_benchmark("bench_bci")
    args = bench_bci.parse_args(["--settings", "old", "--setting",
                                 'x={"lr": {"tau": 4}, "inputs": "constant"}'])
    assert list(args.chosen) == ["old", "x"]
    assert args.chosen["x"] == {"lr": {"tau": 4}, "inputs": "constant"}
    assert_usage_errors(bench_bci.parse_args, [
        (["--settings", "old,new"], "unknown setting(s) ['new']"),
        (["--setting", "x=[1]"], "expected NAME=JSON"),
        (["--setting", 'x={"tca": {}}'], "expected NAME=JSON"),
        (["--setting", 'x={"inputs": "pulse"}'], 'inputs must be "constant"'),
    ], capsys)


def test_bench_bci_quick(tmp_path):
    if not os.path.exists(BCI):
        pytest.skip(f"the recording {BCI} is not there")
    path = tmp_path / "bci.json"
    stdout = run_script("bench_bci.py", "--quick", "--n-jobs", "1", "--json",
                        str(path))
    res = json.loads(path.read_text())
    assert res["quick"] is True and res["shape"] == [80, 12, 25]
    assert res["cv"] == "TrialBlockKFold(n_splits=2, block_size=10, guard=2)"
    assert list(res["settings"]) == ["old", "best"]
    for name, out in res["settings"].items():
        records = out["records"]
        assert {(r["estimator"], r["rank"]) for r in records} == {
            ("ConditionAverage", None), ("ConditionAverage (smoothed)", None),
            ("LowTensorRankRNN", 2), ("LowRankRNN", 2)}
        assert all(np.isfinite(r["score"]) for r in records)
        ref = {r["fold"]: r["score"] for r in records
               if r["estimator"] == "ConditionAverage"}
        for network in ("LowTensorRankRNN", "LowRankRNN"):
            own = {r["fold"]: r["score"] for r in records
                   if r["estimator"] == network}
            versus = out["versus_reference"][f"{network} one_se"]
            assert versus["rank"] == 2
            np.testing.assert_allclose(versus["per_fold"],
                                       [own[f] - ref[f] for f in (0, 1)])
    # The same folds, so the references score the same in both settings (the
    # inputs of "best" do not reach them).
    assert (res["settings"]["old"]["references"]
            == res["settings"]["best"]["references"])
    assert "network minus ConditionAverage" in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_gpu_says_when_there_is_no_gpu():
    stdout = run_script("bench_gpu.py")
    assert stdout.startswith("No CUDA device on this machine")
    assert "nothing measured" in stdout


def test_bench_gpu_quick_on_the_cpu(tmp_path):
    # The GPU script's code, run with the CPU as the compared device: the same fit
    # twice on one device agrees exactly (a fit is deterministic on the CPU).
    path = tmp_path / "gpu.json"
    stdout = run_script("bench_gpu.py", "--quick", "--device", "cpu", "--json",
                        str(path))
    res = json.loads(path.read_text())
    assert "agreement: cpu against cpu" in stdout
    agreement = res["agreement"]
    assert agreement["loss_curve_rel"] == 0.0 and agreement["prediction_rel"] == 0.0
    assert agreement["scores"][0] == agreement["scores"][1]
    timing = res["timing"]
    assert timing["size"]["n_units"] == 24 and timing["fit_n_iter"] == 20
    assert timing["cpu"]["init_s"] > 0 and np.isfinite(timing["cpu"]["per_iter_s"])
    assert timing["device"]["name"] == "cpu" and np.isfinite(timing["ratio"])
