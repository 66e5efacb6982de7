"""Where long steps report progress: the CLI installs a rich display, Prefect runs add artifacts.

One process-wide sink, because tasks run on worker threads that the CLI does not create.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class ProgressSink(Protocol):
    def start(self, key: str, label: str, total: int, unit: str = "frames") -> None: ...

    def update(self, key: str, done: int, total: int) -> None: ...

    def finish(self, key: str, ok: bool, note: str = "") -> None: ...


class _NullSink:
    def start(self, key: str, label: str, total: int, unit: str = "frames") -> None:
        pass

    def update(self, key: str, done: int, total: int) -> None:
        pass

    def finish(self, key: str, ok: bool, note: str = "") -> None:
        pass


_sink: ProgressSink = _NullSink()


def set_progress_sink(sink: ProgressSink | None) -> None:
    global _sink
    _sink = sink if sink is not None else _NullSink()


def progress_sink() -> ProgressSink:
    return _sink


FRAME_PROGRESS_EVERY_S = 2.0
"""How often a running render writes its frame count to lineage (the web page's live view reads it)."""


def lineage_frame_progress(
    annotate: Callable[[dict[str, Any]], None], *, every_s: float = FRAME_PROGRESS_EVERY_S
) -> Callable[[int, int], None]:
    """A progress callback that records ``{"progress": {"done", "total"}}`` at most every ``every_s``.

    A failed write is dropped: progress is a courtesy, never a reason to fail the render.
    """
    last = [0.0]

    def call(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < every_s and done < total:
            return
        last[0] = now
        try:
            annotate({"progress": {"done": int(done), "total": int(total)}})
        except Exception:  # noqa: BLE001 - see above
            log.debug("could not record frame progress", exc_info=True)

    return call
