"""Live push against a real RTMP server (nginx + libnginx-mod-rtmp recording every stream).

Sources are made on the fly with ffmpeg: testsrc2 + a sine, H.264 with a keyframe every 2 s, AAC 48 kHz
stereo, a few seconds each. The server's own recording is the evidence: its duration, its timestamps,
its codecs. The planning rules and the retry arithmetic are tested without any process.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from talkfactory.errors import InvalidMediaError, MediaNotFoundError
from talkfactory.infra.lineage.base import Provenance
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.push_tables import LivePush, PushAttempt
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.tables import Avatar, Clip, Export, Recording, Render
from talkfactory.infra.live.packets import PacketStats, parse_packets
from talkfactory.infra.live.push import LivePushError
from talkfactory.infra.live.push_args import LiveLimits
from talkfactory.pipeline.live import (
    PushPolicy,
    SourceFacts,
    backoff_delay,
    channel_target,
    live_limits_of,
    next_start,
    plan_push,
    push_live,
)
from tests.fixtures.rtmp_server import RtmpServer, TlsRelay, rtmp_server, rtmps_relay  # noqa: F401

KEY = "tfKEY-7f3a9c1e55"
PROV = Provenance(flow_run_id="flow-live", code_version="test")
log = logging.getLogger(__name__)


Repo = LineageRepository
"""The lineage repository (the push queries are among its bases)."""


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    return Repo.from_url(url)


def make_source(path: Path, *, seconds: float, freq: int, gop_s: float = 2.0, size: str = "320x240") -> Path:
    fps = 25
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
            "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000",
            "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", str(round(gop_s * fps)), "-keyint_min", str(round(gop_s * fps)), "-sc_threshold", "0",
            "-c:a", "aac", "-ac", "2", "-ar", "48000", "-b:a", "96k", "-movflags", "+faststart",
            str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("push-sources")
    return {
        "a": make_source(root / "a.mp4", seconds=3, freq=440),
        "b": make_source(root / "b.mp4", seconds=4, freq=660),
        "c": make_source(root / "c.mp4", seconds=3, freq=880),
        "sparse": make_source(root / "sparse.mp4", seconds=5, freq=550, gop_s=4.0),
    }


def ffprobe_json(path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def recording_facts(path: Path) -> tuple[float, dict[str, str], dict[str, list[float]]]:
    """(duration, codec per stream kind, dts times per stream kind) of a server recording."""
    info = ffprobe_json(path, "-show_entries", "format=duration:stream=codec_type,codec_name")
    codecs = {s["codec_type"]: s["codec_name"] for s in info["streams"]}
    packets = ffprobe_json(path, "-show_entries", "packet=stream_index,codec_type,dts_time")["packets"]
    kinds = {i: s["codec_type"] for i, s in enumerate(info["streams"])}
    dts: dict[str, list[float]] = {}
    for p in packets:
        if p.get("dts_time") not in (None, "N/A"):
            dts.setdefault(kinds[p["stream_index"]], []).append(float(p["dts_time"]))
    return float(info["format"]["duration"]), codecs, dts


def keyframe_gaps(path: Path) -> float:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,duration_time,size,flags", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, timeout=60, text=True,
    )  # fmt: skip
    gap = parse_packets(result.stdout).max_keyframe_gap_s
    assert gap is not None
    return gap


# ------------------------------------------------------------------------------------------ pure


def _facts(name: str, **over: object) -> SourceFacts:
    base: dict[str, object] = dict(
        uri=f"/x/{name}", path=Path(f"/x/{name}"), duration_s=3.0, video_codec="h264", width=1280, height=720,
        fps=Fraction(25), pix_fmt="yuv420p", audio_codec="aac", audio_rate=48000, audio_channels=2,
        stats=PacketStats(packets=75, max_keyframe_gap_s=2.0, peak_kbps=2500, mean_kbps=2000, frame_s=0.04),
    )  # fmt: skip
    base.update(over)
    return SourceFacts(**base)  # type: ignore[arg-type]


def test_plan_copies_files_that_fit_and_share_one_format() -> None:
    plan = plan_push([_facts("a.mp4"), _facts("b.mp4", duration_s=4.0)], LiveLimits())
    assert plan.mode == "copy" and plan.reasons == () and plan.encode is None
    assert plan.total_s == pytest.approx(7.0)


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"video_codec": "hevc"}, "video is hevc; FLV ingest takes H.264"),
        ({"audio_codec": "opus"}, "audio is opus"),
        ({"width": 2048, "height": 2048}, "2048x2048 is larger than 1920x1080"),
        ({"fps": Fraction(60)}, "60 fps is over 30"),
        (
            {"stats": PacketStats(75, 4.0, 2500, 2000, 0.04)},
            "keyframes 4.00 s apart; the channel wants at most 2 s",
        ),
        (
            {"stats": PacketStats(75, 2.0, 9000, 8000, 0.04)},
            "video peaks at 9,000 kb/s; the cap is 6,000 kb/s",
        ),
        ({"audio_rate": 44100}, "audio at 44100 Hz; the channel wants 48000 Hz"),
    ],
)
def test_plan_reencodes_what_does_not_fit_and_says_why(over: dict[str, object], says: str) -> None:
    limits = LiveLimits(max_fps=30)
    plan = plan_push([_facts("ok.mp4"), _facts("bad.mp4", **over)], limits)
    assert plan.mode == "encode" and plan.encode is not None
    assert any(says in r and r.startswith("bad.mp4") for r in plan.reasons), plan.reasons
    assert plan.encode.gop_frames == 50 and plan.encode.fps == "25"


def test_plan_reencodes_files_of_different_formats_into_one() -> None:
    plan = plan_push([_facts("a.mp4"), _facts("b.mp4", width=1920, height=1080)], LiveLimits())
    assert plan.mode == "encode"
    assert "one stream keeps one format" in plan.reasons[0]
    assert plan.encode is not None and (plan.encode.width, plan.encode.height) == (1280, 720)


def test_resume_points_and_backoff() -> None:
    cut = LivePushError("x", subject="u", files_finished=1, file_on_air=1, pushed_s=4.5)
    assert next_start(0, cut, "next") == (2, 1)
    assert next_start(0, cut, "restart") == (1, None)
    nothing = LivePushError("x", subject="u", files_finished=0, file_on_air=None)
    assert next_start(2, nothing, "next") == (2, None)
    policy = PushPolicy(backoff_s=2, backoff_cap_s=5)
    assert [backoff_delay(policy, n) for n in (1, 2, 3, 4)] == [2, 4, 5, 5]


def test_channel_preset_maps_to_live_limits() -> None:
    class Spec:
        width, height, max_fps, video_maxrate_kbps, keyframe_interval_s, audio_rate = (
            1920,
            1080,
            30,
            8000,
            2,
            48000,
        )
        rtmp_video_maxrate_kbps = 4500

    limits = live_limits_of(Spec())
    assert (limits.max_width, limits.max_height, limits.max_fps) == (1920, 1080, 30)
    assert limits.video_maxrate_kbps == 4500 and limits.audio_rate == 48000

    class Live(Spec):
        kind, rtmp_url, rtmp_key, rtmp_max_bitrate_kbps = (
            "rtmp",
            "rtmp://a.rtmp.youtube.com/live2/",
            "env:YT",
            9000,
        )

    assert channel_target(Live()) == "rtmp://a.rtmp.youtube.com/live2/env:YT"
    assert live_limits_of(Live()).video_maxrate_kbps == 9000
    assert channel_target(Spec()) is None


def test_the_url_is_the_last_argument_when_it_looks_like_one() -> None:
    from talkfactory.cli.push import split_targets
    from talkfactory.errors import ConfigurationError

    assert split_targets(["a.mp4", "b.mp4", "rtmp://h/app/k"]) == (["a.mp4", "b.mp4"], "rtmp://h/app/k")
    assert split_targets(["a.mp4", "env:LIVE"]) == (["a.mp4"], "env:LIVE")
    assert split_targets(["a.mp4", "b.mp4"]) == (["a.mp4", "b.mp4"], None)  # URL from --channel
    with pytest.raises(ConfigurationError, match="nothing to push"):
        split_targets(["rtmps://h/app/k"])


# ------------------------------------------------------------------------------------------ real server


@pytest.mark.servers
def test_two_exports_back_to_back_make_one_continuous_recording(
    rtmp_server: RtmpServer,  # noqa: F811
    sources: dict[str, Path],
    repo: Repo,
) -> None:
    t0 = time.monotonic()
    report = push_live([str(sources["a"]), str(sources["b"])], rtmp_server.url(KEY), lineage=repo, prov=PROV)
    wall = time.monotonic() - t0
    assert report.status == "done" and report.mode == "copy", report
    assert report.files_done == 2 and len(report.attempts) == 1
    assert wall >= 6.5, f"not paced at real time: 7 s of media sent in {wall:.1f} s"
    rtmp_server.stop()  # graceful: nginx closes the recording
    [recording] = rtmp_server.recordings()
    duration, codecs, dts = recording_facts(recording)
    assert abs(duration - 7.0) <= 0.3, duration
    assert codecs == {"video": "h264", "audio": "aac"}
    for kind, times in dts.items():
        assert all(b >= a for a, b in zip(times, times[1:], strict=False)), f"{kind} timestamps go back"
    assert dts["video"][-1] > 6.5 and dts["audio"][-1] > 6.5
    assert keyframe_gaps(recording) <= 2.05
    push = repo.get_push(report.push_id or -1)
    assert push is not None and push.status == "done" and push.files_done == 2 and push.mode == "copy"
    assert push.target == rtmp_server.url("****") and push.flow_run_id == "flow-live"
    [attempt] = repo.push_attempts(push.id)
    assert attempt.status == "succeeded" and attempt.files_done == 2 and attempt.pushed_s > 6.5


@pytest.mark.servers
def test_files_that_do_not_fit_are_reencoded_with_2s_keyframes(
    rtmp_server: RtmpServer,  # noqa: F811
    sources: dict[str, Path],
) -> None:
    report = push_live([str(sources["sparse"]), str(sources["a"])], rtmp_server.url(KEY))
    assert report.status == "done" and report.mode == "encode"
    assert any("sparse.mp4: keyframes 4.00 s apart" in r for r in report.reasons), report.reasons
    rtmp_server.stop()
    [recording] = rtmp_server.recordings()
    duration, codecs, _ = recording_facts(recording)
    assert abs(duration - 8.0) <= 0.3 and codecs == {"video": "h264", "audio": "aac"}
    assert keyframe_gaps(recording) <= 2.05


@pytest.mark.servers
@pytest.mark.parametrize("resume", ["next", "restart"])
def test_server_killed_mid_push_fails_at_once_and_the_retry_resumes_at_a_file_boundary(
    rtmp_server: RtmpServer,  # noqa: F811
    sources: dict[str, Path],
    repo: Repo,
    resume: str,
) -> None:
    files = [str(sources["a"]), str(sources["b"]), str(sources["c"])]  # 3 s, 4 s, 3 s
    killed_at: list[float] = []
    mid_file_2 = threading.Event()

    def kill_then_restart() -> None:
        mid_file_2.wait(timeout=60)
        rtmp_server.kill()
        killed_at.append(time.monotonic())
        time.sleep(1.0)
        rtmp_server.restart_same_port()

    chaos = threading.Thread(target=kill_then_restart)
    chaos.start()
    policy = PushPolicy(attempts=3, backoff_s=2.5, rw_timeout_s=3.0, resume=resume)  # type: ignore[arg-type]
    failed_at: list[float] = []
    try:
        report = push_live(
            files, rtmp_server.url(KEY), policy=policy, lineage=repo, prov=PROV,
            on_attempt=lambda a: failed_at.append(time.monotonic()) if a.status == "failed" else None,
            on_progress=lambda p: mid_file_2.set() if p.out_time_s >= 4.5 else None,  # 1.5 s into file 2
        )  # fmt: skip
    finally:
        chaos.join(timeout=30)
    first, second = report.attempts[0], report.attempts[1]
    detected = failed_at[0] - killed_at[0]
    assert first.status == "failed" and first.files_done == 1 and first.file_on_air == 1
    assert first.error is not None and rtmp_server.url("****") in first.error and KEY not in first.error
    assert second.status == "succeeded" and len(report.attempts) == 2
    if resume == "next":
        assert second.first_file == 2 and report.status == "partial" and report.skipped == [1]
        expected_second = 3.0
    else:
        assert second.first_file == 1 and report.status == "done" and report.skipped == []
        expected_second = 7.0
    print(f"server killed: attempt failed {detected:.3f} s later (resume={resume})")
    assert detected < 3.0, detected
    rtmp_server.stop()
    recordings = rtmp_server.recordings()
    assert len(recordings) == 2
    duration, codecs, _ = recording_facts(recordings[-1])
    assert abs(duration - expected_second) <= 0.3 and codecs == {"video": "h264", "audio": "aac"}
    push = repo.get_push(report.push_id or -1)
    assert push is not None and push.attempts == 2 and push.status == report.status
    rows = repo.push_attempts(push.id)
    assert [(r.number, r.first_file, r.status) for r in rows] == [
        (1, 0, "failed"),
        (2, second.first_file, "succeeded"),
    ]
    assert rows[0].error_type == "LivePushError" and rows[0].permanent is False


@pytest.mark.servers
def test_a_server_that_stops_answering_fails_within_the_timeout_and_nothing_hangs(
    rtmp_server: RtmpServer,  # noqa: F811
    sources: dict[str, Path],
) -> None:
    paused_at: list[float] = []

    def pause() -> None:
        time.sleep(2.0)
        rtmp_server.pause()
        paused_at.append(time.monotonic())

    t = threading.Thread(target=pause)
    t.start()
    policy = PushPolicy(attempts=1, rw_timeout_s=2.0, send_buffer_bytes=16384)
    try:
        report = push_live([str(sources["b"]), str(sources["c"]), str(sources["a"])], rtmp_server.url(KEY),
                           policy=policy)  # fmt: skip
    finally:
        t.join(timeout=10)
        rtmp_server.resume()
    ended = time.monotonic()
    after_pause = ended - paused_at[0]
    print(f"dead socket: push failed {after_pause:.1f} s after the server stopped reading: {report.error}")
    assert report.status == "failed"
    assert report.error is not None and KEY not in report.error and "****" in report.error
    # The socket buffers take the next seconds of media (~6 s here), then a write blocks for rw_timeout (2 s):
    # bounded, never a hang; the 10 s playlist would have run 8 s more.
    assert after_pause < 15.0


def test_a_port_with_nothing_listening_fails_fast_naming_the_url_without_its_key(
    sources: dict[str, Path], repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtmp://127.0.0.1:{port}/live/{KEY}"
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    report = push_live([str(sources["a"])], url, policy=PushPolicy(attempts=2, backoff_s=0.5), lineage=repo)
    took = time.monotonic() - t0
    print(f"refused connection: failed after {took:.2f} s over {len(report.attempts)} attempts")
    assert took < 30 and report.status == "failed" and len(report.attempts) == 2
    masked = f"rtmp://127.0.0.1:{port}/live/****"
    assert report.error is not None and masked in report.error and "refused" in report.error
    assert all(a.first_file == 0 for a in report.attempts)  # nothing was sent: the same file again
    assert KEY not in caplog.text and masked in caplog.text


def test_a_source_that_is_not_media_stops_the_push_and_is_recorded(tmp_path: Path, repo: Repo) -> None:
    fake = tmp_path / "list.mp4"
    fake.write_text("ffconcat version 1.0\nfile /etc/passwd\n")
    with pytest.raises(InvalidMediaError) as caught:
        push_live([str(fake)], f"rtmp://127.0.0.1:9/live/{KEY}", lineage=repo)
    assert str(fake) in str(caught.value)
    [push] = repo.recent_pushes()
    assert push.status == "failed" and str(fake) in (push.error or "") and KEY not in (push.error or "")
    with pytest.raises(MediaNotFoundError):
        push_live([str(tmp_path / "missing.mp4")], f"rtmp://127.0.0.1:9/live/{KEY}", lineage=repo)


@pytest.mark.servers
def test_rtmps_checks_the_server_certificate(
    rtmp_server: RtmpServer,  # noqa: F811
    rtmps_relay: TlsRelay,  # noqa: F811
    sources: dict[str, Path],
) -> None:
    unknown = push_live(
        [str(sources["a"])], rtmps_relay.url(KEY), policy=PushPolicy(attempts=3, backoff_s=0.1)
    )
    assert unknown.status == "failed" and unknown.permanent and len(unknown.attempts) == 1
    assert (
        unknown.error is not None
        and "certificate did not verify" in unknown.error
        and KEY not in unknown.error
    )
    trusted = push_live(
        [str(sources["a"])], rtmps_relay.url(KEY), policy=PushPolicy(ca_file=rtmps_relay.cert)
    )
    assert trusted.status == "done", trusted.error
    rtmp_server.stop()
    [recording] = rtmp_server.recordings()
    duration, codecs, _ = recording_facts(recording)
    assert abs(duration - 3.0) <= 0.3 and codecs == {"video": "h264", "audio": "aac"}


# ------------------------------------------------------------------------------------------ lineage refs


def _seed_exports(repo: Repo, files: list[Path]) -> int:
    with repo.session() as s:
        rec = Recording(sha256="e" * 64, uri="/in/show.flv", status="ok")
        av = Avatar(content_hash="f" * 64, name="astro", uri="/a.png", kind="image")
        s.add_all([rec, av])
        s.flush()
        # Clips registered out of speaking order: the push must still play them by start time.
        for n, (start, path) in enumerate(sorted(zip([10.0, 30.0], files, strict=True), reverse=True)):
            clip = Clip(recording_id=rec.id, start_s=start, end_s=start + 3, params_hash="p")
            s.add(clip)
            s.flush()
            render = Render(
                render_key=f"k{n}", recording_id=rec.id, clip_id=clip.id, avatar_id=av.id, backend="w",
                backend_version="1", params_hash="p", status="succeeded", output_uri=str(path),
            )  # fmt: skip
            s.add(render)
            s.flush()
            s.add(Export(render_id=render.id, recording_id=rec.id, uri=str(path), channel="youtube"))
        return rec.id


@pytest.mark.servers
def test_a_recording_reference_plays_its_exports_in_speaking_order(
    rtmp_server: RtmpServer,  # noqa: F811
    sources: dict[str, Path],
    repo: Repo,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from talkfactory.cli.exports import print_push_rows

    recording_id = _seed_exports(repo, [sources["a"], sources["c"]])
    found = repo.pushable_exports("show.flv", "youtube")
    assert [Path(e.uri).name for e in found] == ["a.mp4", "c.mp4"]
    assert repo.pushable_exports("show.flv", "tiktok") == []
    report = push_live(["show.flv"], rtmp_server.url(KEY), source_channel="youtube", lineage=repo)
    assert report.status == "done" and [Path(f).name for f in report.files] == ["a.mp4", "c.mp4"]
    push = repo.get_push(report.push_id or -1)
    assert push is not None and [s["export_id"] for s in push.sources] == [e.export_id for e in found]
    # `talkfactory lineage` lists the push under the recording, with the masked URL only.
    capsys.readouterr()
    print_push_rows(repo, recording_id)
    listed = capsys.readouterr().out
    assert "live pushes" in listed and "done" in listed and "****" in listed and KEY not in listed


# ------------------------------------------------------------------------------------------ the key


@pytest.mark.servers
def test_the_key_never_reaches_output_logs_or_lineage(
    rtmp_server: RtmpServer,  # noqa: F811
    sources: dict[str, Path],
    tf_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from talkfactory.cli import push as cli_push
    from talkfactory.infra.settings import get_settings

    db_url = get_settings().resolved_database_url
    upgrade(db_url)
    repo = Repo.from_url(db_url)
    monkeypatch.setattr(cli_push, "lineage_for", lambda _url: repo)
    monkeypatch.setenv("TF_TEST_LIVE_KEY", KEY)
    parser = argparse.ArgumentParser()
    cli_push.add_push_parser(parser.add_subparsers())
    caplog.set_level(logging.DEBUG)

    ok = parser.parse_args(["push", str(sources["a"]), rtmp_server.url("env:TF_TEST_LIVE_KEY"), "--json"])
    assert ok.fn(ok) == 0
    done = json.loads(capfd.readouterr().out)
    assert done["status"] == "done" and done["target"] == rtmp_server.url("****")

    rtmp_server.kill()
    bad = parser.parse_args(
        ["push", str(sources["a"]), rtmp_server.url(KEY), "--attempts", "2", "--backoff", "0.2"]
    )
    assert bad.fn(bad) == 1
    shown = capfd.readouterr()
    assert "refused" in shown.err and rtmp_server.url("****") in shown.out + shown.err

    text = shown.out + shown.err + caplog.text
    assert KEY not in text
    repo.engine.dispose()
    db_files = [p for p in tf_home.rglob("*") if p.is_file() and ".db" in p.name]
    assert db_files
    for path in db_files:
        assert KEY.encode() not in path.read_bytes(), path
    with repo.session() as s:
        assert s.query(LivePush).count() == 2 and s.query(PushAttempt).count() == 3


@pytest.fixture(autouse=True)
def _no_leftover_ffmpeg() -> Iterator[None]:
    """Nothing a push started outlives its test."""
    yield
    out = subprocess.run(["pgrep", "-f", f"live/{KEY}"], capture_output=True, text=True).stdout.split()
    assert not out, f"processes still running for the push: {out}"


def test_a_source_that_names_other_files_is_not_followed_even_past_the_probe(tmp_path: Path) -> None:
    """A file swapped for a concat list after probing: the push reads it under ``-safe 1`` and refuses."""
    from talkfactory.infra.live.push import PushFile, push_files
    from talkfactory.infra.live.urls import resolve_target

    fake = tmp_path / "swapped.mp4"
    fake.write_text("ffconcat version 1.0\nfile /etc/passwd\n")
    with pytest.raises(InvalidMediaError) as caught:
        push_files([PushFile(fake, 3.0)], resolve_target(f"rtmp://127.0.0.1:9/live/{KEY}"))
    assert "names other files" in str(caught.value) and KEY not in str(caught.value)


def test_migration_0006_goes_down_and_up_again(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    from talkfactory.infra.lineage.db import make_engine

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = make_engine(url)
    assert {"live_pushes", "push_attempts"} <= set(inspect(engine).get_table_names())
    from alembic import command
    from alembic.config import Config

    from talkfactory.infra.lineage.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.downgrade(cfg, "0005")
    assert not {"live_pushes", "push_attempts"} & set(inspect(make_engine(url)).get_table_names())
    upgrade(url)
    assert {"live_pushes", "push_attempts"} <= set(inspect(make_engine(url)).get_table_names())


@pytest.mark.servers
def test_ctrl_c_mid_push_stops_ffmpeg_and_records_the_push_as_interrupted(
    rtmp_server: RtmpServer,  # noqa: F811
    sources: dict[str, Path],
    repo: Repo,
) -> None:
    import _thread

    def interrupt(p: object) -> None:
        if getattr(p, "out_time_s", 0) > 1.0:
            _thread.interrupt_main()

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        push_live(
            [str(sources["b"]), str(sources["c"])], rtmp_server.url(KEY), lineage=repo, on_progress=interrupt
        )
    assert time.monotonic() - t0 < 5.0
    [push] = repo.recent_pushes()
    assert push.status == "interrupted"
    [attempt] = repo.push_attempts(push.id)
    assert attempt.status == "failed" and attempt.error_type == "InterruptedRunError" and attempt.permanent
