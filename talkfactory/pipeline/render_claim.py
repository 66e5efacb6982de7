"""One render at a time per render key, across processes: the lineage row is the claim.

``LineageRepository.begin_render`` marks a row ``running`` with its owner (host, pid, start time)
and refuses (``RenderBusyError``, transient) while another live process owns it. A render task
calls ``wait_while_rendered_elsewhere`` before deciding to render, so the second of two runs of one
recording and avatar waits for the first and then reuses its MP4 instead of rendering it again.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

from talkfactory.infra.lineage.repository import RenderState
from talkfactory.infra.lineage.rows import render_owner
from talkfactory.pipeline.interrupt import raise_if_stopped

log = logging.getLogger(__name__)


class _Renders(Protocol):
    def get_render(self, render_key: str) -> RenderState | None: ...

    def render_stats(self, render_key: str) -> dict[str, Any] | None: ...


def wait_while_rendered_elsewhere(
    repo: _Renders, render_key: str, *, poll_s: float = 1.0, timeout_s: float = 6 * 3600
) -> RenderState | None:
    """The render's row once no other live process is rendering it (at once when none is).

    Waits while the row is ``running`` under another live process on this host (a dead owner's row
    reads as ``interrupted``; an owner on another host cannot be checked and is not waited for),
    checking for Ctrl-C between polls. Returns the row as it then is
    (``succeeded`` with the other run's output, or whatever it ended as), None when there is no row.
    """
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        state = repo.get_render(render_key)
        if state is None or state.status != "running":
            return state
        owner = render_owner(repo.render_stats(render_key))
        if owner is None or owner.pid == os.getpid() or not owner.is_running_here():
            return state
        if time.monotonic() > deadline:
            return state
        if not told:
            log.info(
                "render %d is being rendered by process %d on %s; waiting", state.id, owner.pid, owner.host
            )
            told = True
        raise_if_stopped(render_key)
        time.sleep(poll_s)


__all__ = ["wait_while_rendered_elsewhere"]
