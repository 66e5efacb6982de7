"""``nightly-reprocess``: re-render exactly what lineage says is missing or stale, nothing else.

Missing: a recording's clips x an active avatar with no render (a new avatar was added). Stale: a
render made with another backend version or parameters, or with an older version of the avatar.
Retry: a failed render with attempts left whose error was not bad input. Recordings with no clips
yet go to ``process-recording`` whole. ``dry_run`` only publishes the plan.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.task_runners import ThreadPoolTaskRunner

from talkfactory.flows.render_jobs import render_jobs
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.lineage.repository import LOCAL_BUCKET, LineageRepository
from talkfactory.infra.settings import Settings, get_settings
from talkfactory.models.lipsync.registry import backend_version
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.exports.channels import ChannelRegistry, load_channels
from talkfactory.pipeline.exports.manifest import write_manifests
from talkfactory.pipeline.ingest import ingest_location, store_from_settings
from talkfactory.pipeline.jobs.avatars import avatar_sources
from talkfactory.pipeline.jobs.model import AvatarSpec, ClipSpec, RenderJob, RenderOptions, RenderParams
from talkfactory.pipeline.jobs.naming import export_key
from talkfactory.pipeline.jobs.plan import channel_targets, destination, requested_channels
from talkfactory.pipeline.reprocess import PlanItem, ReprocessPlan, plan_reprocess
from talkfactory.tasks.context import provenance, repository
from talkfactory.tasks.prepare import prepare_avatar_task
from talkfactory.tasks.render_job import ExecutorKind


@flow(
    name="nightly-reprocess",
    flow_run_name="nightly {prefix}",
    task_runner=ThreadPoolTaskRunner(max_workers=8),  # type: ignore[arg-type]
)
def nightly_reprocess(
    dry_run: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    lookback_days: float | None = None,
    prefix: str = "",
    backend: str | None = None,
    checkpoint: str | None = None,
    exports_url: str | None = None,
    max_attempts: int = 3,
    max_renders: int | None = None,
    sync_avatars: bool = True,
    executor: ExecutorKind = "ray",
    channels: list[str] | None = None,
) -> dict[str, Any]:
    """Plan from lineage, publish the plan, and (unless ``dry_run``) submit it.

    Args:
        dry_run: list what would be done (table artifact and return value); submit and write nothing.
        since, until: only recordings first registered in [since, until) (UTC); for backfills.
        lookback_days: ``since`` = now minus this many days, when ``since`` is not given.
        prefix: only recordings whose ingest key (or path) starts with this.
        backend, checkpoint: what renders should be made with now (settings when None).
        exports_url: where renders are published (settings when None).
        max_attempts: failed renders are retried until they have this many attempts.
        max_renders: submit at most this many renders tonight (the rest stay planned for tomorrow).
        sync_avatars: first register every avatar in ``TALKFACTORY_AVATARS_URL`` (face tracks are
            cached, so only new or changed files cost anything): a file added to the library today
            is rendered for the archive tonight, a replaced file makes its renders stale.
        executor: ``ray`` (the factory's resident actors) or ``local`` (this process).
        channels: the channels every render is exported to (``TALKFACTORY_CHANNELS`` when None):
            a render lacking one, or with one made from an older channel spec, is re-exported from
            its master (not rendered again).
    """
    logger = get_run_logger()
    settings = get_settings()
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    repo = repository(db_url)
    backend = backend or settings.backend
    checkpoint = checkpoint or settings.checkpoint
    if since is None and lookback_days is not None:
        since = datetime.now(UTC) - timedelta(days=lookback_days)
    if sync_avatars and settings.avatars_url and not dry_run:
        _sync_avatars(settings, db_url)
    params = RenderParams(backend=backend, crf=settings.crf, preset=settings.preset)
    version = backend_version(backend, checkpoint=resolve_checkpoint(checkpoint, settings))
    wanted = requested_channels(channels or (), settings)
    registry = load_channels(settings.channels_file) if wanted else None
    versions = {registry.get(c).name: registry.get(c).spec_version for c in wanted} if registry else {}
    if versions:
        versions["master"] = registry.get("master").spec_version  # type: ignore[union-attr]
    plan = plan_reprocess(
        repo,
        channels=versions,
        backend=backend,
        backend_version=version,
        params_hash=params.params_hash(),
        since=since,
        until=until,
        prefix=prefix,
        max_attempts=max_attempts,
    )
    todo = plan.to_submit()
    renders = [i for i in todo if i.kind != "needs-speech"]
    speech = [i for i in todo if i.kind == "needs-speech"]
    if max_renders is not None and len(renders) > max_renders:
        logger.info("%d renders planned; submitting the first %d tonight", len(renders), max_renders)
        renders = renders[:max_renders]
    _publish_plan(plan, dry_run)
    summary: dict[str, Any] = {
        "dry_run": dry_run,
        "backend_version": version,
        "counts": plan.counts(),
        "planned": [_short(i) for i in todo],
    }
    logger.info("plan: %s", ", ".join(f"{n} {k}" for k, n in plan.counts().items() if n))
    if dry_run or not todo:
        return summary

    exports_url = exports_url or settings.exports_url or str((settings.home / "exports").resolve())
    ingest_prefix = ingest_prefix_for(settings)
    tonight = datetime.now(UTC).date().isoformat()
    for item in speech:
        run = run_deployment(
            settings.process_deployment,
            parameters={
                "recording": _recording_url(repo, item),
                "exports_url": exports_url,
                "source_key": _export_name(item, ingest_prefix),
                "render": RenderOptions(backend=backend, checkpoint=checkpoint, channels=wanted).model_dump(),
                "executor": executor,
            },
            # One try per recording per night: a failed one is tried again tomorrow, not twice tonight.
            idempotency_key=f"nightly-speech:{item.recording_id}:{params.params_hash()[:16]}:{tonight}",
            timeout=0,
            as_subflow=True,
        )
        logger.info(
            "recording %s has no clips: submitted process-recording (flow run %s)",
            item.recording_id,
            cast(FlowRun, run).id,
        )
    prov = provenance()
    jobs = [
        _job(item, exports_url, ingest_prefix, params, version, checkpoint, settings, prov, wanted, registry)
        for item in renders
    ]
    rows = render_jobs(jobs, executor)
    for location, entries in write_manifests(repo, jobs, settings).items():
        logger.info("manifest of %d exports written to %s", len(entries), location)
    if rows:
        create_table_artifact(
            table=[
                {
                    "clip": r.clip_number,
                    "avatar": r.avatar,
                    "status": r.status,
                    "export": r.output or "",
                    "worker": r.worker or "",
                    "error": r.error or "",
                }
                for r in rows
            ],
            key="nightly-renders",
            description=f"nightly-reprocess: {sum(r.ok for r in rows)} of {len(rows)} renders succeeded",
        )
    summary["renders"] = [
        {"clip": r.clip_number, "avatar": r.avatar, "status": r.status, "export": r.output, "error": r.error}
        for r in rows
    ]
    return summary


def _sync_avatars(settings: Settings, db_url: str) -> None:
    logger = get_run_logger()
    for src in avatar_sources([], settings):
        try:
            prepare_avatar_task(str(src.local), str(settings.cache_dir), db_url, src.uri, src.label)
        except Exception as exc:  # noqa: BLE001 - a bad file in the library must not stop the night
            logger.error("avatar %s cannot be used: %s", src.uri, exc)


def _job(
    item: PlanItem,
    exports_url: str,
    ingest_prefix: str,
    params: RenderParams,
    version: str,
    checkpoint: str | None,
    settings: Settings,
    prov: Any,
    channels: tuple[str, ...] = (),
    registry: ChannelRegistry | None = None,
) -> RenderJob:
    assert item.clip_id is not None and item.clip_number is not None and item.avatar_id is not None
    assert item.clip_start_s is not None and item.recording_sha256 is not None
    name = _export_name(item, ingest_prefix)
    label = item.avatar_name or ""
    return RenderJob(
        recording_id=item.recording_id,
        recording_sha256=item.recording_sha256,
        recording_name=name,
        clip=ClipSpec(
            clip_id=item.clip_id,
            number=item.clip_number,
            start_s=item.clip_start_s,
            end_s=item.clip_end_s,
            params_hash=item.clip_params_hash or "",
            audio16_uri=item.clip_audio_uri or "",
            audio48_uri=item.clip_audio48_uri or "",
        ),
        avatar=AvatarSpec(
            avatar_id=item.avatar_id,
            content_hash=item.avatar_content_hash or "",
            uri=item.avatar_uri or "",
            label=label,
        ),
        params=params,
        model_version=version,
        checkpoint=checkpoint,
        destination=destination(exports_url, export_key(name, label, item.clip_number), settings),
        provenance=prov,
        exports=channel_targets(channels, registry, exports_url, export_key(name, label, item.clip_number)),
    )


def ingest_prefix_for(settings: Settings) -> str:
    """What the scan strips from a source key before naming exports (the ingest location's prefix)."""
    if not settings.ingest_url:
        return ""
    return ingest_location(store_from_settings(settings.ingest_url, settings)).key_prefix


def _recording_url(repo: LineageRepository, item: PlanItem) -> str:
    """Where a worker can read the recording: its ingest object when it came from one (the local
    copy a scan downloaded is gone), else the path lineage recorded."""
    sources = repo.source_objects_for_recording(item.recording_id)
    if sources:
        src = sources[-1]
        return src.key if src.bucket == LOCAL_BUCKET else src.uri
    return item.recording_uri


def _export_name(item: PlanItem, ingest_prefix: str) -> str:
    """The name exports were filed under: the key relative to the ingest location, as the scan
    published it, or the recording's file name for recordings run by hand."""
    if item.source_key:
        return item.source_key.removeprefix(ingest_prefix) if ingest_prefix else item.source_key
    return Path(item.recording_uri).name


def _publish_plan(plan: ReprocessPlan, dry_run: bool) -> None:
    counts = plan.counts()
    lines = [
        f"# {'Dry run: ' if dry_run else ''}nightly re-process plan",
        "",
        f"Backend `{plan.backend}` version `{plan.backend_version}`, parameters `{plan.params_hash[:12]}`.",
        f"Range: {plan.since or 'beginning'} to {plan.until or 'now'}; prefix `{plan.prefix or '(all)'}`.",
        "",
        "| kind | items |",
        "|---|---|",
        *[f"| {k} | {n} |" for k, n in counts.items()],
    ]
    create_markdown_artifact(markdown="\n".join(lines), key="nightly-report", description="nightly plan")
    rows = [r for r in plan.table() if r["kind"] != "done"]
    create_table_artifact(
        table=rows or [{"kind": "nothing to do"}],
        key="nightly-plan",
        description=f"{'would submit' if dry_run else 'submitted'}: {len(plan.to_submit())} items",
    )


def _short(item: PlanItem) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "recording_id": item.recording_id,
        "clip_id": item.clip_id,
        "avatar": item.avatar_name,
        "reason": item.reason,
    }


__all__ = ["nightly_reprocess"]
