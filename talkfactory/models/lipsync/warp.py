"""Mouth geometry: move lips and jaw to a ``MouthShape`` and warp the lower face to match.

Per frame: pick target positions for lip, chin and jaw landmarks (face-size relative), add
zero-displacement anchors on a ring around the lower face, fit a thin-plate spline to the
*backward* displacements at the target positions, evaluate it on a coarse grid, upsample,
and run one ``cv2.remap`` over the region of interest. Where the lips part further than in
the template, an inner mouth (dark, shaded cavity with a hint of upper teeth) is painted
into the opening. A feathered mask blends the region back; pixels where the mask is zero
are the input's, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.models.lipsync.mouth import MouthShape

# --- mediapipe face mesh topology --------------------------------------------------------------------
# Indices into mediapipe's 468-point canonical face mesh (478 with refined irises). The lip and
# face-oval loops are the ones mediapipe lists in mediapipe/python/solutions/face_mesh_connections.py
# (FACEMESH_LIPS, FACEMESH_FACE_OVAL); the chin-area and nose-base points were picked by plotting the
# mesh on a frontal portrait. "Left" below means image left. Each lip tuple runs corner to corner.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS = (61, 291)
INNER_CORNERS = (78, 308)
UPPER_INNER_MID = 13
LOWER_INNER_MID = 14
FOREHEAD_TOP = 10
CHIN = 152
JAW_CONTOUR = (93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323)
"""Lower half of the face oval, from the left cheek at nose height round the chin to the right cheek."""
JAW_FOLLOW = (
    0.0, 0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.66, 0.7, 0.66, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.03, 0.0,
)  # fmt: skip
"""Share of the lower lip's drop each ``JAW_CONTOUR`` point takes: the jaw hinges near the ears, and
the lower lip drops further than the chin (it also parts from the teeth)."""
CHIN_AREA: dict[int, float] = {
    18: 0.95, 83: 0.95, 313: 0.95, 182: 0.93, 406: 0.93,
    200: 0.88, 201: 0.88, 421: 0.88, 194: 0.86, 418: 0.86, 106: 0.8, 335: 0.8,
    199: 0.8, 208: 0.8, 428: 0.8, 32: 0.78, 262: 0.78,
    175: 0.74, 171: 0.74, 396: 0.74, 140: 0.7, 369: 0.7,
    211: 0.6, 431: 0.6, 170: 0.6, 395: 0.6, 204: 0.6, 424: 0.6,
}  # fmt: skip
"""Skin between lower lip and chin (midline 18-200-199-175 and its neighbours) with its share of the
lower lip's drop: it rides on the jaw."""
NOSE_BASE = (206, 98, 2, 327, 426)
"""Under the nose, cheek to cheek: the warped region's fixed top edge."""

_UPPER_LIPS = np.array(LIPS_OUTER_UPPER[1:-1] + LIPS_INNER_UPPER[1:-1])
_LOWER_LIPS = np.array(LIPS_OUTER_LOWER[1:-1] + LIPS_INNER_LOWER[1:-1])
_CORNERS = np.array(MOUTH_CORNERS + INNER_CORNERS)
_JAW = np.array(JAW_CONTOUR)
_JAW_FOLLOW = np.array(JAW_FOLLOW, dtype=np.float64)
_CHIN_IDX = np.array(list(CHIN_AREA))
_CHIN_FOLLOW = np.array(list(CHIN_AREA.values()), dtype=np.float64)
_INNER_UPPER = np.array(LIPS_INNER_UPPER)
_INNER_LOWER = np.array(LIPS_INNER_LOWER)


@dataclass(frozen=True)
class WarpConfig:
    """Geometry of the mouth motion, in fractions of face height (forehead top to chin)."""

    max_gap: float = 0.1
    """Inner-lip gap at ``open == 1``."""
    rest_gap: float = 0.02
    """A template whose lips are parted wider than this is closed down to it in silence."""
    upper_share: float = 0.18
    """Share of the opening done by the upper lip rising; the jaw does the rest."""
    corner_drop: float = 0.3
    """How far the mouth corners follow the jaw down."""
    width_gain: float = 0.1
    """Relative change of mouth width at ``width`` = +-1."""
    open_narrow: float = 0.06
    """Relative narrowing of the mouth when fully open."""
    margin: float = 0.08
    """How far the warped region reaches beyond the jaw line."""
    chin_margin: float = 0.12
    """Extra reach below the chin: the neck strip the dropping chin slides over."""
    feather: float = 0.025
    """Gaussian sigma of the blend mask's edge."""
    grid_step: float = 0.035
    """Spacing of the coarse grid the spline is evaluated on before upsampling."""
    teeth: bool = True


@dataclass(frozen=True)
class FaceFrame:
    """Shape-independent geometry of one frame's face, reusable for every mouth shape."""

    face_height: float
    """Pixels from forehead top to chin."""
    center: NDArray[np.float64]
    """Mouth centre (midpoint of the corners), pixels."""
    right: NDArray[np.float64]
    """Unit vector across the face (image left to right for a frontal face)."""
    down: NDArray[np.float64]
    """Unit vector from forehead to chin."""
    roi: tuple[int, int, int, int]
    """x0, y0, x1, y1 of the region that may change (clipped to the image)."""
    ring: NDArray[np.float64]
    """(K, 2) closed polygon around mouth and jaw: the blend mask's 50 % line, pinned in place."""
    alpha: NDArray[np.float32]
    """(y1 - y0, x1 - x0) blend weights 0..1 over ``roi``; exactly 0 outside the feathered ring."""
    anchors: NDArray[np.float64]
    """(A, 2) points pinned in place: the ring (densified) and the region box's border."""
    template_gap: float
    """Inner-lip gap (13-14) of the template, pixels along ``down``."""
    seam: NDArray[np.float64]
    """(11, 2) where the template's mouth parts when it opens, corner to corner: between the inner lips,
    under the upper teeth when they show (see ``seam_fractions``)."""
    exposure: float
    """Skin brightness next to the mouth relative to a well-lit face: scales the painted inner mouth."""

    @property
    def alpha_rest(self) -> NDArray[np.float32]:
        """``1 - alpha``, computed once per frame geometry."""
        rest = self.__dict__.get("_alpha_rest")
        if rest is None:
            rest = np.float32(1.0) - self.alpha
            object.__setattr__(self, "_alpha_rest", rest)
        return rest


@dataclass(frozen=True)
class MouthTargets:
    """Where the moving landmarks go for one shape."""

    landmarks: NDArray[np.float64]
    """(478, 2) target positions; points that do not move keep their source position."""
    moved: NDArray[np.intp]
    """Indices of the landmarks that move."""
    seam_upper: NDArray[np.float64] | None
    """(11, 2) targets of the upper edge of the new opening (corner to corner), None when not opening."""
    seam_lower: NDArray[np.float64] | None
    seam_source: NDArray[np.float64] | None
    """(11, 2) where the lips meet in the template (midway between the inner lip points)."""
    opening: float
    """Extra inner-lip gap at the centre, pixels (negative: the template's lips are brought together)."""
    pair_opening: NDArray[np.float64]
    """(11,) extra gap of each inner-lip pair, corner to corner, pixels."""


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 1e-9 else np.array([0.0, 1.0])


def face_axes(landmarks: NDArray[np.floating[Any]]) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    """(face height, right, down) of a frame's mesh."""
    top = landmarks[FOREHEAD_TOP].astype(np.float64)
    chin = landmarks[CHIN].astype(np.float64)
    down = _unit(chin - top)
    right = np.array([down[1], -down[0]])  # a quarter turn from down: (0, 1) -> (1, 0)
    return float(np.hypot(*(chin - top))), right, down


def _densify(polygon: NDArray[np.float64], step: float) -> NDArray[np.float64]:
    """Closed polygon with extra points so no edge is longer than ``step``."""
    out = []
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        n = max(1, int(math.ceil(float(np.hypot(*(b - a))) / step)))
        t = np.arange(n)[:, None] / n
        out.append(a + (b - a) * t)
    return np.concatenate(out)


def region_ring(landmarks: NDArray[np.floating[Any]], config: WarpConfig) -> NDArray[np.float64]:
    """Polygon round mouth and jaw: the jaw line pushed out (further under the chin), the nose base on top."""
    face_h, _, down = face_axes(landmarks)
    pts = landmarks.astype(np.float64)
    center = pts[list(MOUTH_CORNERS)].mean(axis=0)
    jaw = pts[_JAW]
    outward = jaw - center
    outward /= np.maximum(np.hypot(outward[:, 0], outward[:, 1]), 1e-9)[:, None]
    below = np.outer(_JAW_FOLLOW / _JAW_FOLLOW.max(), down) * config.chin_margin * face_h
    jaw = jaw + outward * config.margin * face_h + below
    nose = pts[list(NOSE_BASE[::-1])] - down * 0.01 * face_h
    return np.concatenate((jaw, nose))


def _ring_box(
    ring: NDArray[np.float64], face_h: float, size: tuple[int, int], config: WarpConfig
) -> tuple[int, int, int, int]:
    width, height = size
    pad = 3.0 * config.feather * face_h + 2.0
    x0 = max(0, int(math.floor(ring[:, 0].min() - pad)))
    y0 = max(0, int(math.floor(ring[:, 1].min() - pad)))
    x1 = min(width, int(math.ceil(ring[:, 0].max() + pad)) + 1)
    y1 = min(height, int(math.ceil(ring[:, 1].max() + pad)) + 1)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    return (x0, y0, x1, y1)


def region_box(
    landmarks: NDArray[np.floating[Any]], size: tuple[int, int], config: WarpConfig
) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the pixels a warp of this face may change, in a ``size`` = (w, h) image."""
    return _ring_box(region_ring(landmarks, config), face_axes(landmarks)[0], size, config)


def _blend_alpha(
    ring: NDArray[np.float64], roi: tuple[int, int, int, int], sigma: float
) -> NDArray[np.float32]:
    """Feathered mask of ``ring`` over ``roi``: drawn and blurred at quarter size, then upsampled."""
    x0, y0, x1, y1 = roi
    w, h = x1 - x0, y1 - y0
    scale = 4
    sw, sh = max(1, -(-w // scale)), max(1, -(-h // scale))
    small = np.zeros((sh, sw), dtype=np.uint8)
    pts = np.round((ring - (x0, y0)) / scale * 16).astype(np.int32)
    cv2.fillPoly(small, [pts], (255,), lineType=cv2.LINE_AA, shift=4)
    s = max(sigma / scale, 0.5)
    k = 2 * int(math.ceil(3 * s)) + 1
    blurred = cv2.GaussianBlur(small, (k, k), s, borderType=cv2.BORDER_CONSTANT)
    big = np.asarray(cv2.resize(blurred, (sw * scale, sh * scale), interpolation=cv2.INTER_LINEAR))
    return big[:h, :w].astype(np.float32) * np.float32(1.0 / 255.0)


def face_frame(
    landmarks: NDArray[np.floating[Any]],
    image: NDArray[np.uint8] | None,
    size: tuple[int, int],
    config: WarpConfig,
) -> FaceFrame:
    """Per-frame geometry of ``landmarks`` in a ``size`` = (width, height) image.

    ``image`` (the template frame) is only read for the skin brightness next to the mouth;
    without it the inner mouth is painted for an evenly lit face.
    """
    width, height = size
    face_h, right, down = face_axes(landmarks)
    pts = landmarks.astype(np.float64)
    center = pts[list(MOUTH_CORNERS)].mean(axis=0)
    ring = region_ring(landmarks, config)
    roi = _ring_box(ring, face_h, size, config)
    x0, y0, x1, y1 = roi
    alpha = _blend_alpha(ring, roi, config.feather * face_h) if x1 > x0 else np.zeros((0, 0), np.float32)
    gap = float(np.dot(pts[LOWER_INNER_MID] - pts[UPPER_INNER_MID], down))
    exposure = 1.0
    if image is not None:
        # Skin just below the lower lip: lit like the inside of the mouth would be, and never a lip colour.
        p = pts[18] * 0.5 + pts[200] * 0.5
        r = max(1, int(0.015 * face_h))
        cx, cy = int(round(p[0])), int(round(p[1]))
        patch = image[max(0, cy - r) : cy + r + 1, max(0, cx - r) : cx + r + 1]
        if patch.size:
            luma = float((patch.reshape(-1, 3) @ np.array([0.114, 0.587, 0.299])).mean())
            exposure = min(max(luma / 170.0, 0.3), 1.15)
    upper, lower = pts[_INNER_UPPER], pts[_INNER_LOWER]
    fractions = seam_fractions(image, upper, lower) if image is not None else np.full(len(upper), 0.5)
    seam = upper + (lower - upper) * fractions[:, None]
    anchors = np.concatenate((_densify(ring, 0.08 * face_h), _border(roi)))
    return FaceFrame(face_h, center, right, down, roi, ring, alpha, anchors, max(gap, 0.0), seam, exposure)


def seam_fractions(
    image: NDArray[np.uint8], upper: NDArray[np.float64], lower: NDArray[np.float64], samples: int = 16
) -> NDArray[np.float64]:
    """Where, from upper (0) to lower (1) inner lip, the template's mouth should part, per lip pair.

    A smile shows the upper teeth from the upper lip down; they must stay with the upper jaw.
    So along each pair we look for the strongest bright-to-dark step below the upper third
    (the teeth's lower edge); where there is none (closed lips, an already dark mouth) the
    mouth parts in the middle. Neighbouring pairs are then evened out.
    """
    n = upper.shape[0]
    t = np.linspace(0.0, 1.0, samples)
    pts = upper[:, None, :] + t[None, :, None] * (lower - upper)[:, None, :]
    map_x = pts[..., 0].astype(np.float32)
    map_y = pts[..., 1].astype(np.float32)
    colour = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    luma = colour.astype(np.float64) @ np.array([0.114, 0.587, 0.299])
    lengths = np.hypot(*(lower - upper).T)
    found = np.full(n, np.nan)
    first = samples // 3
    for k in range(1, n - 1):
        if lengths[k] < 3.0:
            continue
        drop = luma[k, first:-2] - luma[k, first + 2 :]  # positive: darker two samples further down
        j = int(np.argmax(drop))
        if drop[j] > 18.0:
            found[k] = t[first + j + 1]
    fractions = np.full(n, 0.5)
    known = np.flatnonzero(~np.isnan(found))
    if known.size:
        fractions = np.interp(np.arange(n), known, found[known])
        fractions[1:-1] = np.convolve(fractions, [0.25, 0.5, 0.25], mode="valid")
    return np.clip(fractions, 0.15, 0.92)


def target_landmarks(
    landmarks: NDArray[np.floating[Any]], shape: MouthShape, face: FaceFrame, config: WarpConfig
) -> MouthTargets:
    """Target positions of the lips, chin and jaw for ``shape``.

    The inner-lip gap at the centre goes to ``rest + open * (max_gap - rest)``. Opening further
    than the template parts each lip pair along an ellipse (widest in the middle, nothing at
    the corners); closing scales every pair's own gap by the same factor, so lips never cross.
    The upper lip does ``upper_share`` of the motion, the jaw (lower lip, chin, jaw line) the rest.
    """
    pts = landmarks.astype(np.float64)
    face_h, right, down = face.face_height, face.right, face.down
    rest = min(face.template_gap, config.rest_gap * face_h)
    openness = min(max(shape.open, 0.0), 1.0)
    desired = rest + openness * (config.max_gap * face_h - rest)
    opening = desired - face.template_gap

    upper_in, lower_in = pts[_INNER_UPPER], pts[_INNER_LOWER]
    if opening >= 0:
        inner_half = 0.5 * float(np.dot(upper_in[-1] - upper_in[0], right))
        u_in = (upper_in - face.center) @ right / max(inner_half, 1e-3 * face_h)
        pair_open = opening * np.sqrt(np.clip(1.0 - u_in * u_in, 0.0, 1.0))
    else:
        # Keep a sliver (a pixel or so) between the lips: fully coincident targets would pin one point
        # to two places and tear the spline.
        ratio = max(desired, min(face.template_gap, 0.012 * face_h)) / max(face.template_gap, 1e-6)
        pair_open = -(1.0 - ratio) * np.maximum((lower_in - upper_in) @ down, 0.0)
        opening = float(pair_open[5])
    pair_open[[0, -1]] = 0.0
    rise = config.upper_share * pair_open
    fall = pair_open - rise
    drop = (1.0 - config.upper_share) * opening

    stretch = config.width_gain * min(max(shape.width, -1.0), 1.0) - config.open_narrow * openness

    def widen(idx: NDArray[np.intp]) -> NDArray[np.float64]:
        u = (pts[idx] - face.center) @ right
        return np.outer(u * stretch, right)

    target = pts.copy()
    for outer, inner, move in (
        (LIPS_OUTER_UPPER, LIPS_INNER_UPPER, -rise),
        (LIPS_OUTER_LOWER, LIPS_INNER_LOWER, fall),
    ):
        for ring_idx in (np.array(outer[1:-1]), np.array(inner[1:-1])):
            target[ring_idx] += widen(ring_idx) + np.outer(move[1:-1], down)
    target[_CORNERS] += widen(_CORNERS) + np.outer(np.full(4, config.corner_drop * drop), down)
    target[_JAW] += np.outer(_JAW_FOLLOW * drop, down)
    target[_CHIN_IDX] += np.outer(_CHIN_FOLLOW * drop, down)
    moved = np.concatenate((_UPPER_LIPS, _LOWER_LIPS, _CORNERS, _JAW, _CHIN_IDX))
    # Corners are shared by the upper and lower rings: take their own (corner) motion.
    seam_upper = seam_lower = seam_source = None
    if opening > 0.002 * face_h:
        seam_source = face.seam
        shift = target[_INNER_UPPER] - pts[_INNER_UPPER]
        seam_upper = seam_source + shift
        seam_lower = seam_source + shift + np.outer(pair_open, down)
    return MouthTargets(target, moved, seam_upper, seam_lower, seam_source, opening, pair_open)


def _tps_kernel(d2: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        k: NDArray[np.float64] = d2 * np.log(d2)
    k[d2 <= 0] = 0.0
    return k


def backward_field(
    targets: NDArray[np.float64],
    sources: NDArray[np.float64],
    grid_x: NDArray[np.float64],
    grid_y: NDArray[np.float64],
    scale: float,
    regularization: float = 1e-6,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Thin-plate spline through ``targets -> sources - targets``, evaluated on the grid.

    Solving at the *target* positions gives the backward map ``remap`` needs directly; no
    inversion of a forward field (which folds where the lips part) is ever required.
    """
    q = targets / scale
    n = q.shape[0]
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = _tps_kernel(_sqdist(q, q)) + regularization * np.eye(n)
    a[:n, n] = 1.0
    a[:n, n + 1 :] = q
    a[n, :n] = 1.0
    a[n + 1 :, :n] = q.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = sources - targets
    coef = _solve(a, rhs)
    g = np.stack((grid_x.ravel(), grid_y.ravel()), 1) / scale
    field = _tps_kernel(_sqdist(g, q)) @ coef[:n] + coef[n] + g[:, :1] * coef[n + 1] + g[:, 1:] * coef[n + 2]
    shape = grid_x.shape
    return field[:, 0].reshape(shape).astype(np.float32), field[:, 1].reshape(shape).astype(np.float32)


@dataclass(frozen=True)
class SplineGrid:
    """The parts of the per-frame spline that only depend on the frame's geometry, not on the shape.

    Anchors never move and the grid never changes for one ``FaceFrame``, so their kernel blocks
    are computed once; per shape only the moving points' rows are new. Same result as
    ``backward_field`` over ``moving + anchors``.
    """

    scale: float
    shape: tuple[int, int]
    """(rows, columns) of the coarse grid."""
    grid: NDArray[np.float64]
    """(M, 2) node positions / scale."""
    anchors: NDArray[np.float64]
    """(A, 2) anchor positions / scale."""
    anchor_kernel: NDArray[np.float64]
    """(A, A) kernel among anchors, regularisation included."""
    grid_anchor_kernel: NDArray[np.float64]
    """(M, A) kernel from grid nodes to anchors."""
    regularization: float

    @classmethod
    def for_face(cls, face: FaceFrame, grid_step: float, regularization: float = 1e-6) -> SplineGrid:
        x0, y0, x1, y1 = face.roi
        w, h = x1 - x0, y1 - y0
        step = max(3.0, grid_step * face.face_height)
        gw, gh = max(2, int(math.ceil(w / step))), max(2, int(math.ceil(h / step)))
        # Node centres where cv2.resize(INTER_LINEAR) puts them, so the upsampled field is their bilinear mix.
        nx = x0 + (np.arange(gw) + 0.5) * (w / gw) - 0.5
        ny = y0 + (np.arange(gh) + 0.5) * (h / gh) - 0.5
        gx, gy = np.meshgrid(nx, ny)
        scale = face.face_height
        grid = np.stack((gx.ravel(), gy.ravel()), 1) / scale
        anchors = face.anchors / scale
        kaa = _tps_kernel(_sqdist(anchors, anchors)) + regularization * np.eye(len(anchors))
        kga = _tps_kernel(_sqdist(grid, anchors))
        return cls(scale, (gh, gw), grid, anchors, kaa, kga, regularization)

    def field(
        self, targets: NDArray[np.float64], sources: NDArray[np.float64]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Backward displacement (pixels) on the grid for moving points ``targets -> sources``."""
        qm = targets / self.scale
        m, a = qm.shape[0], self.anchors.shape[0]
        n = m + a
        kma = _tps_kernel(_sqdist(qm, self.anchors))
        system = np.zeros((n + 3, n + 3))
        system[:m, :m] = _tps_kernel(_sqdist(qm, qm)) + self.regularization * np.eye(m)
        system[:m, m:n] = kma
        system[m:n, :m] = kma.T
        system[m:n, m:n] = self.anchor_kernel
        system[:n, n] = 1.0
        system[n, :n] = 1.0
        system[:m, n + 1 :] = qm
        system[m:n, n + 1 :] = self.anchors
        system[n + 1 :, :m] = qm.T
        system[n + 1 :, m:n] = self.anchors.T
        rhs = np.zeros((n + 3, 2))
        rhs[:m] = sources - targets
        coef = _solve(system, rhs)
        g = self.grid
        field = (
            _tps_kernel(_sqdist(g, qm)) @ coef[:m]
            + self.grid_anchor_kernel @ coef[m:n]
            + coef[n]
            + g[:, :1] * coef[n + 1]
            + g[:, 1:] * coef[n + 2]
        )
        return (
            field[:, 0].reshape(self.shape).astype(np.float32),
            field[:, 1].reshape(self.shape).astype(np.float32),
        )


def _sqdist(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Squared distances between the rows of ``a`` (N, 2) and ``b`` (M, 2), via one small product."""
    d: NDArray[np.float64] = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    np.maximum(d, 0.0, out=d)
    return d


def _solve(system: NDArray[np.float64], rhs: NDArray[np.float64]) -> NDArray[np.float64]:
    # OpenCV's LU, not LAPACK's: single-threaded and ~4x faster at this size on a busy machine.
    ok, coef = cv2.solve(system, rhs, flags=cv2.DECOMP_LU)
    if not ok:
        return np.asarray(np.linalg.lstsq(system, rhs, rcond=None)[0], dtype=np.float64)
    return np.asarray(coef, dtype=np.float64)


def _smoothstep(x: NDArray[np.float64]) -> NDArray[np.float64]:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def paint_inner_mouth(
    roi_image: NDArray[np.uint8],
    origin: tuple[int, int],
    targets: MouthTargets,
    face: FaceFrame,
    config: WarpConfig,
) -> None:
    """Paint the new opening (between the parted seam halves) into ``roi_image`` in place."""
    if targets.seam_upper is None or targets.seam_lower is None:
        return
    upper = targets.seam_upper - origin
    lower = targets.seam_lower - origin
    poly = np.concatenate((upper, lower[-2:0:-1]))
    h, w = roi_image.shape[:2]
    bx0 = max(0, int(math.floor(poly[:, 0].min())) - 2)
    by0 = max(0, int(math.floor(poly[:, 1].min())) - 2)
    bx1 = min(w, int(math.ceil(poly[:, 0].max())) + 3)
    by1 = min(h, int(math.ceil(poly[:, 1].max())) + 3)
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return
    bw, bh = bx1 - bx0, by1 - by0
    mask = np.zeros((bh, bw), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round((poly - (bx0, by0)) * 16).astype(np.int32)], (255,), cv2.LINE_AA, shift=4)
    cover = np.asarray(cv2.GaussianBlur(mask, (3, 3), 0.6)).astype(np.float32) * np.float32(1.0 / 255.0)
    if not cover.any():
        return
    face_h = face.face_height
    gap = max(targets.opening, 1.0)

    e = face.exposure
    ys, xs = np.mgrid[by0:by1, bx0:bx1].astype(np.float64)
    pos_x = xs + origin[0] - face.center[0]
    pos_y = ys + origin[1] - face.center[1]
    u_px = pos_x * face.right[0] + pos_y * face.right[1]
    v_px = pos_x * face.down[0] + pos_y * face.down[1]

    def curve(points: NDArray[np.float64]) -> NDArray[np.float64]:
        pu = (points - face.center) @ face.right
        pv = (points - face.center) @ face.down
        order = np.argsort(pu)
        return np.interp(u_px, pu[order], pv[order])

    top, bottom = curve(targets.seam_upper), curve(targets.seam_lower)
    below_top = v_px - top
    height = np.maximum(bottom - top, 1e-3)
    upper_u = (targets.seam_upper - face.center) @ face.right
    half_w = 0.5 * float(np.ptp(upper_u))
    across = np.abs(u_px) / max(half_w, 1e-3)

    # Dark throat; a dim tongue rising from the lower lip in the middle of a wide opening.
    deep = np.array([14.0, 16.0, 42.0]) * e
    tongue_col = np.array([44.0, 48.0, 108.0]) * e
    depth_ok = min(1.0, gap / (0.05 * face_h))
    tongue = (
        _smoothstep((below_top / height - 0.6) / 0.4)
        * (1.0 - _smoothstep((across - 0.35) / 0.4))
        * (0.35 + 0.65 * depth_ok)
    )
    colour = deep + (tongue_col - deep) * tongue[..., None]

    if config.teeth:
        # A template showing its teeth already brings its own (they ride up with the upper lip).
        strength = float(np.clip((0.06 * face_h - face.template_gap) / (0.03 * face_h), 0.0, 1.0))
        tooth_h = min(0.42 * gap, 0.045 * face_h)
        if strength > 0 and half_w > 0 and tooth_h > 0.5:
            side = 1.0 - _smoothstep((across - 0.45) / 0.35)
            local_h = tooth_h * (1.0 - 0.3 * np.clip(across, 0.0, 1.0) ** 2)  # incisors are the longest
            body = _smoothstep(below_top + 0.5) * (1.0 - _smoothstep((below_top - local_h + 0.8) / 1.6))
            tooth = (side * body * strength)[..., None]
            # Brightest in front, darker towards the sides and in the lip's shadow at the top.
            shade = (0.62 + 0.38 * (1.0 - np.clip(across / 0.8, 0, 1)) ** 0.7) * (
                0.85 + 0.15 * _smoothstep(below_top / max(0.35 * tooth_h, 1.0))
            )
            # Faint gaps between incisors, laterals and canines (fractions of the half mouth width).
            u_rel = u_px / half_w
            toward_edge = _smoothstep(below_top / max(tooth_h, 1.0))
            for edge, dark in ((0.0, 0.12), (-0.18, 0.08), (0.18, 0.08), (-0.33, 0.06), (0.33, 0.06)):
                line = np.exp(-0.5 * ((u_rel - edge) * half_w / 0.6) ** 2)
                shade = shade * (1.0 - dark * (0.4 + 0.6 * toward_edge) * line)
            enamel = np.array([185.0, 205.0, 220.0]) * min(e, 1.1)
            colour = colour + (enamel * shade[..., None] - colour) * tooth
    region = roi_image[by0:by1, bx0:bx1]
    blended = region + (colour - region) * cover[..., None]
    region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


class MouthWarper:
    """Warps template frames to mouth shapes; keeps its scratch buffers between frames."""

    def __init__(self, config: WarpConfig | None = None, regularization: float = 1e-6) -> None:
        self.config = config or WarpConfig()
        self.regularization = regularization
        self._scratch: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.uint8]] | None = None

    def frame_geometry(self, landmarks: NDArray[np.floating[Any]], image: NDArray[np.uint8]) -> FaceFrame:
        return face_frame(landmarks, image, (image.shape[1], image.shape[0]), self.config)

    def _buffers(self, w: int, h: int) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.uint8]]:
        """Scratch maps and warped patch for a w x h region, reused while the region size holds."""
        if self._scratch is None or self._scratch[0].shape != (h, w):
            self._scratch = (
                np.empty((h, w), np.float32),
                np.empty((h, w), np.float32),
                np.empty((h, w, 3), np.uint8),
            )
        return self._scratch

    def spline_grid(self, face: FaceFrame) -> SplineGrid:
        """``face``'s shape-independent spline parts, built on first use and kept with it."""
        grid = face.__dict__.get("_spline_grid")
        if not isinstance(grid, SplineGrid) or grid.regularization != self.regularization:
            grid = SplineGrid.for_face(face, self.config.grid_step, self.regularization)
            object.__setattr__(face, "_spline_grid", grid)
        return grid

    def warp(
        self,
        image: NDArray[np.uint8],
        landmarks: NDArray[np.floating[Any]],
        shape: MouthShape,
        face: FaceFrame | None = None,
    ) -> NDArray[np.uint8]:
        """A new frame: ``image`` with its mouth moved to ``shape``; ``image`` is not modified."""
        cfg = self.config
        face = face or self.frame_geometry(landmarks, image)
        x0, y0, x1, y1 = face.roi
        out = image.copy()
        if x1 <= x0 or y1 <= y0:
            return out
        targets = target_landmarks(landmarks, shape, face, cfg)
        if abs(targets.opening) < 0.25 and abs(shape.width) < 1e-3 and shape.open <= 0.0:
            return out
        w, h = x1 - x0, y1 - y0
        moved = targets.moved
        src = landmarks[moved].astype(np.float64)
        dst = targets.landmarks[moved]
        parts_src, parts_dst = [src], [dst]
        if (
            targets.seam_source is not None
            and targets.seam_upper is not None
            and targets.seam_lower is not None
        ):
            # Pairs that barely part would pin one source point to two nearly equal targets: leave them out.
            keep = np.flatnonzero(targets.pair_opening > 0.5)
            parts_src += [targets.seam_source[keep], targets.seam_source[keep]]
            parts_dst += [targets.seam_upper[keep], targets.seam_lower[keep]]
        bx, by = self.spline_grid(face).field(np.concatenate(parts_dst), np.concatenate(parts_src))
        map_x, map_y, warped = self._buffers(w, h)
        cv2.resize(bx, (w, h), dst=map_x, interpolation=cv2.INTER_LINEAR)
        cv2.resize(by, (w, h), dst=map_y, interpolation=cv2.INTER_LINEAR)
        map_x += np.arange(x0, x1, dtype=np.float32)[None, :]
        map_y += np.arange(y0, y1, dtype=np.float32)[:, None]
        cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, dst=warped, borderMode=cv2.BORDER_REPLICATE)
        paint_inner_mouth(warped, (x0, y0), targets, face, cfg)

        roi = out[y0:y1, x0:x1]
        # Exact at both ends: weight 0 returns the input byte, weight 1 the warped one.
        roi[...] = cv2.blendLinear(warped, roi, face.alpha, face.alpha_rest)
        return out


def _border(roi: tuple[int, int, int, int]) -> NDArray[np.float64]:
    """Zero-displacement pins round the region's box: keep the spline from drifting outside the ring."""
    x0, y0, x1, y1 = roi
    xs = np.linspace(x0, x1, 5)
    ys = np.linspace(y0, y1, 5)
    top = np.stack((xs, np.full(5, y0)), 1)
    bottom = np.stack((xs, np.full(5, y1)), 1)
    left = np.stack((np.full(3, x0), ys[1:-1]), 1)
    right = np.stack((np.full(3, x1), ys[1:-1]), 1)
    box: NDArray[np.float64] = np.concatenate((top, bottom, left, right)).astype(np.float64)
    return box


def warp_mouth(
    image: NDArray[np.uint8],
    landmarks: NDArray[np.floating[Any]],
    shape: MouthShape,
    config: WarpConfig | None = None,
) -> NDArray[np.uint8]:
    """One-off convenience: ``MouthWarper(config).warp(image, landmarks, shape)``."""
    return MouthWarper(config).warp(image, landmarks, shape)
