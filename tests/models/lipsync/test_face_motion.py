"""Eye, brow and head warps on the real portrait, measured with the face mesh; the animator's stream."""

from __future__ import annotations

import numpy as np
import pytest

from talkfactory.models.audio import ArrayAudio
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.lipsync.eyes import EyeConfig, eye_aspect_ratio, eyes_geometry, warp_eyes
from talkfactory.models.lipsync.face_motion import FaceAnimator
from talkfactory.models.lipsync.head import (
    FACE_SIDES,
    NOSE_TIP,
    HeadConfig,
    head_geometry,
    head_maps,
    head_mask,
    warp_head,
)
from talkfactory.models.lipsync.liveliness import Pose
from tests.fixtures.mouth import RATE, astronaut_bgr, astronaut_landmarks, syllables

CFG = EyeConfig()
HEAD = HeadConfig()
SIZE = (512, 512)


@pytest.fixture(scope="module")
def mesher():
    with FaceMesher(static=True) as m:
        yield m


def test_a_shut_blink_reads_as_closed_eyes_to_the_mesh(mesher: FaceMesher) -> None:
    img, pts = astronaut_bgr(), astronaut_landmarks()
    eyes = eyes_geometry(pts, SIZE, CFG)
    assert len(eyes) == 2
    open_ear = eye_aspect_ratio(mesher.landmarks(img))
    ears = [eye_aspect_ratio(mesher.landmarks(warp_eyes(img, eyes, Pose(blink=c), CFG))) for c in (0.5, 1.0)]
    assert open_ear > 0.25
    assert ears[0] < 0.85 * open_ear
    assert ears[1] < 0.55 * open_ear, (open_ear, ears)


def test_eye_warp_touches_only_the_eye_regions() -> None:
    img, pts = astronaut_bgr(), astronaut_landmarks()
    eyes = eyes_geometry(pts, SIZE, CFG)
    assert np.array_equal(warp_eyes(img, eyes, Pose(), CFG), img)
    out = warp_eyes(img, eyes, Pose(blink=1.0, brow=0.03), CFG)
    inside = np.zeros(img.shape[:2], dtype=bool)
    for g in eyes:
        x0, y0, x1, y1 = g.roi
        inside[y0:y1, x0:x1] = True
    assert not np.array_equal(out[inside], img[inside])
    assert np.array_equal(out[~inside], img[~inside])


def test_a_brow_raise_lifts_the_brows_and_keeps_the_eyes_open(mesher: FaceMesher) -> None:
    img, pts = astronaut_bgr(), astronaut_landmarks()
    eyes = eyes_geometry(pts, SIZE, CFG)
    before = mesher.landmarks(img)
    after = mesher.landmarks(warp_eyes(img, eyes, Pose(brow=0.03), CFG))
    brows = [105, 66, 334, 296]  # brow tops, both sides
    lift = float(np.mean(before[brows, 1] - after[brows, 1]))
    face_h = float(np.linalg.norm(pts[152] - pts[10]))
    assert lift > 0.01 * face_h, (lift, face_h)
    assert eye_aspect_ratio(after) == pytest.approx(eye_aspect_ratio(before), rel=0.15)


def test_head_roll_moves_the_nose_and_leaves_the_background(mesher: FaceMesher) -> None:
    img, pts = astronaut_bgr(), astronaut_landmarks()
    head = head_geometry(pts, SIZE, HEAD)
    assert head is not None
    assert np.array_equal(warp_head(img, head, Pose()), img)
    out = warp_head(img, head, Pose(roll_deg=2.0, shift_x=0.01))
    before, after = mesher.landmarks(img), mesher.landmarks(out)
    width = float(np.linalg.norm(before[FACE_SIDES[1]] - before[FACE_SIDES[0]]))
    moved = float(np.linalg.norm(after[NOSE_TIP] - before[NOSE_TIP])) / width
    # About 2 deg about a pivot roughly a face height below the nose, plus 1 % of the face height.
    assert 0.01 < moved < 0.06, moved
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float64)
    # The falloff ends at elliptical radius 1.4; the coarse grid the field is evaluated on blurs that
    # edge by one grid step, so "away from the head" here starts at 1.55.
    still = head_mask(xs, ys, pts, HeadConfig(falloff=HEAD.falloff + 0.15)) == 0.0
    assert still.mean() > 0.5
    assert np.array_equal(out[still], img[still]), "pixels outside the head's falloff must not change"


def test_head_map_is_continuous_so_nothing_tears() -> None:
    pts = astronaut_landmarks()
    head = head_geometry(pts, SIZE, HEAD)
    assert head is not None
    map_x, map_y = head_maps(head, Pose(roll_deg=2.0, shift_x=0.02, shift_y=-0.02))
    x0, y0, x1, y1 = head.roi
    dx = map_x - np.arange(x0, x1)[None, :]
    dy = map_y - np.arange(y0, y1)[:, None]
    # Neighbouring pixels sample within half a pixel of their own spacing: the background next to the
    # head stretches or squeezes a little, but the map never jumps (a tear) or turns back (a fold).
    for d in (dx, dy):
        assert np.abs(np.diff(d, axis=0)).max() < 0.5
        assert np.abs(np.diff(d, axis=1)).max() < 0.5
    # The ROI's border does not move at all where it lies inside the picture: the warp fades out within
    # it (at the picture's own edge the hair may move; remap repeats the edge pixels there).
    for d in (dx, dy):
        if y0 > 0:
            assert np.abs(d[0]).max() == 0.0
        if y1 < 512:
            assert np.abs(d[-1]).max() == 0.0
        if x0 > 0:
            assert np.abs(d[:, 0]).max() == 0.0
        if x1 < 512:
            assert np.abs(d[:, -1]).max() == 0.0
    assert (x0 > 0) + (y1 < 512) + (x1 < 512) >= 2


def _still_track() -> FaceTrack:
    pts = astronaut_landmarks()
    return FaceTrack("astro", 512, 512, 25.0, pts[None].copy(), np.array([True]), is_still=True)


def test_animator_is_deterministic_per_seed_and_moves_the_face() -> None:
    img = astronaut_bgr()
    img.setflags(write=False)  # like a still's template frame, shared by every output frame
    audio = ArrayAudio(syllables(250, 25.0, period=25, on=15), RATE)

    def run(seed: int) -> tuple[list[np.ndarray], list[Pose]]:
        animator = FaceAnimator(_still_track(), audio, 25.0, "lively", seed)
        animator.poses = []
        return [animator.apply(0, img) for _ in range(250)], animator.poses

    a, poses = run(1)
    b, _ = run(1)
    c, _ = run(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert sum(p.blink > 0.5 for p in poses) >= 1  # 10 s: at least one blink
    assert any(not np.array_equal(f, img) for f in a)


def test_animator_changes_a_writeable_frame_in_place_and_copies_a_shared_one() -> None:
    audio = ArrayAudio(syllables(50, 25.0), RATE)
    animator = FaceAnimator(_still_track(), audio, 25.0, "lively", 0)
    shared = astronaut_bgr()
    shared.setflags(write=False)
    own = astronaut_bgr()
    out = animator.apply(0, shared)
    assert out is not shared and np.array_equal(shared, astronaut_bgr())
    assert not np.array_equal(out, shared)  # the head moves from the first frame
    assert animator.apply(0, own) is own and not np.array_equal(own, astronaut_bgr())


def test_animator_passes_frames_without_a_face() -> None:
    track = _still_track()
    track = FaceTrack("x", 512, 512, 25.0, np.full((1, 478, 2), np.nan, np.float32), np.array([False]))
    animator = FaceAnimator(track, ArrayAudio(np.zeros(RATE, np.float32), RATE), 25.0, "lively", 0)
    img = astronaut_bgr()
    assert all(animator.apply(0, img) is img for _ in range(30))
    with pytest.raises(ValueError, match="other than 'off'"):
        FaceAnimator(track, ArrayAudio(np.zeros(10, np.float32), RATE), 25.0, "off", 0)
