"""What a media file holds: container, first video stream, first audio stream, or a still image.

``parse_ffprobe`` turns ``ffprobe -show_format -show_streams -of json`` output into frozen
dataclasses and is pure (tested with literal JSON). ``probe`` runs ffprobe, or reads the same
facts through PyAV when no ffprobe is installed (the imageio-ffmpeg binary comes without one),
and turns every way a file can be unusable into ``InvalidMediaError`` naming the cause.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from os import PathLike
from typing import Any, Literal, cast

from talkfactory.errors import InvalidMediaError, MediaNotFoundError
from talkfactory.infra.ffmpeg import args as a
from talkfactory.infra.ffmpeg.binaries import ffprobe_exe
from talkfactory.infra.ffmpeg.runner import run_ffprobe

VFR_TOLERANCE = 0.01
"""avg and r frame rates further apart than this (relative) mark a stream as variable-rate."""

_ALPHA_PREFIXES = ("yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya8", "ya16", "rgba64", "bgra64")


@dataclass(frozen=True)
class VideoStreamInfo:
    """The first video stream (cover art is skipped)."""

    index: int
    """Stream index in the container."""
    codec: str
    profile: str | None
    width: int
    """Coded width; see ``display_width`` for rotated sources."""
    height: int
    fps: float
    """The nominal rate: ``r_fps`` when the stream is constant-rate, else the average."""
    avg_fps: Fraction | None
    r_fps: Fraction | None
    is_vfr: bool
    """avg and r frame rates disagree: decode through the fps filter to get CFR frames."""
    pix_fmt: str | None
    duration: float | None
    nb_frames: int | None
    has_alpha: bool
    rotation: int
    """Clockwise degrees (0, 90, 180, 270) the player turns the picture; ffmpeg decodes already turned."""
    start_time: float | None = None

    @property
    def rate(self) -> Fraction:
        """The exact nominal rate (``30000/1001`` rather than ``29.97``)."""
        if not self.is_vfr and self.r_fps:
            return self.r_fps
        if self.avg_fps:
            return self.avg_fps
        return Fraction(self.fps).limit_denominator(1001)

    @property
    def display_width(self) -> int:
        """Width of decoded frames (ffmpeg applies the rotation when it decodes)."""
        return self.height if self.rotation in (90, 270) else self.width

    @property
    def display_height(self) -> int:
        return self.width if self.rotation in (90, 270) else self.height


@dataclass(frozen=True)
class AudioStreamInfo:
    """The first audio stream."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    channel_layout: str | None
    duration: float | None
    start_time: float | None


@dataclass(frozen=True)
class MediaInfo:
    """A probed file. ``is_image`` is decided by content (a PNG named ``.mp4`` is an image)."""

    path: str
    format_name: str
    duration: float | None
    size_bytes: int
    bit_rate: int | None
    video: VideoStreamInfo | None
    audio: AudioStreamInfo | None
    is_image: bool
    start_time: float | None = None

    @property
    def audio_offset(self) -> float:
        """Audio start minus video start, in seconds (0 when either is unknown)."""
        if self.audio is None or self.video is None:
            return 0.0
        if self.audio.start_time is None or self.video.start_time is None:
            return 0.0
        return self.audio.start_time - self.video.start_time

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (rates as ``"30000/1001"`` strings) for lineage metadata."""
        return cast(dict[str, Any], _jsonable(asdict(self)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    return value


# ---------------------------------------------------------------- pure parsing


def _float(value: Any) -> float | None:
    if value is None or value == "N/A":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _fraction(value: Any) -> Fraction | None:
    if value is None:
        return None
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def _rotation(stream: dict[str, Any]) -> int:
    for item in stream.get("side_data_list") or []:
        if "rotation" in item:
            degrees = _float(item.get("rotation"))
            if degrees is not None:
                # The display matrix angle is counter-clockwise; store the clockwise turn.
                return int(round(-degrees)) % 360
    degrees = _float((stream.get("tags") or {}).get("rotate"))
    return int(round(degrees)) % 360 if degrees is not None else 0


def _is_attached_picture(stream: dict[str, Any]) -> bool:
    return bool((stream.get("disposition") or {}).get("attached_pic"))


def _has_alpha(pix_fmt: str | None) -> bool:
    return bool(pix_fmt) and str(pix_fmt).startswith(_ALPHA_PREFIXES)


def _video(stream: dict[str, Any]) -> VideoStreamInfo:
    avg = _fraction(stream.get("avg_frame_rate"))
    r = _fraction(stream.get("r_frame_rate"))
    is_vfr = bool(avg and r and abs(float(avg) - float(r)) > VFR_TOLERANCE * float(r))
    nominal = (r if not is_vfr else avg) or avg or r
    pix_fmt = stream.get("pix_fmt")
    return VideoStreamInfo(
        index=int(stream.get("index", 0)),
        codec=str(stream.get("codec_name") or "unknown"),
        profile=stream.get("profile"),
        width=int(stream.get("width") or 0),
        height=int(stream.get("height") or 0),
        fps=float(nominal) if nominal else 0.0,
        avg_fps=avg,
        r_fps=r,
        is_vfr=is_vfr,
        pix_fmt=pix_fmt,
        duration=_float(stream.get("duration")),
        nb_frames=_int(stream.get("nb_frames")),
        has_alpha=_has_alpha(pix_fmt),
        rotation=_rotation(stream),
        start_time=_float(stream.get("start_time")),
    )


def _audio(stream: dict[str, Any]) -> AudioStreamInfo:
    return AudioStreamInfo(
        index=int(stream.get("index", 0)),
        codec=str(stream.get("codec_name") or "unknown"),
        sample_rate=_int(stream.get("sample_rate")) or 0,
        channels=_int(stream.get("channels")) or 0,
        channel_layout=stream.get("channel_layout"),
        duration=_float(stream.get("duration")),
        start_time=_float(stream.get("start_time")),
    )


def _is_image_format(format_name: str) -> bool:
    # The still-image demuxers: image2 (by extension) and the *_pipe ones ffprobe picks by content.
    return any(name == "image2" or name.endswith("_pipe") for name in format_name.split(","))


def parse_ffprobe(data: dict[str, Any], path: str | PathLike[str]) -> MediaInfo:
    """``MediaInfo`` from ffprobe's JSON (``-show_format -show_streams -of json``).

    Raises ``InvalidMediaError`` when the file holds neither a video nor an audio stream.
    """
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    video_stream = next(
        (s for s in streams if s.get("codec_type") == "video" and not _is_attached_picture(s)), None
    )
    audio_stream = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video_stream is None and audio_stream is None:
        kinds = sorted({str(s.get("codec_type")) for s in streams})
        found = f" (only {', '.join(kinds)} streams)" if kinds else ""
        raise InvalidMediaError(f"no audio or video stream{found}", subject=str(path))
    format_name = str(fmt.get("format_name") or "unknown")
    video = _video(video_stream) if video_stream is not None else None
    is_image = video is not None and audio_stream is None and _is_image_format(format_name)
    return MediaInfo(
        path=str(path),
        format_name=format_name,
        duration=_float(fmt.get("duration")),
        size_bytes=_int(fmt.get("size")) or 0,
        bit_rate=_int(fmt.get("bit_rate")),
        video=video,
        audio=_audio(audio_stream) if audio_stream is not None else None,
        is_image=is_image,
        start_time=_float(fmt.get("start_time")),
    )


# ---------------------------------------------------------------- probing files


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _describe_content(path: str) -> str | None:
    """A short description of what a non-media file holds, for the error message."""
    with open(path, "rb") as f:
        head = f.read(256)
    if _looks_like_text(head[:64]) or _looks_like_text(head):
        preview = head[:32].decode("utf-8", errors="replace").splitlines()[0] if head.strip() else ""
        return f"the file is text, not media (starts with {preview!r})"
    return None


_REFERENCE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"#EXTM3U", "hls"),
    (b"ffconcat", "concat"),
    (b"<?xml", "dash or another XML playlist"),
    (b"<MPD", "dash"),
)


def sniff_reference_format(path: str) -> str | None:
    """The playlist kind a file is (``hls``, ``concat``...), from its first bytes; None for anything else.

    Only for messages: what decides is the demuxer whitelist, which refuses these files unopened.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    return next((kind for magic, kind in _REFERENCE_MAGIC if head.startswith(magic)), None)


def _check_file(path: str) -> int:
    if not os.path.exists(path):
        raise MediaNotFoundError("no such file", subject=path)
    if os.path.isdir(path):
        raise InvalidMediaError("is a directory, not a media file", subject=path)
    size = os.path.getsize(path)
    if size == 0:
        raise InvalidMediaError("file is empty (0 bytes)", subject=path)
    return size


def probe(
    path: str | PathLike[str],
    *,
    timeout: float = 60.0,
    backend: Literal["auto", "ffprobe", "pyav"] = "auto",
) -> MediaInfo:
    """Probe ``path`` with ffprobe (PyAV when there is no ffprobe, or ``backend="pyav"``).

    Raises ``MediaNotFoundError`` for a missing path and ``InvalidMediaError`` for an empty file,
    a file that is not media (the message names the cause) or one with no audio/video stream.
    """
    name = os.fspath(path)
    size = _check_file(name)
    use_pyav = backend == "pyav" or (backend == "auto" and ffprobe_exe() is None)
    try:
        data = _pyav_probe_dict(name) if use_pyav else _ffprobe_dict(name, timeout=timeout)
    except InvalidMediaError as exc:
        described = None if "we accept" in exc.message else _describe_content(name)
        if described is None:
            raise
        raise InvalidMediaError(f"{described}; {exc.message}", subject=name) from exc
    data.setdefault("format", {}).setdefault("size", size)
    return parse_ffprobe(data, name)


def _ffprobe_dict(path: str, *, timeout: float) -> dict[str, Any]:
    result = run_ffprobe(
        a.probe_args(path),
        timeout=timeout,
        subject=path,
        inputs=[path],
    )
    try:
        data = json.loads(result.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise InvalidMediaError(f"ffprobe returned unreadable JSON: {exc}", subject=path) from exc
    if not isinstance(data, dict):
        raise InvalidMediaError("ffprobe returned no description", subject=path)
    return cast(dict[str, Any], data)


def _pyav_probe_dict(path: str) -> dict[str, Any]:
    """The subset of ffprobe's JSON that ``parse_ffprobe`` reads, gathered through PyAV."""
    import av

    # The same guard as ffprobe gets: a playlist or file list is refused, never followed.
    guard = {"protocol_whitelist": a.INPUT_PROTOCOLS, "format_whitelist": ",".join(a.demuxers_for(path))}
    try:
        container = av.open(a.file_url(path), metadata_errors="ignore", options=guard)
    except av.error.FileNotFoundError as exc:
        raise MediaNotFoundError("no such file", subject=path) from exc
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        sniffed = sniff_reference_format(path)
        if sniffed is not None:
            raise InvalidMediaError(f"not a media file we accept (format {sniffed})", subject=path) from exc
        raise InvalidMediaError(f"not a media file PyAV can read ({exc})", subject=path) from exc
    if container.format.name.split(",")[0] not in a.demuxers_for(path):
        container.close()
        raise InvalidMediaError(f"not a media file we accept (format {container.format.name})", subject=path)
    with container:
        streams: list[dict[str, Any]] = []
        for stream in container.streams:
            entry: dict[str, Any] = {"index": stream.index, "codec_type": stream.type}
            tb = stream.time_base
            if stream.start_time is not None and tb is not None:
                entry["start_time"] = float(stream.start_time * tb)
            if stream.duration is not None and tb is not None:
                entry["duration"] = float(stream.duration * tb)
            if stream.frames:
                entry["nb_frames"] = stream.frames
            entry["disposition"] = {
                "attached_pic": int(bool(stream.disposition & av.stream.Disposition.attached_pic))
            }
            ctx: Any = stream.codec_context
            entry["codec_name"] = ctx.name if ctx is not None else None
            entry["profile"] = getattr(ctx, "profile", None)
            if stream.type == "video":
                fmt = getattr(ctx, "format", None)
                entry.update(
                    width=ctx.width,
                    height=ctx.height,
                    pix_fmt=fmt.name if fmt is not None else None,
                    r_frame_rate=str(stream.base_rate) if stream.base_rate else None,
                    avg_frame_rate=str(stream.average_rate) if stream.average_rate else None,
                )
                rotate = stream.metadata.get("rotate")
                if rotate is not None:
                    entry["tags"] = {"rotate": rotate}
            elif stream.type == "audio":
                entry.update(
                    sample_rate=ctx.sample_rate,
                    channels=ctx.channels,
                    channel_layout=ctx.layout.name if ctx.layout is not None else None,
                )
            streams.append(entry)
        fmt_info: dict[str, Any] = {
            "format_name": container.format.name,
            "size": os.path.getsize(path),
            "bit_rate": container.bit_rate or None,
        }
        if container.duration is not None:
            fmt_info["duration"] = container.duration / 1_000_000
        if container.start_time is not None:
            fmt_info["start_time"] = container.start_time / 1_000_000
    return {"format": fmt_info, "streams": streams}


__all__ = [
    "AudioStreamInfo",
    "MediaInfo",
    "VideoStreamInfo",
    "parse_ffprobe",
    "probe",
    "sniff_reference_format",
]
