"""``talkfactory qc VIDEO``: is the mouth in sync with the speech? And ``run``'s render-quality options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from talkfactory.cli.common import console, out
from talkfactory.models.lipsync.liveliness import LIVELINESS_CHOICES


def cmd_qc(args: argparse.Namespace) -> int:
    from talkfactory.pipeline.qc import measure_sync

    kwargs = {} if args.seconds is None else {"max_sampled_s": args.seconds}
    if args.json:
        report = measure_sync(args.video, **kwargs)
    else:
        with console.status(f"measuring sync of {args.video} ..."):
            report = measure_sync(args.video, **kwargs)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"sync check of {Path(args.video).name}")
        table.add_column("")
        table.add_column("")
        offset = "unmeasured" if report.offset_ms is None else f"{report.offset_ms:+.0f} ms"
        table.add_row("audio offset (+ = late)", f"{offset} (ok within ±{report.max_offset_ms:.0f} ms)")
        corr = "unmeasured" if report.correlation is None else f"{report.correlation:.2f}"
        table.add_row("mouth vs speech correlation", f"{corr} (ok from {report.min_correlation:.2f})")
        table.add_row(
            "frames measured", f"{report.frames_used} of {report.frames_total}, {report.windows} window(s)"
        )
        table.add_row("verdict", "[green]ok[/]" if report.ok else f"[red]needs review[/]: {report.reason}")
        table.add_row("took", f"{report.cost_s:.2f} s")
        out.print(table)
    return 0 if report.ok else 1


def add_qc_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    qc = sub.add_parser(
        "qc",
        help="check lip sync of any video with a face and speech (exit 0 when in sync, 1 when not)",
        description="Measures, from the file, the audio-video offset (mouth opening from the face mesh "
        "against the speech envelope) and the correlation at that offset.",
    )
    qc.add_argument("video", type=Path)
    qc.add_argument("--json", action="store_true", help='print {"offset_ms", "correlation", "ok", ...}')
    qc.add_argument(
        "--seconds", type=float, metavar="S", help="decode and measure at most this much of the video (24)"
    )
    qc.set_defaults(fn=cmd_qc)


def add_render_quality_options(p: argparse.ArgumentParser) -> None:
    """``--liveliness`` and ``--qc-strict`` for commands that render."""
    g = p.add_argument_group("render quality")
    g.add_argument(
        "--liveliness",
        choices=LIVELINESS_CHOICES,
        default="auto",
        help="blinks, brow raises and small head motion: auto (default) = subtle for portraits, "
        "off for template videos",
    )
    g.add_argument(
        "--qc-strict",
        action="store_true",
        help="a render that fails the sync check fails the job (by default: published, marked needs_review)",
    )
