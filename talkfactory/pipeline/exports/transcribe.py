"""A clip's transcript: recognised once per clip audio and model, kept in lineage.

Every channel of every avatar of a clip speaks the same audio, so captions and pause-aware splits
read one transcript, made the first time any export of that clip needs it. Lineage is asked first
by the model's version (hashed from its files, not loaded), so a known transcript costs no model load.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.settings import Settings
from talkfactory.models.audio import AudioSource
from talkfactory.models.speech.asr import (
    Transcriber,
    Transcript,
    bundled_model_dir,
    check_model_dir,
    model_version,
    words_as_rows,
    words_from_rows,
)
from talkfactory.pipeline.jobs.model import RenderJob, stable_hash

log = logging.getLogger(__name__)


def audio_key(job: RenderJob) -> str:
    """The clip audio's identity: the recording's content, the clip's span and speech parameters."""
    clip = job.clip
    return stable_hash(["speech", job.recording_sha256, clip.params_hash, round(clip.start_s, 3), clip.end_s])


def model_dir(settings: Settings) -> Path:
    """The captions model: ``TALKFACTORY_ASR_MODEL``, else the bundled English ``tiny.en``."""
    folder = settings.asr_model or bundled_model_dir()
    check_model_dir(folder)
    return folder


def transcriber(cache: dict[str, Any], settings: Settings) -> Transcriber:
    """The recogniser, loaded once per executor (``cache``)."""
    key = f"asr:{settings.asr_model}:{settings.asr_language}"
    model = cache.get(key)
    if model is None:
        t0 = time.perf_counter()
        model = Transcriber(model_dir(settings), language=settings.asr_language)
        log.info("loaded the captions model %s in %.1f s", model.version, time.perf_counter() - t0)
        cache[key] = model
    assert isinstance(model, Transcriber)
    return model


def clip_transcript(
    job: RenderJob, analysis: AudioSource, cache: dict[str, Any], repo: LineageRepository, settings: Settings
) -> Transcript:
    """The transcript of ``job``'s clip (``analysis``: its speech), from lineage when made before."""
    version = cache.get("asr-version") or model_version(model_dir(settings))
    cache["asr-version"] = version
    key = audio_key(job)
    row = repo.get_transcript(key, version)
    if row is not None:
        return Transcript(language=row.language or "", words=words_from_rows(row.words), model=row.model)
    model = transcriber(cache, settings)
    t0 = time.perf_counter()
    transcript = model.transcribe_samples(analysis.read(0, analysis.num_samples), analysis.sample_rate)
    wall = time.perf_counter() - t0
    repo.save_transcript(
        audio_key=key,
        model=model.version,
        clip_id=job.clip.clip_id,
        language=transcript.language,
        words=words_as_rows(transcript.words),
        text=transcript.text,
        wall_s=wall,
    )
    log.info("%s: transcribed %d words in %.1f s", job.label, len(transcript.words), wall)
    return transcript
