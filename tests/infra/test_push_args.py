"""Live push, the pure parts: URL masking and key references, ffmpeg arguments, packets and progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.infra.live.packets import parse_packets
from talkfactory.infra.live.push import file_position, parse_progress
from talkfactory.infra.live.push_args import (
    PUSH_PROTOCOLS,
    LiveLimits,
    concat_input,
    copy_streams,
    ffconcat,
    fit_within,
    flv_output,
    live_encode,
    plan_encode,
)
from talkfactory.infra.live.urls import is_reference, mask_url, redact, resolve_target

KEY = "abcd-1234-SECRET"


# ------------------------------------------------------------------------------------------ masking


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"rtmp://a.rtmp.youtube.com/live2/{KEY}", "rtmp://a.rtmp.youtube.com:1935/live2/****"),
        (
            f"rtmps://live-api-s.facebook.com:443/rtmp/{KEY}?s_bl=1",
            "rtmps://live-api-s.facebook.com:443/rtmp/****",
        ),
        (f"rtmp://user:{KEY}@host:19350/live/x", "rtmp://host:19350/live/****"),
        ("rtmp://host/live", "rtmp://host:1935/live/****"),
        (KEY, "****"),
    ],
)
def test_mask_url_keeps_host_port_and_app_only(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert KEY not in mask_url(url)


def test_target_never_shows_its_key_in_repr_or_str() -> None:
    target = resolve_target(f"rtmp://127.0.0.1:1935/live/{KEY}")
    assert target.url.endswith(KEY)
    assert KEY not in repr(target) and KEY not in str(target) and KEY not in f"{target}"
    assert str(target) == "rtmp://127.0.0.1:1935/live/****"
    assert (target.scheme, target.host, target.port, target.app) == ("rtmp", "127.0.0.1", 1935, "live")


def test_whole_url_and_key_alone_come_from_a_variable_or_a_file(tmp_path: Path) -> None:
    env = {"LIVE_URL": f"rtmp://h:1/app/{KEY}", "LIVE_KEY": KEY}
    assert resolve_target("env:LIVE_URL", env=env).url == f"rtmp://h:1/app/{KEY}"
    assert resolve_target("rtmp://h:1/app/env:LIVE_KEY", env=env).url == f"rtmp://h:1/app/{KEY}"
    secret = tmp_path / "key"
    secret.write_text(f"\n  {KEY}  \nsecond line ignored\n")
    assert resolve_target(f"rtmp://h:1/app/file:{secret}", env={}).url == f"rtmp://h:1/app/{KEY}"
    whole = tmp_path / "url"
    whole.write_text(f"rtmps://h/app/{KEY}\n")
    target = resolve_target(f"file:{whole}", env={})
    assert target.url == f"rtmps://h/app/{KEY}" and target.port == 443
    assert (
        is_reference("env:LIVE_URL") and is_reference("rtmp://h/app/env:K") and is_reference(f"file:{whole}")
    )
    assert not is_reference(f"rtmp://h/app/{KEY}")
    facebook = resolve_target("rtmps://fb:443/rtmp/env:FB", env={"FB": f"FB-{KEY}?s_bl=1&s_sc=FB-9&a=Abc"})
    assert facebook.url == f"rtmps://fb:443/rtmp/FB-{KEY}?s_bl=1&s_sc=FB-9&a=Abc"
    assert redact(f"to {facebook.url}: I/O error", facebook) == "to rtmps://fb:443/rtmp/****: I/O error"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            "env:NOT_SET_ANYWHERE",
            "env:NOT_SET_ANYWHERE: the push URL was to come from this environment variable",
        ),
        ("rtmp://h/app/env:NOPE", "env:NOPE: the stream key was to come from"),
        ("file:/no/such/file", "file:/no/such/file: the push URL file cannot be read"),
        (f"http://h/app/{KEY}", "http://h/app/****: a push goes to rtmp:// or rtmps://"),
        ("rtmp://h/app/", "rtmp://h:1935/app/****: the URL has no stream key"),
        ("rtmp:///app/x", "the URL names no host"),
    ],
)
def test_unusable_urls_are_configuration_errors_without_the_key(spec: str, says: str | None) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_target(spec, env={"OTHER": KEY})
    assert KEY not in str(caught.value)
    if says is not None:
        assert says in str(caught.value)


def test_redact_removes_the_key_in_every_spelling_and_any_push_url() -> None:
    target = resolve_target(f"rtmp://127.0.0.1:1/live/{KEY}%2Fx")
    text = (
        f"rtmp://127.0.0.1:1/live/{KEY}%2Fx: Connection refused\n"
        f"[rtmp] publishing {KEY}/x ({KEY}%2Fx)\n"
        f"Output #0, flv, to 'rtmps://other.host/app/{KEY}?token=zzz'"
    )
    clean = redact(text, target)
    assert KEY not in clean and "zzz" not in clean
    assert "rtmp://127.0.0.1:1/live/****: Connection refused" in clean
    assert "'rtmps://other.host/app/****'" in clean
    assert redact(clean, target) == clean


# ------------------------------------------------------------------------------------------ argv


def test_concat_input_reads_only_plain_names_beside_the_list_at_real_time() -> None:
    argv = concat_input("/tmp/x/list.ffconcat")
    assert argv[:6] == ["-re", "-f", "concat", "-safe", "1", "-protocol_whitelist"]
    assert argv[6] == "file"
    formats = argv[argv.index("-format_whitelist") + 1].split(",")
    assert "concat" in formats and "mov" in formats and "hls" not in formats and "image2" not in formats
    assert argv[-2:] == ["-i", "file:/tmp/x/list.ffconcat"]
    assert "-re" not in concat_input("l", realtime=False)


def test_ffconcat_lists_safe_names_and_refuses_others() -> None:
    assert ffconcat(["0000.mp4", "0001.mp4"], [3.0, None]) == (
        "ffconcat version 1.0\nfile 0000.mp4\nduration 3\nfile 0001.mp4\n"
    )
    for bad in ("../x.mp4", "/abs.mp4", ".hidden", "a b.mp4", "x'y.mp4", ""):
        with pytest.raises(ValueError):
            ffconcat([bad])


def test_flv_output_writes_only_through_rtmp_with_a_socket_timeout() -> None:
    argv = flv_output("rtmp://h/app/k", rw_timeout_s=2.5)
    assert argv == [
        "-f", "flv", "-flvflags", "no_duration_filesize", "-rw_timeout", "2500000",
        "-protocol_whitelist", PUSH_PROTOCOLS, "rtmp://h/app/k",
    ]  # fmt: skip
    assert flv_output("u", rw_timeout_s=1, send_buffer_bytes=65536)[6:8] == ["-send_buffer_size", "65536"]
    with pytest.raises(ValueError):
        flv_output("u", rw_timeout_s=0)
    tls = flv_output("rtmps://h/app/k", rw_timeout_s=1, ca_file="/ca.pem")
    assert tls[6:10] == ["-tls_verify", "1", "-ca_file", "/ca.pem"]
    assert flv_output("rtmps://h/app/k", rw_timeout_s=1, verify_tls=False)[6:8] == ["-tls_verify", "0"]
    assert "-tls_verify" not in flv_output("rtmp://h/app/k", rw_timeout_s=1)
    assert copy_streams() == ["-map", "0:v:0", "-map", "0:a:0", "-c", "copy"]


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [
        ((2048, 2048), (1920, 1080), (1080, 1080)),
        ((3840, 2160), (1920, 1080), (1920, 1080)),
        ((1080, 1920), (1920, 1080), (606, 1080)),
        ((1280, 720), (1920, 1080), (1280, 720)),
        ((1281, 721), (None, None), (1280, 720)),
    ],
)
def test_fit_within_keeps_aspect_even_and_never_upscales(
    size: tuple[int, int], limit: tuple[int | None, int | None], expected: tuple[int, int]
) -> None:
    assert fit_within(*size, *limit) == expected


def test_plan_encode_caps_rate_and_sets_the_keyframe_interval() -> None:
    limits = LiveLimits(max_width=1280, max_height=720, max_fps=30, video_maxrate_kbps=3000)
    enc = plan_encode(limits, width=1920, height=1080, fps=60)
    assert (enc.width, enc.height, enc.fps, enc.gop_frames, enc.video_kbps) == (1280, 720, "30", 60, 3000)
    ntsc = plan_encode(limits, width=640, height=360, fps=30000 / 1001)
    assert ntsc.fps == "30000/1001" and ntsc.gop_frames == 59
    argv = live_encode(enc)
    expected = {"-g": "60", "-keyint_min": "60", "-sc_threshold": "0", "-maxrate": "3000k",
                "-bufsize": "6000k", "-ar": "48000", "-c:a": "aac", "-profile:v": "high"}  # fmt: skip
    for flag, value in expected.items():
        assert argv[argv.index(flag) + 1] == value
    assert "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720" in argv[argv.index("-vf") + 1]
    nv = live_encode(plan_encode(limits, width=1280, height=720, fps=25, encoder="h264_nvenc"))
    assert nv[nv.index("-c:v") + 1] == "h264_nvenc" and "-no-scenecut" in nv


def test_live_limits_refuse_impossible_values() -> None:
    with pytest.raises(ValueError):
        LiveLimits(max_fps=0)
    with pytest.raises(ValueError):
        LiveLimits(keyframe_interval_s=0)


# ------------------------------------------------------------------------------------------ parsing


def _packets(seconds: float, fps: int, gop_s: float, size: int) -> str:
    lines = []
    gop = round(gop_s * fps)
    for i in range(round(seconds * fps)):
        key = i % gop == 0
        lines.append(f"{i / fps:.6f},{1 / fps:.6f},{size * 5 if key else size},{'K_' if key else '__'}")
    return "\n".join(lines)


def test_parse_packets_measures_keyframe_gaps_and_peak_bitrate() -> None:
    stats = parse_packets(_packets(10, 25, 2.0, 5000))
    assert stats.packets == 250
    assert stats.max_keyframe_gap_s == pytest.approx(2.0)
    assert stats.frame_s == pytest.approx(0.04)
    # 2 s windows hold 50 packets, one of them a 5x keyframe: 54 * 5000 bytes * 8 / 2 s.
    assert stats.peak_kbps == pytest.approx(54 * 5000 * 8 / 2 / 1000, rel=0.03)
    assert stats.mean_kbps == pytest.approx(stats.peak_kbps, rel=0.05)
    assert parse_packets(_packets(10, 25, 4.0, 100)).max_keyframe_gap_s == pytest.approx(4.0)
    junk = parse_packets("N/A,N/A,12,K_\nnot,a,line\n")
    assert junk.packets == 0 and junk.max_keyframe_gap_s is None


def test_progress_blocks_and_file_positions() -> None:
    block = {"out_time_us": "4500000", "total_size": "123456", "speed": "1.01x", "progress": "continue"}
    assert parse_progress(block) == (4.5, 123456, 1.01)
    assert parse_progress({"out_time_us": "N/A", "speed": "N/A"}) == (None, None, None)
    durations = [3.0, 3.0, 3.0]
    assert file_position(durations, 0.0) == (0, None)
    assert file_position(durations, 1.2) == (0, 0)
    assert file_position(durations, 2.98) == (1, None)  # within tolerance of the boundary: file 1 whole
    assert file_position(durations, 4.5) == (1, 1)
    assert file_position(durations, 9.0) == (3, None)
