"""Helpers shared by the benchmark scripts: data, timing, machine record, tables.

Not part of the package; imported by ``bench_iteration.py`` and ``bench_fit.py``,
which put this folder on ``sys.path``.
"""

import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from sklearn_ltr.datasets import make_low_tensor_rank_rnn

TAU = 2.0  # LowTensorRankRNN default
N_WARMUP = 3

# The reference problem of the performance targets.
DEFAULT_SIZE = {"n_trials": 250, "n_timepoints": 50, "n_neurons": 100,
                "n_units": 200, "rank": 5}


def planted_data(n_trials, n_timepoints, n_neurons, rank, n_units, random_state=0):
    """Planted low-tensor-rank RNN data (a Bunch) at the estimator's default ``tau``."""
    return make_low_tensor_rank_rnn(
        n_trials=n_trials, n_timepoints=n_timepoints, n_neurons=n_neurons, rank=rank,
        n_units=n_units, tau=TAU, random_state=random_state)


def time_ms(fn, repeats, warmup=N_WARMUP, setup=None):
    """Median and min wall time of ``fn()`` in ms (``setup()`` runs untimed).

    With ``setup``, ``fn`` receives what ``setup()`` returned.
    """
    for _ in range(warmup):
        arg = setup() if setup is not None else None
        fn(arg) if setup is not None else fn()
    times = []
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        t0 = time.perf_counter()
        fn(arg) if setup is not None else fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times),
            "repeats": repeats}


def timed(fn):
    """``(seconds, fn())`` for one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def loadavg():
    """The 1, 5 and 15 minute load averages."""
    return list(os.getloadavg())


def cpu_model():
    """CPU model name from /proc/cpuinfo (falls back to ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    """What the numbers were measured on."""
    import sklearn

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(), "logical_cpus": os.cpu_count(), "usable_cpus": usable,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "numpy": np.__version__, "sklearn": sklearn.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "loadavg": loadavg(),
    }


def print_table(title, columns, rows, note=None):
    """Print ``rows`` (lists of cells) under ``columns`` (header strings)."""

    def cell(v):
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            if v != v:
                return "-"
            a = abs(v)
            if a != 0 and (a < 1e-3 or a >= 1e5):
                return f"{v:.3g}"
            return f"{v:.4g}" if a < 10 else f"{v:.1f}"
        return "-" if v is None else str(v)

    text = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    print()
    print(title)
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if note:
        print(note)


def finish(out, machine, args, t_start):
    """Record the run's time and final load in ``out``, print them, save the JSON.

    ``args`` gives ``n_jobs`` and ``json`` (the path, or None to write nothing).
    """
    out["seconds"] = time.perf_counter() - t_start
    out["loadavg_end"] = loadavg()
    print(f"{out['seconds']:.0f} s on {machine['cpu_model']} "
          f"({machine['usable_cpus']} usable CPUs, --n-jobs {args.n_jobs}), load "
          f"{machine['loadavg'][0]:.2f} at start, {out['loadavg_end'][0]:.2f} at end")
    if args.json:
        save_json(args.json, out)


def save_json(path, results):
    """Write ``results`` to ``path`` (numpy scalars and arrays become JSON numbers)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with open(path, "w") as fh:
        json.dump(results, fh, indent=2, default=default)
