"""
Choosing the rank with a Pipeline and GridSearchCV
==================================================

Spike counts are smoothed into rates and standardised inside a
:class:`~sklearn.pipeline.Pipeline`, so that every preprocessing step is fitted on the
training trials of each fold only. :class:`~sklearn.model_selection.GridSearchCV`
searches the rank of two models on the same folds:

* :class:`sklearn_ltr.LowTensorRankRNN`, whose connectivity changes over trials, and
* :class:`sklearn_ltr.LowRankRNN`, the nested model with one connectivity for all
  trials ("no learning").

Folds split the trials; each held-out trial is scored by co-smoothing (its neurons are
predicted from parameters inferred without them), a score that does not grow with
rank for free. The refitted model is the one chosen by the one-standard-error rule
(:func:`sklearn_ltr.model_selection.one_se_refit`): the smallest rank whose score is
within one standard error of the best.

The data are Poisson spike counts drawn from a planted rank-3 low-tensor-rank network
whose trial factors follow learning curves. The smoothing width is fixed, not
searched: a pipeline's score is computed on its *transformed* data, so pipelines with
different ``sigma`` would be scored against different targets (smoother data are
easier to predict).

Set ``SKLEARN_LTR_EXAMPLES_FAST=1`` for a smaller, faster run, and
``SKLEARN_LTR_EXAMPLES_OUT`` to choose where the figure is written.
"""

import os
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from sklearn_ltr import LowRankRNN, LowTensorRankRNN  # noqa: E402
from sklearn_ltr.datasets import make_low_tensor_rank_rnn  # noqa: E402
from sklearn_ltr.model_selection import one_se_refit, rank_selection_summary  # noqa: E402
from sklearn_ltr.plotting import plot_rank_selection, plot_trial_factors  # noqa: E402
from sklearn_ltr.preprocessing import GaussianSmoother, StandardScaler3D  # noqa: E402

torch.set_num_threads(1)
FAST = os.environ.get("SKLEARN_LTR_EXAMPLES_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("SKLEARN_LTR_EXAMPLES_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)

if FAST:
    # Few iterations: fits stop at max_iter on purpose.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    sizes = dict(n_trials=30, n_timepoints=15, n_neurons=12)
    model_kw = dict(n_units=16, max_iter=40, infer_max_iter=30, random_state=0)
    ranks, n_folds, n_jobs = [1, 2, 3], 3, 1
else:
    sizes = dict(n_trials=80, n_timepoints=25, n_neurons=30)
    model_kw = dict(n_units=40, random_state=0)
    ranks, n_folds, n_jobs = [1, 2, 3, 4, 5], 5, 2

# %%
# Spike counts from a planted network
# -----------------------------------
# The planted network's readout, passed through a softplus, gives each neuron's
# firing rate in spikes per bin; the recorded data are Poisson counts.
data = make_low_tensor_rank_rnn(**sizes, rank=3, noise=0.0, random_state=0)
rng = np.random.RandomState(0)
rates = 2.0 * np.logaddexp(0.0, data.X_clean)
counts = rng.poisson(rates).astype(float)

# %%
# Pipeline and grid
# -----------------
# The model step is itself a grid parameter, so both networks are searched over the
# same ranks and on the same folds, in one search.
pipe = Pipeline([
    ("smooth", GaussianSmoother(sigma=1.0)),
    ("scale", StandardScaler3D()),
    ("model", LowTensorRankRNN(**model_kw)),
])
grid = {"model": [LowTensorRankRNN(**model_kw), LowRankRNN(**model_kw)],
        "model__rank": ranks}
search = GridSearchCV(pipe, grid, cv=KFold(n_folds, shuffle=True, random_state=0),
                      refit=one_se_refit, n_jobs=n_jobs, error_score="raise")
t0 = time.perf_counter()
search.fit(counts)
elapsed = time.perf_counter() - t0

summary = rank_selection_summary(search)
chosen = search.best_estimator_.named_steps["model"]
print(f"Poisson spike counts {counts.shape} (trials x time bins x neurons), "
      f"mean {counts.mean():.2f} spikes/bin; planted rank 3")
print(f"GridSearchCV: {len(search.cv_results_['params'])} candidates x {n_folds} "
      f"folds in {elapsed:.0f} s")
print(summary.text)
print(f"refit (one-SE rule over all candidates): {type(chosen).__name__}, "
      f"rank={chosen.rank}")

# %%
# Figure
# ------
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=[1, 1.2])
plot_rank_selection(search, ax=axes[0])
planted_line = axes[0].axvline(3, color="0.5", ls=":", lw=1.2, zorder=0)
legend = axes[0].get_legend()
axes[0].legend(legend.legend_handles + [planted_line],
               [t.get_text() for t in legend.get_texts()] + ["planted rank"],
               fontsize=8)
axes[0].set_title(f"{n_folds}-fold CV over trials: smoothed, standardised counts")
if hasattr(chosen, "trial_factors_"):
    plot_trial_factors(search.best_estimator_, ax=axes[1],
                       reference=data.trial_factors)
    axes[1].set_title(f"refitted {type(chosen).__name__}, rank {chosen.rank} "
                      f"(planted: dashed)")
else:
    axes[1].set_axis_off()
    axes[1].text(0.5, 0.5, f"refitted {type(chosen).__name__}:\nno trial factors",
                 ha="center", va="center")
fig.tight_layout()
path = OUT / "plot_pipeline_grid_search.png"
fig.savefig(path, dpi=110)
print(f"wrote {path}")
