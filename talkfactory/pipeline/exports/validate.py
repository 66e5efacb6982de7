"""Validation before publishing: a finished export probed against its channel's limits.

``check_media`` is pure (a probed ``MediaInfo``, the measured loudness and the file size against a
``ChannelSpec``); ``validate_file`` probes, measures and checks one file. A violation is a
recorded error for that export, never a silent upload: the engine publishes only files with
``ok``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from os import PathLike

from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.binaries import ffprobe_exe
from talkfactory.infra.ffmpeg.runner import run_ffprobe
from talkfactory.infra.media.keyframes import parse_keyframes
from talkfactory.infra.media.loudness import Loudness, measure_file
from talkfactory.infra.media.probe import MediaInfo, probe
from talkfactory.pipeline.exports.channels import ChannelSpec

LOUDNESS_TOLERANCE_LU = 1.0
"""Integrated loudness may be this far from the channel's target (normalisation lands within ~0.3)."""
TRUE_PEAK_TOLERANCE_DB = 0.5
"""True peak may exceed the channel's ceiling by this much (AAC moves peaks by a few tenths)."""
DURATION_TOLERANCE_S = 0.05
"""Container durations round to a frame or an AAC packet; a limit is not missed by that."""
FPS_TOLERANCE = 0.01
VIDEO_CODEC = "h264"
PIX_FMT = "yuv420p"
AUDIO_CODEC = "aac"


@dataclass(frozen=True)
class Violation:
    """One limit a file misses."""

    field: str
    """The channel field (``width``, ``max_duration_s``...) or the property (``video_codec``)."""
    limit: str
    actual: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "limit": self.limit, "actual": self.actual, "message": self.message}


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    violations: list[Violation]
    info: MediaInfo
    loudness: Loudness | None
    checked: list[str] = field(default_factory=list)
    """The fields that were checked (for the manifest: what "ok" covers)."""

    @property
    def summary(self) -> str:
        return "ok" if self.ok else "; ".join(v.message for v in self.violations)


def _fmt(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.3f}".rstrip("0").rstrip(".")


def check_media(
    info: MediaInfo,
    spec: ChannelSpec,
    *,
    loudness: Loudness | None,
    size_bytes: int,
    expected_size: tuple[int, int] | None = None,
) -> list[Violation]:
    """Every limit of ``spec`` that ``info`` misses (empty: the file may be published).

    ``expected_size``: for native-size channels (``master``), the render's size to hold the file
    to; otherwise the channel's ``width`` x ``height``. ``loudness`` None: the audio could not be
    measured, itself a violation when the file has audio.
    """
    out: list[Violation] = []

    def miss(field_name: str, limit: str, actual: str, message: str) -> None:
        out.append(Violation(field_name, limit, actual, f"{spec.name}: {message}"))

    video, audio = info.video, info.audio
    if video is None:
        miss("video", "a video stream", "none", "no video stream")
    else:
        size = (
            (spec.width, spec.height) if spec.width is not None and spec.height is not None else expected_size
        )
        if size is not None:
            want_w, want_h = size
            got_w, got_h = video.display_width, video.display_height
            if (got_w, got_h) != (want_w, want_h):
                miss(
                    "width",
                    f"{want_w}x{want_h}",
                    f"{got_w}x{got_h}",
                    f"size {got_w}x{got_h}, channel wants {want_w}x{want_h}",
                )
        if video.codec != VIDEO_CODEC:
            miss(
                "video_codec",
                VIDEO_CODEC,
                video.codec,
                f"video codec {video.codec}, channel wants {VIDEO_CODEC}",
            )
        if video.pix_fmt != PIX_FMT:
            miss(
                "pix_fmt",
                PIX_FMT,
                str(video.pix_fmt),
                f"pixel format {video.pix_fmt}, channel wants {PIX_FMT}",
            )
        fps = video.fps
        if spec.max_fps is not None and fps > spec.max_fps * (1 + FPS_TOLERANCE):
            miss(
                "max_fps",
                _fmt(spec.max_fps),
                _fmt(fps),
                f"{_fmt(fps)} fps, channel allows at most {_fmt(spec.max_fps)}",
            )
        if spec.min_fps is not None and fps < spec.min_fps * (1 - FPS_TOLERANCE):
            miss(
                "min_fps",
                _fmt(spec.min_fps),
                _fmt(fps),
                f"{_fmt(fps)} fps, channel wants at least {_fmt(spec.min_fps)}",
            )

    duration = info.duration
    if duration is None:
        if spec.max_duration_s is not None or spec.min_duration_s is not None:
            miss("max_duration_s", "a known duration", "unknown", "the file's duration is unknown")
    else:
        if spec.max_duration_s is not None and duration > spec.max_duration_s + DURATION_TOLERANCE_S:
            miss(
                "max_duration_s",
                _fmt(spec.max_duration_s),
                _fmt(round(duration, 3)),
                f"runs {duration:.2f} s, channel allows at most {_fmt(spec.max_duration_s)} s",
            )
        if spec.min_duration_s is not None and duration < spec.min_duration_s - DURATION_TOLERANCE_S:
            miss(
                "min_duration_s",
                _fmt(spec.min_duration_s),
                _fmt(round(duration, 3)),
                f"runs {duration:.2f} s, channel wants at least {_fmt(spec.min_duration_s)} s",
            )

    if spec.max_bytes is not None and size_bytes > spec.max_bytes:
        miss(
            "max_bytes",
            str(spec.max_bytes),
            str(size_bytes),
            f"{size_bytes} bytes, channel allows at most {spec.max_bytes}",
        )

    if audio is None:
        miss("audio", "an audio stream", "none", "no audio stream")
    else:
        if audio.codec != AUDIO_CODEC:
            miss(
                "audio_codec",
                AUDIO_CODEC,
                audio.codec,
                f"audio codec {audio.codec}, channel wants {AUDIO_CODEC}",
            )
        if audio.sample_rate != spec.audio_rate:
            miss(
                "audio_rate",
                str(spec.audio_rate),
                str(audio.sample_rate),
                f"audio at {audio.sample_rate} Hz, channel wants {spec.audio_rate}",
            )
        if audio.channels != spec.audio_channels:
            miss(
                "audio_channels",
                str(spec.audio_channels),
                str(audio.channels),
                f"{audio.channels} audio channels, channel wants {spec.audio_channels}",
            )
        if loudness is None:
            miss("loudness_lufs", _fmt(spec.loudness_lufs), "unmeasured", "loudness could not be measured")
        else:
            off = abs(loudness.integrated_lufs - spec.loudness_lufs)
            if not off <= LOUDNESS_TOLERANCE_LU:  # also catches -inf (silence)
                miss(
                    "loudness_lufs",
                    f"{_fmt(spec.loudness_lufs)} ± {_fmt(LOUDNESS_TOLERANCE_LU)}",
                    _fmt(loudness.integrated_lufs),
                    f"loudness {loudness.integrated_lufs:.1f} LUFS, channel wants {_fmt(spec.loudness_lufs)}",
                )
            ceiling = spec.true_peak_db + TRUE_PEAK_TOLERANCE_DB
            if loudness.true_peak_db > ceiling:
                miss(
                    "true_peak_db",
                    f"<= {_fmt(ceiling)}",
                    _fmt(loudness.true_peak_db),
                    f"true peak {loudness.true_peak_db:.1f} dBTP, channel allows {_fmt(spec.true_peak_db)}",
                )
    return out


MAX_TOP_LEVEL_BOXES = 64


def top_level_boxes(path: str | PathLike[str]) -> list[str]:
    """The order of an MP4's top-level boxes (``ftyp``, ``moov``, ``mdat``...), from their headers only."""
    names: list[str] = []
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        while len(names) < MAX_TOP_LEVEL_BOXES:
            at = f.tell()
            header = f.read(8)
            if len(header) < 8:
                break
            size = int.from_bytes(header[:4], "big")
            names.append(header[4:8].decode("latin-1"))
            if size == 1:
                size = int.from_bytes(f.read(8), "big")
            elif size == 0:
                break
            if size < 8 or at + size > end:
                break
            f.seek(at + size)
    return names


def check_layout(boxes: list[str], spec: ChannelSpec) -> list[Violation]:
    """``moov`` before ``mdat`` (+faststart): YouTube, Instagram and browsers want the index first."""
    if "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat"):
        return []
    order = ",".join(b for b in boxes if b in ("moov", "mdat")) or "none"
    return [
        Violation("faststart", "moov,mdat", order, f"{spec.name}: the MP4 index (moov) is not at the front")
    ]


def check_keyframes(
    keyframes: list[float], duration: float | None, fps: float, spec: ChannelSpec
) -> list[Violation]:
    """The longest stretch without a keyframe (the end of the file included) within the channel's interval.

    One frame of slack: a GOP of ``round(fps * interval)`` frames may run half a frame over.
    """
    if not keyframes:
        return [
            Violation(
                "keyframe_interval_s", _fmt(spec.keyframe_interval_s), "none", f"{spec.name}: no keyframes"
            )
        ]
    points = [*keyframes, duration] if duration is not None and duration > keyframes[-1] else keyframes
    gaps = [b - a for a, b in zip(points, points[1:], strict=False)] or [0.0]
    longest = max(keyframes[0], *gaps)
    slack = 1.0 / fps if fps > 0 else 0.05
    if longest <= spec.keyframe_interval_s + slack:
        return []
    return [
        Violation(
            "keyframe_interval_s",
            _fmt(spec.keyframe_interval_s),
            _fmt(round(longest, 3)),
            f"{spec.name}: {longest:.2f} s without a keyframe,"
            f" channel wants one every {_fmt(spec.keyframe_interval_s)} s",
        )
    ]


def keyframe_times(path: str | PathLike[str], *, timeout: float = 300.0) -> list[float] | None:
    """Keyframe times of the first video stream (ffprobe packet flags, read under the input guard).

    ``None`` when there is no ffprobe to ask (PyAV-only installs): the check is then skipped.
    """
    name = os.fspath(path)
    if ffprobe_exe() is None:
        return None
    result = run_ffprobe(a.packet_flags_probe_args(name), timeout=timeout, subject=name, inputs=[name])
    return parse_keyframes(result.stdout.decode(errors="replace"))


CHECKED_FIELDS = [
    "keyframe_interval_s",
    "faststart",
    "width",
    "height",
    "video_codec",
    "pix_fmt",
    "max_fps",
    "min_fps",
    "max_duration_s",
    "min_duration_s",
    "max_bytes",
    "audio_codec",
    "audio_rate",
    "audio_channels",
    "loudness_lufs",
    "true_peak_db",
]


def validate_file(
    path: str | PathLike[str],
    spec: ChannelSpec,
    *,
    expected_size: tuple[int, int] | None = None,
    loudness: Loudness | None = None,
) -> ValidationResult:
    """Probe ``path``, measure its loudness (unless given) and check it against ``spec``.

    Unreadable files raise ``InvalidMediaError`` (from ``probe``): there is nothing to check.
    """
    name = os.fspath(path)
    info = probe(name)
    if loudness is None and info.audio is not None:
        loudness = measure_file(name)
    violations = check_media(
        info, spec, loudness=loudness, size_bytes=os.path.getsize(name), expected_size=expected_size
    )
    if "mp4" in info.format_name.split(","):
        violations += check_layout(top_level_boxes(name), spec)
    if info.video is not None:
        keyframes = keyframe_times(name)
        if keyframes is not None:
            violations += check_keyframes(keyframes, info.duration, info.video.fps, spec)
    return ValidationResult(
        ok=not violations, violations=violations, info=info, loudness=loudness, checked=list(CHECKED_FIELDS)
    )


__all__ = [
    "CHECKED_FIELDS",
    "LOUDNESS_TOLERANCE_LU",
    "TRUE_PEAK_TOLERANCE_DB",
    "ValidationResult",
    "Violation",
    "check_keyframes",
    "check_layout",
    "check_media",
    "keyframe_times",
    "top_level_boxes",
    "validate_file",
]
