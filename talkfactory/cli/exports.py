"""``talkfactory channels`` (the presets and their limits) and ``talkfactory export`` (channel files
of renders already made)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from talkfactory.cli.common import console, out, shown

if TYPE_CHECKING:
    from talkfactory.infra.lineage.repository import LineageRepository
    from talkfactory.pipeline.jobs.settle import RecordingReport


def print_export_rows(repo: LineageRepository, recording_id: int, render_id: int | None) -> None:
    """The files published from the recording's renders, per channel, with what was measured on them."""
    rows = [
        e for e in repo.exports_for_recording(recording_id) if render_id is None or e.render_id == render_id
    ]
    if not rows:
        return
    table = Table(title="exports")
    for col in ("render", "channel", "spec", "status", "size", "LUFS", "dBTP", "sha256", "file / error"):
        table.add_column(col, overflow="fold")
    for e in rows:
        v = e.variant or {}
        size = f"{v['width']}x{v['height']}" if v.get("width") else ""
        channel = e.channel + (f" part {e.part}" if e.part else "")
        table.add_row(
            str(e.render_id),
            channel,
            (e.spec_version or "").rsplit("/", 1)[-1],
            e.status,
            size,
            "" if e.loudness_lufs is None else f"{e.loudness_lufs:.1f}",
            "" if e.true_peak_db is None else f"{e.true_peak_db:.1f}",
            (e.sha256 or "")[:12],
            e.error if e.status != "published" and e.error else shown(e.uri),
        )
    out.print(table)


def print_push_rows(repo: LineageRepository, recording_id: int) -> None:
    """Live pushes that played this recording's exports (the newest 500 pushes are looked at)."""
    ids = {e.id for e in repo.exports_for_recording(recording_id)}
    pushes = [p for p in repo.recent_pushes(500) if any(s.get("export_id") in ids for s in p.sources)]
    if not pushes:
        return
    table = Table(title="live pushes")
    for col in ("push", "to", "channel", "mode", "status", "files", "pushed", "attempts", "error"):
        table.add_column(col, overflow="fold")
    for p in pushes:
        table.add_row(
            str(p.id),
            p.target,  # masked when it was recorded: the stream key never reaches lineage
            p.channel or "",
            p.mode,
            p.status,
            f"{p.files_done}/{len(p.sources)}",
            f"{p.pushed_s:.1f} s",
            str(p.attempts),
            p.error or "",
        )
    out.print(table)


def print_exports(report: RecordingReport) -> None:
    """Channel files made in this run: how many per channel, and each one not published, with why."""
    made = [(r, e) for r in report.rows for e in r.exports]
    if not made:
        return
    counts: dict[str, list[int]] = {}
    for _, e in made:
        c = counts.setdefault(e.channel, [0, 0])
        c[0 if e.status == "published" else 1] += 1
    out.print(
        "channel files: "
        + ", ".join(
            f"{ch} {ok}" + (f" ({bad} not published)" if bad else "") for ch, (ok, bad) in counts.items()
        )
    )
    for r, e in made:
        if e.status != "published":
            color = "red" if e.status == "failed" else "yellow"
            console.print(
                f"[{color}]{e.channel}[/] {r.avatar} clip {r.clip_number or 'whole'}: {e.status}: {e.error}"
            )


def add_channel_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("channels (see `talkfactory channels`)")
    g.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME",
        help="also export to this channel (repeatable): DIR/<channel>/...; TALKFACTORY_CHANNELS",
    )
    g.add_argument(
        "--burn-captions", action="store_true", help="burn captions into the channel files (not the master)"
    )


def cmd_channels(args: argparse.Namespace) -> int:
    from talkfactory.infra.settings import get_settings
    from talkfactory.pipeline.exports.channels import describe_channels, load_channels

    registry = load_channels(get_settings().channels_file)
    rows = describe_channels(registry)
    columns = ("name", "size", "length", "loudness", "bitrate_cap", "keyframes", "unverified")
    table = Table(title=f"publishing channels (spec {registry.spec_version})")
    for col in columns:
        table.add_column(col.replace("_", " "), overflow="fold")
    for row in rows:
        unverified = row.get("unverified") or ""
        count = len([u for u in unverified.split(",") if u.strip() and u.strip() != "-"])
        cells = {**row, "unverified": f"{count} limits" if count else "-"}
        table.add_row(*(str(cells.get(c) or "") for c in columns))
    out.print(table)
    console.print("every limit's source, and which are unverified: " + ", ".join(registry.files))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from talkfactory.infra.lineage.chain import resolve_ref
    from talkfactory.infra.settings import get_settings
    from talkfactory.pipeline.exports.manifest import write_manifest, write_manifests
    from talkfactory.pipeline.exports.reexport import reexport_jobs
    from talkfactory.pipeline.jobs.execute import export_job
    from talkfactory.pipeline.lineage import lineage

    settings = get_settings()
    repo = lineage(settings.resolved_database_url)
    ref = str(args.ref)
    match = resolve_ref(repo, ref)
    if match.ambiguous or not match.recording_ids:
        what = "is ambiguous" if match.ambiguous else "matches nothing in lineage"
        console.print(f"[red]{ref!r} {what}[/] (name a recording path, sha256, id or an output)")
        return 1
    destination = str(Path(args.out).resolve())
    plan = reexport_jobs(
        repo,
        recording_id=match.recording_ids[0],
        render_id=match.render_id,
        channels=args.channel,
        out=destination,
        settings=settings,
        burn_captions=args.burn_captions,
    )
    for why in plan.skipped:
        console.print(f"[yellow]skipped:[/] {why}")
    t0 = time.perf_counter()
    cache: dict[str, object] = {}
    table = Table(title=f"talkfactory export {ref}")
    for col in ("avatar", "clip", "channel", "status", "file / reason", "LUFS", "size"):
        table.add_column(col, overflow="fold")
    failed = 0
    made = 0
    with console.status("exporting ...") as status:
        for n, (render_id, job) in enumerate(plan.jobs, start=1):
            status.update(f"exporting {job.label} ({n} of {len(plan.jobs)}) ...")
            result = export_job(job, render_id, cache)
            for e in result.exports:
                made += 1
                failed += e.status == "failed"
                color = {"published": "green", "failed": "red"}.get(e.status, "yellow")
                table.add_row(
                    job.avatar.label,
                    str(job.clip.number or "whole"),
                    e.channel + (f" part {e.part}/{e.parts}" if e.parts > 1 else ""),
                    f"[{color}]{e.status}[/]",
                    e.error or shown(e.uri),
                    "" if e.loudness_lufs is None else f"{e.loudness_lufs:.1f}",
                    "" if e.width is None else f"{e.width}x{e.height}",
                )
        manifests = write_manifests(repo, [job for _, job in plan.jobs], settings)
        entries = manifests.get(destination) or write_manifest(repo, destination, settings)
    out.print(table)
    if not made:
        console.print("nothing to do: every channel file is there, made with the current channel specs")
    console.print(
        f"{made} files in {time.perf_counter() - t0:.1f} s; manifest of {len(entries)} exports: "
        f"{Path(destination) / 'manifest.json'}"
    )
    return 1 if failed else 0


def add_export_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ch = sub.add_parser("channels", help="the publishing channels and their limits")
    ch.set_defaults(fn=cmd_channels)

    ex = sub.add_parser("export", help="make or refresh channel files of renders already made")
    ex.add_argument("ref", help="recording path/sha256/id or an output MP4 (as `lineage` takes it)")
    ex.add_argument("--out", type=Path, required=True, help="exports folder: <channel>/... and manifest.json")
    ex.add_argument("--channel", action="append", required=True, metavar="NAME", help="repeatable")
    ex.add_argument("--burn-captions", action="store_true", help="burn captions into the files")
    ex.set_defaults(fn=cmd_export)
