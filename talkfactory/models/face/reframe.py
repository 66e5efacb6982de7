"""Reframing a render to another shape: a crop that follows the face, or the whole frame padded.

Pure maths over the avatar's face track (no frames, no second detector). The crop path is
computed once per template row, then indexed by the rows the render shows, so a plan for a
one-hour render (90k output frames over a short ping-pong template) costs what the template
costs, and a template frame always gets the same crop wherever it appears (parts of one
render agree). Smoothing over the template's rows with mirrored ends equals smoothing over
the ping-pong output, whose playback mirrors at the ends too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import ConfigurationError
from talkfactory.models.face.track import FaceTrack

Mode = Literal["native", "crop", "pad"]


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h


@dataclass(frozen=True, eq=False)
class ReframePlan:
    """How every output frame of one variant is cut from the rendered frame.

    ``rects[i]`` is the source rectangle (x, y, w, h) for output frame ``i``. In "crop" mode it
    has the output's aspect and is scaled to ``out_w`` x ``out_h``; in "pad" and "native" modes
    it is the whole source frame (pad: scaled to fit inside the output over a blurred, darkened
    copy of itself; native: passed through).
    """

    out_w: int
    out_h: int
    mode: Mode
    rects: NDArray[np.int32]
    upscaled: bool
    """The source region is smaller than the output in either dimension (worth saying in the manifest)."""
    reason: str
    src_w: int = 0
    """Size of the frames the plan applies to (0: not recorded)."""
    src_h: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.rects.shape[0])

    def rect(self, i: int) -> Rect:
        x, y, w, h = (int(v) for v in self.rects[i])
        return Rect(x, y, w, h)

    @property
    def crop(self) -> Rect:
        """The first frame's source rectangle (all have this size; only crops move)."""
        return self.rect(0)

    @property
    def fit(self) -> Rect:
        """Where the whole source frame lands in the output in "pad" mode (the full output otherwise)."""
        if self.mode != "pad":
            return Rect(0, 0, self.out_w, self.out_h)
        src = self.crop
        return fit_rect(src.w, src.h, self.out_w, self.out_h)

    def params(self) -> dict[str, str | int | bool]:
        """The variant parameters for lineage and the manifest (JSON-ready)."""
        src = self.crop
        return {
            "mode": self.mode,
            "out_w": self.out_w,
            "out_h": self.out_h,
            "src_w": self.src_w or src.w,
            "src_h": self.src_h or src.h,
            "crop_w": src.w,
            "crop_h": src.h,
            "upscaled": self.upscaled,
            "reason": self.reason,
        }


def even(v: float) -> int:
    """Nearest even integer, at least 2 (x264 and yuv420p need even sizes)."""
    return max(2, int(round(v / 2.0)) * 2)


def crop_size(src_w: int, src_h: int, out_w: int, out_h: int) -> tuple[int, int]:
    """The largest even-sized crop of the source with the output's aspect (no needless zoom)."""
    aspect = out_w / out_h
    max_w, max_h = src_w - src_w % 2, src_h - src_h % 2
    if src_w / src_h >= aspect:
        return min(max_w, even(max_h * aspect)), max_h
    return max_w, min(max_h, even(max_w / aspect))


def fit_rect(src_w: int, src_h: int, out_w: int, out_h: int) -> Rect:
    """The whole source scaled to fit inside the output, centred, even-sized."""
    scale = min(out_w / src_w, out_h / src_h)
    w = min(out_w, even(src_w * scale))
    h = min(out_h, even(src_h * scale))
    return Rect((out_w - w) // 2, (out_h - h) // 2, w, h)


def _full_frame(n: int, src_w: int, src_h: int) -> NDArray[np.int32]:
    # A read-only broadcast: 90k identical rows cost one row of memory.
    return np.broadcast_to(np.array([0, 0, src_w, src_h], dtype=np.int32), (n, 4))


def _face_boxes(track: FaceTrack, sx: float, sy: float) -> NDArray[np.float64]:
    """(T, 4) face boxes (x0, y0, x1, y1) in source pixels; absent rows hold the last present box."""
    present = track.present
    # Reductions over one coordinate's column view at a time: reducing (T, 478, 2) over axis 1
    # directly walks memory in pairs and is 25x slower (1.2 s vs 45 ms for 90k rows). Absent
    # rows give NaN and are replaced by the held box below.
    xs, ys = track.landmarks[:, :, 0], track.landmarks[:, :, 1]
    boxes = np.stack(
        (xs.min(axis=1) * sx, ys.min(axis=1) * sy, xs.max(axis=1) * sx, ys.max(axis=1) * sy), axis=1
    )
    boxes = boxes.astype(np.float64)
    last = np.where(present, np.arange(track.num_frames), -1)
    last = np.maximum.accumulate(last)
    last[last < 0] = int(np.argmax(present))  # before the first face: hold the first one
    held: NDArray[np.float64] = boxes[last]
    return held


def _cut_starts(centres: NDArray[np.float64], limit: float, window: int = 4) -> NDArray[np.bool_]:
    """True at rows where a new shot starts: the face centre jumps more than ``limit`` pixels.

    The track is already smoothed over ~3 frames, which spreads a cut's jump over a few rows;
    a head cannot move ``limit`` within ``window`` rows, so a displacement over that window
    flags a cut, placed at the largest single step inside each flagged stretch.
    """
    n = centres.shape[0]
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    if n < 2:
        return starts
    step = np.hypot(*np.diff(centres, axis=0).T)  # step[t]: row t -> t + 1
    k = min(window, n - 1)
    span = np.hypot(*(centres[k:] - centres[:-k]).T)  # span[t]: row t -> t + k
    flagged = np.zeros(n - 1, dtype=bool)
    for j in np.flatnonzero(span > limit):
        flagged[j : j + k] = True
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flagged.astype(np.int8), [0]))))
    for a, b in zip(edges[0::2], edges[1::2], strict=True):
        starts[a + int(np.argmax(step[a:b])) + 1] = True
    return starts


def _segments(starts: NDArray[np.bool_]) -> list[tuple[int, int]]:
    idx = np.flatnonzero(starts).tolist() + [starts.size]
    return list(zip(idx[:-1], idx[1:], strict=True))


def _moving_average(values: NDArray[np.float64], radius: int) -> NDArray[np.float64]:
    """Centred moving average with mirrored ends (what a ping-pong playback shows at the turns)."""
    n = values.shape[0]
    if radius <= 0 or n < 2:
        return values.copy()
    r = min(radius, n - 1)
    padded = np.pad(values, ((r, r),) + ((0, 0),) * (values.ndim - 1), mode="reflect")
    c = np.cumsum(padded, axis=0)
    c = np.concatenate((np.zeros((1,) + values.shape[1:]), c))
    out: NDArray[np.float64] = (c[2 * r + 1 :] - c[: -(2 * r + 1)]) / (2 * r + 1)
    return out


def _dead_zone(values: NDArray[np.float64], zone: float, starts: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Hold the position until the target leaves ``zone`` around it, then follow at its edge.

    Sequential by nature (hysteresis), so a loop over plain floats: one per TEMPLATE row, not
    per output frame (~0.3 us each).
    """
    out = np.empty_like(values)
    p = 0.0
    for t, (v, s) in enumerate(zip(values.tolist(), starts.tolist(), strict=True)):
        if s:
            p = v
        elif v > p + zone:
            p = v - zone
        elif v < p - zone:
            p = v + zone
        out[t] = p
    return out


def _follow(
    centre: NDArray[np.float64],
    lo: NDArray[np.float64],
    hi: NDArray[np.float64],
    *,
    size: int,
    src: int,
    starts: NDArray[np.bool_],
    radius: int,
    zone: float,
    margin: NDArray[np.float64],
) -> NDArray[np.int32]:
    """Left (or top) edge of the crop per template row along one axis, even and inside the frame."""
    room = src - size
    if room <= 0:
        return np.zeros(centre.shape[0], dtype=np.int32)
    smooth = np.empty_like(centre)
    for a, b in _segments(starts):
        smooth[a:b] = _moving_average(centre[a:b], radius)
    held = _dead_zone(smooth, zone, starts)
    edge = held - size / 2.0
    # The dead zone may lag a fast move: never let that lag push the face out of the crop.
    edge = np.minimum(np.maximum(edge, hi + margin - size), lo - margin)
    edge = np.clip(np.round(edge / 2.0) * 2.0, 0, room - room % 2)
    return np.asarray(edge, dtype=np.int32)


def plan_reframe(
    track: FaceTrack,
    rows: Sequence[int] | NDArray[np.integer[Any]],
    *,
    out_w: int,
    out_h: int,
    src_w: int | None = None,
    src_h: int | None = None,
    smooth_s: float = 0.4,
    dead_zone: float = 0.05,
    cut_jump: float = 0.25,
    margin: float = 0.1,
    max_widen: float = 2.0,
    max_offset: float = 0.3,
) -> ReframePlan:
    """Plan a ``out_w`` x ``out_h`` variant of a render whose output frame ``i`` shows track row ``rows[i]``.

    ``src_w`` x ``src_h`` is the rendered frame size (default: the track's; landmarks are scaled
    when it differs). The crop has the output's aspect and is as large as the source allows; its
    centre follows the face box (a centred moving average over ``smooth_s`` seconds of the
    template, a dead zone of ``dead_zone`` x crop size, restarting where the face centre jumps more
    than ``cut_jump`` x source width: a cut). "pad" instead when the output is more than
    ``max_widen`` times wider (in aspect) than the source -- a landscape strip out of a portrait
    cuts the speaker's head or body -- when the face box with ``margin`` (share of its size, each
    side) does not fit the crop, when the face is so near the frame's edge that the clamped crop
    leaves its centre more than ``max_offset`` x crop size off the crop's centre, or when no
    shown row has a face.
    """
    if out_w < 2 or out_h < 2:
        raise ConfigurationError(f"output size {out_w}x{out_h} is too small to reframe to")
    sw = track.width if src_w is None else src_w
    sh = track.height if src_h is None else src_h
    if sw < 2 or sh < 2:
        raise ValueError(f"source size {sw}x{sh} is too small")
    rows_a = np.asarray(rows, dtype=np.int64)
    if rows_a.ndim != 1:
        raise ValueError(f"rows must be one-dimensional, got shape {rows_a.shape}")
    n = rows_a.shape[0]
    if n and (rows_a.min() < 0 or rows_a.max() >= track.num_frames):
        raise ValueError(f"rows must lie in [0, {track.num_frames}), got [{rows_a.min()}, {rows_a.max()}]")

    def pad(reason: str) -> ReframePlan:
        fit = fit_rect(sw, sh, out_w, out_h)
        upscaled = fit.w > sw or fit.h > sh
        return ReframePlan(out_w, out_h, "pad", _full_frame(n, sw, sh), upscaled, reason, sw, sh)

    if (out_w, out_h) == (sw, sh):
        return ReframePlan(
            out_w, out_h, "native", _full_frame(n, sw, sh), False, "output size equals the source", sw, sh
        )
    widen = (out_w / out_h) / (sw / sh)
    if widen > max_widen:
        return pad(
            f"a {out_w}x{out_h} frame is {widen:.1f}x wider in aspect than the {sw}x{sh} source; "
            "a crop would cut the speaker"
        )
    cw, ch = crop_size(sw, sh, out_w, out_h)
    shown = np.unique(rows_a)
    if not track.present[shown].any():
        return pad("no face in the frames shown")
    boxes = _face_boxes(track, sw / track.width, sh / track.height)
    size = boxes[:, 2:4] - boxes[:, 0:2]
    need = size * (1.0 + 2.0 * margin)
    shown_faces = shown[track.present[shown]]
    worst = need[shown_faces].max(axis=0)
    if worst[0] > cw or worst[1] > ch:
        return pad(
            f"the face with margin ({worst[0]:.0f}x{worst[1]:.0f} px) does not fit "
            f"a {cw}x{ch} crop of the source"
        )
    centres = (boxes[:, 0:2] + boxes[:, 2:4]) / 2.0
    starts = _cut_starts(centres, cut_jump * sw)
    radius = max(0, int(round(smooth_s * track.fps / 2.0)))
    edge_margin = size * margin
    xs = _follow(
        centres[:, 0], boxes[:, 0], boxes[:, 2], size=cw, src=sw, starts=starts, radius=radius,
        zone=dead_zone * cw, margin=edge_margin[:, 0],
    )  # fmt: skip
    ys = _follow(
        centres[:, 1], boxes[:, 1], boxes[:, 3], size=ch, src=sh, starts=starts, radius=radius,
        zone=dead_zone * ch, margin=edge_margin[:, 1],
    )  # fmt: skip
    # Rows next to a cut are left out: the track's own smoothing smears the face across the
    # cut there, so their centres sit between the two shots.
    settled = np.ones(track.num_frames, dtype=bool)
    for c in np.flatnonzero(starts[1:]) + 1:
        settled[max(0, c - 2) : c + 2] = False
    judged = shown_faces[settled[shown_faces]] if settled[shown_faces].any() else shown_faces
    off = np.maximum(
        np.abs(centres[judged, 0] - (xs[judged] + cw / 2.0)) / cw,
        np.abs(centres[judged, 1] - (ys[judged] + ch / 2.0)) / ch,
    ).max()
    if off > max_offset:
        return pad(
            f"the face is too near the frame's edge: a {cw}x{ch} crop would hold it "
            f"{100 * off:.0f}% of the crop off centre (limit {100 * max_offset:.0f}%)"
        )
    per_row = np.empty((track.num_frames, 4), dtype=np.int32)
    per_row[:, 0], per_row[:, 1], per_row[:, 2], per_row[:, 3] = xs, ys, cw, ch
    cuts = int(starts[1:].sum())
    return ReframePlan(
        out_w,
        out_h,
        "crop",
        per_row[rows_a],
        cw < out_w or ch < out_h,
        f"{cw}x{ch} crop following the face ({cuts} cut(s) in the template)",
        sw,
        sh,
    )
