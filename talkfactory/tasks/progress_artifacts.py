"""Prefect progress artifacts that never hold up a render.

Every call to the Prefect API happens on one background thread per artifact; ``update`` only
stores the newest value and returns. When the API is slow or gone (a Ctrl-C took the server down,
the network dropped), updates are dropped instead of retried for a minute each while frames wait.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

STEP_PCT = 5.0
"""Publish at most every this many percent (and at 100 %)."""
CLOSE_WAIT_S = 1.0
"""How long ``close`` waits for the last update to go out before leaving it to the daemon thread."""


class BackgroundProgressArtifact:
    """A progress artifact created and updated on its own daemon thread (in the caller's Prefect context)."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._wake = threading.Condition()
        self._pending: float | None = None
        self._last = -1.0
        self._closed = False
        self.dead = False
        """True once an API call failed: later updates are dropped."""
        # The task run's context (run ids, client settings) so the artifact is linked to the render.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="progress-artifact", daemon=True
        )
        self._thread.start()

    def update(self, done: int, total: int) -> None:
        """Note progress; never blocks on the API."""
        pct = 100.0 * done / max(total, 1)
        if self.dead or (pct - self._last < STEP_PCT and done < total):
            return
        self._last = pct
        with self._wake:
            self._pending = pct
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=CLOSE_WAIT_S)

    def _run(self) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        try:
            artifact_id: Any = create_progress_artifact(progress=0.0, description=self._description)
        except Exception as exc:  # noqa: BLE001 - progress display must never fail a render
            self._give_up(exc)
            return
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                pct, self._pending = self._pending, None
                closed = self._closed
            if pct is not None:
                try:
                    update_progress_artifact(artifact_id=artifact_id, progress=pct)
                except Exception as exc:  # noqa: BLE001
                    self._give_up(exc)
                    return
            if closed:
                return

    def _give_up(self, exc: BaseException) -> None:
        self.dead = True
        log.debug("progress artifact %r: %s; no more updates", self._description, exc)


__all__ = ["BackgroundProgressArtifact"]
