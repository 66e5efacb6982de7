"""The lip-sync backend interface.

A backend turns template frames plus speech into new frames, one output frame per input
frame, lazily: ``render`` is a generator so decode, render and encode overlap and memory
does not depend on the recording's length. Backends never decode or encode files
themselves; the pipeline feeds them frames and takes frames back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from talkfactory.models.audio import AudioSource
from talkfactory.models.face.track import FaceTrack


@dataclass(frozen=True)
class TemplateFrame:
    """One avatar frame handed to a backend."""

    index: int
    """Row of the avatar's ``FaceTrack`` this image is (ping-pong looping repeats rows)."""
    image: NDArray[np.uint8]
    """H x W x 3, BGR, uint8."""


@runtime_checkable
class LipSyncBackend(Protocol):
    """What every backend provides. ``version`` goes into lineage with each render."""

    name: str

    @property
    def version(self) -> str:
        """Code version plus weights identity (e.g. checkpoint sha256); changes mark renders stale."""
        ...

    def prepare(self, track: FaceTrack) -> Any:
        """Per-avatar work done once and reused for every render of that avatar."""
        ...

    def render(
        self,
        prepared: Any,
        frames: Iterable[TemplateFrame],
        audio: AudioSource,
        fps: float,
    ) -> Iterator[NDArray[np.uint8]]:
        """Yield one BGR frame per input frame; output frame ``i`` shows time ``i / fps``."""
        ...
