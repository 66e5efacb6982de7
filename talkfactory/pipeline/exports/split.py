"""Cutting a clip into parts that fit a channel's length limit, only in pauses between words (pure).

A cut goes in the middle of a pause at least ``min_pause_s`` long, so no part starts or ends mid-word.
The clip gets the fewest parts possible (counted backwards from the end first); among the cuts that
keep that count, each part ends at the widest pause in the last third of its allowed window (a natural
break near the limit), else at the latest pause that keeps it. So a greedy early choice never adds a
part, nor strands a stretch of speech no later cut can reach.
When no such cuts exist the plan has no parts and says why, for the manifest.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from talkfactory.models.speech.asr import Word

MIN_PAUSE_S = 0.25
"""The shortest silence between two words a cut may go in (half of it stays on each side)."""
_EPS = 1e-6


@dataclass(frozen=True)
class Part:
    """One part of a clip, ``number`` from 1, times in the clip's own seconds."""

    number: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SplitPlan:
    """The parts to export; empty with ``skipped_reason`` when the clip cannot be cut to fit."""

    parts: tuple[Part, ...]
    skipped_reason: str | None = None

    @property
    def skipped(self) -> bool:
        return not self.parts

    @property
    def split(self) -> bool:
        """More than one part (exports then carry a part number)."""
        return len(self.parts) > 1


def plan_parts(
    duration_s: float,
    max_s: float | None,
    words: Sequence[Word],
    *,
    min_s: float | None = None,
    min_pause_s: float = MIN_PAUSE_S,
    channel: str | None = None,
) -> SplitPlan:
    """Parts of a ``duration_s`` clip each at most ``max_s`` (and at least ``min_s``) long.

    ``words`` are the clip's words in its own time (a transcript). ``channel`` names the limit's
    owner in the reason (``"youtube-shorts allows 180 s"``).
    """
    if duration_s < 0 or (max_s is not None and max_s <= 0):
        raise ValueError(f"impossible split: a {duration_s} s clip into parts of at most {max_s} s")
    who = channel or "the channel"
    if min_s is not None and duration_s < min_s - _EPS:
        return SplitPlan((), f"clip runs {duration_s:.1f} s; {who} needs at least {min_s:g} s")
    if max_s is None or duration_s <= max_s + _EPS:
        return SplitPlan((Part(1, 0.0, duration_s),))

    pauses = _pauses(words, duration_s, min_pause_s)
    positions = [0.0, *(mid for mid, _ in pauses), duration_s]
    widths = [0.0, *(width for _, width in pauses), 0.0]
    lo = min_s or 0.0
    need = _parts_needed(positions, lo, max_s)
    if need[0] is None:
        return SplitPlan((), _reason(positions, words, lo, max_s, who))

    cuts = [0]
    k = 0
    while duration_s - positions[k] > max_s + _EPS:
        k = _next_cut(positions, widths, need, k, lo, max_s)
        cuts.append(k)
    cuts.append(len(positions) - 1)
    parts = tuple(
        Part(n, round(positions[a], 3), round(positions[b], 3) if b < len(positions) - 1 else duration_s)
        for n, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False), start=1)
    )
    return SplitPlan(parts)


def _pauses(words: Sequence[Word], duration_s: float, min_pause_s: float) -> list[tuple[float, float]]:
    """(middle, width) of every pause between two words at least ``min_pause_s`` long, in time order."""
    ordered = sorted(words, key=lambda w: (w.start, w.end))
    out = []
    speech_end = 0.0
    for prev, nxt in zip(ordered, ordered[1:], strict=False):
        speech_end = max(speech_end, prev.end)  # a word can sit inside a longer one's timing
        gap = nxt.start - speech_end
        mid = (speech_end + nxt.start) / 2
        if gap >= min_pause_s - _EPS and 0.0 < mid < duration_s:
            out.append((mid, gap))
    return out


def _window(positions: list[float], k: int, lo: float, hi: float) -> tuple[int, int]:
    """Indices ``[a, b)`` of the cuts a part starting at cut ``k`` may end at."""
    a = bisect.bisect_left(positions, positions[k] + lo - _EPS, lo=k + 1)
    b = bisect.bisect_right(positions, positions[k] + hi + _EPS, lo=k + 1)
    return a, b


def _parts_needed(positions: list[float], lo: float, hi: float) -> list[int | None]:
    """``need[k]``: the fewest parts of ``lo``..``hi`` seconds from cut ``k`` to the end (None: none fit).

    Computed from the end backwards with a sliding-window minimum (both window ends only move left),
    so a long clip with thousands of pauses costs O(n log n), not O(n x pauses per window).
    """
    n = len(positions)
    need: list[int | None] = [None] * n
    need[-1] = 0
    window: deque[int] = deque()  # indices in the window, smallest ``need`` at the left
    added = n  # indices >= added have been offered to the window
    for k in range(n - 2, -1, -1):
        a, b = _window(positions, k, lo, hi)
        while added > a:
            added -= 1
            value = need[added]
            if value is None:
                continue
            while window and (need[window[-1]] or 0) >= value:
                window.pop()
            window.append(added)
        while window and window[0] >= b:
            window.popleft()
        if window:
            need[k] = (need[window[0]] or 0) + 1
    return need


def _next_cut(
    positions: list[float], widths: list[float], need: list[int | None], k: int, lo: float, hi: float
) -> int:
    """The cut ending the part that starts at ``k``: among those keeping the fewest parts overall, the
    widest pause in the last third of the window, else the latest."""
    a, b = _window(positions, k, lo, hi)
    here = need[k]
    assert here is not None
    usable = [m for m in range(a, min(b, len(positions) - 1)) if need[m] == here - 1]
    late = [m for m in usable if positions[m] >= positions[k] + 2 * hi / 3]
    if late:
        return max(late, key=lambda m: (widths[m], m))
    return usable[-1]


def _reason(positions: list[float], words: Sequence[Word], lo: float, hi: float, who: str) -> str:
    """Why no plan exists: the longest run of speech with no usable pause, or the minimum length."""
    longest, at = max(((b - a, i) for i, (a, b) in enumerate(zip(positions, positions[1:], strict=False))))
    if longest > hi + _EPS:
        a, b = positions[at], positions[at + 1]
        inside = [w for w in words if a <= (w.start + w.end) / 2 <= b]
        run = max(w.end for w in inside) - min(w.start for w in inside) if inside else b - a
        if run > hi:
            return f"speech runs {run:.1f} s without a pause long enough to cut; {who} allows {hi:g} s"
        # The speech alone would fit, but the silence at the clip's edge it cannot be cut from would not.
        return (
            f"no pause long enough to cut between {a:.1f} s and {b:.1f} s ({longest:.1f} s); "
            f"{who} allows {hi:g} s"
        )
    return f"no cut at pauses gives parts of {lo:g} to {hi:g} s; {who} needs parts that long"


__all__ = ["MIN_PAUSE_S", "Part", "SplitPlan", "plan_parts"]
