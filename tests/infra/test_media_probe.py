"""Probing: pure parsing of ffprobe JSON, then real files (made with lavfi) and every way to be unusable."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from talkfactory.errors import InvalidMediaError, MediaNotFoundError
from talkfactory.infra.media.probe import MediaInfo, parse_ffprobe, probe
from tests.fixtures.media_io import media_files_fixture  # noqa: F401

NTSC_FLV = {
    "streams": [
        {
            "index": 0, "codec_name": "h264", "profile": "High", "codec_type": "video", "width": 1280,
            "height": 720, "pix_fmt": "yuv420p", "r_frame_rate": "30000/1001", "avg_frame_rate": "989/33",
            "time_base": "1/1000", "start_time": "0.067000", "disposition": {"attached_pic": 0},
        },
        {
            "index": 1, "codec_name": "aac", "profile": "LC", "codec_type": "audio", "sample_rate": "44100",
            "channels": 2, "channel_layout": "stereo", "r_frame_rate": "0/0", "avg_frame_rate": "0/0",
            "start_time": "0.044000", "bit_rate": "128000",
        },
    ],
    "format": {
        "filename": "rec.flv", "nb_streams": 2, "format_name": "flv", "start_time": "0.044000",
        "duration": "7200.070000", "size": "1932735283", "bit_rate": "2147000",
    },
}  # fmt: skip

PNG = {
    "streams": [
        {
            "index": 0, "codec_name": "png", "codec_type": "video", "width": 512, "height": 512,
            "pix_fmt": "rgba", "r_frame_rate": "25/1", "avg_frame_rate": "25/1",
        }
    ],
    "format": {"filename": "face.mp4", "format_name": "png_pipe", "size": "301234"},
}  # fmt: skip

VFR_PHONE = {
    "streams": [
        {
            "index": 0, "codec_name": "h264", "profile": "High", "codec_type": "video", "width": 1920,
            "height": 1080, "pix_fmt": "yuv420p", "r_frame_rate": "30/1", "avg_frame_rate": "2700/113",
            "duration": "11.300000", "nb_frames": "270", "start_time": "0.000000",
            "side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}],
        },
        {
            "index": 1, "codec_name": "aac", "codec_type": "audio", "sample_rate": "48000", "channels": 1,
            "channel_layout": "mono", "duration": "11.306667", "start_time": "0.000000",
        },
    ],
    "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "11.306667", "size": "7000000"},
}  # fmt: skip

AUDIO_WITH_COVER = {
    "streams": [
        {"index": 0, "codec_name": "mp3", "codec_type": "audio", "sample_rate": "44100", "channels": 2,
         "channel_layout": "stereo", "duration": "180.0", "start_time": "0.025057"},
        {"index": 1, "codec_name": "mjpeg", "codec_type": "video", "width": 600, "height": 600,
         "r_frame_rate": "90000/1", "avg_frame_rate": "0/0", "disposition": {"attached_pic": 1}},
    ],
    "format": {"format_name": "mp3", "duration": "180.0", "size": "2880000", "bit_rate": "128000"},
}  # fmt: skip


def test_parse_ntsc_flv():
    info = parse_ffprobe(NTSC_FLV, "rec.flv")
    v, au = info.video, info.audio
    assert v is not None and au is not None
    assert (v.codec, v.profile, v.width, v.height, v.pix_fmt) == ("h264", "High", 1280, 720, "yuv420p")
    assert v.r_fps == Fraction(30000, 1001) and v.avg_fps == Fraction(989, 33)
    assert not v.is_vfr
    assert v.rate == Fraction(30000, 1001) and v.fps == pytest.approx(29.97003)
    assert (au.codec, au.sample_rate, au.channels, au.channel_layout) == ("aac", 44100, 2, "stereo")
    assert info.duration == 7200.07 and info.size_bytes == 1932735283 and info.bit_rate == 2147000
    assert info.audio_offset == pytest.approx(-0.023)
    assert not info.is_image and not v.has_alpha and v.rotation == 0


def test_parse_image_even_with_a_video_extension():
    info = parse_ffprobe(PNG, "face.mp4")
    assert info.is_image
    assert info.video is not None and info.video.has_alpha
    assert info.audio is None and info.duration is None


def test_parse_vfr_and_rotation():
    info = parse_ffprobe(VFR_PHONE, "phone.mp4")
    v = info.video
    assert v is not None and v.is_vfr
    assert v.fps == pytest.approx(2700 / 113) and v.rate == Fraction(2700, 113)
    assert v.nb_frames == 270 and v.duration == 11.3
    assert v.rotation == 90 and (v.display_width, v.display_height) == (1080, 1920)


def test_parse_audio_only_skips_cover_art():
    info = parse_ffprobe(AUDIO_WITH_COVER, "song.mp3")
    assert info.video is None and info.audio is not None
    assert info.audio.codec == "mp3" and not info.is_image
    assert info.audio_offset == 0.0


def test_parse_rejects_files_without_audio_or_video():
    data = {"streams": [{"index": 0, "codec_type": "data"}], "format": {"format_name": "flv"}}
    with pytest.raises(InvalidMediaError, match="no audio or video stream .only data streams"):
        parse_ffprobe(data, "x.flv")
    with pytest.raises(InvalidMediaError):
        parse_ffprobe({}, "x.flv")


def test_to_dict_is_json_ready():
    data = parse_ffprobe(NTSC_FLV, "rec.flv").to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["video"]["r_fps"] == "30000/1001" and data["audio"]["sample_rate"] == 44100


def test_parse_tolerates_missing_and_na_fields():
    data = {
        "streams": [{"index": 0, "codec_type": "video", "r_frame_rate": "0/0", "avg_frame_rate": "N/A"}],
        "format": {"format_name": "flv", "duration": "N/A"},
    }
    info = parse_ffprobe(data, "x.flv")
    assert info.video is not None and info.video.fps == 0.0 and info.duration is None


# ---------------------------------------------------------------- real files


def test_probe_flv_with_h264_and_aac(media_files):
    info = probe(media_files.flv)
    assert info.format_name == "flv" and not info.is_image
    assert info.video is not None and info.audio is not None
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 160, 120)
    assert info.video.rate == 25 and not info.video.is_vfr
    assert (info.audio.codec, info.audio.sample_rate, info.audio.channels) == ("aac", 44100, 1)
    assert info.duration == pytest.approx(3.0, abs=0.1)
    assert info.size_bytes == media_files.flv.stat().st_size


def test_probe_ntsc_rate_is_exact(media_files):
    for path in (media_files.flv_2997, media_files.mp4_2997):
        info = probe(path)
        assert info.video is not None and info.video.rate == Fraction(30000, 1001), path


def test_probe_detects_vfr(media_files):
    info = probe(media_files.vfr)
    assert info.video is not None and info.video.is_vfr


def test_probe_audio_only(media_files):
    info = probe(media_files.audio_only)
    assert info.video is None and info.audio is not None
    assert (info.audio.sample_rate, info.audio.channels) == (48000, 2)


@pytest.mark.parametrize("name", ["png", "jpeg_as_flv", "png_as_mp4", "webp"])
def test_images_probe_as_images_whatever_their_extension(media_files, name):
    info = probe(getattr(media_files, name))
    assert info.is_image
    assert info.video is not None and (info.video.width, info.video.height) == (160, 120)


def test_pyav_fallback_gives_the_same_answer(media_files):
    for path in (media_files.flv, media_files.flv_2997, media_files.png_as_mp4, media_files.audio_only):
        assert probe(path, backend="pyav") == probe(path, backend="ffprobe"), path


def test_pyav_is_used_when_there_is_no_ffprobe(media_files, monkeypatch):
    import talkfactory.infra.media.probe as probe_module

    monkeypatch.setattr(probe_module, "ffprobe_exe", lambda: None)
    info = probe(media_files.flv)
    assert info.video is not None and info.video.rate == 25
    with pytest.raises(InvalidMediaError, match="text, not media"):
        probe(media_files.text_flv)


def test_missing_file(tmp_path):
    with pytest.raises(MediaNotFoundError) as info:
        probe(tmp_path / "nope.flv")
    assert isinstance(info.value, FileNotFoundError)


def test_zero_byte_file(media_files):
    with pytest.raises(InvalidMediaError, match=r"file is empty \(0 bytes\)"):
        probe(media_files.empty_flv)


def test_text_file_named_flv_names_the_cause(media_files):
    with pytest.raises(InvalidMediaError) as info:
        probe(media_files.text_flv)
    message = str(info.value)
    assert "text, not media" in message and "hello" in message
    assert "Invalid data found when processing input" in message
    assert info.value.subject == str(media_files.text_flv)


def test_truncated_flv_still_probes(media_files):
    info = probe(media_files.truncated_flv)
    assert info.audio is not None and info.video is not None


def test_binary_garbage_is_invalid(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(InvalidMediaError):
        probe(junk)


def test_probe_result_is_frozen(media_files):
    info: MediaInfo = probe(media_files.png)
    with pytest.raises(AttributeError):
        info.is_image = False  # type: ignore[misc]
