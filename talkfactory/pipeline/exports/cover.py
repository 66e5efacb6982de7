"""Cover images: pick frames where the face is whole, the eyes open and the mouth nearly closed.

Candidates come from the face track and the speech energy before anything is rendered (the
render loop keeps those output frames); each kept frame is then checked on the picture itself
with the same mediapipe mesh avatar preparation uses, because lip sync and reframing change
what the track alone can promise. The engine keeps the first candidate whose check passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.infra.files import atomic_write_bytes
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.face.reframe import ReframePlan
from talkfactory.models.face.track import FaceTrack

EYES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (33, 160, 158, 133, 153, 144),
    (362, 385, 387, 263, 373, 380),
)
"""Mesh points of each eye as p1..p6 of the eye aspect ratio: corners p1/p4, upper p2 p3, lower p6 p5."""
EYES_OPEN_EAR = 0.2
"""Eye aspect ratio above which eyes count as open (mediapipe's mesh: ~0.3 open, < 0.15 closed)."""
MOUTH_CLOSED_GAP = 0.08
"""Inner-lip gap (points 13-14) over face height (10-152) at or below which the mouth is nearly closed;
a closed-lipped smile with teeth showing measures ~0.065, open speech 0.1-0.25."""
EDGE_MARGIN = 0.1
"""Clearance between the face box and the picture's edge, as a share of the face's own size."""
END_S = 0.5
"""Frames this close to either end are never covers (fades, the first lip-sync frames)."""
QUIET_WINDOW_S = 0.2
"""A frame is as loud as the loudest frame within this distance: lip sync has inertia."""


@dataclass(frozen=True)
class CoverCheck:
    """What the mesh sees on a finished cover image."""

    face: bool
    """A face whose box lies inside the picture with ``EDGE_MARGIN``."""
    eyes_open: bool
    mouth_closed: bool
    score: float
    """0..1, higher is better (for ranking candidates that all pass or all fail)."""

    @property
    def passed(self) -> bool:
        return self.face and self.eyes_open and self.mouth_closed


def _point(points: NDArray[np.floating[Any]], i: int) -> NDArray[np.float64]:
    """Mesh point ``i`` of (..., 478, 2) landmarks as (..., 2) float64 (copies only that point)."""
    return np.asarray(points[..., i, :], dtype=np.float64)


def _dist(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.linalg.norm(a - b, axis=-1)
    return out


def eye_aspect_ratio(points: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Mean eye aspect ratio of both eyes for (..., 478, 2) landmarks (NaN where the landmarks are)."""
    ratios = []
    for eye in EYES:
        p1, p2, p3, p4, p5, p6 = (_point(points, i) for i in eye)
        vertical = _dist(p2, p6) + _dist(p3, p5)
        ratios.append(vertical / np.maximum(2.0 * _dist(p1, p4), 1e-6))
    out: NDArray[np.float64] = (ratios[0] + ratios[1]) / 2.0
    return out


def mouth_gap(points: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Inner-lip gap over face height for (..., 478, 2) landmarks."""
    upper, lower, top, chin = (_point(points, i) for i in (13, 14, 10, 152))
    out: NDArray[np.float64] = _dist(lower, upper) / np.maximum(_dist(chin, top), 1e-6)
    return out


def _face_boxes(points: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """(..., 4) boxes x0, y0, x1, y1 of (..., 478, 2) landmarks."""
    # One coordinate's column view at a time: reducing over the point axis with (x, y) pairs
    # interleaved is ~25x slower on a long track.
    xs, ys = points[..., 0], points[..., 1]
    boxes: NDArray[np.float64] = np.stack((xs.min(-1), ys.min(-1), xs.max(-1), ys.max(-1)), axis=-1)
    return boxes.astype(np.float64)


def _inside(boxes: NDArray[np.float64], rects: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Boxes (n, 4: x0 y0 x1 y1) inside rects (n, 4: x y w h) with ``EDGE_MARGIN`` of the box size."""
    mx = EDGE_MARGIN * (boxes[:, 2] - boxes[:, 0])
    my = EDGE_MARGIN * (boxes[:, 3] - boxes[:, 1])
    inside: NDArray[np.bool_] = (
        (boxes[:, 0] - mx >= rects[:, 0])
        & (boxes[:, 1] - my >= rects[:, 1])
        & (boxes[:, 2] + mx <= rects[:, 0] + rects[:, 2])
        & (boxes[:, 3] + my <= rects[:, 1] + rects[:, 3])
    )
    return inside


def _loudness_near(energy: NDArray[np.float64], radius: int) -> NDArray[np.float64]:
    """Running maximum over ``2 * radius + 1`` frames (edge-padded)."""
    if radius <= 0:
        return energy
    padded = np.pad(energy, radius, mode="edge")
    out: NDArray[np.float64] = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1).max(axis=1)
    return out


def _per_frame(values: NDArray[np.floating[Any]], n: int) -> NDArray[np.float64]:
    """``values`` spread over the same duration as ``n`` output frames (linear interpolation)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == n:
        return v
    if v.size == 0:
        raise ValueError("speech_energy is empty")
    return np.interp((np.arange(n) + 0.5) / n, (np.arange(v.size) + 0.5) / v.size, v)


def choose_cover_frames(
    track: FaceTrack,
    rows: Sequence[int] | NDArray[np.integer[Any]],
    speech_energy: NDArray[np.floating[Any]] | None,
    fps: float,
    *,
    count: int = 5,
    plan: ReframePlan | None = None,
    min_spacing_s: float = 1.0,
) -> list[int]:
    """Up to ``count`` output-frame indices, best first, at least ``min_spacing_s`` apart.

    ``rows[i]`` is the track row output frame ``i`` shows; ``speech_energy`` is the voice's
    loudness over the output (any non-negative measure, any length: it is spread over the
    output's frames), None to judge the mouth from the template instead. The best frames have a
    face inside the picture with margin (inside ``plan``'s crop when given), open eyes and no
    speech within ``QUIET_WINDOW_S``; they are never in the first or last ``END_S``. Frames that
    meet only some of these follow the ones that meet all; frames without a face never appear.
    Empty when no shown frame has a face.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rows_a = np.asarray(rows, dtype=np.int64)
    n = int(rows_a.shape[0])
    if n == 0:
        return []
    if rows_a.min() < 0 or rows_a.max() >= track.num_frames:
        raise ValueError(f"rows must lie in [0, {track.num_frames})")
    # Per template row (a short template serves a long render), then indexed per output frame.
    present = track.present
    ear_t = np.where(present, np.nan_to_num(eye_aspect_ratio(track.landmarks)), 0.0)
    gap_t = np.where(present, np.nan_to_num(mouth_gap(track.landmarks), nan=1.0), 1.0)
    box_t = np.nan_to_num(_face_boxes(track.landmarks))

    has_face = present[rows_a]
    if not has_face.any():
        return []
    if plan is not None and plan.mode == "crop":
        if plan.num_frames < n:
            raise ValueError(f"the plan covers {plan.num_frames} frames, rows {n}")
        rects = plan.rects[:n].astype(np.float64)
    else:
        rects = np.broadcast_to(np.array([0.0, 0.0, track.width, track.height]), (n, 4))
    face_ok = has_face & _inside(box_t[rows_a], rects)
    ear = ear_t[rows_a]
    eyes_ok = ear >= EYES_OPEN_EAR
    if speech_energy is None:
        loud = gap_t[rows_a]
        quiet_ok = loud <= MOUTH_CLOSED_GAP
        quiet = np.clip(1.0 - loud / (2 * MOUTH_CLOSED_GAP), 0.0, 1.0)
    else:
        energy = np.abs(_per_frame(speech_energy, n))
        loud = _loudness_near(energy, int(round(QUIET_WINDOW_S * fps)))
        top = float(np.percentile(energy, 95)) or 1.0
        quiet_ok = loud <= 0.1 * top
        quiet = np.clip(1.0 - loud / top, 0.0, 1.0)
    end = int(round(END_S * fps))
    inner = np.zeros(n, dtype=bool)
    inner[end : n - end] = True
    if not (inner & has_face).any():
        inner[:] = True  # a clip shorter than its two ends: any frame rather than none
    # Criteria met count most (all met first), then how quiet and how open-eyed.
    score = (
        4.0 * face_ok
        + 2.0 * quiet_ok
        + 2.0 * eyes_ok
        + quiet
        + np.clip(ear / (1.5 * EYES_OPEN_EAR), 0.0, 1.0)
    )
    score = np.where(has_face & inner, score, -np.inf)
    order = np.argsort(-score, kind="stable")
    spacing = max(1, int(round(min_spacing_s * fps)))
    chosen: list[int] = []
    for i in order.tolist():
        if not np.isfinite(score[i]) or len(chosen) == count:
            break
        if all(abs(i - c) >= spacing for c in chosen):
            chosen.append(int(i))
    return chosen


def check_cover(image: NDArray[np.uint8], *, mesher: FaceMesher | None = None) -> CoverCheck:
    """Run the face mesh on a finished cover (BGR) and say whether it shows a good face.

    Pass an open static ``mesher`` to check several images without rebuilding the graph.
    """
    if mesher is None:
        with FaceMesher(static=True) as own:
            return check_cover(image, mesher=own)
    points = mesher.landmarks(image)
    if points is None:
        return CoverCheck(face=False, eyes_open=False, mouth_closed=False, score=0.0)
    height, width = image.shape[:2]
    box = _face_boxes(points)[None]
    face = bool(_inside(box, np.array([[0.0, 0.0, width, height]]))[0])
    ear = float(eye_aspect_ratio(points))
    gap = float(mouth_gap(points))
    score = (
        float(face)
        + min(1.0, ear / (1.5 * EYES_OPEN_EAR))
        + float(np.clip(1.0 - gap / (2 * MOUTH_CLOSED_GAP), 0.0, 1.0))
    ) / 3.0
    return CoverCheck(
        face=face, eyes_open=ear >= EYES_OPEN_EAR, mouth_closed=gap <= MOUTH_CLOSED_GAP, score=score
    )


def write_cover(frame: NDArray[np.uint8], path: Path, *, quality: int = 90) -> None:
    """Write ``frame`` (BGR) as a JPEG at ``path``, atomically (readers never see half a file)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 BGR frame, got {frame.shape} {frame.dtype}")
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {frame.shape[1]}x{frame.shape[0]} cover ({path})")
    atomic_write_bytes(path, data.tobytes())
