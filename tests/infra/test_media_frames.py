"""Frame decode, still images and the ping-pong template loop."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkfactory.errors import InvalidMediaError, MediaNotFoundError
from talkfactory.infra.media.frames import PingPongFrames, count_video_frames, iter_video_frames, load_image
from talkfactory.infra.media.probe import probe
from tests.fixtures.media_io import H, W, children_of, media_files_fixture  # noqa: F401

NTSC = 30000 / 1001


def _forward(path: Path, fps: float) -> list[np.ndarray]:
    return list(iter_video_frames(path, fps=fps, width=W, height=H))


def _ffmpeg_children() -> list[int]:
    out = []
    for pid in children_of(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if "ffmpeg" in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


# ---------------------------------------------------------------- iter_video_frames


def test_decodes_every_frame_as_bgr(media_files):
    frames = _forward(media_files.mp4_2997, NTSC)
    assert len(frames) == 90 == count_video_frames(media_files.mp4_2997, fps=NTSC)
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    assert len({zlib.crc32(f.tobytes()) for f in frames}) == 90  # testsrc2 moves every frame


def test_frame_i_shows_file_time_i_over_fps(media_files):
    # The FLV muxer delays the video by the AAC priming (23 ms, more than half a 25 fps frame), so
    # slot 0 (t=0) is padded with the first picture: 75 source frames make 76 slots.
    info = probe(media_files.flv)
    assert info.video is not None and info.video.start_time is not None and info.video.start_time > 0.02
    frames = _forward(media_files.flv, 25)
    assert len(frames) == 76 == count_video_frames(media_files.flv, fps=25)
    assert np.array_equal(frames[0], frames[1])
    assert len({zlib.crc32(f.tobytes()) for f in frames}) == 75


def test_fps_filter_resamples_to_constant_rate(media_files):
    assert (
        len(_forward(media_files.mp4_2997, 12.5)) == count_video_frames(media_files.mp4_2997, fps=12.5) == 38
    )
    ntsc = _forward(media_files.mp4_2997, NTSC)
    assert len(ntsc) == 90 == count_video_frames(media_files.mp4_2997, fps=NTSC)


def test_scales_to_the_requested_size(media_files):
    frames = list(iter_video_frames(media_files.flv, fps=25, width=80, height=60, count=3))
    assert [f.shape for f in frames] == [(60, 80, 3)] * 3


@pytest.mark.parametrize("name,fps", [("flv", 25), ("mp4_2997", NTSC), ("flv_2997", NTSC), ("vfr", 25)])
def test_seeking_to_a_frame_is_frame_exact(media_files, name, fps):
    path = getattr(media_files, name)
    forward = _forward(path, fps)
    for start in (1, 2, 13, 40):
        seeked = list(iter_video_frames(path, fps=fps, width=W, height=H, start_frame=start, count=10))
        assert len(seeked) == 10
        for k, frame in enumerate(seeked):
            assert np.array_equal(frame, forward[start + k]), (name, start, k)


def test_exact_mode_matches_the_forward_decode(media_files):
    forward = _forward(media_files.vfr, 24)
    exact = list(
        iter_video_frames(media_files.vfr, fps=24, width=W, height=H, start_frame=30, count=5, exact=True)
    )
    assert all(np.array_equal(a, b) for a, b in zip(exact, forward[30:35], strict=True))


def test_stopping_early_leaves_no_process(media_files):
    gen = iter_video_frames(media_files.flv, fps=25, width=W, height=H)
    next(gen)
    assert _ffmpeg_children()
    gen.close()
    assert not _ffmpeg_children()


def test_decode_errors(media_files, tmp_path):
    with pytest.raises(MediaNotFoundError):
        list(iter_video_frames(tmp_path / "none.mp4", fps=25, width=W, height=H))
    with pytest.raises(InvalidMediaError):
        list(iter_video_frames(media_files.text_flv, fps=25, width=W, height=H))
    with pytest.raises(InvalidMediaError):
        list(iter_video_frames(media_files.audio_only, fps=25, width=W, height=H))
    assert not _ffmpeg_children()


def test_truncated_video_yields_what_was_decoded(media_files):
    frames = _forward(media_files.truncated_flv, 25)
    assert 20 < len(frames) < 70


# ---------------------------------------------------------------- load_image


def test_load_image_by_content(media_files):
    reference = cv2.imread(str(media_files.png))
    for path in (media_files.png, media_files.png_as_mp4, media_files.webp):
        image = load_image(path)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert np.array_equal(image, reference), path
    jpeg = load_image(media_files.jpeg_as_flv)
    assert jpeg.shape == (H, W, 3) and np.abs(jpeg.astype(int) - reference).mean() < 3


def test_load_image_composites_alpha_over_grey(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:, :, 2] = 255  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), rgba)
    image = load_image(path)
    assert image.shape == (4, 4, 3)
    assert image[0, 0].tolist() == [0, 0, 255]
    assert image[3, 3].tolist() == [128, 128, 128]


def test_load_image_16_bit_and_grey(tmp_path):
    deep = np.full((5, 6, 3), 65535, np.uint16)
    deep[0, 0] = (0, 32768, 65535)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    image = load_image(tmp_path / "d.png")
    assert (
        image.dtype == np.uint8
        and image[0, 0].tolist() == [0, 128, 255]
        and image[1, 1].tolist() == [255] * 3
    )
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    image = load_image(tmp_path / "g.png")
    assert (
        image.shape == (4, 5, 3)
        and np.array_equal(image[:, :, 0], grey)
        and np.array_equal(image[:, :, 2], grey)
    )


def _jpeg_with_orientation(image: np.ndarray, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment holding just the orientation tag."""
    jpg = cv2.imencode(".jpg", image)[1].tobytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, orientation) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:]


def test_exif_rotated_portrait_is_upright_and_ping_pong_keeps_its_shape(tmp_path):
    landscape = np.zeros((20, 40, 3), np.uint8)
    landscape[:, :20] = 255
    path = tmp_path / "phone.jpg"
    path.write_bytes(_jpeg_with_orientation(landscape, 6))  # 6: turn 90 degrees clockwise to view
    image = load_image(path)
    assert image.shape == (40, 20, 3)
    assert image[:20].mean() > 200 and image[20:].mean() < 50  # the white half is now on top
    info = probe(path)
    assert info.is_image and info.video is not None and info.video.width == 40  # ffprobe ignores EXIF
    player = PingPongFrames(path, info, 25)
    assert (player.width, player.height) == (20, 40)
    assert next(iter(player.frames(1)))[1].shape == (40, 20, 3)


def test_load_image_rejects_non_images(media_files, tmp_path):
    for path in (media_files.flv, media_files.text_flv):
        with pytest.raises(InvalidMediaError):
            load_image(path)
    with pytest.raises(InvalidMediaError, match="0 bytes"):
        load_image(media_files.empty_flv)
    with pytest.raises(MediaNotFoundError):
        load_image(tmp_path / "missing.png")


# ---------------------------------------------------------------- ping-pong


def _pattern(n: int, count: int) -> list[int]:
    period = list(range(n)) + list(range(n - 2, 0, -1))
    return [period[i % len(period)] for i in range(count)]


@pytest.mark.parametrize(
    "name,fps", [("flv", 25), ("mp4_2997", NTSC), ("flv_2997", NTSC), ("vfr", 25), ("flv", 12.5)]
)
def test_ping_pong_backward_frames_are_byte_identical_to_forward(media_files, name, fps):
    path = getattr(media_files, name)
    forward = _forward(path, fps)
    player = PingPongFrames(path, probe(path), fps, block_frames=8, cache_bytes=0)
    assert player.num_frames == len(forward)
    n = len(forward)
    total = 2 * (2 * n - 2) + 7  # two full periods and a bit
    pairs = list(player.frames(total))
    assert [i for i, _ in pairs] == _pattern(n, total)
    for k, (index, frame) in enumerate(pairs):
        assert np.array_equal(frame, forward[index]), (name, k, index)
    # Every backward block came from a seek that verified frame-exact.
    assert player.stats.fallback_blocks == 0 and player.stats.seek_blocks == player.stats.backward_blocks > 0


def test_ping_pong_falls_back_to_exact_decode_when_a_seek_misses(media_files, monkeypatch):
    import talkfactory.infra.media.frames as frames_module

    forward = _forward(media_files.flv, 25)
    player = PingPongFrames(media_files.flv, probe(media_files.flv), 25, block_frames=16, cache_bytes=0)
    real = frames_module._decode

    def off_by_one(path, **kw):
        if kw.get("start_frame", 0) > 0 and not kw.get("exact"):
            kw["start_frame"] += 1  # simulate a seek landing one frame late
        return real(path, **kw)

    monkeypatch.setattr(frames_module, "_decode", off_by_one)
    pairs = list(player.frames(2 * len(forward) - 2))
    assert all(np.array_equal(frame, forward[i]) for i, frame in pairs)
    assert player.stats.fallback_blocks == player.stats.backward_blocks > 0


def test_ping_pong_memory_is_bounded_by_the_block(media_files, monkeypatch):
    import talkfactory.infra.media.frames as frames_module

    counts: list[int | None] = []
    real = frames_module._decode

    def spy(path, **kw):
        counts.append(kw.get("count"))
        return real(path, **kw)

    monkeypatch.setattr(frames_module, "_decode", spy)
    player = PingPongFrames(media_files.flv, probe(media_files.flv), 25, block_frames=10, cache_bytes=0)
    assert sum(1 for _ in player.frames(2 * 76 - 2)) == 150
    backward = counts[1:]
    assert backward and all(c is not None and c <= 10 for c in backward)


def test_a_short_template_is_decoded_once_and_looped_from_memory(media_files, monkeypatch):
    import talkfactory.infra.media.frames as frames_module

    forward = _forward(media_files.flv, 25)
    n = len(forward)
    calls: list[dict] = []
    real = frames_module._decode
    monkeypatch.setattr(frames_module, "_decode", lambda path, **kw: calls.append(kw) or real(path, **kw))
    player = PingPongFrames(media_files.flv, probe(media_files.flv), 25)
    total = 3 * (2 * n - 2) + 5
    pairs = list(player.frames(total))
    assert [i for i, _ in pairs] == _pattern(n, total)
    assert all(np.array_equal(frame, forward[i]) for i, frame in pairs)
    assert player.stats.cached and len(calls) == 1  # one decode for three and a bit periods
    assert not pairs[0][1].flags.writeable  # shared frames cannot be scribbled on by a backend

    # One frame over the budget: back to bounded blocks, same frames.
    tight = PingPongFrames(
        media_files.flv, probe(media_files.flv), 25, cache_bytes=forward[0].nbytes * (n - 1)
    )
    again = list(tight.frames(total))
    assert not tight.stats.cached and tight.stats.backward_blocks > 0
    assert all(np.array_equal(a[1], b[1]) and a[0] == b[0] for a, b in zip(pairs, again, strict=True))


def test_ping_pong_fewer_frames_than_the_template(media_files):
    player = PingPongFrames(media_files.flv, probe(media_files.flv), 25)
    assert [i for i, _ in player.frames(5)] == [0, 1, 2, 3, 4]
    assert list(player.frames(0)) == []


def test_ping_pong_still_image_repeats_one_frame(media_files):
    info = probe(media_files.png_as_mp4)
    player = PingPongFrames(media_files.png_as_mp4, info, 25)
    assert player.num_frames == 1 and player.is_still and player.period == 1
    pairs = list(player.frames(30))
    assert len(pairs) == 30 and all(i == 0 for i, _ in pairs)
    assert all(f is pairs[0][1] for _, f in pairs) and not pairs[0][1].flags.writeable
    assert np.array_equal(pairs[0][1], load_image(media_files.png))


def test_ping_pong_single_frame_video(media_files):
    player = PingPongFrames(media_files.one_frame_mp4, probe(media_files.one_frame_mp4), 25)
    pairs = list(player.frames(6))
    assert [i for i, _ in pairs] == [0] * 6
    assert player.num_frames == 1


def test_ping_pong_index_formula():
    assert [PingPongFrames.index_at(i, 4) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [PingPongFrames.index_at(i, 1) for i in range(3)] == [0, 0, 0]
    assert [PingPongFrames.index_at(i, 2) for i in range(4)] == [0, 1, 0, 1]


def test_ping_pong_needs_a_picture(media_files):
    with pytest.raises(InvalidMediaError):
        PingPongFrames(media_files.audio_only, probe(media_files.audio_only), 25)
