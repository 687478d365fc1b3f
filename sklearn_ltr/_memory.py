"""How much memory is left, and a clear refusal before an allocation that cannot fit."""

import os

import torch

__all__ = ["check_memory", "check_memory_on", "format_bytes"]


def format_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"  # pragma: no cover


def _cgroup_memory_left():
    """Bytes left under this process's cgroup memory limit, or None without a limit.

    In a container /proc/meminfo describes the host; the cgroup limit is what the
    kernel enforces (an allocation past it gets the process killed, not a MemoryError).
    """
    for limit_file, usage_file in [
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/memory/memory.usage_in_bytes")]:
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        # "max" (v2) or a huge sentinel (v1) means no limit.
        if limit == "max" or int(limit) >= 2 ** 60:
            return None
        return max(int(limit) - usage, 0)
    return None


def _available_memory(device):
    """Bytes that can still be allocated on ``device``, or None when unknown.

    CPU: ``psutil.virtual_memory().available`` when psutil is installed, else
    ``MemAvailable`` of /proc/meminfo, else ``os.sysconf('SC_AVPHYS_PAGES')`` pages
    (free pages only: an underestimate that ignores reclaimable caches); capped by
    the cgroup limit when there is one. CUDA: the free memory reported by the driver
    (``torch.cuda.mem_get_info``) plus what torch's caching allocator holds unused.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(device)
        cached = (torch.cuda.memory_reserved(device)
                  - torch.cuda.memory_allocated(device))
        return int(free + max(cached, 0))
    if device.type != "cpu":
        return None
    available = None
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        available = int(psutil.virtual_memory().available)
    else:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        available = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    left = _cgroup_memory_left()
    if left is not None:
        available = left if available is None else min(available, left)
    return available


def check_memory(needed, device, *, what, remedy):
    """Raise a ValueError when ``needed`` bytes will not fit in ``device``'s memory.

    Called before a large allocation, so that an oversized problem fails at once with
    a message instead of swapping, being killed by the kernel's out-of-memory killer,
    or failing deep inside torch.

    Parameters
    ----------
    needed : int
        Estimated peak number of bytes.
    device : str or torch.device
    what : str
        What needs the memory, e.g. ``"LowTensorRankRNN.fit on X of shape (...)"``.
    remedy : str
        How to need less, appended to the message.

    Raises
    ------
    ValueError
        When the available memory is known and smaller than ``needed``.

    Examples
    --------
    >>> from sklearn_ltr.base import check_memory
    >>> check_memory(1024, "cpu", what="a tiny fit", remedy="")  # fits: no error
    """
    available = _available_memory(device)
    if available is None or needed <= available:
        return
    raise ValueError(
        f"{what} would need about {format_bytes(needed)} of memory on "
        f"{torch.device(device)}, but only {format_bytes(available)} is available. "
        f"{remedy}")


def check_memory_on(host, device_bytes, device, *, what, remedy):
    """Check host and device memory; on the CPU, their sum (see check_memory).

    ``host`` bytes must fit in host memory and ``device_bytes`` on ``device``.

    Parameters
    ----------
    host, device_bytes : int
        Estimated peaks in host memory and on the device.
    device : torch.device
    what, remedy : str
        As in :func:`check_memory`; off the CPU, the device's refusal also suggests
        ``device='cpu'``.

    Raises
    ------
    ValueError
        When either does not fit.
    """
    if device.type == "cpu":
        check_memory(host + device_bytes, device, what=what, remedy=remedy)
        return
    check_memory(host, "cpu", what=what, remedy=remedy)
    check_memory(device_bytes, device, what=what,
                 remedy=remedy + " Or use device='cpu'.")
