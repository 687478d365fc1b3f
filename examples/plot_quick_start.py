"""
Quick start: fit a low-tensor-rank RNN to planted data
======================================================

Planted data come from a network whose connectivity changes over trials within a
rank-3 tensor (:func:`sklearn_ltr.datasets.make_low_tensor_rank_rnn`): each component
of the weights waxes or wanes along its own learning curve. We fit
:class:`sklearn_ltr.LowTensorRankRNN` to most trials, then on the held-out trials

* ``transform`` gives latent trajectories (n_trials, n_timepoints, rank),
* ``predict`` reconstructs the recorded neurons,
* ``score`` is the leak-free co-smoothing R² (each neuron predicted from parameters
  inferred without it).

The figure shows the fitted trial factors against the planted ones (matched up to
order and scale, which a CP decomposition cannot fix), the latent trajectories of
held-out trials by condition, the eigenvalues of every trial's weight matrix, and one
held-out neuron with its co-smoothed prediction.

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
from scipy.optimize import linear_sum_assignment  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from sklearn_ltr import LowTensorRankRNN  # noqa: E402
from sklearn_ltr.datasets import make_low_tensor_rank_rnn  # noqa: E402
from sklearn_ltr.metrics import cosmoothing_folds  # noqa: E402
from sklearn_ltr.plotting import (  # noqa: E402
    plot_latents,
    plot_trial_factors,
    plot_weight_spectrum,
)

torch.set_num_threads(1)
FAST = os.environ.get("SKLEARN_LTR_EXAMPLES_FAST", "") not in ("", "0")
OUT = Path(os.environ.get("SKLEARN_LTR_EXAMPLES_OUT", "."))
OUT.mkdir(parents=True, exist_ok=True)

# %%
# Planted data
# ------------
# Trials in the order they happened; conditions (4 targets) cycle over trials.
if FAST:
    # Few iterations: the fit stops at max_iter on purpose.
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    sizes = dict(n_trials=30, n_timepoints=15, n_neurons=12)
    model_kw = dict(n_units=20, max_iter=80, infer_max_iter=50)
else:
    sizes = dict(n_trials=100, n_timepoints=30, n_neurons=40)
    model_kw = dict(n_units=60, max_iter=1000)
RANK = 3
data = make_low_tensor_rank_rnn(**sizes, rank=RANK, noise=0.2, random_state=0)
X, y = data.X, data.y

# Every fifth trial is held out; the others are fitted. Trial factors exist for the
# fitted trials, so the planted factors are compared on those.
test = np.arange(len(X)) % 5 == 4
train = ~test

# %%
# Fit, transform, predict, score
# ------------------------------
est = LowTensorRankRNN(rank=RANK, trial_length_scale=10.0, random_state=0, **model_kw)
t0 = time.perf_counter()
est.fit(X[train])
fit_time = time.perf_counter() - t0

latents = est.transform(X[test])
X_hat = est.predict(X[test])
score = est.score(X[test])

# Agreement of the fitted trial factors with the planted ones, after pairing the
# components (their order is arbitrary) by maximal total |correlation|.
planted = data.trial_factors[train]
fitted = est.trial_factors_
corr = np.abs(np.corrcoef(fitted.T, planted.T)[:RANK, RANK:])
rows, cols = linear_sum_assignment(-corr)
paired_corr = corr[rows, cols]

print(f"X: {X.shape} (trials x time bins x neurons), planted rank {RANK}; "
      f"{train.sum()} trials fitted, {test.sum()} held out")
print(f"fit: {est.n_iter_} iterations in {fit_time:.1f} s, final loss "
      f"{est.loss_curve_[-1]:.4f}")
print(f"transform(X_test): {latents.shape}, predict(X_test): {X_hat.shape}")
print(f"co-smoothing R^2 on held-out trials: {score:.3f}")
print("|correlation| of each fitted trial factor with its paired planted one: "
      + ", ".join(f"{c:.2f} (planted {q + 1})" for c, q in zip(paired_corr, cols)))

# %%
# Figure
# ------
fig, axes = plt.subplots(2, 2, figsize=(11, 8))
plot_trial_factors(est, ax=axes[0, 0], reference=planted)
axes[0, 0].set_title("trial factors: fitted (solid) vs planted (dashed, matched)")

plot_latents(est, X[test], y[test], ax=axes[0, 1], single_trials=True)
axes[0, 1].set_title("latent trajectories of held-out trials, by condition")

plot_weight_spectrum(est, ax=axes[1, 0])
axes[1, 0].set_title("eigenvalues of $W_k$ for every fitted trial")

# A held-out neuron, predicted from parameters inferred without it (co-smoothing), and
# the reconstruction from all neurons.
neuron = 0
fold = cosmoothing_folds(X.shape[2], est.cosmoothing_folds)
X_held = X[test].copy()
X_held[:, :, fold == fold[neuron]] = np.nan
X_cosmooth = est.predict(X_held)
ax = axes[1, 1]
t = np.arange(X.shape[1])
for i, k in enumerate(range(min(3, test.sum()))):
    color = f"C{i}"
    ax.plot(t, X[test][k, :, neuron], "o", ms=3, color=color, alpha=0.6)
    ax.plot(t, X_hat[k, :, neuron], color=color, lw=1, ls=":")
    ax.plot(t, X_cosmooth[k, :, neuron], color=color, lw=1.8,
            label=f"held-out trial {np.flatnonzero(test)[k]}")
ax.plot([], [], "o", color="0.4", ms=3, label="recorded")
ax.plot([], [], ":", color="0.4", label="predict (all neurons)")
ax.plot([], [], "-", color="0.4", label="co-smoothed (neuron held out)")
ax.set_xlabel("time bin")
ax.set_ylabel(f"neuron {neuron}")
ax.set_title(f"neuron {neuron}, held-out trials (co-smoothing R² = {score:.2f})")
lo, hi = ax.get_ylim()
ax.set_ylim(lo, hi + 0.45 * (hi - lo))  # room for the legend above the traces
ax.legend(fontsize=7, ncol=2, loc="upper center")

fig.tight_layout()
path = OUT / "plot_quick_start.png"
fig.savefig(path, dpi=110)
print(f"wrote {path}")
