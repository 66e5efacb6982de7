"""Where long steps report progress: the CLI installs a rich display, Prefect runs add artifacts.

One process-wide sink, because tasks run on worker threads that the CLI does not create.
"""

from __future__ import annotations

from typing import Protocol


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
