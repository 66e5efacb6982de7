"""The ingest job: find new recordings in a bucket or drop folder, render each, publish the MP4s.

Poll-based, because that works on every S3 (SeaweedFS has no bucket notifications) and on folders:
each run lists the ingest location, and lineage's ``source_objects`` table is the cursor. Run it on a
schedule (a Prefect deployment with an interval, or cron calling ``talkfactory scan``); a run with
nothing new costs one listing and a few batched queries.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from talkfactory.errors import ConfigurationError
from talkfactory.flows.process_recording import process_recording
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.lineage.repository import SourceObjectState, SourceStatus
from talkfactory.infra.settings import get_settings
from talkfactory.infra.stores import ObjectInfo
from talkfactory.pipeline.ingest import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_SETTLE_SECONDS,
    ScanPlan,
    store_from_settings,
)
from talkfactory.pipeline.jobs.avatars import avatar_sources
from talkfactory.pipeline.jobs.model import RenderOptions
from talkfactory.pipeline.jobs.settle import source_status_after_error
from talkfactory.pipeline.speech import SpeechParams
from talkfactory.tasks.context import repository
from talkfactory.tasks.ingest import (
    ItemOutcome,
    check_exports_task,
    claim_source_task,
    fetch_source_task,
    plan_scan_task,
    quarantine_rejected_task,
    settle_source,
)


@dataclass(frozen=True)
class _Job:
    """What every item of one scan shares."""

    ingest_url: str
    exports_url: str
    avatars: list[str]
    """As given (paths, keys, URLs); ``process-recording`` resolves them where it runs."""
    work_root: Path
    database_url: str
    render: RenderOptions
    speech: SpeechParams | None
    max_attempts: int
    dispatch: bool = False


@flow(name="scan-ingest")
def scan_ingest(
    ingest_url: str | None = None,
    avatars: list[str] | None = None,
    exports_url: str | None = None,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    dry_run: bool = False,
    prefix: str = "",
    render: RenderOptions | None = None,
    confirm_looks: bool = False,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    speech: SpeechParams | None = None,
    dispatch: bool = False,
) -> dict[str, Any]:
    """Scan ``ingest_url`` once: register each new object, render it with every avatar, publish the MP4s.

    Args:
        ingest_url: ``s3://bucket/prefix`` or a folder; ``TALKFACTORY_INGEST_URL`` when None.
        avatars: local paths, or keys in ``TALKFACTORY_AVATARS_URL``; empty: every image/video there.
        exports_url: where MP4s go: ``<recording key without extension>/<avatar>__clip001.mp4`` (one per
            speech clip), or ``.../<avatar>.mp4`` with ``whole_track``; ``TALKFACTORY_EXPORTS_URL`` when None.
        settle_seconds: objects modified more recently than this wait for a later scan.
        dry_run: only list and classify; nothing is registered, downloaded or written.
        prefix: scan only keys starting with this (relative to the ingest URL).
        render, speech: passed to ``process-recording`` (backend, checkpoint, encoder, whole track;
            how clips are cut).
        confirm_looks: take an object only after two scans saw it unchanged.
        dispatch: hand each new object to the ``process-recording`` deployment (the factory: renders
            run on resident Ray actors) instead of processing it in this run.
        max_attempts: attempts at an object before a failure is final (quarantined).

    Returns a summary: the location, counts, and one row per object this scan acted on (or, in a dry
    run, would act on). One object failing never stops the others; its reason is in its row and in
    lineage. Errors that concern the whole scan (ingest or exports location unreachable, missing,
    refusing the credentials; no usable avatars) fail the run before any object is claimed.
    """
    logger = get_run_logger()
    settings = get_settings()
    ingest_url = ingest_url or settings.ingest_url
    exports_url = exports_url or settings.exports_url
    if not ingest_url:
        raise ConfigurationError("no ingest location: pass one or set TALKFACTORY_INGEST_URL", subject="scan")
    if not exports_url and not dry_run:
        raise ConfigurationError(
            "no exports location: pass one or set TALKFACTORY_EXPORTS_URL", subject="scan"
        )
    db_url = settings.resolved_database_url
    ensure_schema(db_url)

    plan: ScanPlan = plan_scan_task(
        ingest_url, prefix, settle_seconds, confirm_looks, not dry_run, max_attempts, db_url
    )
    if dry_run:
        return _publish(plan, _dry_run_rows(plan), dry_run=True)

    work: list[tuple[ObjectInfo, SourceObjectState | None]] = [(i, None) for i in plan.new]
    work += [(info, state) for info, state in plan.retry]
    job: _Job | None = None
    if work:
        # Whole-scan problems (no exports bucket, unusable avatars) fail here, before anything is claimed.
        assert exports_url is not None
        check_exports_task(exports_url)
        if not dispatch:
            avatar_sources(list(avatars or []), settings)  # raises for a setup with no usable avatars
        job = _Job(
            ingest_url=ingest_url,
            exports_url=exports_url,
            avatars=list(avatars or []),
            work_root=settings.work_dir / "ingest",
            database_url=db_url,
            render=render or RenderOptions(),
            speech=speech,
            max_attempts=max_attempts,
            dispatch=dispatch,
        )
    rows = [ItemOutcome(info.key, "waiting", error=why) for info, why in plan.waiting]
    if plan.rejected:
        rows += quarantine_rejected_task(plan.location, plan.rejected, db_url)
    if job is not None:
        for info, previous in work:
            outcome = _process(plan, info, previous, job)
            log = logger.info if outcome.status == "done" else logger.warning
            log("%s: %s%s", info.key, outcome.status, f" ({outcome.error})" if outcome.error else "")
            rows.append(outcome)
    return _publish(plan, rows, dry_run=False)


def _process(plan: ScanPlan, info: ObjectInfo, previous: SourceObjectState | None, job: _Job) -> ItemOutcome:
    """Claim, fetch, render, publish and settle one object; every failure ends up in its row."""
    try:
        source_id = claim_source_task(plan.location, info, previous, job.database_url)
    except Exception as exc:  # noqa: BLE001 - nothing claimed: a later scan sees it as new again
        return ItemOutcome(info.key, "failed", error=str(exc))
    if source_id is None:
        return ItemOutcome(info.key, "skipped", error="another scan is processing it")
    attempt = (previous.attempts if previous else 0) + 1
    if job.dispatch:
        return _dispatch(plan, info, source_id, attempt, job)
    work_dir = job.work_root / str(source_id)
    source_uri = plan.location.store_url + info.key
    try:
        local, _sha = fetch_source_task(
            job.ingest_url, info, str(work_dir / "source"), source_id, job.database_url
        )
    except Exception as exc:  # noqa: BLE001 - one object must never stop the scan
        end: SourceStatus = source_status_after_error(exc, attempt, job.max_attempts)
        settle_source(source_id, end, job.database_url, error=exc)
        return ItemOutcome(info.key, end, source_id, error=str(exc))
    try:
        report = process_recording(
            recording=local,
            avatars=job.avatars,
            exports_url=job.exports_url,
            source_key=info.key,
            source_object_id=source_id,
            render=job.render,
            speech=job.speech,
            executor="local",
            max_attempts=job.max_attempts,
        )
    except Exception as exc:  # noqa: BLE001 - settled by process-recording; the scan goes on
        state = repository(job.database_url).find_source_object(str(source_id))
        status = state.status if state else "failed"
        return ItemOutcome(info.key, status, source_id, error=str(exc).replace(local, source_uri))
    finally:
        # The downloaded copy is ours, not the source: drop it.
        shutil.rmtree(work_dir, ignore_errors=True)
    return ItemOutcome(
        info.key,
        _SCAN_STATUS[report.status],
        source_id,
        report.recording_id,
        [r.output for r in report.rows if r.ok and r.output],
        (report.reason or "").replace(local, source_uri) or None,
    )


_SCAN_STATUS = {
    "done": "done",
    "done with failures": "done with failures",
    "no speech": "no speech",
    "unusable": "quarantined",
    "interrupted": "failed",
}


def _dispatch(plan: ScanPlan, info: ObjectInfo, source_id: int, attempt: int, job: _Job) -> ItemOutcome:
    """Submit the object to ``process-recording``; that run settles it. Retried scans submit it once."""
    full_key = plan.location.full_key(info.key)
    try:
        run = run_deployment(
            get_settings().process_deployment,
            parameters={
                "recording": store_from_settings(job.ingest_url, get_settings()).url(info.key),
                "avatars": list(job.avatars),
                "exports_url": job.exports_url,
                "source_key": info.key,
                "source_object_id": source_id,
                "render": job.render.model_dump(),
                "speech": asdict(job.speech) if job.speech else None,
                "executor": "ray",
                "max_attempts": job.max_attempts,
            },
            idempotency_key=f"ingest:{plan.location.bucket}/{full_key}:{info.etag}:{attempt}",
            timeout=0,
            as_subflow=False,
        )
    except Exception as exc:  # noqa: BLE001 - left claimed: a later scan retakes it once it is stale
        return ItemOutcome(info.key, "failed", source_id, error=f"could not submit: {exc}")
    return ItemOutcome(info.key, "dispatched", source_id, flow_run_id=str(cast(FlowRun, run).id))


def _dry_run_rows(plan: ScanPlan) -> list[ItemOutcome]:
    rows = [ItemOutcome(i.key, "new") for i in plan.new]
    rows += [ItemOutcome(i.key, "retry", source_id=s.id, error=s.error) for i, s in plan.retry]
    rows += [ItemOutcome(i.key, "waiting", error=why) for i, why in plan.waiting]
    rows += [ItemOutcome(i.key, "rejected", error=why) for i, why in plan.rejected]
    return rows


def _publish(plan: ScanPlan, rows: list[ItemOutcome], *, dry_run: bool) -> dict[str, Any]:
    summary = {
        "location": plan.location.store_url,
        "dry_run": dry_run,
        "listed": plan.listed,
        "known": plan.known,
        "ignored": plan.ignored,
        "list_s": round(plan.list_s, 3),
        "lookup_s": round(plan.lookup_s, 3),
        "items": [asdict(r) for r in rows],
    }
    table = [
        {
            "key": r.key,
            "status": r.status,
            "recording": r.recording_id or "",
            "exports": "\n".join(r.exports),
            "flow run": r.flow_run_id or "",
            "error": r.error or "",
        }
        for r in rows
    ]
    counts = ", ".join(f"{n} {s}" for s, n in _counts(rows).items()) or "nothing new"
    create_table_artifact(
        table=table
        or [
            {
                "key": "",
                "status": "nothing to do",
                "recording": "",
                "exports": "",
                "flow run": "",
                "error": "",
            }
        ],
        key="scan-summary",
        description=f"{'Dry run of ' if dry_run else ''}scan of {plan.location.store_url}: {counts}; "
        f"{plan.known} already known, {plan.ignored} not media",
    )
    return summary


def _counts(rows: list[ItemOutcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


__all__ = ["scan_ingest"]
