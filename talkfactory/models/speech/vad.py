"""Voice activity with silero-vad, streamed over chunks, turned into segments with hysteresis.

silero-vad's batched ("sequence") ONNX model ships in its wheel and runs without torch: one
onnxruntime call per block of up to 512 frames of 32 ms, the LSTM state and the 64-sample context
carried between calls and across chunk borders, so streaming gives the same probabilities as one
pass over the whole signal. silero's ``read_audio`` needs torchaudio and is never used: audio comes in
as numpy arrays.

The probabilities become segments by hysteresis (speech starts at ``onset``, lasts while the
probability stays at or above ``offset``), each segment ends at its last frame at or above
``tail`` (silero's probability decays for 100-200 ms after the voice stops, longer in noise), then
gaps shorter than ``min_silence`` are bridged, segments shorter than ``min_speech`` dropped and the
rest padded by ``pad`` on each side.
Segments are pyannote.core ``Segment``s in a ``Timeline``, in source seconds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyannote.core import Segment, Timeline

from talkfactory.errors import CheckpointError, ConfigurationError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE  # 0.032


@dataclass(frozen=True)
class VadParams:
    """Hysteresis and duration rules (seconds) turning frame probabilities into speech segments."""

    onset: float = 0.6
    offset: float = 0.45
    tail: float = 0.8
    min_speech: float = 0.25
    min_silence: float = 0.1
    pad: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 < self.offset <= self.onset < 1.0:
            raise ConfigurationError(f"need 0 < offset ({self.offset}) <= onset ({self.onset}) < 1")
        if not 0.0 < self.tail < 1.0:
            raise ConfigurationError(f"need 0 < tail ({self.tail}) < 1")
        if min(self.min_speech, self.min_silence, self.pad) < 0:
            raise ConfigurationError("durations must not be negative")


@functools.cache
def _session() -> Any:
    try:
        import onnxruntime as ort
        from silero_vad import data as silero_data
    except ImportError as exc:
        raise CheckpointError(
            "needs the speech extra (silero-vad, onnxruntime)", subject="silero-vad"
        ) from exc
    from importlib.resources import files

    path = files(silero_data).joinpath("silero_vad_16k_sequence.onnx")
    options = ort.SessionOptions()
    # a tiny LSTM: more threads only add synchronisation; the machine's other cores run the denoiser
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
        raise CheckpointError(f"cannot load silero-vad: {exc}", subject=str(path)) from exc


def silero_version() -> str:
    import importlib.metadata

    return f"silero-vad {importlib.metadata.version('silero-vad')} sequence-onnx"


class StreamingVad:
    """Feed 16 kHz mono chunks of any size; read per-frame speech probabilities and segments.

    Memory is one float per 32 ms frame (about 0.9 MB for two hours).
    """

    def __init__(self, *, max_frames: int = 512) -> None:
        self._session = _session()
        self._max_frames = max_frames
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._probs: list[NDArray[np.float32]] = []
        self._samples = 0
        self._finished = False

    def _run(self, x: NDArray[np.float32]) -> None:
        frames = x.reshape(-1, FRAME_SAMPLES)
        for first in range(0, frames.shape[0], self._max_frames):
            block = frames[first : first + self._max_frames]
            contexts = np.empty((block.shape[0], CONTEXT_SAMPLES), dtype=np.float32)
            contexts[0] = self._context
            contexts[1:] = block[:-1, -CONTEXT_SAMPLES:]
            self._context = block[-1, -CONTEXT_SAMPLES:].copy()
            probs, self._h, self._c = self._session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, block], axis=1), "h": self._h, "c": self._c},
            )
            self._probs.append(np.asarray(probs, dtype=np.float32).reshape(-1))

    def process(self, chunk: NDArray[np.float32]) -> None:
        """Add the next chunk of 16 kHz mono samples."""
        if self._finished:
            raise RuntimeError("StreamingVad.process after finish")
        x = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._samples += x.shape[0]
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        whole = x.shape[0] // FRAME_SAMPLES * FRAME_SAMPLES
        self._pending = x[whole:].copy()
        if whole:
            self._run(np.ascontiguousarray(x[:whole]))

    def finish(self) -> NDArray[np.float32]:
        """Pad and run the last partial frame; returns the speech probability of every frame."""
        if not self._finished:
            if self._pending.size:
                last = np.zeros(FRAME_SAMPLES, dtype=np.float32)
                last[: self._pending.size] = self._pending
                self._run(last)
            self._pending = np.zeros(0, dtype=np.float32)
            self._finished = True
        return self.probabilities

    @property
    def probabilities(self) -> NDArray[np.float32]:
        if len(self._probs) > 1:
            self._probs = [np.concatenate(self._probs)]
        return self._probs[0] if self._probs else np.zeros(0, dtype=np.float32)

    @property
    def duration(self) -> float:
        """Seconds of audio fed so far."""
        return self._samples / SAMPLE_RATE


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """``[start, stop)`` index pairs of the True runs in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def hysteresis(
    probs: NDArray[np.floating[Any]], onset: float, offset: float, tail: float | None = None
) -> NDArray[np.bool_]:
    """Frames that are speech: a run of ``probs >= offset`` counts if it reaches ``onset`` somewhere.

    With ``tail``, each run is cut after its last frame at or above ``tail`` (or above its peak,
    when it never reaches ``tail``): the hangover after the voice stops is not speech.
    """
    p = np.asarray(probs, dtype=np.float32)
    active = np.zeros(p.shape[0], dtype=bool)
    for start, stop in _runs(p >= offset):
        peak = float(p[start:stop].max())
        if peak >= onset:
            if tail is not None:
                stop = start + int(np.flatnonzero(p[start:stop] >= min(tail, peak))[-1]) + 1
            active[start:stop] = True
    return active


def segments_from_probabilities(
    probs: NDArray[np.floating[Any]],
    params: VadParams = VadParams(),
    *,
    frame_seconds: float = FRAME_SECONDS,
    duration: float | None = None,
    offset: float = 0.0,
) -> Timeline:
    """Speech segments (source seconds, shifted by ``offset``) from per-frame probabilities."""
    active = hysteresis(probs, params.onset, params.offset, params.tail)
    spans = [(a * frame_seconds, b * frame_seconds) for a, b in _runs(active)]
    end = duration if duration is not None else len(active) * frame_seconds
    merged: list[tuple[float, float]] = []
    for start, stop in spans:
        if merged and start - merged[-1][1] < params.min_silence:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    kept = [(s, e) for s, e in merged if e - s >= params.min_speech]
    padded: list[tuple[float, float]] = []
    for s, e in kept:
        s, e = max(0.0, s - params.pad), min(end, e + params.pad)
        if padded and s <= padded[-1][1]:
            padded[-1] = (padded[-1][0], e)
        elif e > s:
            padded.append((s, e))
    return Timeline([Segment(s + offset, e + offset) for s, e in padded])


def detect_speech(
    samples: NDArray[np.floating[Any]],
    sample_rate: int,
    params: VadParams = VadParams(),
    *,
    offset: float = 0.0,
) -> Timeline:
    """Speech segments of a whole in-memory mono signal (resampled to 16 kHz if needed)."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        import soxr

        x = np.asarray(soxr.resample(x, sample_rate, SAMPLE_RATE), dtype=np.float32)
    vad = StreamingVad()
    vad.process(x)
    probs = vad.finish()
    return segments_from_probabilities(probs, params, duration=x.shape[0] / SAMPLE_RATE, offset=offset)


__all__ = [
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "StreamingVad",
    "VadParams",
    "detect_speech",
    "hysteresis",
    "segments_from_probabilities",
    "silero_version",
]
