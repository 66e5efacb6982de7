"""A process-wide stop request: Ctrl-C (or SIGTERM) asks every long loop to end at its next step.

The CLI's signal handler calls ``request_stop``; the render loop checks ``raise_if_stopped`` once per
frame and the speech step once per chunk, so work stops within a frame, their ``with`` blocks kill
ffmpeg and delete temporary files, and the render is recorded as ``interrupted`` (an
``InterruptedRunError`` is permanent: never retried). Plain ``threading.Event``: no Prefect here,
so a render on any executor (threads, Ray actors in this process) sees the same request.
"""

from __future__ import annotations

import threading

from talkfactory.errors import InterruptedRunError

_stop = threading.Event()
_reason = "interrupted"


def request_stop(reason: str = "interrupted (Ctrl-C)") -> None:
    """Ask every running step in this process to stop at its next check."""
    global _reason
    _reason = reason
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def raise_if_stopped(subject: str | None = None) -> None:
    """``InterruptedRunError`` naming ``subject`` when a stop was requested."""
    if _stop.is_set():
        raise InterruptedRunError(_reason, subject=subject)


def reset() -> None:
    """Forget a stop request (tests, and a long-lived worker that goes on after one)."""
    _stop.clear()


__all__ = ["raise_if_stopped", "request_stop", "reset", "stop_requested"]
