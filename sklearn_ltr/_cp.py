"""CP decompositions with tensorly, for TCA and the analysis of weight tensors.

Shared by :class:`~sklearn_ltr.TCA` and
:func:`~sklearn_ltr.analysis.tensor_rank_curve`.

* :func:`fit_best_cp` -- ALS (or non-negative) CP fits from several initialisations,
  keeping the one with the lowest squared error, with missing entries, a compressed
  fit (CANDELINC) and Ctrl-C handling;
* :func:`normalize_cp` -- the one normal form of CP factors in the package: unit-norm
  columns except in mode 0, which carries the scale; fixed signs; components sorted
  by decreasing norm.
"""

from typing import NamedTuple

import numpy as np

# Imported with the package, not in the first fit, where a Ctrl-C landing in the
# import would leave half-imported modules behind. Functions are looked up at each
# call (``decomposition.parafac``), so that tests can replace them.
import tensorly as tl
from tensorly import decomposition

__all__ = ["CPFit", "fit_best_cp", "normalize_cp"]


def normalize_cp(factors):
    """Normal form of CP factors: unit norms, scale in mode 0, fixed signs and order.

    Every column of the factors of modes 1, 2, ... is scaled to unit Euclidean norm
    and its sign chosen so that its largest-magnitude entry is positive; mode 0
    absorbs both the norms and the signs, so the modelled tensor is unchanged.
    Components are sorted by decreasing norm of their mode-0 column (ties keep
    their order). Zero columns are left as they are.

    Parameters
    ----------
    factors : sequence of ndarray of shape (n_m, rank)
        Factor matrices, one per mode, with any weights already folded into the
        first.

    Returns
    -------
    factors : list of ndarray of shape (n_m, rank)
        New C-contiguous arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr._cp import normalize_cp
    >>> C, A, B = normalize_cp([np.array([[1.0, 3.0]]), np.array([[-2.0, 1.0]]),
    ...                        np.array([[1.0, 1.0], [0.0, 1.0]])])
    >>> C  # the larger component first; the sign flip of A moved into C
    array([[ 4.24264069, -2.        ]])
    >>> A, B.round(4)
    (array([[1., 1.]]), array([[0.7071, 1.    ],
           [0.7071, 0.    ]]))
    """
    C = factors[0]
    rest = []
    scale = np.ones(C.shape[1])
    for F in factors[1:]:
        norm = np.linalg.norm(F, axis=0)
        norm = np.where(norm > 0, norm, 1.0)
        rest.append(F / norm)
        scale = scale * norm
    C = C * scale
    # CP determines each column only up to sign (a flip in two modes cancels), so
    # fitted factors depend on the initialisation; a fixed sign makes them
    # comparable between fits.
    sign = np.ones(C.shape[1])
    for i, F in enumerate(rest):
        peak = F[np.argmax(np.abs(F), axis=0), np.arange(F.shape[1])]
        flip = np.where(peak < 0, -1.0, 1.0)
        rest[i] = F * flip
        sign = sign * flip
    C = C * sign
    order = np.argsort(-np.linalg.norm(C, axis=0), kind="stable")
    return [np.ascontiguousarray(F[:, order]) for F in [C, *rest]]


class _KeepLast:
    """tensorly callback that keeps a copy of the latest CP iterate.

    tensorly updates the factor list in place, so the arrays are copied. If the fit
    is interrupted (Ctrl-C), this iterate is what is kept.
    """

    def __init__(self):
        self.cp = None
        self.n_calls = 0

    def __call__(self, cp, error):
        weights, factors = cp
        self.cp = (np.array(weights, dtype=np.float64),
                   [np.array(f, dtype=np.float64) for f in factors])
        self.n_calls += 1


class CPFit(NamedTuple):
    """The fit kept by :func:`fit_best_cp`.

    Attributes
    ----------
    factors : list of ndarray of shape (n_m, rank)
        Factor matrices, normalised by :func:`normalize_cp`.
    sse : float
        Sum of squared residuals over the observed entries of the data.
    n_iter : int
        Iterations run by the kept fit.
    interrupted : int or None
        None, or the iterations the interrupted initialisation had run.
    """

    factors: list
    sse: float
    n_iter: int
    interrupted: int | None


def fit_best_cp(X, rank, *, random_states, init="random", max_iter, tol, mask=None,
                nonneg=False, bases=None, keep_interrupted=False, name, data_name):
    """Fit CP models from several initialisations and keep the best one.

    Each initialisation runs :func:`tensorly.decomposition.parafac` (alternating
    least squares), or :func:`~tensorly.decomposition.non_negative_parafac` when
    ``nonneg``, in tensorly's numpy backend whatever the user's global backend. The
    fit with the lowest sum of squared residuals over the observed entries of ``X``
    is kept.

    Parameters
    ----------
    X : ndarray of shape (n0, n1, n2)
        The data, finite: missing entries set to any finite value and marked in
        ``mask``.
    rank : int
        Number of components.
    random_states : sequence of int or RandomState
        One per initialisation (their number is the number of fits), passed to
        tensorly: the same ``RandomState`` repeated draws every initialisation from
        one stream; distinct int seeds make each one reproducible by itself.
    init : {'svd', 'random'}, default='random'
        Initialisation of the first fit; the others are random.
    max_iter : int
        Maximum iterations of each fit.
    tol : float
        Each fit stops when the relative reconstruction error changes by less than
        this; 0 runs ``max_iter`` iterations.
    mask : ndarray of shape (n0, n1, n2) or None, default=None
        1.0 where ``X`` is observed, 0.0 where it is missing; None: all observed.
        Missing entries are neither fitted nor counted in the error.
    nonneg : bool, default=False
        Non-negative factors (multiplicative updates).
    bases : sequence of 3 ndarray of shape (n_m, p_m) or None, default=None
        Orthonormal bases of each mode. The model is fitted to the core ``X``
        projected on them and expanded back (CANDELINC, Carroll et al., 1980); the
        error is measured on ``X`` itself. Not with ``mask``.
    keep_interrupted : bool, default=False
        On Ctrl-C, return the best fit so far, including the latest iterate of the
        interrupted one (``parafac`` only: ``non_negative_parafac`` reports no
        iterate), instead of propagating the interrupt. It propagates anyway when
        there is nothing to keep.
    name, data_name : str
        The caller and its data (e.g. ``"TCA"``, ``"X"``), for error messages.

    Returns
    -------
    fit : CPFit
        ``factors`` (normalised by :func:`normalize_cp`), ``sse``, ``n_iter`` and
        ``interrupted``.

    Raises
    ------
    ValueError
        ALS met a singular system: the data have fewer than ``rank`` independent
        components.
    KeyboardInterrupt
        Interrupted, unless ``keep_interrupted`` and a fit can be kept.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ltr._cp import fit_best_cp
    >>> rng = np.random.RandomState(0)
    >>> X = np.einsum("kr,ir,jr->kij", rng.rand(8, 2), rng.rand(6, 2), rng.rand(5, 2))
    >>> fit = fit_best_cp(X, 2, random_states=[0, 1], max_iter=200, tol=1e-10,
    ...                   name="example", data_name="X")
    >>> [F.shape for F in fit.factors], bool(fit.sse < 1e-12 * np.sum(X ** 2))
    ([(8, 2), (6, 2), (5, 2)], True)
    """
    core = X if bases is None else np.einsum("kij,ka,ib,jc->abc", X, *bases,
                                             optimize=True)
    best = interrupted = None
    # tensorly follows its global backend; fit in numpy whatever the user set.
    with tl.backend_context("numpy", local_threadsafe=True):
        for i_init, random_state in enumerate(random_states):
            kw = {"rank": rank, "n_iter_max": max_iter,
                  "init": init if i_init == 0 else "random", "tol": tol,
                  "random_state": random_state, "return_errors": True, "mask": mask}
            last = _KeepLast() if keep_interrupted else None
            try:
                if nonneg:
                    # non_negative_parafac takes no callback: an interrupt keeps the
                    # previous initialisations only.
                    cp, errors = decomposition.non_negative_parafac(core, **kw)
                else:
                    cp, errors = decomposition.parafac(core, callback=last, **kw)
                # tensorly records one error per iteration, none when tol=0.
                n_iter = len(errors) if tol > 0 else max_iter
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"{name}'s alternating least squares met a singular system at "
                    f"rank={rank}: {data_name} has fewer than {rank} independent "
                    f"components (e.g. constant or exactly low-rank data). Lower "
                    f"rank.") from None
            except KeyboardInterrupt:
                if last is None or (last.cp is None and best is None):
                    raise
                # The callback's first call is at the initialisation.
                interrupted = max(last.n_calls - 1, 0)
                if last.cp is None:
                    break
                cp, n_iter = last.cp, interrupted
            weights, factors = cp
            factors = [np.asarray(f, dtype=np.float64) for f in factors]
            if bases is not None:
                factors = [U @ f for U, f in zip(bases, factors)]
            factors[0] = factors[0] * np.asarray(weights, dtype=np.float64)
            resid = X - np.einsum("kr,ir,jr->kij", *factors)
            if mask is not None:
                resid = np.where(mask > 0, resid, 0.0)
            sse = np.sum(resid ** 2)
            if best is None or sse < best[0]:
                best = (sse, factors, n_iter)
            if interrupted is not None:
                break
    sse, factors, n_iter = best
    return CPFit(normalize_cp(factors), float(sse), n_iter, interrupted)
