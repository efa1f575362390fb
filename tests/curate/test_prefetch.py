"""The read-ahead thread of scoring (``Prefetcher``) and the one-thread block (``one_cpu_thread``)."""

from __future__ import annotations

import threading
import time
import traceback

import pytest
import torch

from curate.score.cpu_threads import one_cpu_thread
from curate.score.prefetch import Prefetcher


def _wait_until(condition, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_items_come_out_in_the_source_order():
    with Prefetcher(iter(range(500)), depth=3) as items:
        assert list(items) == list(range(500))
    with Prefetcher([]) as items:
        assert list(items) == []


def test_the_thread_reads_ahead_while_the_consumer_holds_an_item():
    produced = []

    def source():
        for k in range(10):
            produced.append(k)
            yield k

    with Prefetcher(source(), depth=2) as items:
        assert next(items) == 0
        # while item 0 is being used, the next two wait in the queue and a third is being built
        assert _wait_until(lambda: len(produced) >= 3)
        assert list(items) == list(range(1, 10))


def test_an_exception_in_the_source_reaches_the_consumer_after_the_items_before_it():
    def failing_source():
        yield "a"
        yield "b"
        raise OSError("disk went away while reading item 3")

    got = []
    with pytest.raises(OSError, match="disk went away") as raised:
        with Prefetcher(failing_source()) as items:
            for item in items:
                got.append(item)
    assert got == ["a", "b"]
    # the traceback still shows where the source failed
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert "failing_source" in frames
    assert not items.running


def test_leaving_early_stops_the_thread_and_it_takes_no_more_items():
    produced, cleaned_up_in = [], []

    def endless():
        k = 0
        try:
            while True:
                produced.append(k)
                yield k
                k += 1
        finally:
            cleaned_up_in.append(threading.current_thread().name)

    with Prefetcher(endless(), depth=2) as items:
        for item in items:
            if item == 3:
                break
    assert _wait_until(lambda: not items.running)
    count = len(produced)
    assert count <= 4 + 2 + 1  # the four taken, the queue's two and the one being built
    time.sleep(0.2)
    assert len(produced) == count
    with pytest.raises(StopIteration):
        next(items)
    assert cleaned_up_in == ["prefetch"]  # the source was closed by its own thread


def test_an_exception_in_the_consumer_stops_a_producer_blocked_on_a_full_queue():
    with pytest.raises(KeyboardInterrupt):
        with Prefetcher(iter(range(10_000)), depth=1) as items:
            assert _wait_until(lambda: items._queue.full())
            raise KeyboardInterrupt
    assert _wait_until(lambda: not items.running, timeout=2.0)


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Prefetcher([1], depth=0)


def test_one_cpu_thread_limits_the_block_and_restores_the_count_also_on_error():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_cpu_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with one_cpu_thread("cpu"):
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_one_cpu_thread_gives_the_same_numbers_as_all_threads():
    torch.manual_seed(0)
    feats = torch.randn(16, 64, 8, 8).relu()
    weight = torch.randn(4, 64)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def outputs():
            z = feats.mean(dim=(2, 3))
            cams = torch.einsum("bdhw,bd->bhw", feats, weight[(z @ weight.t()).argmax(1)])
            return z, torch.nn.functional.interpolate(cams[:, None], size=(32, 32), mode="bilinear")

        expected = outputs()
        with one_cpu_thread():
            got = outputs()
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)
