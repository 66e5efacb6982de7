"""Speech features to mouth shapes: a gate against the noise floor, level to opening, smoothing.

All weightless: the level relative to the speaker's recent peak drives the opening; a slow
noise-floor tracker gates background noise shut; the spectrum's balance nudges the shape
(rounded "oo"/"w" narrows and opens less, bright "ee" widens, hiss barely opens). An
attack/release follower makes the mouth open fast and close more slowly, without flicker.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from talkfactory.models.speech.features import FrameFeatures


@dataclass(frozen=True)
class MouthShape:
    """How the mouth should look in one frame."""

    open: float = 0.0
    """0 closed (the template's rest pose) .. 1 widest speech opening."""
    width: float = 0.0
    """-1 rounded (oo, w) .. 0 neutral .. 1 wide (ee)."""


CLOSED = MouthShape()


@dataclass(frozen=True)
class MouthConfig:
    """Tuning of the features-to-shape mapping; defaults suit conversational speech at 25-60 fps."""

    gate_db: float = 9.0
    """Level above the noise floor at which the gate opens."""
    gate_hysteresis_db: float = 3.0
    """The gate closes this far below its opening level, so a level near the threshold cannot flicker it."""
    min_speech_dbfs: float = -58.0
    """Nothing quieter than this is speech, whatever the floor."""
    range_db: float = 24.0
    """Levels this far below the recent peak give a closed mouth; the peak gives a fully open one."""
    curve: float = 0.8
    """Exponent on the normalised level (below 1 opens more for mid levels)."""
    floor_window_s: float = 1.5
    """The noise floor is the quietest unvoiced frame of this long a past (minimum statistics): speech
    dips between syllables reach it every few hundred ms, steady noise sits on it. Voiced frames
    never raise it, so a held vowel keeps the mouth open."""
    floor_max_voicing: float = 0.6
    """Frames more periodic than this are taken for voice, not background, by the floor tracker."""
    peak_decay_db_per_s: float = 4.0
    """How fast the loudness reference forgets a loud moment (it rises at once)."""
    attack_s: float = 0.015
    release_s: float = 0.09
    width_s: float = 0.07
    deadband: float = 0.05
    """The opening holds while its target stays this close: kills shimmer on steady sound."""
    max_open: float = 1.0
    close_vowel_cut: float = 0.35
    """Share of the opening taken away for a close vowel (ee, oo: low first formant) against an open one."""
    round_open_cut: float = 0.2
    """Further share taken away for a fully rounded vowel (oo, w): the lips purse."""
    hiss_max_open: float = 0.3
    """Cap on the opening for unvoiced, hissy sound (s, sh, f)."""


def gate_is_open(level_dbfs: float, floor_dbfs: float, was_open: bool, config: MouthConfig) -> bool:
    """The speech gate with hysteresis: opens ``gate_db`` over the floor, closes a few dB lower."""
    threshold = max(floor_dbfs + config.gate_db, config.min_speech_dbfs)
    if was_open:
        threshold -= config.gate_hysteresis_db
    return level_dbfs > threshold


def level_to_open(level_dbfs: float, floor_dbfs: float, peak_dbfs: float, config: MouthConfig) -> float:
    """Opening 0..1 from the level between a lower bound and the recent peak."""
    low = max(floor_dbfs + config.gate_db - config.gate_hysteresis_db, peak_dbfs - config.range_db)
    span = max(peak_dbfs - low, 6.0)
    x = min(max((level_dbfs - low) / span, 0.0), 1.0)
    return float(x**config.curve)


def _clip01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def _upper_db(features: FrameFeatures) -> float:
    """Energy above 1 kHz relative to the whole band, in dB (pre-emphasised shares)."""
    return 10.0 * math.log10(features.mid_ratio + features.high_ratio + 1e-6)


def frontness(features: FrameFeatures) -> float:
    """0..1: how much of the energy above 1 kHz sits above 2 kHz (ee/eh have F2 up there)."""
    upper = features.mid_ratio + features.high_ratio
    return features.high_ratio / upper if upper > 0 else 0.0


def roundness(features: FrameFeatures) -> float:
    """0 (not rounded) .. 1 (an oo/w): nearly no energy above 1 kHz, and none of it bright."""
    dark = _clip01((-15.0 - _upper_db(features)) / 8.0)
    return dark * (1.0 - _clip01((frontness(features) - 0.3) / 0.4)) * features.voicing


def brightness(features: FrameFeatures) -> float:
    """0 .. 1 (an ee): the energy above 1 kHz is mostly above 2 kHz, and there is enough of it."""
    present = _clip01((_upper_db(features) + 30.0) / 10.0)
    return _clip01((frontness(features) - 0.3) / 0.4) * present * features.voicing


def jaw_openness(features: FrameFeatures) -> float:
    """0 (close vowel: ee, oo, ~300 Hz first formant) .. 1 (open vowel: ah, ~700 Hz)."""
    return _clip01((features.f1_hz - 300.0) / 400.0)


def hissiness(features: FrameFeatures) -> float:
    """0 .. 1 (s, sh, f): unvoiced sound whose energy sits high up."""
    return _clip01((features.high_ratio + features.hiss_ratio - 0.4) / 0.3) * (1.0 - features.voicing)


def target_shape(features: FrameFeatures, open_amount: float, config: MouthConfig) -> MouthShape:
    """Shape the spectrum asks for, given the level's opening (no smoothing)."""
    r, b, h = roundness(features), brightness(features), hissiness(features)
    closeness = (1.0 - jaw_openness(features)) * features.voicing
    opening = open_amount * (1.0 - config.close_vowel_cut * closeness) * (1.0 - config.round_open_cut * r)
    opening = min(opening, config.hiss_max_open + (1.0 - h) * config.max_open)
    width = min(max(b - r + 0.3 * h, -1.0), 1.0)
    return MouthShape(open=min(max(opening, 0.0), config.max_open), width=width)


def follow(current: float, target: float, rise: float, fall: float) -> float:
    """One step of an attack/release follower; ``rise``/``fall`` are per-step coefficients 0..1."""
    k = rise if target > current else fall
    return current + (target - current) * k


def step_coefficient(time_constant_s: float, dt_s: float) -> float:
    """Per-step coefficient of a one-pole smoother with the given time constant."""
    if time_constant_s <= 0:
        return 1.0
    return 1.0 - math.exp(-dt_s / time_constant_s)


class MouthShaper:
    """Streaming features -> ``MouthShape``, one call per video frame, in order."""

    def __init__(self, fps: float, config: MouthConfig | None = None) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.config = config or MouthConfig()
        dt = 1.0 / fps
        self._dt = dt
        self._floor_frames = max(1, int(round(self.config.floor_window_s * fps)))
        self._attack = step_coefficient(self.config.attack_s, dt)
        self._release = step_coefficient(self.config.release_s, dt)
        self._width_k = step_coefficient(self.config.width_s, dt)
        self.reset()

    def reset(self) -> None:
        self.floor_dbfs = self.config.min_speech_dbfs - self.config.gate_db
        # Until a window of real levels is in, assume a quiet room: speech from the first frame then opens.
        self._recent: deque[float] = deque([self.floor_dbfs] * self._floor_frames, maxlen=self._floor_frames)
        self.peak_dbfs = self.floor_dbfs + self.config.gate_db + 0.5 * self.config.range_db
        self.gate = False
        self._open = 0.0
        self._width = 0.0

    def step(self, features: FrameFeatures) -> MouthShape:
        cfg = self.config
        level = features.rms_dbfs
        self._recent.append(level if features.voicing < cfg.floor_max_voicing else math.inf)
        quietest = min(self._recent)
        # Only voice in the whole window: keep the floor we had (and let it follow any quieter frame).
        self.floor_dbfs = quietest if quietest < math.inf else min(self.floor_dbfs, level)
        self.peak_dbfs = max(level, self.peak_dbfs - cfg.peak_decay_db_per_s * self._dt)
        # The peak never sinks into the floor, or steady noise would read as full-volume speech.
        self.peak_dbfs = max(self.peak_dbfs, self.floor_dbfs + cfg.gate_db + 0.5 * cfg.range_db)
        self.gate = gate_is_open(level, self.floor_dbfs, self.gate, cfg)
        if self.gate:
            target = target_shape(features, level_to_open(level, self.floor_dbfs, self.peak_dbfs, cfg), cfg)
        else:
            target = MouthShape(open=0.0, width=self._width * 0.5)
        if abs(target.open - self._open) > cfg.deadband or target.open <= 0.0:
            self._open = follow(self._open, target.open, self._attack, self._release)
            if target.open <= 0.0 and self._open < 1e-3:
                self._open = 0.0  # end the exponential tail: shut is shut
        self._width += (target.width - self._width) * self._width_k
        return MouthShape(
            open=min(max(self._open, 0.0), cfg.max_open), width=min(max(self._width, -1.0), 1.0)
        )
