from __future__ import annotations

import pytest
from pyannote.core import Annotation, Segment, Timeline

from talkfactory.errors import ConfigurationError
from talkfactory.models.speech.clips import ClipRules, DropReason, Plan, plan_clips


def speech(*spans: tuple[float, float, str]) -> Annotation:
    ann = Annotation()
    for k, (s, e, who) in enumerate(spans):
        ann[Segment(s, e), k] = who
    return ann


def sentences(
    start: float, count: int, length: float, pause: float, who: str = "H"
) -> list[tuple[float, float, str]]:
    out, t = [], start
    for _ in range(count):
        out.append((t, t + length, who))
        t += length + pause
    return out


def assert_tiles(plan: Plan, duration: float) -> None:
    """Clips and dropped stretches cover [0, duration] exactly once."""
    pieces = sorted([(c.start, c.end) for c in plan.clips] + [(d.start, d.end) for d in plan.dropped])
    assert pieces[0][0] == pytest.approx(0.0, abs=1e-6)
    assert pieces[-1][1] == pytest.approx(duration, abs=1e-6)
    for (_, e1), (s2, _) in zip(pieces, pieces[1:], strict=False):
        assert s2 == pytest.approx(e1, abs=1e-6)


def assert_never_inside_speech(plan: Plan, ann: Annotation) -> None:
    for c in plan.clips:
        for seg in ann.get_timeline():
            assert not (seg.start < c.start < seg.end), (c, seg)
            assert not (seg.start < c.end < seg.end), (c, seg)


def test_one_run_within_bounds_is_one_padded_clip() -> None:
    ann = speech(*sentences(2.0, 4, 2.5, 0.5))  # 2.0 .. 13.5
    plan = plan_clips(ann, speakers=["H"], duration=16.0)
    assert len(plan.clips) == 1
    c = plan.clips[0]
    assert (c.start, c.end) == pytest.approx((1.9, 13.6))
    assert c.speech_seconds == pytest.approx(10.0)
    assert_tiles(plan, 16.0)
    assert {d.reason for d in plan.dropped} == {DropReason.SILENCE}


def test_long_run_is_cut_at_its_longest_pauses_inside_bounds() -> None:
    # 30 sentences of 3 s with 0.4 s pauses, and two long (1.2 s) pauses at sentence 10 and 20
    spans, t = [], 1.0
    for k in range(30):
        spans.append((t, t + 3.0, "H"))
        t += 3.0 + (1.2 if k in (9, 19) else 0.4)
    ann = speech(*spans)
    plan = plan_clips(ann, speakers=["H"], duration=t + 1, rules=ClipRules(min_clip=8, max_clip=40))
    assert len(plan.clips) == 3
    cuts = [c.end for c in plan.clips[:-1]]
    assert cuts[0] == pytest.approx(spans[9][1] + 0.1)
    assert cuts[1] == pytest.approx(spans[19][1] + 0.1)
    assert all(8 <= c.duration <= 40 for c in plan.clips)
    assert_never_inside_speech(plan, ann)
    assert_tiles(plan, t + 1)
    assert [d.reason for d in plan.dropped if d.start > 5 and d.end < t - 5] == [DropReason.PAUSE] * 2


def test_short_pauses_are_never_cut_points() -> None:
    # pauses of 0.2 s (inside a phrase) except one of 0.5 s
    spans, t = [], 0.5
    for k in range(20):
        spans.append((t, t + 2.0, "H"))
        t += 2.0 + (0.5 if k == 11 else 0.2)
    ann = speech(*spans)
    plan = plan_clips(
        ann, speakers=["H"], duration=t, rules=ClipRules(min_clip=8, max_clip=30, min_pause=0.3)
    )
    assert [round(c.end, 2) for c in plan.clips[:1]] == [round(spans[11][1] + 0.1, 2)]
    assert_never_inside_speech(plan, ann)


def test_speech_with_no_pause_to_cut_is_dropped_as_too_long() -> None:
    ann = speech(*sentences(0.0, 40, 2.0, 0.1))  # 83.9 s, no pause >= 0.3
    plan = plan_clips(ann, speakers=["H"], duration=90.0, rules=ClipRules(max_clip=60))
    assert plan.clips == []
    assert plan.dropped_seconds(DropReason.TOO_LONG) == pytest.approx(83.9)


def test_other_speaker_breaks_clips_and_is_labelled() -> None:
    spans = sentences(0.5, 4, 2.5, 0.5) + [(12.6, 16.0, "G")] + sentences(16.5, 4, 2.5, 0.5)
    ann = speech(*spans)
    plan = plan_clips(ann, speakers=["H"], duration=28.0)
    assert len(plan.clips) == 2
    guest = [d for d in plan.dropped if d.reason == DropReason.OTHER_SPEAKER]
    assert len(guest) == 1 and guest[0].speaker == "G"
    assert guest[0].start <= 12.6 and guest[0].end >= 16.0
    for c in plan.clips:
        assert c.end <= 12.6 or c.start >= 16.0
    assert_tiles(plan, 28.0)


def test_overlap_and_ambiguous_speech_are_excluded() -> None:
    spans = sentences(0.5, 8, 2.5, 0.5) + [(6.0, 7.0, "G")]  # the guest talks over sentence 3
    ann = speech(*spans)
    amb = Timeline([Segment(18.0, 19.0)])
    plan = plan_clips(ann, speakers=["H"], duration=25.0, ambiguous=amb, rules=ClipRules(min_clip=3))
    for c in plan.clips:
        assert c.end <= 6.0 or c.start >= 7.0
        assert c.end <= 18.0 or c.start >= 19.0
    overlaps = [d for d in plan.dropped if d.reason == DropReason.OVERLAP]
    assert any(d.start <= 6.0 and d.end >= 7.0 for d in overlaps)
    assert any(d.start <= 18.0 and d.end >= 19.0 for d in overlaps)
    assert_tiles(plan, 25.0)


def test_a_turn_without_a_pause_is_never_split_mid_speech() -> None:
    # voice activity sees one stretch 10-16 s; the diarizer says the guest takes over at 14 s
    spans = (
        sentences(0.5, 3, 2.5, 0.5) + [(10.0, 14.0, "H"), (14.0, 16.0, "G")] + sentences(16.5, 4, 2.5, 0.5)
    )
    ann = speech(*spans)
    voiced = ann.get_timeline().support()
    plan = plan_clips(ann, speakers=["H"], duration=28.0, voiced=voiced, rules=ClipRules(min_clip=5))
    for c in plan.clips:
        assert c.end <= 10.0 or c.start >= 16.0
    change = [d for d in plan.dropped if d.reason == DropReason.SPEAKER_CHANGE]
    assert len(change) == 1 and change[0].start <= 10.0 and change[0].end >= 16.0
    assert_never_inside_speech(plan, ann)
    both = plan_clips(ann, speakers=["H", "G"], duration=28.0, voiced=voiced, rules=ClipRules(min_clip=5))
    assert [d.reason for d in both.dropped if d.start <= 10.0 and d.end >= 16.0] == [
        DropReason.SPEAKER_CHANGE
    ]


def test_short_runs_are_dropped_as_too_short() -> None:
    ann = speech(*sentences(1.0, 2, 2.0, 0.5), *sentences(20.0, 5, 2.5, 0.5))
    plan = plan_clips(ann, speakers=["H"], duration=40.0)
    assert len(plan.clips) == 1 and plan.clips[0].start > 19
    short = [d for d in plan.dropped if d.reason == DropReason.TOO_SHORT]
    assert len(short) == 1 and short[0].start <= 1.0 and short[0].end >= 5.5


def test_silence_and_music_are_told_apart() -> None:
    ann = speech(*sentences(10.0, 4, 2.5, 0.5))
    quiet = Timeline([Segment(0.0, 3.0), Segment(22.0, 40.0)])
    plan = plan_clips(ann, speakers=["H"], duration=40.0, quiet=quiet)
    reasons = [(round(d.start, 1), d.reason) for d in plan.dropped]
    assert reasons[0] == (0.0, DropReason.MUSIC_OR_NOISE)  # 0-3 quiet, 3-10 loud: mostly not quiet
    assert reasons[-1][1] == DropReason.SILENCE


def test_all_speakers_mode_makes_clips_for_everyone() -> None:
    spans = sentences(0.5, 4, 2.5, 0.5, "H") + sentences(13.0, 4, 2.5, 0.5, "G")
    plan = plan_clips(speech(*spans), speakers=["H", "G"], duration=26.0)
    assert [c.speaker for c in plan.clips] == ["H", "G"]
    assert [c.index for c in plan.clips] == [0, 1]


def test_nothing_spoken_is_all_dropped() -> None:
    plan = plan_clips(Annotation(), speakers=[], duration=30.0, quiet=Timeline([Segment(0, 30)]))
    assert plan.clips == []
    assert [(d.start, d.end, d.reason) for d in plan.dropped] == [(0.0, 30.0, DropReason.SILENCE)]


def test_two_hours_of_turns_plan_quickly() -> None:
    import random
    import time

    rnd = random.Random(0)
    spans, t = [], 0.0
    while t < 7200:
        who = "H" if rnd.random() < 0.8 else rnd.choice(["G1", "G2"])
        length = rnd.uniform(0.5, 6.0)
        spans.append((t, t + length, who))
        t += length + rnd.uniform(0.15, 2.0) + (rnd.uniform(5, 30) if rnd.random() < 0.02 else 0.0)
    ann = speech(*spans)
    amb = Timeline([Segment(s + 0.1, s + 0.4) for s, _, _ in spans[::50]])
    quiet = Timeline([Segment(k * 60.0, k * 60.0 + 20.0) for k in range(120)])
    started = time.perf_counter()
    plan = plan_clips(ann, speakers=["H"], duration=t, ambiguous=amb, quiet=quiet)
    assert time.perf_counter() - started < 10.0
    assert len(plan.clips) > 50
    assert_tiles(plan, t)
    assert_never_inside_speech(plan, ann)


def test_impossible_rules_are_rejected() -> None:
    with pytest.raises(ConfigurationError):
        ClipRules(min_clip=10, max_clip=5)
    with pytest.raises(ConfigurationError):
        ClipRules(min_pause=0.0)
