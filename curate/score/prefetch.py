"""Read ahead in a background thread: ``Prefetcher`` yields a source's items while it builds the next.

Scoring without DataLoader worker processes would otherwise read, hash and decode a batch, then run
its forward, then read the next one. Reading a file, ``hashlib`` and Pillow's decoding release the
GIL, so a thread that builds the next batch overlaps most of that work with the forward, without a
worker process competing for memory and start-up time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_ITEM, _DONE, _ERROR = "item", "done", "error"
_POLL_S = 0.1  # how often a blocked producer checks whether the consumer has stopped


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a daemon thread, at most ``depth`` items ahead of the consumer.

    Items come out in the source's order. An exception raised by the source is raised again in
    the consumer, with its traceback, when the consumer reaches it. Leaving the ``with`` block (or
    calling ``close``), also early or on an exception, stops the thread: it finishes the item it
    is building, takes no more from the source and closes it (a generator's ``finally`` runs).

    Examples
    --------
    >>> with Prefetcher(range(3)) as items:
    ...     list(items)
    [0, 1, 2]
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "prefetch"):
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=self._produce, args=(source,), name=name, daemon=True
        )
        self._thread.start()

    def _put(self, entry: tuple[str, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, source: Iterable[T]) -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not self._put((_ITEM, item)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((_ERROR, exc))
            return
        finally:
            # a generator left early runs its cleanup here, in this thread, not at garbage collection
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._put((_DONE, None))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value  # type: ignore[return-value]
        self._finished = True
        self._thread.join()
        if kind == _ERROR:
            raise value  # type: ignore[misc]
        raise StopIteration

    def close(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (``timeout`` seconds at most); items not taken are dropped."""
        self._finished = True
        self._stop.set()
        while True:  # a producer blocked on a full queue sees the stop within _POLL_S
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the background thread is still alive."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
