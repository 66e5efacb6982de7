from __future__ import annotations

import cv2
import numpy as np
import pytest

from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.lipsync.mouth import MouthShape
from talkfactory.models.lipsync.warp import (
    CHIN,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LOWER_INNER_MID,
    MOUTH_CORNERS,
    UPPER_INNER_MID,
    MouthWarper,
    WarpConfig,
    backward_field,
    face_frame,
    region_box,
    seam_fractions,
    target_landmarks,
    warp_mouth,
)
from tests.fixtures.mouth import astronaut_bgr, astronaut_landmarks, inner_lip_gap

CFG = WarpConfig()


def _setup() -> tuple[np.ndarray, np.ndarray, object]:
    img = astronaut_bgr()
    points = astronaut_landmarks()
    return img, points, face_frame(points, img, (img.shape[1], img.shape[0]), CFG)


def _along(face: object, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(b - a, face.down))  # type: ignore[attr-defined]


def test_open_mouth_reaches_the_configured_gap() -> None:
    _, points, face = _setup()
    h = face.face_height
    assert face.template_gap / h == pytest.approx(0.065, abs=0.01)  # the astronaut smiles, teeth showing
    for openness, expected in (
        (1.0, CFG.max_gap),
        (0.0, CFG.rest_gap),
        (0.5, 0.5 * (CFG.max_gap + CFG.rest_gap)),
    ):
        t = target_landmarks(points, MouthShape(openness, 0.0), face, CFG)
        gap = _along(face, t.landmarks[UPPER_INNER_MID], t.landmarks[LOWER_INNER_MID])
        assert gap / h == pytest.approx(expected, abs=0.003)


def test_jaw_does_most_of_the_opening() -> None:
    _, points, face = _setup()
    t = target_landmarks(points, MouthShape(1.0, 0.0), face, CFG)
    rise = -_along(face, points[0].astype(float), t.landmarks[0])  # upper lip, top midpoint
    fall = _along(face, points[17].astype(float), t.landmarks[17])  # lower lip, bottom midpoint
    chin = _along(face, points[CHIN].astype(float), t.landmarks[CHIN])
    assert 0 < rise < 0.3 * fall
    assert 0.5 * fall < chin < fall
    still = np.setdiff1d(np.arange(478), t.moved)
    assert np.array_equal(t.landmarks[still], points[still].astype(np.float64))


def test_width_moves_the_corners() -> None:
    _, points, face = _setup()

    def mouth_width(width: float) -> float:
        t = target_landmarks(points, MouthShape(0.3, width), face, CFG)
        return float(np.dot(t.landmarks[MOUTH_CORNERS[1]] - t.landmarks[MOUTH_CORNERS[0]], face.right))

    neutral, wide, rounded = mouth_width(0.0), mouth_width(1.0), mouth_width(-1.0)
    assert wide / neutral == pytest.approx(1 + CFG.width_gain, abs=0.01)
    assert rounded / neutral == pytest.approx(1 - CFG.width_gain, abs=0.01)


def test_closing_never_crosses_the_lips() -> None:
    _, points, face = _setup()
    t = target_landmarks(points, MouthShape(0.0, 0.0), face, WarpConfig(rest_gap=0.0))
    upper, lower = t.landmarks[list(LIPS_INNER_UPPER)], t.landmarks[list(LIPS_INNER_LOWER)]
    gaps = (lower - upper) @ face.down
    assert (gaps[1:-1] > 0).all()
    assert t.seam_upper is None  # nothing opens, nothing to paint


def test_warp_is_local_exact_outside_the_mask_and_leaves_the_input_alone() -> None:
    img, points, face = _setup()
    before = img.copy()
    out = MouthWarper(CFG).warp(img, points, MouthShape(1.0, 0.5), face)
    assert np.array_equal(img, before)
    assert out.shape == img.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = face.roi
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = face.alpha == 0
    assert np.array_equal(out[outside], img[outside])
    changed = np.any(out != img, axis=2)
    assert changed.sum() > 2000  # it did do something
    assert region_box(points, (512, 512), CFG) == face.roi


def test_open_mouth_is_dark_inside() -> None:
    img, points, face = _setup()
    shape = MouthShape(1.0, 0.0)
    out = MouthWarper(CFG).warp(img, points, shape, face)
    t = target_landmarks(points, shape, face, CFG)
    assert t.seam_upper is not None and t.seam_lower is not None
    poly = np.concatenate((t.seam_upper, t.seam_lower[-2:0:-1]))
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], (1,))
    inside = mask.astype(bool)
    assert inside.sum() > 30
    luma = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    assert luma[inside].mean() < 70
    assert cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[inside].mean() > 120  # it was teeth before


def test_teeth_edge_found_for_each_lip_pair() -> None:
    img, points, _ = _setup()
    upper = points[list(LIPS_INNER_UPPER)].astype(np.float64)
    lower = points[list(LIPS_INNER_LOWER)].astype(np.float64)
    fractions = seam_fractions(img, upper, lower)
    # The smile shows upper teeth almost down to the lower lip: the mouth parts low.
    assert fractions[5] > 0.65
    flat = np.full_like(img, 128)
    assert np.allclose(seam_fractions(flat, upper, lower), 0.5)


def test_spline_interpolates_and_is_zero_for_no_motion() -> None:
    rng = np.random.default_rng(0)
    targets = rng.uniform(0, 100, (30, 2))
    sources = targets + rng.normal(0, 2, (30, 2))
    fx, fy = backward_field(targets, sources, targets[:, :1], targets[:, 1:], scale=100.0, regularization=0.0)
    assert np.allclose(fx[:, 0], sources[:, 0] - targets[:, 0], atol=1e-3)
    assert np.allclose(fy[:, 0], sources[:, 1] - targets[:, 1], atol=1e-3)
    gx, gy = np.meshgrid(np.linspace(0, 100, 7), np.linspace(0, 100, 5))
    zx, zy = backward_field(targets, targets, gx, gy, scale=100.0)
    assert np.abs(zx).max() < 1e-6 and np.abs(zy).max() < 1e-6


def test_rest_shape_on_a_rest_template_returns_the_image() -> None:
    img, points, face = _setup()
    config = WarpConfig(rest_gap=0.1)  # the template's own gap counts as rest
    out = MouthWarper(config).warp(img, points, MouthShape(0.0, 0.0))
    assert np.array_equal(out, img)


def test_tilted_face_opens_along_its_own_axis() -> None:
    img = astronaut_bgr()
    centre = (220.0, 140.0)
    tilted = cv2.warpAffine(img, cv2.getRotationMatrix2D(centre, 20.0, 1.0), (512, 512))
    with FaceMesher(static=True) as mesher:
        points = mesher.landmarks(tilted)
        assert points is not None
        face = face_frame(points, tilted, (512, 512), CFG)
        assert abs(face.down[0]) > 0.25  # the face axis really is tilted
        out = warp_mouth(tilted, points, MouthShape(1.0, 0.0))
        closed = warp_mouth(tilted, points, MouthShape(0.0, 0.0))
        opened_points, closed_points = mesher.landmarks(out), mesher.landmarks(closed)
    assert opened_points is not None and closed_points is not None
    assert inner_lip_gap(opened_points) > inner_lip_gap(closed_points) + 0.03


def test_face_at_the_picture_edge() -> None:
    img, points, _ = _setup()
    cut = np.ascontiguousarray(img[:190])  # chin and below cut off: the region is clipped
    moved = MouthWarper(CFG).warp(cut, points, MouthShape(1.0, 0.0))
    assert moved.shape == cut.shape
    assert not np.array_equal(moved, cut)


def test_cached_spline_matches_the_direct_solve() -> None:
    img, points, face = _setup()
    warper = MouthWarper(CFG)
    grid = warper.spline_grid(face)
    assert warper.spline_grid(face) is grid  # built once per frame geometry
    t = target_landmarks(points, MouthShape(0.8, 0.4), face, CFG)
    src, dst = points[t.moved].astype(np.float64), t.landmarks[t.moved]
    fx, fy = grid.field(dst, src)
    nodes = grid.grid * grid.scale
    gx, gy = nodes[:, 0].reshape(grid.shape), nodes[:, 1].reshape(grid.shape)
    rx, ry = backward_field(
        np.concatenate((dst, face.anchors)), np.concatenate((src, face.anchors)), gx, gy, face.face_height
    )
    assert np.abs(fx - rx).max() < 1e-3 and np.abs(fy - ry).max() < 1e-3
    assert np.abs(fy).max() > 1.0  # a real displacement, not two zero fields
