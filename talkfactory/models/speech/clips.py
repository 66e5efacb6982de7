"""Planning clips from who-spoke-when: pure logic, no audio.

A clip holds one speaker's speech only and is cut only inside pauses at least ``min_pause`` long, so a
cut never falls inside a word: voice-activity segments (speech between pauses) go into a clip whole
or not at all. A pause longer than ``max_pause``, another speaker or an overlapped / ambiguous
stretch ends a clip. Each stretch of a speaker's speech between such breaks (a "run") is
split at its pauses by dynamic programming: first keep as much speech as possible inside the length
bounds, then prefer few cuts at long pauses (a cut costs ``1 / pause``). Everything of the recording
that no clip covers comes back as a ``Dropped`` stretch with a reason, so clips and dropped stretches
tile the whole recording.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pyannote.core import Annotation, Segment, Timeline

from talkfactory.errors import ConfigurationError


class DropReason(StrEnum):
    """Why a stretch of the recording is in no clip."""

    SILENCE = "silence"  # nobody speaks and it is quiet
    MUSIC_OR_NOISE = "music_or_noise"  # nobody speaks but there is sound
    OTHER_SPEAKER = "other_speaker"  # speech of someone who is not a clip speaker
    OVERLAP = "overlap"  # overlapped or ambiguous speech
    SPEAKER_CHANGE = "speaker_change"  # two speakers with no pause between them to cut at
    TOO_SHORT = "too_short"  # speech between breaks shorter than the minimum clip
    TOO_LONG = "too_long"  # speech longer than the maximum clip with no pause to cut at
    PAUSE = "pause"  # the pause a cut between two clips fell in


@dataclass(frozen=True)
class ClipRules:
    """Length and pause rules for clips, in seconds."""

    min_clip: float = 8.0
    max_clip: float = 60.0
    min_pause: float = 0.3
    max_pause: float = 3.0
    edge_pad: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.min_clip <= self.max_clip:
            raise ConfigurationError(f"need 0 < min_clip ({self.min_clip}) <= max_clip ({self.max_clip})")
        if not 0 < self.min_pause <= self.max_pause:
            raise ConfigurationError(f"need 0 < min_pause ({self.min_pause}) <= max_pause ({self.max_pause})")
        if self.edge_pad < 0:
            raise ConfigurationError("edge_pad must not be negative")


@dataclass(frozen=True)
class ClipPlan:
    """A clip to cut: ``[start, end)`` in source seconds, one speaker, and how much of it is speech."""

    start: float
    end: float
    speaker: str
    speech_seconds: float
    index: int = 0

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def segment(self) -> Segment:
        return Segment(self.start, self.end)


@dataclass(frozen=True)
class Dropped:
    """A stretch of the source in no clip, and why."""

    start: float
    end: float
    reason: DropReason
    speaker: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Plan:
    clips: list[ClipPlan]
    dropped: list[Dropped]

    def dropped_seconds(self, reason: DropReason) -> float:
        return sum(d.duration for d in self.dropped if d.reason == reason)


Span = tuple[float, float]


def _spans(timeline: Timeline) -> list[Span]:
    return [(float(s.start), float(s.end)) for s in timeline.support()]


def _union(spans: list[Span]) -> list[Span]:
    """Sorted, disjoint spans covering the same time as ``spans``."""
    out: list[Span] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        elif e > s:
            out.append((s, e))
    return out


class _Index:
    """Sorted, disjoint spans with logarithmic look-up of the ones meeting an interval."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = _union(spans)
        self.ends = [e for _, e in self.spans]

    def meeting(self, a: float, b: float) -> list[Span]:
        out = []
        for k in range(bisect.bisect_right(self.ends, a), len(self.spans)):
            s, e = self.spans[k]
            if s >= b:
                break
            out.append((s, e))
        return out

    def cover(self, a: float, b: float) -> float:
        """Seconds of ``[a, b)`` the spans cover."""
        return sum(min(b, e) - max(a, s) for s, e in self.meeting(a, b))

    def blocks(self, a: float, b: float) -> bool:
        return bool(self.meeting(a, b))

    def subtract(self, spans: list[Span]) -> list[Span]:
        """``spans`` with the indexed spans cut out."""
        out: list[Span] = []
        for s, e in spans:
            start = s
            for hs, he in self.meeting(s, e):
                if hs - start > 1e-6:
                    out.append((start, hs))
                start = max(start, he)
            if e - start > 1e-6:
                out.append((start, e))
        return out


def _runs(segments: list[Span], breaks: _Index, max_pause: float) -> list[list[Span]]:
    runs: list[list[Span]] = []
    for seg in segments:
        if runs and seg[0] - runs[-1][-1][1] <= max_pause and not breaks.blocks(runs[-1][-1][1], seg[0]):
            runs[-1].append(seg)
        else:
            runs.append([seg])
    return runs


def _split_run(run: list[Span], rules: ClipRules) -> list[tuple[Span, float, bool]]:
    """Pieces of a run as ``((start, end), speech seconds, in bounds)``, cut by dynamic programming."""
    # phrases: maximal groups of segments whose inner pauses are too short to cut in
    phrases: list[list[Span]] = [[run[0]]]
    for seg in run[1:]:
        if seg[0] - phrases[-1][-1][1] >= rules.min_pause:
            phrases.append([seg])
        else:
            phrases[-1].append(seg)
    starts = [p[0][0] for p in phrases]
    ends = [p[-1][1] for p in phrases]
    speech = [sum(e - s for s, e in p) for p in phrases]
    n = len(phrases)
    best = [math.inf] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 0.0
    for i in range(n):
        if best[i] == math.inf:
            continue
        cut = 0.0 if i == 0 else 1.0 / max(starts[i] - ends[i - 1], 1e-3)
        for j in range(i + 1, n + 1):
            length = ends[j - 1] - starts[i]
            if j > i + 1 and length > rules.max_clip:
                break
            ok = rules.min_clip <= length <= rules.max_clip
            # dropped speech dominates every cut cost
            cost = best[i] + cut + (0.0 if ok else 1000.0 * (1.0 + sum(speech[i:j])))
            if cost < best[j]:
                best[j], back[j] = cost, i
    pieces: list[tuple[Span, float, bool]] = []
    j = n
    while j > 0:
        i = back[j]
        length = ends[j - 1] - starts[i]
        pieces.append(
            ((starts[i], ends[j - 1]), sum(speech[i:j]), rules.min_clip <= length <= rules.max_clip)
        )
        j = i
    return pieces[::-1]


def plan_clips(
    speech: Annotation,
    *,
    speakers: Sequence[str],
    duration: float,
    voiced: Timeline | None = None,
    ambiguous: Timeline | None = None,
    quiet: Timeline | None = None,
    rules: ClipRules = ClipRules(),
) -> Plan:
    """Clips of ``speakers``' speech and the reasons for everything else in ``[0, duration]``.

    ``speech`` labels every speaker's speech (overlaps allowed). ``voiced`` is the voice-activity
    timeline, whose segments are speech between pauses (default: the union of ``speech``); a segment
    is a unit that goes whole into a clip or not at all, so a clip never starts or ends inside
    speech. A unit belongs to a speaker when no one else (beyond ``tolerance``) speaks in it;
    units with overlapped or ``ambiguous`` speech, or with a change of speaker and no pause to cut
    at, are dropped. ``quiet`` (optional) marks near-silent audio, to tell silence from music or
    noise among the stretches nobody speaks in.
    """
    amb = _spans(ambiguous) if ambiguous is not None else []
    amb_index = _Index(amb)
    by_label = {str(label): _Index(_spans(speech.label_timeline(label))) for label in speech.labels()}
    simultaneous = _Index(_spans(speech.get_overlap()) if len(speech) else [])
    units = _spans(voiced) if voiced is not None else _spans(speech.get_timeline())
    chosen = [str(s) for s in speakers]
    owned: dict[str, list[Span]] = {s: [] for s in chosen}
    dropped: list[tuple[Span, DropReason, str | None]] = []
    for a, b in units:
        tol = 0.1 + 0.05 * (b - a)
        cover = {label: index.cover(a, b) for label, index in by_label.items()}
        heard = {label: c for label, c in cover.items() if c > 0}
        owner = max(heard, key=lambda k: heard[k]) if heard else None
        others = sum(c for label, c in heard.items() if label != owner)
        if owner is None or amb_index.cover(a, b) + simultaneous.cover(a, b) > tol:
            dropped.append(((a, b), DropReason.OVERLAP, None))
        elif others > tol:
            outsider = max((k for k in heard if k not in chosen), key=lambda k: heard[k], default=None)
            if outsider is not None and owner not in chosen:
                dropped.append(((a, b), DropReason.OTHER_SPEAKER, owner))
            else:
                dropped.append(((a, b), DropReason.SPEAKER_CHANGE, None))
        elif owner in owned:
            owned[owner].append((a, b))
        else:
            dropped.append(((a, b), DropReason.OTHER_SPEAKER, owner))
    dropped.extend((span, DropReason.OVERLAP, None) for span in amb)
    clips: list[ClipPlan] = []
    for speaker in chosen:
        own = owned[speaker]
        mine = set(own)
        breaks = _Index([span for span in units if span not in mine] + amb)
        for run in _runs(own, breaks, rules.max_pause):
            for span, spoken, ok in _split_run(run, rules):
                if ok:
                    clips.append(ClipPlan(span[0], span[1], speaker, spoken))
                else:
                    too_long = span[1] - span[0] > rules.max_clip
                    dropped.append((span, DropReason.TOO_LONG if too_long else DropReason.TOO_SHORT, speaker))
    clips.sort(key=lambda c: c.start)
    return _finish(clips, dropped, duration, quiet, rules)


def _finish(
    clips: list[ClipPlan],
    dropped: list[tuple[Span, DropReason, str | None]],
    duration: float,
    quiet: Timeline | None,
    rules: ClipRules,
) -> Plan:
    # dropped speech never reaches into a clip (an overlap can touch a clip's edge)
    clip_index = _Index([(c.start, c.end) for c in clips])
    pieces: list[tuple[Span, DropReason, str | None]] = []
    for reason in DropReason:
        for speaker in sorted({d[2] or "" for d in dropped if d[1] == reason}):
            spans = [d[0] for d in dropped if d[1] == reason and (d[2] or "") == speaker]
            for span in clip_index.subtract(_union(spans)):
                pieces.append((span, reason, speaker or None))
    # earlier reasons win where dropped stretches overlap (overlap before other_speaker, etc.)
    priority = [
        DropReason.OVERLAP,
        DropReason.SPEAKER_CHANGE,
        DropReason.OTHER_SPEAKER,
        DropReason.TOO_LONG,
        DropReason.TOO_SHORT,
    ]
    taken: list[Span] = []
    claimed: list[tuple[Span, DropReason, str | None]] = []
    for reason in priority:
        mine = [p for p in pieces if p[1] == reason]
        earlier = _Index(taken)
        for span, _, owner in mine:
            for part in earlier.subtract([span]):
                claimed.append((part, reason, owner))
        taken.extend(span for span, _, _ in mine)
    # pad clips into the silence around them: at most half the pause to the next audio we keep or drop
    occupied = _union([span for span, _, _ in claimed])
    starts = [s for s, _ in occupied]
    ends = [e for _, e in occupied]
    padded: list[ClipPlan] = []
    for n, c in enumerate(clips):
        k = bisect.bisect_right(ends, c.start + 1e-9)
        before = ([ends[k - 1]] if k else []) + ([padded[-1].end] if padded else [])
        k = bisect.bisect_left(starts, c.end - 1e-9)
        after = ([starts[k]] if k < len(starts) else []) + (
            [clips[n + 1].start] if n + 1 < len(clips) else []
        )
        room_lo = (c.start - max(before)) / 2 if before else c.start
        room_hi = (min(after) - c.end) / 2 if after else duration - c.end
        start = c.start - min(rules.edge_pad, max(0.0, room_lo))
        end = c.end + min(rules.edge_pad, max(0.0, room_hi))
        padded.append(ClipPlan(start, end, c.speaker, c.speech_seconds, n))
    # the rest of [0, duration] has no speech: silence, music/noise, or a pause
    covered = _Index([(c.start, c.end) for c in padded] + occupied)
    gaps = covered.subtract([(0.0, duration)]) if duration > 0 else []
    quiet_index = _Index(_spans(quiet) if quiet is not None else [])
    clip_ends = {round(c.end, 6) for c in padded}
    clip_starts = {round(c.start, 6) for c in padded}
    entries: list[tuple[Span, DropReason, str | None]] = list(claimed)
    for gs, ge in gaps:
        inside_clips = round(gs, 6) in clip_ends and round(ge, 6) in clip_starts
        if inside_clips and ge - gs <= rules.max_pause:
            entries.append(((gs, ge), DropReason.PAUSE, None))
            continue
        quiet_part = quiet_index.cover(gs, ge)
        reason = (
            DropReason.SILENCE
            if quiet is None or quiet_part >= 0.5 * (ge - gs)
            else DropReason.MUSIC_OR_NOISE
        )
        entries.append(((gs, ge), reason, None))
    entries.sort(key=lambda d: d[0])
    return Plan(padded, _absorb_short(entries, padded, rules))


def _absorb_short(
    entries: list[tuple[Span, DropReason, str | None]], clips: list[ClipPlan], rules: ClipRules
) -> list[Dropped]:
    """Fold short gaps without speech into the dropped speech beside them, merge touching equal entries."""
    silent = (DropReason.SILENCE, DropReason.MUSIC_OR_NOISE)
    items = [Dropped(s, e, reason, speaker) for (s, e), reason, speaker in entries]

    def touching(a: Dropped, b: Dropped) -> bool:
        return abs(a.end - b.start) < 1e-6

    for k, d in enumerate(items):
        if d.reason not in silent or d.duration >= rules.max_pause:
            continue
        prev = items[k - 1] if k > 0 else None
        nxt = items[k + 1] if k + 1 < len(items) else None
        if prev is not None and prev.reason not in silent and touching(prev, d):
            items[k] = Dropped(d.start, d.end, prev.reason, prev.speaker)
        elif nxt is not None and nxt.reason not in silent and touching(d, nxt):
            items[k] = Dropped(d.start, d.end, nxt.reason, nxt.speaker)
    out: list[Dropped] = []
    for d in items:
        if out and (out[-1].reason, out[-1].speaker) == (d.reason, d.speaker) and touching(out[-1], d):
            out[-1] = Dropped(out[-1].start, d.end, d.reason, d.speaker)
        else:
            out.append(d)
    return out


__all__ = ["ClipPlan", "ClipRules", "DropReason", "Dropped", "Plan", "plan_clips"]
