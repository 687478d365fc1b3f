"""Figures for rank selection, trial factors, latent trajectories and connectivity.

matplotlib is an optional dependency (``pip install sklearn_ltr[plot]``): it is
imported when a function is called, so this module imports without it. Every function
draws on the ``ax`` it is given (or on a new figure), returns the axes and never calls
``plt.show()``.

* :func:`plot_rank_selection` -- cross-validated score against rank, one line per
  estimator, with the best and the one-standard-error ranks marked;
* :func:`plot_trial_factors` -- trial factors over trials, with epochs shaded;
* :func:`plot_latents` -- latent trajectories, coloured by condition or trial;
* :func:`plot_weight_spectrum` -- eigenvalues of the connectivity of every trial,
  computed from the low-rank factors without building the weight matrices
  (:func:`sklearn_ltr.analysis.weight_eigenvalues`, also importable from here).

Markers that carry a result (best rank, one-SE rank, stability boundary) have a
``gid`` (``artist.get_gid()``) so that they can be found again, e.g. in tests.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._pipeline import final_step, through_pipeline
from .analysis import weight_eigenvalues  # math, so in analysis; importable here too

__all__ = [
    "plot_rank_selection", "plot_trial_factors", "plot_latents", "plot_weight_spectrum",
    "weight_eigenvalues",
]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _pyplot(caller):
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            f"{caller} needs matplotlib, an optional dependency of sklearn_ltr; "
            f"install it with: pip install sklearn_ltr[plot]") from None
    return plt


def _new_axes(plt, ax, figsize, projection=None):
    if ax is not None:
        return ax
    fig = plt.figure(figsize=figsize)
    return fig.add_subplot(projection=projection)


def _cycle_colors(plt, n):
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    return [colors[i % len(colors)] for i in range(n)]


def _label_colors(plt, n):
    """Qualitative colours for up to 10 labels, else samples of a sequential map."""
    if n <= 10:
        return list(plt.get_cmap("tab10").colors[:n])
    return list(plt.get_cmap("viridis")(np.linspace(0, 1, n)))


# --------------------------------------------------------------------------- #
# rank selection
# --------------------------------------------------------------------------- #
def plot_rank_selection(results, *, ax=None, param="rank", dodge=0.06,
                        scale="linear"):
    """Cross-validated score against rank, with the best and one-SE ranks marked.

    One line per estimator: mean score over folds with error bars of one standard
    error. An open circle marks the rank with the best mean; a star marks the
    smallest rank whose mean lies within one standard error of the best (the
    one-standard-error rule), the rank to report when larger ones do not score
    reliably better.

    Parameters
    ----------
    results : fitted GridSearchCV, list of dict, pandas DataFrame or Bunch
        Anything :func:`sklearn_ltr.model_selection.rank_selection_summary` accepts:
        a search over ``rank``, the per-fold output of
        :func:`~sklearn_ltr.model_selection.compare_estimators`, or a summary.
    ax : matplotlib Axes, default=None
        Axes to draw on; a new figure when None.
    param : str, default="rank"
        Name of the rank parameter of a search.
    dodge : float, default=0.06
        Horizontal offset between the lines of different estimators, in rank units,
        so that their error bars do not hide each other (0 to disable).
    scale : {'linear', 'residual'}, default='linear'
        'residual' draws ``1 - score`` on a log axis (lower is better), which keeps
        apart scores close to 1 (an R^2 of 0.995 against 0.998).

    Returns
    -------
    ax : matplotlib Axes
        Error bars in ``ax.containers`` (one per estimator, in table order); the
        markers have the gids ``"best_rank:<name>"`` and ``"one_se_rank:<name>"``;
        estimators evaluated without a rank (references such as
        :class:`~sklearn_ltr.ConditionAverage`) are dashed horizontal lines with
        gid ``"reference:<name>"`` over a band of one standard error.

    See Also
    --------
    sklearn_ltr.model_selection.rank_selection_summary : The numbers drawn.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_ltr.plotting import plot_rank_selection
    >>> records = [{"estimator": "TCA", "rank": r, "fold": f, "score": s}
    ...            for r, scores in [(1, [.5, .6]), (2, [.80, .82]), (3, [.81, .82])]
    ...            for f, s in enumerate(scores)]
    >>> ax = plot_rank_selection(records)
    >>> len(ax.containers)
    1
    >>> matplotlib.pyplot.close(ax.figure)
    """
    plt = _pyplot("plot_rank_selection")
    from matplotlib.lines import Line2D

    from .model_selection import rank_selection_summary

    if scale not in ("linear", "residual"):
        raise ValueError(f"scale must be 'linear' or 'residual', got {scale!r}.")
    summary = rank_selection_summary(results, param=param)
    # 'residual': 1 - score on a log axis, where scores near 1 stay apart.
    value = (lambda m: m) if scale == "linear" else (lambda m: 1.0 - np.asarray(m))
    ax = _new_axes(plt, ax, (5.5, 3.8))
    all_ranks = _draw_rank_lines(plt, ax, summary, value, dodge)
    _draw_references(plt, ax, summary, value)
    ax.set_xticks(sorted(all_ranks))
    ax.set_xlabel("rank")
    if scale == "residual":
        ax.set_yscale("log")
        ax.set_ylabel(f"1 - {summary.score_name}, log scale (lower is better)\n"
                      f"(held-out, mean ± SE over folds)")
    else:
        ax.set_ylabel(f"{summary.score_name}\n(held-out, mean ± SE over folds)")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], linestyle="none", marker="o", markersize=10,
                       markerfacecolor="none", color="0.3"),
                Line2D([], [], linestyle="none", marker="*", markersize=12,
                       color="0.3")]
    labels += ["best rank", "one-SE rank"]
    ax.legend(handles, labels, fontsize=8)
    return ax


def _draw_rank_lines(plt, ax, summary, value, dodge):
    """One error-bar line per estimator, best and one-SE ranks marked."""
    names = list(dict.fromkeys(rec["estimator"] for rec in summary.table))
    all_ranks = set()
    for i, (name, color) in enumerate(zip(names, _cycle_colors(plt, len(names)))):
        rows = sorted((r for r in summary.table if r["estimator"] == name),
                      key=lambda r: r["rank"])
        ranks = np.array([r["rank"] for r in rows])
        mean = value(np.array([r["mean"] for r in rows]))
        se = np.array([r["se"] for r in rows])
        all_ranks.update(ranks.tolist())
        shift = dodge * (i - (len(names) - 1) / 2)
        label = name
        if name in summary.one_se_rank:
            label = f"{name} (one-SE rank {summary.one_se_rank[name]})"
        ax.errorbar(ranks + shift, mean, yerr=se, color=color, marker="o",
                    markersize=4, capsize=3, label=label)
        for key, style in [("best_rank", dict(marker="o", markersize=12,
                                               markerfacecolor="none",
                                               markeredgewidth=1.5)),
                           ("one_se_rank", dict(marker="*", markersize=14))]:
            chosen = summary[key].get(name)
            if chosen is None:
                continue
            j = int(np.flatnonzero(ranks == chosen)[0])
            ax.plot([ranks[j] + shift], [mean[j]], linestyle="none", color=color,
                    zorder=3, gid=f"{key}:{name}", **style)
    return all_ranks


def _draw_references(plt, ax, summary, value):
    """Model-free references (no rank): a band of mean +/- SE across the plot."""
    references = summary.get("references", {})
    colors = plt.get_cmap("Greys")(np.linspace(0.45, 0.8, max(len(references), 1)))
    for (name, ref), color in zip(references.items(), colors):
        level = float(value(ref["mean"]))
        ax.axhline(level, color=color, ls="--", lw=1.2, label=name,
                   gid=f"reference:{name}")
        ax.axhspan(level - ref["se"], level + ref["se"], color=color, alpha=0.15,
                   lw=0)


# --------------------------------------------------------------------------- #
# trial factors
# --------------------------------------------------------------------------- #
def _get_trial_factors(estimator):
    if isinstance(estimator, np.ndarray):
        factors = estimator
    else:
        final = final_step(estimator)
        check_is_fitted(final)
        if not hasattr(final, "trial_factors_"):
            raise ValueError(
                f"{type(final).__name__} has no trial factors (trial_factors_): its "
                f"parameters are the same on every trial. Pass a fitted "
                f"LowTensorRankRNN or TCA, or an array of shape (n_trials, rank).")
        factors = final.trial_factors_
    factors = np.asarray(factors, dtype=float)
    if factors.ndim != 2:
        raise ValueError(f"Trial factors must have shape (n_trials, rank), got "
                         f"{factors.shape}.")
    return factors


def _match_components(factors, reference):
    """Pair each reference column with a fitted one and rescale it onto it.

    A CP component is identifiable only up to permutation and scale (and sign):
    columns are paired as :func:`~sklearn_ltr.analysis.factor_similarity` pairs
    them, and each paired reference column is rescaled by least squares onto its
    fitted partner.

    Returns
    -------
    pairs : list of (fitted index, reference index, rescaled reference column)
    """
    from .analysis import factor_similarity

    _, matched = factor_similarity(factors, reference, return_permutation=True)
    pairs = []
    for r, q in enumerate(matched):
        if q < 0:
            continue
        ref = reference[:, q]
        denom = ref @ ref
        scale = (factors[:, r] @ ref) / denom if denom > 0 else 1.0
        pairs.append((r, q, scale * ref))
    return pairs


def plot_trial_factors(estimator, epochs=None, *, ax=None, reference=None):
    """Trial factors over trials, one line per component, with epochs shaded.

    Parameters
    ----------
    estimator : fitted estimator, Pipeline, or ndarray of shape (n_trials, rank)
        A fitted :class:`~sklearn_ltr.LowTensorRankRNN` or :class:`~sklearn_ltr.TCA`
        (or a Pipeline ending in one): its ``trial_factors_`` are drawn. An array
        is drawn as is.
    epochs : array-like of shape (n_trials,), default=None
        A label per trial (e.g. task block or learning phase). Each contiguous run
        of equal labels is shaded, one colour per label, with a legend entry.
    ax : matplotlib Axes, default=None
        Axes to draw on; a new figure when None.
    reference : array-like of shape (n_trials, n_components), default=None
        Ground-truth trial factors (e.g.
        ``make_low_tensor_rank_rnn(...).trial_factors``),
        drawn dashed in the colour of the fitted component each is paired with
        (assignment by the absolute cosine similarity, scale fitted by least
        squares: CP components are defined only up to order and scale). Unpaired
        reference columns are drawn dashed in grey.

    Returns
    -------
    ax : matplotlib Axes
        The fitted components are the first ``rank`` lines of ``ax.lines``; epochs
        are patches with gids ``"epoch:<label>"``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn_ltr.plotting import plot_trial_factors
    >>> factors = np.stack([np.linspace(1, 2, 30), np.ones(30)], axis=1)
    >>> ax = plot_trial_factors(factors, epochs=np.repeat(["early", "late"], 15))
    >>> len(ax.lines), len(ax.patches)
    (2, 2)
    >>> matplotlib.pyplot.close(ax.figure)
    """
    plt = _pyplot("plot_trial_factors")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    factors = _get_trial_factors(estimator)
    n_trials, rank = factors.shape
    ax = _new_axes(plt, ax, (6, 3.5))
    trials = np.arange(n_trials)
    colors = _cycle_colors(plt, rank)
    for r in range(rank):
        ax.plot(trials, factors[:, r], color=colors[r], lw=1.8,
                label=f"component {r + 1}")
    handles, labels = ax.get_legend_handles_labels()

    if reference is not None:
        reference = np.asarray(reference, dtype=float)
        if reference.ndim == 1:
            reference = reference[:, None]
        if reference.ndim != 2 or reference.shape[0] != n_trials:
            raise ValueError(
                f"reference must have shape (n_trials, n_components) = ({n_trials}, "
                f"...), got {reference.shape}.")
        paired = set()
        for r, q, ref in _match_components(factors, reference):
            ax.plot(trials, ref, color=colors[r], lw=1.2, ls="--",
                    gid=f"reference:{q}")
            paired.add(q)
        for q in sorted(set(range(reference.shape[1])) - paired):
            ax.plot(trials, reference[:, q], color="0.5", lw=1.0, ls="--",
                    gid=f"reference:{q}")
        handles.append(Line2D([], [], color="0.3", ls="--"))
        labels.append("reference (matched)")

    if epochs is not None:
        epochs = np.asarray(epochs)
        if epochs.shape != (n_trials,):
            raise ValueError(
                f"epochs must hold one label per trial: expected shape ({n_trials},), "
                f"got {epochs.shape}.")
        starts = np.flatnonzero(np.r_[True, epochs[1:] != epochs[:-1]])
        stops = np.r_[starts[1:], n_trials]
        unique = list(dict.fromkeys(epochs[starts].tolist()))
        shade = dict(zip(unique, _label_colors(plt, len(unique))))
        for start, stop in zip(starts, stops):
            label = epochs[start].item()
            ax.axvspan(start - 0.5, stop - 0.5, color=shade[label], alpha=0.15, lw=0,
                       zorder=0, gid=f"epoch:{label}")
        handles += [Patch(color=shade[lab], alpha=0.3) for lab in unique]
        labels += [str(lab) for lab in unique]

    ax.set_xlim(-0.5, n_trials - 0.5)
    ax.set_xlabel("trial")
    ax.set_ylabel("trial factor")
    ax.legend(handles, labels, fontsize=8, ncol=2 if len(labels) > 4 else 1)
    return ax


# --------------------------------------------------------------------------- #
# latent trajectories
# --------------------------------------------------------------------------- #
def _latents(estimator, X, y, inputs):
    final, X = through_pipeline(estimator, X)
    kwargs = {} if inputs is None else {"inputs": inputs}
    # Conditions select per-condition initial states only in models fitted with them.
    if y is not None and getattr(final, "conditions_", None) is not None:
        return final.transform(X, y, **kwargs)
    return final.transform(X, **kwargs)


def plot_latents(estimator, X, y=None, *, ax=None, dims=None, single_trials=None,
                 inputs=None):
    """Latent trajectories ``estimator.transform(X)`` in two or three latent dimensions.

    With condition labels ``y``, the mean trajectory of each condition is drawn in
    its own colour (start marked by a dot), over thin single trials if asked. Without
    labels, every trial is drawn thin and coloured by its index, which shows how the
    trajectories move over learning.

    Parameters
    ----------
    estimator : fitted estimator or Pipeline
        A fitted model of this package whose ``transform`` returns latents of shape
        (n_trials, n_timepoints, rank).
    X : array-like of shape (n_trials, n_timepoints, n_neurons)
        Trials to embed (seen in fit or new).
    y : array-like of shape (n_trials,), default=None
        Condition labels; also passed to ``transform`` for models fitted with
        per-condition initial states.
    ax : matplotlib Axes, default=None
        Axes to draw on (a 3D axes for three dims); a new figure when None.
    dims : sequence of 1 to 3 int, default=None
        Latent dimensions to draw; by default the first two (the first one, against
        time, for rank-1 models). One dimension is drawn against time.
    single_trials : bool, default=None
        Draw every trial as a thin line (coloured by trial index without ``y``, with a
        colour bar). Default: True without ``y``, False with it. Without ``y`` and
        with ``single_trials=False``, the mean over all trials is drawn.
    inputs : array-like of shape (n_trials, n_timepoints, n_inputs), default=None
        External inputs, for models fitted with them.

    Returns
    -------
    ax : matplotlib Axes
        The condition means are the last ``n_conditions`` lines of ``ax.lines``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_ltr import TrialPCA
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> from sklearn_ltr.plotting import plot_latents
    >>> data = make_low_tensor_rank_rnn(20, 12, 8, rank=2, random_state=0)
    >>> ax = plot_latents(TrialPCA(rank=2).fit(data.X), data.X, data.y)
    >>> len(ax.lines)  # one mean trajectory per condition
    4
    >>> matplotlib.pyplot.close(ax.figure)
    """
    plt = _pyplot("plot_latents")
    latents = np.asarray(_latents(estimator, X, y, inputs))
    if latents.ndim != 3:
        raise ValueError(
            f"plot_latents needs latents of shape (n_trials, n_timepoints, rank) from "
            f"{type(final_step(estimator)).__name__}.transform, got "
            f"{latents.shape}.")
    n_trials, n_timepoints, rank = latents.shape
    if dims is None:
        dims = (0, 1) if rank >= 2 else (0,)
    dims = [int(d) for d in dims]
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"dims must name 1, 2 or 3 latent dimensions, got {dims}.")
    bad = [d for d in dims if not 0 <= d < rank]
    if bad:
        raise ValueError(
            f"dims={dims} is out of range for a model of rank {rank}: use dimensions "
            f"in [0, {rank - 1}].")
    if y is not None:
        y = np.asarray(y)
        if y.shape != (n_trials,):
            raise ValueError(
                f"y must hold one condition label per trial: expected shape "
                f"({n_trials},), got {y.shape}.")
    if single_trials is None:
        single_trials = y is None

    projection = "3d" if len(dims) == 3 else None
    if ax is not None and len(dims) == 3 and getattr(ax, "name", "") != "3d":
        raise ValueError("Three dims need a 3D axes: create it with "
                         "fig.add_subplot(projection='3d'), or pass ax=None.")
    ax = _new_axes(plt, ax, (5, 4.5) if projection else (5, 4), projection)

    def coords(traj):  # traj: (n_timepoints, rank)
        if len(dims) == 1:
            return np.arange(n_timepoints), traj[:, dims[0]]
        return tuple(traj[:, d] for d in dims)

    if y is None and not single_trials:
        ax.plot(*coords(latents.mean(axis=0)), color="k", lw=2.2, marker="o",
                markevery=[0], label="mean of all trials")
        ax.legend(fontsize=8)
    elif y is None:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        cmap = plt.get_cmap("viridis")
        colors = cmap(np.linspace(0, 1, max(n_trials, 2)))[:n_trials]
        for k in range(n_trials):
            ax.plot(*coords(latents[k]), color=colors[k], lw=0.8, alpha=0.7)
        mappable = ScalarMappable(Normalize(0, max(n_trials - 1, 1)), cmap)
        ax.figure.colorbar(mappable, ax=ax, label="trial", shrink=0.8)
    else:
        labels = list(dict.fromkeys(y.tolist()))
        colors = _label_colors(plt, len(labels))
        if single_trials:
            for k in range(n_trials):
                ax.plot(*coords(latents[k]), color=colors[labels.index(y[k].item())],
                        lw=0.5, alpha=0.35)
        for label, color in zip(labels, colors):
            mean = latents[y == label].mean(axis=0)
            ax.plot(*coords(mean), color=color, lw=2.2, marker="o", markevery=[0],
                    label=str(label))
        ax.legend(title="condition", fontsize=8)

    if len(dims) == 1:
        ax.set_xlabel("time bin")
        ax.set_ylabel(f"latent {dims[0] + 1}")
    else:
        ax.set_xlabel(f"latent {dims[0] + 1}")
        ax.set_ylabel(f"latent {dims[1] + 1}")
        if len(dims) == 3:
            ax.set_zlabel(f"latent {dims[2] + 1}")
    return ax


# --------------------------------------------------------------------------- #
# connectivity spectrum
# --------------------------------------------------------------------------- #
def plot_weight_spectrum(estimator, trials=None, *, ax=None, dynamics="continuous",
                         cmap="viridis"):
    """Eigenvalues of each trial's connectivity in the complex plane, coloured by trial.

    Shows how learning moves the network's dynamical modes: eigenvalues that cross
    the stability boundary give persistent or growing activity, complex pairs give
    rotations. Only the ``rank`` non-zero eigenvalues of each ``W_k`` are drawn,
    computed from the factors (see :func:`~sklearn_ltr.analysis.weight_eigenvalues`);
    the weight tensor is never built.

    Parameters
    ----------
    estimator : fitted LowTensorRankRNN or LowRankRNN, or a Pipeline ending in one
        The network.
    trials : array-like of int, default=None
        Fitted trials to draw; all by default.
    ax : matplotlib Axes, default=None
        Axes to draw on; a new figure when None.
    dynamics : {'continuous', 'discrete'}, default='continuous'
        'continuous': eigenvalues lambda of ``W_k``, with the line Re lambda = 1; the
        origin of ``tau dx/dt = -x + W_k tanh(x)`` (Jacobian ``(W_k - I) / tau``
        there) is stable when every eigenvalue lies left of it. 'discrete':
        eigenvalues ``1 - alpha + alpha * lambda`` (alpha = 1 / tau) of the Jacobian
        at the origin of the Euler step the model is simulated with, with the unit
        circle: the origin is stable when every eigenvalue lies inside it.
    cmap : str or Colormap, default="viridis"
        Colour map of the trial index.

    Returns
    -------
    ax : matplotlib Axes
        The eigenvalues are ``ax.collections[0]``; the stability boundary is the
        line with gid ``"stability_boundary"``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_ltr import LowTensorRankRNN
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> from sklearn_ltr.plotting import plot_weight_spectrum
    >>> data = make_low_tensor_rank_rnn(10, 8, 6, rank=2, random_state=0)
    >>> est = LowTensorRankRNN(rank=2, n_units=12, max_iter=5).fit(data.X)
    >>> ax = plot_weight_spectrum(est)
    >>> ax.collections[0].get_offsets().shape  # 10 trials x 2 eigenvalues
    (20, 2)
    >>> matplotlib.pyplot.close(ax.figure)
    """
    plt = _pyplot("plot_weight_spectrum")
    if dynamics not in ("continuous", "discrete"):
        raise ValueError(f"dynamics must be 'continuous' or 'discrete', got "
                         f"{dynamics!r}.")
    eig, trials = weight_eigenvalues(estimator, trials)
    final = final_step(estimator)
    if dynamics == "discrete":
        alpha = 1.0 / final.tau
        eig = 1.0 - alpha + alpha * eig
    ax = _new_axes(plt, ax, (5, 4))
    varying = hasattr(final, "trial_factors_")
    color = np.repeat(trials, eig.shape[1])
    points = ax.scatter(eig.real.ravel(), eig.imag.ravel(),
                        c=color if varying else None,
                        cmap=cmap if varying else None, s=14, zorder=3,
                        vmin=0 if varying else None,
                        vmax=(final.trial_factors_.shape[0] - 1) if varying else None)
    if varying:
        ax.figure.colorbar(points, ax=ax, label="trial")
    if dynamics == "continuous":
        ax.axvline(1.0, color="k", ls="--", lw=1, gid="stability_boundary",
                   label="Re λ = 1 (stability edge)")
        ax.set_xlabel("Re λ(W)")
        ax.set_ylabel("Im λ(W)")
    else:
        theta = np.linspace(0, 2 * np.pi, 256)
        ax.plot(np.cos(theta), np.sin(theta), color="k", ls="--", lw=1,
                gid="stability_boundary", label="|λ| = 1 (stability edge)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("Re λ (Euler step)")
        ax.set_ylabel("Im λ (Euler step)")
    ax.axhline(0.0, color="0.8", lw=0.8, zorder=0)
    ax.legend(fontsize=8, loc="best")
    return ax
