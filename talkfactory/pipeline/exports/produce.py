"""A render's channel exports: planned before frames flow, encoded beside the master, then checked,
given captions, a cover and metadata, and published.

``ExportRun`` is what ``execute_job`` uses:

* ``ExportRun.prepare`` gathers what every channel needs once per job: the face track rows of each
  output frame, the clip's transcript (from lineage, or recognised once and stored), its loudness,
  and each channel's parts (split at pauses when the clip is longer than the channel allows);
* ``.sinks()`` opens one ``ChannelSink`` per channel; the render (or a decode of the stored master)
  feeds them every frame;
* ``.publish()`` checks each file against its channel (``validate_file``), writes its captions,
  cover and metadata, publishes them (sidecars first, the MP4 last, each object whole) and records
  one ``exports`` row per file: ``published``, ``failed`` (the check or the encode failed; nothing
  published) or ``skipped`` (the channel cannot take the clip, and why).

A channel's failure is that export's alone: the render and the other channels go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import InterruptedRunError, TalkfactoryError
from talkfactory.infra.files import atomic_write_bytes, sha256_file
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.rows import ExportDetails
from talkfactory.infra.media.encode import AudioInput
from talkfactory.infra.media.frames import PingPongFrames
from talkfactory.infra.media.loudness import Normalization, normalization_for
from talkfactory.infra.settings import Settings
from talkfactory.models.audio import AudioSource
from talkfactory.models.face.mesh import FaceMesher
from talkfactory.models.face.reframe import ReframePlan, plan_reframe
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.speech.asr import Transcript, Word
from talkfactory.pipeline.exports.burn import CaptionBurner
from talkfactory.pipeline.exports.captions import build_cues, to_srt, to_vtt, words_between
from talkfactory.pipeline.exports.channels import ChannelSpec
from talkfactory.pipeline.exports.cover import check_cover, choose_cover_frames, write_cover
from talkfactory.pipeline.exports.split import Part, SplitPlan, plan_parts
from talkfactory.pipeline.exports.targets import SIDECARS, ExportTarget, sidecar_key
from talkfactory.pipeline.exports.validate import ValidationResult, validate_file
from talkfactory.pipeline.exports.variants import ChannelSink, EncodeChoice, PartFile, SinkFanout
from talkfactory.pipeline.ingest import store_from_settings
from talkfactory.pipeline.jobs.model import ExportOutcome, ExportStatus, RenderJob

log = logging.getLogger(__name__)


@dataclass
class ExportRun:
    """Everything one job's channel exports share (see the module doc)."""

    job: RenderJob
    targets: tuple[ExportTarget, ...]
    fps: float
    n_frames: int
    duration_s: float
    track: FaceTrack
    rows: NDArray[np.int64]
    audio: AudioInput
    """The audio each channel file muxes (the clip at 48 kHz, or the stored master's own)."""
    transcript: Transcript | None
    energy: NDArray[np.float32]
    spool: Path
    made_from: Literal["render", "master"]
    plans: dict[str, SplitPlan] = field(default_factory=dict)
    reframes: dict[str, ReframePlan] = field(default_factory=dict)
    loudness: dict[tuple[str, int], Normalization] = field(default_factory=dict)
    """Per channel and part: the measured audio and the filter taking it to the channel's target."""
    fanout: SinkFanout | None = None

    @classmethod
    def prepare(
        cls,
        job: RenderJob,
        targets: Sequence[ExportTarget],
        *,
        track: FaceTrack,
        fps: float,
        analysis: AudioSource,
        audio: AudioInput,
        transcript: Transcript | None,
        spool: Path,
        made_from: Literal["render", "master"],
        timeout_s: float | None = None,
    ) -> ExportRun:
        duration = analysis.num_samples / analysis.sample_rate
        n = max(1, round(duration * fps))
        rows = template_rows(track, n)
        run = cls(
            job=job,
            targets=tuple(targets),
            fps=fps,
            n_frames=n,
            duration_s=duration,
            track=track,
            rows=rows,
            audio=audio,
            transcript=transcript,
            energy=frame_energy(analysis, fps, n),
            spool=spool,
            made_from=made_from,
        )
        words = transcript.words if transcript is not None else ()
        for target in run.targets:
            if target.is_master:
                # The render as it is: one part, native size, whatever the master spec's limits.
                run.plans[target.channel] = SplitPlan(parts=(Part(1, 0.0, duration),), skipped_reason=None)
            else:
                run.plans[target.channel] = plan_for(target.spec, duration, words)
            run.reframes[target.channel] = plan_reframe(
                track, rows, out_w=target.spec.width or track.width, out_h=target.spec.height or track.height
            )
        run._measure(timeout_s)
        return run

    def _measure(self, timeout_s: float | None) -> None:
        """Loudness per channel part, measured before frames flow (parts sharing a span and target
        share the measurement): each part is brought to its channel's target on its own."""
        done: dict[tuple[float, float, float, float, int, int], Normalization] = {}
        for target in self.targets:
            spec = target.spec
            if target.is_master:
                continue
            for part in self.plans[target.channel].parts:
                key = (
                    part.start_s,
                    part.end_s,
                    spec.loudness_lufs,
                    spec.true_peak_db,
                    spec.audio_channels,
                    spec.audio_rate,
                )
                if key not in done:
                    done[key] = normalization_for(
                        self.audio.path,
                        target_lufs=spec.loudness_lufs,
                        true_peak_db=spec.true_peak_db,
                        start=(self.audio.start or 0.0) + part.start_s,
                        duration=part.duration_s,
                        stream=self.audio.stream_index,
                        channels=spec.audio_channels,
                        sample_rate=spec.audio_rate,
                        timeout=timeout_s or 600.0,
                    )
                self.loudness[(target.channel, part.number)] = done[key]

    def sinks(self, encode: EncodeChoice) -> SinkFanout:
        sinks = []
        capture: list[int] = []
        for target in self.targets:
            plan = self.plans[target.channel]
            if target.is_master:
                # Encoded by the render itself; only its cover candidates are kept as they pass.
                capture = self._cover_candidates(plan.parts[0], count=2)
                continue
            if not plan.parts:
                continue
            spec = target.spec
            reframe = self.reframes[target.channel]
            burner = None
            if target.burn_captions and self.transcript is not None:
                burner = CaptionBurner(
                    build_cues(list(self.transcript.words)), width=reframe.out_w, height=reframe.out_h
                )
            covers: list[int] = []
            for part in plan.parts:
                covers += self._cover_candidates(part, plan=reframe)
            sinks.append(
                ChannelSink(
                    target,
                    plan=reframe,
                    parts=plan.parts,
                    fps=self.fps,
                    audio=self.audio,
                    options={
                        p.number: spec.encode_options(
                            self.fps, audio_filters=(self.loudness[(target.channel, p.number)].filter,)
                        )
                        for p in plan.parts
                    },
                    encode=encode,
                    spool=self.spool,
                    burner=burner,
                    cover_frames=covers,
                )
            )
        self.fanout = SinkFanout(sinks, capture=capture)
        return self.fanout

    def _cover_candidates(self, part: Part, count: int = 4, plan: ReframePlan | None = None) -> list[int]:
        lo, hi = round(part.start_s * self.fps), min(self.n_frames, round(part.end_s * self.fps))
        if hi <= lo:
            return []
        rows, energy = self.rows[lo:hi], self.energy[lo:hi]
        # The plan's crop decides what "inside the picture" means for a channel's cover.
        window = _window(plan, lo, hi) if plan is not None else None
        picked = choose_cover_frames(self.track, rows, energy, self.fps, count=count, plan=window)
        # The part's middle frame too: a cover even when no frame passes every test.
        return [lo + int(i) for i in picked] + [(lo + hi) // 2]

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
        failed = self.fanout.failed if self.fanout is not None else {}
        made = {(f.target.channel, f.part.number): f for f in files}
        for target in self.targets:
            plan = self.plans[target.channel]
            if target.is_master:
                if master is not None:
                    outcomes.append(self._publish_master(target, master, render_id, repo, settings))
                continue
            if not plan.parts:
                reason = plan.skipped_reason or "the channel cannot take this clip"
                outcomes.append(self._record_skip(target, reason, render_id, repo))
                continue
            for part in plan.parts:
                made_file = made.get((target.channel, part.number))
                error: TalkfactoryError | None = failed.get(target.channel)
                if made_file is None:
                    why = str(error) if error else "the encode made no file"
                    outcomes.append(self._record_failure(target, part, len(plan.parts), why, render_id, repo))
                    continue
                try:
                    outcomes.append(self._publish_one(made_file, render_id, repo, settings))
                except InterruptedRunError:
                    raise
                except TalkfactoryError as exc:
                    log.error("%s: %s export failed: %s", self.job.label, target.channel, exc)
                    outcomes.append(
                        self._record_failure(target, part, len(plan.parts), str(exc), render_id, repo)
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
        norm = self.loudness.get((target.channel, part.number))
        if norm is not None:
            variant["loudness_method"] = "linear" if norm.linear else "gain and true-peak limiter"
        if not check.ok:
            why = "; ".join(v.message for v in check.violations)
            log.error("%s: %s does not meet %s's limits: %s", self.job.label, key, target.channel, why)
            details = self._details(target, made, variant, check, status="failed", error=why)
            repo.record_export(
                render_id=render_id,
                recording_id=self.job.recording_id,
                source_object_id=self.job.source_object_id,
                uri=uri,
                etag=None,
                size_bytes=None,
                prov=self.job.provenance,
                details=details,
            )
            return self._outcome(target, made, "failed", uri, check, error=why)
        sidecars = self._sidecars(made, key, variant)
        for suffix, local in sidecars.items():
            store.put_file(local, sidecar_key(key, suffix), content_type=SIDECARS[suffix])
            local.unlink(missing_ok=True)
        info = store.put_file(made.path, key, content_type="video/mp4")
        details = self._details(target, made, variant, check, status="published", error=None)
        repo.record_export(
            render_id=render_id,
            recording_id=self.job.recording_id,
            source_object_id=self.job.source_object_id,
            uri=uri,
            etag=info.etag,
            size_bytes=info.size,
            prov=self.job.provenance,
            details=details,
        )
        log.info(
            "%s: %s published %s (%dx%d, %.1f s, %.1f LUFS)",
            self.job.label,
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
        covers = self.fanout.captured() if self.fanout is not None else ()
        made = PartFile(
            target=target,
            part=self.plans[target.channel].parts[0],
            parts=1,
            path=master,
            width=self.track.width + self.track.width % 2,
            height=self.track.height + self.track.height % 2,
            frames=self.n_frames,
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
        repo.record_export(
            render_id=render_id,
            recording_id=self.job.recording_id,
            source_object_id=self.job.source_object_id,
            uri=uri,
            etag=info.etag,
            size_bytes=info.size,
            prov=self.job.provenance,
            details=self._details(target, made, variant, check, status="published", error=None),
        )
        return self._outcome(target, made, "published", uri, check)

    def _sidecars(self, made: PartFile, key: str, variant: dict[str, Any]) -> dict[str, Path]:
        """Captions, cover and metadata files for one export, written into the spool."""
        out: dict[str, Path] = {}
        base = made.path.with_suffix("")
        spec = made.target.spec
        words: list[Word] = []
        if self.transcript is not None:
            words = words_between(list(self.transcript.words), made.part.start_s, made.part.end_s)
        if spec.captions and self.transcript is not None:
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
        meta = metadata(self.job, made, variant, " ".join(w.text.strip() for w in words))
        atomic_write_bytes(path, json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
        out[".json"] = path
        return out

    def _variant(self, made: PartFile) -> dict[str, Any]:
        job, part, spec = self.job, made.part, made.target.spec
        reframe = self.reframes[made.target.channel]
        clip_start = job.clip.start_s
        return {
            "width": made.width,
            "height": made.height,
            "fps": round(self.fps, 3),
            "reframe": reframe.mode,
            "reframe_reason": reframe.reason,
            "upscaled": bool(reframe.upscaled),
            "loudness_target_lufs": spec.loudness_lufs,
            "true_peak_target_db": spec.true_peak_db,
            "burned_captions": made.target.burn_captions and self.transcript is not None,
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
            "made_from": self.made_from,
            "transcript_model": self.transcript.model if self.transcript is not None else None,
            "language": self.transcript.language if self.transcript is not None else None,
        }

    def _details(
        self,
        target: ExportTarget,
        made: PartFile,
        variant: dict[str, Any],
        check: Any,
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
        check: Any,
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

    def _record_skip(
        self, target: ExportTarget, reason: str, render_id: int, repo: LineageRepository
    ) -> ExportOutcome:
        log.warning("%s: not exported to %s: %s", self.job.label, target.channel, reason)
        uri = _uri(target, target.key)
        repo.record_export(
            render_id=render_id,
            recording_id=self.job.recording_id,
            source_object_id=self.job.source_object_id,
            uri=uri,
            etag=None,
            size_bytes=None,
            prov=self.job.provenance,
            details=ExportDetails(
                channel=target.channel,
                spec_version=target.spec.spec_version,
                variant={"recording": self.job.recording_name, "clip": self.job.clip.number},
                duration_s=self.duration_s,
                status="skipped",
                error=reason,
                destination=target.location,
            ),
        )
        return ExportOutcome(target.channel, "skipped", uri, error=reason, duration_s=self.duration_s)

    def _record_failure(
        self,
        target: ExportTarget,
        part: Part,
        parts: int,
        why: str,
        render_id: int,
        repo: LineageRepository,
    ) -> ExportOutcome:
        uri = _uri(target, target.part_key(part.number, parts))
        repo.record_export(
            render_id=render_id,
            recording_id=self.job.recording_id,
            source_object_id=self.job.source_object_id,
            uri=uri,
            etag=None,
            size_bytes=None,
            prov=self.job.provenance,
            details=ExportDetails(
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


def _uri(target: ExportTarget, key: str) -> str:
    # A URL by the store's own rule, without opening the store (a skipped export touches nothing).
    location = target.location.rstrip("/")
    if "://" in location:
        return f"{location}/{key}"
    return (Path(location).resolve() / key).as_uri()


def plan_for(spec: ChannelSpec, duration_s: float, words: Sequence[Word]) -> SplitPlan:
    """The parts a clip is published in on ``spec``'s channel (or why it is skipped)."""
    return plan_parts(
        duration_s, spec.max_duration_s, list(words), min_s=spec.min_duration_s, channel=spec.name
    )


def template_rows(track: FaceTrack, n: int) -> NDArray[np.int64]:
    """The face-track row each of ``n`` output frames shows (the template loops ping-pong)."""
    return np.fromiter((PingPongFrames.index_at(i, track.num_frames) for i in range(n)), np.int64, n)


def frame_energy(analysis: AudioSource, fps: float, n: int) -> NDArray[np.float32]:
    """RMS of the speech under each output frame (pauses are where the mouth rests)."""
    rate = analysis.sample_rate
    samples = analysis.read(0, analysis.num_samples)
    hop = rate / fps
    edges = np.minimum((np.arange(n + 1) * hop).astype(np.int64), len(samples))
    squares = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    counts = np.maximum(1, edges[1:] - edges[:-1])
    rms: NDArray[np.float32] = np.sqrt((squares[edges[1:]] - squares[edges[:-1]]) / counts).astype(np.float32)
    return rms


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


def _window(plan: ReframePlan, lo: int, hi: int) -> ReframePlan:
    """``plan`` restricted to output frames ``[lo, hi)`` (a part), so its rows line up with them."""
    return dataclasses.replace(plan, rects=plan.rects[lo:hi])


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
