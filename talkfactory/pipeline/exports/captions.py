"""Caption cues from word timings, and their SRT and WebVTT text (pure: no models, no files).

Cues are made to be read on a phone: at most ``max_lines`` lines of at most ``max_chars`` columns
(full-width Chinese and Japanese characters count two) shown for at most ``max_s`` seconds. A cue never
splits a word; a sentence end or a long pause always starts a new cue. Within a sentence the words are
shared out so that the fewest cues are used and they are as even as possible (a 50-character sentence
becomes two cues of ~25, not 42 + 8), and each cue's lines are balanced the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from talkfactory.models.speech.asr import Word, display_width, join_words, needs_space

SENTENCE_ENDS = frozenset(".?!…。？！")
CLAUSE_ENDS = frozenset(",;:，；：、")
_CLOSERS = "\"'”’)]」』】》"
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "prof.", "etc.", "e.g.", "i.e."})

PAUSE_S = 0.8
"""A silence this long between two words ends the cue even without punctuation."""
MIN_CUE_S = 0.8
"""Short cues stay up this long when the next one leaves room (a one-word cue flashes otherwise)."""
_CUE_BREAK_NUDGE = 0.25
"""How much a cue ending at a comma is preferred (one ending on "the" avoided), as a share of a full
line's squared width: enough to move a break by a word or two, not to unbalance the cues."""
_LINE_BREAK_NUDGE = 80.0
_LEANING = frozenset(
    "a an the to of and or but nor in on at for with from by as if so than that this these those my your "
    "his her its our their is are was were be i we you he she they it not no".split()
)
"""Words that lean on the next one: a line or cue is better not ended on them."""


@dataclass(frozen=True)
class Cue:
    """One caption on screen from ``start`` to ``end`` seconds."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def build_cues(
    words: Sequence[Word],
    *,
    max_chars: int = 42,
    max_lines: int = 2,
    max_s: float = 7.0,
    pause_s: float = PAUSE_S,
    min_s: float = MIN_CUE_S,
) -> list[Cue]:
    """Cues for ``words`` (in time order); each cue ends no later than the next one starts.

    A single word wider than a line gets a line of its own (a word is never broken).
    """
    if max_chars < 1 or max_lines < 1 or max_s <= 0:
        raise ValueError(f"impossible caption limits: {max_lines} lines of {max_chars} chars, {max_s} s")
    ordered = sorted((w for w in words if w.text.strip()), key=lambda w: (w.start, w.end))
    groups: list[list[Word]] = []
    for phrase in _phrases(ordered, pause_s):
        groups.extend(_share_out(phrase, max_chars, max_lines, max_s))
    cues: list[Cue] = []
    for i, group in enumerate(groups):
        start = group[0].start
        next_start = groups[i + 1][0].start if i + 1 < len(groups) else math.inf
        end = max(group[-1].end, start)
        end = max(end, min(start + min_s, next_start))
        end = min(end, next_start, start + max_s)
        lines = _wrap([w.text.strip() for w in group], max_chars, max_lines)
        assert lines is not None  # _share_out only makes groups that wrap
        cues.append(Cue(start, end, lines))
    return cues


def words_between(words: Sequence[Word], start_s: float, end_s: float) -> list[Word]:
    """The words of the part ``[start_s, end_s)``, in the part's own time (0 at ``start_s``).

    A word belongs to the part holding its middle (parts are cut in pauses, so none straddles one);
    its times are clamped to the part.
    """
    length = end_s - start_s
    out = []
    for w in words:
        mid = (w.start + w.end) / 2
        if start_s <= mid < end_s:
            s = min(max(w.start - start_s, 0.0), length)
            e = min(max(w.end - start_s, s), length)
            out.append(Word(round(s, 3), round(e, 3), w.text))
    return out


def to_srt(cues: Sequence[Cue]) -> str:
    """SubRip text: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line after each."""
    blocks = []
    for n, cue in enumerate(cues, start=1):
        lines = [_clean(line) for line in cue.lines]
        times = f"{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}"
        blocks.append("\n".join([str(n), times, *lines]) + "\n")
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then cues with ``HH:MM:SS.mmm`` times (text HTML-escaped)."""
    blocks = ["WEBVTT\n"]
    for cue in cues:
        lines = [_escape_vtt(_clean(line)) for line in cue.lines]
        times = f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}"
        blocks.append("\n".join([times, *lines]) + "\n")
    return "\n".join(blocks)


def _phrases(words: Sequence[Word], pause_s: float) -> list[list[Word]]:
    """Runs of words that end at a sentence end or a pause: no cue spans two of them."""
    phrases: list[list[Word]] = []
    current: list[Word] = []
    for i, w in enumerate(words):
        current.append(w)
        last = i + 1 == len(words)
        if last or _ends_sentence(w.text) or words[i + 1].start - w.end >= pause_s:
            phrases.append(current)
            current = []
    return phrases


def _ends_sentence(text: str) -> bool:
    core = text.strip().rstrip(_CLOSERS)
    if not core or core[-1] not in SENTENCE_ENDS:
        return False
    return core.lower() not in _ABBREVIATIONS


class _Widths:
    """Display widths of any run of a phrase's words, joined as written, in O(1) (prefix sums)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self._w = [0]
        self._sp = [0, 0]  # _sp[k]: spaces among the first k words
        for k, t in enumerate(texts):
            self._w.append(self._w[-1] + display_width(t))
            if k:
                self._sp.append(self._sp[-1] + (1 if needs_space(texts[k - 1], t) else 0))

    def width(self, a: int, b: int) -> int:
        """Width of words ``[a, b)`` on one line."""
        return self._w[b] - self._w[a] + self._sp[b] - self._sp[a + 1]

    def lines_needed(self, a: int, b: int, max_chars: int) -> int:
        """Fewest lines that hold words ``[a, b)`` (greedy filling is optimal for the count)."""
        lines, start = 1, a
        for k in range(a + 1, b):
            if self.width(start, k + 1) > max_chars:
                lines, start = lines + 1, k
        return lines


def _share_out(phrase: list[Word], max_chars: int, max_lines: int, max_s: float) -> list[list[Word]]:
    """Split one phrase into the fewest cues that fit, as even as possible (dynamic programming).

    The cost of a split is (number of cues, sum of squared cue widths, nudged for ending a cue at a
    clause mark or on a leaning word), compared in that order: squared widths are smallest when the
    cues are even.
    """
    n = len(phrase)
    widths = _Widths([w.text.strip() for w in phrase])
    capacity = max_chars * max_lines
    full = float(max_chars * max_chars)
    best: list[tuple[int, float] | None] = [None] * (n + 1)
    back = [0] * (n + 1)
    best[0] = (0, 0.0)
    for i in range(n):
        base = best[i]
        if base is None:
            continue
        for j in range(i + 1, n + 1):
            width = widths.width(i, j)
            if j > i + 1:
                if width > capacity + max_lines or phrase[j - 1].end - phrase[i].start > max_s:
                    break  # both only grow with j (a line break saves at most one space)
                if widths.lines_needed(i, j, max_chars) > max_lines:
                    continue
            nudge = (
                _break_cost(widths.texts[j - 1]) / _LINE_BREAK_NUDGE * _CUE_BREAK_NUDGE * full
                if j < n
                else 0.0
            )
            cost = (base[0] + 1, base[1] + float(width * width) + nudge)
            current = best[j]
            if current is None or cost < current:
                best[j], back[j] = cost, i
    groups: list[list[Word]] = []
    j = n
    while j > 0:
        i = back[j]
        groups.append(phrase[i:j])
        j = i
    return groups[::-1]


def _wrap(texts: Sequence[str], max_chars: int, max_lines: int) -> tuple[str, ...] | None:
    """The words in the fewest lines of at most ``max_chars`` (up to ``max_lines``), balanced; None
    when they cannot fit.

    Among layouts with that many lines, the one with the least squared slack per line (even lines),
    where a break after a clause mark counts a little better and one after a word that leans on the
    next ("the", "to") a little worse. A line holding a single word may be wider than ``max_chars``:
    a word is never broken.
    """
    n = len(texts)
    widths = _Widths(texts)
    if n == 1 or widths.width(0, n) <= max_chars:
        return (join_words(texts),)

    # best[k][j]: (cost, start of the last line) over the first j words in k lines.
    best: list[dict[int, tuple[float, int]]] = [{0: (0.0, 0)}]
    for k in range(1, max_lines + 1):
        layer: dict[int, tuple[float, int]] = {}
        for i, (cost, _) in best[k - 1].items():
            for j in range(i + 1, n + 1):
                w = widths.width(i, j)
                if j > i + 1 and w > max_chars:
                    break
                cand = (
                    cost + float(max(0, max_chars - w) ** 2) + (_break_cost(texts[j - 1]) if j < n else 0.0)
                )
                if j not in layer or cand < layer[j][0]:
                    layer[j] = (cand, i)
        best.append(layer)
        if n in layer:
            lines = []
            j = n
            for level in range(k, 0, -1):
                i = best[level][j][1]
                lines.append(join_words(texts[i:j]))
                j = i
            return tuple(lines[::-1])
    return None


def _break_cost(word: str) -> float:
    """What breaking a line after ``word`` costs, in squared columns of slack (~ 8 columns of imbalance)."""
    if word[-1:] in CLAUSE_ENDS:
        return -_LINE_BREAK_NUDGE
    if word.lower() in _LEANING:
        return _LINE_BREAK_NUDGE
    return 0.0


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(line: str) -> str:
    # A newline or an arrow inside a line would end the cue or read as a timing line.
    return _CONTROL.sub(" ", line).replace("-->", "->").strip()


def _escape_vtt(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["Cue", "build_cues", "to_srt", "to_vtt", "words_between"]
