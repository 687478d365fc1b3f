"""sklearn_ltr.plotting: each figure shows the right numbers, on a given or new axes,
and bad input fails clearly."""

import importlib
import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import sklearn_ltr.plotting  # noqa: E402
from sklearn_ltr import TCA, LowRankRNN, LowTensorRankRNN, TrialPCA  # noqa: E402
from sklearn_ltr.analysis import weight_eigenvalues  # noqa: E402
from sklearn_ltr.datasets import make_low_tensor_rank_rnn  # noqa: E402
from sklearn_ltr.model_selection import (  # noqa: E402
    compare_estimators,
    rank_selection_summary,
)
from sklearn_ltr.plotting import (  # noqa: E402
    plot_latents,
    plot_rank_selection,
    plot_trial_factors,
    plot_weight_spectrum,
)
from sklearn_ltr.preprocessing import StandardScaler3D  # noqa: E402

# Small fits stop at max_iter on purpose (speed); that is not what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_TRIALS, N_TIMEPOINTS, N_NEURONS, RANK = 20, 12, 10, 2


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    return make_low_tensor_rank_rnn(N_TRIALS, N_TIMEPOINTS, N_NEURONS, rank=RANK,
                                    random_state=0)


@pytest.fixture(scope="module")
def ltr(data):
    est = LowTensorRankRNN(rank=RANK, n_units=16, max_iter=40, infer_max_iter=20,
                           random_state=0)
    return est.fit(data.X)


@pytest.fixture(scope="module")
def lowrank(data):
    est = LowRankRNN(rank=RANK, n_units=16, max_iter=20, infer_max_iter=20,
                     random_state=0)
    return est.fit(data.X)


@pytest.fixture(scope="module")
def tca(data):
    return TCA(rank=RANK, random_state=0).fit(data.X)


def _by_gid(ax, prefix):
    return {a.get_gid().split(":", 1)[1]: a for a in ax.get_children()
            if isinstance(a.get_gid(), str) and a.get_gid().startswith(prefix)}


# --------------------------------------------------------------------------- #
# plot_rank_selection
# --------------------------------------------------------------------------- #
def _records():
    """Per-fold scores whose best and one-SE ranks differ, for two estimators."""
    rows = []
    table = {
        # rank: fold scores. A: best at 4, but 2 is within one SE of it.
        "A": {1: [0.2, 0.3, 0.25], 2: [0.72, 0.78, 0.75], 3: [0.72, 0.77, 0.75],
              4: [0.73, 0.80, 0.76]},
        # B: clear best at 3 (small SE), rank 4 worse.
        "B": {1: [0.1, 0.1, 0.1], 2: [0.5, 0.51, 0.5], 3: [0.6, 0.61, 0.6],
              4: [0.55, 0.56, 0.55]},
    }
    for name, by_rank in table.items():
        for rank, scores in by_rank.items():
            for fold, s in enumerate(scores):
                rows.append({"estimator": name, "rank": rank, "fold": fold, "score": s})
    return rows


def _check_rank_plot(ax, summary):
    names = list(dict.fromkeys(r["estimator"] for r in summary.table))
    assert len(ax.containers) == len(names)
    best, one_se = _by_gid(ax, "best_rank:"), _by_gid(ax, "one_se_rank:")
    assert set(best) == set(summary.best_rank)
    assert set(one_se) == set(summary.one_se_rank)
    for name, container in zip(names, ax.containers):
        rows = sorted((r for r in summary.table if r["estimator"] == name),
                      key=lambda r: r["rank"])
        x, y = container.lines[0].get_data()
        np.testing.assert_allclose(np.round(x), [r["rank"] for r in rows])
        np.testing.assert_allclose(y, [r["mean"] for r in rows])
        # Error bars span mean +/- SE.
        segments = container.lines[2][0].get_segments()
        np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments],
                                   [2 * r["se"] for r in rows], atol=1e-12)
        mean_at = {r["rank"]: r["mean"] for r in rows}
        for markers, chosen in [(best, summary.best_rank),
                                (one_se, summary.one_se_rank)]:
            mx, my = markers[name].get_data()
            assert round(float(mx[0])) == chosen[name]
            assert float(my[0]) == pytest.approx(mean_at[chosen[name]])


def test_rank_selection_marks_best_and_one_se_rank():
    records = _records()
    summary = rank_selection_summary(records)
    assert summary.best_rank == {"A": 4, "B": 3}
    assert summary.one_se_rank == {"A": 2, "B": 3}
    ax = plot_rank_selection(records)
    _check_rank_plot(ax, summary)
    labels = ax.get_legend_handles_labels()[1]
    assert "A (one-SE rank 2)" in labels and "B (one-SE rank 3)" in labels
    assert [t.get_text() for t in ax.get_legend().get_texts()][-2:] == \
        ["best rank", "one-SE rank"]
    assert ax.get_xlabel() == "rank"


def test_rank_selection_on_given_axes_and_from_summary():
    fig, axes = plt.subplots(1, 2)
    summary = rank_selection_summary(_records())
    ax = plot_rank_selection(summary, ax=axes[1])
    assert ax is axes[1]
    assert len(fig.axes) == 2 and not axes[0].has_data()
    _check_rank_plot(ax, summary)


def test_rank_selection_from_grid_search(data):
    search = GridSearchCV(TrialPCA(), {"rank": [1, 2, 3, 4]},
                          cv=KFold(3, shuffle=True, random_state=0),
                          error_score="raise").fit(data.X)
    ax = plot_rank_selection(search)
    summary = rank_selection_summary(search)
    _check_rank_plot(ax, summary)
    assert "R²" in ax.get_ylabel()


def test_rank_selection_from_compare_estimators_frame(data):
    pytest.importorskip("pandas")
    results = compare_estimators([TCA(random_state=0), TrialPCA()], data.X,
                                 ranks=[1, 2, 3], cv=3, as_frame=True)
    ax = plot_rank_selection(results)
    _check_rank_plot(ax, rank_selection_summary(results))
    assert len(ax.containers) == 2


def test_rank_selection_bad_input():
    with pytest.raises(ValueError, match="Records need the keys"):
        plot_rank_selection([{"estimator": "A", "rank": 1}])
    with pytest.raises(NotFittedError):
        plot_rank_selection(GridSearchCV(TrialPCA(), {"rank": [1, 2]}))


# --------------------------------------------------------------------------- #
# plot_trial_factors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("which", ["ltr", "tca"])
def test_trial_factors_lines(which, request):
    est = request.getfixturevalue(which)
    ax = plot_trial_factors(est)
    assert len(ax.lines) == RANK
    for r, line in enumerate(ax.lines):
        np.testing.assert_array_equal(line.get_xdata(), np.arange(N_TRIALS))
        np.testing.assert_array_equal(line.get_ydata(), est.trial_factors_[:, r])
    assert ax.get_xlabel() == "trial"


def test_trial_factors_epochs_shaded_per_run(ltr):
    epochs = np.array(["baseline"] * 6 + ["perturbation"] * 8 + ["baseline"] * 6)
    fig, ax = plt.subplots()
    assert plot_trial_factors(ltr, epochs, ax=ax) is ax
    spans = [p for p in ax.patches if str(p.get_gid()).startswith("epoch:")]
    assert [p.get_gid() for p in spans] == ["epoch:baseline", "epoch:perturbation",
                                            "epoch:baseline"]
    # Each run covers its trials exactly: [start - 0.5, stop - 0.5].
    extents = [(p.get_x(), p.get_x() + p.get_width()) for p in spans]
    np.testing.assert_allclose(extents, [(-0.5, 5.5), (5.5, 13.5), (13.5, 19.5)])
    # The same label keeps its colour; one legend entry per label.
    assert spans[0].get_facecolor() == spans[2].get_facecolor() != \
        spans[1].get_facecolor()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts.count("baseline") == 1 and texts.count("perturbation") == 1


def test_trial_factors_reference_is_matched_up_to_order_and_scale(data):
    reference = data.trial_factors  # (n_trials, 2)
    # "Fitted" factors: the reference with components swapped and rescaled.
    factors = np.stack([-3.0 * reference[:, 1], 0.5 * reference[:, 0]], axis=1)
    ax = plot_trial_factors(factors, reference=reference)
    refs = _by_gid(ax, "reference:")
    assert set(refs) == {"0", "1"}
    np.testing.assert_allclose(refs["1"].get_ydata(), factors[:, 0])
    np.testing.assert_allclose(refs["0"].get_ydata(), factors[:, 1])
    # Drawn in the colour of the fitted component it is paired with.
    assert refs["1"].get_color() == ax.lines[0].get_color()
    assert refs["0"].get_color() == ax.lines[1].get_color()


def test_trial_factors_bad_input(ltr, lowrank):
    with pytest.raises(ValueError, match="LowRankRNN has no trial factors"):
        plot_trial_factors(lowrank)
    with pytest.raises(NotFittedError):
        plot_trial_factors(LowTensorRankRNN())
    with pytest.raises(ValueError, match=r"epochs must hold one label per trial: "
                                         r"expected shape \(20,\), got \(19,\)"):
        plot_trial_factors(ltr, np.zeros(N_TRIALS - 1))
    with pytest.raises(ValueError, match=r"reference must have shape"):
        plot_trial_factors(ltr, reference=np.ones((N_TRIALS + 1, 2)))
    with pytest.raises(ValueError, match=r"shape \(n_trials, rank\)"):
        plot_trial_factors(np.ones(5))


# --------------------------------------------------------------------------- #
# plot_latents
# --------------------------------------------------------------------------- #
def test_latents_condition_means(ltr, data):
    ax = plot_latents(ltr, data.X, data.y)
    conditions = np.unique(data.y)
    assert len(ax.lines) == len(conditions)
    latents = ltr.transform(data.X)
    for c, line in zip(conditions, ax.lines):
        mean = latents[data.y == c].mean(axis=0)
        np.testing.assert_allclose(line.get_xdata(), mean[:, 0], atol=1e-10)
        np.testing.assert_allclose(line.get_ydata(), mean[:, 1], atol=1e-10)
        assert line.get_label() == str(c)
    assert ax.get_xlabel() == "latent 1" and ax.get_ylabel() == "latent 2"


def test_latents_single_trials_and_colorbar(tca, data):
    fig, ax = plt.subplots()
    assert plot_latents(tca, data.X, ax=ax) is ax
    assert len(ax.lines) == N_TRIALS
    assert len(fig.axes) == 2  # the trial-index colour bar
    ax = plot_latents(tca, data.X, data.y, single_trials=True)
    assert len(ax.lines) == N_TRIALS + len(np.unique(data.y))
    ax = plot_latents(tca, data.X, single_trials=False)
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_xdata(), tca.transform(data.X).mean(0)[:, 0])
    assert len(ax.figure.axes) == 1


def test_latents_pass_conditions_to_models_fitted_with_them(data):
    est = LowRankRNN(rank=RANK, n_units=16, max_iter=10, infer_max_iter=10,
                     random_state=0).fit(data.X, data.y)
    ax = plot_latents(est, data.X, data.y)
    expected = est.transform(data.X, data.y)[data.y == 1].mean(axis=0)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), expected[:, 1], atol=1e-10)


def test_latents_three_dims_and_pipeline(data):
    pipe = make_pipeline(StandardScaler3D(), TrialPCA(rank=3)).fit(data.X)
    ax = plot_latents(pipe, data.X, data.y, dims=(0, 1, 2))
    assert ax.name == "3d"
    latents = pipe.transform(data.X)
    mean = latents[data.y == 0].mean(axis=0)
    x, y, z = ax.lines[0].get_data_3d()
    np.testing.assert_allclose(z, mean[:, 2])
    _, ax2d = plt.subplots()
    with pytest.raises(ValueError, match="Three dims need a 3D axes"):
        plot_latents(pipe, data.X, dims=(0, 1, 2), ax=ax2d)


def test_latents_rank_one_against_time(data):
    ax = plot_latents(TrialPCA(rank=1).fit(data.X), data.X, data.y)
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(N_TIMEPOINTS))
    assert ax.get_xlabel() == "time bin"


def test_latents_bad_input(ltr, tca, data):
    with pytest.raises(ValueError, match=r"dims=\[0, 2\] is out of range for a model "
                                         r"of rank 2"):
        plot_latents(tca, data.X, dims=(0, 2))
    with pytest.raises(ValueError, match="y must hold one condition label per trial"):
        plot_latents(tca, data.X, data.y[:-1])
    with pytest.raises(ValueError, match=f"X has {N_NEURONS - 1} neurons"):
        plot_latents(tca, data.X[:, :, 1:])
    with pytest.raises(NotFittedError):
        plot_latents(LowTensorRankRNN(), data.X)


# --------------------------------------------------------------------------- #
# plot_weight_spectrum
# --------------------------------------------------------------------------- #
def _top_eigenvalues(W, rank):
    eig = np.linalg.eigvals(W)
    return np.sort_complex(eig[np.argsort(-np.abs(eig))[:rank]])


def test_weight_eigenvalues_still_importable_from_plotting():
    # It moved to analysis (tests in test_analysis.py); old imports keep working.
    assert sklearn_ltr.plotting.weight_eigenvalues is weight_eigenvalues
    assert "weight_eigenvalues" in sklearn_ltr.plotting.__all__


def test_weight_spectrum_scatter_coloured_by_trial(ltr):
    fig, ax = plt.subplots()
    assert plot_weight_spectrum(ltr, ax=ax) is ax
    points = ax.collections[0]
    eig, _ = weight_eigenvalues(ltr)
    np.testing.assert_allclose(points.get_offsets(),
                               np.c_[eig.real.ravel(), eig.imag.ravel()])
    np.testing.assert_array_equal(points.get_array(), np.repeat(np.arange(N_TRIALS),
                                                                RANK))
    (line,) = [a for a in ax.lines if a.get_gid() == "stability_boundary"]
    np.testing.assert_array_equal(line.get_xdata(), [1.0, 1.0])
    assert len(fig.axes) == 2  # colour bar


def test_weight_spectrum_discrete_and_subset(ltr):
    trials = [0, 5, -1]
    ax = plot_weight_spectrum(ltr, trials, dynamics="discrete")
    eig, idx = weight_eigenvalues(ltr, trials)
    np.testing.assert_array_equal(idx, [0, 5, N_TRIALS - 1])
    alpha = 1.0 / ltr.tau
    step = 1.0 - alpha + alpha * eig
    np.testing.assert_allclose(ax.collections[0].get_offsets(),
                               np.c_[step.real.ravel(), step.imag.ravel()])
    (circle,) = [a for a in ax.lines if a.get_gid() == "stability_boundary"]
    x, y = circle.get_data()
    np.testing.assert_allclose(np.hypot(x, y), 1.0)


def test_weight_spectrum_low_rank_rnn_has_one_set(lowrank):
    ax = plot_weight_spectrum(lowrank)
    offsets = ax.collections[0].get_offsets()
    assert offsets.shape == (RANK, 2)
    expected = _top_eigenvalues(lowrank.weight_tensor()[0], RANK)
    np.testing.assert_allclose(np.sort_complex(offsets[:, 0] + 1j * offsets[:, 1]),
                               expected, atol=1e-10)
    assert len(ax.figure.axes) == 1  # no trial colour bar


def test_weight_spectrum_bad_input(ltr, tca):
    with pytest.raises(ValueError, match="TCA has no recurrent connectivity"):
        plot_weight_spectrum(tca)
    with pytest.raises(NotFittedError):
        plot_weight_spectrum(LowTensorRankRNN())
    with pytest.raises(ValueError, match="dynamics must be 'continuous' or 'discrete'"):
        plot_weight_spectrum(ltr, dynamics="euler")
    with pytest.raises(ValueError, match=r"trials must be indices in \[0, 19\]"):
        plot_weight_spectrum(ltr, trials=[3, N_TRIALS])
    with pytest.raises(ValueError, match="trials must be a 1D array of trial indices"):
        plot_weight_spectrum(ltr, trials=[0.5])


# --------------------------------------------------------------------------- #
# matplotlib is optional
# --------------------------------------------------------------------------- #
def test_import_without_matplotlib_and_clear_error(monkeypatch):
    for name in [m for m in sys.modules
                 if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "sklearn_ltr.plotting")
    plotting = importlib.import_module("sklearn_ltr.plotting")
    with pytest.raises(ImportError, match=r"plot_rank_selection needs matplotlib.*"
                                          r"pip install sklearn_ltr\[plot\]"):
        plotting.plot_rank_selection(_records())
