"""Sync QC of a finished video: is the mouth on the picture in time with the speech on the soundtrack?

``measure_sync`` reads the file itself (so it checks what viewers get, and works on any tool's
output): a few windows of consecutive frames, each starting on a keyframe so no frame is decoded
for nothing, the face mesh on each frame (video mode), and the same stretches of audio, then the
maths in ``models/lipsync/sync_qc.py``. It stops sampling when a time budget is spent (a render
gives it a tenth of its own time), keeping windows from across the video.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import tempfile
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import InvalidMediaError, NoAudioStreamError
from talkfactory.infra.media.audio import FileAudio, extract_audio
from talkfactory.infra.media.frames import SEEK_MARGIN_FRAMES, iter_video_frames
from talkfactory.infra.media.keyframes import keyframe_times
from talkfactory.infra.media.probe import MediaInfo, probe
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.lipsync.sync_qc import (
    MAX_LAG_S,
    MIN_CORRELATION,
    SYNC_QC_VERSION,
    SyncEstimate,
    estimate_offset,
    judge,
    mouth_opening,
    plan_windows,
)

log = logging.getLogger(__name__)

QC_RATE = 16_000
WINDOW_S = 4.0
"""Consecutive frames per window: a dozen syllables or so."""
MAX_SAMPLED_S = 24.0
"""Without a budget, at most this much video is decoded and meshed."""
MIN_SAMPLED_S = 3.0
"""A budget never stops sampling before this much video with a face (a dozen syllables)."""
JOINED_AUDIO_MAX_S = 600.0
"""A video up to this long has its audio extracted once (one ffmpeg start); a longer one per window."""
QC_FACE_PX = 192.0
"""Frames are decoded scaled so the face is about this tall (the mesh model's own input size)."""
MAX_DECODE_SIDE = 640


@dataclass(frozen=True)
class SyncReport:
    """What the sync check measured on one video."""

    video: str
    offset_ms: float | None
    """Audio lateness at the best match, ms (positive: sound after the mouth); None if unmeasured."""
    correlation: float | None
    """Mouth opening vs speech level at that offset (Pearson)."""
    correlation_at_zero: float | None
    ok: bool
    reason: str | None
    frames_used: int
    """Sampled frames with a face."""
    frames_total: int
    windows: int
    fps: float
    max_offset_ms: float
    min_correlation: float
    """The correlation bar applied (it depends on the frames used: ``sync_qc.correlation_bar``)."""
    cost_s: float
    version: str = SYNC_QC_VERSION

    @property
    def needs_review(self) -> bool:
        return not self.ok

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["needs_review"] = self.needs_review
        for k in ("offset_ms", "correlation", "correlation_at_zero", "cost_s", "max_offset_ms"):
            if d[k] is not None:
                d[k] = round(float(d[k]), 4 if "correlation" in k else 1)
        return d


_shared_mesher: FaceMesher | None = None
_shared_lock = threading.Lock()


class _MesherLease:
    """A video-mode face mesher for one check: the process's shared one when it is free, else a private one.

    mediapipe's graph takes about half a second to build, as long as meshing a hundred frames, so a
    worker rendering many clips builds it once; a build runs on ``pool`` while ffmpeg looks for
    keyframes and extracts the audio.
    """

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        global _shared_mesher
        self._shared = _shared_lock.acquire(blocking=False)
        if self._shared:
            if _shared_mesher is None:
                _shared_mesher = FaceMesher(static=False)
            self.mesher = _shared_mesher
        else:
            self.mesher = FaceMesher(static=False)
        self._opened = pool.submit(self.mesher.open)

    def ready(self) -> FaceMesher:
        self._opened.result()
        return self.mesher

    def release(self) -> None:
        concurrent.futures.wait([self._opened])
        if self._shared:
            _shared_lock.release()
        else:
            self.mesher.close()


def _decode_size(width: int, height: int, face_px: float | None) -> tuple[int, int]:
    """An even size no larger than the video's, scaled so the face is about ``QC_FACE_PX`` tall."""
    scale = min(1.0, MAX_DECODE_SIDE / max(width, height))
    if face_px and face_px > 0:
        scale = min(1.0, max(scale, QC_FACE_PX / face_px))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def _track_face_px(track: FaceTrack | None) -> float | None:
    if track is None or not track.present.any():
        return None
    rows = track.landmarks[track.present]
    return float(np.median(np.hypot(*(rows[:, 152] - rows[:, 10]).T)))


class _WindowAudio:
    """The file's audio around each sampled window.

    A video up to ``JOINED_AUDIO_MAX_S`` long has all its audio extracted once, on ``pool`` right
    away (while keyframes are looked up and frames decoded); a longer one per window.
    """

    def __init__(
        self,
        path: Path,
        info: MediaInfo,
        tmp: Path,
        duration_s: float,
        pool: concurrent.futures.ThreadPoolExecutor,
    ) -> None:
        self.path, self.info, self.tmp = path, info, tmp
        self._joined: concurrent.futures.Future[FileAudio] | None = None
        end = duration_s + MAX_LAG_S + 0.1
        if end <= JOINED_AUDIO_MAX_S:
            self._joined = pool.submit(self._extract, "all", 0.0, end)

    def wait(self) -> None:
        """Let a joined extraction finish (its file lives in the caller's temporary folder)."""
        if self._joined is not None:
            concurrent.futures.wait([self._joined])

    def _extract(self, name: str, start: float, end: float) -> FileAudio:
        out = extract_audio(
            self.path,
            self.tmp / f"{name}.s16le",
            sample_rate=QC_RATE,
            start=start if start > 0 else None,
            duration=end - start,
            info=self.info,
        )
        return FileAudio(out.path, QC_RATE)

    def around(self, n: int, start: float, end: float) -> tuple[NDArray[np.float32], float]:
        """Samples from ``start`` (clamped at 0) to ``end`` seconds of the file, and the clamped start."""
        start = max(0.0, start)
        count = int(round((end - start) * QC_RATE))
        if self._joined is not None:
            first = int(round(start * QC_RATE))
            return self._joined.result().read(first, first + count), start
        return self._extract(f"w{n}", start, end).read(0, count), start


@dataclass
class _Samples:
    """What the windows gathered so far, on one joined audio timeline."""

    times: list[NDArray[np.float64]] = field(default_factory=list)
    openings: list[NDArray[np.float64]] = field(default_factory=list)
    groups: list[NDArray[np.int64]] = field(default_factory=list)
    audio: list[NDArray[np.float32]] = field(default_factory=list)
    audio_at: int = 0
    """Where the next window's audio goes in the joined audio."""
    used: int = 0
    """Frames with a face."""

    def enough(self, fps: float) -> bool:
        return self.used >= MIN_SAMPLED_S * fps


def _sample_window(
    path: Path,
    info: MediaInfo,
    n: int,
    start: int,
    count: int,
    size: tuple[int, int],
    mesher: FaceMesher,
    audio: _WindowAudio,
    samples: _Samples,
    deadline: float | None,
    fps: float,
) -> None:
    """Decode and mesh one window's frames (until ``deadline``, once enough are in) and take its audio."""
    assert info.video is not None
    # Seek a few frames past the keyframe: the decoder seeks SEEK_MARGIN_FRAMES early, and would
    # otherwise start decoding at the keyframe before this one.
    first = start + (SEEK_MARGIN_FRAMES if start > 0 else 0)
    values: list[float] = []
    # A generator: closing it stops its ffmpeg at once when the budget cuts the window short.
    frames = cast(
        Generator[NDArray[np.uint8], None, None],
        iter_video_frames(
            path,
            fps=info.video.rate,
            width=size[0],
            height=size[1],
            start_frame=first,
            count=start + count - first,
        ),
    )
    try:
        for frame in frames:
            points = mesher.landmarks(frame)
            values.append(math.nan if points is None else mouth_opening(points))
            samples.used += points is not None
            if deadline is not None and samples.enough(fps) and time.perf_counter() >= deadline:
                break
    finally:
        frames.close()
    if not values:
        return
    margin = MAX_LAG_S + 0.1
    frame_t = (first + np.arange(len(values))) / fps
    clip, a0 = audio.around(n, frame_t[0] - margin, frame_t[-1] + margin)
    samples.times.append(frame_t - a0 + samples.audio_at / QC_RATE)
    samples.openings.append(np.array(values))
    samples.groups.append(np.full(len(values), n, dtype=np.int64))
    samples.audio.append(clip)
    samples.audio_at += clip.size


def _report(
    path: Path,
    t0: float,
    fps: float,
    num_frames: int,
    estimate: SyncEstimate | None,
    frames: int,
    windows: int,
    min_correlation: float,
    why: str,
) -> SyncReport:
    verdict = judge(estimate, fps, min_correlation=min_correlation, why_none=why)
    return SyncReport(
        video=str(path),
        offset_ms=None if estimate is None else estimate.offset_s * 1000.0,
        correlation=None if estimate is None else estimate.correlation,
        correlation_at_zero=None if estimate is None else estimate.correlation_at_zero,
        ok=verdict.ok,
        reason=verdict.reason,
        frames_used=frames,
        frames_total=num_frames,
        windows=windows,
        fps=fps,
        max_offset_ms=verdict.max_offset_s * 1000.0,
        min_correlation=verdict.min_correlation,
        cost_s=time.perf_counter() - t0,
    )


def measure_sync(
    video: str | Path,
    *,
    track: FaceTrack | None = None,
    budget_s: float | None = None,
    max_sampled_s: float = MAX_SAMPLED_S,
    window_s: float = WINDOW_S,
    min_correlation: float = MIN_CORRELATION,
    work_dir: Path | None = None,
) -> SyncReport:
    """Measure the audio-video offset and mouth/speech correlation of ``video`` from the file.

    ``track``: the render's own face track, when the caller has it (it sets the decode scale and
    says up front whether there is a face at all). ``budget_s``: stop sampling new windows once
    this much time is spent (after at least ``MIN_SAMPLED_S`` of video).
    Raises ``MediaNotFoundError``/``InvalidMediaError`` for unreadable files, ``NoAudioStreamError``
    without audio; a video where no face is found gives a not-ok report naming that.
    """
    t0 = time.perf_counter()
    path = Path(video)
    # Three helpers at most: keyframes (ffprobe, started before the probe it does not need), the
    # audio extraction and the mesher's build, all while this thread probes, plans and decodes.
    with concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="qc") as pool:
        keys = pool.submit(keyframe_times, path)
        info = probe(path)
        if info.video is None or info.is_image:
            raise InvalidMediaError("has no video stream to check", subject=str(path))
        if info.audio is None:
            raise NoAudioStreamError("has no audio stream to check the mouth against", subject=str(path))
        fps = float(info.video.rate)
        num_frames = int(math.floor((info.video.duration or info.duration or 0.0) * fps + 1e-6))
        if track is not None and not track.present.any():
            return _report(path, t0, fps, num_frames, None, 0, 0, min_correlation, "the track has no face")
        size = (
            (track.width, track.height)
            if track is not None
            else (info.video.display_width, info.video.display_height)
        )
        decode_size = _decode_size(*size, _track_face_px(track))
        samples = _Samples()
        lease = _MesherLease(pool)
        try:
            with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
                audio = _WindowAudio(path, info, Path(tmp), num_frames / fps, pool)
                try:
                    windows = plan_windows(
                        num_frames, fps, None, window_s=window_s, max_sampled_s=max_sampled_s
                    )
                    if len(windows) > 1 or (windows and windows[0][0] > 0):
                        times = keys.result()
                        key_frames = None if times is None else sorted({int(round(k * fps)) for k in times})
                        windows = plan_windows(
                            num_frames, fps, key_frames, window_s=window_s, max_sampled_s=max_sampled_s
                        )
                    mesher = lease.ready()
                    deadline = None if budget_s is None else t0 + budget_s
                    for n, (start, count) in enumerate(windows):
                        if samples.enough(fps) and deadline is not None and time.perf_counter() >= deadline:
                            break
                        _sample_window(
                            path, info, n, start, count, decode_size, mesher, audio, samples, deadline, fps
                        )
                finally:
                    # The extraction writes into the temporary folder: let it end before the folder goes.
                    audio.wait()
        finally:
            lease.release()
    used, windows_used = samples.used, len(samples.times)

    def report(estimate: SyncEstimate | None, why: str = "") -> SyncReport:
        return _report(path, t0, fps, num_frames, estimate, used, windows_used, min_correlation, why)

    if not windows_used:
        return report(None, "no frames could be decoded")
    try:
        estimate = estimate_offset(
            np.concatenate(samples.times),
            np.concatenate(samples.openings),
            np.concatenate(samples.groups),
            np.concatenate(samples.audio),
            QC_RATE,
        )
    except ValueError:
        return report(None, "no face found in the sampled frames")
    result = report(estimate)
    log.info(
        "%s: sync offset %+.0f ms, correlation %.2f (%d frames, %.2f s)%s",
        path.name,
        result.offset_ms or 0.0,
        result.correlation or 0.0,
        used,
        result.cost_s,
        "" if result.ok else f": needs review ({result.reason})",
    )
    return result
