"""Caption cues from word timings and their SRT / WebVTT text."""

from __future__ import annotations

import re

import pytest

from talkfactory.models.speech.asr import Word, display_width, join_words
from talkfactory.pipeline.exports.captions import Cue, build_cues, to_srt, to_vtt, words_between

TEXT = (
    "Welcome back to the stream, everybody. Today we are looking at how to clean up noisy recordings "
    "from a cheap headset, a laptop microphone and a phone that was left on the desk during the whole "
    "session without anybody noticing it. The first thing to check is the microphone gain. Right? "
    "If the gain is too high every breath turns into a roar and the compressor pumps so hard that the "
    "music bed drowns out the voice of the host at the end of every single sentence she says "
    "and nobody at home can follow the argument anymore. Okay. Let me show you what the waveform looks "
    "like right now, because this is where it gets interesting for the people editing the clips later."
)


def timed(
    text: str, *, word_s: float = 0.32, gap_s: float = 0.05, sentence_pause_s: float = 0.5
) -> list[Word]:
    """Words of ``text`` spoken at a steady pace, with a pause after each sentence."""
    words, t = [], 0.4
    for token in text.split():
        words.append(Word(round(t, 3), round(t + word_s, 3), token))
        t += word_s + (sentence_pause_s if token[-1] in ".?!" else gap_s)
    return words


def assert_readable(cues: list[Cue], *, max_chars: int = 42, max_lines: int = 2, max_s: float = 7.0) -> None:
    assert cues
    for cue in cues:
        assert 1 <= len(cue.lines) <= max_lines, cue
        assert all(0 < display_width(line) <= max_chars for line in cue.lines), cue
        assert 0 < cue.end - cue.start <= max_s + 1e-9, cue
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.start < b.start and a.end <= b.start, (a, b)


def test_cues_of_a_long_transcript_obey_the_phone_limits_and_keep_every_word() -> None:
    words = timed(TEXT)
    cues = build_cues(words)
    assert_readable(cues)
    assert " ".join(" ".join(c.lines) for c in cues) == TEXT
    # A cue starts with the first word's start and never outlives its last word by more than the
    # short-cue linger.
    starts = {w.start for w in words}
    assert all(c.start in starts for c in cues)
    # No line ends on a word that leans on the next one, where a nearby break avoids it.
    assert not [line for c in cues for line in c.lines if line.split()[-1] in {"a", "the", "to", "of", "and"}]


def test_a_sentence_end_always_ends_a_cue() -> None:
    cues = build_cues(timed(TEXT))
    for cue in cues:
        inner = " ".join(cue.lines).split()[:-1]
        assert not any(w[-1] in ".?!" for w in inner), cue
    assert ("Right?",) in [c.lines for c in cues] and ("Okay.",) in [c.lines for c in cues]


def test_a_long_pause_ends_a_cue_even_without_punctuation() -> None:
    words = [Word(0.0, 0.3, "so"), Word(0.35, 0.6, "anyway"), Word(2.0, 2.3, "where"), Word(2.35, 2.6, "was")]
    assert [c.lines for c in build_cues(words)] == [("so anyway",), ("where was",)]


def test_cues_and_lines_are_balanced_not_greedy() -> None:
    # 23 words, ~118 characters: two cues of about even width, each of two even lines.
    sentence = (
        "the compressor pumps so hard that the music bed drowns out the voice of the host at the end of "
        "every single sentence she says."
    )
    cues = build_cues(timed(sentence, word_s=0.2, gap_s=0.02))
    assert len(cues) == 2
    widths = [display_width(" ".join(c.lines)) for c in cues]
    assert abs(widths[0] - widths[1]) <= 12, widths
    for cue in cues:
        if len(cue.lines) == 2:
            assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 12, cue.lines


def test_slow_speech_is_cut_at_seven_seconds() -> None:
    words = timed("one two three four five six seven eight nine ten eleven twelve", word_s=0.9, gap_s=0.3)
    cues = build_cues(words)
    assert len(cues) >= 2
    assert_readable(cues)


def test_a_word_wider_than_a_line_gets_its_own_line_unbroken() -> None:
    long = "https://example.com/a/very/long/path/that/nobody/should/read/aloud"
    cues = build_cues(timed(f"see {long} for more"))
    assert long in [line for c in cues for line in c.lines]
    assert all(display_width(line) <= 42 for c in cues for line in c.lines if line != long)


def test_chinese_lines_count_full_width_columns_and_join_without_spaces() -> None:
    # 60 two-character words (120 columns) with no punctuation: lines of at most 21 characters.
    hanzi = ["大家", "好啊", "今天", "我们", "来看", "一下"] * 10
    words = [Word(round(0.25 * i, 3), round(0.25 * i + 0.2, 3), w) for i, w in enumerate(hanzi)]
    cues = build_cues(words)
    assert_readable(cues)
    assert all(" " not in line for c in cues for line in c.lines)
    assert "".join("".join(c.lines) for c in cues) == "".join(hanzi)
    assert join_words(["你好", "world", "again", "。"]) == "你好world again。"
    assert join_words(["안녕하세요", "여러분"]) == "안녕하세요 여러분"  # Korean spaces its words
    assert join_words(["Hello", ",", "it", "'s", "me"]) == "Hello, it's me"


def test_a_short_cue_lingers_but_never_past_the_next_one() -> None:
    words = [Word(1.0, 1.2, "Hi."), Word(1.5, 1.9, "Welcome."), Word(5.0, 5.2, "Yes.")]
    cues = build_cues(words)
    assert [(c.start, c.end) for c in cues] == [(1.0, 1.5), (1.5, 2.3), (5.0, 5.8)]


def test_a_word_longer_than_the_cue_limit_is_clamped() -> None:
    cues = build_cues([Word(0.0, 12.0, "Hmmmm."), Word(12.5, 12.9, "Right.")])
    assert [(c.start, c.end) for c in cues] == [(0.0, 7.0), (12.5, 13.3)]


def test_words_between_takes_a_parts_words_in_its_own_time() -> None:
    words = [Word(1.0, 1.5, "a"), Word(9.8, 10.4, "b"), Word(10.6, 11.0, "c"), Word(19.9, 20.3, "d")]
    assert words_between(words, 10.0, 20.0) == [Word(0.0, 0.4, "b"), Word(0.6, 1.0, "c")]
    assert words_between(words, 0.0, 10.0) == [Word(1.0, 1.5, "a")]
    assert words_between(words, 20.0, 30.0) == [Word(0.0, 0.3, "d")]


def test_srt_text() -> None:
    cues = [
        Cue(0.5, 2.25, ("Welcome back,", "everybody.")),
        Cue(3723.0456, 3725.9999, ("One hour -->", "later & <on>")),
    ]
    assert to_srt(cues) == (
        "1\n00:00:00,500 --> 00:00:02,250\nWelcome back,\neverybody.\n\n"
        "2\n01:02:03,046 --> 01:02:06,000\nOne hour ->\nlater & <on>\n"
    )


def test_vtt_text() -> None:
    cues = [Cue(0.5, 2.25, ("Welcome back,", "everybody.")), Cue(3723.0456, 3725.9999, ("a < b & c",))]
    vtt = to_vtt(cues)
    assert vtt == (
        "WEBVTT\n\n"
        "00:00:00.500 --> 00:00:02.250\nWelcome back,\neverybody.\n\n"
        "01:02:03.046 --> 01:02:06.000\na &lt; b &amp; c\n"
    )
    vtt.encode("utf-8")
    assert to_vtt([]) == "WEBVTT\n" and to_srt([]) == ""


def test_formats_of_real_cues_parse_back() -> None:
    cues = build_cues(timed(TEXT))
    srt, vtt = to_srt(cues), to_vtt(cues)
    stamp = r"(\d\d):(\d\d):(\d\d)[,.](\d{3})"
    srt_times = re.findall(rf"^{stamp} --> {stamp}$", srt, flags=re.M)
    vtt_times = re.findall(rf"^{stamp} --> {stamp}$", vtt, flags=re.M)
    assert len(srt_times) == len(vtt_times) == len(cues)
    for (h, m, s, ms, *_), cue in zip(srt_times, cues, strict=True):
        assert int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 == pytest.approx(cue.start, abs=5e-4)
    blocks = srt.strip().split("\n\n")
    assert [int(b.split("\n")[0]) for b in blocks] == list(range(1, len(cues) + 1))


def test_impossible_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        build_cues([Word(0, 1, "a")], max_chars=0)
