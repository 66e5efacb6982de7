"""The pure argument builders: list equalities, no processes."""

from __future__ import annotations

from fractions import Fraction

import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.media.encode import AudioInput, encode_args
from talkfactory.infra.media.encoders import trial_args


def test_rate_snaps_ntsc_floats_and_keeps_exact_forms():
    assert a.rate(25) == "25"
    assert a.rate(25.0) == "25"
    assert a.rate(30000 / 1001) == "30000/1001"
    assert a.rate(24000 / 1001) == "24000/1001"
    assert a.rate(Fraction(30000, 1001)) == "30000/1001"
    assert a.rate("30000/1001") == "30000/1001"
    assert a.rate(12.5) == "25/2"
    assert a.to_fraction(29.97) == Fraction(2997, 100)


@pytest.mark.parametrize("bad", [0, -25, "abc", "1/0"])
def test_rate_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        a.rate(bad)


def test_seconds_formatting():
    assert a.seconds(3) == "3"
    assert a.seconds(1.5) == "1.5"
    assert a.seconds(1001 / 30000) == "0.033367"
    assert a.seconds(0) == "0"
    with pytest.raises(ValueError):
        a.seconds(-1)


def test_global_options():
    assert a.global_options() == ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    assert a.global_options(loglevel="warning", overwrite=False)[-1] == "-n"


GUARD = ["-protocol_whitelist", "file", "-format_whitelist", ",".join([*a.MEDIA_DEMUXERS, "image2"])]


def test_input_file_with_seek_and_duration():
    assert a.input_file("in.flv") == [*GUARD, "-i", "file:in.flv"]
    assert a.input_file("in.flv", start=1.5, duration=2) == [
        "-ss",
        "1.5",
        "-t",
        "2",
        *GUARD,
        "-i",
        "file:in.flv",
    ]
    assert a.input_file("in.flv", start=0) == [*GUARD, "-i", "file:in.flv"]
    assert a.input_file("x.raw", fmt="s16le") == [
        "-f", "s16le", "-protocol_whitelist", "file", "-format_whitelist", "s16le", "-i", "file:x.raw",
    ]  # fmt: skip


def test_every_path_is_a_file_url():
    # A leading dash is never an option, a colon never a protocol; pipes stay pipes.
    assert a.input_file("-weird.flv")[-2:] == ["-i", "file:-weird.flv"]
    assert a.input_file("http:x.flv")[-1] == "file:http:x.flv"
    assert a.input_file("file:already.flv")[-1] == "file:already.flv"
    assert a.mp4_output("-o.mp4") == ["-f", "mp4", "file:-o.mp4"]
    assert a.wav_output("-o.wav")[-1] == "file:-o.wav"
    assert a.pcm_s16le_output()[-1] == "pipe:1"
    assert a.probe_args("-x.flv")[-2:] == ["-i", "file:-x.flv"]


def test_playlists_and_file_lists_are_not_accepted_demuxers():
    for refused in ("hls", "concat", "dash", "image2", "lavfi", "tee", "sdp", "rtsp"):
        assert refused not in a.MEDIA_DEMUXERS
    for accepted in ("flv", "mov", "matroska", "mpegts", "wav", "png_pipe", "jpeg_pipe"):
        assert accepted in a.MEDIA_DEMUXERS
    assert a.probe_args("r.flv")[3:7] == GUARD


def test_image2_only_for_names_it_cannot_expand_into_other_files():
    assert "image2" in a.demuxers_for("portrait.jpg")  # how ffmpeg opens a .jpg by its name
    for name in ("x%d.jpg", "x*.jpg", "x[1].jpg", "x?.jpg", "x{a,b}.jpg"):
        assert "image2" not in a.demuxers_for(name), name
        assert "image2" not in a.input_file(name)[3]


def test_rawvideo_pipe_input():
    assert a.rawvideo_input(width=320, height=240, fps=30000 / 1001) == [
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "320x240", "-r", "30000/1001",
        "-protocol_whitelist", "pipe", "-format_whitelist", "rawvideo", "-i", "pipe:0",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        a.rawvideo_input(width=0, height=240, fps=25)


def test_audio_only_extraction_to_s16le():
    argv = a.concat(
        a.input_file("rec.flv"),
        a.audio_extraction(sample_rate=16000, channels=1),
        a.pcm_s16le_output("out.raw"),
    )
    assert argv == [
        *GUARD, "-i", "file:rec.flv", "-vn", "-map", "0:a:0", "-ac", "1", "-ar", "16000",
        "-c:a", "pcm_s16le", "-f", "s16le", "file:out.raw",
    ]  # fmt: skip
    assert a.pcm_s16le_output() == ["-c:a", "pcm_s16le", "-f", "s16le", "pipe:1"]
    assert a.wav_output("o.wav") == ["-c:a", "pcm_s16le", "-f", "wav", "file:o.wav"]


def test_map_choices():
    assert a.map_video() == ["-map", "0:v:0"]
    assert a.map_audio(1, 2) == ["-map", "1:a:2"]
    assert a.map_audio(1, optional=True) == ["-map", "1:a:0?"]
    assert a.map_stream("0:1") == ["-map", "0:1"]
    assert a.no_video() == ["-vn"]
    assert a.no_audio() == ["-an"]


def test_filters():
    assert a.fps_filter(25) == "fps=25"
    assert a.fps_filter(30000 / 1001) == "fps=30000/1001"
    assert a.scale_filter(320, 240) == "scale=320:240"
    assert a.even_pad_filter() == "pad=ceil(iw/2)*2:ceil(ih/2)*2"
    assert a.async_resample_filter() == "aresample=async=1:first_pts=0"
    assert a.async_resample_filter(first_pts=None) == "aresample=async=1"
    assert a.video_filter("fps=25", "", "scale=2:2") == ["-vf", "fps=25,scale=2:2"]


def test_frame_decode_to_pipe():
    argv = a.concat(
        a.input_file("t.mp4"),
        a.map_video(),
        a.video_filter(a.fps_filter(30000 / 1001)),
        a.passthrough_timing(),
        a.rawvideo_output(),
    )
    assert argv == [
        *GUARD, "-i", "file:t.mp4", "-map", "0:v:0", "-vf", "fps=30000/1001", "-fps_mode", "passthrough",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1",
    ]  # fmt: skip


def test_concat_merges_repeated_filters_in_place():
    argv = a.concat(
        ["-i", "in"],
        a.video_filter("fps=25"),
        a.audio_filter("aresample=async=1"),
        ["-c:v", "libx264"],
        a.video_filter("scale=320:240"),
        ["-filter:v", "format=yuv420p"],
        a.audio_filter("apad"),
        ["out.mp4"],
    )
    assert argv == [
        "-i", "in", "-vf", "fps=25,scale=320:240,format=yuv420p", "-af", "aresample=async=1,apad",
        "-c:v", "libx264", "out.mp4",
    ]  # fmt: skip


def test_concat_drops_empty_filter_fragments_and_keeps_plain_lists():
    assert a.concat(["-i", "x"], a.video_filter(), ["o"]) == ["-i", "x", "o"]
    assert a.concat(["-i", "x"], [], ["-t", "1"]) == ["-i", "x", "-t", "1"]


def test_libx264_high_profile_args():
    assert a.h264_encoder("libx264", crf=23, preset="veryfast") == [
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-profile:v", "high",
    ]  # fmt: skip


def test_nvenc_args_map_preset_and_quality():
    assert a.h264_encoder("h264_nvenc", crf=23, preset="medium") == [
        "-c:v", "h264_nvenc", "-preset", "p4", "-rc", "vbr", "-cq", "23", "-b:v", "0", "-profile:v", "high",
    ]  # fmt: skip
    assert a.nvenc_preset("veryfast") == "p3"
    assert a.nvenc_preset("p7") == "p7"


@pytest.mark.parametrize(
    "call",
    [
        lambda: a.h264_encoder("libx265"),
        lambda: a.h264_encoder("libx264", preset="warp"),
        lambda: a.h264_encoder("libx264", crf=60),
        lambda: a.nvenc_preset("p9"),
    ],
)
def test_encoder_args_reject_bad_settings(call):
    with pytest.raises(ConfigurationError):
        call()


def test_output_fragments():
    assert a.pixel_format() == ["-pix_fmt", "yuv420p"]
    assert a.aac_audio() == ["-c:a", "aac", "-b:a", "128k"]
    assert a.faststart() == ["-movflags", "+faststart"]
    assert a.output_duration(12.04) == ["-t", "12.04"]
    assert a.frame_limit(10) == ["-frames:v", "10"]
    assert a.mp4_output("o.mp4") == ["-f", "mp4", "file:o.mp4"]
    assert a.null_output() == ["-f", "null", "-"]
    assert a.lavfi_input("testsrc") == ["-f", "lavfi", "-i", "testsrc"]
    assert a.bt709_tags() == ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
    assert a.bt601_tags()[:2] == ["-colorspace", "smpte170m"]
    assert a.bt709_filter() == "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd"


def test_encode_args_with_audio_odd_size_and_duration():
    argv = encode_args(
        "tmp.mp4",
        width=321,
        height=241,
        fps=30000 / 1001,
        audio=AudioInput("rec.flv", stream_index=1, start=2.0, duration=10.0),
        duration=10.0,
        crf=20,
        preset="veryfast",
    )
    assert argv == [
        "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "322x242", "-r", "30000/1001",
        "-protocol_whitelist", "pipe", "-format_whitelist", "rawvideo", "-i", "pipe:0",
        "-ss", "2", "-t", "10", *GUARD, "-i", "file:rec.flv",
        "-map", "0:v:0", "-map", "1:1",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-profile:v", "high",
        "-pix_fmt", "yuv420p",
        "-colorspace", "smpte170m", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
        "-af", "aresample=async=1:first_pts=0,apad", "-c:a", "aac", "-b:a", "128k",
        "-t", "10", "-movflags", "+faststart", "-f", "mp4", "file:tmp.mp4",
    ]  # fmt: skip


def test_encode_args_even_size_no_audio_has_no_audio_options():
    argv = encode_args("o.mp4", width=320, height=240, fps=25)
    assert argv[argv.index("-s") + 1] == "320x240"
    assert "-af" not in argv and "-c:a" not in argv and "-t" not in argv and "-vf" not in argv
    assert argv[-5:] == ["-movflags", "+faststart", "-f", "mp4", "file:o.mp4"]


def test_encode_args_without_duration_never_pads_audio_forever():
    argv = encode_args("o.mp4", width=320, height=240, fps=25, audio=AudioInput("a.flv"))
    assert argv[argv.index("-af") + 1] == "aresample=async=1:first_pts=0"
    assert argv[argv.index("1:a:0") - 1] == "-map"  # no stream index: the first audio stream


def test_nvenc_trial_command():
    assert trial_args("h264_nvenc") == [
        "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc=size=256x256:rate=25", "-t", "0.1",
        "-c:v", "h264_nvenc", "-pix_fmt", "yuv420p", "-f", "null", "-",
    ]  # fmt: skip
