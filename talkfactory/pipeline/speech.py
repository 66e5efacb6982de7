"""Speech from a recording: clean clips of the main speaker, with a table of what was kept and dropped.

Two passes over bounded memory, whatever the recording's length:

1. ffmpeg streams the audio as 48 kHz mono chunks (``iter_audio_chunks``; the video is never decoded).
   Each chunk is denoised (state carried across chunks), spooled to a 48 kHz and a 16 kHz 16-bit WAV
   in a work folder beside the output, and fed to the streaming VAD; 10 ms frame powers before and
   after denoising are kept (about 3 MB per two hours each) for the SNR estimates.
2. The diarizer reads speech windows back from the 16 kHz spool; the planner cuts clips at pauses;
   each clip is read back from the 48 kHz spool, loudness-normalised, written at 48 kHz (for the final
   mux) and 16 kHz (for the models), and listed in ``clips.json`` / ``clips.csv``.

All-silence or music-only input is not an error: the result has zero clips and ``no_clips_reason``.
Re-running with the same parameters on the same (unchanged) recording returns the existing result.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
import uuid
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pyannote.core import Annotation, Segment, Timeline
from pydantic import ConfigDict

from talkfactory.errors import ConfigurationError, InvalidMediaError, NoAudioStreamError
from talkfactory.infra.files import atomic_write_bytes, pid_alive, sweep_stale_partials
from talkfactory.infra.media.audio import FileAudio, iter_audio_chunks
from talkfactory.infra.media.probe import probe
from talkfactory.models.speech.clips import ClipRules, Dropped, DropReason, Plan, plan_clips
from talkfactory.models.speech.denoise import DENOISERS, denoiser_version, make_denoiser
from talkfactory.models.speech.diarize import Diarization, Diarizer, PyannoteDiarizer, ResemblyzerDiarizer
from talkfactory.models.speech.loudness import frame_powers, normalise, snr_db
from talkfactory.models.speech.vad import StreamingVad, VadParams, segments_from_probabilities, silero_version
from talkfactory.pipeline.interrupt import raise_if_stopped
from talkfactory.pipeline.progress import progress_sink

log = logging.getLogger(__name__)

CLIP_RATE = 48000
"""Rate of the clips for the final mux, and the rate the audio is streamed and denoised at."""
MODEL_RATE = 16000
"""Rate of the clips for the models, and of voice activity and diarization."""
POWER_FRAME = 480
"""10 ms at ``CLIP_RATE``: the frame of the SNR statistics."""
QUIET_DBFS = -50.0
"""Frames below this level count as silence when telling silence from music or noise."""
SCHEMA = 1
_RESULT = "clips.json"
_TABLE = "clips.csv"
_LOCK = ".publish.lock"
_WORK_PREFIX = ".work-"
_EXECUTION_ONLY = frozenset({"chunk_seconds"})


@dataclass(frozen=True)
class SpeechParams:
    """Everything that decides the clips; ``params_hash`` identifies a parameter set for reuse and lineage."""

    # A flow parameter: Prefect validates it with pydantic when the run is created, so a misspelt
    # field (``min_clips``) is refused at submission, not after the recording was downloaded.
    __pydantic_config__ = ConfigDict(extra="forbid")

    denoiser: str = "dfn3"
    """``dfn3`` (DeepFilterNet3), ``rnnoise`` or ``none``."""
    min_clip: float = 8.0
    max_clip: float = 60.0
    min_speech: float = 0.25
    """Voice activity shorter than this (seconds) is ignored."""
    min_pause: float = 0.3
    """Clips are cut only inside pauses at least this long (never mid-word)."""
    max_pause: float = 3.0
    """A longer pause ends a clip; the silence is dropped."""
    main_speaker_only: bool = True
    target_lufs: float = -16.0
    ceiling_dbtp: float = -1.5
    vad_onset: float = 0.6
    vad_offset: float = 0.45
    vad_pad: float = 0.02
    diarizer: str = "resemblyzer"
    """``resemblyzer`` (CPU, default) or ``pyannote`` (needs ``pyannote_checkpoint``)."""
    speaker_threshold: float = 0.3
    """Cosine distance at which resemblyzer clustering stops merging (lower: more speakers)."""
    pyannote_checkpoint: str | None = None
    denoise_workers: int = 2
    """Threads denoising blocks side by side (1: one continuous pass). With more than one, each
    block of ``denoise_block_seconds`` restarts the network after a 5 s warm-up: the output differs
    from a continuous pass by about -40 dB (SI-SDR), and is the same on every run."""
    denoise_block_seconds: float = 60.0
    chunk_seconds: float = 30.0
    """Streaming chunk length; affects memory only, never the output."""

    def __post_init__(self) -> None:
        if self.denoiser not in DENOISERS:
            raise ConfigurationError(
                f"unknown denoiser; known: {', '.join(DENOISERS)}", subject=self.denoiser
            )
        if self.diarizer not in ("resemblyzer", "pyannote"):
            raise ConfigurationError("unknown diarizer; known: resemblyzer, pyannote", subject=self.diarizer)
        if self.diarizer == "pyannote" and not self.pyannote_checkpoint:
            raise ConfigurationError("the pyannote diarizer needs pyannote_checkpoint (a local directory)")
        if self.ceiling_dbtp > 0 or self.target_lufs >= 0:
            raise ConfigurationError("loudness target and ceiling must be below 0 dB")
        if self.chunk_seconds <= 0 or self.denoise_block_seconds <= 0 or self.denoise_workers < 1:
            raise ConfigurationError(
                "chunk_seconds, denoise_block_seconds and denoise_workers must be positive"
            )
        self.clip_rules()
        self.vad_params()

    def clip_rules(self) -> ClipRules:
        return ClipRules(
            min_clip=self.min_clip, max_clip=self.max_clip, min_pause=self.min_pause, max_pause=self.max_pause
        )

    def vad_params(self) -> VadParams:
        return VadParams(
            onset=self.vad_onset,
            offset=self.vad_offset,
            min_speech=self.min_speech,
            min_silence=min(0.1, self.min_pause),
            pad=self.vad_pad,
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _EXECUTION_ONLY}

    def params_hash(self) -> str:
        """16 hex digits of sha256 over the output-deciding parameters (stable across runs and versions)."""
        blob = json.dumps({"schema": SCHEMA, **self.to_dict()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ClipFile:
    """A written clip: where it sits in the source, who speaks, how loud and clean it is."""

    index: int
    start: float
    end: float
    speaker: str
    speech_seconds: float
    loudness_lufs: float
    """Integrated loudness of the written 48 kHz clip (the target, within about 0.1 LU)."""
    true_peak_dbtp: float
    input_lufs: float
    """Loudness of the denoised audio before normalisation."""
    gain_db: float
    snr_db: float | None
    """Estimated SNR of the source around the clip (speech vs. non-speech power)."""
    snr_denoised_db: float | None
    wav_48k: str
    """File name inside the output folder."""
    wav_16k: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SpeechResult:
    """What ``extract_speech`` wrote, and what it found."""

    recording: str
    out_dir: str
    params: SpeechParams
    params_hash: str
    duration: float
    """Seconds of audio decoded."""
    audio_offset: float
    """Audio stream start minus video stream start in the source (clip times are on the file's timeline)."""
    source_sample_rate: int
    source_channels: int
    denoiser_version: str
    vad_version: str
    diarizer_version: str
    clips: list[ClipFile]
    dropped: list[Dropped]
    speakers: dict[str, float]
    """Seconds of speech per speaker label, most first."""
    main_speaker: str | None
    no_clips_reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage (decode, denoise, vad, diarize, plan, write, total)."""
    reused: bool = False

    @property
    def json_path(self) -> Path:
        return Path(self.out_dir) / _RESULT

    @property
    def csv_path(self) -> Path:
        return Path(self.out_dir) / _TABLE

    def clip_paths(self, rate: int = MODEL_RATE) -> list[Path]:
        return [Path(self.out_dir) / (c.wav_16k if rate == MODEL_RATE else c.wav_48k) for c in self.clips]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = SCHEMA
        d["params"] = self.params.to_dict()
        d["dropped"] = [{**asdict(x), "reason": str(x.reason), "duration": x.duration} for x in self.dropped]
        d["clips"] = [{**asdict(c), "duration": c.duration} for c in self.clips]
        d.pop("reused")
        return d


# ---------------------------------------------------------------- spooling


class _WavSpool:
    """A 16-bit mono WAV written chunk by chunk."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self._w = wave.open(str(path), "wb")
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)

    def write(self, x: NDArray[np.float32]) -> None:
        if x.size:
            self._w.writeframesraw(_pcm16(x))

    def close(self) -> None:
        self._w.close()


def _pcm16(x: NDArray[np.float32]) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


class _PowerMeter:
    """10 ms frame powers of a stream, carrying the partial frame."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self._rest = np.zeros(0, dtype=np.float32)
        self._parts: list[NDArray[np.float32]] = []

    def add(self, x: NDArray[np.float32]) -> None:
        y = np.concatenate([self._rest, x]) if self._rest.size else x
        whole = y.shape[0] // self.frame * self.frame
        self._parts.append(frame_powers(y[:whole], self.frame))
        self._rest = y[whole:].copy()

    def powers(self) -> NDArray[np.float32]:
        if self._rest.size:
            padded = np.zeros(self.frame, dtype=np.float32)
            padded[: self._rest.size] = self._rest
            self._parts.append(frame_powers(padded, self.frame))
            self._rest = np.zeros(0, dtype=np.float32)
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)]
        return self._parts[0]


@dataclass
class _Stream:
    """What pass 1 leaves behind."""

    samples: int = 0
    vad_probs: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    raw_powers: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    clean_powers: NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def _timed(
    it: Iterator[NDArray[np.float32]], timings: dict[str, float], key: str
) -> Iterator[NDArray[np.float32]]:
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
            return
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
        yield item


def _stream_pass(
    source: str, work: Path, params: SpeechParams, claimed: float | None, expected: float | None
) -> _Stream:
    import soxr

    out = _Stream()
    tm = out.timings
    denoiser = make_denoiser(
        params.denoiser,
        sample_rate=CLIP_RATE,
        workers=params.denoise_workers,
        block_seconds=params.denoise_block_seconds,
    )
    down = soxr.ResampleStream(CLIP_RATE, MODEL_RATE, 1, dtype="float32")
    vad = StreamingVad()
    spool48 = _WavSpool(work / "denoised-48k.wav", CLIP_RATE)
    spool16 = _WavSpool(work / "denoised-16k.wav", MODEL_RATE)
    raw_meter, clean_meter = _PowerMeter(POWER_FRAME), _PowerMeter(POWER_FRAME)
    sink = progress_sink()
    total = max(1, int(expected or 0))
    sink.start("speech", "speech: denoise + voice activity", total, unit="s of audio")

    def consume(clean48: NDArray[np.float32], last: bool = False) -> None:
        t = time.perf_counter()
        clean_meter.add(clean48)
        spool48.write(clean48)
        clean16 = np.asarray(down.resample_chunk(clean48, last=last), dtype=np.float32)
        spool16.write(clean16)
        tm["spool"] = tm.get("spool", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        vad.process(clean16)
        tm["vad"] = tm.get("vad", 0.0) + time.perf_counter() - t

    chunks = iter_audio_chunks(source, sample_rate=CLIP_RATE, channels=1, chunk_seconds=params.chunk_seconds)
    try:
        try:
            for chunk in _timed(chunks, tm, "decode"):
                raise_if_stopped(source)
                x = np.asarray(chunk, dtype=np.float32).reshape(-1)
                out.samples += x.shape[0]
                raw_meter.add(x)
                t = time.perf_counter()
                clean = denoiser.process(x)
                tm["denoise"] = tm.get("denoise", 0.0) + time.perf_counter() - t
                consume(clean)
                sink.update("speech", min(total, int(out.samples / CLIP_RATE)), total)
        except NoAudioStreamError:
            raise
        except InvalidMediaError as exc:
            # a corrupt or cut-off recording: keep what decoded, say where it broke
            if out.samples == 0:
                raise
            out.truncated = True
            out.warnings.append(f"decoding stopped at {out.samples / CLIP_RATE:.2f} s: {exc.message}")
        t = time.perf_counter()
        tail = denoiser.flush()
        tm["denoise"] = tm.get("denoise", 0.0) + time.perf_counter() - t
        consume(tail, last=True)
    finally:
        # a generator's close stops ffmpeg at once; the parallel denoiser's stops its threads
        for thing in (chunks, denoiser):
            close = getattr(thing, "close", None)
            if close is not None:
                close()
        spool48.close()
        spool16.close()
    out.vad_probs = vad.finish()
    out.raw_powers = raw_meter.powers()
    out.clean_powers = clean_meter.powers()
    decoded = out.samples / CLIP_RATE
    if claimed is not None and claimed - decoded > max(0.5, 0.02 * claimed):
        out.truncated = True
        out.warnings.append(
            f"decoded {decoded:.2f} s of audio but the container claims {claimed:.2f} s:"
            " the recording looks truncated"
        )
    sink.finish("speech", True)
    return out


# ---------------------------------------------------------------- statistics


def _mask(timeline: Timeline, n: int, step: float) -> NDArray[np.bool_]:
    out = np.zeros(n, dtype=bool)
    for seg in timeline:
        out[max(0, int(seg.start / step)) : min(n, int(math.ceil(seg.end / step)))] = True
    return out


def _quiet_timeline(powers: NDArray[np.float32], step: float, min_len: float = 0.5) -> Timeline:
    quiet = powers < 10 ** (QUIET_DBFS / 10)
    edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return Timeline(
        [Segment(a * step, b * step) for a, b in zip(starts, stops, strict=True) if (b - a) * step >= min_len]
    )


def _clip_snr(
    powers: NDArray[np.float32],
    speech_mask: NDArray[np.bool_],
    own: Timeline,
    start: float,
    end: float,
    step: float,
) -> float | None:
    n = powers.shape[0]
    a, b = max(0, int(start / step)), min(n, int(math.ceil(end / step)))
    if b <= a:
        return None
    own_mask = np.zeros(b - a, dtype=bool)
    for seg in own.crop(Segment(start, end)):
        own_mask[max(0, int(seg.start / step) - a) : max(0, int(math.ceil(seg.end / step)) - a)] = True
    speech = powers[a:b][own_mask]
    # noise: non-speech frames within 30 s of the clip, else anywhere in the recording
    near = slice(max(0, a - int(30 / step)), min(n, b + int(30 / step)))
    noise = powers[near][~speech_mask[near]]
    if noise.size < 50:
        noise = powers[~speech_mask]
    return snr_db(speech, noise)


# ---------------------------------------------------------------- clips


def _fade(x: NDArray[np.float32], rate: int, seconds: float = 0.005) -> NDArray[np.float32]:
    n = min(x.shape[0] // 2, int(seconds * rate))
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _write_wav(path: Path, x: NDArray[np.float32], rate: int) -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(_pcm16(x))
    atomic_write_bytes(path, buf.getvalue())


def _write_clips(
    plan: Plan,
    spool48: Path,
    out_dir: Path,
    params: SpeechParams,
    diarization: Diarization,
    stream: _Stream,
    speech: Timeline,
) -> list[ClipFile]:
    import soxr

    audio = FileAudio(spool48)
    step = POWER_FRAME / CLIP_RATE
    speech_mask = _mask(speech, stream.raw_powers.shape[0], step)
    files: list[ClipFile] = []
    for n, clip in enumerate(plan.clips, start=1):
        x = audio.read(int(round(clip.start * CLIP_RATE)), int(round(clip.end * CLIP_RATE)))
        norm = normalise(x, CLIP_RATE, target_lufs=params.target_lufs, ceiling_dbtp=params.ceiling_dbtp)
        y48 = _fade(norm.samples.copy(), CLIP_RATE)
        y16 = _fade(np.asarray(soxr.resample(y48, CLIP_RATE, MODEL_RATE), dtype=np.float32), MODEL_RATE)
        stem = f"clip_{n:04d}"
        _write_wav(out_dir / f"{stem}_48k.wav", y48, CLIP_RATE)
        _write_wav(out_dir / f"{stem}_16k.wav", y16, MODEL_RATE)
        own = diarization.annotation.label_timeline(clip.speaker)
        files.append(
            ClipFile(
                index=n,
                start=round(clip.start, 3),
                end=round(clip.end, 3),
                speaker=clip.speaker,
                speech_seconds=round(clip.speech_seconds, 3),
                loudness_lufs=round(norm.output_lufs, 2),
                true_peak_dbtp=round(norm.true_peak_dbtp, 2),
                input_lufs=round(norm.input_lufs, 2),
                gain_db=round(norm.gain_db, 2),
                snr_db=_round(_clip_snr(stream.raw_powers, speech_mask, own, clip.start, clip.end, step)),
                snr_denoised_db=_round(
                    _clip_snr(stream.clean_powers, speech_mask, own, clip.start, clip.end, step)
                ),
                wav_48k=f"{stem}_48k.wav",
                wav_16k=f"{stem}_16k.wav",
            )
        )
    return files


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _no_clips_reason(speech: Timeline, plan: Plan) -> str | None:
    if plan.clips:
        return None
    if not len(speech):
        return "no speech found"
    reasons: dict[str, float] = {}
    for d in plan.dropped:
        if d.reason not in (DropReason.SILENCE, DropReason.MUSIC_OR_NOISE, DropReason.PAUSE):
            reasons[str(d.reason)] = reasons.get(str(d.reason), 0.0) + d.duration
    detail = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"no usable speech: {speech.duration():.1f} s of speech found, none made a clip ({detail})"


def _make_diarizer(params: SpeechParams) -> Diarizer:
    if params.diarizer == "pyannote":
        assert params.pyannote_checkpoint is not None
        return PyannoteDiarizer(params.pyannote_checkpoint)
    return ResemblyzerDiarizer(threshold=params.speaker_threshold)


# ---------------------------------------------------------------- tables


def _csv(result: SpeechResult) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "kind",
            "index",
            "start",
            "end",
            "duration",
            "speaker",
            "loudness_lufs",
            "snr_db",
            "reason",
            "wav_16k",
            "wav_48k",
        ]
    )
    rows: list[tuple[float, list[Any]]] = []
    for c in result.clips:
        rows.append(
            (
                c.start,
                [
                    "clip",
                    c.index,
                    c.start,
                    c.end,
                    round(c.duration, 3),
                    c.speaker,
                    c.loudness_lufs,
                    c.snr_db,
                    "",
                    c.wav_16k,
                    c.wav_48k,
                ],
            )
        )
    for d in result.dropped:
        rows.append(
            (
                d.start,
                [
                    "dropped",
                    "",
                    round(d.start, 3),
                    round(d.end, 3),
                    round(d.duration, 3),
                    d.speaker or "",
                    "",
                    "",
                    str(d.reason),
                    "",
                    "",
                ],
            )
        )
    for _, row in sorted(rows, key=lambda r: r[0]):
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode()


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def load_result(out_dir: str | Path) -> SpeechResult | None:
    """The result a previous run left in ``out_dir`` (``None`` when there is none or it is unreadable)."""
    path = Path(out_dir) / _RESULT
    try:
        d = json.loads(path.read_text())
        if d.get("schema") != SCHEMA:
            return None
        params = SpeechParams(**d["params"])
        clips = [ClipFile(**{k: v for k, v in c.items() if k != "duration"}) for c in d["clips"]]
        dropped = [
            Dropped(x["start"], x["end"], DropReason(x["reason"]), x.get("speaker")) for x in d["dropped"]
        ]
        keep = {f.name for f in fields(SpeechResult)} - {"params", "clips", "dropped", "reused"}
        rest = {k: v for k, v in d.items() if k in keep}
        return SpeechResult(params=params, clips=clips, dropped=dropped, reused=True, **rest)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reusable(
    out_dir: Path, source: Path, params: SpeechParams, versions: tuple[str, str, str]
) -> SpeechResult | None:
    previous = load_result(out_dir)
    if previous is None or previous.params_hash != params.params_hash():
        return None
    if (previous.denoiser_version, previous.vad_version, previous.diarizer_version) != versions:
        return None
    try:
        meta = json.loads((out_dir / _RESULT).read_text()).get("source", {})
    except (OSError, ValueError):
        return None
    if meta != _fingerprint(source):
        return None
    if not all((out_dir / name).is_file() for c in previous.clips for name in (c.wav_16k, c.wav_48k)):
        return None
    return previous


def _remove_previous_clips(out_dir: Path) -> None:
    previous = load_result(out_dir)
    if previous is None:
        return
    for c in previous.clips:
        for name in (c.wav_16k, c.wav_48k):
            (out_dir / name).unlink(missing_ok=True)
    for name in (_RESULT, _TABLE):
        (out_dir / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- the step


def extract_speech(
    recording_path: str | Path, out_dir: str | Path, params: SpeechParams | None = None
) -> SpeechResult:
    """Write clean, loudness-normalised clips of the main speaker (or every speaker) of a recording.

    Writes ``clip_NNNN_48k.wav`` and ``clip_NNNN_16k.wav`` (16-bit mono) plus ``clips.json`` and
    ``clips.csv`` into ``out_dir``. Memory stays bounded (the audio is streamed; the work folder
    in ``out_dir`` holds the denoised audio, 16-bit at 48 and 16 kHz: about 460 MB per hour of
    recording, removed at the end).

    Raises ``MediaNotFoundError``, ``InvalidMediaError``, ``NoAudioStreamError`` (from infra),
    ``ConfigurationError``, ``CheckpointError``. No speech is a result with zero clips and
    ``no_clips_reason``, not an error.
    """
    params = params or SpeechParams()
    source = Path(recording_path)
    out = Path(out_dir)
    t_start = time.perf_counter()
    info = probe(source)
    if info.audio is None:
        raise NoAudioStreamError("has no audio stream, so there is no speech to extract", subject=str(source))
    den_version = denoiser_version(params.denoiser)
    diarizer = _make_diarizer(params)
    versions = (den_version, silero_version(), diarizer.version)
    out.mkdir(parents=True, exist_ok=True)
    _sweep_dead_work(out)
    # same parameters, same recording and same model versions: the clips are already there
    with _publishing(out):
        previous = _reusable(out, source, params, versions)
    if previous is not None:
        log.info(
            "speech: reusing %d clips in %s (same parameters %s)",
            len(previous.clips),
            out,
            params.params_hash(),
        )
        return previous
    # the audio stream's own duration, or the container's when there is no video: an FLV's metadata
    # duration often counts video that runs on past the audio without anything being cut off
    claimed = info.audio.duration or (info.duration if info.video is None else None)
    # This run's own work space: a concurrent run of the same recording (another avatar, another
    # worker on a shared work store) works in its own, and the first to finish publishes.
    work = out / f"{_WORK_PREFIX}{params.params_hash()[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        stream = _stream_pass(str(source), work, params, claimed, claimed or info.duration)
        timings = dict(stream.timings)
        duration = stream.samples / CLIP_RATE
        speech = segments_from_probabilities(stream.vad_probs, params.vad_params(), duration=duration)
        t = time.perf_counter()
        if len(speech):
            diarization = diarizer.diarize(FileAudio(work / "denoised-16k.wav"), speech)
        else:
            diarization = Diarization(Annotation(), Timeline())
        timings["diarize"] = time.perf_counter() - t
        t = time.perf_counter()
        main = diarization.main_speaker
        chosen = [main] if params.main_speaker_only and main is not None else diarization.speakers
        quiet = _quiet_timeline(stream.raw_powers, POWER_FRAME / CLIP_RATE)
        plan = plan_clips(
            diarization.annotation,
            speakers=chosen,
            duration=duration,
            voiced=speech,
            ambiguous=diarization.ambiguous,
            quiet=quiet,
            rules=params.clip_rules(),
        )
        timings["plan"] = time.perf_counter() - t
        t = time.perf_counter()
        clips = _write_clips(plan, work / "denoised-48k.wav", work, params, diarization, stream, speech)
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        result = SpeechResult(
            recording=str(source),
            out_dir=str(out),
            params=params,
            params_hash=params.params_hash(),
            duration=round(duration, 3),
            audio_offset=round(info.audio_offset, 3),
            source_sample_rate=info.audio.sample_rate,
            source_channels=info.audio.channels,
            denoiser_version=den_version,
            vad_version=silero_version(),
            diarizer_version=diarizer.version,
            clips=clips,
            dropped=[Dropped(round(d.start, 3), round(d.end, 3), d.reason, d.speaker) for d in plan.dropped],
            speakers={s: round(diarization.speech_seconds(s), 2) for s in diarization.speakers},
            main_speaker=main,
            no_clips_reason=_no_clips_reason(speech, plan),
            warnings=stream.warnings,
            truncated=stream.truncated,
            timings={k: round(v, 3) for k, v in timings.items()},
        )
        result = _publish(result, work, out, source, versions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result.no_clips_reason:
        log.info("speech: %s: %s", source, result.no_clips_reason)
    return result


def _publish(
    result: SpeechResult, work: Path, out: Path, source: Path, versions: tuple[str, str, str]
) -> SpeechResult:
    """Move this run's clips from ``work`` into ``out``, unless a concurrent run published first.

    Under the folder's lock: the first run to get here moves its clips in and writes ``clips.json``
    last (its presence means the set is whole); a run that finds a reusable result there returns
    that one and drops its own copy, so every caller ends up naming the same files.
    """
    with _publishing(out):
        winner = _reusable(out, source, result.params, versions)
        if winner is not None:
            log.info("speech: another run published the clips in %s first; using those", out)
            return winner
        _remove_previous_clips(out)
        for c in result.clips:
            for name in (c.wav_16k, c.wav_48k):
                os.replace(work / name, out / name)
        doc = {**result.to_dict(), "source": _fingerprint(source)}
        atomic_write_bytes(out / _TABLE, _csv(result))
        atomic_write_bytes(out / _RESULT, json.dumps(doc, indent=2).encode())
    return result


@contextmanager
def _publishing(out: Path) -> Iterator[None]:
    """An exclusive lock on ``out`` while a result is read or published (released if the process dies)."""
    with open(out / _LOCK, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sweep_dead_work(out: Path) -> None:
    """Remove work folders and temporary files of runs whose process is gone (killed before cleanup)."""
    sweep_stale_partials(out)
    for entry in out.glob(f"{_WORK_PREFIX}*"):
        parts = entry.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not pid_alive(int(parts[1])):
            shutil.rmtree(entry, ignore_errors=True)


__all__ = [
    "CLIP_RATE",
    "MODEL_RATE",
    "ClipFile",
    "SpeechParams",
    "SpeechResult",
    "extract_speech",
    "load_result",
]
