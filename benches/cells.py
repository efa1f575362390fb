"""Run a bench's independent cells (one training plus its evaluation each) several at a time.

Each cell runs in its own process on one core, with progress bars off; the parent shows one bar
over the cells with rate and ETA. Cells cache their own results, so an interrupted run resumes.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wood_train.progress import progress  # noqa: E402


def _one_quiet_core() -> None:
    os.environ["HARDOOD_QUIET"] = "1"
    import torch

    torch.set_num_threads(1)


def run_cells(fn: Callable, tasks: Sequence[tuple], jobs: int, desc: str = "cells") -> list:
    """``fn(*task)`` for every task, ``jobs`` at a time; results in the order of ``tasks``.

    ``jobs`` 1 runs them here, one after another, with every core and the cells' own bars.
    """
    bar = progress(total=len(tasks), desc=desc, unit="cell", disable=False)
    if jobs <= 1:
        results = []
        for task in tasks:
            results.append(fn(*task))
            bar.update(1)
        bar.close()
        return results
    context = multiprocessing.get_context("spawn")  # no fork after torch has started its threads
    results = [None] * len(tasks)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_one_quiet_core) as pool:
        futures = {pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update(1)
    bar.close()
    return results
