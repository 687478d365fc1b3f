"""Torch plumbing shared by every estimator: devices, threads, conversions, seeds."""

import contextlib
import os
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

__all__ = [
    "resolve_device", "usable_device", "limit_threads", "flush_denormals",
    "to_tensor", "to_numpy", "seed_from",
]


def resolve_device(device):
    """Map ``device`` ('cpu', 'cuda', 'cuda:1', 'auto') to a torch device.

    Only devices the estimators can compute on are accepted, and only when this
    machine has them: anything else (a misspelling, 'meta', which holds no data, a
    CUDA index beyond the GPUs present) is a ValueError that says what to use.
    """
    usable = "use 'cpu', 'cuda', 'cuda:N' or 'auto'"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a valid device; {usable}.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                f"machine; use device='cpu' or device='auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s), numbered from 0; "
                f"{usable}.")
    elif dev.type != "cpu":
        # 'meta' holds no data; Apple's 'mps' has no float64, which the
        # initialisation computes in.
        raise ValueError(
            f"device={device!r} is not supported: the estimators compute on the CPU "
            f"or a CUDA GPU; {usable}.")
    return dev


@contextlib.contextmanager
def limit_threads(n_threads):
    """Limit torch's intra-op threads and the BLAS threads for a block, then restore.

    Small recurrent models, and the rank x rank systems of the baselines, run several
    times slower with several threads on few cores (the threads spend more time
    synchronising than computing), and joblib workers must not oversubscribe the
    machine: parallelise across fits instead. ``None`` leaves both settings alone.

    Parameters
    ----------
    n_threads : int or None
        Thread count inside the block, capped at the number of CPUs.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ltr._torch_utils import limit_threads
    >>> before = torch.get_num_threads()
    >>> with limit_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    if n_threads is None:
        yield
        return
    # More threads than CPUs never helps, and torch cannot represent more than a
    # C int of them: counts above the CPU count are capped at it.
    n_threads = max(1, min(int(n_threads), os.cpu_count() or 1))
    old = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(old)


def usable_device(device, owner):
    """The device a fitted model computes on: its own, or the CPU when that is gone.

    Fitted state is stored as numpy arrays, so a model fitted on a GPU and loaded (or
    unpickled) on a machine without one still works, on the CPU, with a warning.

    Parameters
    ----------
    device : str or torch.device
        The device the model was fitted on.
    owner : str
        Name of the model, for the warning.

    Returns
    -------
    device : torch.device
    """
    dev = torch.device(device)
    if dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()):
        return dev
    warnings.warn(
        f"{owner} was fitted on {dev}, which is not available on this machine; "
        f"running on the CPU.", UserWarning, stacklevel=3)
    return torch.device("cpu")


def _flushing_denormals():
    """Whether this thread treats float denormals as zero (torch has no getter)."""
    # In that mode a denormal input reads as zero (and a denormal result is flushed).
    return bool(torch.full((1,), 1e-40, dtype=torch.float32).mul(1.0).item() == 0.0)


@contextlib.contextmanager
def flush_denormals():
    """Treat float denormals as zero on this thread for the block, then restore.

    A recurrence run over many time steps shrinks some gradients by the decay factor
    at every step until they fall below float32's smallest normal number (1e-38),
    where the CPU computes on them tens of times slower. Flushing them to zero
    changes results by less than 1e-38 and nearly halved the time of a fit with 200
    time bins. The previous mode of the thread is restored on exit.
    """
    before = _flushing_denormals()
    if not torch.set_flush_denormal(True):  # not supported by this CPU
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def to_tensor(a, device, dtype=torch.float32):
    """Numpy array (or None) -> tensor on ``device``."""
    if a is None:
        return None
    return torch.as_tensor(np.asarray(a), dtype=dtype).to(device)


def to_numpy(t):
    """Tensor (or None) -> float64 numpy array on the CPU."""
    if t is None:
        return None
    return t.detach().to("cpu", torch.float64).numpy()


def seed_from(random_state):
    """Draw an integer seed for a local torch.Generator from ``random_state``."""
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
