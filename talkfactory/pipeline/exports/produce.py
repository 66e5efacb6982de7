"""A render's channel exports: planned before frames flow, encoded beside the master, then checked,
given captions, a cover and metadata, and published.

``ExportRun`` is what ``execute_job`` uses:

* ``ExportRun.prepare`` gathers what every channel needs once per job: the face track rows of each
  output frame, the clip's transcript (from lineage, or recognised once and stored), its loudness,
  and each channel's parts (split at pauses when the clip is longer than the channel allows);
* ``.sinks()`` opens one ``ChannelSink`` per channel; the render (or a decode of the stored master)
  feeds them every frame;
* then ``publish.ExportPublisher(run).publish`` checks each file, gives it captions, a cover and
  metadata, publishes it and records one ``exports`` row per target.

A channel's failure is that export's alone: the render and the other channels go on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from talkfactory.infra.media.encode import AudioInput
from talkfactory.infra.media.frames import PingPongFrames
from talkfactory.infra.media.loudness import Normalization, normalization_for
from talkfactory.models.audio import AudioSource
from talkfactory.models.face.reframe import ReframePlan, plan_reframe
from talkfactory.models.face.track import FaceTrack
from talkfactory.models.speech.asr import Transcript, Word
from talkfactory.pipeline.exports.burn import CaptionBurner
from talkfactory.pipeline.exports.captions import build_cues
from talkfactory.pipeline.exports.channels import ChannelSpec
from talkfactory.pipeline.exports.cover import choose_cover_frames
from talkfactory.pipeline.exports.split import Part, SplitPlan, plan_parts
from talkfactory.pipeline.exports.targets import ExportTarget
from talkfactory.pipeline.exports.variants import ChannelSink, EncodeChoice, SinkFanout
from talkfactory.pipeline.jobs.model import RenderJob

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


def plan_for(spec: ChannelSpec, duration_s: float, words: Sequence[Word]) -> SplitPlan:
    """The parts a clip is published in on ``spec``'s channel (or why it is skipped)."""
    return plan_parts(
        duration_s, spec.max_duration_s, list(words), min_s=spec.min_duration_s, channel=spec.name
    )


def template_rows(track: FaceTrack, n: int) -> NDArray[np.int64]:
    """The face-track row each of ``n`` output frames shows (the template loops ping-pong)."""
    return np.fromiter((PingPongFrames.index_at(i, track.num_frames) for i in range(n)), np.int64, n)


ENERGY_BLOCK_FRAMES = 4096
"""Frames of speech read at a time for ``frame_energy``: memory stays flat on hours-long tracks."""


def frame_energy(analysis: AudioSource, fps: float, n: int) -> NDArray[np.float32]:
    """RMS of the speech under each output frame (pauses are where the mouth rests)."""
    hop = analysis.sample_rate / fps
    edges = np.minimum((np.arange(n + 1) * hop).astype(np.int64), analysis.num_samples)
    rms = np.zeros(n, dtype=np.float32)
    for lo in range(0, n, ENERGY_BLOCK_FRAMES):
        hi = min(n, lo + ENERGY_BLOCK_FRAMES)
        block = edges[lo : hi + 1]
        samples = analysis.read(int(block[0]), int(block[-1])).astype(np.float64)
        squares = np.concatenate([[0.0], np.cumsum(samples**2)])
        local = block - block[0]
        counts = np.maximum(1, local[1:] - local[:-1])
        rms[lo:hi] = np.sqrt((squares[local[1:]] - squares[local[:-1]]) / counts)
    return rms


def _window(plan: ReframePlan, lo: int, hi: int) -> ReframePlan:
    """``plan`` restricted to output frames ``[lo, hi)`` (a part), so its rows line up with them."""
    return dataclasses.replace(plan, rects=plan.rects[lo:hi])
