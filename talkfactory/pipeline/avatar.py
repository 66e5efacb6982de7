"""Prepare an avatar once: decode its template, track the face, cache the track by content hash."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

from talkfactory.errors import InvalidMediaError
from talkfactory.infra.files import atomic_write_bytes, sha256_file
from talkfactory.infra.media.frames import iter_video_frames, load_image
from talkfactory.infra.media.probe import MediaInfo, probe
from talkfactory.models.face.build import build_face_track
from talkfactory.models.face.track import FaceTrack
from talkfactory.pipeline.interrupt import raise_if_stopped

log = logging.getLogger(__name__)
T = TypeVar("T")

STILL_FPS = 25.0
"""Frame rate of videos made from a portrait still."""
TRACK_VERSION = f"mp{version('mediapipe')}-t1"
"""Bump when tracking or smoothing changes, so cached tracks are rebuilt."""


@dataclass(frozen=True)
class PreparedAvatar:
    """An avatar template with its cached face track."""

    path: Path
    name: str
    content_hash: str
    info: MediaInfo
    track: FaceTrack
    track_path: Path
    from_cache: bool

    @property
    def is_still(self) -> bool:
        return self.track.is_still

    @property
    def fps(self) -> float:
        return self.track.fps

    @property
    def kind(self) -> str:
        return "image" if self.is_still else "video"


def template_fps(info: MediaInfo) -> float:
    """The constant rate a template is decoded at: its average rate, or 25 for stills."""
    if info.is_image or info.video is None:
        return STILL_FPS
    fps = info.video.fps
    if not fps or fps <= 0 or fps > 120:
        raise InvalidMediaError(f"has an unusable frame rate ({fps})", subject=str(info.path))
    return float(fps)


def _stoppable(frames: Iterator[T], subject: str) -> Iterator[T]:
    """``frames``, ending with ``InterruptedRunError`` at the next frame once a stop is requested."""
    for frame in frames:
        raise_if_stopped(subject)
        yield frame


def prepare_avatar(path: str | Path, cache_dir: Path, *, force: bool = False) -> PreparedAvatar:
    """Track the face through ``path`` (a template video or a portrait), or load the cached track.

    Raises ``NoFaceError`` when no frame has a face, ``InvalidMediaError`` for unreadable files.
    """
    path = Path(path)
    content_hash = sha256_file(path)
    info = probe(path)
    if info.video is None and not info.is_image:
        raise InvalidMediaError("has no video stream or image to animate", subject=str(path))
    track_path = cache_dir / "tracks" / f"{content_hash}-{TRACK_VERSION}.npz"
    if track_path.exists() and not force:
        try:
            track = FaceTrack.from_bytes(track_path.read_bytes())
            log.info("avatar %s: face track from cache (%d frames)", path.name, track.num_frames)
            return PreparedAvatar(path, path.stem, content_hash, info, track, track_path, True)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("avatar %s: cached face track unreadable (%s); rebuilding", path.name, exc)
    fps = template_fps(info)
    video = info.video
    if info.is_image:
        image = load_image(path)
        height, width = image.shape[:2]
        frames = iter([image])
    else:
        assert video is not None
        # ffmpeg applies rotation metadata while decoding, so frames have the displayed size.
        width, height = video.display_width, video.display_height
        frames = _stoppable(iter_video_frames(path, fps=fps, width=width, height=height), str(path))
    track = build_face_track(
        frames,
        content_hash=content_hash,
        fps=fps,
        width=width,
        height=height,
        is_still=info.is_image,
        subject=str(path),
    )
    atomic_write_bytes(track_path, track.to_bytes())
    log.info(
        "avatar %s: tracked %d frames, face in %.0f%% of them",
        path.name,
        track.num_frames,
        100 * track.face_ratio,
    )
    return PreparedAvatar(path, path.stem, content_hash, info, track, track_path, False)
