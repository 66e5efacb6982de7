"""Pure ffmpeg arguments for a live push: a list of files played back to back into one FLV over RTMP.

One ffmpeg reads an ffconcat list of the sources (``000.mp4``, ``001.mp4``: links in a private folder,
see ``push.push_files``), paces it at real time (``-re``), copies or re-encodes, and writes FLV to the
ingest URL. The concat demuxer shifts each file's timestamps by the durations before it, so the stream
is continuous with monotonic timestamps and no reconnect between files::

    concat(
        global_options(),
        concat_input("list.ffconcat"),
        copy_streams(),                       # or live_encode(plan_encode(limits, ...))
        progress_output(),
        flv_output(url, rw_timeout_s=10),
    )

Reading is guarded like every other input: the list may name only files beside it (``-safe 1``: plain
relative names), through the ``file`` protocol, read as one of ``CONCAT_DEMUXERS``. Writing may only
go to RTMP(S) (``PUSH_PROTOCOLS``), so no URL can make this ffmpeg write a local file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Literal

from talkfactory.infra.ffmpeg.args import (
    Argv,
    Rate,
    file_url,
    input_guard,
    nvenc_preset,
    rate,
    seconds,
    to_fraction,
)

CONCAT_DEMUXERS: tuple[str, ...] = (
    "concat",
    "mov",
    "mp4",
    "m4a",
    "3gp",
    "3g2",
    "mj2",
    "flv",
    "live_flv",
    "matroska",
    "webm",
    "mpegts",
)
"""The list itself (``concat``) and the containers exports come in. A source that is itself a list can
only name other links in the same private folder (``-safe 1``), i.e. files of this same push."""
PUSH_PROTOCOLS = "rtmp,rtmps,tcp,tls"
"""What the output may be written through (rtmps is rtmp over tls over tcp)."""

LiveEncoder = Literal["libx264", "h264_nvenc"]


@dataclass(frozen=True)
class LiveLimits:
    """What an ingest server accepts, from a channel preset of kind ``rtmp`` (None: no limit).

    The defaults suit YouTube/Twitch-style 1080p ingest: YouTube gives 1080p30 3-8 Mbps
    (support.google.com/youtube/answer/2853702) and asks for keyframes every 2 s or less.
    """

    max_width: int | None = 1920
    max_height: int | None = 1080
    max_fps: float | None = 60.0
    video_maxrate_kbps: int | None = 6000
    keyframe_interval_s: float = 2.0
    audio_rate: int | None = 48000
    audio_bitrate_kbps: int = 128
    """Used when re-encoding."""

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "max_fps", "video_maxrate_kbps", "audio_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"live limit {name} must be positive, got {value}")
        if not 0 < self.keyframe_interval_s <= 20:
            raise ValueError(f"keyframe_interval_s must be within (0, 20], got {self.keyframe_interval_s}")


@dataclass(frozen=True)
class LiveEncode:
    """How a push re-encodes when its sources do not fit the limits as they are."""

    width: int
    height: int
    fps: str
    """Exact frame rate as ffmpeg reads it (``30``, ``30000/1001``)."""
    gop_frames: int
    video_kbps: int
    audio_rate: int
    audio_kbps: int
    encoder: LiveEncoder = "libx264"
    preset: str = "veryfast"


def fit_within(width: int, height: int, max_width: int | None, max_height: int | None) -> tuple[int, int]:
    """The largest even size of ``width:height``'s aspect inside the limits, never above the source."""
    scale = 1.0
    if max_width is not None:
        scale = min(scale, max_width / width)
    if max_height is not None:
        scale = min(scale, max_height / height)
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


def plan_encode(
    limits: LiveLimits, *, width: int, height: int, fps: Rate, encoder: LiveEncoder = "libx264"
) -> LiveEncode:
    """The re-encode for a source of this size and rate: scaled down to fit, rate capped, GOP = interval."""
    w, h = fit_within(width, height, limits.max_width, limits.max_height)
    src = to_fraction(fps)
    out = src if limits.max_fps is None or src <= to_fraction(limits.max_fps) else to_fraction(limits.max_fps)
    gop = max(1, math.floor(float(out) * limits.keyframe_interval_s))
    return LiveEncode(
        width=w,
        height=h,
        fps=rate(out),
        gop_frames=gop,
        video_kbps=limits.video_maxrate_kbps or 4500,
        audio_rate=limits.audio_rate or 48000,
        audio_kbps=limits.audio_bitrate_kbps,
        encoder=encoder,
    )


def ffconcat(names: Sequence[str], durations: Sequence[float | None] | None = None) -> str:
    """An ffconcat list of plain relative names (what ``-safe 1`` accepts), with optional durations."""
    lines = ["ffconcat version 1.0"]
    for i, name in enumerate(names):
        if not name or name.startswith(".") or not all(c.isalnum() or c in "_-." for c in name):
            raise ValueError(f"not a safe concat entry name: {name!r}")
        lines.append(f"file {name}")
        duration = durations[i] if durations is not None else None
        if duration is not None:
            lines.append(f"duration {seconds(duration)}")
    return "\n".join(lines) + "\n"


def concat_input(list_path: str | PathLike[str], *, realtime: bool = True) -> Argv:
    """``-re -f concat -safe 1 <guard> -i file:list``: the sources back to back, at real-time pace."""
    pace = ["-re"] if realtime else []
    return [*pace, "-f", "concat", "-safe", "1", *input_guard(CONCAT_DEMUXERS), "-i", file_url(list_path)]


def copy_streams() -> Argv:
    """First video and first audio stream as they are (FLV takes H.264/AAC without re-encoding)."""
    return ["-map", "0:v:0", "-map", "0:a:0", "-c", "copy"]


def live_encode(enc: LiveEncode) -> Argv:
    """H.264 High at a capped rate with a keyframe every ``gop_frames`` (closed GOPs, no scene cuts), AAC.

    Every source is scaled into the same box and padded (sources of other shapes keep their aspect), and
    audio keeps to its timestamps (``aresample=async``) so sync holds across file boundaries.
    """
    box = (
        f"scale={enc.width}:{enc.height}:force_original_aspect_ratio=decrease,"
        f"pad={enc.width}:{enc.height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={enc.fps},format=yuv420p"
    )
    kbps = enc.video_kbps
    if enc.encoder == "libx264":
        video = ["-c:v", "libx264", "-preset", enc.preset, "-profile:v", "high"]
        video += ["-sc_threshold", "0", "-flags", "+cgop"]
    else:
        video = [
            "-c:v",
            "h264_nvenc",
            "-preset",
            nvenc_preset(enc.preset),
            "-rc",
            "cbr",
            "-profile:v",
            "high",
        ]
        video += ["-strict_gop", "1", "-no-scenecut", "1"]
    return [
        "-map", "0:v:0", "-map", "0:a:0",
        "-vf", box,
        *video,
        "-g", str(enc.gop_frames), "-keyint_min", str(enc.gop_frames),
        "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k",
        "-af", "aresample=async=1",
        "-c:a", "aac", "-b:a", f"{enc.audio_kbps}k", "-ar", str(enc.audio_rate), "-ac", "2",
    ]  # fmt: skip


def flv_output(
    url: str,
    *,
    rw_timeout_s: float,
    send_buffer_bytes: int | None = None,
    verify_tls: bool = True,
    ca_file: str | PathLike[str] | None = None,
) -> Argv:
    """FLV to ``url`` through RTMP(S) only; a write or read that blocks ``rw_timeout_s`` fails the push.

    ``send_buffer_bytes`` shrinks the socket's send buffer, so a dead peer blocks writes (and so trips
    the timeout) sooner; at the cost of throughput on long links (window / RTT), hence off by default.
    For ``rtmps://`` the server's certificate is verified (ffmpeg's TLS does not by default), against
    the system's trusted CAs or ``ca_file``; ``verify_tls=False`` skips the check.
    """
    if rw_timeout_s <= 0:
        raise ValueError(f"rw_timeout_s must be positive, got {rw_timeout_s}")
    argv = ["-f", "flv", "-flvflags", "no_duration_filesize", "-rw_timeout", str(int(rw_timeout_s * 1e6))]
    if send_buffer_bytes is not None:
        argv += ["-send_buffer_size", str(send_buffer_bytes)]
    if url.lower().startswith("rtmps://"):
        argv += ["-tls_verify", "1" if verify_tls else "0"]
        if ca_file is not None:
            argv += ["-ca_file", os.fspath(ca_file)]
    return [*argv, "-protocol_whitelist", PUSH_PROTOCOLS, url]


__all__ = [
    "CONCAT_DEMUXERS",
    "PUSH_PROTOCOLS",
    "LiveEncode",
    "LiveEncoder",
    "LiveLimits",
    "concat_input",
    "copy_streams",
    "ffconcat",
    "fit_within",
    "flv_output",
    "live_encode",
    "plan_encode",
]
