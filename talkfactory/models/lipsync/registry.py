"""Backends by name, imported lazily so the CPU default never loads torch."""

from __future__ import annotations

from talkfactory.errors import ConfigurationError
from talkfactory.models.lipsync.base import LipSyncBackend

BACKENDS = ("weightless", "wav2lip")


def make_backend(name: str, *, checkpoint: str | None = None) -> LipSyncBackend:
    """Build the backend ``name``; weight-bearing backends need a local ``checkpoint`` path."""
    if name == "weightless":
        from talkfactory.models.lipsync.weightless import WeightlessBackend

        return WeightlessBackend()
    if name == "wav2lip":
        if not checkpoint:
            raise ConfigurationError("the wav2lip backend needs --checkpoint PATH", subject="backend")
        from talkfactory.models.lipsync.wav2lip.backend import Wav2LipBackend

        return Wav2LipBackend(checkpoint)
    raise ConfigurationError(
        f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}", subject="backend"
    )
