"""A face track: mesh landmarks for every frame of an avatar template, ready for any backend."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MESH_POINTS = 478
"""mediapipe's refined face mesh: 468 face points plus 10 iris points."""


@dataclass(frozen=True)
class FaceTrack:
    """Per-frame face geometry of one avatar template.

    ``landmarks[i]`` holds frame ``i``'s 478 mesh points in pixel coordinates (x, y), already
    smoothed over time; rows where ``present[i]`` is False are NaN and the frame is passed
    through untouched by every backend.
    """

    content_hash: str
    """sha256 of the avatar file: the track's identity in the cache and in lineage."""
    width: int
    height: int
    fps: float
    """Frame rate the template is decoded at (constant; variable-rate sources are resampled)."""
    landmarks: NDArray[np.float32]
    """Shape (frames, 478, 2), pixels, NaN where no face."""
    present: NDArray[np.bool_]
    """Shape (frames,), True where a face was found."""
    is_still: bool = False
    """A portrait: one frame, repeated for the whole output."""

    @property
    def num_frames(self) -> int:
        return int(self.present.shape[0])

    @property
    def face_ratio(self) -> float:
        """Share of frames with a face."""
        return float(self.present.mean()) if self.num_frames else 0.0

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            content_hash=np.array(self.content_hash),
            size=np.array([self.width, self.height]),
            fps=np.array(self.fps),
            landmarks=self.landmarks.astype(np.float32),
            present=self.present.astype(bool),
            is_still=np.array(self.is_still),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FaceTrack:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            w, h = (int(v) for v in z["size"])
            return cls(
                content_hash=str(z["content_hash"]),
                width=w,
                height=h,
                fps=float(z["fps"]),
                landmarks=z["landmarks"].astype(np.float32),
                present=z["present"].astype(bool),
                is_still=bool(z["is_still"]),
            )
