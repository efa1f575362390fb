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
