"""Submit ``render-clip`` runs, wait for them, and resubmit those whose worker died.

Each job's flow run is created with an idempotency key derived from lineage (``idempotency_key``):
a parent that is retried, or a nightly run that plans the same job twice, gets the existing child
back instead of a second render. A child that ends ``Crashed`` (its worker or machine went away,
marked by the zombie automation) is recorded in lineage as a failed attempt, which moves the key
on, and is submitted again for another worker to take; a child that ends ``Failed`` failed on its
own (bad input, or transient errors that outlasted its retries) and is reported, not resubmitted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment

from talkfactory.errors import RunCrashedError
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.settings import get_settings
from talkfactory.pipeline.fanout import RenderJob, idempotency_key, job_variant
from talkfactory.pipeline.ingest import store_from_settings
from talkfactory.tasks.context import provenance

_JOB_KIND, _JOB_STEP = "render-job", "render-clip"


@dataclass
class _Child:
    job: RenderJob
    resubmission: int
    run: FlowRun
    submitted_at: float
    runs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FanOut:
    """How to submit: which deployment, with which shared parameters, how patiently."""

    deployment: str
    common: dict[str, Any]
    """Parameters every job shares (backend, checkpoint, video_encoder, force)."""
    params_hash: str
    backend_version: str
    force_token: str | None = None
    """Set (to the parent's run id) when the parent forces renders lineage says are done."""
    max_resubmits: int = 2
    poll_s: float = 2.0
    timeout_s: float | None = None


def fan_out(jobs: list[RenderJob], how: FanOut, repo: LineageRepository, label: str) -> list[dict[str, Any]]:
    """Run every job as a ``render-clip`` flow run; one summary row per job, in the jobs' order."""
    logger = get_run_logger()
    children = [_submit(job, how, repo) for job in jobs]
    progress = _Progress(len(children), f"renders of {label}")
    rows: dict[int, dict[str, Any]] = {}
    started = time.monotonic()
    while len(rows) < len(children):
        waiting = [i for i in range(len(children)) if i not in rows]
        states = _read([children[i].run.id for i in waiting])
        for i in waiting:
            child, run = children[i], states.get(children[i].run.id)
            if run is None or run.state is None or not run.state.is_final():
                continue
            if run.state.type != StateType.COMPLETED:
                _record_unfinished(child, run, how, repo)
            if run.state.type == StateType.CRASHED and len(child.runs) < how.max_resubmits:
                logger.warning(
                    "render %s crashed on its worker (%s); submitting it again",
                    child.job.export_key,
                    run.state.message or "no message",
                )
                children[i] = _submit(child.job, how, repo, previous=child.runs + [str(run.id)])
                continue
            rows[i] = _row(child, run, repo)
            progress.set(len(rows))
            if rows[i]["status"] != "succeeded":
                logger.error("render %s: %s", child.job.export_key, rows[i]["error"])
        if how.timeout_s is not None and time.monotonic() - started > how.timeout_s:
            for i in range(len(children)):
                rows.setdefault(i, _timed_out(children[i], how.timeout_s))
            break
        if len(rows) < len(children):
            time.sleep(how.poll_s)
    return [rows[i] for i in range(len(children))]


def _record_unfinished(child: _Child, run: FlowRun, how: FanOut, repo: LineageRepository) -> None:
    """A child that ended without a render moves its job's idempotency key on (see ``_submit``)."""
    assert run.state is not None
    ended = (run.state.name or run.state.type.value).lower()
    message = f"flow run {run.id} {ended}: {run.state.message or 'no message'}"
    repo.record_attempt(
        subject_kind=_JOB_KIND,
        subject_id=child.job.clip_id,
        subject_ref=child.job.identity(how.params_hash, how.backend_version),
        step=_JOB_STEP,
        error=RunCrashedError(message) if run.state.type == StateType.CRASHED else RuntimeError(message),
        prov=provenance(),
    )


def _submit(
    job: RenderJob, how: FanOut, repo: LineageRepository, previous: list[str] | None = None
) -> _Child:
    identity = job.identity(how.params_hash, how.backend_version)
    n = repo.count_attempts(subject_kind=_JOB_KIND, subject_ref=identity, step=_JOB_STEP, status="failed")
    run = cast(
        FlowRun,
        run_deployment(
            how.deployment,
            parameters={**job.parameters(), **how.common},
            idempotency_key=idempotency_key(identity, n, job_variant(job, how.common), how.force_token),
            timeout=0,
            as_subflow=True,
        ),
    )
    return _Child(job, n, run, time.time(), list(previous or []))


def _read(ids: list[UUID], page: int = 200) -> dict[UUID, FlowRun]:
    # The API caps one read at 200 runs; a big recording fans out to more than that.
    found: dict[UUID, FlowRun] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(ids), page):
            chunk = ids[start : start + page]
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)
            )
            found.update((r.id, r) for r in runs)
    return found


def _row(child: _Child, run: FlowRun, repo: LineageRepository) -> dict[str, Any]:
    assert run.state is not None
    row: dict[str, Any] = {
        "clip": child.job.clip_number,
        "avatar": _avatar_name(child.job),
        "avatar_id": child.job.avatar_id,
        "export_key": child.job.export_key,
        "status": "succeeded" if run.state.type == StateType.COMPLETED else run.state.type.value.lower(),
        "flow_run": str(run.id),
        "runs": len(child.runs) + 1,
        "error": None if run.state.type == StateType.COMPLETED else (run.state.message or run.state.name),
        "queued_s": _seconds(run.expected_start_time, run.start_time),
        "wall_s": run.total_run_time.total_seconds() if run.total_run_time else None,
    }
    if run.state.type == StateType.COMPLETED:
        uri = store_from_settings(child.job.exports_url, get_settings()).url(child.job.export_key)
        export = repo.find_export(uri)
        render = repo.get_render_row(export["render_id"]) if export else None
        if render is not None:
            stats = render.get("stats") or {}
            row.update(
                export=export["uri"] if export else None,
                duration_s=render["duration_s"],
                rtf=(render["wall_s"] / render["duration_s"])
                if render["wall_s"] and render["duration_s"]
                else None,
                encoder=render["encoder"],
                attempts=render["attempts"],
                worker=stats.get("worker"),
                gpu=stats.get("gpu"),
            )
    return row


def _timed_out(child: _Child, timeout_s: float) -> dict[str, Any]:
    return {
        "clip": child.job.clip_number,
        "avatar": _avatar_name(child.job),
        "avatar_id": child.job.avatar_id,
        "export_key": child.job.export_key,
        "status": "timed out",
        "flow_run": str(child.run.id),
        "runs": len(child.runs) + 1,
        "error": f"not finished after {timeout_s:.0f} s; it may still finish (nightly-reprocess will see it)",
    }


def _avatar_name(job: RenderJob) -> str:
    return PurePosixPath(job.avatar.rstrip("/")).stem


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a and b else None


class _Progress:
    """A progress artifact over the fan-out, moved as renders finish."""

    def __init__(self, total: int, description: str) -> None:
        self.total = total
        self._id: UUID | None = None
        try:
            self._id = create_progress_artifact(progress=0.0, description=description)  # type: ignore[assignment]
        except Exception:  # noqa: BLE001, S110 - progress display must never fail the run
            pass

    def set(self, done: int) -> None:
        if self._id is None:
            return
        try:
            update_progress_artifact(artifact_id=self._id, progress=100.0 * done / max(self.total, 1))
        except Exception:  # noqa: BLE001, S110
            pass
