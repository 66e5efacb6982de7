"""Reframing around the face: the plan's maths on synthetic tracks, then a real template end to end."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from talkfactory.infra.media.frames import PingPongFrames, iter_video_frames
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.face.reframe import ReframePlan, crop_size, fit_rect, plan_reframe
from talkfactory.models.face.reframe_frames import apply_reframe
from talkfactory.models.face.track import MESH_POINTS, FaceTrack
from tests.fixtures.templates import face_right_of_centre_frames


def box_track(
    centres: NDArray[Any], *, w: int, h: int, face: tuple[int, int] = (100, 120), fps: float = 25.0
) -> FaceTrack:
    """A track whose 478 points fill a ``face``-sized box around each (x, y) centre (NaN = absent)."""
    u = np.linspace(-0.5, 0.5, MESH_POINTS, dtype=np.float32)
    base = np.stack((u * face[0], np.roll(u, 101) * face[1]), axis=1)
    c = np.asarray(centres, dtype=np.float32)
    landmarks = base[None] + c[:, None, :]
    present = ~np.isnan(c[:, 0])
    return FaceTrack("synthetic", w, h, fps, landmarks.astype(np.float32), present)


def ping_pong_rows(n: int, frames: int) -> NDArray[Any]:
    return np.array([PingPongFrames.index_at(i, frames) for i in range(n)])


# --- geometry ---------------------------------------------------------------------------------


def test_crop_is_the_largest_even_window_with_the_output_aspect() -> None:
    assert crop_size(1280, 720, 1080, 1920) == (404, 720)
    assert crop_size(2048, 2048, 1080, 1920) == (1152, 2048)
    assert crop_size(1080, 1920, 1080, 1080) == (1080, 1080)
    assert crop_size(1281, 721, 1920, 1080) == (1280, 720)  # odd source: one pixel less, still even
    f = fit_rect(1080, 1920, 1920, 1080)
    assert (f.w, f.h) == (608, 1080) and f.x == (1920 - 608) // 2 and f.y == 0


def test_native_when_the_output_is_the_source_size() -> None:
    track = box_track(np.tile([640.0, 360.0], (10, 1)), w=1280, h=720)
    plan = plan_reframe(track, ping_pong_rows(30, 10), out_w=1280, out_h=720)
    assert plan.mode == "native" and not plan.upscaled and plan.num_frames == 30
    frame = np.zeros((720, 1280, 3), np.uint8)
    assert apply_reframe(frame, plan, 3) is frame


# --- following the face -----------------------------------------------------------------------


def test_crop_follows_a_face_right_of_centre_and_is_even_and_inside() -> None:
    t = np.arange(100)
    centres = np.stack((900 + 40 * np.sin(t / 15), 330 + 0 * t), axis=1)
    track = box_track(centres, w=1280, h=720)
    plan = plan_reframe(track, ping_pong_rows(1000, 100), out_w=1080, out_h=1920)
    assert plan.mode == "crop" and plan.upscaled  # 404x720 scaled up to 1080x1920
    r = plan.rects
    assert r.shape == (1000, 4) and r.dtype == np.int32
    assert (r[:, 2] == 404).all() and (r[:, 3] == 720).all()
    assert (r % 2 == 0).all()
    assert (r[:, 0] >= 0).all() and (r[:, 0] + r[:, 2] <= 1280).all() and (r[:, 1] == 0).all()
    # The face box (with its 10 % margin) is inside the crop on every frame.
    rows = ping_pong_rows(1000, 100)
    cx = centres[rows, 0]
    assert (cx - 60 >= r[:, 0]).all() and (cx + 60 <= r[:, 0] + 404).all()
    # A plain centre crop (x 438..842) would cut the face on every frame.
    assert (cx + 50 > 842).all()


def test_jitter_inside_the_dead_zone_leaves_the_crop_still() -> None:
    rng = np.random.default_rng(3)
    centres = np.stack((800 + rng.integers(-3, 4, 200), 360 + rng.integers(-3, 4, 200)), axis=1)
    track = box_track(centres.astype(float), w=1280, h=720)
    plan = plan_reframe(track, range(200), out_w=1080, out_h=1920)
    assert plan.mode == "crop"
    assert len(np.unique(plan.rects[:, 0])) == 1
    # 9:16 out of a 2048 square also moves vertically? No: full height, so y stays 0; x still.
    track2 = box_track(centres.astype(float) * 1.6, w=2048, h=2048, face=(300, 360))
    plan2 = plan_reframe(track2, range(200), out_w=1080, out_h=1080)
    assert len(np.unique(plan2.rects[:, 0])) == 1 and len(np.unique(plan2.rects[:, 1])) == 1


def test_a_slow_move_is_followed_and_a_cut_makes_the_crop_jump() -> None:
    # 60 rows at x=300, then a cut to x=950 (the track's own smoothing spreads it over 3 rows).
    x = np.concatenate((np.full(60, 300.0), [460.0, 790.0], np.full(58, 950.0)))
    track = box_track(np.stack((x, np.full(120, 360.0)), axis=1), w=1280, h=720)
    plan = plan_reframe(track, range(120), out_w=1080, out_h=1920)
    left = plan.rects[:, 0] + 202
    assert abs(left[55] - 300) <= 40
    # After the cut the crop is on the new face at once (within two rows), no slow drift across.
    assert abs(left[63] - 950) <= 40 and abs(left[62] - 950) <= 60
    assert (np.abs(left[63:] - left[63]) == 0).all()
    # A steady walk of 5 px a row is followed (not held by the dead zone).
    walk = np.stack((300 + 5.0 * np.arange(120), np.full(120, 360.0)), axis=1)
    p = plan_reframe(box_track(walk, w=1280, h=720), range(120), out_w=1080, out_h=1920)
    centre = p.rects[:, 0] + 202
    assert np.all(np.diff(centre) >= 0) and centre[-1] - centre[10] > 450
    assert (np.abs(centre - walk[:, 0]) < 404 / 2 - 60).all()


def test_clamped_at_the_frame_edge_and_absent_rows_hold_the_last_position() -> None:
    x = np.full(50, 1150.0)  # face box 1100..1200: the crop stops at the frame's right edge
    x[20:30] = np.nan  # no face for 10 rows
    track = box_track(np.stack((x, np.full(50, 360.0)), axis=1), w=1280, h=720)
    plan = plan_reframe(track, range(50), out_w=1080, out_h=1920)
    assert plan.mode == "crop"
    assert (plan.rects[:, 0] == 1280 - 404).all()
    # 10 px from the edge the clamped crop would show the face far off centre: pad instead.
    near = box_track(np.tile([1220.0, 360.0], (50, 1)), w=1280, h=720)
    padded = plan_reframe(near, range(50), out_w=1080, out_h=1920)
    assert padded.mode == "pad" and "edge" in padded.reason
    y = np.full(50, 600.0)
    tall = box_track(np.stack((np.full(50, 540.0), y), axis=1), w=1080, h=1920, face=(300, 360))
    sq = plan_reframe(tall, range(50), out_w=1080, out_h=1080)
    assert sq.mode == "crop" and sq.rects[0, 2] == 1080 and sq.rects[0, 3] == 1080
    assert (sq.rects[:, 1] == 60).all()  # centred on the face: 600 - 1080 / 2


def test_pad_when_the_target_is_much_wider_or_the_face_does_not_fit_or_is_absent() -> None:
    portrait = box_track(np.tile([540.0, 700.0], (20, 1)), w=1080, h=1920, face=(300, 360))
    wide = plan_reframe(portrait, range(20), out_w=1920, out_h=1080)
    assert wide.mode == "pad" and "wider" in wide.reason and not wide.upscaled
    assert (wide.fit.w, wide.fit.h) == (608, 1080)
    big = box_track(np.tile([640.0, 360.0], (20, 1)), w=1280, h=720, face=(380, 500))
    assert plan_reframe(big, range(20), out_w=1080, out_h=1920).mode == "pad"
    none = box_track(np.full((20, 2), np.nan), w=1280, h=720)
    assert "no face" in plan_reframe(none, range(20), out_w=1080, out_h=1920).reason
    small = box_track(np.tile([320.0, 180.0], (5, 1)), w=640, h=360, face=(40, 50))
    assert plan_reframe(small, range(5), out_w=1920, out_h=1080).upscaled  # same aspect, crop scaled up
    assert not plan_reframe(small, range(5), out_w=320, out_h=180).upscaled


def test_same_template_row_gets_the_same_crop_over_a_long_ping_pong() -> None:
    t = np.arange(300)
    track = box_track(np.stack((700 + 200 * np.sin(t / 40), np.full(300, 360.0)), axis=1), w=1280, h=720)
    rows = ping_pong_rows(90_000, 300)
    started = time.perf_counter()
    plan = plan_reframe(track, rows, out_w=1080, out_h=1920)
    elapsed = time.perf_counter() - started
    print(f"\nplan_reframe: 90000 output rows over a 300-row template: {elapsed * 1000:.1f} ms")
    assert plan.num_frames == 90_000
    first = {int(r): tuple(plan.rects[i]) for i, r in enumerate(rows[:598])}
    assert all(tuple(plan.rects[i]) == first[int(rows[i])] for i in range(598, 90_000, 997))


def test_rows_out_of_range_and_bad_sizes_are_refused() -> None:
    track = box_track(np.tile([640.0, 360.0], (10, 1)), w=1280, h=720)
    with pytest.raises(ValueError, match="rows must lie"):
        plan_reframe(track, [0, 10], out_w=1080, out_h=1920)
    with pytest.raises(ValueError, match="too small"):
        plan_reframe(track, [0], out_w=0, out_h=1920)
    plan = plan_reframe(track, [0, 1], out_w=1080, out_h=1920)
    with pytest.raises(IndexError):
        apply_reframe(np.zeros((720, 1280, 3), np.uint8), plan, 2)
    with pytest.raises(ValueError, match="the plan is for 1280x720"):
        apply_reframe(np.zeros((360, 640, 3), np.uint8), plan, 0)


# --- applying plans to frames -----------------------------------------------------------------


def _texture(w: int, h: int) -> NDArray[Any]:
    rng = np.random.default_rng(7)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def test_crop_output_is_the_region_scaled() -> None:
    track = box_track(np.tile([900.0, 360.0], (4, 1)), w=1280, h=720)
    plan = plan_reframe(track, range(4), out_w=1080, out_h=1920)
    frame = _texture(1280, 720)
    out = apply_reframe(frame, plan, 1)
    x, y, w, h = plan.rects[1]
    want = cv2.resize(frame[y : y + h, x : x + w], (1080, 1920), interpolation=cv2.INTER_CUBIC)
    assert out.shape == (1920, 1080, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - want.astype(int)).mean() < 1.0


def test_pad_shows_the_whole_frame_over_a_darker_blurred_copy() -> None:
    frame = _texture(1080, 1920)
    frame[:8], frame[-8:] = 255, 255  # white top and bottom rows: visible only if nothing is cut
    portrait = box_track(np.tile([540.0, 700.0], (3, 1)), w=1080, h=1920, face=(300, 360))
    plan = plan_reframe(portrait, range(3), out_w=1920, out_h=1080)
    out = apply_reframe(frame, plan, 0)
    assert out.shape == (1080, 1920, 3)
    f = plan.fit
    inner = out[f.y : f.bottom, f.x : f.right].astype(int)
    whole = cv2.resize(frame, (f.w, f.h), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(inner - whole).mean() < 4.0
    assert inner[:2].min() > 200 and inner[-2:].min() > 200  # the white edges made it in
    side = out[:, : f.x].astype(float)
    assert side.mean() < 0.6 * frame.mean()  # darkened
    assert np.abs(np.diff(side, axis=1)).mean() < 2.0  # blurred: neighbours barely differ


@pytest.mark.parametrize(
    ("src", "mode"),
    [((1280, 720), "crop"), ((1280, 720), "pad"), ((2048, 2048), "crop"), ((2048, 2048), "pad")],
)
def test_apply_reframe_speed(src: tuple[int, int], mode: str) -> None:
    w, h = src
    frame = _texture(w, h)
    track = box_track(np.tile([w * 0.6, h * 0.45], (30, 1)), w=w, h=h, face=(w // 8, h // 6))
    plan = plan_reframe(track, range(30), out_w=1080, out_h=1920)
    if mode == "pad":
        full = np.broadcast_to(np.array([0, 0, w, h], np.int32), (30, 4))
        plan = ReframePlan(1080, 1920, "pad", full, False, "forced for timing", w, h)
    assert plan.mode == mode
    for i in range(3):
        apply_reframe(frame, plan, i)
    started = time.perf_counter()
    for i in range(30):
        out = apply_reframe(frame, plan, i)
    ms = (time.perf_counter() - started) / 30 * 1000
    print(f"\napply_reframe {mode} {w}x{h} -> 1080x1920: {ms:.2f} ms/frame")
    assert out.shape == (1920, 1080, 3)


# --- a real template, tracked by avatar preparation, framed and checked on the output ----------


def write_template(path: Path, frames: list[NDArray[Any]], fps: int = 25) -> None:
    h, w = frames[0].shape[:2]
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
         "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "ultrafast",
         "-crf", "16", "-pix_fmt", "yuv420p", str(path)],
        input=b"".join(f.tobytes() for f in frames), check=True, timeout=120,
    )  # fmt: skip


def test_face_right_of_centre_stays_in_the_middle_band_of_a_9_16_export(tmp_path: Path) -> None:
    from talkfactory.pipeline.avatar import prepare_avatar

    frames = face_right_of_centre_frames()
    template = tmp_path / "template.mp4"
    write_template(template, frames)
    avatar = prepare_avatar(template, tmp_path / "cache")
    track = avatar.track
    assert track.width == 1280 and track.face_ratio > 0.9
    n_out = 3 * track.num_frames
    rows = ping_pong_rows(n_out, track.num_frames)
    plan = plan_reframe(track, rows, out_w=1080, out_h=1920)
    assert plan.mode == "crop" and plan.upscaled
    decoded = list(iter_video_frames(template, fps=track.fps, width=1280, height=720))
    assert len(decoded) == track.num_frames
    sampled = range(0, n_out, 7)
    centre_found = 0
    with FaceMesher(static=True) as mesher:
        for i in sampled:
            out = apply_reframe(decoded[rows[i]], plan, i)
            points = mesher.landmarks(out)
            assert points is not None, f"no face on output frame {i}"
            cx = (points[:, 0].min() + points[:, 0].max()) / 2
            assert 360 <= cx <= 720, f"face centre x={cx:.0f} outside the middle band on output frame {i}"
            # A plain centre crop of the same frame (x 438..842) cuts the face or loses it.
            centre = cv2.resize(decoded[rows[i]][:, 438:842], (1080, 1920), interpolation=cv2.INTER_LINEAR)
            seen = mesher.landmarks(centre)
            if seen is not None:
                centre_found += 1
                ccx = (seen[:, 0].min() + seen[:, 0].max()) / 2
                assert not 360 <= ccx <= 720
    # The tracked face box crosses the centre crop's right edge on every template frame: cut.
    box_right = track.landmarks[track.present][:, :, 0].max(axis=1)
    box_left = track.landmarks[track.present][:, :, 0].min(axis=1)
    assert ((box_left < 842) & (box_right > 842)).all()
    print(f"\ncentre crop: a face found on {centre_found} of {len(sampled)} sampled frames, never centred")


def test_a_still_and_a_render_at_another_size_than_the_track() -> None:
    still = box_track(np.array([[900.0, 360.0]]), w=1280, h=720)
    plan = plan_reframe(still, np.zeros(500, dtype=int), out_w=1080, out_h=1920)
    assert plan.mode == "crop" and len({tuple(r) for r in plan.rects}) == 1
    # The render is 2x the template: the landmarks scale with it, so the crop lands on the face.
    big = plan_reframe(still, [0], out_w=1080, out_h=1920, src_w=2560, src_h=1440)
    x, _, w, h = big.rects[0]
    assert (w, h) == (810, 1440) and x <= 1800 - 120 and x + w >= 1800 + 120
    assert big.params()["src_w"] == 2560 and big.params()["crop_w"] == 810
