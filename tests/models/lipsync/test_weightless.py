from __future__ import annotations

import re

import numpy as np
import pytest

from talkfactory.errors import InvalidMediaError
from talkfactory.models.audio import ArrayAudio
from talkfactory.models.face.build import build_face_track
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.lipsync.base import LipSyncBackend, TemplateFrame
from talkfactory.models.lipsync.warp import JAW_CONTOUR, NOSE_BASE, WarpConfig, face_frame
from talkfactory.models.lipsync.weightless import WeightlessBackend
from tests.fixtures.mouth import RATE, astronaut_bgr, inner_lip_gap, syllable_envelope, syllables

FPS = 25.0
FRAMES = 50


@pytest.fixture(scope="module")
def still_track() -> FaceTrack:
    img = astronaut_bgr()
    return build_face_track([img], content_hash="astro", fps=FPS, width=512, height=512, is_still=True)


@pytest.fixture(scope="module")
def rendered(still_track: FaceTrack) -> tuple[np.ndarray, list[np.ndarray]]:
    img = astronaut_bgr()
    backend = WeightlessBackend()
    audio = ArrayAudio(syllables(FRAMES, FPS), RATE)
    frames = (TemplateFrame(0, img) for _ in range(FRAMES))
    return img, list(backend.render(backend.prepare(still_track), frames, audio, FPS))


def test_is_a_lipsync_backend() -> None:
    backend = WeightlessBackend()
    assert isinstance(backend, LipSyncBackend)
    assert backend.name == "weightless"
    assert re.fullmatch(r"weightless-\d+\.\d+\.\d+", backend.version)


def test_prepare_keeps_boxes_per_frame(still_track: FaceTrack) -> None:
    prepared = WeightlessBackend().prepare(still_track)
    assert prepared.track is still_track
    assert prepared.face_height.shape == (1,) and 80 < prepared.face_height[0] < 140
    x0, y0, x1, y1 = prepared.roi[0]
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512


def test_mouth_follows_the_speech(rendered: tuple[np.ndarray, list[np.ndarray]]) -> None:
    _, frames = rendered
    assert len(frames) == FRAMES
    envelope = syllable_envelope(FRAMES, FPS)
    with FaceMesher(static=True) as mesher:
        meshes = [mesher.landmarks(f) for f in frames]
    assert all(m is not None for m in meshes)
    gaps = np.array([inner_lip_gap(m) for m in meshes if m is not None])
    corr = float(np.corrcoef(gaps, envelope)[0, 1])
    assert corr >= 0.6, f"lip gap vs speech envelope correlation {corr:.2f}"
    loud, silent = envelope > 0.8, envelope == 0
    assert gaps[silent].mean() < gaps[loud].mean() - 0.02


def test_only_the_lower_face_changes(rendered: tuple[np.ndarray, list[np.ndarray]]) -> None:
    img, frames = rendered
    points = build_face_track(
        [img], content_hash="a", fps=FPS, width=512, height=512, is_still=True
    ).landmarks[0]
    face = face_frame(points, img, (512, 512), WarpConfig())
    x0, y0, x1, y1 = face.roi
    outside_mask = np.ones((512, 512), bool)
    outside_mask[y0:y1, x0:x1] = face.alpha == 0
    # Lower face: nose base to chin, jaw side to jaw side; the allowed box is 1.5x that across and
    # reaches 0.3 face heights under the chin (the strip the dropping chin slides over).
    lower = points[list(JAW_CONTOUR) + list(NOSE_BASE)]
    (lx0, ly0), (lx1, ly1) = lower.min(0), lower.max(0)
    cx, half_w, half_h = (lx0 + lx1) / 2, 0.75 * (lx1 - lx0), 0.25 * (ly1 - ly0)
    box = np.zeros((512, 512), bool)
    box[
        int(ly0 - half_h) : int(ly1 + 0.3 * face.face_height) + 1, int(cx - half_w) : int(cx + half_w) + 1
    ] = True
    changed_any = np.zeros((512, 512), bool)
    for out in frames:
        assert np.array_equal(out[outside_mask], img[outside_mask])
        assert np.array_equal(out[~box], img[~box])
        changed_any |= np.any(out != img, axis=2)
    assert changed_any.sum() > 2000


def test_frames_without_a_face_pass_through(still_track: FaceTrack) -> None:
    img = astronaut_bgr()
    track = FaceTrack(
        content_hash="two",
        width=512,
        height=512,
        fps=FPS,
        landmarks=np.concatenate([still_track.landmarks, np.full_like(still_track.landmarks, np.nan)]),
        present=np.array([True, False]),
    )
    backend = WeightlessBackend()
    audio = ArrayAudio(syllables(10, FPS), RATE)
    other = img[::-1].copy()
    frames = [TemplateFrame(1, other), TemplateFrame(0, img), TemplateFrame(1, other)] * 3
    outs = list(backend.render(backend.prepare(track), frames, audio, FPS))
    assert len(outs) == len(frames)
    for frame, out in zip(frames, outs, strict=True):
        if frame.index == 1:
            assert out is frame.image
    assert any(
        not np.array_equal(out, img) for frame, out in zip(frames, outs, strict=True) if frame.index == 0
    )


def test_bad_frames_are_refused(still_track: FaceTrack) -> None:
    backend = WeightlessBackend()
    prepared = backend.prepare(still_track)
    audio = ArrayAudio(syllables(5, FPS), RATE)
    with pytest.raises(InvalidMediaError):
        list(backend.render(prepared, [TemplateFrame(3, astronaut_bgr())], audio, FPS))
    with pytest.raises(InvalidMediaError):
        list(backend.render(prepared, [TemplateFrame(0, np.zeros((100, 100, 3), np.uint8))], audio, FPS))


def test_shapes_match_what_render_uses() -> None:
    audio = ArrayAudio(syllables(FRAMES, FPS), RATE)
    shapes = WeightlessBackend().shapes(audio, FPS, FRAMES)
    opens = np.array([s.open for s in shapes])
    envelope = syllable_envelope(FRAMES, FPS)
    assert opens[envelope > 0.8].min() > 0.8
    assert np.corrcoef(opens, envelope)[0, 1] > 0.8
