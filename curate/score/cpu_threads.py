"""Run small CPU tensor work on one thread: ``one_cpu_thread``.

Scoring's work around the forward (the CAM heatmaps, the probabilities, the finite checks) runs
dozens of tensor operations on batch-sized tensors. Split over threads each one costs a thread
hand-off, which is nothing on an idle machine but a scheduler time slice (several ms) on a busy one;
on one thread each costs well under a millisecond. The forward keeps every thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_cpu_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """Limit torch's intra-op CPU threads to one inside the block (nothing changes on a GPU).

    The thread count is restored on exit, also when the block raises. Results are the same: the
    operations run here split their work by output element, not by reduction order.
    """
    previous = torch.get_num_threads()
    if torch.device(device).type != "cpu" or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
