"""``render-clip``: one speech clip spoken by one avatar, on a GPU worker, published to the exports store.

Its parameters are lineage ids and URLs (see ``RenderJob``), so any worker that can reach the
lineage database and the stores can take it. The render holds this worker's GPU slot (a Prefect
concurrency limit) while it runs; the MP4 is uploaded under its final key in one atomic put, so a
worker dying mid-render leaves nothing in the exports store, and the re-run writes the same key.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from talkfactory.errors import PermanentError
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.settings import get_settings
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.fanout import RenderJob, local_copy
from talkfactory.pipeline.ingest import store_from_settings
from talkfactory.tasks.context import provenance, repository
from talkfactory.tasks.gpu import gpu_slot
from talkfactory.tasks.prepare import prepare_avatar_task
from talkfactory.tasks.render import (
    ClipRef,
    RecordingRef,
    RenderRequest,
    loaded_backend,
    render_key,
    render_task,
)


@flow(name="render-clip", flow_run_name="render clip {clip_id} x {avatar_id}", log_prints=False)
def render_clip(
    recording_id: int,
    clip_id: int,
    clip_number: int,
    avatar: str,
    avatar_id: int,
    exports_url: str,
    export_key: str,
    source_object_id: int | None = None,
    backend: str = "weightless",
    checkpoint: str | None = None,
    video_encoder: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Render clip ``clip_id`` of recording ``recording_id`` with ``avatar``; publish it at ``export_key``.

    Returns a summary row (status, export URI, duration, real-time factor, encoder, worker, GPU).
    A render already in lineage with its export still in place is not redone unless ``force``.
    Bad input (clip or recording unknown, no face on the avatar) fails the run with the reason;
    ``process-recording`` reports it and does not resubmit.
    """
    logger = get_run_logger()
    settings = get_settings()
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    repo = repository(db_url)
    job = RenderJob(
        recording_id, clip_id, clip_number, avatar, avatar_id, exports_url, export_key, source_object_id
    )

    recording, clip_row = repo.get_recording(recording_id), repo.get_clip(clip_id)
    if recording is None or clip_row is None or clip_row["recording_id"] != recording_id:
        raise PermanentError(
            f"clip {clip_id} of recording {recording_id} is not in lineage", subject=export_key
        )
    clip = ClipRef(
        clip_id=clip_id,
        start_s=clip_row["start_s"],
        end_s=clip_row["end_s"],
        params_hash=clip_row["params_hash"],
        audio16=str(local_copy(clip_row["audio_uri"], settings)),
        audio48=str(local_copy(clip_row["audio48_uri"], settings)),
    )
    av, av_id = prepare_avatar_task(
        str(local_copy(avatar, settings)), str(settings.cache_dir), db_url, avatar
    )
    request = RenderRequest(backend=backend, checkpoint=checkpoint, crf=settings.crf, preset=settings.preset)
    exports = store_from_settings(exports_url, settings)
    export_uri = exports.url(export_key)

    key = render_key(
        recording["sha256"],
        av.content_hash,
        loaded_backend(backend, resolve_checkpoint(checkpoint, settings)).version,
        request,
        clip,
    )
    done = repo.get_render(key)
    if not force and done is not None and done.status == "succeeded" and exports.exists(export_key):
        published = repo.find_export(export_uri)
        if published is not None and published["render_id"] == done.id:
            logger.info("%s: already rendered and published; nothing to do", export_uri)
            return _row(
                job, "succeeded", export_uri, reused=True, render_id=done.id, duration_s=done.duration_s
            )

    work = settings.work_dir / "render-clip" / key[:16]
    output = work / Path(export_key).name
    try:
        with gpu_slot(settings) as slot:
            outcome = render_task(
                RecordingRef(recording["sha256"]),
                recording_id,
                av,
                av_id,
                str(output),
                request,
                video_encoder or settings.video_encoder,
                db_url,
                force,
                clip=clip,
            )
        assert outcome.render_id is not None
        info = exports.put_file(output, export_key, content_type="video/mp4")
        repo.record_export(
            render_id=outcome.render_id,
            recording_id=recording_id,
            source_object_id=source_object_id,
            uri=export_uri,
            etag=info.etag,
            size_bytes=info.size,
            prov=provenance(),
        )
        repo.annotate_render(outcome.render_id, slot.stats())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(
        "published %s (%.1f s, %.2fx real time, %s, %s on %s)",
        export_uri,
        outcome.duration_s or 0.0,
        outcome.rtf or 0.0,
        outcome.encoder,
        slot.worker,
        slot.gpu,
    )
    return _row(
        job,
        "succeeded",
        export_uri,
        render_id=outcome.render_id,
        duration_s=outcome.duration_s,
        rtf=outcome.rtf,
        encoder=outcome.encoder,
        worker=slot.worker,
        gpu=slot.gpu,
    )


def _row(job: RenderJob, status: str, export_uri: str, **extra: Any) -> dict[str, Any]:
    return {
        "clip_id": job.clip_id,
        "avatar_id": job.avatar_id,
        "status": status,
        "export": export_uri,
        **extra,
    }


__all__ = ["render_clip"]
