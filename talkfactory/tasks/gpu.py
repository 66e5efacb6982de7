"""The GPU guard: a Prefect global concurrency limit per (host, GPU), held around the render itself.

Holding the slot only around the render (not the whole run) lets a worker with ``--limit 2`` start
the next run, fetch its clip and prepare its avatar while the GPU is still busy with the current one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from talkfactory.infra.settings import Settings
from talkfactory.pipeline.fanout import gpu_name, gpu_slot_name, worker_name

log = logging.getLogger(__name__)


@dataclass
class SlotUse:
    """Where a render ran and when it held its GPU; goes into the render's lineage stats."""

    worker: str
    gpu: str
    slot: str
    waited_s: float = 0.0
    acquired_at: datetime | None = None
    released_at: datetime | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def stats(self) -> dict[str, object]:
        return {
            "worker": self.worker,
            "gpu": self.gpu,
            "gpu_slot": self.slot,
            "slot_wait_s": round(self.waited_s, 3),
            "slot_acquired_at": self.acquired_at.isoformat() if self.acquired_at else None,
            "slot_released_at": self.released_at.isoformat() if self.released_at else None,
            **self.extra,
        }


def ensure_gpu_limit(name: str, slots: int) -> None:
    """Create (or resize) the limit; ``concurrency(strict=True)`` then refuses to run without it."""
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, slots)


@contextmanager
def gpu_slot(settings: Settings) -> Iterator[SlotUse]:
    """Hold one slot of this worker's GPU limit for the duration of the block."""
    use = SlotUse(worker=worker_name(settings), gpu=gpu_name(settings), slot=gpu_slot_name(settings))
    try:
        ensure_gpu_limit(use.slot, settings.gpu_slots)
    except Exception as exc:
        # Two workers creating the same limit at once: one wins, the other finds it there.
        log.debug("creating %s raced: %s", use.slot, exc)
    asked = datetime.now(UTC)
    # strict: a render must never run unguarded because the limit is missing; the lease is renewed
    # in the background, and a render outliving one failed renewal is better than a killed one.
    with concurrency(use.slot, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        use.acquired_at = datetime.now(UTC)
        use.waited_s = (use.acquired_at - asked).total_seconds()
        try:
            yield use
        finally:
            use.released_at = datetime.now(UTC)
