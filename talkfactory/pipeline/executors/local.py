"""The local executor: render jobs in this process, the model loaded once per process."""

from __future__ import annotations

import threading
from typing import Any

from talkfactory.pipeline.jobs.execute import execute_job
from talkfactory.pipeline.jobs.model import JobResult, RenderJob
from talkfactory.pipeline.render import ProgressFn

_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()


class LocalExecutor:
    """Runs each job on the calling thread; every thread shares this process's loaded models."""

    name = "local"

    def __init__(self, slots: int = 2) -> None:
        self.slots = slots
        """Jobs rendering at once (threads); two overlap one job's encode with the next one's render."""
        self._admit = threading.BoundedSemaphore(slots)

    def run(self, job: RenderJob, progress: ProgressFn | None = None) -> JobResult:
        with self._admit:
            with _LOCK:
                # Loading is the one step two threads must not do at once (it would load twice).
                _warm(job)
            return execute_job(job, _CACHE, progress=progress)

    def model_loads(self) -> int:
        return int(_CACHE.get("model_loads", 0))


def _warm(job: RenderJob) -> None:
    from talkfactory.infra.settings import get_settings
    from talkfactory.pipeline.jobs.execute import loaded_backend

    loaded_backend(_CACHE, job, get_settings())
