"""Naive dense reference implementation of the low-tensor-rank RNN training loss.

This is the model of DESIGN section 2 written "the obvious way": every call builds
the full ``(n_trials, n_units, n_units)`` weight tensor

    W_k = sum_r c[k, r] a_r b_r^T / N

and iterates the unit states with a batched matrix-vector product::

    x_k(t + 1) = (1 - alpha) x_k(t) + alpha * W_k tanh(x_k(t))
    y_k(t)     = D tanh(x_k(t)) + d

with ``x_k(0) = A z_k``, then lets autograd differentiate everything. It is kept as
the comparator for ``bench_iteration.py`` and as an independent check of the latent
(rank-R) implementation in :mod:`sklearn_ltr._dynamics`. It takes the *same* raw
parameters as the fit's loss (``_model.LatentRNN.loss``) (``A, Bs, Ds, d, Z, mu, Wc``
with ``C = mu + Phi Wc``, ``B = sqrt(N) Bs``, ``D = Ds / sqrt(N)``), so the two losses
must agree to rounding error.

Never use this in fitting: one iteration touches ``O(T K N^2)`` memory.
"""

import math

import torch

__all__ = ["dense_weight_tensor", "simulate_dense", "naive_loss"]


def dense_weight_tensor(A, B, C):
    """(K, N, N) tensor ``W_k = A diag(c_k) B^T / N``."""
    N = A.shape[0]
    # (K, N, R) @ (R, N) -> (K, N, N)
    return torch.matmul(A.unsqueeze(0) * C.unsqueeze(1), B.t()) / N


def simulate_dense(x0, W, alpha, n_timepoints):
    """Unit states and rates over time, time-major.

    Parameters
    ----------
    x0 : (K, N) initial unit states.  W : (K, N, N) weights.

    Returns
    -------
    xs : (T, K, N) unit states.  hs : (T, K, N) rates ``tanh(x)``.
    """
    x = x0
    xs, hs = [], []
    for t in range(n_timepoints):
        h = torch.tanh(x)
        xs.append(x)
        hs.append(h)
        if t == n_timepoints - 1:
            break
        x = (1.0 - alpha) * x + alpha * torch.bmm(W, h.unsqueeze(-1)).squeeze(-1)
    return torch.stack(xs), torch.stack(hs)


def naive_loss(p, basis, X, *, alpha, activity_penalty, return_parts=False):
    """MSE (fully observed ``X`` of shape (T, K, n)) plus the activity penalty.

    ``p`` holds the raw parameters ``A, Bs, Ds, d, Z, mu`` and ``Wc`` (when
    ``basis`` is not None), as in the fit's loss.
    """
    T, K, n = X.shape
    A = p["A"]
    N = A.shape[0]
    C = p["mu"].expand(K, -1)
    if basis is not None:
        C = C + basis @ p["Wc"]
    B = p["Bs"] * math.sqrt(N)
    D = p["Ds"] / math.sqrt(N)
    W = dense_weight_tensor(A, B, C)
    x0 = p["Z"] @ A.t()
    xs, hs = simulate_dense(x0, W, alpha, T)
    Y = torch.matmul(hs, D.t()) + p["d"]
    mse = ((Y - X) ** 2).mean()
    act = (xs ** 2).sum(-1).mean() / N
    value = mse + activity_penalty * act if activity_penalty else mse
    if return_parts:
        return value, Y, xs
    return value
