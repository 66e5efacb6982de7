"""mediapipe's 478-point face mesh over BGR frames, one face, pixel coordinates out."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.models.face.track import MESH_POINTS

LIP_POINTS: tuple[int, ...] = (61, 291, 0, 17, 13, 14, 78, 308)
"""Mouth corners and lip midline points of mediapipe's mesh; a frame whose mouth is off-frame is unusable."""


def outside_fraction(points: NDArray[np.float32], width: int, height: int) -> float:
    """Share of ``points`` (N, 2) lying outside the ``width`` x ``height`` frame."""
    x, y = points[:, 0], points[:, 1]
    outside = (x < 0) | (y < 0) | (x > width - 1) | (y > height - 1)
    return float(outside.mean())


def usable_landmarks(points: NDArray[np.float32], width: int, height: int, max_outside: float) -> bool:
    """False for a face leaving the frame: too many points outside it, or any mouth point outside."""
    if outside_fraction(points, width, height) > max_outside:
        return False
    return outside_fraction(points[list(LIP_POINTS)], width, height) == 0.0


class FaceMesher:
    """One mediapipe FaceMesh graph (refined landmarks, one face), used as a context manager.

    ``static=True`` runs detection on every image (portraits, unrelated stills); ``static=False``
    is mediapipe's video mode, which tracks from frame to frame and must see a template's
    frames in order. Frames whose face is largely outside the picture give ``None``.
    """

    def __init__(
        self,
        *,
        static: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        max_outside: float = 0.2,
    ) -> None:
        self.static = static
        self.max_outside = max_outside
        self._min_detection = min_detection_confidence
        self._min_tracking = min_tracking_confidence
        self._mesh: Any = None

    def __enter__(self) -> FaceMesher:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        if self._mesh is not None:
            return
        # Imported here: mediapipe's import pulls in matplotlib and protobuf, ~0.5 s nobody else should pay.
        from mediapipe.python.solutions import face_mesh

        self._mesh = face_mesh.FaceMesh(
            static_image_mode=self.static,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=self._min_detection,
            min_tracking_confidence=self._min_tracking,
        )

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def landmarks(self, image_bgr: NDArray[np.uint8]) -> NDArray[np.float32] | None:
        """The (478, 2) mesh in pixel coordinates (x, y), or None when no usable face is seen."""
        if self._mesh is None:
            raise RuntimeError("FaceMesher used outside its context (call open() or use `with`)")
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 BGR image, got shape {image_bgr.shape}")
        height, width = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        rgb.flags.writeable = False  # lets mediapipe wrap the buffer instead of copying it
        result = self._mesh.process(rgb)
        faces = result.multi_face_landmarks
        if not faces:
            return None
        marks = faces[0].landmark
        if len(marks) != MESH_POINTS:
            return None
        points = np.fromiter(
            (c for p in marks for c in (p.x, p.y)), dtype=np.float32, count=2 * MESH_POINTS
        ).reshape(MESH_POINTS, 2)
        points *= np.array([width, height], dtype=np.float32)
        if not usable_landmarks(points, width, height, self.max_outside):
            return None
        return points
