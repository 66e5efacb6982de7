"""The render task: one recording (or clip) x one avatar, idempotent through its lineage key."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from talkfactory.errors import PermanentError
from talkfactory.infra.media.audio import FileAudio
from talkfactory.infra.media.encode import AudioInput
from talkfactory.infra.media.encoders import choose_h264_encoder
from talkfactory.infra.settings import get_settings
from talkfactory.models.lipsync.base import LipSyncBackend
from talkfactory.models.lipsync.registry import make_backend
from talkfactory.pipeline.avatar import PreparedAvatar
from talkfactory.pipeline.checkpoints import resolve_checkpoint
from talkfactory.pipeline.progress import progress_sink
from talkfactory.pipeline.recording import PreparedRecording
from talkfactory.pipeline.render import EncodeSettings, ProgressFn, render_avatar
from talkfactory.pipeline.render_claim import wait_while_rendered_elsewhere
from talkfactory.pipeline.speech_source import SpeechSource
from talkfactory.tasks.context import provenance, repository, retry_transient
from talkfactory.tasks.progress_artifacts import BackgroundProgressArtifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderRequest:
    """Everything that decides a render's output; hashed into its lineage key."""

    backend: str
    checkpoint: str | None
    crf: int
    preset: str
    span_start_s: float = 0.0
    span_end_s: float | None = None

    def params(self) -> dict[str, Any]:
        return asdict(self)

    def params_hash(self) -> str:
        return _hash(self.params())


@dataclass(frozen=True)
class ClipRef:
    """A speech clip to render instead of the recording's whole track."""

    clip_id: int
    start_s: float
    end_s: float
    params_hash: str
    audio16: str
    """16 kHz mono WAV the backend reads."""
    audio48: str
    """48 kHz WAV muxed into the MP4 (denoised, loudness-normalised)."""

    def speech(self) -> SpeechSource:
        return SpeechSource(analysis=FileAudio(self.audio16), mux=AudioInput(path=self.audio48))


@dataclass(frozen=True)
class RecordingRef:
    """A recording known by content hash only: enough for clip renders on a worker without its file."""

    sha256: str


@dataclass(frozen=True)
class RenderOutcome:
    """A row of the run summary."""

    avatar: str
    output: str | None
    status: str
    duration_s: float | None = None
    rtf: float | None = None
    encoder: str | None = None
    attempts: int = 0
    error: str | None = None
    reused: bool = False
    clip_start_s: float | None = None
    clip_end_s: float | None = None
    render_id: int | None = None


@lru_cache(maxsize=4)
def loaded_backend(name: str, checkpoint: str | None) -> LipSyncBackend:
    """One backend per (name, checkpoint) per process: weights load once, not once per render.

    Backends keep no per-render state (per-avatar state comes from ``prepare``), so sharing one
    between renders, and between the threads of one flow run, is safe.
    """
    return make_backend(name, checkpoint=checkpoint)


def render_key(
    recording_sha: str,
    avatar_hash: str,
    backend_version: str,
    req: RenderRequest,
    clip: ClipRef | None = None,
) -> str:
    """Identity of a render: same inputs, backend version and parameters -> same key."""
    ident: dict[str, Any] = {
        "recording": recording_sha,
        "avatar": avatar_hash,
        "backend": backend_version,
        "params": req.params(),
    }
    if clip is not None:
        ident["clip"] = [clip.params_hash, round(clip.start_s, 3), round(clip.end_s, 3)]
    return _hash(ident)


@task(
    name="render",
    task_run_name="render {output}",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def render_task(
    recording: PreparedRecording | RecordingRef,
    recording_id: int,
    avatar: PreparedAvatar,
    avatar_id: int,
    output: str,
    request: RenderRequest,
    video_codec: str | None,
    database_url: str,
    force: bool = False,
    clip: ClipRef | None = None,
) -> RenderOutcome:
    """Render unless lineage shows the same render already succeeded and its file is still there."""
    repo, prov = repository(database_url), provenance()
    checkpoint = resolve_checkpoint(request.checkpoint, get_settings())
    backend = loaded_backend(request.backend, checkpoint)
    key = render_key(recording.sha256, avatar.content_hash, backend.version, request, clip)
    clip_start, clip_end = (clip.start_s, clip.end_s) if clip else (None, None)
    existing = wait_while_rendered_elsewhere(repo, key)
    if (
        not force
        and existing is not None
        and existing.status == "succeeded"
        and existing.output_uri == str(Path(output).resolve())
        and Path(existing.output_uri).exists()
    ):
        log.info(
            "%s: already rendered as %s; skipping (use --force to redo)", avatar.name, existing.output_uri
        )
        return RenderOutcome(
            avatar=avatar.name,
            output=existing.output_uri,
            status="succeeded",
            duration_s=existing.duration_s,
            rtf=(existing.wall_s / existing.duration_s) if existing.wall_s and existing.duration_s else None,
            encoder=existing.encoder,
            attempts=existing.attempts,
            reused=True,
            clip_start_s=clip_start,
            clip_end_s=clip_end,
            render_id=existing.id,
        )
    state = repo.begin_render(
        render_key=key,
        recording_id=recording_id,
        avatar_id=avatar_id,
        clip_id=clip.clip_id if clip else None,
        backend=request.backend,
        backend_version=backend.version,
        params_hash=request.params_hash(),
        params=request.params(),
        prov=prov,
    )
    codec = video_codec or choose_h264_encoder().name
    sink = progress_sink()
    sink.start(key, avatar.name, 1)
    artifact = BackgroundProgressArtifact(f"render {avatar.name}: {Path(output).name}")
    try:
        if clip is not None:
            speech = clip.speech()
        elif isinstance(recording, PreparedRecording):
            speech = recording.speech(request.span_start_s, request.span_end_s)
        else:
            raise PermanentError("a whole-track render needs the recording's file", subject=output)
        result = render_avatar(
            speech,
            avatar,
            backend,
            Path(output),
            encode=EncodeSettings(video_codec=codec, crf=request.crf, preset=request.preset),
            progress=_both(lambda d, t: sink.update(key, d, t), artifact.update),
        )
    except Exception as exc:
        repo.fail_render(state.id, error=exc, prov=prov)
        sink.finish(key, False, str(exc))
        raise
    finally:
        artifact.close()
    repo.finish_render(
        state.id,
        output_uri=str(result.output.resolve()),
        encoder=result.encoder,
        duration_s=result.duration_s,
        wall_s=result.wall_s,
        stats=result.stats(),
        prov=prov,
    )
    sink.finish(key, True, f"{result.rtf:.2f}x real time")
    log.info(
        "%s: wrote %s (%.1f s of video, %.2fx real time, %s)",
        avatar.name,
        result.output,
        result.duration_s,
        result.rtf,
        result.encoder,
    )
    return RenderOutcome(
        avatar=avatar.name,
        output=str(result.output),
        status="succeeded",
        duration_s=result.duration_s,
        rtf=result.rtf,
        encoder=result.encoder,
        attempts=state.attempts,
        clip_start_s=clip_start,
        clip_end_s=clip_end,
        render_id=state.id,
    )


def _both(*fns: ProgressFn) -> ProgressFn:
    def call(done: int, total: int) -> None:
        for fn in fns:
            fn(done, total)

    return call


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
