"""``process-recording``: one recording -> speech clips -> clip x avatar render jobs -> exports.

The one flow behind ``talkfactory run``, ``talkfactory scan`` and the factory: they differ only in
``executor`` (``local``: this process; ``ray``: resident actors, one per GPU). Jobs are defined in
``pipeline.jobs``; this flow prepares their inputs, hands them out one Prefect task per job, and
settles the ingest object the recording came from (``pipeline.jobs.settle``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from talkfactory.errors import PermanentError
from talkfactory.flows.render_jobs import render_jobs
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.settings import Settings, get_settings
from talkfactory.models.lipsync.registry import backend_version
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.exports.channels import load_channels
from talkfactory.pipeline.exports.manifest import write_manifests
from talkfactory.pipeline.jobs.avatars import avatar_sources
from talkfactory.pipeline.jobs.files import local_copy, share_clip_audio
from talkfactory.pipeline.jobs.model import AvatarSpec, ClipSpec, JobResult, RenderOptions, RenderParams
from talkfactory.pipeline.jobs.naming import export_key
from talkfactory.pipeline.jobs.plan import destination, plan_jobs, requested_channels
from talkfactory.pipeline.jobs.settle import (
    RecordingReport,
    is_about_the_recording,
    outcome_of,
    run_message,
    source_status,
    source_status_after_error,
)
from talkfactory.pipeline.recording import PreparedRecording
from talkfactory.pipeline.speech import SpeechParams
from talkfactory.tasks.context import provenance, repository
from talkfactory.tasks.prepare import prepare_avatar_task, prepare_recording_task
from talkfactory.tasks.render_job import ExecutorKind
from talkfactory.tasks.speech import ClipRef, speech_task


@flow(
    name="process-recording",
    flow_run_name="process {recording}",
    task_runner=ThreadPoolTaskRunner(max_workers=8),  # type: ignore[arg-type]
)
def process_recording(
    recording: str,
    avatars: list[str] | None = None,
    exports_url: str | None = None,
    source_key: str | None = None,
    source_object_id: int | None = None,
    render: RenderOptions | None = None,
    speech: SpeechParams | None = None,
    executor: ExecutorKind = "local",
    max_attempts: int = 3,
) -> RecordingReport:
    """Render ``recording`` spoken by each avatar, one MP4 per clip x avatar, published to ``exports_url``.

    Args:
        recording: a local path or a store URL (``s3://ingest/live/show.flv``).
        avatars: paths, store URLs, or keys in ``TALKFACTORY_AVATARS_URL``; empty: every one there.
        exports_url: folder or ``s3://bucket/prefix``; MP4s go to
            ``<recording name minus extension>/<avatar>__clipNNN.mp4`` (``<avatar>.mp4`` for a whole track).
        source_key: the name exports are filed under (the ingest key); the file name when None.
        source_object_id: the ingest object to settle (done, failed, quarantined) when this ends.
        render: backend, checkpoint, encoder, force, whole_track (settings fill what is None).
        speech: how clips are cut (``SpeechParams``); defaults when None.
        executor: ``local`` renders in this process; ``ray`` on the factory's resident actors.
        max_attempts: attempts at an ingest object before a failure that stopped the job is final.

    One render failing never stops the others (its row says why; the recording is ``done with
    failures``). A configuration error stops the job and quarantines nothing.
    """
    logger = get_run_logger()
    settings = get_settings()
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    render = render or RenderOptions()
    name = source_key or Path(recording).name
    try:
        report = _process(
            recording, name, avatars or [], exports_url, render, speech, executor, settings, source_object_id
        )
    except BaseException as exc:
        _settle_after_error(source_object_id, exc, max_attempts)
        raise
    if source_object_id is not None:
        _mark_source(source_object_id, source_status(report), report.reason, report.recording_id)
    (logger.info if report.status in ("done", "no speech") else logger.warning)(
        "%s: %s", name, report.summary()
    )
    _publish(report)
    _emit_outcome(report, name)
    # The run ends Completed with a message saying what failed ("2 of 12 renders failed"); a direct
    # call still returns the report (Prefect hands back a returned state's data), hence the cast.
    return cast(RecordingReport, Completed(message=run_message(report), data=report))


def _emit_outcome(report: RecordingReport, name: str) -> None:
    """``talkfactory.recording.<status>`` (done, done-with-failures, no-speech, unusable, interrupted),
    for automations that notify on failed or partly failed recordings. Never fails the run."""
    try:
        emit_event(
            event=f"talkfactory.recording.{report.status.replace(' ', '-')}",
            resource={
                "prefect.resource.id": f"talkfactory.recording.{report.recording_id or name}",
                "prefect.resource.name": name,
            },
            payload={
                "recording_id": report.recording_id,
                "renders": len(report.rows),
                "failed": sum(not r.ok for r in report.rows),
                "message": run_message(report),
            },
        )
    except Exception:  # noqa: BLE001 - an event is a notification, not part of the job
        get_run_logger().warning("could not emit the outcome event of %s", name, exc_info=True)


def _process(
    recording: str,
    name: str,
    avatar_entries: list[str],
    exports_url: str | None,
    render: RenderOptions,
    speech: SpeechParams | None,
    executor: ExecutorKind,
    settings: Settings,
    source_object_id: int | None,
) -> RecordingReport:
    logger = get_run_logger()
    db_url = settings.resolved_database_url
    exports = exports_url or settings.exports_url or str((settings.home / "exports").resolve())
    # Setup first: an unknown backend or a missing checkpoint stops here, before any download.
    backend = render.backend or settings.backend
    checkpoint = render.checkpoint or settings.checkpoint
    version = backend_version(backend, checkpoint=resolve_checkpoint(checkpoint, settings))
    params = RenderParams(
        backend=backend, crf=settings.crf, preset=settings.preset, liveliness=render.liveliness
    )
    sources = avatar_sources(avatar_entries, settings)
    channels = requested_channels(render.channels, settings)
    if channels:
        # An unknown channel or a broken channels file is a setup error: stop before any work.
        registry = load_channels(settings.channels_file)
        for channel in channels:
            registry.get(channel)

    local = local_copy(recording, settings)
    try:
        try:
            rec, recording_id = prepare_recording_task(str(local), str(settings.work_dir), db_url)
        except PermanentError as exc:
            if not is_about_the_recording(exc):
                raise
            reason = str(exc).replace(str(local), recording)
            logger.error("%s cannot be used: %s", name, reason)
            failed_row = repository(db_url).find_recording(str(local))
            return RecordingReport(
                recording=name,
                status="unusable",
                reason=reason,
                recording_id=failed_row.id if failed_row else None,
            )
        if render.whole_track:
            clips = [_whole_track(rec)]
        else:
            result, found = speech_task(
                rec, recording_id, speech or SpeechParams(), str(settings.work_dir), db_url
            )
            if not found:
                reason = result.no_clips_reason or "no speech found"
                return RecordingReport(
                    recording=name,
                    status="no speech",
                    recording_id=recording_id,
                    reason=reason,
                    warnings=rec.warnings,
                )
            clips = [_clip_spec(c, n, rec, executor, settings) for n, c in enumerate(found, start=1)]
    finally:
        if "://" in recording and not render.whole_track:
            # Our copy of an hours-long recording: the clips carry on, the source stays in the store.
            local.unlink(missing_ok=True)
    logger.info("%s: %d clips x %d avatars", name, len(clips), len(sources))

    specs: list[AvatarSpec] = []
    failed: list[JobResult] = []
    for src in sources:
        try:
            av, av_id = prepare_avatar_task(
                str(src.local), str(settings.cache_dir), db_url, src.uri, src.label
            )
        except PermanentError as exc:  # one bad avatar fails its own renders, never the others
            # Name the avatar as the user knows it, not by this machine's cached copy.
            exc_text = str(exc).replace(str(src.local), src.uri)
            logger.error("avatar %s cannot be used: %s", src.uri, exc_text)
            failed += [_avatar_failed(name, src.label, c, exports, exc_text, settings) for c in clips]
            continue
        specs.append(AvatarSpec(avatar_id=av_id, content_hash=av.content_hash, uri=src.uri, label=src.label))
    jobs = plan_jobs(
        recording_id=recording_id,
        recording_sha256=rec.sha256,
        recording_name=name,
        clips=clips,
        avatars=specs,
        params=params,
        model_version=version,
        checkpoint=checkpoint,
        exports_url=exports,
        settings=settings,
        video_encoder=render.video_encoder or settings.video_encoder,  # type: ignore[arg-type]
        force=render.force,
        qc_strict=render.qc_strict,
        source_object_id=source_object_id,
        provenance=provenance(),
        channels=channels,
        burn_captions=render.burn_captions,
    )
    rows = render_jobs(jobs, executor) + failed
    for location, entries in write_manifests(repository(db_url), jobs, settings).items():
        logger.info("%s: manifest of %d exports written to %s", name, len(entries), location)
    status, why = outcome_of(rows)
    return RecordingReport(
        recording=name,
        status=status,
        recording_id=recording_id,
        reason=why,
        rows=rows,
        clips=len(clips),
        warnings=rec.warnings,
    )


def _whole_track(rec: PreparedRecording) -> ClipSpec:
    assert rec.info.audio is not None
    return ClipSpec(
        clip_id=None,
        number=None,
        start_s=0.0,
        end_s=round(rec.duration_s, 3),
        params_hash="",
        audio16_uri=str(rec.audio_path),
        audio48_uri=str(rec.path.resolve()),
        audio_stream=rec.info.audio.index,
    )


def _clip_spec(
    clip: ClipRef, number: int, rec: PreparedRecording, executor: ExecutorKind, settings: Settings
) -> ClipSpec:
    audio16, audio48 = clip.audio16, clip.audio48
    if executor != "local":
        # Executors may run on other machines: the clip audio goes through the work store.
        audio16 = share_clip_audio(settings, rec.sha256, clip.params_hash, Path(clip.audio16))
        audio48 = share_clip_audio(settings, rec.sha256, clip.params_hash, Path(clip.audio48))
        repository(settings.resolved_database_url).set_clip_audio(
            clip.clip_id, audio_uri=audio16, audio48_uri=audio48
        )
    return ClipSpec(
        clip_id=clip.clip_id,
        number=number,
        start_s=clip.start_s,
        end_s=clip.end_s,
        params_hash=clip.params_hash,
        audio16_uri=audio16,
        audio48_uri=audio48,
    )


def _avatar_failed(
    name: str, label: str, clip: ClipSpec, exports: str, error: str, settings: Settings
) -> JobResult:
    return JobResult(
        render_key="",
        recording_name=name,
        avatar=label,
        clip_number=clip.number,
        clip_start_s=clip.start_s,
        clip_end_s=clip.end_s,
        destination=destination(exports, export_key(name, label, clip.number), settings).uri,
        status="failed",
        error=error,
        bad_input=True,
    )


def _settle_after_error(source_id: int | None, exc: BaseException, max_attempts: int) -> None:
    if source_id is None:
        return
    repo = repository(get_settings().resolved_database_url)
    row = repo.find_source_object(str(source_id))
    attempts = row.attempts if row else 0
    try:
        _mark_source(source_id, source_status_after_error(exc, attempts, max_attempts), exc, None)
    except Exception as db_exc:  # noqa: BLE001 - the row stays 'processing'; a later scan retakes it
        get_run_logger().error("could not record the failure of source object %s: %s", source_id, db_exc)


def _mark_source(
    source_id: int, status: str, error: BaseException | str | None, recording_id: int | None
) -> None:
    repository(get_settings().resolved_database_url).mark_source_object(
        source_id,
        status,  # type: ignore[arg-type]
        error=error,
        recording_id=recording_id,
        prov=provenance(),
    )


def _publish(report: RecordingReport) -> None:
    table = [
        {
            "clip": r.clip_number or "whole",
            "span": f"{r.clip_start_s:.1f}-{r.clip_end_s:.1f} s" if r.clip_end_s is not None else "",
            "avatar": r.avatar,
            "status": r.status + (f" ({r.reused})" if r.reused else ""),
            "export": r.output or "",
            "duration_s": round(r.duration_s, 2) if r.duration_s else "",
            "rtf": round(r.rtf, 3) if r.rtf else "",
            "encoder": r.encoder or "",
            "worker": r.worker or "",
            "attempts": r.attempts,
            "channels": ", ".join(
                e.channel
                + (f" part {e.part}" if e.parts > 1 else "")
                + ("" if e.status == "published" else f" {e.status}")
                for e in r.exports
            ),
            "error": r.error or "; ".join(f"{e.channel}: {e.error}" for e in r.exports if e.error),
        }
        for r in report.rows
    ]
    create_table_artifact(
        table=table or [{"status": report.status, "error": report.reason or ""}],
        key=_artifact_key(report),
        description=f"Renders of {report.recording}: {report.summary()}",
    )


def _artifact_key(report: RecordingReport) -> str:
    # Keyed per recording, so each recording's history is browsable (keys: lowercase, digits, dashes).
    slug = re.sub(r"[^a-z0-9]+", "-", report.recording.lower()).strip("-")[:60] or "recording"
    return f"renders-{slug}" + (f"-{report.recording_id}" if report.recording_id else "")


__all__ = ["process_recording"]
