"""Math of the low-tensor-rank RNN: the latent recurrence and the readout.

This module holds tensors-in, tensors-out functions only: no optimisation loop, no
scikit-learn, no numpy. Shapes use ``T`` = n_timepoints, ``K`` = n_trials (a batch of
trials), ``R`` = rank, ``N`` = n_units and ``n`` = n_neurons. Internally time is the
leading axis (``(T, K, ...)``) so that one time step is a contiguous block.

The network of trial ``k`` is::

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
backward pass by hand (backpropagation through time written out below). For the same
reason :class:`ReadoutSquaredError` fuses the readout with the squared error: one
residual buffer serves the loss and its three gradients.
"""

import torch

__all__ = [
    "LatentRecurrence", "ReadoutSquaredError", "simulate_latents", "readout",
    "readout_squared_error",
]


def _through_latents(dpre, kappa_t, At, g_At, dkT, decay, g_kappa_t):
    """One step of backpropagation through ``x(t) = A kappa(t)``.

    ``dpre`` is dL/d(A kappa(t)), (K, N); ``dkT`` is dL/dkappa(t + 1)^T, (R, K), or
    None at the last step. Adds dpre^T kappa(t) to ``g_At`` (when not None) and
    returns dL/dkappa(t)^T = decay dkT + A^T dpre^T (+ the direct gradient
    ``g_kappa_t``).
    """
    if g_At is not None:
        g_At.addmm_(kappa_t.t(), dpre)
    if dkT is None:
        dkT = torch.mm(At, dpre.t())
    else:
        dkT = torch.addmm(dkT, At, dpre.t(), beta=decay)
    if g_kappa_t is not None:
        dkT += g_kappa_t.t()
    return dkT


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
        # B^T tanh(A kappa(t)) per step, stored transposed as (R, K): BLAS writes a
        # wide (R, K) result faster than a 5-column (K, R) one.
        HBt = kappa0.new_empty((max(T - 1, 0), R, K))
        At = A.t().contiguous()
        Bt = B.t().contiguous()
        # unbind(0) gives all per-step views at once: indexing inside the loop would
        # cost one dispatcher call per view and step.
        kap, Hs, HBs = kappa.unbind(0), H.unbind(0), HBt.unbind(0)
        drv = None if drive is None else drive.unbind(0)
        kap[0].copy_(kappa0)
        for t in range(T):
            torch.mm(kap[t], At, out=Hs[t])
            Hs[t].tanh_()
            if t == T - 1:
                break
            torch.mm(Bt, Hs[t].t(), out=HBs[t])
            if drv is None:
                torch.mul(kap[t], decay, out=kap[t + 1])
            else:
                torch.add(drv[t], kap[t], alpha=decay, out=kap[t + 1])
            kap[t + 1].addcmul_(gain, HBs[t].t())
        ctx.save_for_backward(A, B, gain, kappa, H, HBt)
        ctx.decay = decay
        ctx.has_drive = drive is not None
        return kappa, H

    @staticmethod
    def backward(ctx, g_kappa, g_H):
        # Backpropagation through time. ``dk`` is dL/dkappa(t + 1) when step t is
        # processed; ``dpre`` is dL/d(A kappa(t)), the pre-activation gradient:
        #   dpre = (g_H[t] + (dk * gain) B^T) * tanh'(.),  tanh' = 1 - H[t]^2
        #   dL/dkappa(t) = decay dk + dpre A + g_kappa[t],   dL/dA += dpre^T kappa(t)
        # The (K, N) work of a step is done in two buffers that stay in cache and
        # dL/dA is accumulated step by step: a full-size (T, K, N) dpre or slope would
        # cost passes through memory and page faults on each fresh allocation.
        # Thin products are formed transposed (``dkT`` is dk^T, (R, K); dL/dA^T and
        # dL/dB^T are (R, N)): BLAS writes wide results several times faster than
        # R-column ones. ``g_H`` is autograd's tensor and is never written to.
        A, B, gain, kappa, H, HBt = ctx.saved_tensors
        decay = ctx.decay
        T, K, R = kappa.shape
        N = A.shape[0]
        needs = ctx.needs_input_grad
        At = A.t().contiguous()
        Bt = B.t().contiguous()
        d_next = kappa.new_empty((max(T - 1, 0), K, R))  # dL/dkappa(t + 1) per step
        d_gain = kappa.new_empty((max(T - 1, 0), K, R))  # d_next * gain
        dpre = H.new_empty((K, N))
        slope = H.new_empty((K, N))
        g_At = A.new_zeros((R, N)) if needs[1] else None
        Hs, kap = H.unbind(0), kappa.unbind(0)
        dns, dgs = d_next.unbind(0), d_gain.unbind(0)
        gHs = None if g_H is None else g_H.unbind(0)
        gks = None if g_kappa is None else g_kappa.unbind(0)
        one = H.new_ones(())
        dkT = None
        for t in range(T - 1, -1, -1):
            # kappa(t+1) = decay kappa(t) + gain * (tanh(A kappa(t)) B) + drive(t)
            if t == T - 1:
                if gHs is None:
                    dpre.zero_()
                else:
                    dpre.copy_(gHs[t])
            else:
                dns[t].copy_(dkT.t())
                torch.mul(dns[t], gain, out=dgs[t])
                if gHs is None:
                    torch.mm(dgs[t], Bt, out=dpre)
                else:
                    torch.addmm(gHs[t], dgs[t], Bt, out=dpre)
            torch.addcmul(one, Hs[t], Hs[t], value=-1.0, out=slope)
            dpre.mul_(slope)
            dkT = _through_latents(dpre, kap[t], At, g_At, dkT, decay,
                                   None if gks is None else gks[t])
        g_kappa0 = dkT.t().contiguous()
        g_A = g_B = g_gain = g_drive = None
        if g_At is not None:
            g_A = g_At.t()
        if T > 1:
            if needs[2]:
                g_B = (d_gain.reshape(-1, R).t() @ H[:-1].reshape(-1, N)).t()
            if needs[3]:
                g_gain = (d_next * HBt.transpose(1, 2)).sum(0)
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
    """Readout ``D tanh(x) + d`` for rates ``H`` of shape (T, K, N) -> (T, K, n).

    ``d`` is (n,), or (K, n) for an offset per trial.
    """
    T, K, N = H.shape
    if d.dim() == 2:
        return torch.matmul(H, D.t()) + d
    return torch.addmm(d, H.reshape(T * K, N), D.t()).reshape(T, K, -1)


class ReadoutSquaredError(torch.autograd.Function):
    """Sum of squared readout errors over observed entries, divided by ``n_obs``.

    forward(H, D, d, X, mask, n_obs) -> loss, with ``loss = |m * (H D^T + d - X)|^2 /
    n_obs``. Fusing the readout with the squared error lets one residual buffer
    serve the loss and all three gradients, which autograd would otherwise reach
    through several full-size (T, K, n) temporaries (the readout, the difference,
    its square, the mask product and their gradients)::

        dL/dH = 2/n_obs Res D,   dL/dD = 2/n_obs Res^T H,   dL/dd = 2/n_obs sum Res

    Parameters (of ``forward``)
    ---------------------------
    H : Tensor of shape (T, K, N)
        Unit rates.
    D : Tensor of shape (n, N)
        Readout.
    d : Tensor of shape (n,) or (K, n)
        Readout offset, shared or per trial.
    X : Tensor of shape (T, K, n)
        Data, with missing entries set to any finite value (0 by convention).
    mask : bool Tensor of shape (T, K, n) or None
        Observed entries; None means all.
    n_obs : int
        Normaliser (the number of observed entries).
    """

    @staticmethod
    def forward(ctx, H, D, d, X, mask, n_obs):
        T, K, N = H.shape
        n = D.shape[0]
        # Res = (d - X) + H D^T: the offset and the data in one pass, then one GEMM
        # accumulating into it (addmm(d, ...) - X would take one more pass).
        res = torch.sub(d, X).reshape(T * K, n)
        res.addmm_(H.reshape(T * K, N), D.t())
        if mask is not None:
            res.mul_(mask.reshape(T * K, n))
        # A plain sum of squares: torch.dot would be faster but accumulates 1e6 terms
        # in float32 with a relative error near 1e-6, which the stopping rule sees.
        loss = (res * res).sum() / n_obs
        ctx.save_for_backward(H, D, res)
        ctx.n_obs = n_obs
        ctx.per_trial_offset = d.dim() == 2
        return loss

    @staticmethod
    def backward(ctx, g_loss):
        H, D, res = ctx.saved_tensors
        T, K, N = H.shape
        scale = g_loss * (2.0 / ctx.n_obs)
        needs = ctx.needs_input_grad
        g_H = g_D = g_d = None
        if needs[0]:
            # Scale the small factor, not the (T K, N) product.
            g_H = torch.mm(res, D * scale).view(T, K, N)
        if needs[1]:
            g_D = torch.mm(res.t(), H.reshape(T * K, N)).mul_(scale)
        if needs[2]:
            # Summed over what the offset is shared by: time (and trials).
            g_d = (res.view(T, K, -1).sum(0) if ctx.per_trial_offset
                   else res.sum(0)).mul_(scale)
        return g_H, g_D, g_d, None, None, None


def readout_squared_error(H, D, d, X, mask, n_obs):
    """Fused readout and squared error; see :class:`ReadoutSquaredError`."""
    return ReadoutSquaredError.apply(H, D, d, X, mask, n_obs)


# Up to this many unit rates (T * K * N, 64 MiB in float32) are kept from the forward
# pass of LatentSquaredError for its backward pass instead of being formed again.
KEPT_RATES_MAX = 1 << 24


class LatentSquaredError(torch.autograd.Function):
    """Latent recurrence, readout and squared error fused step by step.

    forward(kappa0, A, B, gain, drive, D, d, X, mask, decay, n_timepoints, n_obs)
    -> (loss, kappa), with ``kappa`` as returned by :class:`LatentRecurrence` and
    ``loss = |m * (tanh(A kappa) D^T + d - X)|^2 / n_obs`` (as
    :class:`ReadoutSquaredError` applied to its rates).

    The unit rates ``H`` (T, K, N) -- the largest array of the model, N times the
    latent trajectories -- are not stored beyond ``KEPT_RATES_MAX`` entries: each
    step's rates are formed in one (K, N) buffer, used for the recurrence and the
    readout of that step, and formed again from ``kappa(t)`` in the backward pass
    (one thin product and a tanh per step). All (K, N) work then stays in cache, and
    memory grows with ``n_units`` only through the parameters. Up to that size (64
    MiB of rates) the forward pass keeps them and the backward pass reads them,
    which is faster (doc/performance.rst); the gradients are the same.

    Each step reads its (K, N) rates once per product: the readout and the
    recurrence's input share one product with ``[D^T, B]`` (N, n + R), whose result
    lands in a residual buffer of width n + R -- the residual in its first n columns,
    ``tanh(A kappa) B`` in the last R. The backward pass reuses those R columns for
    ``dL/dkappa(t + 1) * gain``, so the readout's and the recurrence's gradients
    are again one product each::

        dL/dH(t) = [2/n_obs Res(t), dL/dkappa(t+1) gain] [D; B^T]
        [dL/dD^T, dL/dB] += H(t)^T [2/n_obs Res(t), dL/dkappa(t+1) gain]

    and the rest is backpropagation through time as in :class:`LatentRecurrence`.
    """

    @staticmethod
    def forward(ctx, kappa0, A, B, gain, drive, D, d, X, mask, decay, n_timepoints,
                n_obs):
        T = n_timepoints if drive is None else drive.shape[0] + 1
        K, R = kappa0.shape
        N = A.shape[0]
        n = D.shape[0]
        kappa = kappa0.new_empty((T, K, R))
        # Small problems keep every step's rates for the backward pass (which
        # otherwise forms them again); large ones keep one (K, N) buffer.
        rates = (kappa0.new_empty((T, K, N)) if T * K * N <= KEPT_RATES_MAX
                 else None)
        hs = (kappa0.new_empty((K, N)),) * T if rates is None else rates.unbind(0)
        At = A.t().contiguous()
        W = torch.cat([D.t(), B], 1)  # (N, n + R)
        # ext = [d - X, 0]; each step adds H(t) [D^T, B] to it.
        ext = kappa0.new_zeros((T, K, n + R))
        torch.sub(d, X, out=ext[..., :n])
        kap, es = kappa.unbind(0), ext.unbind(0)
        drv = None if drive is None else drive.unbind(0)
        kap[0].copy_(kappa0)
        for t in range(T):
            h = hs[t]
            torch.mm(kap[t], At, out=h)
            h.tanh_()
            es[t].addmm_(h, W)
            if t == T - 1:
                break
            if drv is None:
                torch.mul(kap[t], decay, out=kap[t + 1])
            else:
                torch.add(drv[t], kap[t], alpha=decay, out=kap[t + 1])
            kap[t + 1].addcmul_(gain, es[t][:, n:])
        res = ext[..., :n]
        HB = ext[:-1, :, n:].clone()  # (T - 1, K, R), for dL/dgain
        if mask is not None:
            res.mul_(mask)
        # A plain sum of squares (see ReadoutSquaredError).
        loss = (res * res).sum() / n_obs
        ctx.save_for_backward(A, B, gain, D, kappa, HB)
        # Not saved through save_for_backward: the backward pass writes its scratch
        # columns, which autograd's version check would reject. No caller sees it.
        ctx.ext = ext
        ctx.rates = rates
        ctx.decay = decay
        ctx.has_drive = drive is not None
        ctx.n_obs = n_obs
        ctx.d_per_trial = d.dim() == 2
        return loss, kappa

    @staticmethod
    def backward(ctx, g_loss, g_kappa):
        # As LatentRecurrence.backward, with the rates of step t formed again from
        # kappa(t); ``dkT`` is dL/dkappa(t + 1)^T, (R, K).
        A, B, gain, D, kappa, HB = ctx.saved_tensors
        ext = ctx.ext
        decay = ctx.decay
        d_per_trial = ctx.d_per_trial
        T, K, R = kappa.shape
        N = A.shape[0]
        n = D.shape[0]
        needs = ctx.needs_input_grad
        scale = g_loss * (2.0 / ctx.n_obs)
        At = A.t().contiguous()
        V = torch.cat([D * scale, B.t()], 0)  # (n + R, N)
        d_next = kappa.new_empty((max(T - 1, 0), K, R))
        # The rates kept by the forward pass, or one buffer to form them again in.
        hs = None if ctx.rates is None else ctx.rates.unbind(0)
        h = kappa.new_empty((K, N)) if hs is None else None
        dpre = kappa.new_empty((K, N))
        g_At = A.new_zeros((R, N)) if needs[1] else None
        g_W = D.new_zeros((N, n + R)) if needs[5] or needs[2] else None
        kap, es, dns = kappa.unbind(0), ext.unbind(0), d_next.unbind(0)
        gks = None if g_kappa is None else g_kappa.unbind(0)
        tanh_backward = torch.ops.aten.tanh_backward.grad_input
        dkT = None
        for t in range(T - 1, -1, -1):
            if hs is None:
                torch.mm(kap[t], At, out=h)
                h.tanh_()
            else:
                h = hs[t]
            if t == T - 1:
                # No later step: only the readout's gradient reaches the rates.
                G, Vt = es[t][:, :n], V[:n]
                gW = None if g_W is None else g_W[:, :n]
            else:
                dns[t].copy_(dkT.t())
                torch.mul(dns[t], gain, out=es[t][:, n:])
                G, Vt, gW = es[t], V, g_W
            if gW is not None:
                gW.addmm_(h.t(), G)
            torch.mm(G, Vt, out=dpre)
            tanh_backward(dpre, h, grad_input=dpre)
            dkT = _through_latents(dpre, kap[t], At, g_At, dkT, decay,
                                   None if gks is None else gks[t])
        g_kappa0 = dkT.t().contiguous()
        g_A = None if g_At is None else g_At.t()
        g_B = g_gain = g_drive = g_D = g_d = None
        if needs[2]:
            g_B = g_W[:, n:].clone()
        if needs[3]:
            g_gain = (torch.zeros_like(gain) if T == 1 else (d_next * HB).sum(0))
        if needs[4] and ctx.has_drive:
            g_drive = d_next
        if needs[5]:
            g_D = g_W[:, :n].t().mul(scale)
        if needs[6]:
            # Summed over what the offset is shared by: time (and trials).
            g_d = ext[..., :n].sum((0,) if d_per_trial else (0, 1)).mul_(scale)
        return (g_kappa0, g_A, g_B, g_gain, g_drive, g_D, g_d,
                None, None, None, None, None)


def latent_squared_error(kappa0, A, B, gain, drive, D, d, X, mask, decay,
                         n_timepoints, n_obs):
    """Fused recurrence, readout and squared error; see :class:`LatentSquaredError`.

    Returns ``(loss, kappa)``.
    """
    return LatentSquaredError.apply(kappa0, A, B, gain, drive, D, d, X, mask, decay,
                                    n_timepoints, n_obs)
