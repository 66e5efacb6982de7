"""Publishing one job's channel files: checks, captions, covers, metadata, lineage rows.

``ExportPublisher.publish`` takes the files an ``ExportRun``'s sinks made: each is checked against
its channel (``validate_file``); one that passes gets its captions, cover and metadata, published
sidecars first and the MP4 last (each object whole); every target gets an ``exports`` row:
``published``, ``failed`` (the check or the encode failed; nothing published) or ``skipped`` (the
channel cannot take the clip, and why). The master, already published by the render, is measured
and given its sidecars; only its container checks count.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import InterruptedRunError, TalkfactoryError
from talkfactory.infra.files import atomic_write_bytes, sha256_file
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.rows import ExportDetails
from talkfactory.infra.settings import Settings
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.speech.asr import Word
from talkfactory.pipeline.exports.captions import build_cues, to_srt, to_vtt, words_between
from talkfactory.pipeline.exports.cover import check_cover, write_cover
from talkfactory.pipeline.exports.split import Part
from talkfactory.pipeline.exports.targets import SIDECARS, ExportTarget, sidecar_key
from talkfactory.pipeline.exports.validate import ValidationResult, validate_file
from talkfactory.pipeline.exports.variants import PartFile
from talkfactory.pipeline.ingest import store_from_settings
from talkfactory.pipeline.jobs.model import ExportOutcome, ExportStatus, RenderJob

if TYPE_CHECKING:
    from talkfactory.pipeline.exports.produce import ExportRun

log = logging.getLogger(__name__)


class ExportPublisher:
    """Publishes what one ``ExportRun`` made (see the module doc)."""

    def __init__(self, run: ExportRun) -> None:
        self.run = run

    def publish(
        self,
        *,
        render_id: int,
        repo: LineageRepository,
        settings: Settings,
        files: Sequence[PartFile],
        master: Path | None,
    ) -> list[ExportOutcome]:
        """Check, complete and publish ``files``; record every target's outcome (see the module doc).

        ``master``: a local copy of the render, already published, given its sidecars and
        measurements here (None: the master is not among the targets to do).
        """
        outcomes: list[ExportOutcome] = []
        failed = self.run.fanout.failed if self.run.fanout is not None else {}
        made = {(f.target.channel, f.part.number): f for f in files}
        for target in self.run.targets:
            plan = self.run.plans[target.channel]
            if target.is_master:
                if master is not None:
                    outcomes.append(self._publish_master(target, master, render_id, repo, settings))
                continue
            if not plan.parts:
                reason = plan.skipped_reason or "the channel cannot take this clip"
                outcomes.append(self._record_skip(target, reason, render_id, repo, settings))
                continue
            for part in plan.parts:
                made_file = made.get((target.channel, part.number))
                error: TalkfactoryError | None = failed.get(target.channel)
                if made_file is None:
                    why = str(error) if error else "the encode made no file"
                    outcomes.append(
                        self._record_failure(target, part, len(plan.parts), why, render_id, repo, settings)
                    )
                    continue
                try:
                    outcomes.append(self._publish_one(made_file, render_id, repo, settings))
                except InterruptedRunError:
                    raise
                except TalkfactoryError as exc:
                    log.error("%s: %s export failed: %s", self.run.job.label, target.channel, exc)
                    outcomes.append(
                        self._record_failure(
                            target, part, len(plan.parts), str(exc), render_id, repo, settings
                        )
                    )
                finally:
                    made_file.path.unlink(missing_ok=True)
        return outcomes

    def _publish_one(
        self, made: PartFile, render_id: int, repo: LineageRepository, settings: Settings
    ) -> ExportOutcome:
        target, part = made.target, made.part
        key = target.part_key(part.number, made.parts)
        store = store_from_settings(target.location, settings)
        uri = store.url(key)
        check = validate_file(made.path, target.spec)
        variant = self._variant(made)
        norm = self.run.loudness.get((target.channel, part.number))
        if norm is not None:
            variant["loudness_method"] = "linear" if norm.linear else "gain and true-peak limiter"
        if not check.ok:
            why = "; ".join(v.message for v in check.violations)
            log.error("%s: %s does not meet %s's limits: %s", self.run.job.label, key, target.channel, why)
            details = self._details(target, made, variant, check, status="failed", error=why)
            self._record(repo, render_id, uri, details)
            return self._outcome(target, made, "failed", uri, check, error=why)
        sidecars = self._sidecars(made, key, variant)
        for suffix, local in sidecars.items():
            store.put_file(local, sidecar_key(key, suffix), content_type=SIDECARS[suffix])
            local.unlink(missing_ok=True)
        info = store.put_file(made.path, key, content_type="video/mp4")
        details = self._details(target, made, variant, check, status="published", error=None)
        self._record(repo, render_id, uri, details, etag=info.etag, size=info.size)
        log.info(
            "%s: %s published %s (%dx%d, %.1f s, %.1f LUFS)",
            self.run.job.label,
            target.channel,
            key,
            made.width,
            made.height,
            part.duration_s,
            check.loudness.integrated_lufs if check.loudness else float("nan"),
        )
        return self._outcome(target, made, "published", uri, check)

    def _publish_master(
        self, target: ExportTarget, master: Path, render_id: int, repo: LineageRepository, settings: Settings
    ) -> ExportOutcome:
        """The render itself: measured and given sidecars; its checks are reported, never blocking
        (it is the render, published already)."""
        covers = self.run.fanout.captured() if self.run.fanout is not None else ()
        made = PartFile(
            target=target,
            part=self.run.plans[target.channel].parts[0],
            parts=1,
            path=master,
            width=self.run.track.width + self.run.track.width % 2,
            height=self.run.track.height + self.run.track.height % 2,
            frames=self.run.n_frames,
            covers=covers,
        )
        store = store_from_settings(target.location, settings)
        check = master_checks(validate_file(master, target.spec, expected_size=(made.width, made.height)))
        variant = self._variant(made)
        for suffix, local in self._sidecars(made, target.key, variant).items():
            store.put_file(local, sidecar_key(target.key, suffix), content_type=SIDECARS[suffix])
            local.unlink(missing_ok=True)
        info = store.stat(target.key)
        uri = store.url(target.key)
        self._record(
            repo,
            render_id,
            uri,
            self._details(target, made, variant, check, status="published", error=None),
            etag=info.etag,
            size=info.size,
        )
        return self._outcome(target, made, "published", uri, check)

    def _sidecars(self, made: PartFile, key: str, variant: dict[str, Any]) -> dict[str, Path]:
        """Captions, cover and metadata files for one export, written into the spool."""
        out: dict[str, Path] = {}
        # In the spool, never beside ``made.path``: a master re-exported from a folder is the
        # published file itself, and publishing a sidecar onto its own path would delete it.
        base = self.run.spool / "sidecars" / made.target.channel / Path(key).stem
        base.parent.mkdir(parents=True, exist_ok=True)
        spec = made.target.spec
        words: list[Word] = []
        if self.run.transcript is not None:
            words = words_between(list(self.run.transcript.words), made.part.start_s, made.part.end_s)
        if spec.captions and self.run.transcript is not None:
            cues = build_cues(words)
            for suffix, text in ((".srt", to_srt(cues)), (".vtt", to_vtt(cues))):
                path = Path(f"{base}{suffix}")
                atomic_write_bytes(path, text.encode("utf-8"))
                out[suffix] = path
            variant["captions"] = {"srt": sidecar_key(key, ".srt"), "vtt": sidecar_key(key, ".vtt")}
        if spec.cover and made.covers:
            cover = pick_cover(made.covers)
            path = Path(f"{base}.jpg")
            write_cover(cover, path)
            out[".jpg"] = path
            variant["cover"] = sidecar_key(key, ".jpg")
        variant["metadata"] = sidecar_key(key, ".json")
        path = Path(f"{base}.json")
        meta = metadata(self.run.job, made, variant, " ".join(w.text.strip() for w in words))
        atomic_write_bytes(path, json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
        out[".json"] = path
        return out

    def _variant(self, made: PartFile) -> dict[str, Any]:
        job, part, spec = self.run.job, made.part, made.target.spec
        reframe = self.run.reframes[made.target.channel]
        clip_start = job.clip.start_s
        return {
            "width": made.width,
            "height": made.height,
            "fps": round(self.run.fps, 3),
            "reframe": reframe.mode,
            "reframe_reason": reframe.reason,
            "upscaled": bool(reframe.upscaled),
            "loudness_target_lufs": spec.loudness_lufs,
            "true_peak_target_db": spec.true_peak_db,
            "burned_captions": made.target.burn_captions and self.run.transcript is not None,
            "part": part.number,
            "parts": made.parts,
            "part_span_s": [round(part.start_s, 3), round(part.end_s, 3)],
            "source_span_s": [round(clip_start + part.start_s, 3), round(clip_start + part.end_s, 3)],
            "recording": job.recording_name,
            "recording_sha256": job.recording_sha256,
            "clip": job.clip.number,
            "avatar": job.avatar.label,
            "avatar_version": job.avatar.content_hash,
            "backend": job.params.backend,
            "backend_version": job.model_version,
            "made_from": self.run.made_from,
            "transcript_model": self.run.transcript.model if self.run.transcript is not None else None,
            "language": self.run.transcript.language if self.run.transcript is not None else None,
        }

    def _details(
        self,
        target: ExportTarget,
        made: PartFile,
        variant: dict[str, Any],
        check: ValidationResult,
        *,
        status: ExportStatus,
        error: str | None,
    ) -> ExportDetails:
        info = check.info
        if info is not None:
            variant["video_codec"] = info.video.codec if info.video else None
            variant["audio_codec"] = info.audio.codec if info.audio else None
        return ExportDetails(
            channel=target.channel,
            spec_version=target.spec.spec_version,
            part=made.part.number if made.parts > 1 else None,
            variant=variant,
            sha256=sha256_file(made.path) if status == "published" else None,
            duration_s=info.duration if info is not None else made.part.duration_s,
            loudness_lufs=check.loudness.integrated_lufs if check.loudness else None,
            true_peak_db=check.loudness.true_peak_db if check.loudness else None,
            validation={"ok": check.ok, "violations": [v.to_dict() for v in check.violations]},
            status=status,
            error=error,
            destination=target.location,
        )

    def _outcome(
        self,
        target: ExportTarget,
        made: PartFile,
        status: ExportStatus,
        uri: str,
        check: ValidationResult,
        *,
        error: str | None = None,
    ) -> ExportOutcome:
        return ExportOutcome(
            channel=target.channel,
            status=status,
            uri=uri,
            part=made.part.number,
            parts=made.parts,
            error=error,
            duration_s=made.part.duration_s,
            width=made.width,
            height=made.height,
            loudness_lufs=check.loudness.integrated_lufs if check.loudness else None,
            true_peak_db=check.loudness.true_peak_db if check.loudness else None,
        )

    def _record(
        self,
        repo: LineageRepository,
        render_id: int,
        uri: str,
        details: ExportDetails,
        *,
        etag: str | None = None,
        size: int | None = None,
    ) -> None:
        job = self.run.job
        repo.record_export(
            render_id=render_id,
            recording_id=job.recording_id,
            source_object_id=job.source_object_id,
            uri=uri,
            etag=etag,
            size_bytes=size,
            prov=job.provenance,
            details=details,
        )

    def _record_skip(
        self,
        target: ExportTarget,
        reason: str,
        render_id: int,
        repo: LineageRepository,
        settings: Settings,
    ) -> ExportOutcome:
        log.warning("%s: not exported to %s: %s", self.run.job.label, target.channel, reason)
        uri = _uri(target, target.key, settings)
        self._record(
            repo,
            render_id,
            uri,
            ExportDetails(
                channel=target.channel,
                spec_version=target.spec.spec_version,
                variant={"recording": self.run.job.recording_name, "clip": self.run.job.clip.number},
                duration_s=self.run.duration_s,
                status="skipped",
                error=reason,
                destination=target.location,
            ),
        )
        return ExportOutcome(target.channel, "skipped", uri, error=reason, duration_s=self.run.duration_s)

    def _record_failure(
        self,
        target: ExportTarget,
        part: Part,
        parts: int,
        why: str,
        render_id: int,
        repo: LineageRepository,
        settings: Settings,
    ) -> ExportOutcome:
        uri = _uri(target, target.part_key(part.number, parts), settings)
        self._record(
            repo,
            render_id,
            uri,
            ExportDetails(
                channel=target.channel,
                spec_version=target.spec.spec_version,
                part=part.number if parts > 1 else None,
                duration_s=part.duration_s,
                status="failed",
                error=why,
                destination=target.location,
            ),
        )
        return ExportOutcome(target.channel, "failed", uri, part=part.number, parts=parts, error=why)


def _uri(target: ExportTarget, key: str, settings: Settings) -> str:
    # The store's own URL, as a published file gets it: a failed or skipped row and the row of a
    # later success are then one row (upserted by URL), so no stale failure outlives the fix.
    return store_from_settings(target.location, settings).url(key)


MASTER_CHECKS = frozenset({"video", "video_codec", "pix_fmt", "width", "faststart", "audio", "audio_codec"})
"""What the master is held to: it is the render as made (its loudness, GOP and audio format are the
render's, not a channel's), so only what makes it a sound, web-ready H.264 MP4 counts."""


def master_checks(check: ValidationResult) -> ValidationResult:
    kept = [v for v in check.violations if v.field in MASTER_CHECKS]
    return dataclasses.replace(check, violations=kept, ok=not kept)


def pick_cover(candidates: Sequence[NDArray[np.uint8]]) -> NDArray[np.uint8]:
    """The first candidate with the face in, eyes open and mouth nearly closed; else the best scored
    (candidates end with the part's middle frame, the fallback when none scores at all)."""
    best, best_score = candidates[-1], -1.0
    with FaceMesher(static=True) as mesher:
        for frame in candidates:
            check = check_cover(frame, mesher=mesher)
            if check.passed:
                return frame
            if check.score > best_score:
                best, best_score = frame, check.score
    return best


def metadata(job: RenderJob, made: PartFile, variant: dict[str, Any], text: str) -> dict[str, Any]:
    """The per-export JSON: upload fields in the shape uploaders read (``title``, ``description``,
    ``tags``, ``language``...), and what the file is."""
    what = f"{job.avatar.label} clip {job.clip.number}" if job.clip.number else job.avatar.label
    part = f" (part {made.part.number} of {made.parts})" if made.parts > 1 else ""
    stem = Path(job.recording_name).stem
    return {
        "title": f"{stem}: {what}{part}",
        "description": text,
        "tags": [],
        "language": variant.get("language"),
        "privacyStatus": "private",
        "channel": made.target.channel,
        "spec_version": made.target.spec.spec_version,
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "variant": variant,
    }
