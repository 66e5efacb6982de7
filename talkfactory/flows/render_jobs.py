"""Run a set of render jobs: one Prefect task per job, on the executor the caller names.

Every runner of renders (``process-recording`` for ``talkfactory run``, ``scan`` and the factory;
``nightly-reprocess``) ends here. A job failing fails alone: its row says why. A setup error in
any job (the model cannot load, the exports store refuses writes: ``settle.is_bad_input`` is
false for a permanent error) is raised once every job has ended: it is not about one item, and
the caller stops.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger
from prefect.futures import PrefectFuture, wait

from talkfactory.errors import InterruptedRunError, PermanentError
from talkfactory.pipeline.jobs.model import JobResult, RenderJob
from talkfactory.pipeline.jobs.settle import is_bad_input
from talkfactory.tasks.render_job import ExecutorKind, executor_for, render_job_task


def render_jobs(jobs: Sequence[RenderJob], executor: ExecutorKind) -> list[JobResult]:
    """Run ``jobs`` (at most the executor's slots at once); one row per job, in the jobs' order."""
    if not jobs:
        return []
    logger = get_run_logger()
    executor_for(executor)  # a setup problem (no Ray cluster) stops here, before any task run
    # All submitted at once: the executor admits as many as it has slots (idle actors, local
    # threads); the others wait their turn inside their task run.
    futures: list[PrefectFuture[JobResult]] = [render_job_task.submit(job, executor) for job in jobs]
    wait(futures)
    rows: list[JobResult] = []
    setup_error: PermanentError | None = None
    for job, future in zip(jobs, futures, strict=True):
        try:
            rows.append(future.result())
        except InterruptedRunError as exc:  # stopped on request: not this job's fault, nor the setup's
            rows.append(failed_row(job, exc))
        except PermanentError as exc:
            if not is_bad_input(exc):
                setup_error = setup_error or exc
            rows.append(failed_row(job, exc))
        except Exception as exc:  # noqa: BLE001 - one job's failure is its own row
            logger.error("%s: %s", job.label, exc)
            rows.append(failed_row(job, exc))
    if setup_error is not None:
        raise setup_error
    return rows


def failed_row(job: RenderJob, exc: BaseException) -> JobResult:
    stopped = isinstance(exc, KeyboardInterrupt | InterruptedRunError)
    return JobResult.of(
        job, "interrupted" if stopped else "failed", error=str(exc), bad_input=is_bad_input(exc)
    )
