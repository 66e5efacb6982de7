"""Running one render job: the reuse rule, the render, the publish, the lineage rows, the settlement.

``execute_job`` is what every executor calls, in this process or in a resident Ray actor. ``cache``
is the executor's resident state (loaded backends, prepared avatars), kept alive between calls so a
model loads once per executor, not once per render.

Settlement, in one place:
* bad input about this job (no face on the avatar, an unreadable clip): recorded, returned as a
  ``failed`` row with ``bad_input``; never retried, and the job's siblings go on;
* a configuration error (unknown backend, a checkpoint that does not match): raised, it stops the
  whole job set and quarantines nothing;
* a transient error (ffmpeg crashed, a store or database away): recorded and raised for the
  caller's retry policy;
* an interrupt (Ctrl-C, the executor shutting down): recorded as ``interrupted`` and raised.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import socket
import time
from pathlib import Path
from typing import Any, Literal

from talkfactory.errors import ConfigurationError, InterruptedRunError, PermanentError, SyncCheckError
from talkfactory.infra.files import atomic_write_bytes
from talkfactory.infra.lineage.repository import LineageRepository, RenderState
from talkfactory.infra.lineage.rows import ExportRow
from talkfactory.infra.lineage.tables import RENDER_DONE
from talkfactory.infra.media.audio import FileAudio, extract_audio
from talkfactory.infra.media.encode import AudioInput
from talkfactory.infra.media.encoders import choose_h264_encoder
from talkfactory.infra.media.frames import iter_video_frames
from talkfactory.infra.settings import Settings, get_settings
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.lipsync.base import LipSyncBackend
from talkfactory.models.lipsync.liveliness import seed_from_key
from talkfactory.models.lipsync.registry import make_backend
from talkfactory.pipeline.avatar import PreparedAvatar, prepare_avatar
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.exports.produce import ExportRun
from talkfactory.pipeline.exports.publish import ExportPublisher
from talkfactory.pipeline.exports.targets import ExportTarget
from talkfactory.pipeline.exports.transcribe import clip_transcript
from talkfactory.pipeline.exports.variants import EncodeChoice, PartFile, SinkFanout
from talkfactory.pipeline.interrupt import raise_if_stopped
from talkfactory.pipeline.jobs.files import local_copy, publish_file, published, split_uri
from talkfactory.pipeline.jobs.model import ExportOutcome, JobResult, RenderJob
from talkfactory.pipeline.jobs.settle import is_bad_input
from talkfactory.pipeline.lineage import lineage
from talkfactory.pipeline.progress import lineage_frame_progress, progress_sink
from talkfactory.pipeline.recording import ANALYSIS_RATE
from talkfactory.pipeline.render import (
    EncodeSettings,
    ProgressFn,
    RenderResult,
    render_avatar,
    review_status,
)
from talkfactory.pipeline.render_claim import wait_while_rendered_elsewhere
from talkfactory.pipeline.speech_source import SpeechSource

log = logging.getLogger(__name__)

MODEL_LOADS = "model_loads"
"""``cache[MODEL_LOADS]``: how many times this executor loaded a backend (benchmarks read it)."""


def execute_job(job: RenderJob, cache: dict[str, Any], *, progress: ProgressFn | None = None) -> JobResult:
    """Run ``job`` unless lineage shows it done; return its row (see the module doc for failures)."""
    settings = get_settings()
    repo = lineage(settings.resolved_database_url)
    if not job.force:
        done = _already_published(job, repo, settings) or _copy_twin(job, repo, settings)
        if done is not None:
            # The render stands; channel files it lacks (new channels, a newer channel spec) are
            # made from the published master.
            return _with_exports(done, ensure_exports(job, done, cache, repo, settings))
    return _render(job, cache, repo, settings, progress)


def export_job(job: RenderJob, render_id: int, cache: dict[str, Any]) -> JobResult:
    """The channel files ``job.exports`` of the finished render ``render_id``, from its stored master
    (never renders: ``talkfactory export``)."""
    settings = get_settings()
    repo = lineage(settings.resolved_database_url)
    row = repo.get_render_row(render_id)
    if row is None or row.status not in RENDER_DONE or not row.output_uri:
        raise ConfigurationError("is not a finished render in lineage", subject=f"render {render_id}")
    done = JobResult.of(
        job,
        row.status,  # type: ignore[arg-type]
        render_id=row.id,
        output=row.output_uri,
        reused="same",
        duration_s=row.duration_s,
        encoder=row.encoder,
        attempts=row.attempts,
    )
    return _with_exports(done, ensure_exports(job, done, cache, repo, settings))


def loaded_backend(cache: dict[str, Any], job: RenderJob, settings: Settings) -> LipSyncBackend:
    """The job's backend, loaded into this executor once and kept (``cache``)."""
    key = f"backend:{job.params.backend}:{job.model_version}"
    backend = cache.get(key)
    if backend is None:
        checkpoint = resolve_checkpoint(job.checkpoint, settings)
        t0 = time.perf_counter()
        backend = make_backend(job.params.backend, checkpoint=checkpoint)
        cache[MODEL_LOADS] = int(cache.get(MODEL_LOADS, 0)) + 1
        cache.setdefault("model_load_s", []).append(round(time.perf_counter() - t0, 3))
        if backend.version != job.model_version:
            raise ConfigurationError(
                f"the checkpoint loaded here is {backend.version}, the job was planned for "
                f"{job.model_version}; give every executor the same checkpoint",
                subject=job.checkpoint or job.params.backend,
            )
        cache[key] = backend
        log.info("loaded %s (%s) in %.1f s", job.params.backend, backend.version, time.perf_counter() - t0)
    assert isinstance(backend, LipSyncBackend)
    return backend


def worker_name(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return settings.worker or f"{socket.gethostname()}:{os.getpid()}"


def _already_published(job: RenderJob, repo: LineageRepository, settings: Settings) -> JobResult | None:
    # Another live process rendering this very key (two runs of one recording at once): wait for it
    # and reuse its output rather than render the same thing twice.
    state = wait_while_rendered_elsewhere(repo, job.render_key())
    if state is None or state.status not in RENDER_DONE:
        return None
    if not published(job.destination.location, job.destination.key, settings):
        return None
    log.info("%s: already published as %s", job.label, job.destination.uri)
    return _row(job, state, status=state.status, reused="same")


def _copy_twin(job: RenderJob, repo: LineageRepository, settings: Settings) -> JobResult | None:
    """The same render published elsewhere (another folder, the same recording under another key):
    copy its file instead of rendering the same pixels again."""
    for twin in repo.succeeded_renders_with_content(job.content_key()):
        if not twin.output_uri or twin.output_uri == job.destination.uri:
            continue
        location, key = split_uri(twin.output_uri)
        try:
            if not published(location, key, settings):
                continue
            source = local_copy(twin.output_uri, settings)
        except PermanentError:
            continue
        state = _begin(job, repo)
        info = publish_file(source, job.destination.location, job.destination.key, settings)
        stats = {"copied_from_render": twin.id, "worker": worker_name(settings)}
        repo.finish_render(
            state.id,
            output_uri=job.destination.uri,
            encoder=twin.encoder or "",
            duration_s=twin.duration_s or 0.0,
            wall_s=0.0,
            stats=stats,
            prov=job.provenance,
            status=twin.status,  # the same pixels: a twin that needs review, needs it here too
        )
        _record_export(job, repo, state.id, info.etag, info.size)
        log.info("%s: copied render %d from %s", job.label, twin.id, twin.output_uri)
        row = repo.get_render(job.render_key()) or state
        return _row(job, row, status=twin.status, reused="copied", stats=stats)
    return None


def _render(
    job: RenderJob,
    cache: dict[str, Any],
    repo: LineageRepository,
    settings: Settings,
    progress: ProgressFn | None,
) -> JobResult:
    key = job.render_key()
    state = _begin(job, repo)
    sink = progress_sink()
    sink.start(key, job.label, 1)
    # A finished render whose publish failed stays here under its key, so the retry publishes it
    # instead of rendering it again (same key, same pixels; it appears only whole, by rename).
    spool = settings.work_dir / "renders" / f"{key[:40]}.mp4"
    exports: ExportRun | None = None
    fanout: SinkFanout | None = None
    files: list[PartFile] = []
    try:
        started = time.time()
        spooled = _spooled(spool, job)
        if spooled is not None:
            result = spooled
        else:
            encode = _encode_choice(job, settings)
            speech = _speech(job, settings)
            avatar = _prepared_avatar(cache, job, settings)
            backend = loaded_backend(cache, job, settings)
            if job.exports:
                exports = _export_run(job, cache, repo, settings, avatar.track, speech, "render")
                fanout = exports.sinks(encode)
            try:
                result = render_avatar(
                    speech,
                    avatar,
                    backend,
                    spool,
                    encode=EncodeSettings(
                        video_codec=encode.video_codec,
                        crf=encode.crf,
                        preset=encode.preset,
                        timeout_s=encode.timeout_s,
                    ),
                    progress=_both(
                        lambda d, t: sink.update(key, d, t),
                        progress,
                        lineage_frame_progress(lambda extra: repo.annotate_render(state.id, extra)),
                    ),
                    liveliness=job.params.liveliness,
                    # Seeded by the pixels' identity: a re-render (or a copy elsewhere) is the same video.
                    seed=seed_from_key(job.content_key()),
                    qc=True,
                    tap=fanout.write if fanout is not None else None,
                )
                files = fanout.close() if fanout is not None else []
            except BaseException:
                if fanout is not None:
                    fanout.abort()
                raise
        _save_result(spool, result)
        # A failed sync check is published as needs_review, or with qc_strict not at all (raises).
        status = review_status(result, strict=job.qc_strict)
        info = publish_file(result.output, job.destination.location, job.destination.key, settings)
    except BaseException as exc:
        if isinstance(exc, SyncCheckError):
            _drop_spool(spool)  # never to be published, not even by a retry
        for part_file in files:
            part_file.path.unlink(missing_ok=True)
        interrupted = isinstance(exc, KeyboardInterrupt | SystemExit | InterruptedRunError)
        repo.fail_render(state.id, error=exc, prov=job.provenance, interrupted=interrupted)
        sink.finish(key, False, str(exc))
        if interrupted or not is_bad_input(exc):
            # Interrupts, setup and transient errors are the caller's to handle; so is a bug.
            raise
        log.error("%s: %s", job.label, exc)
        return _row(job, repo.get_render(key) or state, error=exc)
    stats = result.stats() | {
        "worker": worker_name(settings),
        "pid": os.getpid(),
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or "cpu",
        "started_at": started,
        "finished_at": time.time(),
    }
    if spooled is not None:
        stats["published_from_spool"] = True
    repo.finish_render(
        state.id,
        output_uri=job.destination.uri,
        encoder=result.encoder,
        duration_s=result.duration_s,
        wall_s=result.wall_s,
        stats=stats,
        prov=job.provenance,
        status=status,
    )
    _record_export(job, repo, state.id, info.etag, info.size)
    made: tuple[ExportOutcome, ...] = ()
    try:
        if exports is not None:
            made = tuple(
                ExportPublisher(exports).publish(
                    render_id=state.id, repo=repo, settings=settings, files=files, master=spool
                )
            )
        elif job.exports:
            # Published from an earlier attempt's spool: channels are made from the master now.
            made = tuple(_exports_from_master(job, state.id, job.exports, cache, repo, settings, spool))
    finally:
        _drop_spool(spool)
    if status == "needs_review":
        log.warning("%s: published, but needs review: %s", job.label, _qc_reason(result))
    sink.finish(key, True, f"{result.rtf:.2f}x real time")
    log.info(
        "%s: published %s (%.1f s of video, %.2fx real time, %s)",
        job.label,
        job.destination.uri,
        result.duration_s,
        result.rtf,
        result.encoder,
    )
    return _with_exports(_row(job, repo.get_render(key) or state, status=status, stats=stats), made)


def _spooled(spool: Path, job: RenderJob) -> RenderResult | None:
    """The result of an earlier attempt that rendered this key but could not publish it."""
    meta = spool.with_suffix(".result")
    if not (spool.is_file() and meta.is_file()):
        return None
    try:
        # Our own file in our own work folder, written by _save_result: never anything a user gave.
        result = pickle.loads(meta.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError):
        return None
    if not isinstance(result, RenderResult):
        return None
    log.info("%s: publishing the render an earlier attempt finished (%s)", job.label, spool)
    return dataclasses.replace(result, output=spool)


def _save_result(spool: Path, result: RenderResult) -> None:
    atomic_write_bytes(spool.with_suffix(".result"), pickle.dumps(result))


def _drop_spool(spool: Path) -> None:
    spool.unlink(missing_ok=True)
    spool.with_suffix(".result").unlink(missing_ok=True)


def _qc_reason(result: RenderResult) -> str:
    if result.qc is not None:
        return str(result.qc.reason)
    return f"the sync check could not run: {result.qc_error}"


def _begin(job: RenderJob, repo: LineageRepository) -> RenderState:
    state = repo.begin_render(
        render_key=job.render_key(),
        content_key=job.content_key(),
        recording_id=job.recording_id,
        avatar_id=job.avatar.avatar_id,
        clip_id=job.clip.clip_id,
        backend=job.params.backend,
        backend_version=job.model_version,
        params_hash=job.params.params_hash(),
        params=job.params.model_dump(),
        prov=job.provenance,
    )
    # Who holds it while it runs: a running row whose process is gone can be told from a live one.
    repo.annotate_render(state.id, {"worker": worker_name(), "pid": os.getpid()})
    return state


def _record_export(job: RenderJob, repo: LineageRepository, render_id: int, etag: str, size: int) -> None:
    repo.record_export(
        render_id=render_id,
        recording_id=job.recording_id,
        source_object_id=job.source_object_id,
        uri=job.destination.uri,
        etag=etag,
        size_bytes=size,
        prov=job.provenance,
    )


def _prepared_avatar(cache: dict[str, Any], job: RenderJob, settings: Settings) -> PreparedAvatar:
    """The avatar with its face track; tracked once per content (on disk) and kept per executor."""
    key = f"avatar:{job.avatar.content_hash}"
    avatar = cache.get(key)
    if avatar is None:
        avatar = prepare_avatar(local_copy(job.avatar.uri, settings), settings.cache_dir)
        if avatar.content_hash != job.avatar.content_hash:
            # The file at that URL was replaced since the job was planned: render what was planned, or fail.
            raise PermanentError(
                "changed since the job was planned (another version is there now)", subject=job.avatar.uri
            )
        cache[key] = avatar
    assert isinstance(avatar, PreparedAvatar)
    return avatar


def _speech(job: RenderJob, settings: Settings) -> SpeechSource:
    clip = job.clip
    analysis_path = local_copy(clip.audio16_uri, settings)
    if not clip.whole_track:
        return SpeechSource(
            analysis=FileAudio(analysis_path), mux=AudioInput(path=local_copy(clip.audio48_uri, settings))
        )
    # A whole track: the recording's extracted speech track drives the backend, its own audio is muxed.
    analysis = FileAudio(analysis_path, None if analysis_path.suffix == ".wav" else ANALYSIS_RATE)
    return SpeechSource(
        analysis=analysis,
        mux=AudioInput(
            path=local_copy(clip.audio48_uri, settings),
            stream_index=clip.audio_stream,
            start=0.0,
            duration=analysis.num_samples / analysis.sample_rate,
        ),
    )


def _row(
    job: RenderJob,
    state: RenderState,
    *,
    status: str = "succeeded",
    reused: str = "",
    error: BaseException | None = None,
    stats: dict[str, Any] | None = None,
) -> JobResult:
    stats = stats or {}
    return JobResult.of(
        job,
        "failed" if error is not None else status,  # type: ignore[arg-type]
        render_id=state.id,
        output=None if error is not None else job.destination.uri,
        reused=reused,
        duration_s=state.duration_s,
        wall_s=state.wall_s,
        encoder=state.encoder,
        attempts=state.attempts,
        error=str(error) if error is not None else None,
        bad_input=error is not None and is_bad_input(error),
        worker=stats.get("worker"),
        stats=stats,
    )


def _both(*fns: ProgressFn | None) -> ProgressFn:
    def call(done: int, total: int) -> None:
        for fn in fns:
            if fn is not None:
                fn(done, total)

    return call


def _encode_choice(job: RenderJob, settings: Settings) -> EncodeChoice:
    return EncodeChoice(
        video_codec=job.video_encoder or settings.video_encoder or choose_h264_encoder().name,
        crf=job.params.crf,
        preset=job.params.preset,
        timeout_s=settings.ffmpeg_timeout_s,
    )


def _export_run(
    job: RenderJob,
    cache: dict[str, Any],
    repo: LineageRepository,
    settings: Settings,
    track: FaceTrack,
    speech: SpeechSource,
    made_from: Literal["render", "master"],
    targets: tuple[ExportTarget, ...] | None = None,
) -> ExportRun:
    targets = job.exports if targets is None else targets
    needs_words = any(
        t.spec.captions or t.burn_captions or t.spec.max_duration_s is not None for t in targets
    )
    transcript = clip_transcript(job, speech.analysis, cache, repo, settings) if needs_words else None
    return ExportRun.prepare(
        job,
        targets,
        track=track,
        fps=track.fps,
        analysis=speech.analysis,
        audio=speech.mux,
        transcript=transcript,
        spool=settings.work_dir / "exports" / job.render_key()[:40],
        made_from=made_from,
        timeout_s=settings.ffmpeg_timeout_s,
    )


def ensure_exports(
    job: RenderJob, done: JobResult, cache: dict[str, Any], repo: LineageRepository, settings: Settings
) -> tuple[ExportOutcome, ...]:
    """Make the channel files a published render lacks: missing, failed, or made with an older spec."""
    if not job.exports or done.render_id is None:
        return ()
    missing = missing_exports(job, repo.exports_for_render(done.render_id), settings)
    if not missing:
        return ()
    master = local_copy(job.destination.uri, settings)
    return tuple(_exports_from_master(job, done.render_id, missing, cache, repo, settings, master))


def missing_exports(job: RenderJob, rows: list[ExportRow], settings: Settings) -> tuple[ExportTarget, ...]:
    """The targets of ``job`` with no current export: none made, failed, an older channel spec, or
    a published file that is gone."""
    todo = []
    for target in job.exports:
        mine = [r for r in rows if r.channel == target.channel and r.spec_version == target.spec.spec_version]
        if not mine or any(r.status == "failed" for r in mine):
            todo.append(target)
        elif any(r.status == "published" and not _still_there(r, target, settings) for r in mine):
            todo.append(target)
    return tuple(todo)


def _still_there(row: ExportRow, target: ExportTarget, settings: Settings) -> bool:
    # A row with a part number was one of several parts (part_key names parts only when parts > 1).
    key = target.key if row.part is None else target.part_key(row.part, parts=2)
    return published(target.location, key, settings)


def _exports_from_master(
    job: RenderJob,
    render_id: int,
    targets: tuple[ExportTarget, ...],
    cache: dict[str, Any],
    repo: LineageRepository,
    settings: Settings,
    master: Path,
) -> list[ExportOutcome]:
    """Channel files decoded from the stored master (re-exports, renders published from a spool)."""
    log.info("%s: exporting %s from the master", job.label, ", ".join(t.channel for t in targets))
    avatar = _prepared_avatar(cache, job, settings)
    speech_path = settings.work_dir / "exports" / job.render_key()[:40] / "master-speech.s16le"
    try:
        return _export_master(job, render_id, targets, cache, repo, settings, master, avatar, speech_path)
    finally:
        speech_path.unlink(missing_ok=True)


def _export_master(
    job: RenderJob,
    render_id: int,
    targets: tuple[ExportTarget, ...],
    cache: dict[str, Any],
    repo: LineageRepository,
    settings: Settings,
    master: Path,
    avatar: PreparedAvatar,
    speech_path: Path,
) -> list[ExportOutcome]:
    speech = _master_speech(master, speech_path, settings)
    run = _export_run(job, cache, repo, settings, avatar.track, speech, "master", targets)
    fanout = run.sinks(_encode_choice(job, settings))
    files: list[PartFile] = []
    try:
        wanted = fanout.frames_needed
        if wanted != 0:
            track = avatar.track
            frames = iter_video_frames(
                master,
                fps=track.fps,
                width=track.width,
                height=track.height,
                count=wanted,  # only the master's cover candidates when no channel encodes
                timeout=settings.ffmpeg_timeout_s,
            )
            for i, frame in enumerate(frames):
                raise_if_stopped(job.label)
                fanout.write(i, frame)
        files = fanout.close()
    except BaseException:
        fanout.abort()
        raise
    return ExportPublisher(run).publish(
        render_id=render_id,
        repo=repo,
        settings=settings,
        files=files,
        master=master if any(t.is_master for t in targets) else None,
    )


def _master_speech(master: Path, analysis: Path, settings: Settings) -> SpeechSource:
    """The speech of a stored master: its own audio, muxed as it is and read at 16 kHz (into
    ``analysis``) for covers and captions; a clip's work audio or a recording's speech track may be
    long gone by the time a channel is added."""
    analysis.parent.mkdir(parents=True, exist_ok=True)
    extract_audio(master, analysis, sample_rate=ANALYSIS_RATE, channels=1, timeout=settings.ffmpeg_timeout_s)
    return SpeechSource(analysis=FileAudio(analysis, ANALYSIS_RATE), mux=AudioInput(path=master))


def _with_exports(row: JobResult, made: tuple[ExportOutcome, ...]) -> JobResult:
    return dataclasses.replace(row, exports=made) if made else row
