"""``manifest.json`` and ``manifest.csv``: every export in an exports location, from lineage.

Written after each run that made channel files, from the lineage rows of every export under that
location (not just this run's), so the manifest always describes the whole folder or prefix. Each
file is published whole (a reader sees the old manifest or the new one). Paths are relative to the
location; values measured on the files themselves (sha256, loudness, true peak) come from the
checks made before publishing.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.rows import ExportRow
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.ingest import store_from_settings
from talkfactory.pipeline.jobs.model import RenderJob

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ManifestEntry:
    """One export, as the manifest lists it (the CSV has these columns, in this order)."""

    channel: str
    status: str
    path: str
    sha256: str | None
    bytes: int | None
    duration_s: float | None
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None
    loudness_lufs: float | None
    true_peak_db: float | None
    captions_srt: str | None
    captions_vtt: str | None
    cover: str | None
    metadata: str | None
    part: int | None
    parts: int | None
    recording: str | None
    clip: int | None
    source_start_s: float | None
    source_end_s: float | None
    avatar: str | None
    avatar_version: str | None
    backend_version: str | None
    reframe: str | None
    upscaled: bool | None
    spec_version: str | None
    render_id: int
    error: str | None


def entry(row: ExportRow, root_uri: str) -> ManifestEntry:
    v: dict[str, Any] = row.variant or {}
    captions = v.get("captions") or {}
    span = v.get("source_span_s") or [None, None]
    return ManifestEntry(
        channel=row.channel,
        status=row.status,
        path=relative(row.uri, root_uri),
        sha256=row.sha256,
        bytes=row.size_bytes,
        duration_s=row.duration_s,
        width=v.get("width"),
        height=v.get("height"),
        fps=v.get("fps"),
        video_codec=v.get("video_codec"),
        audio_codec=v.get("audio_codec"),
        loudness_lufs=row.loudness_lufs,
        true_peak_db=row.true_peak_db,
        captions_srt=captions.get("srt"),
        captions_vtt=captions.get("vtt"),
        cover=v.get("cover"),
        metadata=v.get("metadata"),
        part=row.part,
        parts=v.get("parts"),
        recording=v.get("recording"),
        clip=v.get("clip"),
        source_start_s=span[0],
        source_end_s=span[1],
        avatar=v.get("avatar"),
        avatar_version=v.get("avatar_version"),
        backend_version=v.get("backend_version"),
        reframe=v.get("reframe"),
        upscaled=v.get("upscaled"),
        spec_version=row.spec_version,
        render_id=row.render_id,
        error=row.error,
    )


def relative(uri: str, root_uri: str) -> str:
    root = root_uri.rstrip("/") + "/"
    return uri[len(root) :] if uri.startswith(root) else uri


def manifest_entries(rows: Sequence[ExportRow], root_uri: str) -> list[ManifestEntry]:
    """The latest row per file (a file re-made replaces its row), channel files and skips included."""
    latest: dict[str, ExportRow] = {}
    for row in rows:
        latest[row.uri] = row  # rows come in id order: the last one wins
    return sorted(
        (entry(r, root_uri) for r in latest.values()),
        # Per render, the master first, then its channels and their parts.
        key=lambda e: (e.recording or "", e.render_id, e.channel != "master", e.channel, e.part or 0),
    )


def manifest_json(entries: Sequence[ManifestEntry], location: str) -> bytes:
    doc = {
        "manifest_version": MANIFEST_VERSION,
        "location": location,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exports": [asdict(e) for e in entries],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")


def manifest_csv(entries: Sequence[ManifestEntry]) -> bytes:
    out = io.StringIO()
    fields = list(ManifestEntry.__dataclass_fields__)
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for e in entries:
        writer.writerow({k: "" if v is None else v for k, v in asdict(e).items()})
    return out.getvalue().encode("utf-8")


def write_manifest(repo: LineageRepository, location: str, settings: Settings) -> list[ManifestEntry]:
    """Publish ``manifest.json`` and ``manifest.csv`` at the root of ``location``; returns the entries."""
    store = store_from_settings(location, settings)
    root = store.url("manifest.json").rsplit("/", 1)[0]
    entries = manifest_entries(repo.exports_under(root + "/"), root)
    with tempfile.TemporaryDirectory(prefix="manifest-", dir=_spool(settings)) as tmp:
        for name, data, kind in (
            ("manifest.json", manifest_json(entries, location), "application/json"),
            ("manifest.csv", manifest_csv(entries), "text/csv"),
        ):
            path = Path(tmp) / name
            path.write_bytes(data)
            store.put_file(path, name, content_type=kind)
    return entries


def write_manifests(
    repo: LineageRepository, jobs: Sequence[RenderJob], settings: Settings
) -> dict[str, list[ManifestEntry]]:
    """A manifest in every location ``jobs`` exported to (the run's, and channels' own destinations)."""
    locations = {t.location: None for job in jobs for t in job.exports}
    return {location: write_manifest(repo, location, settings) for location in locations}


def _spool(settings: Settings) -> Path:
    folder = settings.work_dir / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
