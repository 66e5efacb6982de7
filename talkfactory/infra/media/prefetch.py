"""A reader thread feeding a bounded queue, so reading a pipe overlaps whatever consumes the items.

The thread only ever holds ``depth`` finished items plus the one it is reading, so memory stays
bounded however long the stream is. The process behind the pipe belongs to the caller: to stop
early, kill it (the blocked read then returns EOF) and call ``close``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class _End:
    pass


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = _End()


class Prefetcher(Generic[T]):
    """Runs ``read_one`` in a thread until it returns ``None``; iterate to receive the items in order."""

    def __init__(self, read_one: Callable[[], T | None], *, depth: int, name: str = "prefetch") -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.depth = depth
        self._read_one = read_one
        self._queue: queue.Queue[T | _End | _Failure] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.max_queued = 0
        """Most items ever waiting in the queue (never above ``depth``)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: T | _End | _Failure) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            self.max_queued = max(self.max_queued, self._queue.qsize())
            return True
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._read_one()
            except BaseException as exc:  # handed to the consumer, who re-raises it
                self._put(_Failure(exc))
                return
            if item is None:
                self._put(_END)
                return
            if not self._put(item):
                return

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the caller has unblocked any pending read) and drop queued items."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=timeout)


__all__ = ["Prefetcher"]
