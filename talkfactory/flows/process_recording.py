"""``process-recording``: one recording through speech, clips, a render fan-out and exports.

The factory's per-recording job (on the ``cpu`` pool): it cleans and cuts the speech here, shares
the clip audio through the work store, then asks the ``render-clip`` deployment for every clip x
avatar and waits for the GPU workers to publish them (``flows.fanout``). Its table artifact shows
every render's status, export, duration, real-time factor, encoder, worker and attempts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from talkfactory.errors import PermanentError
from talkfactory.flows.fanout import FanOut, fan_out
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.settings import get_settings
from talkfactory.models.lipsync.registry import backend_version
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.fanout import RenderJob, avatar_sources, local_copy, share_clip_audio
from talkfactory.pipeline.ingest import export_key
from talkfactory.pipeline.speech import SpeechParams
from talkfactory.tasks.context import provenance, repository
from talkfactory.tasks.prepare import prepare_avatar_task, prepare_recording_task
from talkfactory.tasks.render import RenderRequest
from talkfactory.tasks.speech import speech_task


@flow(name="process-recording", flow_run_name="process {recording}")
def process_recording(
    recording: str,
    avatars: list[str] | None = None,
    exports_url: str | None = None,
    source_key: str | None = None,
    source_object_id: int | None = None,
    backend: str | None = None,
    checkpoint: str | None = None,
    video_encoder: str | None = None,
    speech: dict[str, Any] | None = None,
    force: bool = False,
    max_resubmits: int = 2,
    max_attempts: int = 3,
    wait_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Speech -> clips -> one ``render-clip`` run per clip x avatar -> exports.

    Args:
        recording: a local path or a store URL (``s3://ingest/live/show.flv``).
        avatars: paths, store URLs, or keys in ``TALKFACTORY_AVATARS_URL``; empty: all of them there.
        exports_url: where renders are published, as ``<source key minus extension>/<avatar>__clipNNN.mp4``.
        source_key: the key that names the exports (the recording's file name when None).
        source_object_id: the ``scan-ingest`` row to settle when done (done, failed, quarantined).
        backend, checkpoint, video_encoder: for every render (settings when None).
        speech: ``SpeechParams`` overrides.
        force: redo renders lineage says are done.
        max_resubmits: new runs for a render whose worker crashed.
        max_attempts: attempts at a source object before its failure is final (quarantined).
        wait_timeout_s: stop waiting for renders after this long (they go on; lineage records them).
    """
    logger = get_run_logger()
    settings = get_settings()
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    repo = repository(db_url)
    exports_url = exports_url or settings.exports_url or str((settings.home / "exports").resolve())
    backend = backend or settings.backend
    checkpoint = checkpoint or settings.checkpoint
    name = source_key or Path(recording).name
    rows: list[dict[str, Any]] = []
    recording_id: int | None = None
    try:
        local = local_copy(recording, settings)
        try:
            rec, recording_id = prepare_recording_task(str(local), str(settings.work_dir), db_url)
            params = SpeechParams(**(speech or {}))
            result, clips = speech_task(rec, recording_id, params, str(settings.work_dir), db_url)
        finally:
            if recording.startswith("s3://"):
                # Our copy of an hours-long recording: the clips carry on, the source stays in S3.
                local.unlink(missing_ok=True)
        if not clips:
            reason = result.no_clips_reason or "no speech found"
            logger.warning("%s: %s; nothing to render", name, reason)
            _settle(source_object_id, "done", f"no speech: {reason}", recording_id, max_attempts)
            return _publish(name, [{"status": "no speech", "error": reason}], recording_id)
        for clip in clips:
            repo.set_clip_audio(
                clip.clip_id,
                audio_uri=share_clip_audio(settings, rec.sha256, clip.params_hash, Path(clip.audio16)),
                audio48_uri=share_clip_audio(settings, rec.sha256, clip.params_hash, Path(clip.audio48)),
            )
        jobs: list[RenderJob] = []
        for avatar_file, uri in avatar_sources(list(avatars or []), settings):
            try:
                av, av_id = prepare_avatar_task(str(avatar_file), str(settings.cache_dir), db_url, uri)
            except Exception as exc:  # noqa: BLE001 - one bad avatar never stops the others
                logger.error("avatar %s skipped: %s", uri, exc)
                rows.append({"avatar": Path(uri).stem, "status": "failed", "error": str(exc)})
                continue
            jobs += [
                RenderJob(
                    recording_id=recording_id,
                    clip_id=clip.clip_id,
                    clip_number=n,
                    avatar=uri,
                    avatar_id=av_id,
                    exports_url=exports_url,
                    export_key=export_key(name, f"{av.name}__clip{n:03d}.mp4"),
                    source_object_id=source_object_id,
                )
                for n, clip in enumerate(clips, start=1)
            ]
        logger.info(
            "%s: %d clips x %d avatars -> %d renders", name, len(clips), len(jobs) // len(clips), len(jobs)
        )
        request = RenderRequest(
            backend=backend, checkpoint=checkpoint, crf=settings.crf, preset=settings.preset
        )
        how = FanOut(
            deployment=settings.render_deployment,
            common={
                "backend": backend,
                "checkpoint": checkpoint,
                "video_encoder": video_encoder,
                "force": force,
            },
            params_hash=request.params_hash(),
            backend_version=backend_version(backend, checkpoint=resolve_checkpoint(checkpoint, settings)),
            force_token=str(flow_run.get_id()) if force else None,
            max_resubmits=max_resubmits,
            timeout_s=wait_timeout_s,
        )
        rows += fan_out(jobs, how, repo, name)
    except Exception as exc:
        final = isinstance(exc, PermanentError)
        _settle(source_object_id, "quarantined" if final else "failed", exc, recording_id, max_attempts)
        raise
    failed = [r for r in rows if r["status"] != "succeeded"]
    if failed:
        reason = "; ".join(f"{r.get('export_key') or r.get('avatar')}: {r['error']}" for r in failed)
        _settle(source_object_id, "failed", reason, recording_id, max_attempts)
    else:
        _settle(source_object_id, "done", None, recording_id, max_attempts)
    return _publish(name, rows, recording_id)


def _settle(
    source_id: int | None,
    status: str,
    error: BaseException | str | None,
    recording_id: int | None,
    max_attempts: int,
) -> None:
    if source_id is None:
        return
    repo = repository(get_settings().resolved_database_url)
    row = repo.find_source_object(str(source_id))
    if status == "failed" and row is not None and row["attempts"] >= max_attempts:
        status = "quarantined"
    repo.mark_source_object(
        source_id,
        status,  # type: ignore[arg-type]
        error=error,
        recording_id=recording_id,
        prov=provenance(),
    )


def _publish(name: str, rows: list[dict[str, Any]], recording_id: int | None) -> dict[str, Any]:
    columns = (
        "clip",
        "avatar",
        "status",
        "export",
        "duration_s",
        "rtf",
        "encoder",
        "worker",
        "runs",
        "attempts",
        "error",
    )
    table = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    ok = sum(r["status"] == "succeeded" for r in rows)
    create_table_artifact(
        table=table,
        key="process-recording",
        description=f"Renders of {name}: {ok} of {len(rows)} succeeded",
    )
    return {"recording": name, "recording_id": recording_id, "succeeded": ok, "renders": rows}


def _cell(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else ("" if value is None else value)


__all__ = ["process_recording"]
