"""What every ``talkfactory`` command shares: the consoles, Prefect's environment, progress bars,
the backend choice and the speech options."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from talkfactory.pipeline.jobs.model import RenderOptions
    from talkfactory.pipeline.speech import SpeechParams

console = Console(stderr=True)
# Piped into a log, rich would fold the summary table into 80 columns; paths need more.
out = Console(width=None if sys.stdout.isatty() else 160)


def prefect_env() -> None:
    # Set before Prefect is imported: a loaded 2-core CI box needs longer than the 20 s default to
    # migrate a fresh ephemeral database, and our plain-logging modules should reach run logs.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "talkfactory")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


class RichProgressSink:
    """Shows one bar per render while the flow runs on Prefect's worker threads."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def start(self, key: str, label: str, total: int, unit: str = "frames") -> None:
        self._tasks[key] = self._progress.add_task(label, total=total, unit=unit)

    def update(self, key: str, done: int, total: int) -> None:
        if key in self._tasks:
            self._progress.update(self._tasks[key], completed=done, total=total)

    def finish(self, key: str, ok: bool, note: str = "") -> None:
        if key in self._tasks:
            tid = self._tasks[key]
            task = self._progress.tasks[tid]
            mark = "[green]done[/]" if ok else "[red]failed[/]"
            self._progress.update(tid, completed=task.total, description=f"{task.description} {mark} {note}")


@contextmanager
def showing_progress() -> Iterator[None]:
    """A rich display that the pipeline's steps report to while the block runs."""
    from talkfactory.pipeline.progress import set_progress_sink

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[unit]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        set_progress_sink(RichProgressSink(progress))
        try:
            yield
        finally:
            set_progress_sink(None)


def render_options(args: argparse.Namespace) -> RenderOptions:
    """``--backend``/``--checkpoint``/``--encoder``/``--force``/``--whole-track`` as the flows take them,
    falling back to settings (environment or ``.env``) for the backend and checkpoint."""
    from talkfactory.infra.settings import get_settings
    from talkfactory.pipeline.jobs.model import RenderOptions

    settings = get_settings()
    return RenderOptions(
        backend=getattr(args, "backend", None) or settings.backend,
        checkpoint=getattr(args, "checkpoint", None) or settings.checkpoint,
        video_encoder=getattr(args, "encoder", None),
        force=bool(getattr(args, "force", False)),
        whole_track=bool(getattr(args, "whole_track", False)),
        liveliness=getattr(args, "liveliness", None) or "auto",
        qc_strict=bool(getattr(args, "qc_strict", False)),
        channels=tuple(getattr(args, "channel", None) or ()),
        burn_captions=bool(getattr(args, "burn_captions", False)),
    )


def speech_params(args: argparse.Namespace) -> SpeechParams | None:
    """The speech options set on the command line, checked now (a bad value is a usage error)."""
    from talkfactory.pipeline.speech import SpeechParams

    overrides = speech_overrides(args)
    return SpeechParams(**overrides) if overrides else None


def speech_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """SpeechParams fields the user set on the command line (the rest keep their defaults)."""
    names = {
        "denoiser": "denoiser",
        "min_clip": "min_clip",
        "max_clip": "max_clip",
        "min_speech": "min_speech",
        "min_pause": "min_pause",
        "max_pause": "max_pause",
        "loudness": "target_lufs",
        "true_peak": "ceiling_dbtp",
        "diarizer": "diarizer",
        "pyannote_dir": "pyannote_checkpoint",
        "denoise_threads": "denoise_workers",
    }
    out: dict[str, Any] = {
        field: getattr(args, a) for a, field in names.items() if getattr(args, a, None) is not None
    }
    if getattr(args, "all_speakers", False):
        out["main_speaker_only"] = False
    return out


def add_speech_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speech (see `talkfactory speech --help`)")
    g.add_argument("--denoiser", choices=["dfn3", "rnnoise", "none"], help="default dfn3 (DeepFilterNet3)")
    g.add_argument("--min-clip", type=float, metavar="S", help="shortest clip in seconds (default 8)")
    g.add_argument("--max-clip", type=float, metavar="S", help="longest clip in seconds (default 60)")
    g.add_argument("--min-speech", type=float, metavar="S", help="ignore voice shorter than this (0.25)")
    g.add_argument("--min-pause", type=float, metavar="S", help="cut only in pauses this long (0.3)")
    g.add_argument("--max-pause", type=float, metavar="S", help="a longer silence ends a clip (3)")
    g.add_argument("--all-speakers", action="store_true", help="clips for every speaker, not just the host")
    g.add_argument("--loudness", type=float, metavar="LUFS", help="integrated loudness of clips (-16)")
    g.add_argument("--true-peak", type=float, metavar="DBTP", help="true-peak ceiling (-1.5)")
    g.add_argument("--diarizer", choices=["resemblyzer", "pyannote"], help="who-speaks-when backend")
    g.add_argument("--pyannote-dir", metavar="DIR", help="a downloaded pyannote pipeline directory")
    g.add_argument("--denoise-threads", type=int, metavar="N", help="denoise N blocks at once (2)")


def shown(uri: str | None) -> str:
    """A published file as users type it: a plain path for a folder export, the URL for a bucket."""
    if uri and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri or ""
