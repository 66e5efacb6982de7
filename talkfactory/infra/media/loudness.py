"""Loudness (EBU R128 / ITU-R BS.1770): measure a file, and the filter that brings it to a target.

Two passes, like loudnorm's: ``measure_loudness`` reads the audio once with ffmpeg's ``ebur128``
scanner (true peak by 4x oversampling); ``normalize_filter`` (pure) turns that measurement into the
second pass's filter. Gain is linear (one ``volume``) whenever the peak allows it, so speech keeps
its dynamics; only when the gain would push the true peak over the ceiling does a limiter run, on
4x oversampled audio so it limits true (inter-sample) peaks, not just sample peaks.
``normalization_for`` checks a limited chain by measuring it once more and corrects the gain for
what the limiter took off, since a limiter lowers the integrated loudness by an amount that depends
on the signal.

Measurements are made on the audio as it will be encoded (``channels``, ``sample_rate``, converted
by ``aformat`` at the head of the chain, as the encode does): ffmpeg upmixes mono to stereo at
-3 dB a channel, which keeps the loudness but lowers the true peak by 3 dB, so a source measured
as it is would get a limiter it does not need, or one set 3 dB off.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from os import PathLike

from talkfactory.errors import InvalidMediaError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.runner import run_ffmpeg

SILENCE_LUFS = -70.0
"""The absolute gate of BS.1770: a file measuring at or below it holds no programme to normalise."""
TRUE_PEAK_OVERSAMPLE = 192_000
"""The limiter runs at this rate (4x of 48 kHz), where sample peaks approximate true peaks."""
AAC_PEAK_MARGIN_DB = 0.5
"""AAC encoding moves true peaks up by a few tenths of a dB; the limiter's ceiling sits this far
below the target so the encoded file still meets it."""
LINEAR_PEAK_MARGIN_DB = 0.3
"""Plain gain is used when the predicted true peak stays this far below the target (AAC again)."""


@dataclass(frozen=True)
class Loudness:
    """One EBU R128 measurement."""

    integrated_lufs: float
    """Integrated loudness; ``-inf``/``-70`` or below for silence."""
    true_peak_db: float
    """Maximum true peak over all channels, dBTP (``-inf`` for digital silence)."""
    lra: float
    """Loudness range, LU."""
    threshold: float
    """The relative gate threshold of the integrated measurement, LUFS."""

    @property
    def is_silent(self) -> bool:
        return not math.isfinite(self.integrated_lufs) or self.integrated_lufs <= SILENCE_LUFS

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready (infinite values become ``None``) for manifests and lineage."""
        return {
            k: (round(v, 2) if math.isfinite(v) else None)
            for k, v in (
                ("integrated_lufs", self.integrated_lufs),
                ("true_peak_db", self.true_peak_db),
                ("lra", self.lra),
                ("threshold", self.threshold),
            )
        }


# ---------------------------------------------------------------- pure: argv and parsing


# framelog=verbose keeps the ten-lines-a-second frame log out of the info-level stderr we read.
SCANNER = "ebur128=peak=true:framelog=verbose"


def measure_args(
    path: str | PathLike[str],
    *,
    start: float | None = None,
    duration: float | None = None,
    stream: int | None = None,
    pre_filters: tuple[str, ...] = (),
    channels: int | None = None,
    sample_rate: int | None = None,
) -> a.Argv:
    """ffmpeg argv that decodes one audio stream and prints the R128 summary to stderr (pure).

    The chain is the output's format, then ``pre_filters`` (to measure what a normalisation chain
    would output), then the scanner.
    """
    mapping = a.map_audio(0, 0) if stream is None else a.map_stream(f"0:{stream}")
    return a.concat(
        a.global_options(loglevel="info"),
        a.input_file(path, start=start, duration=duration),
        a.no_video(),
        mapping,
        a.audio_filter(a.aformat_filter(channels=channels, sample_rate=sample_rate), *pre_filters, SCANNER),
        a.null_output(),
    )


_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?|inf|nan))"
_SUMMARY_FIELDS = {
    "integrated_lufs": re.compile(r"Integrated loudness:\s*I:\s*" + _NUMBER + r"\s*LUFS", re.S),
    "threshold": re.compile(r"Integrated loudness:.*?Threshold:\s*" + _NUMBER + r"\s*LUFS", re.S),
    "lra": re.compile(r"Loudness range:\s*LRA:\s*" + _NUMBER + r"\s*LU", re.S),
    "true_peak_db": re.compile(r"True peak:\s*Peak:\s*" + _NUMBER + r"\s*dBFS", re.S),
}


def parse_ebur128_summary(stderr: str) -> Loudness:
    """The last ``Summary:`` block ebur128 printed; ``ValueError`` when there is none or it is cut short."""
    at = stderr.rfind("Summary:")
    if at < 0:
        raise ValueError("no ebur128 summary in ffmpeg's output")
    block = stderr[at:]
    values: dict[str, float] = {}
    for name, pattern in _SUMMARY_FIELDS.items():
        match = pattern.search(block)
        if match is None:
            raise ValueError(f"ebur128 summary without {name}")
        values[name] = float(match.group(1))
    return Loudness(**values)


def normalize_filter(
    measured: Loudness,
    *,
    target_lufs: float,
    true_peak_db: float,
    sample_rate: int = 48_000,
    gain_correction_db: float = 0.0,
) -> str:
    """The second pass's audio filter for ``measured`` to reach ``target_lufs`` with peaks ≤ ``true_peak_db``.

    Linear gain (``volume=...dB``) when the predicted true peak stays ``LINEAR_PEAK_MARGIN_DB``
    under the ceiling; else gain, then a lookahead limiter at 4x oversampling with its ceiling
    ``AAC_PEAK_MARGIN_DB`` under the target, back at ``sample_rate``. ``gain_correction_db`` adds
    to the gain (what ``normalization_for`` measured the limiter to take off). Silence (nothing
    above the absolute gate) gets ``anull``: no gain can give it a loudness.
    """
    if measured.is_silent:
        return "anull"
    gain = target_lufs - measured.integrated_lufs
    predicted_peak = measured.true_peak_db + gain
    if predicted_peak <= true_peak_db - LINEAR_PEAK_MARGIN_DB and gain_correction_db == 0.0:
        return f"volume={gain:.2f}dB"
    ceiling = 10 ** ((true_peak_db - AAC_PEAK_MARGIN_DB) / 20)
    return ",".join(
        [
            f"volume={gain + gain_correction_db:.2f}dB",
            f"aresample={TRUE_PEAK_OVERSAMPLE}",
            # level=0: no make-up gain; latency=1: the lookahead delay is compensated (lip sync).
            f"alimiter=limit={max(ceiling, 0.0625):.4f}:attack=5:release=100:level=0:latency=1",
            f"aresample={sample_rate}",
        ]
    )


def is_linear(filter_text: str) -> bool:
    """True when ``normalize_filter`` chose plain gain (the manifest says which)."""
    return "alimiter" not in filter_text


# ---------------------------------------------------------------- running ffmpeg


def measure_loudness(
    path: str | PathLike[str],
    *,
    start: float | None = None,
    duration: float | None = None,
    stream: int | None = None,
    channels: int | None = None,
    sample_rate: int | None = None,
    pre_filters: tuple[str, ...] = (),
    timeout: float = 600.0,
) -> Loudness:
    """Measure one audio stream (``stream``: its container index; the first audio stream when None).

    ``channels``/``sample_rate``: measure after converting to the output's layout and rate.
    The file is read under the usual input guard (``input_file``). ``InvalidMediaError`` when it
    has no audio or ffmpeg prints no measurement.
    """
    name = os.fspath(path)
    argv = measure_args(
        name,
        start=start,
        duration=duration,
        stream=stream,
        pre_filters=pre_filters,
        channels=channels,
        sample_rate=sample_rate,
    )
    result = run_ffmpeg(argv, timeout=timeout, subject=name, inputs=[name], audio_required=True)
    try:
        return parse_ebur128_summary(result.stderr)
    except ValueError as exc:
        raise InvalidMediaError(f"no loudness measurement: {exc}", subject=name) from exc


def measure_file(path: str | PathLike[str], *, timeout: float = 600.0) -> Loudness:
    """A finished export's loudness (its first audio stream, as encoded) for the manifest and validation."""
    return measure_loudness(path, timeout=timeout)


@dataclass(frozen=True)
class Normalization:
    """What the second pass applies, and why."""

    filter: str
    measured: Loudness
    """The input, as the output's layout and rate would hear it."""
    predicted: Loudness | None
    """The final limited chain as measured (when a limiter is needed); None for plain gain."""
    linear: bool


MAX_LIMITER_CORRECTIONS = 3
"""Gain corrections tried on a limited chain: each measures the chain once more (~0.5 s a minute)."""
CORRECTION_TOLERANCE_LU = 0.15


def normalization_for(
    path: str | PathLike[str],
    *,
    target_lufs: float,
    true_peak_db: float,
    start: float | None = None,
    duration: float | None = None,
    stream: int | None = None,
    channels: int = 2,
    sample_rate: int = 48_000,
    timeout: float = 600.0,
) -> Normalization:
    """Measure the audio a render will use and return the filter taking it to the target.

    When a limiter is needed, the limited chain is measured and its gain raised by what the
    limiter took off; more gain means more limiting, so this repeats (at most
    ``MAX_LIMITER_CORRECTIONS`` times) until the chain measures within ``CORRECTION_TOLERANCE_LU``.
    """

    def measure(pre_filters: tuple[str, ...] = ()) -> Loudness:
        return measure_loudness(
            path,
            start=start,
            duration=duration,
            stream=stream,
            channels=channels,
            sample_rate=sample_rate,
            pre_filters=pre_filters,
            timeout=timeout,
        )

    measured = measure()
    chain = normalize_filter(
        measured, target_lufs=target_lufs, true_peak_db=true_peak_db, sample_rate=sample_rate
    )
    if is_linear(chain):
        return Normalization(filter=chain, measured=measured, predicted=None, linear=True)
    correction = 0.0
    predicted = measure((chain,))
    for _ in range(MAX_LIMITER_CORRECTIONS):
        missing = target_lufs - predicted.integrated_lufs
        if predicted.is_silent or abs(missing) <= CORRECTION_TOLERANCE_LU:
            break
        correction += missing
        chain = normalize_filter(
            measured,
            target_lufs=target_lufs,
            true_peak_db=true_peak_db,
            sample_rate=sample_rate,
            gain_correction_db=correction,
        )
        predicted = measure((chain,))
    return Normalization(filter=chain, measured=measured, predicted=predicted, linear=False)


__all__ = [
    "Loudness",
    "Normalization",
    "is_linear",
    "measure_args",
    "measure_file",
    "measure_loudness",
    "normalization_for",
    "normalize_filter",
    "parse_ebur128_summary",
]
