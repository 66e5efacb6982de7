"""Splitting a clip to a channel's length limit: cuts only in pauses, parts within the limits."""

from __future__ import annotations

import math
import random
import time

import pytest

from talkfactory.models.speech.asr import Word
from talkfactory.pipeline.exports.captions import words_between
from talkfactory.pipeline.exports.split import MIN_PAUSE_S, Part, plan_parts


def talk(spans: list[tuple[float, float]], *, word_s: float = 0.28, gap_s: float = 0.06) -> list[Word]:
    """Words filling each speech span back to back, ``gap_s`` apart (too short a gap to cut in)."""
    words = []
    for a, b in spans:
        t = a
        while t + word_s <= b + 1e-9:
            words.append(Word(round(t, 3), round(t + word_s, 3), f"w{len(words)}"))
            t += word_s + gap_s
    return words


def four_minutes(seed: int = 7) -> list[Word]:
    """240 s of sentences 3-12 s long with pauses of 0.3-1.2 s between them."""
    rng = random.Random(seed)
    spans, t = [], 0.8
    while True:
        length = rng.uniform(3.0, 12.0)
        if t + length > 239.0:
            break
        spans.append((t, t + length))
        t += length + rng.uniform(0.3, 1.2)
    return talk(spans)


def assert_cut_in_pauses(parts: tuple[Part, ...], words: list[Word]) -> None:
    for part in parts[1:]:
        cut = part.start_s
        assert all(not (w.start < cut < w.end) for w in words), f"cut at {cut} splits a word"
        before = max(w.end for w in words if w.end <= cut)
        after = min(w.start for w in words if w.start >= cut)
        assert after - before >= MIN_PAUSE_S - 1e-6 and before < cut < after


def test_a_four_minute_clip_for_shorts_is_cut_at_pauses_into_parts_that_fit() -> None:
    words = four_minutes()
    plan = plan_parts(240.0, 180.0, words, channel="youtube-shorts")
    assert plan.skipped_reason is None and plan.split
    parts = plan.parts
    assert [p.number for p in parts] == list(range(1, len(parts) + 1)) and len(parts) == 2
    assert parts[0].start_s == 0.0 and parts[-1].end_s == 240.0
    assert all(a.end_s == b.start_s for a, b in zip(parts, parts[1:], strict=False))
    assert all(0 < p.duration_s <= 180.0 for p in parts)
    # The first cut lands in the last third of the window: parts are long, not chopped early.
    assert parts[0].duration_s >= 120.0
    assert_cut_in_pauses(parts, words)
    # Every word goes to exactly one part, whole.
    shared = [w.text for p in parts for w in words_between(words, p.start_s, p.end_s)]
    assert shared == [w.text for w in words]


def test_the_widest_pause_in_the_last_third_is_preferred() -> None:
    # Short pauses every ~10 s, one 2 s pause at 140 s: the cut goes in its middle.
    spans = [(t, t + 9.5) for t in range(0, 140, 10)] + [(142.0, 150.0)]
    spans += [(t + 0.5, t + 10.0) for t in range(150, 230, 10)]
    words = talk(spans)
    plan = plan_parts(230.0, 180.0, words)
    gap_before = max(w.end for w in words if w.end <= 141.0)
    gap_after = min(w.start for w in words if w.start >= 141.0)
    assert plan.parts[1].start_s == pytest.approx((gap_before + gap_after) / 2, abs=1e-3)
    assert_cut_in_pauses(plan.parts, words)


def test_a_wide_pause_that_would_cost_an_extra_part_is_not_taken() -> None:
    # Wide pause at 70 s, narrow one at 95 s, then speech without a pause until 190 s: cutting at the
    # wide pause would need three parts (70 s, 25 s, 96 s); the narrow one gives two.
    words = talk([(0.0, 69.0), (71.0, 95.0), (95.4, 190.0)])
    plan = plan_parts(191.0, 100.0, words)
    assert plan.skipped_reason is None
    assert [round(p.start_s) for p in plan.parts] == [0, 95]
    assert all(p.duration_s <= 100.0 for p in plan.parts)


def test_continuous_speech_longer_than_the_limit_is_skipped_with_the_reason() -> None:
    words = talk([(0.5, 213.0)])
    run = words[-1].end - words[0].start
    assert run == pytest.approx(212.4, abs=0.05)
    plan = plan_parts(213.5, 180.0, words, channel="youtube-shorts")
    assert plan.parts == () and plan.skipped
    assert plan.skipped_reason is not None
    assert "speech runs 212.4 s without a pause long enough to cut" in plan.skipped_reason
    assert plan.skipped_reason.endswith("youtube-shorts allows 180 s")


def test_a_clip_that_fits_or_has_no_limit_is_one_part() -> None:
    words = talk([(0.0, 50.0)])
    for limit in (None, 180.0, 60.0):
        plan = plan_parts(60.0, limit, words)
        assert plan.parts == (Part(1, 0.0, 60.0),) and plan.skipped_reason is None and not plan.split
    assert plan.parts[0].duration_s == 60.0


def test_minimum_part_length_is_honoured_or_the_clip_skipped() -> None:
    # 185 s with pauses every ~5 s: the cut must leave at least 30 s for the last part.
    words = talk([(t, t + 4.5) for t in range(0, 185, 5)])
    plan = plan_parts(185.0, 180.0, words, min_s=30.0)
    assert plan.split and all(30.0 <= p.duration_s <= 180.0 for p in plan.parts)
    short = plan_parts(2.0, 180.0, talk([(0.0, 1.5)]), min_s=3.0, channel="x")
    assert short.skipped and short.skipped_reason == "clip runs 2.0 s; x needs at least 3 s"
    # Speech with a single pause in the middle of a 200 s clip cannot give two parts of >= 120 s.
    impossible = plan_parts(200.0, 180.0, talk([(0.0, 99.0), (101.0, 200.0)]), min_s=120.0)
    assert impossible.skipped and "120" in (impossible.skipped_reason or "")


def test_words_out_of_order_or_overlapping_still_cut_in_a_real_pause() -> None:
    words = talk([(0.0, 100.0), (102.0, 150.0)])
    words.append(Word(10.0, 99.0, "long"))  # a word inside another's timing, as Whisper can give
    random.Random(1).shuffle(words)
    plan = plan_parts(150.0, 120.0, words)
    assert len(plan.parts) == 2 and 100.0 < plan.parts[1].start_s < 102.0


def test_an_hour_with_thousands_of_pauses_plans_quickly() -> None:
    rng = random.Random(3)
    spans, t = [], 0.0
    while t < 3600.0:
        length = rng.uniform(0.8, 3.0)
        spans.append((t, t + length))
        t += length + rng.uniform(0.3, 0.6)
    words = talk(spans)
    started = time.perf_counter()
    plan = plan_parts(t, 60.0, words)
    took = time.perf_counter() - started
    assert len(plan.parts) == math.ceil(t / 60.0) or len(plan.parts) == math.ceil(t / 60.0) + 1
    assert all(p.duration_s <= 60.0 for p in plan.parts)
    assert took < 2.0, f"planning took {took:.2f} s"


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_parts(10.0, 0.0, [])
    with pytest.raises(ValueError):
        plan_parts(-1.0, 10.0, [])
