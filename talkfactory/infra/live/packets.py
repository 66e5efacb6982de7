"""What a push needs to know of a source's video packets: keyframe spacing and peak bitrate.

Ingest servers want a keyframe at least every 2 s and a bitrate under a cap; a file that meets both can
be pushed as it is. Both are read from packet headers (ffprobe demuxes, decodes nothing), over the first
``PROBED_SECONDS`` of the file so a long export costs the same as a short one. ``parse_packets`` is pure.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from os import PathLike

from talkfactory.infra.ffmpeg.args import Argv, demuxers_for, file_url, input_guard
from talkfactory.infra.ffmpeg.runner import run_ffprobe

PROBED_SECONDS = 120.0
BITRATE_WINDOW_S = 2.0
"""Peak bitrate is the most bits in any window this long: what an ingest buffer of that size sees."""


@dataclass(frozen=True)
class PacketStats:
    """Video packets of (the start of) a file."""

    packets: int
    max_keyframe_gap_s: float | None
    """Longest time between consecutive keyframes; None with fewer than two keyframes."""
    peak_kbps: float
    mean_kbps: float
    frame_s: float
    """Typical packet duration (one frame), to allow a frame of slack in the keyframe check."""


def packet_args(path: str | PathLike[str], *, probed_s: float = PROBED_SECONDS) -> Argv:
    return [
        "-v", "error", "-hide_banner",
        "-select_streams", "v:0",
        "-read_intervals", f"%+{probed_s:g}",
        "-show_entries", "packet=pts_time,duration_time,size,flags",
        "-of", "csv=p=0",
        *input_guard(demuxers_for(path)),
        "-i", file_url(path),
    ]  # fmt: skip


def parse_packets(text: str, *, window_s: float = BITRATE_WINDOW_S) -> PacketStats:
    """``PacketStats`` from ffprobe's ``pts_time,duration_time,size,flags`` CSV lines."""
    rows: list[tuple[float, float, int, bool]] = []
    for line in text.splitlines():
        parts = line.strip().split(",")
        if len(parts) < 4:
            continue
        try:
            pts = float(parts[0])
            size = int(parts[2])
        except ValueError:
            continue
        try:
            duration = float(parts[1])
        except ValueError:
            duration = math.nan
        if math.isfinite(pts):
            rows.append((pts, duration, size, "K" in parts[3]))
    rows.sort()
    if not rows:
        return PacketStats(0, None, 0.0, 0.0, 0.0)
    durations = sorted(d for _, d, _, _ in rows if math.isfinite(d) and d > 0)
    frame_s = durations[len(durations) // 2] if durations else 0.0
    keys = [pts for pts, _, _, key in rows if key]
    gap = max((b - a for a, b in zip(keys, keys[1:], strict=False)), default=None)
    span = max(rows[-1][0] - rows[0][0] + frame_s, 1e-9)
    total_bits = 8 * sum(size for _, _, size, _ in rows)
    peak_bits = 0
    window: deque[tuple[float, int]] = deque()
    in_window = 0
    for pts, _, size, _ in rows:
        window.append((pts, size))
        in_window += size
        while window and window[0][0] <= pts - window_s:
            in_window -= window.popleft()[1]
        peak_bits = max(peak_bits, 8 * in_window)
    peak_window = min(window_s, span)
    return PacketStats(
        packets=len(rows),
        max_keyframe_gap_s=gap,
        peak_kbps=peak_bits / peak_window / 1000,
        mean_kbps=total_bits / span / 1000,
        frame_s=frame_s,
    )


def packet_stats(path: str | PathLike[str], *, timeout: float = 120.0) -> PacketStats:
    """``parse_packets`` of the file's first ``PROBED_SECONDS`` (ffprobe, input guarded)."""
    name = os.fspath(path)
    result = run_ffprobe(packet_args(name), timeout=timeout, subject=name, inputs=[name])
    return parse_packets(result.stdout.decode(errors="replace"))


__all__ = ["PROBED_SECONDS", "PacketStats", "packet_args", "packet_stats", "parse_packets"]
