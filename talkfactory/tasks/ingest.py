"""Tasks of the ingest scan: plan, claim, fetch, publish and settle one source object at a time.

Stores are opened inside each task from their URL and the settings, so task parameters (which Prefect
records) hold URLs and keys, never a client or a credential.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from talkfactory.infra.lineage.repository import SourceObjectState, SourceStatus
from talkfactory.infra.settings import get_settings
from talkfactory.infra.stores import LocalObjectStore, ObjectInfo
from talkfactory.pipeline.ingest import (
    DEFAULT_STALE_AFTER,
    IngestLocation,
    ScanPlan,
    fetch_and_hash,
    ingest_location,
    plan_scan,
    store_from_settings,
)
from talkfactory.tasks.context import provenance, repository, retry_transient

log = logging.getLogger(__name__)

_RETRY: dict[str, Any] = dict(
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)


@dataclass
class ItemOutcome:
    """One row of a scan's summary: what happened to one object."""

    key: str
    status: str
    """done, failed (retried by a later scan), quarantined (never retried), waiting, skipped (another scan
    has it), and in a dry run: new, retry, rejected."""
    source_id: int | None = None
    recording_id: int | None = None
    exports: list[str] = field(default_factory=list)
    error: str | None = None
    flow_run_id: str | None = None
    """The ``process-recording`` run it was handed to (dispatched objects)."""


@task(name="plan-scan", task_run_name="scan {ingest_url}", **_RETRY)
def plan_scan_task(
    ingest_url: str,
    prefix: str,
    settle_seconds: float,
    confirm_looks: bool,
    save_looks: bool,
    max_attempts: int,
    database_url: str,
) -> ScanPlan:
    """List the ingest location and sort what is there (see ``pipeline.ingest.plan_scan``)."""
    store = store_from_settings(ingest_url, get_settings())
    return plan_scan(
        store,
        prefix,
        repository(database_url),
        settle_seconds=settle_seconds,
        confirm_looks=confirm_looks,
        save_looks=save_looks,
        max_attempts=max_attempts,
        stale_after=DEFAULT_STALE_AFTER,
    )


@task(name="check-exports", **_RETRY)
def check_exports_task(exports_url: str) -> str:
    """Fail the scan before it claims anything when the exports location cannot be listed."""
    store = store_from_settings(exports_url, get_settings())
    if isinstance(store, LocalObjectStore):
        store.root.mkdir(parents=True, exist_ok=True)  # a folder is made on demand; a bucket never is
    next(iter(store.list()), None)
    return ingest_location(store).store_url


@task(name="quarantine-rejected", **_RETRY)
def quarantine_rejected_task(
    location: IngestLocation, rejected: list[tuple[ObjectInfo, str]], database_url: str
) -> list[ItemOutcome]:
    """Record each unusable object once, as quarantined with its reason; the scan goes on."""
    repo, prov = repository(database_url), provenance()
    outcomes: list[ItemOutcome] = []
    for info, reason in rejected:
        state, created = repo.register_source_object(
            store_url=location.store_url,
            bucket=location.bucket,
            key=location.full_key(info.key),
            etag=info.etag,
            size_bytes=info.size,
            status="quarantined",
            error=reason,
            prov=prov,
        )
        if created:
            log.warning("quarantined %r: %s", info.key, reason)
            outcomes.append(ItemOutcome(info.key, "quarantined", source_id=state.id, error=reason))
    return outcomes


@task(name="claim-source", task_run_name="claim {info.key}", **_RETRY)
def claim_source_task(
    location: IngestLocation, info: ObjectInfo, previous: SourceObjectState | None, database_url: str
) -> int | None:
    """Register a new object (or take a retried one) for this scan; None when another scan has it."""
    repo, prov = repository(database_url), provenance()
    if previous is None:
        state, created = repo.register_source_object(
            store_url=location.store_url,
            bucket=location.bucket,
            key=location.full_key(info.key),
            etag=info.etag,
            size_bytes=info.size,
            status="processing",
            prov=prov,
        )
        return state.id if created else None
    taken = repo.claim_source_object(
        previous.id, expected_status=previous.status, expected_attempts=previous.attempts, prov=prov
    )
    return previous.id if taken else None


@task(name="fetch-source", task_run_name="fetch {info.key}", **_RETRY)
def fetch_source_task(
    ingest_url: str, info: ObjectInfo, work_dir: str, source_id: int, database_url: str
) -> tuple[str, str]:
    """Download the object to the work area; returns (local path, sha256), the hash also in lineage."""
    store = store_from_settings(ingest_url, get_settings())
    path, sha = fetch_and_hash(store, info, Path(work_dir))
    repository(database_url).mark_source_object(source_id, "processing", sha256=sha, prov=provenance())
    return str(path), sha


def settle_source(
    source_id: int,
    status: SourceStatus,
    database_url: str,
    *,
    error: BaseException | str | None = None,
    recording_id: int | None = None,
) -> None:
    """Record the end of this scan's attempt at a source object (not a task: it must run even when
    Prefect itself is struggling, and the repository retries a database that dropped out)."""
    repository(database_url).mark_source_object(
        source_id,
        status,
        error=error,
        recording_id=recording_id,
        prov=provenance(),
    )


__all__ = [
    "ItemOutcome",
    "check_exports_task",
    "claim_source_task",
    "fetch_source_task",
    "plan_scan_task",
    "quarantine_rejected_task",
    "settle_source",
]
