"""
Learning a perturbed brain-computer interface: trial factors across the perturbation
====================================================================================

Real recordings (Hennig et al. 2018, in ``../shared/data/bci_learning_hennig2018.npz``):
spike counts of 87 motor-cortex units in 45 ms bins over 334 trials in which a monkey
moves a cursor with a brain-computer interface to one of four targets. Half-way the
decoder is perturbed (block 0 -> block 1), and the animal learns to compensate.

The counts are smoothed into rates and z-scored (``GaussianSmoother``,
``StandardScaler3D``); the low-tensor-rank RNN and its fixed-connectivity twin are
compared on the same folds; then the low-tensor-rank RNN is fitted to all trials and
its trial factors are plotted across the perturbation, with the latent trajectories
coloured by target. Skipped with a message when the file is absent.

Set ``SKLEARN_LTR_EXAMPLES_FAST=1`` for a quick run on a subset.
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import KFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from sklearn_ltr import LowRankRNN, LowTensorRankRNN  # noqa: E402
from sklearn_ltr.model_selection import (  # noqa: E402
    compare_estimators,
    rank_selection_summary,
)
from sklearn_ltr.plotting import (  # noqa: E402
    plot_latents,
    plot_rank_selection,
    plot_trial_factors,
)
from sklearn_ltr.preprocessing import GaussianSmoother, StandardScaler3D  # noqa: E402

torch.set_num_threads(1)
FAST = os.environ.get("SKLEARN_LTR_EXAMPLES_FAST") == "1"
OUT = Path(os.environ.get("SKLEARN_LTR_EXAMPLES_OUT", "."))
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / \
    "bci_learning_hennig2018.npz"

if not DATA.exists():
    print(f"Skipping: {DATA} not found (the BCI recordings are not on this machine).")
    # Still leave a figure behind, so scripted runs can tell "skipped" from "failed".
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.text(0.5, 0.5, "BCI recordings not found", ha="center", va="center")
    ax.axis("off")
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "plot_bci_learning.png")
    sys.exit(0)

bci = np.load(DATA)
X, block, target = bci["X"].astype(float), bci["block"], bci["target_deg"]
if FAST:
    keep = np.r_[0:40, 166:206]
    X, block, target = X[keep][:, :, :25], block[keep], target[keep]
epoch = np.where(block == 0, "intuitive decoder", "perturbed decoder")
print(f"BCI recordings: X {X.shape} (trials x 45-ms bins x units), "
      f"perturbation at trial {np.flatnonzero(block)[0]}")

n_units = 30 if FAST else 60
max_iter = 40 if FAST else 1000
ranks = [1, 2] if FAST else [1, 2, 3, 4, 5, 6]
preprocess = (GaussianSmoother(sigma=1.0), StandardScaler3D())


def ltr(rank=3):
    return make_pipeline(*preprocess, LowTensorRankRNN(
        rank=rank, n_units=n_units, max_iter=max_iter, random_state=0))


results = compare_estimators(
    {"LowTensorRankRNN": ltr(),
     "LowRankRNN": make_pipeline(*preprocess, LowRankRNN(
         n_units=n_units, max_iter=max_iter, random_state=0))},
    X, ranks=ranks, cv=KFold(2 if FAST else 5, shuffle=True, random_state=0),
    n_jobs=1 if FAST else 2)
summary = rank_selection_summary(results)
print(summary.text)
rank = summary.one_se_rank["LowTensorRankRNN"]

model = ltr(rank).fit(X)
rnn = model[-1]
print(f"\nLowTensorRankRNN at the one-SE rank {rank}: {rnn.n_iter_} iterations")
for r in range(rank):
    before = rnn.trial_factors_[block == 0, r].mean()
    after = rnn.trial_factors_[block == 1, r].mean()
    print(f"  trial factor {r + 1}: mean {before:+.3f} before, {after:+.3f} after the "
          f"perturbation")

fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
plot_rank_selection(summary, ax=axes[0])
axes[0].set_title("Cross-validated rank selection", fontsize=10)
plot_trial_factors(model, epochs=epoch, ax=axes[1])
axes[1].set_title(f"Trial factors (rank {rank}) across the decoder perturbation",
                  fontsize=10)
plot_latents(model, X, y=target, ax=axes[2])
axes[2].set_title("Latent trajectories, mean per target (degrees)", fontsize=10)
fig.tight_layout()
OUT.mkdir(parents=True, exist_ok=True)
path = OUT / "plot_bci_learning.png"
fig.savefig(path, dpi=110)
print(f"Saved {path}")
