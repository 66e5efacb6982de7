"""The render task: one ``RenderJob`` handed to an executor, one Prefect task run per job.

The task adds what only Prefect has: retries of transient failures (with backoff and jitter), the
run's provenance on the job, and a progress artifact when the job runs in this process. Which
executor renders is the caller's choice; what a render is, is ``pipeline.jobs``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from talkfactory.errors import ExecutorTimeoutError, RunCrashedError
from talkfactory.pipeline.jobs.model import JobResult, RenderJob
from talkfactory.pipeline.render import ProgressFn
from talkfactory.tasks.context import provenance, retry_transient
from talkfactory.tasks.progress_artifacts import BackgroundProgressArtifact

log = logging.getLogger(__name__)

ExecutorKind = Literal["local", "ray"]


class Executor(Protocol):
    name: str
    slots: int

    def run(self, job: RenderJob, progress: ProgressFn | None = None) -> JobResult: ...


_executors: dict[str, Executor] = {}


def executor_for(kind: ExecutorKind) -> Executor:
    """One executor of each kind per process (the local one holds this process's loaded models)."""
    if kind not in _executors:
        if kind == "ray":
            from talkfactory.pipeline.executors.ray_executor import RayExecutor

            _executors[kind] = RayExecutor.from_settings()
        else:
            from talkfactory.pipeline.executors.local import LocalExecutor

            _executors[kind] = LocalExecutor()
    return _executors[kind]


def retry_render(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures, except an executor that crashed or timed out under the job: Ray has
    already restarted the actor and retried it once, and a job that kills its executor twice would
    kill it again (one layer of crash retries, not three)."""
    try:
        state.result()
    except (RunCrashedError, ExecutorTimeoutError):
        return False
    except Exception:  # noqa: BLE001 - the same question retry_transient asks
        return retry_transient(task, task_run, state)
    return False


@task(
    name="render",
    task_run_name="render {job.label}",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_render,
    cache_policy=NO_CACHE,
)
def render_job_task(job: RenderJob, executor: ExecutorKind = "local") -> JobResult:
    """Render ``job`` on ``executor`` unless lineage shows it done (``pipeline.jobs.execute``)."""
    job = dataclasses.replace(job, provenance=provenance())
    runner = executor_for(executor)
    # Progress goes out from a background thread: a slow or dead Prefect API never holds up a frame.
    artifact = BackgroundProgressArtifact(f"render {job.label}") if runner.name == "local" else None
    try:
        return runner.run(job, progress=artifact.update if artifact else None)
    finally:
        if artifact is not None:
            artifact.close()
