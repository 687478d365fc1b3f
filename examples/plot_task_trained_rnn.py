"""
Validation on a task-trained network: low tensor rank learning and its recovery
===============================================================================

The validation of Pellegrino, Cayco-Gajic & Chadwick (NeurIPS 2023) in one figure.
A recurrent network of tanh units, pretrained by gradient descent to drive a
point-mass arm to 8 targets, adapts trial by trial (one gradient step on its recurrent
weights per trial) to a curl force field, then de-adapts in washout
(:func:`sklearn_ltr.datasets.make_motor_learning`). Its weights in force on every
trial are known, so we can ask:

1. Is learning visible? The reach error jumps when the field turns on, decays with
   learning, and shows an after-effect in washout (panel a).
2. Is the tensor of weight changes ``W[k] - W[0]`` of low CP rank? Fraction of its
   sum of squares explained by CP fits of increasing rank (panel b), with the
   weights themselves for comparison, and its numerical multilinear rank against
   the rank bounds of gradient-descent learning
   (:func:`sklearn_ltr.analysis.gradient_rank_bounds`).
3. Does :class:`sklearn_ltr.LowTensorRankRNN`, fitted to the units' activity alone
   (plus the task inputs), recover how the connectivity changed over trials? Its
   trial factors against those of the CP decomposition of the weight changes
   (panel c; the fitted latent units are not the network's units, so only trial
   factors are comparable).
4. Which rank does held-out co-smoothing choose (panel d)?

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
from sklearn.model_selection import KFold  # noqa: E402

from sklearn_ltr import LowTensorRankRNN  # noqa: E402
from sklearn_ltr.analysis import (  # noqa: E402
    column_space,
    factor_similarity,
    gradient_rank_bounds,
    multilinear_rank,
    numerical_rank,
    principal_angles,
    tensor_rank_curve,
)
from sklearn_ltr.datasets import make_motor_learning  # noqa: E402

torch.set_num_threads(1)
FAST = os.environ.get("SKLEARN_LTR_EXAMPLES_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("SKLEARN_LTR_EXAMPLES_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)
# Cross-validation fits stop at max_iter on purpose (a budget, not a failure).
warnings.filterwarnings("ignore", category=ConvergenceWarning)

if FAST:
    data_kw = dict(n_units=30, n_timepoints=25, n_baseline=1, n_perturbation=4,
                   n_washout=2, pretrain_iter=300)
    cp_ranks, rank, cv_ranks = [1, 2, 3, 4], 3, [1, 3]
    fit_kw, cv_kw = dict(n_units=30, max_iter=100), dict(n_units=30, max_iter=60,
                                                         infer_max_iter=50)
else:
    data_kw = {}
    cp_ranks, rank, cv_ranks = [1, 2, 3, 4, 5, 6, 8], 4, [1, 2, 3, 4, 6]
    fit_kw, cv_kw = dict(n_units=50, max_iter=1000), dict(n_units=50, max_iter=400)

# %%
# The session
# -----------
t0 = time.perf_counter()
data = make_motor_learning(**data_kw, random_state=0)
print(f"make_motor_learning: {time.perf_counter() - t0:.1f} s, X {data.X.shape}")
X, inputs, epoch = data.X, data.inputs, data.epoch
n_targets = len(data.target_angle)
blocks = data.error.reshape(-1, n_targets).mean(1)
first = {e: int(np.flatnonzero(epoch == e)[0]) // n_targets
         for e in ("baseline", "perturbation", "washout")}
print("error per block (RMS distance from the desired path, unit = reach):")
for e in first:
    n = int(np.sum(epoch == e)) // n_targets
    print(f"  {e:12s} first {blocks[first[e]]:.3f}  "
          f"last {blocks[first[e] + n - 1]:.3f}")

# %%
# CP rank of the weight changes, and rank bounds
# ----------------------------------------------
dW = data.weights - data.weights[0]
curve_dW = tensor_rank_curve(dW, cp_ranks, n_init=2, random_state=0)
curve_W = tensor_rank_curve(data.weights, cp_ranks, n_init=2, random_state=0)
print("CP variance explained, rank:        ", list(cp_ranks))
print("  weight changes W - W[0]:          ", curve_dW.variance_explained.round(3))
print("  weights W:                        ", curve_W.variance_explained.round(3))

N, T = data.X.shape[2], data.X.shape[1]
learning = epoch != "baseline"
n_steps = int(learning.sum()) - 1  # the last trial's update is never in force
tanh_bound = gradient_rank_bounds(N, 3, 2, T, n_steps, init_rank=None)
linear_bound = gradient_rank_bounds(N, 3, 2, T, n_steps, linear=True)
print(f"rank of W - W[0] over the session: bound for tanh (counting) "
      f"{tanh_bound.change_rank}; bound if the units were linear and W[0] = 0: "
      f"{linear_bound.change_rank} (span of input and output weights)")
for rtol in (1e-2, 1e-3):
    print(f"  measured multilinear rank of W - W[0] (rtol={rtol:g}): "
          f"{multilinear_rank(dW[learning], rtol)}; of W[0]: "
          f"{numerical_rank(data.weights[0], rtol)}")

# %%
# Fit LowTensorRankRNN to the activity
# ------------------------------------
# The model sees the units' noisy rates and the task inputs, never the weights.
t0 = time.perf_counter()
est = LowTensorRankRNN(rank=rank, tau=data.tau_bins, random_state=0, **fit_kw)
est.fit(X, inputs=inputs)
print(f"LowTensorRankRNN(rank={rank}) fit: {time.perf_counter() - t0:.1f} s, "
      f"{est.n_iter_} iterations")
C_fit = est.trial_factors_
C_true = tensor_rank_curve(dW, [rank], n_init=2, random_state=0).factors[0][0]
# Centre over trials: the fitted factors also carry the constant pretrained weights.
centred = factor_similarity(C_fit - C_fit.mean(0), C_true - C_true.mean(0))
score, perm = factor_similarity(C_fit - C_fit.mean(0), C_true - C_true.mean(0),
                                return_permutation=True)
order = np.random.RandomState(0).permutation(len(C_fit))
control = factor_similarity(C_fit[order] - C_fit.mean(0), C_true - C_true.mean(0))
patterns = column_space(dW.reshape(len(dW), -1), rank=2)
angles = principal_angles(np.c_[np.ones(len(C_fit)), C_fit], patterns)
print(f"trial-factor similarity with CP(W - W[0]) at rank {rank}: {centred:.3f} "
      f"(shuffled-trial control {control:.3f})")
print(f"angles between the two leading trial patterns of W - W[0] and the span of "
      f"the fitted trial factors: {np.round(angles, 1)} degrees")

# %%
# Held-out rank selection
# -----------------------
# KFold over trials; the score is co-smoothing R^2 on the held-out trials (their
# per-trial parameters inferred from some neurons, the others predicted).
cv = KFold(3, shuffle=True, random_state=0)
t0 = time.perf_counter()
cv_scores = np.array([
    [LowTensorRankRNN(rank=r, tau=data.tau_bins, random_state=0, **cv_kw)
     .fit(X[tr], inputs=inputs[tr]).score(X[te], inputs=inputs[te])
     for tr, te in cv.split(X)] for r in cv_ranks])
best = cv_ranks[int(np.argmax(cv_scores.mean(1)))]
print(f"cross-validation ({time.perf_counter() - t0:.0f} s): mean co-smoothing R^2 "
      f"by rank {dict(zip(cv_ranks, cv_scores.mean(1).round(4).tolist()))}; "
      f"best rank {best}")

# %%
# Figure
# ------
fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
ax = axes[0]
colors = {"baseline": "0.9", "perturbation": "#fbe3c0", "washout": "#d6e6f5"}
for e, c in colors.items():
    k = np.flatnonzero(epoch == e)
    if k.size:
        ax.axvspan(k[0] - 0.5, k[-1] + 0.5, color=c, label=e, lw=0)
ax.plot(data.error, ".", ms=2, color="0.5")
centres = np.arange(len(blocks)) * n_targets + (n_targets - 1) / 2
ax.plot(centres, blocks, "k-", lw=1.5, label="block mean")
ax.set(xlabel="trial", ylabel="reach error (RMS, unit = reach)",
       title="a. learning curve")
ax.legend(fontsize=7, loc="upper right")

ax = axes[1]
ax.plot(cp_ranks, curve_dW.variance_explained, "o-", label="W - W[0]")
ax.plot(cp_ranks, curve_W.variance_explained, "s--", label="W")
ax.set(xlabel="CP rank", ylabel="variance explained", ylim=(0, 1.02),
       title="b. CP rank of the weight tensor")
ax.legend(fontsize=8)

ax = axes[2]
for r in range(rank):
    true = C_true[:, perm[r]] - C_true[:, perm[r]].mean()
    fitted = C_fit[:, r] - C_fit[:, r].mean()
    # Scale (and sign) are not identifiable: least-squares fit of the fitted factor.
    scale = (fitted @ true) / (fitted @ fitted)
    line, = ax.plot(true, lw=2, alpha=0.4)
    ax.plot(scale * fitted, lw=0.8, color=line.get_color())
ax.set(xlabel="trial", ylabel="trial factor (centred)",
       title=f"c. true (thick) vs fitted, similarity {centred:.2f}")

ax = axes[3]
ax.errorbar(cv_ranks, cv_scores.mean(1), cv_scores.std(1), marker="o")
ax.set(xlabel="rank", ylabel="held-out co-smoothing R²",
       title=f"d. cross-validation (best rank {best})")
fig.tight_layout()
path = OUT / "plot_task_trained_rnn.png"
fig.savefig(path, dpi=110)
print(f"saved {path}")
