"""FrameEncoder output (H.264 High, yuv420p, AAC, faststart, exact length), atomicity, bounded memory."""

from __future__ import annotations

import os
import signal
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from talkfactory.errors import ConfigurationError, FFmpegError
from talkfactory.infra.media import encoders
from talkfactory.infra.media.encode import AudioInput, FrameEncoder, to_i420
from talkfactory.infra.media.encoders import ENCODER_ENV, choose_h264_encoder
from talkfactory.infra.media.frames import iter_video_frames
from talkfactory.infra.media.probe import probe
from tests.fixtures.media_io import media_files_fixture, mp4_top_level_atoms  # noqa: F401


def grey_frames(count: int, width: int, height: int, step: int = 4) -> list[np.ndarray]:
    """Frame ``i`` is flat grey ``16 + step * i`` so order and drops are visible after decoding."""
    return [np.full((height, width, 3), 16 + (step * i) % 220, np.uint8) for i in range(count)]


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


def test_encode_with_audio_is_web_ready_mp4(media_files, tmp_path):
    out = tmp_path / "out.mp4"
    duration = 2.0
    audio = AudioInput(media_files.flv, stream_index=probe(media_files.flv).audio.index)  # type: ignore[union-attr]
    with FrameEncoder(out, width=160, height=120, fps=25, audio=audio, duration=duration) as enc:
        for frame in grey_frames(50, 160, 120):
            enc.write(frame)
    stats = enc.stats
    assert stats is not None and stats.frames_written == 50 and stats.encoder == "libx264"
    assert stats.output_bytes == out.stat().st_size and stats.wall_seconds > 0
    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert (info.video.codec, info.video.profile, info.video.pix_fmt) == ("h264", "High", "yuv420p")
    assert (info.video.width, info.video.height) == (160, 120)
    assert info.audio.codec == "aac"
    assert info.duration is not None and abs(info.duration - duration) <= 1 / 25
    atoms = mp4_top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")  # +faststart
    assert leftovers(tmp_path) == []


def test_decoded_frames_come_back_in_order(tmp_path):
    out = tmp_path / "order.mp4"
    frames = grey_frames(40, 64, 48, step=5)
    with FrameEncoder(out, width=64, height=48, fps=25, crf=10) as enc:
        for frame in frames:
            enc.write(frame)
    decoded = list(iter_video_frames(out, fps=25, width=64, height=48))
    assert len(decoded) == 40
    for sent, got in zip(frames, decoded, strict=True):
        # Flat grey survives BGR -> BT.601 yuv420p -> BGR within a level; a dropped or swapped frame: 5+.
        assert np.abs(got.astype(int) - sent.astype(int)).max() <= 1


def test_i420_conversion_pads_odd_sizes_by_repeating_the_edge():
    frame = np.zeros((3, 5, 3), np.uint8)
    frame[:, 4] = 200  # last column
    frame[2, :] = 100  # last row
    yuv = to_i420(frame)
    assert yuv.shape == (4 * 3 // 2, 6)  # 4x6 luma plus two 2x3 chroma planes
    luma = yuv[:4]
    assert np.array_equal(luma[:, 5], luma[:, 4]) and np.array_equal(luma[3], luma[2])
    grey = to_i420(np.full((2, 2, 3), 16, np.uint8))
    assert grey[:2].ravel().tolist() == [30] * 4 and grey[2:].ravel().tolist() == [128, 128]  # neutral chroma


def test_odd_size_is_padded_to_even(tmp_path):
    out = tmp_path / "odd.mp4"
    with FrameEncoder(out, width=321, height=241, fps=25) as enc:
        for frame in grey_frames(10, 321, 241):
            enc.write(frame)
    info = probe(out)
    assert info.video is not None
    assert (info.video.width, info.video.height) == (322, 242)
    decoded = next(iter_video_frames(out, fps=25, width=322, height=242))
    assert np.abs(decoded.astype(int) - 16).max() <= 1  # the padding repeats the picture, no black edge
    assert (info.video.pix_fmt, info.video.profile) == ("yuv420p", "High")
    assert enc.stats is not None and (enc.stats.width, enc.stats.height) == (322, 242)
    atoms = mp4_top_level_atoms(out)
    assert atoms.index("moov") < atoms.index("mdat")


def test_ntsc_rate_and_output_length_follow_duration(media_files, tmp_path):
    out = tmp_path / "ntsc.mp4"
    fps = Fraction(30000, 1001)
    duration = 1.5
    # More frames than the duration holds: the extra ones are cut, the length is the audio's.
    with FrameEncoder(
        out,
        width=160,
        height=120,
        fps=fps,
        audio=AudioInput(str(media_files.flv), start=0.5),
        duration=duration,
    ) as enc:
        for frame in grey_frames(60, 160, 120):
            enc.write(frame)
    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert info.video.rate == fps
    assert info.duration is not None and abs(info.duration - duration) <= float(1 / fps)
    assert info.video.nb_frames is not None and abs(info.video.nb_frames - duration * float(fps)) <= 1


def test_audio_is_padded_when_frames_outlast_it(media_files, tmp_path):
    out = tmp_path / "pad.mp4"
    with FrameEncoder(
        out, width=160, height=120, fps=25, audio=AudioInput(str(media_files.flv), start=2.5), duration=2.0
    ) as enc:
        for frame in grey_frames(50, 160, 120):
            enc.write(frame)
    info = probe(out)
    assert info.audio is not None and info.audio.duration is not None and info.audio.duration >= 1.95
    assert info.duration is not None and abs(info.duration - 2.0) <= 1 / 25


def test_720p_high_profile(tmp_path):
    # (x264's ultrafast preset turns off CABAC and 8x8 transforms, which lowers it to Constrained Baseline.)
    out = tmp_path / "hd.mp4"
    with FrameEncoder(out, width=1280, height=720, fps=25, preset="veryfast") as enc:
        for frame in grey_frames(10, 1280, 720):
            enc.write(frame)
    info = probe(out)
    assert info.video is not None and (info.video.width, info.video.height, info.video.profile) == (
        1280,
        720,
        "High",
    )


def test_exception_mid_write_keeps_the_previous_file(tmp_path):
    out = tmp_path / "render.mp4"
    out.write_bytes(b"the previous good render")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        with FrameEncoder(out, width=160, height=120, fps=25) as enc:
            for frame in grey_frames(10, 160, 120):
                enc.write(frame)
            pid = enc.pid
            raise RuntimeError("renderer crashed")
    assert out.read_bytes() == b"the previous good render"
    assert leftovers(tmp_path) == []
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def test_exception_mid_write_leaves_no_file(tmp_path):
    out = tmp_path / "new.mp4"
    with pytest.raises(ValueError):
        with FrameEncoder(out, width=160, height=120, fps=25) as enc:
            enc.write(grey_frames(1, 160, 120)[0])
            enc.write(np.zeros((10, 10, 3), np.uint8))  # wrong size
    assert not out.exists() and leftovers(tmp_path) == []


def test_ffmpeg_dying_mid_write_raises_and_keeps_the_previous_file(tmp_path):
    out = tmp_path / "render.mp4"
    out.write_bytes(b"previous")
    enc = FrameEncoder(out, width=160, height=120, fps=25)
    with pytest.raises(FFmpegError) as info:
        with enc:
            frames = grey_frames(5, 160, 120)
            enc.write(frames[0])
            assert enc.pid is not None
            os.killpg(enc.pid, signal.SIGKILL)  # the encoder crashes
            for _ in range(200):
                enc.write(frames[1])
    assert "SIGKILL" in str(info.value)
    assert out.read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_missing_audio_input_fails_before_starting(tmp_path):
    out = tmp_path / "x.mp4"
    with pytest.raises(FileNotFoundError):
        with FrameEncoder(out, width=160, height=120, fps=25, audio=AudioInput(str(tmp_path / "none.flv"))):
            pass
    assert not out.exists()


def test_bad_settings_fail_at_construction(tmp_path):
    with pytest.raises(ConfigurationError):
        FrameEncoder(tmp_path / "x.mp4", width=16, height=16, fps=25, preset="warp")
    with pytest.raises(ValueError):
        FrameEncoder(tmp_path / "x.mp4", width=16, height=16, fps=25, duration=0)


def test_writer_queue_stays_bounded_over_3000_frames(tmp_path):
    out = tmp_path / "long.mp4"
    frame_bytes = 96 * 64 * 3
    frames = grey_frames(7, 96, 64)
    tracemalloc.start()
    try:
        with FrameEncoder(out, width=96, height=64, fps=25, preset="ultrafast", queue_frames=6) as enc:
            for i in range(3000):
                # A fresh array each time, like a renderer: if frames piled up, memory would grow.
                enc.write(frames[i % 7].copy())
                assert enc.max_queued <= 6
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert enc.stats is not None and enc.stats.frames_written == 3000
    assert enc.stats.max_queued <= enc.stats.queue_frames == 6
    assert peak < 40 * frame_bytes  # 3000 frames would be 55 MB
    info = probe(out)
    assert info.video is not None and info.video.nb_frames == 3000


# ---------------------------------------------------------------- encoder choice


def _fake_ffmpeg(folder: Path, script: str) -> str:
    path = folder / "ffmpeg"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def fresh_choice(monkeypatch):
    monkeypatch.delenv(ENCODER_ENV, raising=False)
    encoders.clear_cache()
    yield
    encoders.clear_cache()


def test_choose_libx264_when_nvenc_trial_fails(fresh_choice, tmp_path):
    fake = _fake_ffmpeg(
        tmp_path,
        'echo "[h264_nvenc @ 0x55d0] Cannot load libcuda.so.1" >&2\n'
        'echo "Error initializing output stream 0:0" >&2\nexit 1\n',
    )
    choice = choose_h264_encoder(fake)
    assert choice.name == "libx264"
    assert choice.reason == "h264_nvenc trial failed: Cannot load libcuda.so.1"


def test_choose_nvenc_when_the_trial_encode_works(fresh_choice, tmp_path):
    choice = choose_h264_encoder(_fake_ffmpeg(tmp_path, "exit 0\n"))
    assert choice.name == "h264_nvenc" and "succeeded" in choice.reason


def test_real_ffmpeg_choice_is_consistent_and_cached(fresh_choice):
    first = choose_h264_encoder()
    assert first.name in ("libx264", "h264_nvenc")
    if first.name == "libx264":
        assert first.reason.startswith("h264_nvenc trial failed: ")
    assert choose_h264_encoder() == first
    assert encoders._trial.cache_info().hits >= 1


def test_env_override(fresh_choice, monkeypatch, tmp_path):
    monkeypatch.setenv(ENCODER_ENV, "libx264")
    assert choose_h264_encoder() == encoders.EncoderChoice("libx264", f"{ENCODER_ENV}=libx264")
    monkeypatch.setenv(ENCODER_ENV, "x265")
    with pytest.raises(ConfigurationError, match="x265"):
        choose_h264_encoder()
    monkeypatch.setenv(ENCODER_ENV, "h264_nvenc")
    failing = _fake_ffmpeg(tmp_path, 'echo "[h264_nvenc @ 0x1] No NVENC capable devices found" >&2\nexit 1\n')
    with pytest.raises(ConfigurationError, match="No NVENC capable devices found"):
        choose_h264_encoder(failing)
