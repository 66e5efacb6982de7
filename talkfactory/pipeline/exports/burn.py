"""Captions burned into frames, for channels whose players show no caption files.

Drawn with OpenCV's built-in Hershey font in the encoder's thread: no font file, no ffmpeg filter
opening a subtitles file. The font covers printable ASCII only; other characters are left out of
the burned text (the ``.srt``/``.vtt`` files carry them all), which the README says.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from talkfactory.pipeline.exports.captions import Cue

FONT = cv2.FONT_HERSHEY_DUPLEX
_TYPOGRAPHIC: dict[int, str] = {0x2019: "'", 0x2018: "'", 0x201C: '"', 0x201D: '"', 0x2014: "-", 0x2013: "-"}


class CaptionBurner:
    """Draws the cue showing at time ``t`` onto a frame (white text, dark outline, bottom centre)."""

    def __init__(self, cues: Sequence[Cue], *, width: int, height: int) -> None:
        self._cues = list(cues)
        self._starts = np.array([c.start for c in self._cues], dtype=np.float64)
        # Sized for the frame: 42 characters fill about 85 % of the width.
        probe_w = cv2.getTextSize("x" * 42, FONT, 1.0, 2)[0][0]
        self.scale = 0.85 * width / max(1, probe_w)
        self.thickness = max(1, round(2 * self.scale))
        self.line_h = int(cv2.getTextSize("Hg", FONT, self.scale, self.thickness)[0][1] * 1.8)
        self.bottom = int(height * 0.88)
        self.width = width

    def cue_at(self, t: float) -> Cue | None:
        i = int(np.searchsorted(self._starts, t, side="right")) - 1
        if i >= 0 and self._cues[i].start <= t < self._cues[i].end:
            return self._cues[i]
        return None

    def draw(self, frame: NDArray[np.uint8], t: float) -> NDArray[np.uint8]:
        cue = self.cue_at(t)
        if cue is None:
            return frame
        # Always a copy: at native size the frame may be the very array the master encoder holds.
        out = frame.copy()
        lines = [ascii_text(line) for line in cue.lines]
        y = self.bottom - self.line_h * (len(lines) - 1)
        for line in lines:
            (w, _), _ = cv2.getTextSize(line, FONT, self.scale, self.thickness)
            x = max(0, (self.width - w) // 2)
            cv2.putText(out, line, (x, y), FONT, self.scale, (0, 0, 0), self.thickness * 3, cv2.LINE_AA)
            cv2.putText(out, line, (x, y), FONT, self.scale, (255, 255, 255), self.thickness, cv2.LINE_AA)
            y += self.line_h
        return out


def ascii_text(text: str) -> str:
    """What the Hershey font can draw: printable ASCII (typographic quotes and dashes mapped)."""
    text = text.translate(_TYPOGRAPHIC)
    return "".join(c for c in text if 32 <= ord(c) < 127)
