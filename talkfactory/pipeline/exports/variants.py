"""One channel's files, made from frames as they are rendered (or decoded from a stored master).

A ``ChannelSink`` takes every output frame once, in order, and feeds the encoder of the part that
frame falls in (a clip over a channel's length limit is split at pauses into parts). Reframing and
caption burn-in run in the encoder's own writer thread (``FrameEncoder(transform=...)``), so a render
feeding the master and three channels keeps four threads busy instead of doing every resize in the
render loop. At most one encoder per channel is open at a time, and each holds a few frames: memory
does not grow with the clip's length or the number of parts.

Cover candidates (frames chosen from the face track before the render) are kept as they pass, at
the channel's size, so a cover never needs a second decode.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import InterruptedRunError, TalkfactoryError
from talkfactory.infra.media.channel_encode import ChannelEncodeOptions
from talkfactory.infra.media.encode import AudioInput, FrameEncoder
from talkfactory.models.face.reframe import ReframePlan
from talkfactory.models.face.reframe_frames import apply_reframe
from talkfactory.pipeline.exports.burn import CaptionBurner
from talkfactory.pipeline.exports.split import Part
from talkfactory.pipeline.exports.targets import ExportTarget

log = logging.getLogger(__name__)

Frame = NDArray[np.uint8]


@dataclass(frozen=True)
class EncodeChoice:
    """The encoder settings every file of one job shares (the render's own)."""

    video_codec: str
    crf: int
    preset: str
    timeout_s: float


@dataclass(frozen=True)
class PartFile:
    """One encoded part, still in the spool: checked and published by ``publish``."""

    target: ExportTarget
    part: Part
    parts: int
    path: Path
    width: int
    height: int
    frames: int
    covers: tuple[Frame, ...] = field(repr=False, default=())
    """Cover candidates from this part, best first, at the channel's size."""


def frame_span(part: Part, fps: float) -> tuple[int, int]:
    """The output frames ``[first, end)`` a part covers (contiguous parts share their boundaries)."""
    return round(part.start_s * fps), round(part.end_s * fps)


class ChannelSink:
    """Encodes the frames of one channel, part by part (see the module doc)."""

    def __init__(
        self,
        target: ExportTarget,
        *,
        plan: ReframePlan,
        parts: Sequence[Part],
        fps: float,
        audio: AudioInput,
        options: Mapping[int, ChannelEncodeOptions],
        encode: EncodeChoice,
        spool: Path,
        burner: CaptionBurner | None = None,
        cover_frames: Sequence[int] = (),
    ) -> None:
        self.target, self.plan, self.fps = target, plan, fps
        self.parts = list(parts)
        self._spans = [frame_span(p, fps) for p in self.parts]
        self._audio, self._options, self._encode = audio, options, encode
        self._spool, self._burner = spool, burner
        self._cover_frames = set(cover_frames)
        self._covers: dict[int, Frame] = {}
        self._current = -1
        self._encoder: FrameEncoder | None = None
        self._frames_in_part = 0
        self.files: list[PartFile] = []

    def _path(self, index: int) -> Path:
        name = Path(self.target.part_key(self.parts[index].number, len(self.parts))).name
        return self._spool / self.target.channel / name

    def _open(self, index: int) -> None:
        part = self.parts[index]
        audio = AudioInput(
            path=self._audio.path,
            stream_index=self._audio.stream_index,
            start=(self._audio.start or 0.0) + part.start_s,
            duration=part.duration_s,
        )
        plan, burner = self.plan, self._burner

        def transform(i_frame: tuple[int, Frame]) -> Frame:
            i, frame = i_frame
            out = apply_reframe(frame, plan, i)
            if burner is not None:
                out = burner.draw(out, i / self.fps)  # cues are in the clip's time, as is i
            return out

        path = self._path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._encoder = FrameEncoder(
            path,
            width=plan.out_w,
            height=plan.out_h,
            fps=self.fps,
            audio=audio,
            duration=part.duration_s,
            video_codec=self._encode.video_codec,
            crf=self._encode.crf,
            preset=self._encode.preset,
            timeout=self._encode.timeout_s,
            options=self._options[part.number],
            transform=transform,
        )
        self._encoder.start()
        self._current, self._frames_in_part = index, 0

    def write(self, i: int, frame: Frame) -> None:
        """Output frame ``i`` (frames arrive in order; those outside every part are dropped)."""
        index = self._part_of(i)
        if index is None:
            return
        if index != self._current:
            self._finish_current()
            self._open(index)
        assert self._encoder is not None
        self._encoder.write_item((i, frame))
        self._frames_in_part += 1
        if i in self._cover_frames:
            # A copy at the channel's size: the frame itself is the encoder's until written.
            self._covers[i] = apply_reframe(frame, self.plan, i)

    def _part_of(self, i: int) -> int | None:
        if 0 <= self._current < len(self._spans):
            lo, hi = self._spans[self._current]
            if lo <= i < hi:
                return self._current
        for index, (lo, hi) in enumerate(self._spans):
            if lo <= i < hi:
                return index
        return None

    def _finish_current(self) -> None:
        if self._encoder is None:
            return
        encoder, self._encoder = self._encoder, None
        stats = encoder.close()
        lo, hi = self._spans[self._current]
        covers = tuple(self._covers.pop(i) for i in sorted(self._covers) if lo <= i < hi)
        self.files.append(
            PartFile(
                target=self.target,
                part=self.parts[self._current],
                parts=len(self.parts),
                path=self._path(self._current),
                width=stats.width,
                height=stats.height,
                frames=self._frames_in_part,
                covers=covers,
            )
        )

    def close(self) -> list[PartFile]:
        """Finish the open part; the files made, in part order."""
        self._finish_current()
        return self.files

    def abort(self) -> None:
        """Kill the open encoder and delete every file this sink made (safe to repeat)."""
        if self._encoder is not None:
            self._encoder.abort()
            self._encoder = None
        for made in self.files:
            made.path.unlink(missing_ok=True)
        self.files = []


class SinkFanout:
    """Several channel sinks fed as one. A channel whose encoder fails is aborted and noted in
    ``failed`` (its error recorded for that export alone); the render and the other channels go on."""

    def __init__(self, sinks: Sequence[ChannelSink], *, capture: Sequence[int] = ()) -> None:
        self.sinks = list(sinks)
        self.failed: dict[str, TalkfactoryError] = {}
        self._capture = set(capture)
        self._captured: dict[int, Frame] = {}

    @property
    def frames_needed(self) -> int | None:
        """How many frames this fanout wants: all (None) when a channel encodes, else up to the last
        frame to capture (0: none)."""
        if self.sinks:
            return None
        return max(self._capture) + 1 if self._capture else 0

    def captured(self) -> tuple[Frame, ...]:
        """Copies of the frames at the ``capture`` indices (the master's cover candidates), in order."""
        return tuple(self._captured[i] for i in sorted(self._captured))

    def write(self, i: int, frame: Frame) -> None:
        if i in self._capture:
            self._captured[i] = frame.copy()
        for sink in self.sinks:
            if sink.target.channel in self.failed:
                continue
            try:
                sink.write(i, frame)
            except TalkfactoryError as exc:
                self._drop(sink, exc)

    def close(self) -> list[PartFile]:
        files: list[PartFile] = []
        for sink in self.sinks:
            if sink.target.channel in self.failed:
                continue
            try:
                files += sink.close()
            except TalkfactoryError as exc:
                self._drop(sink, exc)
        return files

    def _drop(self, sink: ChannelSink, exc: TalkfactoryError) -> None:
        if isinstance(exc, InterruptedRunError):
            raise exc
        log.error("%s: channel %s failed: %s", sink.target.key, sink.target.channel, exc)
        self.failed[sink.target.channel] = exc
        sink.abort()

    def abort(self) -> None:
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.abort()
