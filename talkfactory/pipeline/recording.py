"""Open a recording: hash it, probe it, and pull its speech track out once (no video transcode)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkfactory.errors import InvalidMediaError, NoAudioStreamError
from talkfactory.infra.files import sha256_file
from talkfactory.infra.media.audio import FileAudio, extract_audio
from talkfactory.infra.media.encode import AudioInput
from talkfactory.infra.media.probe import MediaInfo, probe
from talkfactory.models.audio import SliceAudio
from talkfactory.pipeline.speech_source import SpeechSource

log = logging.getLogger(__name__)

ANALYSIS_RATE = 16_000
"""Sample rate every speech model and backend reads."""


@dataclass(frozen=True)
class PreparedRecording:
    """A recording ready to drive renders: its identity, streams, and 16 kHz speech track."""

    path: Path
    sha256: str
    size_bytes: int
    info: MediaInfo
    audio_path: Path
    """Raw s16le mono at ``ANALYSIS_RATE``, in the work area."""
    num_samples: int
    warnings: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.num_samples / ANALYSIS_RATE

    def audio(self) -> FileAudio:
        return FileAudio(self.audio_path, ANALYSIS_RATE)

    def speech(self, start_s: float = 0.0, end_s: float | None = None) -> SpeechSource:
        """The recording's own audio track (or a stretch of it) as what an avatar says."""
        full = self.audio()
        start = int(round(start_s * ANALYSIS_RATE))
        stop = full.num_samples if end_s is None else int(round(end_s * ANALYSIS_RATE))
        analysis = SliceAudio(full, start, stop)
        assert self.info.audio is not None, "prepare_recording guarantees an audio stream"
        mux = AudioInput(
            path=self.path,
            stream_index=self.info.audio.index,
            start=start_s,
            duration=analysis.num_samples / ANALYSIS_RATE,
        )
        return SpeechSource(analysis=analysis, mux=mux)

    def probe_dict(self) -> dict[str, Any]:
        """Probe facts for lineage; ``format`` is the demuxer the file was actually read with."""
        return {**self.info.to_dict(), "format": self.info.format_name}


def prepare_recording(path: str | Path, work_dir: Path, *, timeout: float = 3600.0) -> PreparedRecording:
    """Hash, probe and extract the speech track of ``path``.

    Raises ``MediaNotFoundError``, ``InvalidMediaError`` or ``NoAudioStreamError`` naming the file.
    A truncated recording (as OBS leaves after a crash) is used as far as it decodes, with a warning.
    """
    path = Path(path)
    sha = sha256_file(path)
    info = probe(path)
    if info.audio is None:
        raise NoAudioStreamError("has no audio stream, so there is no speech to re-use", subject=str(path))
    out_dir = work_dir / sha[:2] / sha
    out_dir.mkdir(parents=True, exist_ok=True)
    audio_path = out_dir / f"speech-{ANALYSIS_RATE}.s16le"
    extract = extract_audio(path, audio_path, sample_rate=ANALYSIS_RATE, channels=1, timeout=timeout)
    if extract.num_samples == 0:
        raise InvalidMediaError("audio stream decoded to no samples", subject=str(path))
    warnings = list(extract.warnings)
    for w in warnings:
        log.warning("%s: %s", path, w)
    return PreparedRecording(
        path=path,
        sha256=sha,
        size_bytes=path.stat().st_size,
        info=info,
        audio_path=audio_path,
        num_samples=extract.num_samples,
        warnings=warnings,
    )
