"""Head motion in pixels: a small rotation about the neck plus a shift, with the background intact.

The displacement is the rigid motion weighted by a smooth mask that is 1 over the head and hair and
falls to exactly 0 a little outside them, computed on a coarse grid (it is smooth) and upsampled into
one ``cv2.remap``. The map is continuous, so the background next to the head stretches by a pixel or
two instead of tearing, and everything beyond the falloff is the input's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.models.lipsync.liveliness import Pose
from talkfactory.models.lipsync.warp import CHIN, FOREHEAD_TOP, face_axes

NOSE_TIP = 1
FACE_SIDES = (234, 454)
"""Cheek edges at eye height: the face width."""


@dataclass(frozen=True)
class HeadConfig:
    """Geometry of the head motion, in fractions of the face height."""

    across: float = 0.62
    """Half-width of the head ellipse (face plus ears and hair)."""
    along: float = 0.8
    """Half-height of the head ellipse; its centre sits ``up`` above the face centre."""
    up: float = 0.1
    falloff: float = 0.4
    """The head mask falls from 1 to 0 between elliptical radius 1 and 1 + this."""
    pivot_below_chin: float = 0.3
    """The head turns about a point this far below the chin: the neck."""
    grid_step: float = 0.04
    """Spacing of the coarse grid the displacement is computed on (it is smooth) before upsampling."""


@dataclass(frozen=True)
class HeadGeometry:
    """One template row's head warp parts: the weighted region and its coarse grid."""

    face_height: float
    pivot: NDArray[np.float64]
    roi: tuple[int, int, int, int]
    nodes_x: NDArray[np.float64]
    """(gh, gw) node positions, pixels."""
    nodes_y: NDArray[np.float64]
    weight: NDArray[np.float64]
    """(gh, gw) head mask at the nodes: 1 on the head, exactly 0 from radius 1 + falloff out."""


def head_mask(
    xs: NDArray[np.float64], ys: NDArray[np.float64], points: NDArray[np.floating[Any]], config: HeadConfig
) -> NDArray[np.float64]:
    """The head weight at pixel positions (``xs``, ``ys`` broadcastable): 1 on the head, 0 away from it."""
    pts = points.astype(np.float64)
    face_h, right, down = face_axes(pts)
    centre = 0.5 * (pts[FOREHEAD_TOP] + pts[CHIN]) - config.up * face_h * down
    dx, dy = xs - centre[0], ys - centre[1]
    u = (dx * right[0] + dy * right[1]) / (config.across * face_h)
    v = (dx * down[0] + dy * down[1]) / (config.along * face_h)
    x = np.clip((np.sqrt(u * u + v * v) - 1.0) / config.falloff, 0.0, 1.0)
    weight: NDArray[np.float64] = 1.0 - x * x * (3.0 - 2.0 * x)
    return weight


def head_geometry(
    points: NDArray[np.floating[Any]], size: tuple[int, int], config: HeadConfig
) -> HeadGeometry | None:
    width, height = size
    pts = points.astype(np.float64)
    face_h, right, down = face_axes(pts)
    centre = 0.5 * (pts[FOREHEAD_TOP] + pts[CHIN]) - config.up * face_h * down
    reach = 1.0 + config.falloff + 0.05
    a, b = config.across * face_h * reach, config.along * face_h * reach
    half_w = math.hypot(a * right[0], b * down[0])
    half_h = math.hypot(a * right[1], b * down[1])
    x0, x1 = max(0, int(math.floor(centre[0] - half_w))), min(width, int(math.ceil(centre[0] + half_w)) + 1)
    y0, y1 = max(0, int(math.floor(centre[1] - half_h))), min(height, int(math.ceil(centre[1] + half_h)) + 1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    step = max(4.0, config.grid_step * face_h)
    w, h = x1 - x0, y1 - y0
    gw, gh = max(2, int(math.ceil(w / step))), max(2, int(math.ceil(h / step)))
    nx = x0 + (np.arange(gw) + 0.5) * (w / gw) - 0.5
    ny = y0 + (np.arange(gh) + 0.5) * (h / gh) - 0.5
    gx, gy = np.meshgrid(nx, ny)
    weight = head_mask(gx, gy, pts, config)
    pivot = pts[CHIN] + config.pivot_below_chin * face_h * down
    return HeadGeometry(face_h, pivot, (x0, y0, x1, y1), gx, gy, weight)


def head_maps(geo: HeadGeometry, pose: Pose) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``cv2.remap`` maps over ``geo.roi`` for ``pose``: absolute source x and y of every ROI pixel."""
    x0, y0, x1, y1 = geo.roi
    theta = math.radians(pose.roll_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    tx, ty = pose.shift_x * geo.face_height, pose.shift_y * geo.face_height
    # Backward map: output pixel q shows source pivot + R(-theta) (q - t - pivot), mixed in by the mask.
    qx, qy = geo.nodes_x - tx - geo.pivot[0], geo.nodes_y - ty - geo.pivot[1]
    src_x = geo.pivot[0] + cos * qx + sin * qy
    src_y = geo.pivot[1] - sin * qx + cos * qy
    dx = (geo.weight * (src_x - geo.nodes_x)).astype(np.float32)
    dy = (geo.weight * (src_y - geo.nodes_y)).astype(np.float32)
    w, h = x1 - x0, y1 - y0
    map_x = cv2.resize(dx, (w, h), interpolation=cv2.INTER_LINEAR) + np.arange(x0, x1, dtype=np.float32)
    map_y = cv2.resize(dy, (w, h), interpolation=cv2.INTER_LINEAR)
    map_y += np.arange(y0, y1, dtype=np.float32)[:, None]
    return np.asarray(map_x, dtype=np.float32), np.asarray(map_y, dtype=np.float32)


def warp_head(
    image: NDArray[np.uint8], geo: HeadGeometry, pose: Pose, out: NDArray[np.uint8] | None = None
) -> NDArray[np.uint8]:
    """``image`` with the head turned by ``pose.roll_deg`` about the neck and shifted, in ``out``.

    ``out`` is a new array by default and may be ``image`` itself (the patch is made before it is written).
    """
    x0, y0, x1, y1 = geo.roi
    map_x, map_y = head_maps(geo, pose)
    # One remap over the whole box: remapping only the ellipse's rows and columns, strip by strip,
    # measured slower (per-call overhead and strided maps).
    patch = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    target = image.copy() if out is None else out
    target[y0:y1, x0:x1] = patch
    return target
