"""``talkfactory scan``: one pass over the ingest location, and the lineage view of ingested objects.

Registered by ``talkfactory.cli``::

    from talkfactory.cli.scan import add_scan_parser, print_ingest_lineage
    add_scan_parser(sub)                       # in build_parser()
    if print_ingest_lineage(ref): return 0     # first thing in cmd_lineage: exports and source objects
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.table import Table

from talkfactory.cli.common import console, out

_BAD = {"failed", "quarantined", "rejected", "done with failures"}
_COLORS = {
    "done": "green",
    "new": "cyan",
    "retry": "cyan",
    "waiting": "yellow",
    "no speech": "yellow",
    "done with failures": "yellow",
    "skipped": "yellow",
    "failed": "red",
    "quarantined": "red",
    "rejected": "red",
}


def add_scan_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``scan`` command to ``talkfactory``'s subparsers; returns its parser."""

    scan = subparsers.add_parser(
        "scan",
        help="render every new recording in the ingest bucket or drop folder and publish the MP4s",
        description="List the ingest location once; register each new object, render it with every "
        "avatar and upload the MP4s to the exports location. Objects already registered are skipped, "
        "so running it again (from cron or a Prefect schedule) only picks up what is new.",
    )
    scan.add_argument(
        "--ingest",
        metavar="URL",
        default=None,
        help="s3://bucket/prefix or a folder (default: TALKFACTORY_INGEST_URL)",
    )
    scan.add_argument(
        "--avatar",
        metavar="PATH_OR_KEY",
        action="append",
        default=[],
        help="avatar template: a local file or a key in TALKFACTORY_AVATARS_URL (repeatable; "
        "default: every image and video in TALKFACTORY_AVATARS_URL)",
    )
    scan.add_argument(
        "--exports",
        metavar="URL",
        default=None,
        help="where the MP4s go: s3://bucket/prefix or a folder (default: TALKFACTORY_EXPORTS_URL)",
    )
    scan.add_argument(
        "--settle",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help="leave objects modified less than this long ago for a later scan (default: 30)",
    )
    scan.add_argument(
        "--dry-run", action="store_true", help="only list and classify; register, download and write nothing"
    )
    scan.add_argument("--prefix", default="", help="only keys starting with this, relative to --ingest")
    scan.add_argument("--backend", help="weightless (default) or wav2lip; TALKFACTORY_BACKEND")
    scan.add_argument("--checkpoint", help="path or s3:// URL; TALKFACTORY_CHECKPOINT")
    scan.add_argument("--encoder", choices=["libx264", "h264_nvenc"], help="skip the encoder trial")
    scan.add_argument(
        "--whole-track",
        action="store_true",
        help="one MP4 per avatar from each recording's audio as is, instead of one per speech clip",
    )
    from talkfactory.cli.common import add_speech_options
    from talkfactory.cli.qc import add_render_quality_options

    add_speech_options(scan)
    add_render_quality_options(scan)
    scan.set_defaults(fn=cmd_scan)
    return scan  # type: ignore[no-any-return]


def cmd_scan(args: argparse.Namespace) -> int:
    """Run the ``scan-ingest`` flow once; 1 when an object failed or was quarantined in this scan."""
    from talkfactory.cli.common import prefect_env, render_options, showing_progress, speech_params

    prefect_env()
    from talkfactory.flows.scan_ingest import scan_ingest

    t0 = time.perf_counter()
    with showing_progress():
        summary = scan_ingest(
            ingest_url=args.ingest,
            avatars=[str(a) for a in args.avatar],
            exports_url=args.exports,
            settle_seconds=args.settle,
            dry_run=args.dry_run,
            prefix=args.prefix,
            render=render_options(args),
            speech=speech_params(args),
        )
    print_scan_summary(summary, time.perf_counter() - t0)
    return 1 if any(item["status"] in _BAD for item in summary["items"]) and not args.dry_run else 0


def print_scan_summary(summary: dict[str, Any], wall: float) -> None:
    """The scan's rows as a table (the same style as ``talkfactory run``), then each error in full."""
    what = "dry run of " if summary["dry_run"] else ""
    table = Table(
        title=f"talkfactory scan: {what}{summary['location']} ({wall:.1f} s)",
        caption=f"{summary['listed']} listed, {summary['known']} already registered, "
        f"{summary['ignored']} not media",
    )
    for col in ("object", "status", "recording", "exports / reason"):
        table.add_column(col, overflow="fold")
    for item in summary["items"]:
        color = _COLORS.get(item["status"], "white")
        table.add_row(
            item["key"],
            f"[{color}]{item['status']}[/]",
            f"#{item['recording_id']}" if item.get("recording_id") else "",
            "\n".join(item["exports"]) or (item.get("error") or ""),
        )
    if not summary["items"]:
        table.add_row("", "[green]nothing new[/]", "", "")
    out.print(table)
    for item in summary["items"]:
        if item["status"] in _BAD and item["exports"] and item.get("error"):
            console.print(f"[red]{item['key']}[/]: {item['error']}")


def print_ingest_lineage(ref: str, database_url: str | None = None) -> bool:
    """Print source object -> recording -> renders -> exports for an export or a source object.

    ``ref`` is an export URI (or its tail: ``show/astronaut.mp4``) or a source object's URI or key tail
    (``s3://recordings/live/show.flv``, ``file:///drop/show.flv``, ``show.flv``). Returns False (printing
    nothing) when it matches neither, or is a bare number, so the caller can try recordings and renders.
    """
    from talkfactory.infra.lineage.repository import LineageRepository
    from talkfactory.infra.settings import get_settings

    if ref.isdigit():
        return False  # a bare number is a recording id for `talkfactory lineage`
    repo = LineageRepository.from_url(database_url or get_settings().resolved_database_url)
    export = repo.find_export(ref)
    source = (
        repo.find_source_object(str(export.source_object_id))
        if export and export.source_object_id
        else (None if export else repo.find_source_object(ref))
    )
    if export is None and source is None:
        return False
    recording_id = export.recording_id if export else source.recording_id if source else None

    if source is not None:
        out.print(f"[bold]source object[/] #{source.id} {source.uri}")
        out.print(
            f"  etag {source.etag}  {source.size_bytes} bytes  sha256 {source.sha256 or '-'}  "
            f"status {_colored(source.status)}  attempts {source.attempts}"
        )
        if source.error:
            out.print(f"  [red]error[/] {source.error}")
        for a in repo.attempts_for("source", source.id):
            why = f": {a.error}" if a.error else ""
            out.print(f"  attempt {a.started_at:%Y-%m-%d %H:%M:%S} {a.status}{why}")
    if recording_id is None:
        out.print("  (no recording: the object never got that far)")
        return True
    rec = repo.find_recording(str(recording_id))
    if rec is None:
        return True
    copy = " (the downloaded copy)" if source is not None else ""
    out.print(f"[bold]recording[/] #{rec.id} {rec.uri}{copy}")
    out.print(f"  sha256 {rec.sha256}  status {_colored(rec.status)}  duration {rec.duration_s} s")
    if rec.error:
        out.print(f"  [red]error[/] {rec.error}")
    for w in rec.warnings:  # a truncated recording is "ok" with a warning: say so on this path too
        out.print(f"  [yellow]warning[/] {w}")
    exports_by_render: dict[int, list[str]] = {}
    for e in repo.exports_for_recording(rec.id):
        if export is None or e.id == export.id:
            exports_by_render.setdefault(e.render_id, []).append(e.uri)
    table = Table(title="renders and exports")
    cols = (
        "render",
        "avatar",
        "clip",
        "backend",
        "version",
        "params",
        "status",
        "attempts",
        "export / error",
    )
    for col in cols:
        table.add_column(col, overflow="fold")
    renders = [
        o for o in repo.renders_for_recording(rec.id) if export is None or o.render.id == export.render_id
    ]
    if not renders:
        out.print("  no renders")
        return True
    for o in renders:
        r = o.render
        table.add_row(
            str(r.id),
            o.avatar_name,
            o.clip_span,
            r.backend,
            r.backend_version,
            r.params_hash[:12],
            _colored(r.status),
            str(r.attempts),
            "\n".join(exports_by_render.get(r.id, [])) or r.error or r.output_uri or "",
        )
    out.print(table)
    return True


def _colored(status: str) -> str:
    color = {"ok": "green", "succeeded": "green"}.get(status) or _COLORS.get(status, "white")
    return f"[{color}]{status}[/]"


__all__ = ["add_scan_parser", "cmd_scan", "print_ingest_lineage", "print_scan_summary"]
