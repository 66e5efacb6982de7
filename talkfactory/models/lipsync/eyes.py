"""Blinks and brow raises along the face mesh (pixels; the timing is ``liveliness.py``'s).

In face axes (u across, v down), every pixel column of an eye's region is remapped along v through
knots taken from the mesh: forehead, brow top and bottom, upper lid, lower lid, cheek. A blink moves
the lid knots together (the upper lid does most of it and shows skin from just above its edge; the
whole eye is squeezed into a one-pixel slit that reads as the lash line), a raise lifts the brow
knots. The knots stay in order whatever the pose, so the map squeezes and stretches skin but never
folds or rings (a thin-plate spline through the lids did, visibly); it is the identity at the
region's edges, so pixels outside it are the input's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.models.lipsync.liveliness import Pose
from talkfactory.models.lipsync.warp import face_axes

# --- mediapipe face mesh: eyes and brows (FACEMESH_LEFT/RIGHT_EYE, _EYEBROW). "Right" = the subject's
# right, on the image's left. Lids run outer corner -> inner corner, so equal positions face each other.
RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (7, 163, 144, 145, 153, 154, 155)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (249, 390, 373, 374, 380, 381, 382)
RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
EAR_RIGHT = (33, 160, 158, 133, 153, 144)
EAR_LEFT = (362, 385, 387, 263, 373, 380)


def eye_aspect_ratio(points: NDArray[np.floating[Any]]) -> float:
    """Mean eye aspect ratio of both eyes (lid gaps over eye width): ~0.25-0.35 open, under ~0.12 shut."""
    ratios = []
    for p1, p2, p3, p4, p5, p6 in (EAR_RIGHT, EAR_LEFT):
        a = np.linalg.norm(points[p2] - points[p6]) + np.linalg.norm(points[p3] - points[p5])
        ratios.append(float(a) / (2.0 * float(np.linalg.norm(points[p1] - points[p4])) + 1e-9))
    return float(np.mean(ratios))


@dataclass(frozen=True)
class EyeConfig:
    """Geometry of blinks and brow raises, in fractions of the face height unless a unit says otherwise."""

    lid_meet: float = 0.8
    """Where the lids meet, from the upper (0) to the lower (1) lid: the upper lid does most of a blink."""
    lid_reach: float = 0.3
    """Shut, the upper lid's edge shows the skin this far (of the eye opening) above the mesh's lid points,
    which sit on the lid's edge or a little inside it: no iris shows through a shut lid."""
    slit_px: float = 1.0
    """Gap between shut lids; the whole eye is squeezed into it and reads as the lash line."""
    forehead: float = 0.08
    """Skin above the brow that a raise compresses (and the warp's upper edge)."""
    cheek: float = 0.06
    """Skin below the lower lid that a rising lower lid stretches (and the warp's lower edge)."""
    brow_taper: float = 0.06
    """A raise fades out over this much beyond the brow's ends."""


def _smoothstep(x: NDArray[np.float64]) -> NDArray[np.float64]:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class EyeGeometry:
    """One eye and its brow in one template row, in face axes (u across, v down) about ``origin``.

    Each pixel column (fixed u) of the region is remapped along v through knots that stay in order
    whatever the pose (forehead top, brow top, brow bottom, upper lid, lower lid, cheek), so the map
    is monotone: it can squeeze and stretch skin but never fold or ring.
    """

    face_height: float
    origin: NDArray[np.float64]
    right: NDArray[np.float64]
    down: NDArray[np.float64]
    roi: tuple[int, int, int, int]
    u: NDArray[np.float64]
    """(h, w) u of every ROI pixel."""
    v: NDArray[np.float64]
    lid_upper: NDArray[np.float64]
    """(h, w) v of the upper lid in each pixel's column (corner value beyond the corners)."""
    lid_lower: NDArray[np.float64]
    brow_top: NDArray[np.float64]
    brow_bottom: NDArray[np.float64]
    brow_weight: NDArray[np.float64]
    """(h, w) 1 under the brow, fading to 0 past its ends."""


def _curve(
    points: NDArray[np.float64],
    origin: NDArray[np.float64],
    right: NDArray[np.float64],
    down: NDArray[np.float64],
    u: NDArray[np.float64],
) -> NDArray[np.float64]:
    """v of the polyline through ``points`` at each ``u`` (held flat beyond its ends)."""
    pu, pv = (points - origin) @ right, (points - origin) @ down
    order = np.argsort(pu)
    return np.interp(u, pu[order], pv[order])


def eye_geometry(
    points: NDArray[np.floating[Any]],
    size: tuple[int, int],
    config: EyeConfig,
    side: tuple[tuple[int, ...], tuple[int, ...], tuple[int, int], tuple[int, ...], tuple[int, ...]],
) -> EyeGeometry | None:
    """One eye's warp parts; ``side``: upper lid, lower lid, corners, brow top and bottom (``EYE_SIDES``).

    None when the eye is off the picture.
    """
    width, height = size
    pts = points.astype(np.float64)
    face_h, right, down = face_axes(pts)
    upper_i, lower_i, corners_i, top_i, bottom_i = side
    upper, lower = (
        pts[list(corners_i[:1] + upper_i + corners_i[1:])],
        pts[list(corners_i[:1] + lower_i + corners_i[1:])],
    )
    top, bottom = pts[list(top_i)], pts[list(bottom_i)]
    origin = pts[list(corners_i)].mean(axis=0)
    rel = np.concatenate((upper, lower, top, bottom)) - origin
    us = rel @ right
    taper = config.brow_taper * face_h
    u0, u1 = us.min() - taper, us.max() + taper
    v0 = float(((top - origin) @ down).min()) - config.forehead * face_h
    v1 = float(((lower - origin) @ down).max()) + config.cheek * face_h
    corners = np.array([origin + a * right + b * down for a in (u0, u1) for b in (v0, v1)])
    x0 = max(0, int(math.floor(corners[:, 0].min())) - 1)
    y0 = max(0, int(math.floor(corners[:, 1].min())) - 1)
    x1 = min(width, int(math.ceil(corners[:, 0].max())) + 2)
    y1 = min(height, int(math.ceil(corners[:, 1].max())) + 2)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    dx, dy = gx - origin[0], gy - origin[1]
    u = dx * right[0] + dy * right[1]
    v = dx * down[0] + dy * down[1]
    brow_u = (np.concatenate((top, bottom)) - origin) @ right
    outside = np.maximum(brow_u.min() - u, u - brow_u.max())
    brow_weight = 1.0 - _smoothstep(outside / max(taper, 1e-6))
    return EyeGeometry(
        face_height=face_h,
        origin=origin,
        right=right,
        down=down,
        roi=(x0, y0, x1, y1),
        u=u,
        v=v,
        lid_upper=_curve(upper, origin, right, down, u),
        lid_lower=_curve(lower, origin, right, down, u),
        brow_top=_curve(top, origin, right, down, u),
        brow_bottom=_curve(bottom, origin, right, down, u),
        brow_weight=brow_weight,
    )


EYE_SIDES = (
    (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, (33, 133), RIGHT_BROW[5:], RIGHT_BROW[:5]),
    (LEFT_EYE_UPPER, LEFT_EYE_LOWER, (263, 362), LEFT_BROW[5:], LEFT_BROW[:5]),
)
"""Per eye: upper lid, lower lid, corners (outer, inner), brow top edge, brow bottom edge."""


def eye_knots(
    geo: EyeGeometry, pose: Pose, config: EyeConfig
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
    """Per-column knots along v: where each line goes (targets) and what it shows (sources)."""
    fh = geo.face_height
    lift = pose.brow * fh * geo.brow_weight
    c = min(max(pose.blink, 0.0), 1.0)
    upper, lower = geo.lid_upper, geo.lid_lower
    opening = np.maximum(lower - upper, 0.0)
    half_slit = np.minimum(config.slit_px, opening) / 2.0
    meet = upper + config.lid_meet * opening
    top = geo.brow_top - config.forehead * fh
    bottom = lower + config.cheek * fh
    targets = [
        top,
        geo.brow_top - lift,
        geo.brow_bottom - lift,
        upper + c * (meet - half_slit - upper),
        lower + c * (meet + half_slit - lower),
        bottom,
    ]
    sources = [top, geo.brow_top, geo.brow_bottom, upper - c * config.lid_reach * opening, lower, bottom]
    return targets, sources


def eye_patch(image: NDArray[np.uint8], geo: EyeGeometry, pose: Pose, config: EyeConfig) -> NDArray[np.uint8]:
    """This eye's region of ``image`` with its lids and brow moved to ``pose`` (``geo.roi``-sized)."""
    targets, sources = eye_knots(geo, pose, config)
    v = geo.v
    src_v = v.copy()
    for k in range(len(targets) - 1):
        t0, t1, s0, s1 = targets[k], targets[k + 1], sources[k], sources[k + 1]
        inside = (v >= t0) & (v < t1)
        scale = (s1 - s0) / np.maximum(t1 - t0, 1e-6)
        src_v = np.where(inside, s0 + (v - t0) * scale, src_v)
    shift = np.where((v >= targets[0]) & (v < targets[-1]), src_v - v, 0.0)
    x0, y0, x1, y1 = geo.roi
    map_x = (np.arange(x0, x1)[None, :] + shift * geo.down[0]).astype(np.float32)
    map_y = (np.arange(y0, y1)[:, None] + shift * geo.down[1]).astype(np.float32)
    patch = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(patch, dtype=np.uint8)


def warp_eyes(
    image: NDArray[np.uint8],
    eyes: list[EyeGeometry],
    pose: Pose,
    config: EyeConfig,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """``image`` with both eyes' lids and brows moved to ``pose``, in ``out`` (a new array by default).

    ``out`` may be ``image`` itself: every patch is taken from the untouched image before any is written.
    """
    patches = [eye_patch(image, geo, pose, config) for geo in eyes]
    target = image.copy() if out is None else out
    for geo, patch in zip(eyes, patches, strict=True):
        x0, y0, x1, y1 = geo.roi
        target[y0:y1, x0:x1] = patch
    return target


def eyes_geometry(
    points: NDArray[np.floating[Any]], size: tuple[int, int], config: EyeConfig
) -> list[EyeGeometry]:
    """Both eyes' warp parts (an eye off the picture is left out)."""
    found = (eye_geometry(points, size, config, side) for side in EYE_SIDES)
    return [g for g in found if g is not None]
