"""Liveliness on a stream of rendered frames: plan a pose per frame, then move eyes, brows and head.

``FaceAnimator`` reads the speech at each frame's time (level and the weightless mouth's speech
gate), asks ``LivelinessPlanner`` (``liveliness.py``) for the pose, and applies the eye/brow warp
(``eyes.py``, only in frames that blink or raise) and the head warp (``head.py``). Geometry that
depends only on the template row is built once per row (a still has one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from talkfactory.models.audio import AudioSource
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.lipsync.eyes import EyeConfig, EyeGeometry, eyes_geometry, warp_eyes
from talkfactory.models.lipsync.head import HeadConfig, HeadGeometry, head_geometry, warp_head
from talkfactory.models.lipsync.liveliness import LivelinessLevel, LivelinessPlanner, Pose, config_for
from talkfactory.models.lipsync.mouth import MouthShaper
from talkfactory.models.speech.features import FeatureExtractor

G = TypeVar("G")

GEOMETRY_CACHE_ROWS = 64
"""Template rows whose eye and head geometry is kept (a still has one row)."""


class FaceAnimator:
    """Adds liveliness to a stream of rendered frames: ``apply(row, frame)`` once per output frame, in order.

    Frame ``i`` reads the speech at ``i / fps`` (level and the same speech gate the weightless mouth
    uses) and asks the planner for its pose; frames whose row has no face pass through, but the
    planner still steps so timing never shifts.
    """

    def __init__(
        self,
        track: FaceTrack,
        audio: AudioSource,
        fps: float,
        level: LivelinessLevel,
        seed: int,
        *,
        eyes: EyeConfig | None = None,
        head: HeadConfig | None = None,
    ) -> None:
        plan_config = config_for(level)
        if plan_config is None:
            raise ValueError("FaceAnimator needs a liveliness level other than 'off'")
        self.track = track
        self.level = level
        self.eye_config = eyes or EyeConfig()
        self.head_config = head or HeadConfig()
        self.planner = LivelinessPlanner(fps, plan_config, seed)
        self._features = FeatureExtractor(audio, fps)
        self._gate = MouthShaper(fps)
        self._frame = 0
        self._eyes: dict[int, list[EyeGeometry]] = {}
        self._heads: dict[int, HeadGeometry | None] = {}
        self.poses: list[Pose] | None = None
        """Set to a list to record every frame's pose (tests, inspection)."""

    def _cached(
        self, cache: dict[int, G], row: int, build: Callable[[NDArray[np.float32], tuple[int, int]], G]
    ) -> G:
        """``build(landmarks, (width, height))`` of ``row``, kept in a bounded cache."""
        if row not in cache:
            if len(cache) >= GEOMETRY_CACHE_ROWS:
                del cache[next(iter(cache))]
            cache[row] = build(self.track.landmarks[row], (self.track.width, self.track.height))
        return cache[row]

    def next_pose(self) -> Pose:
        features = self._features.frame(self._frame)
        self._frame += 1
        self._gate.step(features)
        pose = self.planner.step(features.rms_dbfs, self._gate.gate)
        if self.poses is not None:
            self.poses.append(pose)
        return pose

    def apply(self, row: int, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """The next output frame: ``image`` (what the backend made of template row ``row``) made lively.

        A writeable ``image`` is changed in place (a backend's output frame is its own; a full-frame
        copy costs as much as the head warp at 720p); a read-only one (a template frame shared by
        every output frame, as a still's is) is copied first.
        """
        pose = self.next_pose()
        if not (0 <= row < self.track.num_frames) or not self.track.present[row]:
            return image
        eyes = (
            self._cached(self._eyes, row, lambda pts, size: eyes_geometry(pts, size, self.eye_config))
            if pose.moves_eyes
            else []
        )
        head = (
            self._cached(self._heads, row, lambda pts, size: head_geometry(pts, size, self.head_config))
            if pose.moves_head
            else None
        )
        if not eyes and head is None:
            return image
        out = image if image.flags.writeable else image.copy()
        if eyes:
            warp_eyes(out, eyes, pose, self.eye_config, out=out)
        if head is not None:
            warp_head(out, head, pose, out=out)
        return out
