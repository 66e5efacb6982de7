"""One render: avatar frames -> lip-sync backend -> H.264/AAC MP4, streamed end to end.

Decode, render and encode overlap: ffmpeg decodes in one process and encodes in another, fed
through bounded queues, so the Python loop only ever holds a few frames, whatever the length.

Liveliness (blinks, brow raises, head motion; ``models/lipsync/face_motion.py``) is a stage after
the backend, so it works with every backend: it needs only the frame's template row and the speech.
After the encode, the sync QC (``pipeline/qc.py``) measures the written file.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import SyncCheckError, TalkfactoryError
from talkfactory.infra.files import sweep_stale_partials
from talkfactory.infra.media.encode import FrameEncoder
from talkfactory.infra.media.frames import PingPongFrames
from talkfactory.models.audio import frame_count
from talkfactory.models.lipsync.base import LipSyncBackend, TemplateFrame
from talkfactory.models.lipsync.face_motion import FaceAnimator
from talkfactory.models.lipsync.liveliness import LIVELINESS_VERSION, resolve_liveliness
from talkfactory.pipeline.avatar import PreparedAvatar
from talkfactory.pipeline.interrupt import raise_if_stopped
from talkfactory.pipeline.qc import SyncReport, measure_sync
from talkfactory.pipeline.speech_source import SpeechSource

log = logging.getLogger(__name__)
T = TypeVar("T")

ProgressFn = Callable[[int, int], None]
"""Called with (frames done, frames total)."""
FrameTap = Callable[[int, NDArray[np.uint8]], None]
"""Called with (output frame index, frame) for every frame written; must not modify the frame."""

QC_BUDGET_SHARE = 0.1
"""The sync check may spend this share of the render's own time."""


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
    liveliness: str = "off"
    """The level used (``auto`` resolved)."""
    qc: SyncReport | None = None
    """The sync check of the written file; None when it was not asked for or could not run."""
    qc_error: str | None = None
    """Why the sync check could not run (the render itself is fine)."""

    @property
    def needs_review(self) -> bool:
        """The sync check did not pass or could not run (the output is still written and usable)."""
        return (self.qc is not None and not self.qc.ok) or self.qc_error is not None

    @property
    def rtf(self) -> float:
        """Real-time factor: wall time over output duration (below 1 is faster than real time)."""
        return self.wall_s / self.duration_s if self.duration_s else float("inf")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "frames": self.frames,
            "fps": self.fps,
            "rtf": round(self.rtf, 4),
            "stage_s": {k: round(v, 3) for k, v in self.stage_s.items()},
            "liveliness": self.liveliness,
        }
        if self.liveliness != "off":
            stats["liveliness_version"] = LIVELINESS_VERSION
        if self.qc is not None:
            stats["qc"] = self.qc.to_dict()
        if self.qc_error is not None:
            stats["qc_error"] = self.qc_error
        if self.qc is not None or self.qc_error is not None:
            stats["needs_review"] = self.needs_review
        return stats


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
    liveliness: str = "off",
    seed: int = 0,
    qc: bool = True,
    tap: FrameTap | None = None,
) -> RenderResult:
    """Render ``avatar`` saying ``speech`` into ``output``.

    ``output`` appears only when complete (written under a temporary name, then renamed).
    ``liveliness``: ``off``, ``subtle``, ``lively`` or ``auto`` (subtle for a portrait, off for a
    template video); ``seed`` makes its blinks and motion reproducible (pass one derived from the
    render key, ``liveliness.seed_from_key``). ``qc``: measure sync on the written file afterwards,
    within a tenth of the render's time (``RenderResult.qc``; a check that cannot run is logged and
    recorded as ``qc_error``, never fails the render). ``wall_s`` is the render's own time; the
    check's is ``stage_s["qc"]``. ``tap`` sees every output frame too, with its index, right after
    the master encoder took it (channel exports encode from it in the same pass). Temporary files
    that dead runs left in the output folder are removed first. A stop request (Ctrl-C) ends the
    render at the next frame with ``InterruptedRunError``; ffmpeg is killed and the temporary file
    deleted on the way out.
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

    level = resolve_liveliness(liveliness, is_still=avatar.is_still)
    template = PingPongFrames(avatar.path, avatar.info, fps)
    decoded = _Timed(template.frames(n), stage_s, "decode")
    rows: deque[int] = deque()
    frames = (TemplateFrame(index=i, image=img) for i, img in _noting(decoded, rows))
    prepared = backend.prepare(avatar.track)
    backend_out: Iterator[NDArray[np.uint8]] = backend.render(prepared, frames, audio, fps)
    if level != "off":
        animator = FaceAnimator(avatar.track, audio, fps, level, seed)
        # Backends yield one frame per template frame, in order: the oldest noted row is this frame's.
        backend_out = (animator.apply(rows.popleft(), frame) for frame in backend_out)
    rendered = _Timed(backend_out, stage_s, "render+decode")
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
            t1 = time.perf_counter()
            stage_s["encode_wait"] += t1 - t0
            if tap is not None:
                tap(done, frame)
                stage_s["exports_wait"] = stage_s.get("exports_wait", 0.0) + time.perf_counter() - t1
            done += 1
            if progress is not None and (done % 25 == 0 or done == n):
                progress(done, n)
        t0 = time.perf_counter()
    stage_s["encode_flush"] = time.perf_counter() - t0
    stage_s["render"] = stage_s.pop("render+decode") - stage_s["decode"]
    wall = time.perf_counter() - t_start
    if done != n:
        log.warning("%s: backend produced %d frames for %d expected", output.name, done, n)
    report, qc_error = None, None
    if qc:
        t0 = time.perf_counter()
        try:
            report = measure_sync(output, track=avatar.track, budget_s=QC_BUDGET_SHARE * wall)
        except TalkfactoryError as exc:
            # The render is done and good; a check that cannot run marks it for review instead.
            log.warning("%s: sync check could not run: %s", output.name, exc)
            qc_error = str(exc)
        stage_s["qc"] = time.perf_counter() - t0
    return RenderResult(
        output=output,
        frames=done,
        fps=fps,
        duration_s=duration,
        wall_s=wall,
        encoder=encode.video_codec,
        stage_s=stage_s,
        liveliness=level,
        qc=report,
        qc_error=qc_error,
    )


def review_status(result: RenderResult, *, strict: bool) -> str:
    """What a finished render's lineage status should be after its sync check.

    ``"succeeded"`` when the check passed or was not run, ``"needs_review"`` when it failed or could
    not run (the output is still published); with ``strict``, a failed check raises
    ``SyncCheckError`` instead, naming the output and the reason.
    """
    if not result.needs_review:
        return "succeeded"
    if strict:
        why = result.qc.reason if result.qc is not None else f"the check could not run: {result.qc_error}"
        raise SyncCheckError(f"failed the sync check (--qc-strict): {why}", subject=str(result.output))
    return "needs_review"


def _noting(frames: Iterable[tuple[int, T]], rows: deque[int]) -> Iterator[tuple[int, T]]:
    """``frames`` unchanged, each one's template row appended to ``rows`` as it passes."""
    for row, frame in frames:
        rows.append(row)
        yield row, frame
