"""Where a video's keyframes are: decoding can start there without decoding anything before.

Read from the container's packet flags by ffprobe (demuxing only, nothing is decoded), so it is
cheap even for long files. ``parse_keyframes`` is the pure part.
"""

from __future__ import annotations

import math
import os
from os import PathLike

from talkfactory.infra.ffmpeg.binaries import ffprobe_exe
from talkfactory.infra.ffmpeg.runner import run_ffprobe


def keyframe_args(path: str) -> list[str]:
    return [
        "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
        "-of", "csv=p=0", path,
    ]  # fmt: skip


def parse_keyframes(text: str) -> list[float]:
    """Sorted presentation times (s) of the packets flagged ``K`` in ffprobe's ``pts_time,flags`` CSV."""
    times: list[float] = []
    for line in text.splitlines():
        parts = line.strip().split(",")
        if len(parts) < 2 or "K" not in parts[1]:
            continue
        try:
            t = float(parts[0])
        except ValueError:
            continue
        if math.isfinite(t):
            times.append(t)
    return sorted(times)


def keyframe_times(path: str | PathLike[str], *, timeout: float = 300.0) -> list[float] | None:
    """Keyframe times of the first video stream, or ``None`` when there is no ffprobe to ask."""
    name = os.fspath(path)
    if ffprobe_exe() is None:
        return None
    result = run_ffprobe(keyframe_args(name), timeout=timeout, subject=name, inputs=[name])
    return parse_keyframes(result.stdout.decode(errors="replace"))
