"""One render: avatar frames -> lip-sync backend -> H.264/AAC MP4, streamed end to end.

Decode, render and encode overlap: ffmpeg decodes in one process and encodes in another, fed
through bounded queues, so the Python loop only ever holds a few frames, whatever the length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from talkfactory.infra.files import sweep_stale_partials
from talkfactory.infra.media.encode import FrameEncoder
from talkfactory.infra.media.frames import PingPongFrames
from talkfactory.models.audio import frame_count
from talkfactory.models.lipsync.base import LipSyncBackend, TemplateFrame
from talkfactory.pipeline.avatar import PreparedAvatar
from talkfactory.pipeline.interrupt import raise_if_stopped
from talkfactory.pipeline.speech_source import SpeechSource

log = logging.getLogger(__name__)
T = TypeVar("T")

ProgressFn = Callable[[int, int], None]
"""Called with (frames done, frames total)."""


@dataclass(frozen=True)
class EncodeSettings:
    video_codec: str = "libx264"
    crf: int = 20
    preset: str = "veryfast"
    timeout_s: float = 6 * 3600


@dataclass
class RenderResult:
    output: Path
    frames: int
    fps: float
    duration_s: float
    wall_s: float
    encoder: str
    stage_s: dict[str, float] = field(default_factory=dict)

    @property
    def rtf(self) -> float:
        """Real-time factor: wall time over output duration (below 1 is faster than real time)."""
        return self.wall_s / self.duration_s if self.duration_s else float("inf")

    def stats(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "fps": self.fps,
            "rtf": round(self.rtf, 4),
            "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()},
        }


class _Timed(Iterator[T]):
    """Wraps an iterator and adds the time spent waiting on it to ``stage_s[name]``."""

    def __init__(self, it: Iterable[T], stage_s: dict[str, float], name: str) -> None:
        self._it, self._stage_s, self._name = iter(it), stage_s, name
        stage_s.setdefault(name, 0.0)

    def __next__(self) -> T:
        t0 = time.perf_counter()
        try:
            return next(self._it)
        finally:
            self._stage_s[self._name] += time.perf_counter() - t0


def render_avatar(
    speech: SpeechSource,
    avatar: PreparedAvatar,
    backend: LipSyncBackend,
    output: Path,
    *,
    encode: EncodeSettings | None = None,
    progress: ProgressFn | None = None,
) -> RenderResult:
    """Render ``avatar`` saying ``speech`` into ``output``.

    ``output`` appears only when complete (written under a temporary name, then renamed). Temporary
    files that dead runs left in the output folder are removed first. A stop request (Ctrl-C) ends
    the render at the next frame with ``InterruptedRunError``; ffmpeg is killed and the temporary
    file deleted on the way out.
    """
    raise_if_stopped(str(output))
    output.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_partials(output.parent)
    encode = encode or EncodeSettings()
    t_start = time.perf_counter()
    audio = speech.analysis
    duration = speech.duration_s
    fps = avatar.fps
    n = frame_count(audio, fps)
    stage_s: dict[str, float] = {}

    template = PingPongFrames(avatar.path, avatar.info, fps)
    decoded = _Timed(template.frames(n), stage_s, "decode")
    frames = (TemplateFrame(index=i, image=img) for i, img in decoded)
    prepared = backend.prepare(avatar.track)
    rendered = _Timed(backend.render(prepared, frames, audio, fps), stage_s, "render+decode")
    with FrameEncoder(
        output,
        width=avatar.track.width,
        height=avatar.track.height,
        fps=fps,
        audio=speech.mux,
        duration=duration,
        video_codec=encode.video_codec,
        crf=encode.crf,
        preset=encode.preset,
        timeout=encode.timeout_s,
    ) as enc:
        stage_s["encode_wait"] = 0.0
        done = 0
        for frame in rendered:
            raise_if_stopped(str(output))
            t0 = time.perf_counter()
            enc.write(frame)
            stage_s["encode_wait"] += time.perf_counter() - t0
            done += 1
            if progress is not None and (done % 25 == 0 or done == n):
                progress(done, n)
        t0 = time.perf_counter()
    stage_s["encode_flush"] = time.perf_counter() - t0
    stage_s["render"] = stage_s.pop("render+decode") - stage_s["decode"]
    wall = time.perf_counter() - t_start
    if done != n:
        log.warning("%s: backend produced %d frames for %d expected", output.name, done, n)
    return RenderResult(
        output=output,
        frames=done,
        fps=fps,
        duration_s=duration,
        wall_s=wall,
        encoder=encode.video_codec,
        stage_s=stage_s,
    )
