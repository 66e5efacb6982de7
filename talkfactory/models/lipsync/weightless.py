"""The weightless CPU backend: speech level and spectrum drive a geometric mouth warp.

No network, no checkpoint: per output frame it reads ~40 ms of audio, turns it into a
``MouthShape`` (``mouth.py``) and warps the template's lower face to it (``warp.py``).
Frames without a face pass through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import InvalidMediaError
from talkfactory.models.audio import AudioSource
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.lipsync.base import TemplateFrame
from talkfactory.models.lipsync.mouth import MouthConfig, MouthShape, MouthShaper
from talkfactory.models.lipsync.warp import FaceFrame, MouthWarper, WarpConfig, face_axes, region_box
from talkfactory.models.speech.features import FeatureExtractor

WEIGHTLESS_VERSION = "weightless-1.0.0"
"""Bump whenever features, mouth mapping or warp maths change: it marks earlier renders stale."""


@dataclass(frozen=True)
class PreparedAvatar:
    """What ``WeightlessBackend.prepare`` keeps per avatar: the track plus per-frame face boxes."""

    track: FaceTrack
    face_height: NDArray[np.float32]
    """(frames,) pixels forehead-to-chin; NaN where there is no face."""
    roi: NDArray[np.int32]
    """(frames, 4) x0, y0, x1, y1 of the region each frame's warp may touch; zeros where no face."""


GEOMETRY_CACHE_ROWS = 128
"""Template rows whose face geometry is kept (about 5 s at 25 fps; a few tens of MB at 720p)."""


class WeightlessBackend:
    """``LipSyncBackend`` without weights: DSP features -> mouth shape -> spline warp of the lower face."""

    name = "weightless"

    def __init__(
        self,
        mouth: MouthConfig | None = None,
        warp: WarpConfig | None = None,
        *,
        window_s: float = 0.04,
        lead_s: float = 0.0,
    ) -> None:
        self.mouth_config = mouth or MouthConfig()
        self.warp_config = warp or WarpConfig()
        self.window_s = window_s
        self.lead_s = lead_s
        """Read audio this far ahead of each frame's time (lips move slightly before the sound)."""

    @property
    def version(self) -> str:
        return WEIGHTLESS_VERSION

    def prepare(self, track: FaceTrack) -> PreparedAvatar:
        n = track.num_frames
        heights = np.full(n, np.nan, dtype=np.float32)
        boxes = np.zeros((n, 4), dtype=np.int32)
        for i in np.flatnonzero(track.present):
            points = track.landmarks[i]
            heights[i] = face_axes(points)[0]
            boxes[i] = region_box(points, (track.width, track.height), self.warp_config)
        return PreparedAvatar(track=track, face_height=heights, roi=boxes)

    def render(
        self,
        prepared: PreparedAvatar,
        frames: Iterable[TemplateFrame],
        audio: AudioSource,
        fps: float,
    ) -> Iterator[NDArray[np.uint8]]:
        track = prepared.track
        features = FeatureExtractor(audio, fps, window_s=self.window_s, lead_s=self.lead_s)
        shaper = MouthShaper(fps, self.mouth_config)
        warper = MouthWarper(self.warp_config)
        geometry: dict[int, FaceFrame] = {}
        for i, frame in enumerate(frames):
            # The shaper runs on every frame, faces or not, so its smoothing never jumps.
            shape = shaper.step(features.frame(i))
            row = frame.index
            if not 0 <= row < track.num_frames:
                raise InvalidMediaError(
                    f"template frame index {row} outside the track's {track.num_frames} frames",
                    subject=track.content_hash,
                )
            if not track.present[row]:
                yield frame.image
                continue
            image = frame.image
            if image.shape != (track.height, track.width, 3):
                raise InvalidMediaError(
                    f"frame {row} is {image.shape}, the track was made at {track.width}x{track.height}",
                    subject=track.content_hash,
                )
            points = track.landmarks[row]
            # A still repeats one row and a looped template repeats its rows every period: the
            # geometry (mask, anchors, seam) of a row is built once, in a bounded cache.
            face = geometry.get(row)
            if face is None:
                face = warper.frame_geometry(points, image)
                if len(geometry) >= GEOMETRY_CACHE_ROWS:
                    del geometry[next(iter(geometry))]
                geometry[row] = face
            yield warper.warp(image, points, shape, face)

    def shapes(self, audio: AudioSource, fps: float, num_frames: int) -> list[MouthShape]:
        """The mouth shapes ``render`` uses for frames ``0 .. num_frames-1`` (for inspection and tests)."""
        features = FeatureExtractor(audio, fps, window_s=self.window_s, lead_s=self.lead_s)
        shaper = MouthShaper(fps, self.mouth_config)
        return [shaper.step(features.frame(i)) for i in range(num_frames)]
