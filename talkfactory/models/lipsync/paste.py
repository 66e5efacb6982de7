"""Face crop and paste-back geometry shared by lip-sync backends (pure numpy / OpenCV).

Boxes come from the avatar's ``FaceTrack`` mesh (already smoothed over time by the track): the
bounding box of the landmarks, padded down to take in the chin and made square. A backend crops
and resizes the box to its input size, and pastes its output back through a feathered mask over
the lower face (jaw line up to the nose wings), after matching the output's colour to the frame
over that mask in LAB, so no rectangle edge or colour step shows. Pixels outside the box are
never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

# mediapipe face mesh indices: the face oval from one cheek round the chin to the other
# (FACEMESH_FACE_OVAL, lower part, in order) and the two nose wings that close it at the top.
LOWER_FACE_OVAL: tuple[int, ...] = (
    93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323,
)  # fmt: skip
NOSE_WINGS: tuple[int, ...] = (98, 327)
LOWER_FACE_POINTS: tuple[int, ...] = LOWER_FACE_OVAL + NOSE_WINGS


@dataclass(frozen=True)
class BoxPadding:
    """Padding of the landmark bounding box, as fractions of the face height (top, bottom) and width."""

    top: float = 0.0
    bottom: float = 0.10
    """The mesh ends at the chin's edge; the model was trained on boxes reaching below it."""
    sides: float = 0.0


def face_box(
    points: NDArray[np.floating[Any]], width: int, height: int, padding: BoxPadding | None = None
) -> tuple[int, int, int, int]:
    """Square ``(x0, y0, x1, y1)`` box (exclusive end) around one frame's landmarks, inside the image.

    The padded landmark box is grown to a square about its centre, then shifted to fit the
    image; only when the square is larger than the image is it cut.
    """
    pad = padding or BoxPadding()
    finite = points[np.isfinite(points).all(axis=1)]
    if finite.shape[0] == 0:
        raise ValueError("no finite landmarks")
    xmin, ymin = finite.min(axis=0).astype(np.float64)
    xmax, ymax = finite.max(axis=0).astype(np.float64)
    w, h = xmax - xmin, ymax - ymin
    xmin, xmax = xmin - pad.sides * w, xmax + pad.sides * w
    ymin, ymax = ymin - pad.top * h, ymax + pad.bottom * h
    side = max(xmax - xmin, ymax - ymin, 2.0)
    side_px = int(np.ceil(min(side, width, height)))
    cx, cy = (xmin + xmax) / 2.0, (ymin + ymax) / 2.0
    x0 = int(np.clip(np.floor(cx - side_px / 2.0), 0, width - side_px))
    y0 = int(np.clip(np.floor(cy - side_px / 2.0), 0, height - side_px))
    return x0, y0, x0 + side_px, y0 + side_px


def face_boxes(
    landmarks: NDArray[np.floating[Any]],
    present: NDArray[np.bool_],
    width: int,
    height: int,
    padding: BoxPadding | None = None,
) -> NDArray[np.int32]:
    """``face_box`` for every frame of a track: (frames, 4) int32, rows of absent frames all -1."""
    boxes = np.full((landmarks.shape[0], 4), -1, dtype=np.int32)
    for i in np.flatnonzero(present):
        boxes[i] = face_box(landmarks[i], width, height, padding)
    return boxes


def crop_face(image: NDArray[np.uint8], box: tuple[int, int, int, int], size: int) -> NDArray[np.uint8]:
    """The box's pixels resized to ``size`` x ``size`` (area filter when shrinking)."""
    x0, y0, x1, y1 = box
    patch = image[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if (x1 - x0) >= size else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(patch, (size, size), interpolation=interp), dtype=np.uint8)


def _edge_ramp(n: int, radius: float) -> NDArray[np.float32]:
    """0 at both ends of ``n`` samples, rising linearly to 1 over ``radius``."""
    idx = np.arange(n)
    return np.clip(np.minimum(idx, idx[::-1]) / radius, 0.0, 1.0).astype(np.float32)


def lower_face_mask(
    points: NDArray[np.floating[Any]],
    box: tuple[int, int, int, int],
    *,
    feather: float = 0.06,
    size: int | None = None,
) -> NDArray[np.float32]:
    """Blend weights over the box, float32 in [0, 1]: 1 over the lower face, 0 at the box edge.

    The filled hull of the jaw line and nose wings is blurred by ``feather`` x box size and then
    faded to exactly 0 over the same distance from the box border, so the paste has no edge.
    The mask is (h, w) of the box, or ``size`` x ``size`` when given (the box scaled to the
    model's resolution, which is much cheaper to draw and blur).
    """
    x0, y0, x1, y1 = box
    w, h = (x1 - x0, y1 - y0) if size is None else (size, size)
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    radius = max(2.0, feather * max(w, h))
    mask = np.zeros((h, w), dtype=np.float32)
    lower = np.asarray(points, dtype=np.float64)[list(LOWER_FACE_POINTS)]
    lower = (lower[np.isfinite(lower).all(axis=1)] - (x0, y0)) * (sx, sy)
    if lower.shape[0] >= 3:
        # Sub-pixel vertices (4 fractional bits): the hull must not jitter by whole pixels at 96 px.
        hull = cv2.convexHull(np.round(lower * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, (1.0,), lineType=cv2.LINE_AA, shift=4)
    if not mask.any():
        # No usable mesh geometry: an ellipse over the box's lower half.
        centre = (w // 2, int(h * 0.68))
        axes = (max(1, int(w * 0.38)), max(1, int(h * 0.26)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, (1.0,), thickness=-1)
    sigma = radius / 2.0
    mask = np.asarray(
        cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT),
        dtype=np.float32,
    )
    ramps = _edge_ramp(h, radius)[:, None] * _edge_ramp(w, radius)[None, :]
    return np.asarray(np.clip(mask, 0.0, 1.0) * ramps, dtype=np.float32)


def match_colour(
    generated: NDArray[np.float32],
    reference: NDArray[np.uint8],
    mask: NDArray[np.float32],
    *,
    threshold: float = 0.5,
    max_gain: float = 2.0,
) -> NDArray[np.float32]:
    """``generated`` (BGR float, 0-255) with its LAB mean and spread matched to ``reference`` over the mask.

    Per channel: ``(x - mean_gen) * clip(std_ref / std_gen) + mean_ref`` over pixels where
    ``mask > threshold``; the gain is clipped to ``[1 / max_gain, max_gain]`` so a mouth that
    opens (new dark pixels) is not flattened back to the closed mouth's spread.
    """
    region = (mask > threshold).astype(np.uint8)
    if cv2.countNonZero(region) < 16:
        return generated
    gen_lab = cv2.cvtColor(np.clip(generated / 255.0, 0.0, 1.0).astype(np.float32), cv2.COLOR_BGR2LAB)
    ref_lab = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)
    g_mean, g_std = (v.reshape(3) for v in cv2.meanStdDev(gen_lab, mask=region))
    r_mean, r_std = (v.reshape(3) for v in cv2.meanStdDev(ref_lab, mask=region))
    gain = np.clip(r_std / np.maximum(g_std, 1e-3), 1.0 / max_gain, max_gain)
    matched = (gen_lab - g_mean) * gain + r_mean
    bgr = cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_LAB2BGR)
    return np.asarray(np.clip(bgr, 0.0, 1.0) * 255.0, dtype=np.float32)


def paste_face(
    image: NDArray[np.uint8],
    face: NDArray[np.uint8],
    box: tuple[int, int, int, int],
    points: NDArray[np.floating[Any]],
    *,
    colour_match: bool = True,
    feather: float = 0.06,
    reference: NDArray[np.uint8] | None = None,
    out: NDArray[np.uint8] | None = None,
) -> NDArray[np.uint8]:
    """``image`` with the model's ``face`` (S x S BGR) blended into ``box`` over the lower face.

    Mask and colour statistics are computed at the face's own resolution S (``reference`` is the
    box cropped to S x S, as the model saw it; cropped here when not given), then the corrected
    face and the mask are scaled to the box. Writes into ``out`` (a copy of ``image`` by default;
    pass ``image`` itself to paste in place) and returns it. Outside the box, ``out`` keeps
    ``image``'s pixels bit for bit, and so does the box's outermost ring of pixels.
    """
    target = image.copy() if out is None else out
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    side = face.shape[0]
    small_mask = lower_face_mask(points, box, feather=feather, size=side)
    small = face
    if colour_match:
        ref = reference if reference is not None else crop_face(image, box, side)
        matched = match_colour(face.astype(np.float32), ref, small_mask)
        small = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
    generated = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    weight = np.asarray(cv2.resize(small_mask, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    radius = max(2.0, feather * max(w, h))
    weight *= _edge_ramp(h, radius)[:, None] * _edge_ramp(w, radius)[None, :]
    # uint8 in, uint8 out, per-pixel weights in C: where the weight is 0 the original comes back exactly.
    original = np.ascontiguousarray(image[y0:y1, x0:x1])
    target[y0:y1, x0:x1] = cv2.blendLinear(generated, original, weight, 1.0 - weight)
    return target
