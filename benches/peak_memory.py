"""Peak resident memory of the current process, as the benches report it."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM`` in ``/proc/self/status``), in MB.

    Not ``ru_maxrss``: Linux carries a parent's high-water mark into a child across fork and
    exec, so a child of a large process would report the parent's memory as its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonymousPeak:
    """Highest ``RssAnon`` of this process while the ``with`` block runs, in MB (``.mb``).

    The kernel keeps no high-water mark of anonymous memory, so a thread samples it. This is the
    memory the process itself holds; peak RSS adds the pages of memory-mapped files it has read,
    which are page cache the kernel drops under pressure (read back from disk if needed again).
    """

    def __init__(self, every_s: float = 0.2):
        import threading

        self.every_s, self.mb = every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.mb = max(self.mb, _status_mb("RssAnon"))
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> AnonymousPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = max(self.mb, _status_mb("RssAnon"))
