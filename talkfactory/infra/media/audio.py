"""Audio out of recordings: extraction to a file, file-backed random access, streamed chunks.

ffmpeg reads the audio stream straight from the container (``-vn -map 0:a:0``: the video is
never decoded) and resamples to mono s16le. The sample timeline is the file's timeline: sample
``i`` is at ``start + i / sample_rate`` seconds, with timestamp gaps filled by silence
(``aresample=async=1``), which is also how ``FrameEncoder`` lays the same audio into its output.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import InvalidMediaError, NoAudioStreamError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.runner import classify, open_ffmpeg, read_exact, run_ffmpeg
from talkfactory.infra.files import partial_name
from talkfactory.infra.media.prefetch import Prefetcher
from talkfactory.infra.media.probe import MediaInfo, probe

BYTES_PER_SAMPLE = 2
TRUNCATION_TOLERANCE_S = 0.5
"""Decoding this much less than the audio stream claims (or 2 %, whichever is larger) means truncated."""
CONTAINER_TOLERANCE_S = 1.0
"""The same against a container-wide duration (FLV has no per-stream one): a recording's video often
runs most of a second past its audio without anything being cut off, so the bar is higher."""
_MAX_WARNING_LINES = 5


@dataclass(frozen=True)
class AudioExtract:
    """The result of ``extract_audio``."""

    path: str
    """The written file: raw s16le, or WAV when the destination ends in ``.wav``."""
    sample_rate: int
    num_samples: int
    """Samples per channel."""
    start_offset: float
    """Audio stream start minus video stream start in the source, seconds (reported, not applied)."""
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    """Less audio decoded than the container claims (a recording cut off by a crash)."""
    channels: int = 1

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0


# ---------------------------------------------------------------- WAV headers


def wav_data_layout(path: str | PathLike[str]) -> tuple[int, int, int, int] | None:
    """``(data_offset, data_bytes, sample_rate, channels)`` of a 16-bit PCM WAV, ``None`` if not RIFF/WAVE.

    ``data_bytes`` is taken from the file size when the header's size field is unset (a WAV
    written to a pipe) or larger than the file (a cut-off recording).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        rate = channels = bits = 0
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise InvalidMediaError("WAV file has no data chunk", subject=str(path))
            cid, clen = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                body = f.read(clen)
                fmt_tag, channels, rate = struct.unpack("<HHI", body[:8])
                bits = struct.unpack("<H", body[14:16])[0]
                if fmt_tag not in (1, 0xFFFE) or bits != 16:
                    raise InvalidMediaError(
                        f"WAV must be 16-bit PCM (format {fmt_tag}, {bits} bits)", subject=str(path)
                    )
                f.seek(clen % 2, os.SEEK_CUR)
            elif cid == b"data":
                offset = f.tell()
                available = size - offset
                data_bytes = available if clen in (0, 0xFFFFFFFF) or clen > available else clen
                if not rate:
                    raise InvalidMediaError("WAV data chunk before its fmt chunk", subject=str(path))
                return offset, data_bytes, rate, channels
            else:
                f.seek(clen + clen % 2, os.SEEK_CUR)


# ---------------------------------------------------------------- extraction


def _temp_sibling(dst: str) -> str:
    folder, name = os.path.split(dst)
    return os.path.join(folder, partial_name(name))


def _stderr_warnings(stderr: str) -> list[str]:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return []
    shown = "; ".join(lines[-_MAX_WARNING_LINES:])
    return [f"ffmpeg reported {len(lines)} error line(s) while decoding audio, the last: {shown}"]


def extract_audio(
    src: str | PathLike[str],
    dst: str | PathLike[str],
    *,
    sample_rate: int = 16000,
    channels: int = 1,
    start: float | None = None,
    duration: float | None = None,
    timeout: float = 1800.0,
    info: MediaInfo | None = None,
) -> AudioExtract:
    """Decode the first audio stream of ``src`` to ``dst`` (s16le; WAV when ``dst`` ends in ``.wav``).

    A truncated recording (an OBS crash) is decoded as far as it goes: the result says
    ``truncated=True`` with a warning comparing decoded and claimed duration. ``dst`` appears
    only when extraction succeeded (written to a temporary sibling, then renamed).

    Raises ``MediaNotFoundError``, ``InvalidMediaError``, ``NoAudioStreamError`` (naming the file),
    ``FFmpegError``/``FFmpegTimeoutError``.
    """
    source = os.fspath(src)
    target = os.fspath(dst)
    info = info or probe(source)
    if info.audio is None:
        what = f"{info.video.codec} video" if info.video is not None else "no streams"
        raise NoAudioStreamError(
            f"no audio stream in this {info.format_name} file (it holds {what})", subject=source
        )
    as_wav = target.lower().endswith(".wav")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = _temp_sibling(target)
    argv = a.concat(
        a.global_options(),
        a.input_file(source, start=start, duration=duration),
        a.audio_extraction(sample_rate=sample_rate, channels=channels),
        a.audio_filter(a.async_resample_filter()),
        a.wav_output(tmp) if as_wav else a.pcm_s16le_output(tmp),
    )
    try:
        result = run_ffmpeg(
            argv, timeout=timeout, subject=source, inputs=[source], check=False, audio_required=True
        )
        data_bytes = _data_bytes(tmp, as_wav)
        num_samples = data_bytes // (BYTES_PER_SAMPLE * channels)
        warnings = _stderr_warnings(result.stderr)
        truncated = False
        if result.returncode != 0:
            if num_samples == 0:
                raise classify(
                    result.stderr, returncode=result.returncode, subject=source, audio_required=True
                )
            truncated = True
            warnings.insert(
                0, f"ffmpeg stopped with an error after {num_samples / sample_rate:.2f} s of audio"
            )
        claimed = _claimed_duration(info, start, duration)
        decoded = num_samples / sample_rate
        per_stream = info.audio is not None and info.audio.duration is not None
        tolerance = (
            (
                max(TRUNCATION_TOLERANCE_S, 0.02 * claimed)
                if per_stream or info.video is None
                else max(CONTAINER_TOLERANCE_S, 0.02 * claimed)
            )
            if claimed is not None
            else 0.0
        )
        if claimed is not None and claimed - decoded > tolerance:
            truncated = True
            warnings.insert(
                0,
                f"decoded {decoded:.2f} s of audio but the container claims {claimed:.2f} s "
                f"({100 * decoded / claimed:.0f} %): the recording looks truncated",
            )
        if num_samples == 0:
            raise InvalidMediaError("no audio could be decoded", subject=source)
        offset = info.audio_offset
        if abs(offset) > 0.1:
            warnings.append(f"audio starts {offset:+.3f} s relative to the video stream")
        os.replace(tmp, target)
    finally:
        # An unlink that fails (read-only folder) must not replace the error being raised.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return AudioExtract(
        path=target,
        sample_rate=sample_rate,
        num_samples=num_samples,
        start_offset=offset,
        warnings=warnings,
        truncated=truncated,
        channels=channels,
    )


def _data_bytes(path: str, as_wav: bool) -> int:
    if not os.path.exists(path):
        return 0
    if as_wav:
        try:
            layout = wav_data_layout(path)
        except InvalidMediaError:
            return 0
        return layout[1] if layout is not None else 0
    return os.path.getsize(path)


def _claimed_duration(info: MediaInfo, start: float | None, duration: float | None) -> float | None:
    assert info.audio is not None
    total = info.audio.duration or info.duration
    if total is None:
        return duration
    remaining = max(0.0, total - (start or 0.0))
    return remaining if duration is None else min(duration, remaining)


# ---------------------------------------------------------------- random access


class FileAudio:
    """Mono 16-bit samples in a file, read by sample range (implements ``AudioSource``).

    Each ``read`` seeks and reads just that range (``np.fromfile``), so a two-hour recording
    costs no memory; safe to share between threads (every read opens its own handle).
    Raw s16le needs ``sample_rate``; a WAV file brings its own.
    """

    def __init__(self, path: str | PathLike[str], sample_rate: int | None = None) -> None:
        self.path = os.fspath(path)
        layout = wav_data_layout(self.path)
        if layout is not None:
            offset, data_bytes, rate, channels = layout
            if channels != 1:
                raise InvalidMediaError(
                    f"FileAudio needs mono audio, the WAV has {channels} channels", subject=self.path
                )
            if sample_rate is not None and sample_rate != rate:
                raise InvalidMediaError(
                    f"WAV is {rate} Hz, not the {sample_rate} Hz asked for", subject=self.path
                )
        else:
            if sample_rate is None:
                raise ValueError("sample_rate is required for raw s16le audio")
            offset, data_bytes, rate = 0, os.path.getsize(self.path), sample_rate
        self._offset = offset
        self._rate = int(rate)
        self._samples = data_bytes // BYTES_PER_SAMPLE

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def num_samples(self) -> int:
        return self._samples

    @property
    def duration(self) -> float:
        return self._samples / self._rate

    def read(self, start: int, stop: int) -> NDArray[np.float32]:
        """Samples ``[start, stop)`` as float32 in [-1, 1); outside the file is zeros, never an error."""
        out = np.zeros(max(0, stop - start), dtype=np.float32)
        lo, hi = max(start, 0), min(stop, self._samples)
        if hi > lo:
            with open(self.path, "rb") as f:
                f.seek(self._offset + lo * BYTES_PER_SAMPLE)
                raw = np.fromfile(f, dtype="<i2", count=hi - lo)
            np.multiply(raw, np.float32(1.0 / 32768.0), out=out[lo - start : lo - start + raw.shape[0]])
        return out


# ---------------------------------------------------------------- streaming


def iter_audio_chunks(
    src: str | PathLike[str],
    *,
    sample_rate: int,
    channels: int = 1,
    chunk_seconds: float = 30.0,
    start: float | None = None,
    duration: float | None = None,
    timeout: float | None = None,
    prefetch: int = 1,
) -> Iterator[NDArray[np.float32]]:
    """Decode the first audio stream in chunks of ``chunk_seconds`` (the last one shorter).

    Chunks are float32, shape ``(n,)`` for mono or ``(n, channels)``, on the same timeline as
    ``extract_audio``. Memory holds at most ``prefetch + 1`` chunks whatever the recording's length.
    ``timeout`` bounds the whole stream including the consumer's time (``None``: no limit).
    Raises ``NoAudioStreamError`` when the file has no audio stream.
    """
    source = os.fspath(src)
    frame_samples = max(1, int(round(chunk_seconds * sample_rate)))
    argv = a.concat(
        a.global_options(),
        a.input_file(source, start=start, duration=duration),
        a.audio_extraction(sample_rate=sample_rate, channels=channels),
        a.audio_filter(a.async_resample_filter()),
        a.pcm_s16le_output("pipe:1"),
    )
    with open_ffmpeg(
        argv, stdout=True, timeout=timeout, subject=source, inputs=[source], audio_required=True
    ) as proc:
        buffer = np.empty(frame_samples * channels, dtype="<i2")
        view = buffer.data.cast("B")
        whole = BYTES_PER_SAMPLE * channels

        def read_one() -> NDArray[np.float32] | None:
            got = read_exact(proc.stdout, view) // whole
            if got == 0:
                return None
            samples = buffer[: got * channels].astype(np.float32) * np.float32(1.0 / 32768.0)
            return samples if channels == 1 else samples.reshape(got, channels)

        reader: Prefetcher[NDArray[np.float32]] = Prefetcher(read_one, depth=prefetch, name="audio-chunks")
        try:
            yield from reader
            proc.wait()
        finally:
            proc.kill()
            reader.close()


__all__ = ["AudioExtract", "FileAudio", "extract_audio", "iter_audio_chunks", "wav_data_layout"]
