"""Frames in, ``FaceTrack`` out: mesh every frame, smooth over time, mark where there is no face."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import InvalidMediaError, NoFaceError
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.face.smoothing import smooth_landmarks
from talkfactory.models.face.track import MESH_POINTS, FaceTrack


def build_face_track(
    frames: Iterable[NDArray[np.uint8]],
    *,
    content_hash: str,
    fps: float,
    width: int,
    height: int,
    is_still: bool,
    mesher: FaceMesher | None = None,
    subject: str | None = None,
    smoothing_s: float = 0.05,
    max_gap_frames: int = 3,
) -> FaceTrack:
    """Detect the mesh in each BGR frame (in order) and return the smoothed track.

    Only landmarks are kept, never frames, so memory grows by 3.8 kB per frame. Without a
    ``mesher`` one is opened here: static mode for a still, video (tracking) mode otherwise.
    Raises ``NoFaceError`` (subject: ``subject`` or ``content_hash``) when no frame has a
    usable face and ``InvalidMediaError`` for frames of the wrong size or no frames at all.
    """
    name = subject or content_hash
    if mesher is None:
        with FaceMesher(static=is_still) as own:
            return build_face_track(
                frames,
                content_hash=content_hash,
                fps=fps,
                width=width,
                height=height,
                is_still=is_still,
                mesher=own,
                subject=subject,
                smoothing_s=smoothing_s,
                max_gap_frames=max_gap_frames,
            )
    rows: list[NDArray[np.float32]] = []
    found: list[bool] = []
    missing = np.full((MESH_POINTS, 2), np.nan, dtype=np.float32)
    for i, frame in enumerate(frames):
        if frame.shape != (height, width, 3):
            raise InvalidMediaError(
                f"frame {i} is {frame.shape}, expected ({height}, {width}, 3)", subject=name
            )
        points = mesher.landmarks(frame)
        found.append(points is not None)
        rows.append(missing if points is None else points)
    if not rows:
        raise InvalidMediaError("no frames to track", subject=name)
    present = np.array(found, dtype=bool)
    if not present.any():
        raise NoFaceError(f"no face found in any of {len(rows)} frame(s)", subject=name)
    landmarks = np.stack(rows).astype(np.float32)
    landmarks, present = smooth_landmarks(
        landmarks, present, fps=fps, sigma_s=smoothing_s, max_gap_frames=max_gap_frames
    )
    return FaceTrack(
        content_hash=content_hash,
        width=width,
        height=height,
        fps=fps,
        landmarks=landmarks,
        present=present,
        is_still=is_still,
    )
