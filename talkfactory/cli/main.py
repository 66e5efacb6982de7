"""The ``talkfactory`` command line: run the main job, make a demo, inspect lineage and the machine."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from talkfactory.cli.common import (
    add_speech_options,
    console,
    out,
    prefect_env,
    render_options,
    showing_progress,
    shown,
    speech_overrides,
    speech_params,
)
from talkfactory.cli.exports import (
    add_channel_options,
    add_export_parsers,
    print_export_rows,
    print_exports,
    print_push_rows,
)
from talkfactory.cli.qc import add_qc_parser, add_render_quality_options
from talkfactory.errors import TalkfactoryError

if TYPE_CHECKING:
    from talkfactory.infra.lineage.chain import RefMatch
    from talkfactory.infra.lineage.repository import LineageRepository as LineageRepository
    from talkfactory.pipeline.jobs.settle import RecordingReport


def cmd_run(args: argparse.Namespace) -> int:
    prefect_env()
    from talkfactory.flows.process_recording import process_recording

    render, speech = render_options(args), speech_params(args)
    t0 = time.perf_counter()
    with showing_progress():
        report = process_recording(
            recording=str(args.recording),
            avatars=[str(a) for a in args.avatar],
            exports_url=str(Path(args.out).resolve()),
            render=render,
            speech=speech,
            executor="local",
        )
    print_report(report, time.perf_counter() - t0)
    return exit_code(report)


def exit_code(report: RecordingReport) -> int:
    """0: every render succeeded, or the recording simply holds no speech; 1: some render or channel
    file failed; 2: the recording cannot be used at all (the job stopped)."""
    if report.status == "unusable":
        return 2
    if report.status == "interrupted":
        return 130
    if any(e.status == "failed" for r in report.rows for e in r.exports):
        return 1  # a channel file was not published (the table says why); the rest were
    return 0 if report.status in ("done", "no speech") else 1


def cmd_speech(args: argparse.Namespace) -> int:
    prefect_env()
    from talkfactory.flows.speech import speech_flow

    with console.status(f"extracting speech from {args.recording} ..."):
        result = speech_flow(
            recording=str(args.recording), out_dir=str(args.out), speech=speech_overrides(args)
        )
    table = Table(title=f"speech clips of {Path(args.recording).name}")
    for col in ("#", "start", "end", "speaker", "loudness LUFS", "SNR dB", "file"):
        table.add_column(col, overflow="fold")
    for c in result["clips"]:
        snr = c.get("snr_db")
        table.add_row(
            str(c["index"]),
            f"{c['start']:.2f}",
            f"{c['end']:.2f}",
            c["speaker"],
            f"{c['loudness_lufs']:.1f}",
            "" if snr is None else f"{snr:.1f}",
            c["wav_48k"],
        )
    out.print(table)
    dropped: dict[str, float] = {}
    for d in result["dropped"]:
        dropped[d["reason"]] = dropped.get(d["reason"], 0.0) + d["duration"]
    if dropped:
        out.print("dropped: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(dropped.items())))
    if result.get("no_clips_reason"):
        console.print(f"[yellow]{result['no_clips_reason']}[/]")
    for w in result.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")
    out.print(f"table: {Path(result['out_dir']) / 'clips.csv'}")
    return 0


def print_report(report: RecordingReport, wall: float) -> None:
    """The renders of one recording as a table, then each failure in full."""
    table = Table(title=f"talkfactory run: {report.recording} ({wall:.1f} s): {report.summary()}")
    for col in ("avatar", "clip", "status", "output", "duration", "real-time factor", "encoder"):
        table.add_column(col, overflow="fold")
    for r in report.rows:
        status = r.status + {"same": " (already done)", "copied": " (copied)"}.get(r.reused, "")
        color = "green" if r.ok else "red"
        clip = f"{r.clip_start_s:.1f}-{r.clip_end_s:.1f} s" if r.clip_number is not None else "whole"
        table.add_row(
            r.avatar,
            clip,
            f"[{color}]{status}[/]",
            shown(r.output) or (r.error or ""),
            f"{r.duration_s:.2f} s" if r.duration_s else "",
            f"{r.rtf:.3f}" if r.rtf else "",
            r.encoder or "",
        )
    out.print(table)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if report.status in ("no speech", "unusable"):
        color = "yellow" if report.status == "no speech" else "red"
        console.print(f"[{color}]{report.recording}[/]: {report.reason}")
    for r in report.rows:
        if not r.ok:
            console.print(f"[red]{r.avatar}[/] clip {r.clip_number or 'whole'}: {r.error}")
    print_exports(report)


def cmd_demo(args: argparse.Namespace) -> int:
    from talkfactory.infra.settings import get_settings
    from talkfactory.pipeline.demo import make_demo_material

    out_dir = Path(args.out)
    with console.status("making demo material (piper speech, NASA astronaut portrait)..."):
        material = make_demo_material(out_dir / "material", seconds=args.seconds)
    console.print(f"recording: {material.recording}")
    for a in material.avatars:
        console.print(f"avatar:    {a}")
    prefect_env()
    from talkfactory.flows.process_recording import process_recording
    from talkfactory.pipeline.jobs.model import RenderOptions
    from talkfactory.pipeline.speech import SpeechParams

    t0 = time.perf_counter()
    with showing_progress():
        report = process_recording(
            recording=str(material.recording),
            avatars=[str(a) for a in material.avatars],
            exports_url=str(out_dir.resolve()),
            render=RenderOptions(backend="weightless", force=args.force),
            # Short clips, so the demo shows speech cut at its pauses into several videos.
            speech=SpeechParams(min_clip=3.0, max_clip=8.0),
        )
    print_report(report, time.perf_counter() - t0)
    rc = exit_code(report)
    settings = get_settings()
    console.print(f"\nMP4s in [bold]{out_dir.resolve()}[/]")
    console.print(f"lineage database: [bold]{settings.resolved_database_url}[/]")
    console.print(f"see where one came from: talkfactory lineage {material.recording.name}")
    return rc


def cmd_db(args: argparse.Namespace) -> int:
    from talkfactory.infra.lineage.db import redact_url, upgrade
    from talkfactory.infra.settings import get_settings

    url = args.database_url or get_settings().resolved_database_url
    upgrade(url, args.revision)
    out.print(f"lineage database at {redact_url(url)} is at revision {args.revision}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from talkfactory.cli.scan import print_ingest_lineage
    from talkfactory.infra.lineage.chain import resolve_ref
    from talkfactory.infra.lineage.repository import LineageRepository
    from talkfactory.infra.settings import get_settings

    ref = str(args.ref)
    repo = LineageRepository.from_url(get_settings().resolved_database_url)
    match = resolve_ref(repo, ref)
    if match.ambiguous:
        console.print(
            f"[yellow]{ref!r} is ambiguous[/]: it matches {len(match.matches)} recordings' exports:"
        )
        for rid, uri in zip(match.recording_ids, match.matches, strict=True):
            out.print(f"  recording #{rid}: {uri}")
        console.print("name one by its full URI, or the recording by id: talkfactory lineage <id>")
        return 1
    if getattr(args, "json", False):
        return print_lineage_json(repo, match)
    if print_ingest_lineage(ref):
        return 0
    render = repo.get_render_row(match.render_id) if match.render_id else None
    rec = repo.get_recording(match.recording_ids[0]) if match.recording_ids else None
    if rec is None:
        console.print(f"[red]nothing in lineage matches {ref!r}[/] (try a recording path, sha256 or output)")
        return 1
    out.print(f"[bold]recording[/] #{rec.id} {rec.uri}")
    out.print(f"  sha256 {rec.sha256}  status {rec.status}  duration {rec.duration_s} s")
    if rec.error:
        out.print(f"  [red]error[/] {rec.error}")
    for w in rec.warnings:
        out.print(f"  [yellow]warning[/] {w}")
    table = Table(title="renders")
    for col in (
        "id",
        "clip",
        "avatar",
        "backend",
        "version",
        "params",
        "status",
        "attempts",
        "output / error",
    ):
        table.add_column(col, overflow="fold")
    table.add_column("flow run")
    for o in repo.renders_for_recording(rec.id):
        r = o.render
        if render and r.id != render.id:
            continue
        table.add_row(
            str(r.id),
            o.clip_span,
            o.avatar_name,
            r.backend,
            r.backend_version,
            r.params_hash[:8],
            r.status,
            str(r.attempts),
            r.output_uri or r.error or "",
            (r.flow_run_id or "")[:8],
        )
    out.print(table)
    print_export_rows(repo, rec.id, render.id if render else None)
    print_push_rows(repo, rec.id)
    for a in repo.attempts_for("recording", rec.id):
        out.print(f"  attempt {a.step} {a.status}: {a.error or ''}")
    return 0


def print_lineage_json(repo: LineageRepository, match: RefMatch) -> int:
    """The chain ``recording_chain`` builds (the same the web page shows), as JSON on stdout."""
    import json

    from talkfactory.infra.lineage.chain import recording_chain

    chain = recording_chain(repo, match.recording_ids[0]) if match.recording_ids else None
    if chain is None:
        console.print("[red]nothing in lineage matches[/] (try a recording path, sha256, id or output)")
        return 1
    doc = chain.to_dict()
    doc["matched_render_id"] = match.render_id
    print(json.dumps(doc, indent=2))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from talkfactory.infra.ffmpeg.binaries import ffmpeg_exe, ffprobe_exe
    from talkfactory.infra.lineage.db import redact_url
    from talkfactory.infra.media.encoders import choose_h264_encoder
    from talkfactory.infra.settings import get_settings

    settings = get_settings()
    table = Table(title="talkfactory doctor")
    table.add_column("check")
    table.add_column("result")
    table.add_row("ffmpeg", ffmpeg_exe())
    table.add_row("ffprobe", ffprobe_exe() or "not found (PyAV probes instead)")
    choice = choose_h264_encoder()
    table.add_row("H.264 encoder", f"{choice.name} ({choice.reason})")
    table.add_row("lineage database", redact_url(settings.resolved_database_url))
    table.add_row("home", str(settings.home.resolve()))
    try:
        import torch

        cuda = (
            f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA device"
        )
    except ImportError:
        cuda = "torch not installed"
    table.add_row("GPU", cuda)
    out.print(table)
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from talkfactory.models.lipsync.wav2lip.onnx_export import export_onnx

    with console.status(f"exporting {args.checkpoint} to ONNX and checking it against torch ..."):
        report = export_onnx(args.checkpoint, args.out, opset=args.opset)
    table = Table(title="ONNX export")
    table.add_column("")
    table.add_column("")
    table.add_row("checkpoint", f"{report.checkpoint} (sha256 {report.checkpoint_sha256[:16]})")
    table.add_row("onnx", f"{report.onnx_path} (sha256 {report.onnx_sha256[:16]})")
    table.add_row("opset", str(report.opset))
    table.add_row("batch sizes checked", ", ".join(map(str, report.batch_sizes)))
    verdict = "[green]match[/]" if report.passed else "[red]MISMATCH[/]"
    table.add_row(
        "max |onnx - torch|", f"{report.max_abs_diff:.2e} (tolerance {report.tolerance:g}) {verdict}"
    )
    out.print(table)
    return 0 if report.passed else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="talkfactory", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="render a recording spoken by one or more avatars")
    run.add_argument("recording", type=Path, help="FLV/MP4/MOV/MKV recording or an audio file")
    run.add_argument("--avatar", type=Path, action="append", required=True, help="template video or portrait")
    run.add_argument("--out", type=Path, required=True, help="folder for the MP4s")
    run.add_argument("--backend", help="weightless (default) or wav2lip; TALKFACTORY_BACKEND")
    run.add_argument("--checkpoint", help="path or s3:// URL; TALKFACTORY_CHECKPOINT")
    run.add_argument("--encoder", choices=["libx264", "h264_nvenc"], help="skip the encoder trial")
    run.add_argument("--force", action="store_true", help="redo renders lineage says are done")
    run.add_argument(
        "--whole-track", action="store_true", help="render the recording's audio as is, no speech clips"
    )
    add_speech_options(run)
    add_render_quality_options(run)
    add_channel_options(run)
    run.set_defaults(fn=cmd_run)

    sp = sub.add_parser("speech", help="clean clips of the main speaker, with a table of what was kept")
    sp.add_argument("recording", type=Path)
    sp.add_argument("--out", type=Path, required=True, help="folder for the clips and clips.csv/json")
    add_speech_options(sp)
    sp.set_defaults(fn=cmd_speech)

    demo = sub.add_parser("demo", help="make demo material from installed packages and run the job on it")
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.add_argument("--seconds", type=float, default=20.0, help="about how long the demo speech is")
    demo.add_argument("--force", action="store_true")
    demo.set_defaults(fn=cmd_demo)

    db = sub.add_parser("db", help="lineage database")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="run the Alembic migrations")
    up.add_argument("--revision", default="head")
    up.add_argument("--database-url", default=None)
    up.set_defaults(fn=cmd_db)

    lin = sub.add_parser("lineage", help="where a recording or output came from")
    lin.add_argument("ref", help="recording path/sha256/id or an output MP4 path")
    lin.add_argument(
        "--json", action="store_true", help="print the whole chain as JSON (what the page shows)"
    )
    lin.set_defaults(fn=cmd_lineage)

    from talkfactory.cli.scan import add_scan_parser

    add_scan_parser(sub)

    from talkfactory.cli.factory import add_factory_parser

    add_factory_parser(sub)
    add_qc_parser(sub)

    from talkfactory.cli.push import add_push_parser

    add_push_parser(sub)

    from talkfactory.cli.web import add_web_parser

    add_web_parser(sub)
    add_export_parsers(sub)

    models = sub.add_parser("models", help="model files: export, check")
    msub = models.add_subparsers(dest="models_command", required=True)
    exp = msub.add_parser("export-onnx", help="export a Wav2Lip checkpoint to ONNX and verify it")
    exp.add_argument("checkpoint", type=Path, help="wav2lip.pth / wav2lip_gan.pth (public format)")
    exp.add_argument("out", type=Path, help="where to write the .onnx file")
    exp.add_argument("--opset", type=int, default=17)
    exp.set_defaults(fn=cmd_export_onnx)

    doc = sub.add_parser("doctor", help="what this machine offers: ffmpeg, encoders, GPU, database")
    doc.set_defaults(fn=cmd_doctor)
    return p


_PREFECT_COMMANDS = frozenset({"run", "speech", "demo", "scan"})
"""Commands that run Prefect flows: a private API server unless PREFECT_API_URL is set."""
_FLOW_MODULES = {
    "run": "talkfactory.flows.process_recording",
    "demo": "talkfactory.flows.process_recording",
    "speech": "talkfactory.flows.speech",
    "scan": "talkfactory.flows.scan_ingest",
}
_DATABASE_COMMANDS = frozenset({"run", "demo", "scan", "lineage", "db", "web", "export", "push"})
"""Commands that read or write lineage: its database is checked before any work starts."""


def _say_stopping() -> None:
    console.print("[yellow]stopping: cleaning up, then listing what finished (Ctrl-C again to abort)[/]")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit codes as the README's "Errors" section lists them (``cli/errors.py``)."""
    from talkfactory.cli import errors

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    log_path: Path | None = None
    db_url: str | None = None
    try:
        if args.command in _PREFECT_COMMANDS | _DATABASE_COMMANDS:
            from talkfactory.infra.settings import get_settings

            settings = get_settings()
            log_path = errors.log_file(settings.home)
            errors.route_logs(log_path, verbose=args.verbose)
            db_url = getattr(args, "database_url", None) or settings.resolved_database_url
            if args.command in ("run", "demo", "export"):
                errors.check_output_folder(Path(args.out))
            if args.command in _DATABASE_COMMANDS:
                errors.check_lineage_database(db_url)
        if args.command not in _PREFECT_COMMANDS:
            rc: int = args.fn(args)
            return rc
        from talkfactory.cli.api_server import own_api_server
        from talkfactory.pipeline.interrupt import stop_requested

        prefect_env()
        with errors.stopping_on_signals(_say_stopping), own_api_server(settings.home / "logs") as api:
            # The flow modules take seconds to import (torch, mediapipe): meanwhile the server starts.
            importlib.import_module(_FLOW_MODULES[args.command])
            api.wait_ready()
            if stop_requested():
                raise KeyboardInterrupt  # Ctrl-C before any work started
            rc = args.fn(args)
        if stop_requested():
            console.print("[yellow]interrupted[/]: the renders that finished are listed above")
            return errors.EXIT_INTERRUPTED
        return rc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return errors.EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every error ends as one line; its traceback goes to the log
        from talkfactory.pipeline.interrupt import stop_requested

        if stop_requested():
            console.print(f"[yellow]interrupted[/]: {exc}")
            return errors.EXIT_INTERRUPTED
        if log_path is None and not isinstance(exc, TalkfactoryError):
            raise  # a command without a log file (doctor, factory, models): the traceback is all we have
        errors.traceback_to_log(exc)
        line, code = errors.one_line(exc, db_url, log_path)
        console.print(f"[red]error:[/] {line}", markup=True, highlight=False)
        return code


if __name__ == "__main__":
    sys.exit(main())
