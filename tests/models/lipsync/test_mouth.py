from __future__ import annotations

import numpy as np
import pytest

from talkfactory.models.audio import ArrayAudio
from talkfactory.models.lipsync.mouth import (
    MouthConfig,
    MouthShape,
    MouthShaper,
    follow,
    gate_is_open,
    level_to_open,
    step_coefficient,
    target_shape,
)
from talkfactory.models.speech.features import SILENT, FeatureExtractor, FrameFeatures
from tests.fixtures.mouth import RATE, hiss, noise, vowel

FPS = 30.0


def _vowel_frame(level_dbfs: float = -18.0, **changes: float) -> FrameFeatures:
    """An open 'ah'-like frame at a given level."""
    base = FrameFeatures(level_dbfs, 0.95, 850.0, 750.0, 0.7, 0.28, 0.02, 0.0)
    return base._replace(**changes)


def _run(shaper: MouthShaper, frames: list[FrameFeatures]) -> list[MouthShape]:
    return [shaper.step(f) for f in frames]


def _features_of(samples: np.ndarray, fps: float = FPS) -> list[FrameFeatures]:
    extractor = FeatureExtractor(ArrayAudio(samples, RATE), fps)
    count = int(samples.size / RATE * fps)
    return [extractor.frame(i) for i in range(count)]


def test_silence_keeps_the_mouth_closed() -> None:
    shapes = _run(MouthShaper(FPS), [SILENT] * 60)
    assert max(s.open for s in shapes) == 0.0


def test_burst_opens_fast_and_closes_over_the_release() -> None:
    frames = [SILENT] * 10 + [_vowel_frame()] * 10 + [SILENT] * 20
    shapes = _run(MouthShaper(FPS), frames)
    opens = [s.open for s in shapes]
    assert max(opens[:10]) == 0.0
    # Attack: within two frames of the onset the mouth is most of the way open.
    assert opens[10] > 0.6 and opens[11] > 0.85
    # Release: not snapped shut on the first silent frame, but closed a few frames later.
    assert 0.3 < opens[20] < opens[19]
    assert opens[23] < 0.3 and opens[29] < 0.05
    assert all(b <= a for a, b in zip(opens[20:], opens[21:], strict=False))


def test_steady_sound_does_not_flicker() -> None:
    rng = np.random.default_rng(1)
    frames = [_vowel_frame(-18.0 + float(rng.normal(0, 1.0))) for _ in range(90)]
    opens = np.array([s.open for s in _run(MouthShaper(FPS), frames)])[10:]
    steps = np.diff(opens)
    assert np.abs(steps).max() < 0.06
    # Direction changes (the visible shimmer) are rare: a held level is held.
    moving = steps[np.abs(steps) > 1e-9]
    flips = int(np.sum(np.sign(moving[1:]) != np.sign(moving[:-1])))
    assert flips <= 6


def test_background_noise_gates_shut_once_the_floor_adapts() -> None:
    hum = noise(4.0, level=0.02)  # about -34 dBFS of steady noise, no speech
    opens = [s.open for s in _run(MouthShaper(FPS), _features_of(hum))]
    assert max(opens[-30:]) == 0.0
    # Open at most while the first floor window (1.5 s) fills, plus the release.
    assert sum(o > 0.05 for o in opens) < 55


def test_speech_over_noise_still_opens() -> None:
    hum = noise(4.0, level=0.01)
    speech = hum.copy()
    speech[3 * RATE : int(3.4 * RATE)] += vowel("a", 0.4, level=0.4)
    opens = [s.open for s in _run(MouthShaper(FPS), _features_of(speech))]
    assert max(opens[80:88]) == 0.0  # noise alone, floor adapted
    assert max(opens[92:100]) > 0.8


def test_quiet_speaker_opens_as_wide_as_a_loud_one() -> None:
    def peak(level: float) -> float:
        frames = ([SILENT] * 5 + [_vowel_frame(level)] * 8) * 3
        return max(s.open for s in _run(MouthShaper(FPS), frames)[-13:])

    assert peak(-36.0) == pytest.approx(peak(-14.0), abs=0.05)


def test_vowel_shapes() -> None:
    cfg = MouthConfig()
    a, i, u = (_features_of(vowel(v, 0.5))[7] for v in "aiu")
    shape_a, shape_i, shape_u = (target_shape(f, 1.0, cfg) for f in (a, i, u))
    assert shape_i.width > 0.5  # ee: spread
    assert shape_u.width < -0.5  # oo: rounded
    assert abs(shape_a.width) < 0.2
    assert shape_a.open > shape_i.open and shape_a.open > shape_u.open
    s = _features_of(hiss(0.5, level=0.2))[7]
    assert target_shape(s, 1.0, cfg).open <= 0.6


def test_level_to_open_is_monotone_and_bounded() -> None:
    cfg = MouthConfig()
    opens = [level_to_open(level, -70.0, -15.0, cfg) for level in range(-80, 0, 2)]
    assert opens[0] == 0.0 and opens[-1] == 1.0
    assert all(b >= a for a, b in zip(opens, opens[1:], strict=False))


def test_gate_hysteresis() -> None:
    cfg = MouthConfig()
    floor = -60.0
    threshold = floor + cfg.gate_db
    assert not gate_is_open(threshold - 1.0, floor, False, cfg)
    assert gate_is_open(threshold + 1.0, floor, False, cfg)
    assert gate_is_open(threshold - 1.0, floor, True, cfg)  # stays open inside the hysteresis
    assert not gate_is_open(threshold - cfg.gate_hysteresis_db - 1.0, floor, True, cfg)
    assert not gate_is_open(-59.0, -90.0, False, cfg)  # below the absolute minimum


def test_follower_helpers() -> None:
    assert step_coefficient(0.0, 0.04) == 1.0
    assert step_coefficient(0.1, 0.1) == pytest.approx(1 - np.exp(-1))
    assert follow(0.0, 1.0, 0.8, 0.1) == pytest.approx(0.8)
    assert follow(1.0, 0.0, 0.8, 0.1) == pytest.approx(0.9)


def test_reset_and_bad_fps() -> None:
    shaper = MouthShaper(FPS)
    _run(shaper, [_vowel_frame()] * 5)
    shaper.reset()
    assert shaper.step(SILENT).open == 0.0
    with pytest.raises(ValueError):
        MouthShaper(0.0)
