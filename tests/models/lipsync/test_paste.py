from __future__ import annotations

import cv2
import numpy as np

from talkfactory.models.lipsync.paste import (
    LOWER_FACE_POINTS,
    BoxPadding,
    crop_face,
    face_box,
    face_boxes,
    lower_face_mask,
    match_colour,
    paste_face,
)
from tests.fixtures.lipsync import synthetic_landmarks, synthetic_track


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 200, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def test_box_is_square_inside_the_image_and_reaches_below_the_chin():
    pts = synthetic_landmarks(cx=320, cy=200, a=60, b=80)
    x0, y0, x1, y1 = face_box(pts, 640, 480)
    assert x1 - x0 == y1 - y0
    assert 0 <= x0 and 0 <= y0 and x1 <= 640 and y1 <= 480
    assert x0 <= pts[:, 0].min() and x1 >= pts[:, 0].max() and y0 <= pts[:, 1].min()
    chin, face_h = pts[152, 1], pts[:, 1].max() - pts[:, 1].min()
    assert y1 >= chin + 0.1 * face_h - 1
    # Without bottom padding the box ends at the chin.
    _, _, _, y1_plain = face_box(pts, 640, 480, BoxPadding(bottom=0.0))
    assert y1_plain < y1


def test_box_near_the_border_or_larger_than_the_image_stays_inside():
    pts = synthetic_landmarks(cx=20, cy=110, a=40, b=70)  # partly off the left edge and the bottom
    x0, y0, x1, y1 = face_box(pts, 160, 120)
    assert (x0, y0) >= (0, 0) and x1 <= 160 and y1 <= 120 and x1 - x0 == y1 - y0
    huge = synthetic_landmarks(cx=80, cy=60, a=200, b=300)
    assert face_box(huge, 160, 120) == (20, 0, 140, 120)


def test_face_boxes_mark_absent_frames():
    track = synthetic_track(frames=5, absent=(1, 3))
    boxes = face_boxes(track.landmarks, track.present, track.width, track.height)
    assert boxes.shape == (5, 4) and boxes.dtype == np.int32
    assert (boxes[[1, 3]] == -1).all() and (boxes[[0, 2, 4]] >= 0).all()


def test_crop_face_size_and_dtype():
    img = _texture(120, 160)
    crop = crop_face(img, (10, 5, 110, 105), 96)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    small = crop_face(img, (10, 5, 50, 45), 96)  # upscaling path
    assert small.shape == (96, 96, 3)


def test_mask_is_feathered_with_no_edge_and_covers_the_lower_face():
    pts = synthetic_landmarks(cx=320, cy=200, a=60, b=80)
    box = face_box(pts, 640, 480)
    mask = lower_face_mask(pts, box)
    h, w = box[3] - box[1], box[2] - box[0]
    assert mask.shape == (h, w) and mask.dtype == np.float32
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert border.max() == 0.0
    mouth = (320 - box[0], 200 + 0.5 * 80 - box[1])  # where the fixture puts the lips
    assert mask[int(mouth[1]), int(mouth[0])] > 0.95
    assert mask[int(0.2 * h)].max() < 0.05  # the upper face (eyes) is not pasted
    # Feathered: no step between neighbouring pixels anywhere (a hard edge would jump by 1).
    step = max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max())
    assert step < 0.2
    hull_pts = pts[list(LOWER_FACE_POINTS)] - (box[0], box[1])
    assert hull_pts[:, 1].min() > 0.3 * h


def test_paste_leaves_everything_outside_the_box_bit_identical():
    img = _texture(240, 320, seed=1)
    pts = synthetic_landmarks(cx=160, cy=110, a=50, b=70)
    box = face_box(pts, 320, 240)
    face = np.full((96, 96, 3), 250, dtype=np.uint8)
    out = paste_face(img, face, box, pts)
    x0, y0, x1, y1 = box
    outside = np.ones(img.shape[:2], dtype=bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], img[outside])
    assert np.array_equal(out[y0, x0:x1], img[y0, x0:x1])  # the box's own border too: weight 0
    assert np.array_equal(out[y1 - 1, x0:x1], img[y1 - 1, x0:x1])
    assert (out[y0:y1, x0:x1] != img[y0:y1, x0:x1]).any()
    assert out is not img and np.array_equal(img, _texture(240, 320, seed=1))  # input untouched
    inplace = img.copy()
    assert paste_face(inplace, face, box, pts, out=inplace) is inplace


def test_colour_matching_removes_most_of_a_tint():
    pts = synthetic_landmarks(cx=160, cy=110, a=50, b=70)
    box = face_box(pts, 320, 240)
    x0, y0, x1, y1 = box
    img = _texture(240, 320, seed=2)
    original = img[y0:y1, x0:x1]
    # What the model gives back: the same face with a colour cast (blue up, red down).
    tinted = np.clip(original.astype(np.int16) + np.array([28, 4, -22]), 0, 255).astype(np.uint8)
    face = cv2.resize(tinted, (96, 96), interpolation=cv2.INTER_AREA)
    mask = lower_face_mask(pts, box)
    region = mask > 0.5

    def mean_error(out: np.ndarray) -> float:
        diff = out[y0:y1, x0:x1].astype(np.float64) - img[y0:y1, x0:x1]
        return float(np.abs(diff[region].mean(axis=0)).sum())

    plain = mean_error(paste_face(img, face, box, pts, colour_match=False))
    matched = mean_error(paste_face(img, face, box, pts, colour_match=True))
    assert plain > 40
    assert matched < 0.25 * plain


def test_match_colour_leaves_a_tiny_mask_alone():
    gen = np.full((20, 20, 3), 100.0, dtype=np.float32)
    ref = np.full((20, 20, 3), 50, dtype=np.uint8)
    mask = np.zeros((20, 20), dtype=np.float32)
    assert match_colour(gen, ref, mask) is gen
