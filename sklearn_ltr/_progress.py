"""Progress of a batch of fits on stderr: done / total, elapsed, estimated time left.

Used by :func:`~sklearn_ltr.model_selection.compare_estimators` and
:func:`~sklearn_ltr.model_selection.learning_test` with ``verbose``, and so by the
command line. On a terminal one line is rewritten in place; otherwise (a log file,
a pipe) a line is written at the start, at most every ``interval`` seconds, and at
the end. Never stdout: results printed there stay clean to redirect.
"""

import math
import sys
import time

# Seconds between lines when stderr is not a terminal, and between rewrites of the
# line when it is.
LOG_INTERVAL = 10.0
TTY_INTERVAL = 0.5


def format_duration(seconds):
    """A duration for people: ``'8 s'``, ``'3 min 05 s'``, ``'2 h 07 min'``.

    Examples
    --------
    >>> from sklearn_ltr._progress import format_duration
    >>> format_duration(8.4), format_duration(185), format_duration(7620)
    ('8 s', '3 min 05 s', '2 h 07 min')
    """
    seconds = int(round(max(seconds, 0.0)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Count finished tasks and show it: ``12/40 fits done, 1 min 05 s elapsed, ...``.

    Parameters
    ----------
    total : int
        Number of tasks.
    what : str, default="fits"
        What is counted.
    stream : file-like, default=None
        Where to write; None: ``sys.stderr`` at construction.
    interval : float, default=None
        Least seconds between two updates; None: 0.5 on a terminal, 10 otherwise.

    Examples
    --------
    >>> import io
    >>> from sklearn_ltr._progress import Progress
    >>> out = io.StringIO()
    >>> progress = Progress(2, stream=out)
    >>> progress.update(); progress.update(); progress.close()
    >>> out.getvalue().splitlines()[-1]
    '2/2 fits done, 0 s elapsed'
    """

    def __init__(self, total, *, what="fits", stream=None, interval=None):
        self.total = int(total)
        self.what = what
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self._tty = bool(isatty and isatty())
        if interval is None:
            interval = TTY_INTERVAL if self._tty else LOG_INTERVAL
        self.interval = interval
        self.done = 0
        self._start = time.monotonic()
        self._last = -math.inf
        self._width = 0
        self._show(force=True)

    def line(self, now=None):
        """The progress as one line of text."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        text = (f"{self.done}/{self.total} {self.what} done, "
                f"{format_duration(elapsed)} elapsed")
        if 0 < self.done < self.total:
            left = elapsed / self.done * (self.total - self.done)
            text += f", about {format_duration(left)} left"
        return text

    def update(self, n=1):
        """Count ``n`` more finished tasks."""
        self.done += n
        self._show(force=self.done >= self.total)

    def close(self):
        """End the line on a terminal."""
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def _show(self, force):
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        text = self.line(now)
        if self._tty:
            # Pad over the longer line this one replaces.
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
