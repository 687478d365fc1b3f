"""Weight tensors over learning: CP rank, factor and subspace recovery, rank bounds.

The tools behind the paper's validation (Pellegrino, Cayco-Gajic & Chadwick, NeurIPS
2023): is the stack of weight matrices of a network over learning a low-rank tensor
(:func:`tensor_rank_curve`, :func:`numerical_rank`, :func:`multilinear_rank`), does a
fitted :class:`~sklearn_ltr.LowTensorRankRNN` recover it (:func:`factor_similarity`,
:func:`principal_angles`, :func:`column_space`, :func:`latent_subspace`), how do the
fitted network's dynamical modes move over learning (:func:`weight_eigenvalues`), and
what rank does gradient-descent learning allow in the first place
(:func:`gradient_rank_bounds`).

Weight tensors have shape ``(n_trials, n_units, n_units)``: slice ``W[k]`` is the
weight matrix in force on trial ``k``, ``W[k][i, j]`` the weight from unit ``j`` to
unit ``i``.
"""

from numbers import Integral

import numpy as np
from scipy.linalg import subspace_angles
from scipy.optimize import linear_sum_assignment
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_is_fitted

from ._cp import fit_best_cp
from ._pipeline import final_step
from ._torch_utils import limit_threads

__all__ = [
    "tensor_rank_curve", "factor_similarity", "principal_angles", "column_space",
    "latent_subspace", "numerical_rank", "multilinear_rank", "gradient_rank_bounds",
    "weight_eigenvalues",
    "schedule_curves", "trial_factor_recovery", "connectivity_recovery",
]


def _check_positive_int(name, value, *, minimum=1, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_tensor3(tensor, name="tensor"):
    T = np.asarray(tensor, dtype=np.float64)
    if T.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D array, e.g. weights of shape (n_trials, n_units, "
            f"n_units); got an array of shape {T.shape}.")
    if not np.isfinite(T).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return T


def _unfold(T, mode):
    """Mode-``mode`` unfolding: the fibres along ``mode`` as columns."""
    return np.moveaxis(T, mode, 0).reshape(T.shape[mode], -1)


# --------------------------------------------------------------------------- #
# numerical ranks
# --------------------------------------------------------------------------- #
def _default_rtol(shape, dtype):
    eps = np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps
    return max(shape) * eps


def numerical_rank(M, rtol=None):
    """Number of singular values of a matrix above ``rtol`` times the largest one.

    Parameters
    ----------
    M : array-like of shape (m, n)
        Matrix.
    rtol : float or None, default=None
        Relative tolerance. None uses ``max(m, n) * eps`` of the array's floating
        dtype (the convention of :func:`numpy.linalg.matrix_rank`), suited to exact
        computations; matrices obtained by training in float32 or with a
        nonlinearity need a larger, stated tolerance (e.g. 1e-3 for an "effective"
        rank).

    Returns
    -------
    rank : int
        0 for a zero matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.analysis import numerical_rank
    >>> rng = np.random.RandomState(0)
    >>> numerical_rank(rng.randn(6, 2) @ rng.randn(2, 5))
    2
    """
    M = np.asarray(M)
    if M.ndim != 2:
        raise ValueError(f"M must be a 2D matrix, got an array of shape {M.shape}.")
    if M.size == 0:
        return 0
    if rtol is None:
        rtol = _default_rtol(M.shape, M.dtype)
    if not rtol >= 0:
        raise ValueError(f"rtol must be a non-negative float, got {rtol!r}.")
    s = np.linalg.svd(np.asarray(M, dtype=np.float64), compute_uv=False)
    if s[0] == 0:
        return 0
    return int(np.sum(s > rtol * s[0]))


def multilinear_rank(tensor, rtol=None):
    """Multilinear (Tucker) rank: the numerical rank of each mode unfolding.

    Parameters
    ----------
    tensor : array-like of shape (n0, n1, n2)
        A 3-tensor, e.g. weights over trials ``(n_trials, n_units, n_units)``.
    rtol : float or None, default=None
        Relative tolerance of :func:`numerical_rank`, applied to each unfolding. None
        uses ``max(unfolding.shape) * eps``.

    Returns
    -------
    ranks : tuple of 3 int
        For weights over trials: the number of independent trial-mode patterns, the
        dimension of the union of the column spaces, and that of the row spaces.

    Notes
    -----
    A tensor of multilinear rank ``(r0, r1, r2)`` has CP rank at most
    ``min(r0 * r1, r0 * r2, r1 * r2)`` (expand its Tucker core along its largest mode).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.analysis import multilinear_rank
    >>> rng = np.random.RandomState(0)
    >>> c, a, b = rng.randn(10, 2), rng.randn(8, 2), rng.randn(8, 2)
    >>> multilinear_rank(np.einsum("kr,ir,jr->kij", c, a, b))
    (2, 2, 2)
    """
    T = np.asarray(tensor)
    if T.ndim != 3:
        raise ValueError(f"tensor must be 3D, got an array of shape {T.shape}.")
    return tuple(numerical_rank(_unfold(T, m), rtol) for m in range(3))


# --------------------------------------------------------------------------- #
# CP rank of a weight tensor
# --------------------------------------------------------------------------- #
def tensor_rank_curve(tensor, ranks, *, n_init=3, max_iter=300, tol=1e-7,
                      compress_tol=1e-8, random_state=None, n_threads=1):
    """Fraction of a 3-tensor's sum of squares explained by CP fits of each rank.

    For each rank R, fits ``tensor ~ sum_r c_r (x) a_r (x) b_r`` by alternating least
    squares (:func:`tensorly.decomposition.parafac`) from ``n_init`` random
    initialisations and keeps the best fit. The curve answers "how many components
    does learning need?" (Pellegrino et al., 2023, Fig. 2): apply it to the weight
    changes ``W - W[0]`` to measure the rank of learning itself, or to the weights
    ``W`` to count the trial-invariant components as well (each rank-r part of
    ``W[0]`` costs r constant components).

    Parameters
    ----------
    tensor : array-like of shape (n_trials, n_units, n_units)
        The tensor, trials along axis 0 (any 3-tensor works).
    ranks : int or sequence of int
        CP ranks to fit (each >= 1).
    n_init : int, default=3
        Random initialisations per rank; ALS finds local optima, so a single start
        may under-report the variance a rank can explain.
    max_iter : int, default=300
        Maximum ALS iterations per initialisation.
    tol : float, default=1e-7
        ALS stops when the relative reconstruction error changes by less than this.
    compress_tol : float or None, default=1e-8
        Before fitting, each mode is projected on its leading singular vectors,
        dropping at most this fraction of the tensor's sum of squares per mode, and
        the CP model is fitted to the small core and expanded back (CANDELINC,
        Carroll et al., 1980): the optimal factors lie in those subspaces, so this
        changes the variance explained by at most ``3 * compress_tol`` and makes ALS
        an order of magnitude faster on weight tensors, whose modes are far from
        full rank. None fits the full tensor.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisations (a local generator).
    n_threads : int or None, default=1
        BLAS threads during the fits (restored afterwards); None leaves them alone.

    Returns
    -------
    result : Bunch
        ``ranks`` (n_ranks,) int; ``variance_explained`` (n_ranks,):
        ``1 - ||T - T_R||^2 / ||T||^2`` for the best rank-R fit ``T_R`` (uncentred:
        the reference is the zero tensor, natural for weight changes, which start at
        zero); ``factors``: for each rank, a list ``[C, A, B]`` of factor matrices of
        shapes (n0, R), (n1, R), (n2, R) with ``T_R = sum_r C[:, r] (x) A[:, r] (x)
        B[:, r]``; the columns of A and B have unit norm and their largest-magnitude
        entry is positive, the scale and sign are carried by C; components are sorted
        by decreasing norm (the normal form of :class:`~sklearn_ltr.TCA`'s factors).

    Raises
    ------
    ValueError
        Invalid arguments; a rank that the tensor cannot support (alternating least
        squares met a singular system).

    See Also
    --------
    factor_similarity : Compare the factors with those of a fitted model.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.analysis import tensor_rank_curve
    >>> rng = np.random.RandomState(0)
    >>> C, A, B = rng.rand(12, 2), rng.randn(6, 2), rng.randn(6, 2)
    >>> T = np.einsum("kr,ir,jr->kij", C, A, B)
    >>> curve = tensor_rank_curve(T, [1, 2], random_state=0)
    >>> bool(curve.variance_explained[1] > 0.999)
    True
    """
    T = _check_tensor3(tensor)
    if isinstance(ranks, Integral):
        ranks = [ranks]
    ranks = [_check_positive_int("each rank", r) for r in ranks]
    n_init = _check_positive_int("n_init", n_init)
    max_iter = _check_positive_int("max_iter", max_iter)
    rng = check_random_state(random_state)
    total = float(np.sum(T ** 2))
    if total == 0:
        raise ValueError("tensor is identically zero; its CP rank curve is undefined.")
    if compress_tol is not None and not 0 <= compress_tol < 1:
        raise ValueError(
            f"compress_tol must be in [0, 1) or None, got {compress_tol!r}.")
    variance, factors_out = [], []
    with limit_threads(n_threads):
        bases = _compression_bases(T, compress_tol)
        for R in ranks:
            # One seed per initialisation: each fit is reproducible by itself.
            seeds = [rng.randint(np.iinfo(np.int32).max) for _ in range(n_init)]
            fit = fit_best_cp(T, R, random_states=seeds, max_iter=max_iter, tol=tol,
                              bases=bases, name="tensor_rank_curve",
                              data_name="tensor")
            variance.append(1.0 - fit.sse / total)
            factors_out.append(fit.factors)
    return Bunch(ranks=np.array(ranks), variance_explained=np.array(variance),
                 factors=factors_out)


def _compression_bases(T, compress_tol):
    """Orthonormal bases of each mode keeping all but ``compress_tol`` of the energy."""
    bases = []
    for mode in range(3):
        M = _unfold(T, mode)
        if compress_tol is None:
            bases.append(np.eye(M.shape[0]))
            continue
        # Eigenvectors of the Gram matrix: the unfoldings are short and very wide.
        evals, evecs = np.linalg.eigh(M @ M.T)
        evals, evecs = np.clip(evals[::-1], 0, None), evecs[:, ::-1]
        dropped = 1.0 - np.cumsum(evals) / evals.sum()
        keep = int(np.searchsorted(-dropped, -compress_tol)) + 1
        bases.append(evecs[:, :min(keep, M.shape[0])])
    return bases


# --------------------------------------------------------------------------- #
# factor and subspace recovery
# --------------------------------------------------------------------------- #
def _as_factor_list(F, name):
    if isinstance(F, np.ndarray) and F.ndim == 2:
        return [np.asarray(F, dtype=np.float64)]
    if isinstance(F, np.ndarray):
        raise ValueError(
            f"{name} must be a factor matrix of shape (n, rank) or a sequence of them, "
            f"got an array of shape {F.shape}.")
    out = [np.asarray(f, dtype=np.float64) for f in F]
    if not out or any(f.ndim != 2 for f in out):
        raise ValueError(
            f"{name} must be a factor matrix of shape (n, rank) or a non-empty "
            f"sequence of such matrices (one per mode).")
    if len({f.shape[1] for f in out}) != 1:
        raise ValueError(
            f"The factor matrices of {name} have different numbers of columns "
            f"{[f.shape[1] for f in out]}; each mode must have one column per "
            f"component.")
    return out


def _unit_columns(F):
    norm = np.linalg.norm(F, axis=0)
    # A zero column has no direction; it matches nothing (similarity 0).
    return np.divide(F, norm, out=np.zeros_like(F), where=norm > 0)


def factor_similarity(A, B, *, return_permutation=False):
    """Similarity of two sets of factors, up to permutation, scaling and sign.

    Each column of ``A`` (a component) is matched to at most one column of ``B`` so as
    to maximise the total similarity (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`). The similarity of a pair of
    components is the absolute cosine between their columns; for CP factors (one
    matrix per mode) it is the product of the absolute cosines over the modes, as in
    the score used to compare tensor decompositions (Williams et al., 2018).

    Parameters
    ----------
    A, B : ndarray of shape (n, R_A) and (n, R_B), or sequences of them
        Factor matrices, components along columns: e.g. fitted
        ``trial_factors_`` and ground-truth trial factors, or the CP factors
        ``[C, A, B]`` of two decompositions of the same tensor (same modes, same
        order).

    return_permutation : bool, default=False
        Also return the matching.

    Returns
    -------
    score : float
        In [0, 1]: the mean matched similarity over ``max(R_A, R_B)`` components,
        i.e. components left unmatched (when ``R_A != R_B``) count as zero. 1 means
        the same components up to order, scale and sign.
    permutation : ndarray of shape (R_A,) of int
        Returned when ``return_permutation=True``: the column of ``B`` matched to each
        column of ``A``, -1 where unmatched.

    Notes
    -----
    Signs are ignored mode by mode (absolute cosines), which is more permissive than
    CP's own indeterminacy (sign flips in pairs of modes). Scale is ignored because
    it is not identifiable between modes (and the estimators normalise it
    differently).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.analysis import factor_similarity
    >>> rng = np.random.RandomState(0)
    >>> C = rng.randn(30, 3)
    >>> round(factor_similarity(C, -2.0 * C[:, [2, 0, 1]]), 6)
    1.0
    >>> score, perm = factor_similarity(C, C[:, [2, 0, 1]], return_permutation=True)
    >>> perm
    array([1, 2, 0])
    """
    FA = _as_factor_list(A, "A")
    FB = _as_factor_list(B, "B")
    if len(FA) != len(FB):
        raise ValueError(
            f"A has {len(FA)} mode(s) but B has {len(FB)}; compare factors of the same "
            f"modes.")
    for m, (fa, fb) in enumerate(zip(FA, FB)):
        if fa.shape[0] != fb.shape[0]:
            raise ValueError(
                f"Mode {m} has {fa.shape[0]} rows in A but {fb.shape[0]} in B; factors "
                f"must describe the same trials (or units) in the same order.")
        if not (np.isfinite(fa).all() and np.isfinite(fb).all()):
            raise ValueError(f"Mode {m} factors contain NaN or infinite values.")
    R_A, R_B = FA[0].shape[1], FB[0].shape[1]
    S = np.ones((R_A, R_B))
    for fa, fb in zip(FA, FB):
        S = S * np.abs(_unit_columns(fa).T @ _unit_columns(fb))
    rows, cols = linear_sum_assignment(S, maximize=True)
    denom = max(R_A, R_B)
    score = float(np.clip(S[rows, cols].sum() / denom, 0.0, 1.0)) if denom else 0.0
    if not return_permutation:
        return score
    perm = -np.ones(R_A, dtype=int)
    perm[rows] = cols
    return score, perm


def principal_angles(U, V, *, degrees=True):
    """Principal angles between the column spaces of two matrices, smallest first.

    Parameters
    ----------
    U, V : array-like of shape (n, p) and (n, q)
        Matrices whose column spaces are compared (they need not be orthonormal).
    degrees : bool, default=True
        Angles in degrees (else radians).

    Returns
    -------
    angles : ndarray of shape (min(p, q),)
        In ascending order: 0 for a direction shared by both spaces, 90 degrees for
        directions of the smaller space orthogonal to the other one. Computed by
        :func:`scipy.linalg.subspace_angles` (accurate for small angles too).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.analysis import principal_angles
    >>> principal_angles(np.eye(3)[:, :2], np.eye(3)[:, 1:]).round(6)
    array([ 0., 90.])
    """
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    if U.ndim != 2 or V.ndim != 2 or U.shape[0] != V.shape[0]:
        raise ValueError(
            f"U and V must be 2D with the same number of rows (the ambient dimension), "
            f"got shapes {U.shape} and {V.shape}.")
    angles = np.sort(subspace_angles(U, V))
    return np.degrees(angles) if degrees else angles


def column_space(M, rank=None, *, rtol=None):
    """Orthonormal basis of the dominant column space of a matrix or weight tensor.

    Parameters
    ----------
    M : array-like of shape (n, m) or (n_trials, n_units, n_units)
        A matrix, or a stack of matrices (weights or weight changes over trials),
        whose column spaces are pooled: the column space of the mode-1 unfolding
        ``[M[0], M[1], ...]``, i.e. the span of every output direction used on any
        trial.
    rank : int or None, default=None
        Dimension of the returned subspace (the leading left singular vectors). None
        uses :func:`numerical_rank` with ``rtol``.
    rtol : float or None, default=None
        Relative tolerance when ``rank`` is None.

    Returns
    -------
    basis : ndarray of shape (n, rank)
        Orthonormal columns.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.analysis import column_space
    >>> rng = np.random.RandomState(0)
    >>> column_space(rng.randn(5, 2) @ rng.randn(2, 7)).shape
    (5, 2)
    """
    M = np.asarray(M, dtype=np.float64)
    if M.ndim == 3:
        M = np.concatenate(list(M), axis=1)
    if M.ndim != 2:
        raise ValueError(
            f"M must be a matrix or a 3D stack of matrices, got shape {M.shape}.")
    U, s, _ = np.linalg.svd(M, full_matrices=False)
    if rank is None:
        rank = numerical_rank(M, rtol)
    rank = _check_positive_int("rank", rank, minimum=0)
    if rank > U.shape[1]:
        raise ValueError(f"rank={rank} exceeds the dimension of M's column space "
                         f"(at most {U.shape[1]}).")
    return U[:, :rank]


def latent_subspace(estimator):
    """Subspace of recorded-neuron space in which a fitted network's connectivity acts.

    The fitted network's state lives in the column space of its left factors,
    ``x = A kappa``, and reaches the recorded neurons as ``D tanh(A kappa) + d``. To
    first order in the state (``tanh(x) ~ x``, accurate for the moderate activity these
    models fit), every change of connectivity ``a_r b_r^T`` moves the recorded
    activity along ``D a_r``; the column space of ``D A`` is therefore the fitted
    counterpart of the ground-truth column space of the weights (or of the weight
    changes) seen through the same recording. Unlike the fitted network's units,
    which are arbitrary, this subspace is identifiable and comparable across models
    with :func:`principal_angles`.

    Parameters
    ----------
    estimator : fitted LowTensorRankRNN or LowRankRNN
        Any estimator with ``readout_`` (n_neurons, n_units) and ``left_factors_``
        (n_units, rank).

    Returns
    -------
    basis : ndarray of shape (n_neurons, rank)
        Orthonormal basis of the column space of ``readout_ @ left_factors_`` (fewer
        columns if that product is rank-deficient).

    Examples
    --------
    >>> from sklearn_ltr import LowRankRNN
    >>> from sklearn_ltr.analysis import latent_subspace
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> data = make_low_tensor_rank_rnn(n_trials=10, n_timepoints=8, n_neurons=6,
    ...                                 rank=2, random_state=0)
    >>> est = LowRankRNN(rank=2, n_units=10, max_iter=20, random_state=0).fit(data.X)
    >>> latent_subspace(est).shape
    (6, 2)
    """
    for attr in ("readout_", "left_factors_"):
        if not hasattr(estimator, attr):
            raise ValueError(
                f"{type(estimator).__name__} has no attribute {attr!r}; pass a fitted "
                f"LowTensorRankRNN or LowRankRNN.")
    L = np.asarray(estimator.readout_) @ np.asarray(estimator.left_factors_)
    return column_space(L, rtol=1e-10)


# --------------------------------------------------------------------------- #
# connectivity spectrum
# --------------------------------------------------------------------------- #
def weight_eigenvalues(estimator, trials=None):
    """Non-zero eigenvalues of the weight matrix of each trial, from the factors.

    ``W_k = A diag(c_k) B^T / n_units`` has rank at most R, and its non-zero
    eigenvalues are those of the R x R matrix ``diag(c_k) B^T A / n_units`` (for
    matrices P, Q, ``P Q`` and ``Q P`` share their non-zero eigenvalues). This costs
    O(n_units R^2 + n_trials R^3) instead of O(n_trials n_units^3), and never builds
    the weight tensor. The other ``n_units - R`` eigenvalues of ``W_k`` are 0.

    Parameters
    ----------
    estimator : fitted LowTensorRankRNN or LowRankRNN, or a Pipeline ending in one
        The network.
    trials : array-like of int, default=None
        Indices of the fitted trials; all of them by default. Ignored for
        :class:`~sklearn_ltr.LowRankRNN`, whose connectivity is the same on every
        trial.

    Returns
    -------
    eigenvalues : ndarray of complex, shape (n_selected_trials, rank)
        (shape (1, rank) for a LowRankRNN).
    trials : ndarray of int, shape (n_selected_trials,)
        The trial of each row.

    See Also
    --------
    sklearn_ltr.plotting.plot_weight_spectrum : Draw them in the complex plane.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr import LowTensorRankRNN
    >>> from sklearn_ltr.datasets import make_low_tensor_rank_rnn
    >>> from sklearn_ltr.analysis import weight_eigenvalues
    >>> data = make_low_tensor_rank_rnn(10, 8, 6, rank=2, random_state=0)
    >>> est = LowTensorRankRNN(rank=2, n_units=12, max_iter=5).fit(data.X)
    >>> eig, trials = weight_eigenvalues(est, trials=[0, 9])
    >>> full = np.linalg.eigvals(est.weight_tensor()[9])
    >>> top = full[np.argsort(-np.abs(full))[:2]]
    >>> bool(np.allclose(np.sort_complex(eig[1]), np.sort_complex(top)))
    True
    """
    final = final_step(estimator)
    check_is_fitted(final)
    if not (hasattr(final, "left_factors_") and hasattr(final, "right_factors_")):
        raise ValueError(
            f"{type(final).__name__} has no recurrent connectivity (left_factors_, "
            f"right_factors_); the weight spectrum needs a fitted LowTensorRankRNN or "
            f"LowRankRNN.")
    A = np.asarray(final.left_factors_, dtype=float)
    B = np.asarray(final.right_factors_, dtype=float)
    n_units = A.shape[0]
    if hasattr(final, "trial_factors_"):
        C = np.asarray(final.trial_factors_, dtype=float)
        n_trials = C.shape[0]
        if trials is None:
            trials = np.arange(n_trials)
        trials = np.asarray(trials)
        if trials.ndim != 1 or trials.dtype.kind not in "iu":
            raise ValueError(f"trials must be a 1D array of trial indices, got "
                             f"{trials!r}.")
        if trials.size and (trials.min() < -n_trials or trials.max() >= n_trials):
            raise ValueError(
                f"trials must be indices in [0, {n_trials - 1}] (the model was "
                f"fitted on {n_trials} trials), got values from {trials.min()} to "
                f"{trials.max()}.")
        trials = trials % n_trials
        C = C[trials]
    else:
        C = np.ones((1, A.shape[1]))
        trials = np.zeros(1, dtype=int)
    core = B.T @ A / n_units  # (R, R), shared by every trial
    return np.linalg.eigvals(C[:, :, None] * core[None]), trials


# --------------------------------------------------------------------------- #
# rank bounds for gradient-descent learning
# --------------------------------------------------------------------------- #
def gradient_rank_bounds(n_units, d_in, d_out, n_timepoints, n_steps, *, batch_size=1,
                         init_rank=0, d_initial_state=0, linear=False):
    """Upper bounds on the rank of recurrent weights learned by gradient descent.

    Setting: a recurrent network of ``n_units`` units, Euler dynamics
    ``x_{t+1} = (1 - alpha) x_t + alpha (W phi(x_t) + W_in u_t)`` for
    ``t = 0, ..., n_timepoints - 1``, outputs ``y_t = W_out phi(x_t)`` and any loss
    ``sum_t l_t(y_t)``. Only ``W`` learns, by ``n_steps`` steps of gradient descent
    ``W_{k+1} = W_k - eta_k G_k`` (any step sizes; momentum and L2 weight decay
    allowed, since they only combine past gradients and the weights), each on a
    batch of ``batch_size`` trials; ``W_in`` (n_units x d_in) and ``W_out``
    (d_out x n_units) stay fixed. Not covered: Adam, RMSprop and other element-wise
    rescalings of the gradient, noise injected into the weights, and learning of
    ``W_in`` or ``W_out``.

    **Counting bound (any phi, any W_0).** Back-propagation through time gives
    ``G = alpha sum_trials sum_t delta_{t+1} phi(x_t)^T`` with the adjoint
    ``delta_t = dL/dx_t``: a sum of ``batch_size * n_timepoints`` outer products.
    Hence ``rank(W_k - W_0) <= min(n_units, k * batch_size * n_timepoints)``, and the
    column (row) space of every change lies in the span of the adjoints (rates) seen
    so far, whose dimension obeys the same bound. (One less term per trial when
    ``phi(x_0) = 0``, e.g. tanh from a zero initial state.)

    **Span bound (linear phi).** Let ``S = span(W_in) + span(x_0's) + span(W_out^T) +
    col(W_0) + row(W_0)``, of dimension ``s <= d_in + d_initial_state + d_out +
    2 * init_rank``. If the columns and rows of ``W_k`` lie in ``S``, then (induction
    over time) ``x_t in S`` since ``x_{t+1}`` adds ``W_k x_t`` and ``W_in u_t``, and
    ``delta_t in S`` since the adjoint recursion
    ``delta_t = (1 - alpha) delta_{t+1} + alpha W_k^T delta_{t+1} + W_out^T dl_t/dy_t``
    adds only vectors of ``row(W_k)`` and ``span(W_out^T)``. So
    ``G_k = alpha sum_t delta_{t+1} x_t^T`` has columns and rows in ``S``, and so does
    ``W_{k+1}``; ``W_0`` satisfies the hypothesis by construction (induction over
    steps). Therefore ``rank(W_k) <= s`` and ``rank(W_k - W_0) <= s`` for every k. From
    ``W_0 = 0`` (``init_rank=0``, zero initial state) this is the bound
    ``rank(W_k) <= d_in + d_out``. Nothing comparable holds for tanh: the rows of
    ``G`` are the rates ``phi(x_t)``, which leave ``S``, and the adjoint is multiplied
    element-wise by ``phi'(x_t)``; only the counting bound survives, and ``S`` holds
    approximately while the activity stays in tanh's linear range.

    **Tensors.** Stacking ``n_steps`` changes ``W_k - W_0`` (k = 1..n_steps) gives a
    tensor whose column and row spaces lie in a common space of dimension ``c``
    (the bounds above), so its multilinear rank is at most ``(min(n_steps, c^2), c,
    c)`` and its CP rank at most ``min(c^2, n_steps * c)`` (expand the Tucker core
    along a mode). The weights ``W_0..W_{n_steps}`` add ``W_0`` with a constant trial
    factor: ``init_rank`` more CP components, one more trial-mode dimension.

    Parameters
    ----------
    n_units : int
        Number of units N.
    d_in : int
        Number of input channels (columns of ``W_in``).
    d_out : int
        Number of outputs (rows of ``W_out``).
    n_timepoints : int
        Euler updates per trial (time steps through which ``W`` acts).
    n_steps : int
        Gradient steps taken.
    batch_size : int, default=1
        Trials per gradient step (1: one step per trial, as in trial-by-trial
        learning).
    init_rank : int or None, default=0
        Rank of the initial weights ``W_0``; None for an arbitrary (full-rank) one.
    d_initial_state : int, default=0
        Dimension of the span of the initial states ``x_0`` (0 when every trial starts
        from rest).
    linear : bool, default=False
        Whether phi is the identity (enables the span bound).

    Returns
    -------
    bounds : Bunch
        ``change_rank``: bound on ``rank(W_k - W_0)``; ``weight_rank``: on
        ``rank(W_k)``; ``change_multilinear_rank`` and ``weight_multilinear_rank``:
        3-tuples for the tensors of changes (n_steps slices) and of weights
        (n_steps + 1 slices); ``change_cp_rank`` and ``weight_cp_rank``;
        ``span_dim``: ``s`` (None unless ``linear`` and ``init_rank`` is an int);
        ``counting``: ``n_steps * batch_size * n_timepoints``.

    Examples
    --------
    >>> from sklearn_ltr.analysis import gradient_rank_bounds
    >>> b = gradient_rank_bounds(100, d_in=3, d_out=2, n_timepoints=50, n_steps=200,
    ...                          linear=True)
    >>> b.weight_rank, b.change_multilinear_rank, b.change_cp_rank
    (5, (25, 5, 5), 25)
    """
    N = _check_positive_int("n_units", n_units)
    d_in = _check_positive_int("d_in", d_in, minimum=0)
    d_out = _check_positive_int("d_out", d_out, minimum=0)
    T = _check_positive_int("n_timepoints", n_timepoints)
    K = _check_positive_int("n_steps", n_steps)
    batch_size = _check_positive_int("batch_size", batch_size)
    r0 = _check_positive_int("init_rank", init_rank, minimum=0, allow_none=True)
    d_x0 = _check_positive_int("d_initial_state", d_initial_state, minimum=0)
    r0_eff = N if r0 is None else min(r0, N)
    counting = K * batch_size * T
    change = min(N, counting)
    span_dim = None
    if linear and r0 is not None:
        span_dim = min(N, d_in + d_x0 + d_out + 2 * r0)
        change = min(change, span_dim)
        weight = min(span_dim, r0_eff + change)
    else:
        weight = min(N, r0_eff + change)
    change_ml = (min(K, change * change), change, change)
    change_cp = min(change * change, K * change)
    weight_ml = (min(K + 1, 1 + change_ml[0], weight * weight), weight, weight)
    weight_cp = min(r0_eff + change_cp, weight * weight, (K + 1) * weight)
    return Bunch(change_rank=change, weight_rank=weight,
                 change_multilinear_rank=change_ml, weight_multilinear_rank=weight_ml,
                 change_cp_rank=change_cp, weight_cp_rank=weight_cp,
                 span_dim=span_dim, counting=counting)


# --------------------------------------------------------------------------- #
# recovery against fair nulls
# --------------------------------------------------------------------------- #
def schedule_curves(n_trials, epochs=None, *, time_constants=(0.1, 0.25, 0.5)):
    """Curves over trials built from the session's schedule alone, without data.

    For each epoch (each run of equal labels in ``epochs``; the whole session
    without them): its indicator, a linear ramp across it, and exponential decays
    from its onset with time constants ``time_constants`` times its length. Any
    change that starts or stops with the epochs -- what a task's schedule predicts
    before any recording -- is close to their span, so a similarity to true trial
    factors that such curves reach is no evidence of recovery.

    Parameters
    ----------
    n_trials : int
        Number of trials.
    epochs : array-like of shape (n_trials,), default=None
        Epoch label of each trial, in session order.
    time_constants : sequence of float, default=(0.1, 0.25, 0.5)
        Decay time constants, as fractions of each epoch's length.

    Returns
    -------
    curves : ndarray of shape (n_trials, n_curves)

    Examples
    --------
    >>> from sklearn_ltr.analysis import schedule_curves
    >>> schedule_curves(12, ["a"] * 4 + ["b"] * 8).shape
    (12, 10)
    """
    n_trials = _check_positive_int("n_trials", n_trials)
    labels = np.zeros(n_trials) if epochs is None else np.asarray(epochs)
    if labels.shape != (n_trials,):
        raise ValueError(f"epochs must hold one label per trial: expected shape "
                         f"({n_trials},), got {labels.shape}.")
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    stops = np.r_[starts[1:], n_trials]
    k = np.arange(n_trials)
    curves = []
    for start, stop in zip(starts, stops):
        inside = (k >= start) & (k < stop)
        length = stop - start
        local = (k - start) / max(length - 1, 1)
        curves += [inside * 1.0, inside * local]
        curves += [inside * np.exp(-(k - start) / (tc * length))
                   for tc in time_constants]
    return np.stack(curves, axis=1)


def _centred(F):
    return np.asarray(F, dtype=np.float64) - np.mean(F, axis=0)


def trial_factor_recovery(fitted, true, *, epochs=None, length_scale=10.0,
                          n_null=1000, random_state=None):
    """How well fitted trial factors match true ones, against two fair nulls.

    The similarity (:func:`factor_similarity` of the factors centred over trials:
    their constant parts say nothing about learning) is set beside the similarity
    reached by trial factors that know nothing of the data:

    * **schedule** -- ``rank`` random combinations of :func:`schedule_curves`
      (epoch indicators, ramps and decays): what the session's schedule alone
      predicts; and the best any such curves can do (the true factors projected
      on their span, a ceiling for this null);
    * **smooth** -- ``rank`` draws of a Gaussian process over trials with
      ``length_scale`` (that of the fitted prior): curves as smooth as the fitted
      ones, but random.

    Parameters
    ----------
    fitted : ndarray of shape (n_trials, rank)
        Fitted trial factors, e.g. ``LowTensorRankRNN(...).trial_factors_``.
    true : ndarray of shape (n_trials, n_components)
        True trial factors, e.g. those of a CP fit of the true weight changes.
    epochs : array-like of shape (n_trials,), default=None
        Epoch labels, for the schedule curves.
    length_scale : float, default=10.0
        Length scale, in trials, of the smooth null.
    n_null : int, default=1000
        Draws of each null.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``similarity``; ``null_schedule``, ``null_smooth``: arrays of
        ``n_null`` similarities; ``pvalue_schedule``, ``pvalue_smooth``: the
        fraction of each null at or above ``similarity`` (with the usual +1);
        ``schedule_ceiling``: the similarity of the best curves in the
        schedule's span.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr.analysis import trial_factor_recovery
    >>> t = np.linspace(0, 1, 60)[:, None]
    >>> true = np.c_[np.tanh(8 * (t - 0.3)), np.sin(9 * t)]
    >>> noisy = true + 0.05 * np.random.RandomState(0).standard_normal(true.shape)
    >>> res = trial_factor_recovery(noisy, true, n_null=200, random_state=0)
    >>> bool(res.similarity > 0.9 and res.pvalue_smooth < 0.05)
    True
    """
    from ._priors import TrialGP

    fitted, true = np.asarray(fitted, float), np.asarray(true, float)
    if fitted.ndim != 2 or true.ndim != 2 or fitted.shape[0] != true.shape[0]:
        raise ValueError(
            f"fitted and true must be (n_trials, n_components) arrays of the same "
            f"trials, got shapes {fitted.shape} and {true.shape}.")
    n_null = _check_positive_int("n_null", n_null)
    rng = check_random_state(random_state)
    n_trials, rank = fitted.shape
    target = _centred(true)
    similarity = factor_similarity(_centred(fitted), target)
    schedule = schedule_curves(n_trials, epochs)
    smooth = TrialGP(np.arange(n_trials), None, length_scale).basis
    null = {}
    for name, basis in [("schedule", schedule), ("smooth", smooth)]:
        null[name] = np.array([
            factor_similarity(_centred(basis @ rng.standard_normal(
                (basis.shape[1], rank))), target) for _ in range(n_null)])
    # The schedule's best: each true factor projected on the schedule's span.
    coef, *_ = np.linalg.lstsq(_centred(schedule), target, rcond=None)
    ceiling = factor_similarity(_centred(schedule) @ coef, target)
    return Bunch(
        similarity=similarity, null_schedule=null["schedule"],
        null_smooth=null["smooth"], schedule_ceiling=ceiling,
        pvalue_schedule=float((1 + np.sum(null["schedule"] >= similarity))
                              / (n_null + 1)),
        pvalue_smooth=float((1 + np.sum(null["smooth"] >= similarity))
                            / (n_null + 1)))


def connectivity_recovery(estimator, weights, *, reference=0, n_null=200,
                          random_state=None):
    """Fitted against true changes of connectivity, seen from the recorded neurons.

    For a network whose units are the recorded neurons (as in
    :func:`~sklearn_ltr.datasets.make_motor_learning`), the fitted network's
    weight changes ``W_k - W_ref`` are mapped into the neurons' coordinates through
    its readout ``D`` (``D dW_k pinv(D)``, exact to first order in the rates) and
    compared with the true changes:

    * principal angles between the fitted and the true column spaces, and between
      the row spaces, of the stacked changes (each of dimension ``rank``), beside
      those of random subspaces of the same dimensions (the null);
    * the relative error ``|dW_fit - dW_true| / |dW_true|`` (Frobenius, over all
      trials), raw and after the best single scale of ``dW_fit``, beside those of
      the same fit with its trial factors shuffled over trials (the null: the right
      components at the wrong times).

    Parameters
    ----------
    estimator : fitted LowTensorRankRNN
        A network fitted to the recorded neurons; its trials are those of
        ``weights``.
    weights : ndarray of shape (n_trials, n_neurons, n_neurons)
        The true weights of each trial.
    reference : int, default=0
        The trial the changes are measured from.
    n_null : int, default=200
        Draws of each null.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    result : Bunch
        ``column_angles``, ``row_angles``: degrees, smallest first;
        ``null_column_angles``, ``null_row_angles``: their medians over random
        subspaces; ``relative_error`` and ``scaled_error``;
        ``null_relative_error`` and ``null_scaled_error``: arrays of the shuffled
        fits' errors; ``pvalue_error``: fraction of the shuffled scaled errors at or
        below ``scaled_error`` (+1 rule).
    """
    W = _check_tensor3(weights, "weights")
    D = np.asarray(estimator.readout_, float)
    if W.shape[1:] != (D.shape[0], D.shape[0]) or W.shape[0] != \
            estimator.trial_factors_.shape[0]:
        raise ValueError(
            f"weights must have shape (n_trials, n_neurons, n_neurons) = "
            f"({estimator.trial_factors_.shape[0]}, {D.shape[0]}, {D.shape[0]}) to "
            f"match the estimator, got {W.shape}.")
    rng = check_random_state(random_state)
    true = W - W[reference]
    A, B, C = estimator.left_factors_, estimator.right_factors_, \
        estimator.trial_factors_
    left, right = D @ A, np.linalg.pinv(D).T @ B  # (n, R) each, neuron coordinates
    n_units = A.shape[0]

    def changes(factors):
        dC = factors - factors[reference]
        return np.einsum("kr,ir,jr->kij", dC, left, right) / n_units

    fitted = changes(C)
    rank = C.shape[1]
    col_true = column_space(np.concatenate(list(true), axis=1), rank=rank)
    row_true = column_space(np.concatenate([w.T for w in true], axis=1), rank=rank)
    cols = principal_angles(column_space(left, rtol=1e-10), col_true)
    rows = principal_angles(column_space(right, rtol=1e-10), row_true)
    n = D.shape[0]
    null_cols = np.median([principal_angles(rng.standard_normal((n, rank)),
                                            col_true) for _ in range(n_null)], axis=0)
    norm = np.linalg.norm(true)

    def errors(dW):
        # Raw, and after the one scale that fits best: the linearisation through
        # the readout preserves the pattern of the changes better than their size.
        scale = np.sum(dW * true) / max(np.sum(dW * dW), 1e-300)
        return (np.linalg.norm(dW - true) / norm,
                np.linalg.norm(scale * dW - true) / norm)

    error, scaled = errors(fitted)
    null = np.array([errors(changes(C[rng.permutation(len(C))]))
                     for _ in range(n_null)])
    # Random subspaces are rotation invariant: one null serves rows and columns.
    return Bunch(column_angles=cols, row_angles=rows, null_column_angles=null_cols,
                 null_row_angles=null_cols, relative_error=float(error),
                 scaled_error=float(scaled), null_relative_error=null[:, 0],
                 null_scaled_error=null[:, 1],
                 pvalue_error=float((1 + np.sum(null[:, 1] <= scaled))
                                    / (n_null + 1)))
