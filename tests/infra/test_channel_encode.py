"""Channel encode options: argv by list equality, then a real encode read back with ffprobe."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.infra.ffmpeg.args import demuxers_for
from talkfactory.infra.media.channel_encode import (
    ChannelEncodeOptions,
    audio_chain,
    audio_output_argv,
    gop_frames_for,
    options_argv,
)
from talkfactory.infra.media.encode import AudioInput, FrameEncoder, encode_args
from talkfactory.infra.media.probe import probe
from tests.fixtures.media import write_wav

OPTIONS = ChannelEncodeOptions(gop_frames=50, maxrate_kbps=8000)


def test_x264_options_fix_a_closed_gop_and_cap_the_rate():
    assert options_argv(OPTIONS, "libx264") == [
        "-profile:v", "high", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-flags", "+cgop",
        "-maxrate", "8000k", "-bufsize", "16000k",
    ]  # fmt: skip


def test_nvenc_options_and_no_cap():
    opts = ChannelEncodeOptions(gop_frames=60, profile="main")
    assert options_argv(opts, "h264_nvenc") == ["-profile:v", "main", "-g", "60", "-no-scenecut", "1"]


def test_open_gop_and_explicit_bufsize():
    opts = ChannelEncodeOptions(gop_frames=48, closed_gop=False, maxrate_kbps=5000, bufsize_kbps=5000)
    argv = options_argv(opts, "libx264")
    assert "+cgop" not in argv and argv[-4:] == ["-maxrate", "5000k", "-bufsize", "5000k"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gop_frames": 0},
        {"gop_frames": 50, "profile": "high10"},
        {"gop_frames": 50, "maxrate_kbps": -1},
        {"gop_frames": 50, "bufsize_kbps": 100},
        {"gop_frames": 50, "audio_rate": 0},
    ],
)
def test_bad_options_are_configuration_errors(kwargs):
    with pytest.raises(ConfigurationError):
        ChannelEncodeOptions(**kwargs)


def test_unknown_encoder_is_refused():
    with pytest.raises(ConfigurationError, match="libx265"):
        options_argv(OPTIONS, "libx265")


def test_gop_frames_for_rates():
    assert gop_frames_for(Fraction(30000, 1001), 2.0) == 60
    assert gop_frames_for(25, 2.0) == 50
    assert gop_frames_for(60, 0.5) == 30
    assert gop_frames_for(1, 0.1) == 1
    with pytest.raises(ConfigurationError):
        gop_frames_for(25, 0)


def test_audio_chain_converts_before_the_loudness_filters():
    opts = ChannelEncodeOptions(gop_frames=50, audio_filters=("volume=3.00dB",))
    assert audio_chain(opts) == ["aformat=channel_layouts=stereo:sample_rates=48000", "volume=3.00dB"]
    assert audio_output_argv(opts) == ["-ac", "2", "-ar", "48000", "-c:a", "aac", "-b:a", "192k"]


def test_encode_args_without_options_are_the_masters():
    """Bit-identical to the arguments before channel options existed (literal list)."""
    argv = encode_args(
        "o.mp4",
        width=11,
        height=20,
        fps=25,
        audio=AudioInput("a.flv", stream_index=1, start=2, duration=3),
        duration=3.0,
    )
    assert argv == [
        "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "12x20", "-r", "25",
        "-protocol_whitelist", "pipe", "-format_whitelist", "rawvideo", "-i", "pipe:0",
        "-ss", "2", "-t", "3", "-protocol_whitelist", "file",
        "-format_whitelist", ",".join(demuxers_for("a.flv")), "-i", "file:a.flv",
        "-map", "0:v:0", "-map", "1:1",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-profile:v", "high",
        "-pix_fmt", "yuv420p", "-colorspace", "smpte170m", "-color_primaries", "bt709", "-color_trc", "bt709",
        "-color_range", "tv", "-af", "aresample=async=1:first_pts=0,apad", "-c:a", "aac", "-b:a", "128k",
        "-t", "3", "-movflags", "+faststart", "-f", "mp4", "file:o.mp4",
    ]  # fmt: skip


def test_encode_args_with_options():
    opts = ChannelEncodeOptions(gop_frames=50, maxrate_kbps=8000, audio_filters=("volume=-2.00dB",))
    argv = encode_args(
        "o.mp4", width=64, height=64, fps=25, audio=AudioInput("a.wav"), duration=4.0, options=opts
    )
    crf_at = argv.index("-crf")
    assert argv.index("-g") > crf_at and argv[argv.index("-g") + 1] == "50"
    assert argv[argv.index("-maxrate") + 1] == "8000k"
    # Timestamps first (lip sync), then the output's format, then loudness, then the padding.
    assert argv[argv.index("-af") + 1] == (
        "aresample=async=1:first_pts=0,aformat=channel_layouts=stereo:sample_rates=48000,volume=-2.00dB,apad"
    )
    assert argv[argv.index("-c:a") :][:4] == ["-c:a", "aac", "-b:a", "192k"]
    assert argv[argv.index("-ar") + 1] == "48000" and argv[argv.index("-ac") + 1] == "2"
    assert "128k" not in argv


def _packets(path: Path) -> list[tuple[float, bool]]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    packets = json.loads(out)["packets"]
    return sorted((float(p["pts_time"]), "K" in p["flags"]) for p in packets)


def test_encoded_file_has_high_profile_keyframes_every_2s_and_48k_stereo(tmp_path):
    fps, seconds = 25, 7
    rate = 22050
    t = np.arange(seconds * rate) / rate
    wav = tmp_path / "mono.wav"
    write_wav(wav, 0.3 * np.sin(2 * np.pi * 220 * t), rate)  # mono 22.05 kHz in
    out = tmp_path / "channel.mp4"
    opts = ChannelEncodeOptions(gop_frames=gop_frames_for(fps, 2.0), maxrate_kbps=2000)
    # A hard cut every 17 frames (0.68 s): x264 would put a keyframe at each, the fixed GOP must not.
    shades = np.random.default_rng(0).integers(0, 255, size=fps * seconds // 17 + 1)
    with FrameEncoder(
        out, width=160, height=96, fps=fps, audio=AudioInput(wav), duration=seconds, options=opts
    ) as enc:
        for i in range(fps * seconds):
            enc.write(np.full((96, 160, 3), shades[i // 17], np.uint8))
    info = probe(out)
    assert info.video is not None and info.audio is not None
    assert (info.video.codec, info.video.profile, info.video.pix_fmt) == ("h264", "High", "yuv420p")
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 48000, 2)
    keyframes = [pts for pts, key in _packets(out) if key]
    assert keyframes == pytest.approx([0.0, 2.0, 4.0, 6.0], abs=1e-3)
