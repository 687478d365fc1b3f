"""Math of the low-tensor-rank RNN: the latent recurrence and the readout.

This module holds tensors-in, tensors-out functions only: no optimisation loop, no
scikit-learn, no numpy. Shapes use ``T`` = n_timepoints, ``K`` = n_trials (a batch of
trials), ``R`` = rank, ``N`` = n_units and ``n`` = n_neurons. Internally time is the
leading axis (``(T, K, ...)``) so that one time step is a contiguous block.

The network of trial ``k`` (DESIGN section 2) is::

    x_k(t + 1) = (1 - alpha) x_k(t) + alpha (W_k tanh(x_k(t)) + B_in u_k(t))
    W_k        = sum_r c[k, r] a_r b_r^T / N
    y_k(t)     = D tanh(x_k(t)) + d

With ``x_k(0) = A z_k`` and ``B_in = A M`` every state stays in the column space of
``A``: ``x_k(t) = A kappa_k(t)`` with the rank-``R`` latent recurrence::

    kappa(t + 1) = (1 - alpha) kappa(t) + g_k * (B^T tanh(A kappa(t))) + v_k(t)

where ``g_k = alpha c_k / N`` (the trial gain) and ``v_k(t) = alpha M u_k(t)`` (the
drive). One step costs O(K N R); the (K, N, N) weight tensor is never formed.

The recurrence is a chain of ``T`` small operations. Letting autograd record it costs
far more in bookkeeping than in arithmetic, so :class:`LatentRecurrence` implements the
backward pass by hand (backpropagation through time written out below) and computes
the parameter gradients as single large matrix products after the time loop.
"""

import torch

__all__ = ["LatentRecurrence", "simulate_latents", "readout"]


class LatentRecurrence(torch.autograd.Function):
    """Latent low-rank recurrence with a hand-written backward pass.

    forward(kappa0, A, B, gain, drive, decay) -> (kappa, H)

    Parameters (of ``forward``)
    ---------------------------
    kappa0 : Tensor of shape (K, R)
        Latent initial states ``z_k``.
    A : Tensor of shape (N, R)
        Column (left) factors.
    B : Tensor of shape (N, R)
        Row (right) factors.
    gain : Tensor of shape (K, R)
        ``alpha * c_k / N`` per trial and component.
    drive : Tensor of shape (T - 1, K, R) or None
        ``alpha * M u_k(t)``; its length sets ``T``. When None, ``T`` is taken from
        ``n_timepoints`` and there is no external drive.
    decay : float
        ``1 - alpha``.
    n_timepoints : int
        Number of time points ``T`` (used when ``drive`` is None).

    Returns
    -------
    kappa : Tensor of shape (T, K, R)
        Latent trajectories.
    H : Tensor of shape (T, K, N)
        Unit rates ``tanh(A kappa)``, reused by the readout.
    """

    @staticmethod
    def forward(ctx, kappa0, A, B, gain, drive, decay, n_timepoints):
        T = n_timepoints if drive is None else drive.shape[0] + 1
        K, R = kappa0.shape
        N = A.shape[0]
        kappa = kappa0.new_empty((T, K, R))
        H = kappa0.new_empty((T, K, N))
        HB = kappa0.new_empty((max(T - 1, 0), K, R))
        At = A.t()
        kappa[0] = kappa0
        for t in range(T):
            torch.mm(kappa[t], At, out=H[t])
            H[t].tanh_()
            if t == T - 1:
                break
            torch.mm(H[t], B, out=HB[t])
            if drive is None:
                torch.mul(kappa[t], decay, out=kappa[t + 1])
            else:
                torch.add(drive[t], kappa[t], alpha=decay, out=kappa[t + 1])
            kappa[t + 1].addcmul_(gain, HB[t])
        ctx.save_for_backward(A, B, gain, kappa, H, HB)
        ctx.decay = decay
        ctx.has_drive = drive is not None
        return kappa, H

    @staticmethod
    def backward(ctx, g_kappa, g_H):
        # Backpropagation through time. ``dk`` is dL/dkappa(t + 1) when step t is
        # processed; ``dpre[t]`` is dL/d(A kappa(t)), the pre-activation gradient.
        A, B, gain, kappa, H, HB = ctx.saved_tensors
        decay = ctx.decay
        T, K, R = kappa.shape
        N = A.shape[0]
        slope = 1.0 - H * H  # tanh'(pre) for all steps at once
        if g_H is None:
            dpre = torch.zeros_like(H)
        else:
            dpre = g_H * slope  # direct readout contribution, completed in the loop
        d_next = kappa.new_empty((max(T - 1, 0), K, R))  # dL/dkappa(t + 1) per step
        Bt = B.t()
        dk = dpre[T - 1] @ A
        if g_kappa is not None:
            dk += g_kappa[T - 1]
        for t in range(T - 2, -1, -1):
            d_next[t] = dk
            # kappa(t+1) = decay kappa(t) + gain * (tanh(A kappa(t)) B) + drive(t)
            dpre[t].addcmul_(torch.mm(dk * gain, Bt), slope[t])
            dk = torch.addmm(dk, dpre[t], A, beta=decay)
            if g_kappa is not None:
                dk += g_kappa[t]
        g_kappa0 = dk
        g_A = g_B = g_gain = g_drive = None
        needs = ctx.needs_input_grad
        if needs[1]:
            g_A = dpre.reshape(-1, N).t() @ kappa.reshape(-1, R)
        if T > 1:
            if needs[2]:
                g_B = H[:-1].reshape(-1, N).t() @ (d_next * gain).reshape(-1, R)
            if needs[3]:
                g_gain = (d_next * HB).sum(0)
            if needs[4] and ctx.has_drive:
                g_drive = d_next
        else:
            if needs[2]:
                g_B = torch.zeros_like(B)
            if needs[3]:
                g_gain = torch.zeros_like(gain)
        return g_kappa0, g_A, g_B, g_gain, g_drive, None, None


def simulate_latents(kappa0, A, B, gain, drive, decay, n_timepoints):
    """Run the latent recurrence; see :class:`LatentRecurrence`."""
    return LatentRecurrence.apply(kappa0, A, B, gain, drive, decay, n_timepoints)


def simulate_latents_autograd(kappa0, A, B, gain, drive, decay, n_timepoints):
    """Reference implementation of :func:`simulate_latents` recorded by autograd.

    Kept for tests of the hand-written backward pass; it is several times slower.
    """
    T = n_timepoints if drive is None else drive.shape[0] + 1
    kappas = [kappa0]
    Hs = []
    k = kappa0
    for t in range(T):
        h = torch.tanh(k @ A.t())
        Hs.append(h)
        if t == T - 1:
            break
        k = decay * k + gain * (h @ B)
        if drive is not None:
            k = k + drive[t]
        kappas.append(k)
    return torch.stack(kappas), torch.stack(Hs)


def readout(H, D, d):
    """Readout ``D tanh(x) + d`` for rates ``H`` of shape (T, K, N) -> (T, K, n)."""
    T, K, N = H.shape
    return torch.addmm(d, H.reshape(T * K, N), D.t()).reshape(T, K, -1)
