"""
Learning a perturbed brain-computer interface: did connectivity change?
=======================================================================

Real recordings (Hennig et al. 2018, in ``../shared/data/bci_learning_hennig2018.npz``):
spike counts of 87 motor-cortex units in 45 ms bins over 334 trials in which a monkey
moves a cursor with a brain-computer interface to one of four targets. Half-way the
decoder is perturbed (block 0 -> block 1), and the animal learns to compensate.

The counts are smoothed into rates and z-scored (``GaussianSmoother``,
``StandardScaler3D``). Contiguous blocks of trials are held out
(``TrialBlockKFold``), and each held-out trial is predicted from its target and its
place in the session -- trial number and decoder block -- alone: the low-tensor-rank
RNN's trial factors from their Gaussian-process prior, its fixed-connectivity twin
with one connectivity for all trials, and the model-free references, the mean
trajectory of each target (plain, and weighted over the session). The two networks'
scores on the same folds give the learning test.

The networks get the target as an input (``condition_inputs``: a one-hot on every
time bin; the animal sees the target), fit no drift of the neurons' offsets
(``drift_length_scale=None``), and the low-tensor-rank RNN's trial factors vary
over a length scale of 1000 trials: nearly constant within each decoder block,
independent across the two. These are the settings that
``benchmarks/bench_bci.py`` found best on these folds (see the command-line guide's
worked example for the measured scores). Then the low-tensor-rank RNN is
fitted to all trials and its trial factors are plotted across the perturbation. Skipped
with a message when the file is absent.

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
from sklearn.pipeline import make_pipeline  # noqa: E402

from sklearn_ltr import (  # noqa: E402
    ConditionAverage,
    LowRankRNN,
    LowTensorRankRNN,
)
from sklearn_ltr.model_selection import (  # noqa: E402
    TrialBlockKFold,
    compare_estimators,
    paired_comparison,
    rank_selection_summary,
)
from sklearn_ltr.plotting import plot_rank_selection, plot_trial_factors  # noqa: E402
from sklearn_ltr.preprocessing import (  # noqa: E402
    GaussianSmoother,
    StandardScaler3D,
    condition_inputs,
)

torch.set_num_threads(1)
FAST = os.environ.get("SKLEARN_LTR_EXAMPLES_FAST") == "1"
OUT = Path(os.environ.get("SKLEARN_LTR_EXAMPLES_OUT", "."))
# The gallery build runs the examples without __file__, from this folder.
HERE = Path(__file__).parent if "__file__" in globals() else Path.cwd()
DATA = HERE.resolve().parent.parent / "shared" / "data" / \
    "bci_learning_hennig2018.npz"

if not DATA.exists():
    print(f"Skipping: {DATA} not found (the BCI recordings are not on this machine).")
    sys.exit(0)

bci = np.load(DATA)
X, block, target = bci["X"].astype(float), bci["block"], bci["target_deg"]
if FAST:
    keep = np.r_[0:40, 166:206]
    X, block, target = X[keep][:, :, :25], block[keep], target[keep]
trial = np.arange(len(X), dtype=float)  # the trials are stored in session order
print(f"BCI recordings: X {X.shape} (trials x 45-ms bins x units), "
      f"perturbation at trial {np.flatnonzero(block)[0]}")

n_units = 30 if FAST else 60
max_iter = 40 if FAST else 1000
ranks = [1, 2] if FAST else [1, 2, 3, 4, 5, 6]
n_folds = 2 if FAST else 5
preprocess = (GaussianSmoother(sigma=1.0), StandardScaler3D())
networks = dict(n_units=n_units, max_iter=max_iter, drift_length_scale=None,
                random_state=0)
inputs = condition_inputs(target, X.shape[1])
block_size = max(2, len(X) // (4 * n_folds))
cv = TrialBlockKFold(n_folds, block_size=block_size, guard=max(1, block_size // 5))

results = compare_estimators(
    {"LowTensorRankRNN": make_pipeline(
        *preprocess, LowTensorRankRNN(trial_length_scale=1000.0, **networks)),
     "LowRankRNN": make_pipeline(*preprocess, LowRankRNN(**networks)),
     "target average": make_pipeline(*preprocess, ConditionAverage()),
     "target average over the session": make_pipeline(
         *preprocess, ConditionAverage(trial_smoothing=10.0))},
    X, target, ranks=ranks, cv=cv, trial_index=trial, epochs=block, inputs=inputs,
    as_frame=False, n_jobs=1 if FAST else 2)
summary = rank_selection_summary(results)
print(summary.text)

# The learning test: both networks on the same folds, at the rank where they score
# best together (a choice that favours neither).
scores = {(r["estimator"], r["rank"], r["fold"]): r["score"] for r in results}


def pair(rank):
    return [np.array([scores[name, rank, f] for f in range(n_folds)])
            for name in ("LowTensorRankRNN", "LowRankRNN")]


rank = max(ranks, key=lambda r: np.mean(pair(r)))
test = paired_comparison(*pair(rank), list(cv.split(X)),
                         names=("LowTensorRankRNN", "LowRankRNN"))
print(f"\nLearning test at rank {rank}: LowTensorRankRNN minus LowRankRNN = "
      f"{test.difference:+.4f} +/- {test.se:.4f}, one-sided p = {test.pvalue:.3g}")

# The network fitted to all trials, for its trial factors.
Xp = make_pipeline(*preprocess).fit_transform(X)
rnn = LowTensorRankRNN(rank=rank, trial_length_scale=1000.0, **networks).fit(
    Xp, target, trial_index=trial, epochs=block, inputs=inputs)
epoch = np.where(block == 0, "intuitive decoder", "perturbed decoder")
for r in range(rank):
    before = rnn.trial_factors_[block == 0, r].mean()
    after = rnn.trial_factors_[block == 1, r].mean()
    print(f"  trial factor {r + 1}: mean {before:+.3f} before, {after:+.3f} after the "
          f"perturbation")

fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
plot_rank_selection(summary, ax=axes[0])
axes[0].set_title(f"Held-out blocks of trials, predicted from target and place\n"
                  f"learning test at rank {rank}: p = {test.pvalue:.2g}", fontsize=10)
plot_trial_factors(rnn, epochs=epoch, ax=axes[1])
axes[1].set_title(f"Trial factors (rank {rank}) across the decoder perturbation",
                  fontsize=10)
fig.tight_layout()
OUT.mkdir(parents=True, exist_ok=True)
path = OUT / "plot_bci_learning.png"
fig.savefig(path, dpi=110)
print(f"Saved {path}")
