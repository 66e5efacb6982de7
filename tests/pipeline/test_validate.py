"""Validation before publishing: pure checks on probed facts, then real files against presets."""

from __future__ import annotations

import dataclasses
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from talkfactory.infra.ffmpeg.args import packet_flags_probe_args
from talkfactory.infra.media.loudness import Loudness, normalization_for
from talkfactory.infra.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo
from talkfactory.pipeline.exports.channels import load_channels
from talkfactory.pipeline.exports.validate import (
    check_keyframes,
    check_layout,
    check_media,
    top_level_boxes,
    validate_file,
)
from tests.fixtures.long_speech import long_speech
from tests.fixtures.media import write_wav

GOOD_LOUDNESS = Loudness(integrated_lufs=-14.2, true_peak_db=-1.3, lra=3.0, threshold=-24.0)


def media(width: int = 1080, height: int = 1920, duration: float = 60.0, **changes: object) -> MediaInfo:
    video = VideoStreamInfo(
        index=0, codec="h264", profile="High", width=width, height=height, fps=30.0, avg_fps=Fraction(30),
        r_fps=Fraction(30), is_vfr=False, pix_fmt="yuv420p", duration=duration, nb_frames=int(duration * 30),
        has_alpha=False, rotation=0,
    )  # fmt: skip
    audio = AudioStreamInfo(
        index=1,
        codec="aac",
        sample_rate=48000,
        channels=2,
        channel_layout="stereo",
        duration=duration,
        start_time=0.0,
    )
    info = MediaInfo(
        path="x.mp4", format_name="mov,mp4,m4a,3gp,3g2,mj2", duration=duration, size_bytes=10_000_000,
        bit_rate=None, video=video, audio=audio, is_image=False,
    )  # fmt: skip
    video_changes = {k[6:]: v for k, v in changes.items() if k.startswith("video_")}
    audio_changes = {k[6:]: v for k, v in changes.items() if k.startswith("audio_")}
    return dataclasses.replace(
        info,
        video=dataclasses.replace(video, **video_changes),
        audio=dataclasses.replace(audio, **audio_changes),
    )


def fields(violations) -> set[str]:
    return {v.field for v in violations}


SHORTS = load_channels().get("youtube-shorts")


def test_a_compliant_file_has_no_violations():
    assert check_media(media(), SHORTS, loudness=GOOD_LOUDNESS, size_bytes=10_000_000) == []


def test_each_limit_is_reported_with_field_limit_and_actual():
    found = check_media(
        media(1280, 720, duration=200.0, video_codec="hevc", video_pix_fmt="yuv444p", video_fps=120.0,
              audio_sample_rate=44100, audio_channels=1, audio_codec="mp3"),
        SHORTS,
        loudness=Loudness(integrated_lufs=-20.0, true_peak_db=0.5, lra=3.0, threshold=-30.0),
        size_bytes=300_000_000_000,
    )  # fmt: skip
    assert fields(found) == {
        "width", "video_codec", "pix_fmt", "max_fps", "max_duration_s", "max_bytes", "audio_codec",
        "audio_rate", "audio_channels", "loudness_lufs", "true_peak_db",
    }  # fmt: skip
    size = next(v for v in found if v.field == "width")
    assert (size.limit, size.actual) == ("1080x1920", "1280x720") and "youtube-shorts" in size.message
    duration = next(v for v in found if v.field == "max_duration_s")
    assert (duration.limit, duration.actual) == ("180", "200")


def test_tolerances_at_the_edges():
    spec = SHORTS
    # 180.04 s is within a frame of 3 min; loudness 0.9 LU off and TP 0.4 over are accepted.
    edge = Loudness(integrated_lufs=-14.9, true_peak_db=-0.6, lra=3.0, threshold=-24.0)
    assert check_media(media(duration=180.04), spec, loudness=edge, size_bytes=1) == []
    over = Loudness(integrated_lufs=-15.1, true_peak_db=-0.4, lra=3.0, threshold=-24.0)
    assert fields(check_media(media(duration=180.2), spec, loudness=over, size_bytes=1)) == {
        "max_duration_s", "loudness_lufs", "true_peak_db",
    }  # fmt: skip


def test_minimums_and_missing_streams():
    reels = load_channels().get("instagram-reels")
    info = dataclasses.replace(media(duration=2.0), audio=None)
    assert fields(check_media(info, reels, loudness=None, size_bytes=1)) == {"min_duration_s", "audio"}
    low_fps = media(video_fps=15.0)
    assert fields(check_media(low_fps, reels, loudness=GOOD_LOUDNESS, size_bytes=1)) == {"min_fps"}
    silent = Loudness(integrated_lufs=float("-inf"), true_peak_db=float("-inf"), lra=0, threshold=-70)
    assert fields(check_media(media(), reels, loudness=silent, size_bytes=1)) == {"loudness_lufs"}


def test_master_is_held_to_the_render_size_when_given():
    master = load_channels().get("master")
    assert check_media(media(2048, 2048), master, loudness=GOOD_LOUDNESS, size_bytes=1) == []
    found = check_media(
        media(2048, 2048), master, loudness=GOOD_LOUDNESS, size_bytes=1, expected_size=(1024, 1024)
    )
    assert fields(found) == {"width"}


def test_keyframe_gaps_include_the_end_of_the_file():
    x = load_channels().get("x")  # one every 2 s
    assert check_keyframes([0.0, 2.0, 4.0], 6.0, 30.0, x) == []
    assert check_keyframes([0.0, 2.0, 4.0], 6.5, 30.0, x)[0].actual == "2.5"
    assert check_keyframes([0.0, 3.0], 4.0, 30.0, x)[0].actual == "3"
    assert check_keyframes([], 4.0, 30.0, x)[0].actual == "none"
    shorts = load_channels().get("youtube-shorts")  # half a second: 12 frames at 25 fps is 0.48 s
    assert check_keyframes([i * 0.48 for i in range(10)], 4.8, 25.0, shorts) == []


def test_packet_probe_reads_under_the_guard():
    argv = packet_flags_probe_args("x.mp4")
    assert argv[-2:] == ["-i", "file:x.mp4"] and "-format_whitelist" in argv and "-protocol_whitelist" in argv


def test_layout_wants_the_index_first():
    assert check_layout(["ftyp", "moov", "mdat"], SHORTS) == []
    assert fields(check_layout(["ftyp", "mdat", "moov"], SHORTS)) == {"faststart"}


# ---------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate = long_speech(4.0)
    path = tmp_path_factory.mktemp("validate") / "speech.wav"
    write_wav(path, samples, rate)
    return path


def make_video(
    out: Path, speech: Path, *, size: str, audio_filter: str, faststart: bool = True, gop: int = 60
) -> Path:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30", "-i", str(speech),
         "-af", f"aformat=channel_layouts=stereo:sample_rates=48000,{audio_filter}",
         "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high", "-pix_fmt", "yuv420p",
         "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
         "-c:a", "aac", "-b:a", "192k", "-t", "4",
         *(["-movflags", "+faststart"] if faststart else []), str(out)],
        check=True, timeout=120,
    )  # fmt: skip
    return out


def test_a_720p_file_against_shorts_fails_on_size_only(speech_wav, tmp_path):
    plan = normalization_for(speech_wav, target_lufs=-14.0, true_peak_db=-1.0)
    # Keyframes every 0.5 s as YouTube asks, so the size is the only thing wrong.
    video = make_video(tmp_path / "wide.mp4", speech_wav, size="1280x720", audio_filter=plan.filter, gop=15)
    result = validate_file(video, SHORTS)
    assert not result.ok and fields(result.violations) == {"width"}
    assert result.loudness is not None and abs(result.loudness.integrated_lufs + 14) <= 0.5
    assert "1280x720" in result.summary


def test_a_compliant_file_is_ok(speech_wav, tmp_path):
    x = load_channels().get("x")
    plan = normalization_for(speech_wav, target_lufs=x.loudness_lufs, true_peak_db=x.true_peak_db)
    video = make_video(tmp_path / "x.mp4", speech_wav, size="1280x720", audio_filter=plan.filter)
    result = validate_file(video, x)
    assert result.ok, result.summary
    assert result.info.video is not None and result.info.video.width == 1280
    assert "faststart" in result.checked and "loudness_lufs" in result.checked


def test_no_faststart_and_unnormalised_audio_are_caught(speech_wav, tmp_path):
    x = load_channels().get("x")
    video = make_video(
        tmp_path / "raw.mp4", speech_wav, size="1280x720", audio_filter="anull", faststart=False
    )
    assert top_level_boxes(video).index("mdat") < top_level_boxes(video).index("moov")
    result = validate_file(video, x)
    assert fields(result.violations) >= {"faststart", "loudness_lufs"}
    assert np.isfinite(result.loudness.integrated_lufs)  # type: ignore[union-attr]
