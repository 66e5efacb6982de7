"""What an avatar says, as a render needs it."""

from __future__ import annotations

from dataclasses import dataclass

from talkfactory.infra.media.encode import AudioInput
from talkfactory.models.audio import AudioSource


@dataclass(frozen=True)
class SpeechSource:
    """What an avatar says: audio for the backend, and the same stretch at full quality for the MP4."""

    analysis: AudioSource
    """Mono, time 0 = the first output frame (a recording's speech track, a span of it, or a clip)."""
    mux: AudioInput
    """The audio stream muxed into the output, covering the same stretch."""

    @property
    def duration_s(self) -> float:
        return self.analysis.num_samples / self.analysis.sample_rate
