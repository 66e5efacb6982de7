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


def backend_version(name: str, *, checkpoint: str | None = None) -> str:
    """The ``version`` ``make_backend(name, checkpoint=...)`` would report, without loading weights.

    Planning and job keys need it on CPU hosts that never render; it must stay equal to the loaded
    backend's own ``version`` (tests compare the two).
    """
    if name == "weightless":
        from talkfactory.models.lipsync.weightless import WEIGHTLESS_VERSION

        return WEIGHTLESS_VERSION
    if name == "wav2lip":
        if not checkpoint:
            raise ConfigurationError("the wav2lip backend needs --checkpoint PATH", subject="backend")
        from talkfactory.models.lipsync.wav2lip.backend import CODE_VERSION
        from talkfactory.models.lipsync.wav2lip.checkpoint import file_sha256

        return f"wav2lip-{CODE_VERSION}+{file_sha256(checkpoint)[:16]}"
    raise ConfigurationError(
        f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}", subject="backend"
    )
