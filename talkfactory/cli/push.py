"""``talkfactory push SOURCE... URL``: play exports back to back into a live RTMP(S) stream.

Runs the push job in this process (``pipeline.live``; no Prefect server needed) and records it in
lineage. The URL's stream key is never printed: everything shown uses ``rtmp://host:port/app/****``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from talkfactory.cli.common import console, out
from talkfactory.errors import ConfigurationError

EXIT_DONE = 0
EXIT_NOT_ALL_SENT = 1
"""The push failed after its attempts, or some file was cut by a failure and skipped."""


def cmd_push(args: argparse.Namespace) -> int:
    from talkfactory import __version__
    from talkfactory.infra.lineage.base import Provenance
    from talkfactory.infra.lineage.db import ensure_schema
    from talkfactory.infra.live.push import PushProgress
    from talkfactory.infra.settings import get_settings
    from talkfactory.pipeline.jobs.files import local_copy
    from talkfactory.pipeline.live import (
        AttemptReport,
        PushPlan,
        PushPolicy,
        channel_preset,
        channel_target,
        push_live,
    )

    settings = get_settings()
    sources, url = split_targets(args.targets)
    preset = channel_preset(args.channel, settings.channels_file) if args.channel else None
    url = url or (channel_target(preset) if preset is not None else None)
    if url is None:
        raise ConfigurationError(
            "no push URL: give it last (rtmp://host/app/KEY, env:NAME, file:PATH), or a --channel whose "
            "preset names rtmp_url and rtmp_key"
        )
    db_url = settings.resolved_database_url
    ensure_schema(db_url)
    limits = live_limits_from_args(args, preset)
    policy = PushPolicy(
        attempts=args.attempts,
        backoff_s=args.backoff,
        resume=args.resume,
        rw_timeout_s=args.rw_timeout,
        verify_tls=not args.insecure,
        ca_file=args.ca_file,
    )
    status = None if args.json else console.status("probing the sources ...")
    last_shown = [0.0]

    def on_plan(plan: PushPlan) -> None:
        if args.json:
            return
        console.print(f"pushing {len(plan.files)} file(s), {plan.total_s:.1f} s, mode [bold]{plan.mode}[/]")
        for reason in plan.reasons:
            console.print(f"  re-encoding: {reason}", highlight=False)

    def on_progress(p: PushProgress) -> None:
        now = time.monotonic()
        if status is None or now - last_shown[0] < 0.5:
            return
        last_shown[0] = now
        status.update(
            f"on air: file {p.file_index + 1}, {p.out_time_s:.1f} of {p.total_s:.1f} s sent"
            + (f" ({p.speed:.2f}x)" if p.speed else "")
        )

    def on_attempt(a: AttemptReport) -> None:
        if not args.json and a.status == "failed":
            console.print(f"[yellow]attempt {a.number} failed[/]: {a.error}", highlight=False)

    if status is not None:
        status.start()
    try:
        report = push_live(
            sources,
            url,
            limits=limits,
            channel=args.channel,
            source_channel=args.from_channel,
            policy=policy,
            lineage=lineage_for(db_url),
            prov=Provenance(code_version=__version__),
            fetch=lambda uri: local_copy(uri, settings),
            force_encode=args.encode,
            encoder=args.encoder,
            max_run_s=settings.ffmpeg_timeout_s,
            on_progress=on_progress,
            on_attempt=on_attempt,
            on_plan=on_plan,
            work_dir=settings.work_dir if settings.work_dir.is_dir() else None,
        )
    finally:
        if status is not None:
            status.stop()
    if args.json:
        print(json.dumps(report_dict(report)))
    else:
        print_push_report(report)
    return EXIT_DONE if report.status == "done" else EXIT_NOT_ALL_SENT


def lineage_for(database_url: str) -> Any:
    """The process's lineage repository (``LineageRepository``, whose bases include ``PushQueries``)."""
    from talkfactory.pipeline.lineage import lineage

    return lineage(database_url)


def split_targets(items: list[str]) -> tuple[list[str], str | None]:
    """(sources, URL): the last argument is the URL when it looks like one (rtmp[s]://, env:, file:)."""
    last = items[-1].strip()
    if len(items) > 1 and last.lower().startswith(("rtmp://", "rtmps://", "env:", "file:")):
        return items[:-1], last
    if len(items) == 1 and last.lower().startswith(("rtmp://", "rtmps://", "env:")):
        raise ConfigurationError("nothing to push: give one or more SOURCE before the URL")
    return items, None


def live_limits_from_args(args: argparse.Namespace, preset: Any) -> Any:
    """The channel preset's live limits (defaults without ``--channel``), with the flags laid over them."""
    from dataclasses import replace

    from talkfactory.infra.live.push_args import LiveLimits
    from talkfactory.pipeline.live import live_limits_of

    limits = live_limits_of(preset) if preset is not None else LiveLimits()
    changes: dict[str, Any] = {}
    if args.max_size:
        try:
            w, h = (int(v) for v in args.max_size.lower().split("x"))
        except ValueError:
            raise ConfigurationError(f"--max-size takes WIDTHxHEIGHT, got {args.max_size!r}") from None
        changes.update(max_width=w, max_height=h)
    if args.max_fps is not None:
        changes["max_fps"] = args.max_fps
    if args.max_kbps is not None:
        changes["video_maxrate_kbps"] = args.max_kbps
    if args.keyframe_s is not None:
        changes["keyframe_interval_s"] = args.keyframe_s
    try:
        return replace(limits, **changes)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def report_dict(report: Any) -> dict[str, Any]:
    return {
        "push_id": report.push_id,
        "target": report.target,
        "status": report.status,
        "mode": report.mode,
        "reasons": list(report.reasons),
        "files": list(report.files),
        "files_done": report.files_done,
        "skipped": list(report.skipped),
        "total_s": round(report.total_s, 3),
        "pushed_s": round(report.pushed_s, 3),
        "error": report.error,
        "attempts": [
            {
                "number": a.number,
                "first_file": a.first_file,
                "files_done": a.files_done,
                "file_on_air": a.file_on_air,
                "status": a.status,
                "pushed_s": round(a.pushed_s, 3),
                "wall_s": round(a.wall_s, 3),
                "error": a.error,
            }
            for a in report.attempts
        ],
    }


def print_push_report(report: Any) -> None:
    table = Table(title=f"push to {report.target}: {report.summary()}")
    for col in ("attempt", "from file", "files sent whole", "cut at file", "sent", "took", "error"):
        table.add_column(col, overflow="fold")
    for a in report.attempts:
        color = "green" if a.status == "succeeded" else "red"
        table.add_row(
            f"[{color}]{a.number}[/]",
            str(a.first_file + 1),
            str(a.files_done),
            "" if a.file_on_air is None else str(a.file_on_air + 1),
            f"{a.pushed_s:.1f} s",
            f"{a.wall_s:.1f} s",
            a.error or "",
        )
    out.print(table)
    if report.status != "done" and report.error:
        console.print(f"[red]{report.status}[/]: {report.error}", highlight=False)
    if report.push_id is not None:
        console.print(f"recorded in lineage as push #{report.push_id}")


def add_push_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "push",
        help="play exports back to back into a live RTMP/RTMPS stream (exit 0 when every file was sent)",
        description="Streams SOURCE files, in order, as one continuous live stream to URL at real-time "
        "pace: copied when they already fit the channel's live limits, re-encoded when not. A dropped "
        "connection is retried with backoff, resuming at the next file. URL holds the stream key, a "
        "secret: give it as env:NAME or file:PATH (the whole URL), or as rtmp://host/app/env:NAME "
        "(the key only); it is never printed, logged or stored.",
    )
    p.add_argument(
        "targets",
        nargs="+",
        metavar="SOURCE... URL",
        help="SOURCE: an MP4/FLV/MKV file, a store URL, or a lineage reference (a recording or export "
        "name: its published exports in speaking order). URL (last): rtmp://host/app/KEY, rtmps://..., "
        "env:NAME, file:PATH, or rtmp://host/app/env:NAME; may be left out with a --channel of kind rtmp",
    )
    p.add_argument(
        "--channel",
        help='channel preset whose limits apply (size, fps, bitrate, keyframes); a kind = "rtmp" preset '
        "also gives the URL (rtmp_url + rtmp_key)",
    )
    p.add_argument(
        "--from-channel",
        help="for lineage references: which channel's exports to play (default: master)",
    )
    p.add_argument("--max-size", metavar="WxH", help="largest frame the server takes (1920x1080)")
    p.add_argument("--max-fps", type=float, help="highest frame rate (60)")
    p.add_argument("--max-kbps", type=int, help="video bitrate cap in kb/s (6000)")
    p.add_argument("--keyframe-s", type=float, help="longest keyframe interval in seconds (2)")
    p.add_argument("--encode", action="store_true", help="re-encode even when the files fit as they are")
    p.add_argument("--encoder", choices=["libx264", "h264_nvenc"], default="libx264")
    p.add_argument("--attempts", type=int, default=3, help="connections tried in all (3)")
    p.add_argument("--backoff", type=float, default=2.0, help="first wait between attempts, doubling (2 s)")
    p.add_argument(
        "--resume",
        choices=["next", "restart"],
        default="next",
        help="after a drop: skip the file that was cut (next, default) or send it again (restart)",
    )
    p.add_argument(
        "--rw-timeout", type=float, default=10.0, help="a socket blocked this long fails the attempt (10 s)"
    )
    p.add_argument("--ca-file", type=Path, help="rtmps: the CA certificate(s) that signed the server's (PEM)")
    p.add_argument(
        "--insecure", action="store_true", help="rtmps: do not check the server's certificate at all"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(fn=cmd_push)


__all__ = ["add_push_parser", "cmd_push"]
