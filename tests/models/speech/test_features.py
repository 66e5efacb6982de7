from __future__ import annotations

import numpy as np
import pytest

from talkfactory.models.audio import ArrayAudio
from talkfactory.models.speech.features import (
    SILENCE_DBFS,
    SILENT,
    FeatureExtractor,
    FrameFeatures,
    level_dbfs,
    speech_features,
)
from tests.fixtures.mouth import RATE, hiss, noise, vowel


def _steady(samples: np.ndarray, rate: int = RATE, fps: float = 25.0) -> FrameFeatures:
    """Features of a frame well inside a steady signal."""
    return FeatureExtractor(ArrayAudio(samples, rate), fps).frame(5)


class _SpyAudio(ArrayAudio):
    def __init__(self, samples: np.ndarray, rate: int) -> None:
        super().__init__(samples, rate)
        self.reads: list[tuple[int, int]] = []

    def read(self, start: int, stop: int) -> np.ndarray:
        self.reads.append((start, stop))
        return super().read(start, stop)


def test_silence() -> None:
    f = _steady(np.zeros(RATE, np.float32))
    assert f == SILENT
    assert f.rms_dbfs == SILENCE_DBFS
    assert level_dbfs(np.zeros(0, np.float32)) == SILENCE_DBFS


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
def test_tone_level_and_voicing(rate: int) -> None:
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    f = _steady(tone, rate)
    assert f.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.2)  # -9.03 dBFS
    assert f.voicing > 0.95
    assert f.low_ratio > 0.99
    assert f.centroid_hz == pytest.approx(220, abs=10)


def test_noise_is_unvoiced_and_bright() -> None:
    f = _steady(noise(1.0, level=0.1))
    assert f.rms_dbfs == pytest.approx(-20, abs=1.0)
    assert f.voicing < 0.4
    assert f.centroid_hz > 3000
    s = _steady(hiss(1.0))
    assert s.voicing < 0.4 and s.hiss_ratio > 0.8 and s.low_ratio < 0.01


def test_vowels_are_told_apart() -> None:
    a, i, u = (_steady(vowel(v, 1.0)) for v in "aiu")
    for f in (a, i, u):
        assert f.voicing > 0.9
    # First formant: open 'ah' far above close 'ee' and 'oo' (jaw opening).
    assert a.f1_hz > 600 and i.f1_hz < 400 and u.f1_hz < 400
    # Energy above 1 kHz: 'oo' keeps almost none, 'ah' plenty.
    assert u.mid_ratio + u.high_ratio < 0.01 < i.mid_ratio + i.high_ratio < a.mid_ratio + a.high_ratio
    # What is above 1 kHz sits above 2 kHz only for the front vowel 'ee'.
    front = [f.high_ratio / (f.mid_ratio + f.high_ratio) for f in (a, i, u)]
    assert front[1] > 0.7 > max(front[0], front[2])


def test_tone_bursts_track_in_time() -> None:
    fps = 25.0
    samples = np.zeros(2 * RATE, np.float32)
    t = np.arange(RATE // 5) / RATE
    burst = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    for start_s in (0.2, 1.0):  # bursts at 0.2-0.4 s and 1.0-1.2 s
        samples[int(start_s * RATE) : int(start_s * RATE) + burst.size] = burst
    feats = speech_features(ArrayAudio(samples, RATE), fps)
    assert len(feats) == 50
    loud = [i for i, f in enumerate(feats) if f.rms_dbfs > -30]
    # Frames 5 and 10 (t = 0.2 s, 0.4 s) sit on the burst edges: half their window is tone.
    assert loud == [5, 6, 7, 8, 9, 10, 25, 26, 27, 28, 29, 30]
    assert feats[5].rms_dbfs < feats[7].rms_dbfs - 2.0
    assert all(feats[i].rms_dbfs == SILENCE_DBFS for i in (0, 15, 40))


def test_streams_only_the_window_around_each_frame() -> None:
    audio = _SpyAudio(noise(3.0), RATE)
    extractor = FeatureExtractor(audio, 30.0, window_s=0.04)
    for i in (0, 45, 89):
        extractor.frame(i)
    n = extractor.window_len
    assert n == 640
    for (start, stop), i in zip(audio.reads, (0, 45, 89), strict=True):
        assert stop - start == n
        centre = (start + stop) / 2
        assert abs(centre - i / 30.0 * RATE) <= 1


def test_lead_shifts_the_window() -> None:
    audio = _SpyAudio(noise(1.0), RATE)
    FeatureExtractor(audio, 25.0, lead_s=0.05).frame(10)
    start, stop = audio.reads[0]
    assert abs((start + stop) / 2 - (0.4 + 0.05) * RATE) <= 1


def test_iteration_covers_the_audio() -> None:
    audio = ArrayAudio(noise(1.0), RATE)
    assert len(list(FeatureExtractor(audio, 25.0))) == 25
    with pytest.raises(ValueError):
        FeatureExtractor(audio, 0.0)
