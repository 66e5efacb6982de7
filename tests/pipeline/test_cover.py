"""Cover frames: chosen from the track and the speech energy, checked by the mesh on the picture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from talkfactory.models.face.reframe import plan_reframe
from talkfactory.models.face.reframe_frames import apply_reframe
from talkfactory.models.face.track import FaceTrack
from talkfactory.pipeline.exports.cover import (
    EYES,
    EYES_OPEN_EAR,
    check_cover,
    choose_cover_frames,
    eye_aspect_ratio,
    mouth_gap,
    write_cover,
)
from tests.fixtures.mouth import astronaut_bgr, astronaut_landmarks
from tests.models.test_reframe import face_right_of_centre_frames, ping_pong_rows, write_template

FPS = 25.0


def close_eyes(points: NDArray[np.float32]) -> NDArray[np.float32]:
    """The same face with both upper lids down on the lower ones (eye aspect ratio ~0)."""
    out = points.copy()
    for _, p2, p3, _, p5, p6 in EYES:
        out[p2], out[p3] = points[p6], points[p5]
    return out


def astronaut_track(n: int, shift: NDArray[Any] | None = None, closed: slice | None = None) -> FaceTrack:
    """``n`` rows of the astronaut's mesh (512x512), optionally shifted per row, eyes shut in ``closed``."""
    base = astronaut_landmarks()
    rows = np.repeat(base[None], n, axis=0).astype(np.float32)
    if shift is not None:
        rows += shift[:, None, :].astype(np.float32)
    if closed is not None:
        for i in range(*closed.indices(n)):
            rows[i] = close_eyes(rows[i])
    return FaceTrack("synthetic", 512, 512, FPS, rows, np.ones(n, dtype=bool))


def test_eye_and_mouth_measures_on_the_portrait() -> None:
    points = astronaut_landmarks()
    assert float(eye_aspect_ratio(points)) > EYES_OPEN_EAR + 0.05
    assert float(eye_aspect_ratio(close_eyes(points))) < 0.05
    assert 0.0 < float(mouth_gap(points)) < 0.08
    both = np.stack((points, close_eyes(points)))
    assert eye_aspect_ratio(both).shape == (2,)


def test_candidates_are_quiet_eyes_open_away_from_the_ends_and_spaced() -> None:
    n = 250  # 10 s
    track = astronaut_track(n, closed=slice(100, 140))
    energy = np.full(n, 1.0)
    energy[110:130] = 0.01  # a pause, but the eyes are shut there
    energy[180:200] = 0.0  # a pause with open eyes: the best place
    energy[0:12] = 0.0  # a pause in the first 0.5 s: never a cover
    chosen = choose_cover_frames(track, np.arange(n), energy, FPS, count=5)
    assert len(chosen) == 5
    assert 180 + 5 <= chosen[0] < 200 - 5  # inside the pause, away from the loud edges (0.2 s)
    assert all(12 <= i < n - 12 for i in chosen)
    assert all(abs(a - b) >= 25 for a in chosen for b in chosen if a != b)
    assert not any(100 <= i < 140 for i in chosen[:1])
    # Energy sampled coarser than the frames is spread over them.
    coarse = choose_cover_frames(track, np.arange(n), energy[::5], FPS, count=1)
    assert 180 <= coarse[0] < 200


def test_a_face_outside_the_crop_or_too_near_the_edge_is_not_first() -> None:
    n = 200
    shift = np.zeros((n, 2))
    shift[:100, 0] = 236  # face box 415..507 of 512: closer than 10 % of its size to the edge
    track = astronaut_track(n, shift=shift)
    energy = np.ones(n)
    energy[40:60] = 0.0  # quiet, but the face touches the edge there
    energy[150:170] = 0.2
    chosen = choose_cover_frames(track, np.arange(n), energy, FPS, count=3)
    assert 100 <= chosen[0] < n
    # Without a face nowhere is a cover; out-of-range rows are refused.
    empty = FaceTrack("x", 512, 512, FPS, np.full((5, 478, 2), np.nan, np.float32), np.zeros(5, bool))
    assert choose_cover_frames(empty, np.arange(5), None, FPS) == []
    with pytest.raises(ValueError, match="rows must lie"):
        choose_cover_frames(track, [n], None, FPS)


def test_check_cover_on_a_portrait_and_on_no_face() -> None:
    good = check_cover(astronaut_bgr())
    assert good.face and good.eyes_open and good.mouth_closed and good.passed and good.score > 0.8
    blank = check_cover(np.full((512, 512, 3), 120, np.uint8))
    assert not blank.face and not blank.passed and blank.score == 0.0
    # The head cut at the frame's left edge: no face with margin.
    cut = np.ascontiguousarray(astronaut_bgr()[:, 190:])
    assert not check_cover(cut).passed


def test_write_cover_is_an_atomic_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "youtube" / "clip.jpg"
    frame = astronaut_bgr()
    write_cover(frame, path, quality=85)
    back = cv2.imread(str(path))
    assert back is not None and back.shape == frame.shape
    assert np.abs(back.astype(int) - frame.astype(int)).mean() < 6
    assert os.listdir(path.parent) == ["clip.jpg"]  # no temporary file left behind
    with pytest.raises(ValueError, match="quality"):
        write_cover(frame, path, quality=0)
    with pytest.raises(ValueError, match="BGR"):
        write_cover(frame[:, :, 0], path)


def test_cover_of_a_9_16_export_has_the_face_inside_with_eyes_open(tmp_path: Path) -> None:
    from talkfactory.infra.media.frames import iter_video_frames
    from talkfactory.pipeline.avatar import prepare_avatar

    template = tmp_path / "template.mp4"
    write_template(template, face_right_of_centre_frames())
    track = prepare_avatar(template, tmp_path / "cache").track
    n = 150  # 6 s of output
    rows = ping_pong_rows(n, track.num_frames)
    plan = plan_reframe(track, rows, out_w=1080, out_h=1920)
    energy = np.abs(np.sin(np.arange(n) / 3.0))
    energy[90:110] = 0.0
    chosen = choose_cover_frames(track, rows, energy, FPS, count=3, plan=plan)
    assert chosen and 90 <= chosen[0] < 110
    frames = list(iter_video_frames(template, fps=track.fps, width=1280, height=720))
    cover = apply_reframe(frames[rows[chosen[0]]], plan, chosen[0])
    check = check_cover(cover)
    assert check.face and check.eyes_open and check.passed
    out = tmp_path / "out" / "cover.jpg"
    write_cover(cover, out)
    assert cv2.imread(str(out)).shape == (1920, 1080, 3)
