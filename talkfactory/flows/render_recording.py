"""The main job: one recording, several avatars, one MP4 each, every step in lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from talkfactory.infra.files import fit_file_name
from talkfactory.infra.lineage.db import ensure_schema
from talkfactory.infra.settings import get_settings
from talkfactory.pipeline.speech import SpeechParams
from talkfactory.tasks.prepare import prepare_avatar_task, prepare_recording_task
from talkfactory.tasks.render import ClipRef, RenderOutcome, RenderRequest, render_task
from talkfactory.tasks.speech import speech_task


def clip_output_name(name: str, clip_number: int | None) -> str:
    """``x.mp4`` for the whole track, ``x__clip003.mp4`` for the third clip."""
    return fit_file_name(name if clip_number is None else f"{name[:-4]}__clip{clip_number:03d}.mp4")


def output_names(recording: str, avatars: list[str]) -> list[str]:
    """``<recording>__<avatar>.mp4`` for each avatar; same-named avatars get a numeric suffix."""
    stem, seen, names = Path(recording).stem, dict[str, int](), []
    for a in avatars:
        base = f"{stem}__{Path(a).stem}"
        seen[base] = seen.get(base, 0) + 1
        names.append(f"{base}.mp4" if seen[base] == 1 else f"{base}-{seen[base]}.mp4")
    return names


@flow(
    name="render-recording",
    flow_run_name="render {recording}",
    task_runner=ThreadPoolTaskRunner(max_workers=2),  # type: ignore[arg-type]
)
def render_recording(
    recording: str,
    avatars: list[str],
    out_dir: str,
    backend: str = "weightless",
    checkpoint: str | None = None,
    video_encoder: str | None = None,
    force: bool = False,
    whole_track: bool = False,
    speech: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Render ``recording`` spoken by each of ``avatars`` into ``out_dir``.

    By default the recording's speech is cleaned and cut into clips of the main speaker first
    (``speech`` overrides ``SpeechParams`` fields) and every clip is rendered with every avatar;
    ``whole_track`` renders the recording's audio as it is, start to end, one MP4 per avatar.
    One avatar or clip failing never stops the others; its reason is in the returned summary,
    the run's table artifact and lineage.
    """
    logger = get_run_logger()
    settings = get_settings()
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    request = RenderRequest(backend=backend, checkpoint=checkpoint, crf=settings.crf, preset=settings.preset)
    codec: str | None = video_encoder or settings.video_encoder

    rec_future = prepare_recording_task.submit(recording, str(settings.work_dir), db_url)
    avatar_futures = [prepare_avatar_task.submit(a, str(settings.cache_dir), db_url) for a in avatars]
    rec_future.wait()
    if not rec_future.state.is_completed():
        reason = _reason(rec_future)
        logger.error("recording %s cannot be used: %s", recording, reason)
        return _publish(
            recording,
            # "unusable": the recording stopped the whole job (exit 2), unlike one avatar failing (exit 1)
            [
                RenderOutcome(avatar=Path(a).stem, output=None, status="unusable", error=reason)
                for a in avatars
            ],
        )
    rec, rec_id = rec_future.result()

    clips: list[ClipRef | None] = [None]
    if not whole_track:
        params = SpeechParams(**(speech or {}))
        speech_future = speech_task.submit(rec, rec_id, params, str(settings.work_dir), db_url)
        speech_future.wait()
        if not speech_future.state.is_completed():
            reason = f"speech step failed: {_reason(speech_future)}"
            logger.error("%s: %s", recording, reason)
            return _publish(
                recording,
                [
                    RenderOutcome(avatar=Path(a).stem, output=None, status="failed", error=reason)
                    for a in avatars
                ],
            )
        result, found = speech_future.result()
        if not found:
            reason = result.no_clips_reason or "no speech found"
            logger.warning("%s: %s; nothing to render", recording, reason)
            return _publish(
                recording,
                [
                    RenderOutcome(avatar=Path(a).stem, output=None, status="no speech", error=reason)
                    for a in avatars
                ],
            )
        logger.info("%s: %d clips of the main speaker", recording, len(found))
        clips = list(found)

    renders: list[tuple[str, PrefectFuture[RenderOutcome] | None, str | None]] = []
    for path, name, fut in zip(avatars, output_names(recording, avatars), avatar_futures, strict=True):
        fut.wait()
        if not fut.state.is_completed():
            reason = _reason(fut)
            logger.error("avatar %s skipped: %s", path, reason)
            renders.append((Path(path).stem, None, reason))
            continue
        av, av_id = fut.result()
        for number, clip in enumerate(clips, start=1):
            target = str(out / clip_output_name(name, None if clip is None else number))
            future = render_task.submit(
                rec, rec_id, av, av_id, target, request, codec, db_url, force, clip=clip
            )
            renders.append((av.name, future, None))

    rows: list[RenderOutcome] = []
    for name, rfut, why in renders:
        if rfut is None:
            rows.append(RenderOutcome(avatar=name, output=None, status="failed", error=why))
            continue
        rfut.wait()
        if rfut.state.is_completed():
            rows.append(rfut.result())
        else:
            rows.append(RenderOutcome(avatar=name, output=None, status="failed", error=_reason(rfut)))
    return _publish(recording, rows)


def _reason(future: PrefectFuture[Any]) -> str:
    try:
        future.result(raise_on_failure=True)
    except Exception as exc:  # noqa: BLE001 - the failure's own message is the reason we report
        return str(exc)
    return future.state.message or "failed"


def _publish(recording: str, rows: list[RenderOutcome]) -> list[dict[str, Any]]:
    table = [
        {
            "avatar": r.avatar,
            "clip": f"{r.clip_start_s:.1f}-{r.clip_end_s:.1f} s" if r.clip_start_s is not None else "",
            "status": r.status + (" (reused)" if r.reused else ""),
            "output": r.output or "",
            "duration_s": round(r.duration_s, 2) if r.duration_s else None,
            "rtf": round(r.rtf, 3) if r.rtf else None,
            "encoder": r.encoder or "",
            "attempts": r.attempts,
            "error": r.error or "",
        }
        for r in rows
    ]
    create_table_artifact(
        table=table,
        key="render-summary",
        description=f"Renders of {Path(recording).name}: {sum(r.status == 'succeeded' for r in rows)}"
        f" of {len(rows)} succeeded",
    )
    return [dict(r.__dict__) for r in rows]
