"""Applying a ``ReframePlan`` to rendered BGR frames: crop and scale, or fit over a blurred pad.

Runs once per output frame per channel inside the render loop, so it stays cheap: one resize
for a crop; for a pad, the background is made at 1/``PAD_SHRINK`` of the output size (downscale,
blur, darken there) and scaled up, which costs far less than blurring at full size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.models.face.reframe import Rect, ReframePlan, crop_size, fit_rect

Frame = NDArray[np.uint8]

PAD_SHRINK = 16
"""The pad background is built at output size / 16 (e.g. 68 x 120 for 1080 x 1920)."""
PAD_BLUR_SIGMA = 2.0
"""Gaussian sigma at the small size: ~32 output pixels, enough to make the copy unreadable."""
PAD_DARKEN = 0.4
"""Brightness kept in the background, so the sharp frame stands out."""


@dataclass(frozen=True)
class _PadGeometry:
    background: Rect
    """Source region with the output's aspect that fills the background (a centred cover crop)."""
    small: tuple[int, int]
    fit: Rect


@functools.lru_cache(maxsize=64)
def _pad_geometry(src_w: int, src_h: int, out_w: int, out_h: int) -> _PadGeometry:
    # Geometry only, never frame content: identical for every frame of a render.
    bw, bh = crop_size(src_w, src_h, out_w, out_h)
    background = Rect((src_w - bw) // 2, (src_h - bh) // 2, bw, bh)
    small = (max(2, out_w // PAD_SHRINK), max(2, out_h // PAD_SHRINK))
    return _PadGeometry(background, small, fit_rect(src_w, src_h, out_w, out_h))


def _u8(image: object) -> Frame:
    """cv2's result as a typed uint8 array (no copy: it already is one)."""
    return np.asarray(image, dtype=np.uint8)


def _area_by(image: Frame, k: int) -> Frame:
    """Box-average by the integer factor ``k`` (INTER_AREA's fast path; up to k-1 edge pixels dropped)."""
    h, w = image.shape[:2]
    cut = image[: h - h % k, : w - w % k]
    return _u8(cv2.resize(cut, (w // k, h // k), interpolation=cv2.INTER_AREA))


def _resize(image: Frame, w: int, h: int) -> Frame:
    """Scale to ``w`` x ``h``: bicubic up, bilinear down to half size, box-averaged first below that.

    INTER_AREA at a non-integer factor costs 6x bilinear (18 ms vs 3 ms for 1152x2048 to
    1080x1920 on one core); at factors of at least 0.5 bilinear's two taps still see every
    source pixel, so it does not alias, and stronger shrinks go through an integer box filter
    (INTER_AREA's fast path) first.
    """
    src_h, src_w = image.shape[:2]
    if (src_w, src_h) == (w, h):
        return image
    if w > src_w and h > src_h:
        # Growing (a 404x720 crop of 720p to 1080x1920): bicubic keeps edges sharper for +0.2 ms.
        return _u8(cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC))
    k = int(min(src_w / w, src_h / h))
    if k >= 2:
        image = _area_by(image, k)
    return _u8(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))


def _check(frame: Frame, plan: ReframePlan, i: int) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 BGR frame, got {frame.shape} {frame.dtype}")
    if plan.src_w and frame.shape[:2] != (plan.src_h, plan.src_w):
        raise ValueError(
            f"frame is {frame.shape[1]}x{frame.shape[0]}, the plan is for {plan.src_w}x{plan.src_h}"
        )
    if not 0 <= i < plan.num_frames:
        raise IndexError(f"output frame {i} is outside the plan's {plan.num_frames} frames")


def pad_frame(frame: Frame, out_w: int, out_h: int) -> Frame:
    """The whole ``frame`` fitted inside ``out_w`` x ``out_h`` over a blurred, darkened copy of itself."""
    src_h, src_w = frame.shape[:2]
    g = _pad_geometry(src_w, src_h, out_w, out_h)
    f = g.fit
    if (f.w, f.h) == (out_w, out_h):
        return np.ascontiguousarray(_resize(frame, out_w, out_h))  # same aspect: nothing to pad
    b = g.background
    # Every 4th pixel, then a 4x box average: the blur hides what the sparse sampling aliases,
    # and reading 1/16 of a 2048x2048 frame is what keeps this under a millisecond.
    sw, sh = g.small
    sparse = _u8(
        cv2.resize(frame[b.y : b.bottom, b.x : b.right], (4 * sw, 4 * sh), interpolation=cv2.INTER_NEAREST)
    )
    small = _area_by(sparse, 4)
    small = _u8(cv2.GaussianBlur(small, (0, 0), PAD_BLUR_SIGMA, borderType=cv2.BORDER_REFLECT))
    small = _u8(cv2.convertScaleAbs(small, alpha=PAD_DARKEN))
    out = _u8(cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_LINEAR))
    out[f.y : f.bottom, f.x : f.right] = _resize(frame, f.w, f.h)
    return out


def apply_reframe(frame: Frame, plan: ReframePlan, i: int) -> Frame:
    """Output frame ``i`` of ``plan`` (``out_h`` x ``out_w`` x 3 BGR) from rendered ``frame``.

    "native" returns ``frame`` itself (no copy); callers must not write into it.
    """
    _check(frame, plan, i)
    if plan.mode == "native":
        return frame
    if plan.mode == "pad":
        return pad_frame(frame, plan.out_w, plan.out_h)
    x, y, w, h = (int(v) for v in plan.rects[i])
    # A view: cv2 reads the region through its row stride, no copy of the crop.
    region = frame[y : y + h, x : x + w]
    out = _resize(region, plan.out_w, plan.out_h)
    return np.ascontiguousarray(out) if out is region else out
