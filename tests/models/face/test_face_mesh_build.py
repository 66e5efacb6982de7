from __future__ import annotations

import cv2
import numpy as np
import pytest

from talkfactory.errors import InvalidMediaError, NoFaceError
from talkfactory.models.face.build import build_face_track
from talkfactory.models.face.mesh import FaceMesher, outside_fraction, usable_landmarks
from talkfactory.models.face.track import MESH_POINTS, FaceTrack
from tests.fixtures.mouth import astronaut_bgr


def _coffee() -> np.ndarray:
    from skimage import data

    img = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(cv2.resize(img, (512, 512)))


def _gradient() -> np.ndarray:
    ramp = np.linspace(0, 255, 512, dtype=np.float32)
    img = np.stack([np.tile(ramp, (512, 1)), np.tile(ramp[:, None], (1, 512)), np.full((512, 512), 128)], -1)
    return img.astype(np.uint8)


def test_mesher_finds_the_portrait_face() -> None:
    with FaceMesher(static=True) as mesher:
        points = mesher.landmarks(astronaut_bgr())
    assert points is not None
    assert points.shape == (MESH_POINTS, 2) and points.dtype == np.float32
    # The astronaut's face sits left of centre in the upper half of the picture.
    chin, forehead = points[152], points[10]
    assert 150 < chin[0] < 300 and 150 < chin[1] < 220
    assert 40 < forehead[1] < 110
    assert 80 < np.linalg.norm(chin - forehead) < 140


def test_mesher_sees_no_face_in_coffee_or_a_gradient() -> None:
    with FaceMesher(static=True) as mesher:
        assert mesher.landmarks(_coffee()) is None
        assert mesher.landmarks(_gradient()) is None


def test_face_leaving_the_frame_is_rejected() -> None:
    img = astronaut_bgr()
    # Keep only the picture above the mouth: the mesh would have to extrapolate the whole lower face.
    cut = np.ascontiguousarray(img[:135])
    with FaceMesher(static=True) as mesher:
        assert mesher.landmarks(cut) is None


def test_outside_rules() -> None:
    pts = np.zeros((MESH_POINTS, 2), np.float32) + 50
    assert outside_fraction(pts, 100, 100) == 0.0
    assert usable_landmarks(pts, 100, 100, 0.2)
    pts[:200, 0] = -5  # 42 % of the points left of the frame
    assert not usable_landmarks(pts, 100, 100, 0.2)
    pts = np.zeros((MESH_POINTS, 2), np.float32) + 50
    pts[14, 1] = 120  # only the lower lip below the frame: still unusable
    assert not usable_landmarks(pts, 100, 100, 0.2)


def test_mesher_must_be_opened() -> None:
    with pytest.raises(RuntimeError):
        FaceMesher().landmarks(astronaut_bgr())


def test_build_still_track() -> None:
    track = build_face_track(
        [astronaut_bgr()], content_hash="abc", fps=25.0, width=512, height=512, is_still=True
    )
    assert isinstance(track, FaceTrack)
    assert track.is_still and track.num_frames == 1 and track.present.tolist() == [True]
    assert track.landmarks.shape == (1, MESH_POINTS, 2)
    assert np.isfinite(track.landmarks).all()
    again = FaceTrack.from_bytes(track.to_bytes())
    assert np.array_equal(again.landmarks, track.landmarks)


def test_build_video_marks_absent_frames() -> None:
    face, other = astronaut_bgr(), _coffee()
    frames = [face, face, other, other, other, other, other, face, face]
    track = build_face_track(
        iter(frames), content_hash="vid", fps=25.0, width=512, height=512, is_still=False, max_gap_frames=3
    )
    assert track.present.tolist() == [True, True, False, False, False, False, False, True, True]
    assert np.isnan(track.landmarks[2:7]).all()
    assert np.isfinite(track.landmarks[track.present]).all()
    assert track.face_ratio == pytest.approx(4 / 9)


def test_build_fills_a_one_frame_dropout() -> None:
    face, other = astronaut_bgr(), _coffee()
    with FaceMesher(static=True) as mesher:
        track = build_face_track(
            [face, other, face],
            content_hash="vid",
            fps=25.0,
            width=512,
            height=512,
            is_still=False,
            mesher=mesher,
        )
    assert track.present.all()
    assert np.abs(track.landmarks[1] - track.landmarks[0]).max() < 1e-3


def test_no_face_anywhere_raises_with_subject() -> None:
    with pytest.raises(NoFaceError) as err:
        build_face_track(
            [_coffee(), _gradient()], content_hash="h123", fps=25.0, width=512, height=512, is_still=False
        )
    assert err.value.subject == "h123"
    with pytest.raises(NoFaceError) as err:
        build_face_track(
            [_gradient()], content_hash="h", fps=25.0, width=512, height=512, is_still=True, subject="me.png"
        )
    assert err.value.subject == "me.png"


def test_wrong_frame_size_and_no_frames() -> None:
    with pytest.raises(InvalidMediaError):
        build_face_track([astronaut_bgr()], content_hash="x", fps=25, width=640, height=512, is_still=True)
    with pytest.raises(InvalidMediaError):
        build_face_track([], content_hash="x", fps=25, width=512, height=512, is_still=True)
