from __future__ import annotations

import numpy as np
import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.models.speech.tts import synthesize


def test_synthesize_gives_mono_float_speech_at_the_voice_rate() -> None:
    samples, rate = synthesize("Hello there, this is a test.")
    assert rate == 22050
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 0.8 < samples.size / rate < 4.0
    assert 0.5 < float(np.abs(samples).max()) <= 1.0


def test_synthesize_is_deterministic_by_default() -> None:
    a, _ = synthesize("Same words twice.")
    b, _ = synthesize("Same words twice.")
    np.testing.assert_array_equal(a, b)


def test_longer_text_and_slower_speech_take_longer() -> None:
    short, rate = synthesize("One sentence.")
    two, _ = synthesize("One sentence. And then another sentence.")
    slow, _ = synthesize("One sentence.", length_scale=1.5)
    assert two.size > short.size * 1.5
    assert slow.size > short.size * 1.2


def test_unknown_voice_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown voice"):
        synthesize("hi", voice="nobody")
