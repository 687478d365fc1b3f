"""
Low-tensor-rank RNN versus simpler models, on the same folds
============================================================

Cross-validated co-smoothing score versus rank for four models -- the low-tensor-rank
RNN (connectivity changes over trials), the low-rank RNN (fixed connectivity), TCA
(CP decomposition of the data tensor) and trial-unfolded PCA -- all fitted and scored
on exactly the same folds of trials by
:func:`sklearn_ltr.model_selection.compare_estimators`.

Two datasets:

* planted data from :func:`sklearn_ltr.datasets.make_low_tensor_rank_rnn` (rank 3,
  trial factors that change like learning curves), where the right answer is known;
* the brain-computer-interface learning recordings of Hennig et al. (2018) in
  ``../shared/data/bci_learning_hennig2018.npz`` (spike counts of 87 motor-cortex
  units over 334 trials, a decoder perturbation half-way), smoothed and z-scored
  inside the pipeline. Skipped with a message when the file is absent.

Set ``SKLEARN_LTR_EXAMPLES_FAST=1`` for a quick run on small subsets.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from sklearn_ltr import TCA, LowRankRNN, LowTensorRankRNN, TrialPCA  # noqa: E402
from sklearn_ltr.datasets import make_low_tensor_rank_rnn  # noqa: E402
from sklearn_ltr.model_selection import (  # noqa: E402
    compare_estimators,
    rank_selection_summary,
)
from sklearn_ltr.plotting import plot_rank_selection  # noqa: E402
from sklearn_ltr.preprocessing import GaussianSmoother, StandardScaler3D  # noqa: E402

torch.set_num_threads(1)
FAST = os.environ.get("SKLEARN_LTR_EXAMPLES_FAST") == "1"
OUT = Path(os.environ.get("SKLEARN_LTR_EXAMPLES_OUT", "."))
# The gallery build runs the examples without __file__, from this folder.
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
DATA = HERE.resolve().parent.parent / "shared" / "data" / \
    "bci_learning_hennig2018.npz"

ranks = [1, 2] if FAST else [1, 2, 3, 4, 5, 6]
n_folds = 2 if FAST else 5
max_iter = 20 if FAST else 1000


def models(n_units, preprocess=()):
    """The four models, each behind the same preprocessing steps."""
    return {
        "LowTensorRankRNN": make_pipeline(*preprocess, LowTensorRankRNN(
            n_units=n_units, max_iter=max_iter, random_state=0)),
        "LowRankRNN": make_pipeline(*preprocess, LowRankRNN(
            n_units=n_units, max_iter=max_iter, random_state=0)),
        "TCA": make_pipeline(*preprocess, TCA(n_init=1 if FAST else 3,
                                              max_iter=100 if FAST else 500,
                                              tol=1e-6, random_state=0)),
        "TrialPCA": make_pipeline(*preprocess, TrialPCA()),
    }


def compare(X, n_units, preprocess=(), title=""):
    cv = KFold(n_folds, shuffle=True, random_state=0)
    results = compare_estimators(models(n_units, preprocess), X, ranks=ranks, cv=cv,
                                 n_jobs=1 if FAST else 2)
    summary = rank_selection_summary(results)
    print(f"\n{title}: X of shape {X.shape}, {n_folds}-fold CV over trials")
    print(summary.text)
    return summary


panels = []

planted = make_low_tensor_rank_rnn(n_trials=24 if FAST else 100, n_timepoints=25,
                                   n_neurons=30, rank=3, noise=0.2, random_state=0)
panels.append(("Planted rank-3 low-tensor-rank RNN",
               compare(planted.X, n_units=40, title="Planted data (rank 3)")))

if DATA.exists():
    bci = np.load(DATA)
    X = bci["X"].astype(float)
    if FAST:
        X = X[::8, :, :20]
    # Spike counts -> smoothed rates, z-scored per unit; both steps sit inside the
    # pipeline, so the scaler is fitted on the training trials of each fold only.
    preprocess = (GaussianSmoother(sigma=1.0), StandardScaler3D())
    panels.append(("BCI learning (Hennig et al. 2018)",
                   compare(X, n_units=60, preprocess=preprocess,
                           title="BCI learning recordings")))
else:
    print(f"\nSkipping the BCI recordings: {DATA} not found.")

fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4),
                         squeeze=False)
for ax, (title, summary) in zip(axes[0], panels):
    plot_rank_selection(summary, ax=ax)
    ax.set_title(title, fontsize=10)
fig.tight_layout()
OUT.mkdir(parents=True, exist_ok=True)
path = OUT / "plot_compare_baselines.png"
fig.savefig(path, dpi=120)
print(f"\nSaved {path}")
