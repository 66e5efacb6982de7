"""The speech task: clean clips of the main speaker, each recorded in lineage."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from talkfactory.errors import NoSpeechError
from talkfactory.infra.lineage.repository import ClipRow
from talkfactory.pipeline.recording import PreparedRecording
from talkfactory.pipeline.speech import SpeechParams, SpeechResult, extract_speech
from talkfactory.tasks.context import provenance, repository, retry_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipRef:
    """A clip of this speech pass: its lineage id, span and local WAVs."""

    clip_id: int
    start_s: float
    end_s: float
    params_hash: str
    audio16: str
    """16 kHz mono WAV the backend reads."""
    audio48: str
    """48 kHz WAV muxed into the MP4 (denoised, loudness-normalised)."""


def speech_dir(work_dir: str, recording: PreparedRecording, params: SpeechParams) -> Path:
    """Clips of one recording under one parameter set: reused by every later run that asks the same."""
    sha = recording.sha256
    return Path(work_dir) / sha[:2] / sha / f"speech-{params.params_hash()}"


@task(
    name="extract-speech",
    task_run_name="speech {recording.path.name}",
    retries=1,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def speech_task(
    recording: PreparedRecording,
    recording_id: int,
    params: SpeechParams,
    work_dir: str,
    database_url: str,
    out_dir: str | None = None,
) -> tuple[SpeechResult, list[ClipRef]]:
    """Denoise, detect speech, keep the main speaker and cut clips; register every clip in lineage."""
    repo, prov = repository(database_url), provenance()
    target = Path(out_dir) if out_dir else speech_dir(work_dir, recording, params)
    try:
        result = extract_speech(recording.path, target, params)
    except Exception as exc:
        repo.record_attempt(
            subject_kind="recording",
            subject_id=recording_id,
            subject_ref=str(recording.path),
            step="speech",
            error=exc,
            prov=prov,
        )
        raise
    ids = repo.register_clips(
        recording_id=recording_id,
        params_hash=result.params_hash,
        params=result.params.to_dict(),
        denoiser=result.params.denoiser,
        denoiser_version=result.denoiser_version,
        clips=[
            ClipRow(
                start_s=c.start,
                end_s=c.end,
                speaker=c.speaker,
                loudness_lufs=c.loudness_lufs,
                snr_db=c.snr_db,
                audio_uri=str((target / c.wav_16k).resolve()),
                audio48_uri=str((target / c.wav_48k).resolve()),
            )
            for c in result.clips
        ],
        prov=prov,
    )
    if result.no_clips_reason:
        log.warning("%s: %s", recording.path.name, result.no_clips_reason)
        # Recorded against the recording, so lineage says why it has no renders.
        repo.record_attempt(
            subject_kind="recording",
            subject_id=recording_id,
            subject_ref=str(recording.path),
            step="speech",
            error=NoSpeechError(result.no_clips_reason, subject=str(recording.path)),
            prov=prov,
        )
    clips = [
        ClipRef(
            clip_id=clip_id,
            start_s=c.start,
            end_s=c.end,
            params_hash=result.params_hash,
            audio16=str(target / c.wav_16k),
            audio48=str(target / c.wav_48k),
        )
        for clip_id, c in zip(ids, result.clips, strict=True)
    ]
    return result, clips
