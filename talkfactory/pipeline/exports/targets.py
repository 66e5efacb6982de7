"""Where each channel's files of one render go, and what they are called.

A render published as ``show/anna__clip003.mp4`` in an exports location gets, per channel,
``<channel>/show/anna__clip003.mp4`` beside it (or ``show/anna__clip003.mp4`` in the channel's own
``destination`` when its spec names one) (``-part2`` before the extension when the clip was
split to fit the channel's length limit), with its sidecars next to it: ``.srt`` and ``.vtt``
captions, a ``.jpg`` cover and a ``.json`` of metadata. The ``master`` channel is the render itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from talkfactory.errors import ConfigurationError
from talkfactory.pipeline.exports.channels import ChannelRegistry, ChannelSpec

MASTER = "master"
SIDECARS = {
    ".srt": "application/x-subrip",
    ".vtt": "text/vtt",
    ".jpg": "image/jpeg",
    ".json": "application/json",
}


@dataclass(frozen=True)
class ExportTarget:
    """One channel's export of one render: its spec, the exports location and the file's key there."""

    spec: ChannelSpec
    location: str
    """The exports location (a folder or ``s3://bucket/prefix``), the same as the render's."""
    key: str
    """``<channel>/<render's key>``: the MP4's key when the clip is not split."""
    burn_captions: bool = False

    @property
    def channel(self) -> str:
        return self.spec.name

    @property
    def is_master(self) -> bool:
        """The render itself: not encoded again, but measured, given sidecars and listed."""
        return self.spec.name == MASTER

    def part_key(self, part: int, parts: int) -> str:
        if parts <= 1:
            return self.key
        path = PurePosixPath(self.key)
        return str(path.with_name(f"{path.stem}-part{part}{path.suffix}"))


def sidecar_key(mp4_key: str, suffix: str) -> str:
    """``youtube/show/anna__clip003.mp4`` -> ``youtube/show/anna__clip003.srt``."""
    return str(PurePosixPath(mp4_key).with_suffix(suffix))


def export_targets(
    channels: Sequence[str],
    *,
    registry: ChannelRegistry,
    location: str,
    render_key: str,
    burn_captions: bool = False,
) -> tuple[ExportTarget, ...]:
    """The targets for ``channels`` (unknown names are a configuration error, raised by the registry).

    With any channel asked for, ``master`` comes first: it is the render, published at ``render_key``,
    and gets its measurements and sidecars like the others. Each channel appears once, in order.
    """
    if not channels:
        return ()
    seen: dict[str, ExportTarget] = {}
    for name in [MASTER, *channels]:
        spec = registry.get(name)
        if spec.name in seen:
            continue
        if spec.kind != "file":
            raise ConfigurationError(
                f"{spec.name} is a live ingest channel (kind {spec.kind}): push to it with "
                f"`talkfactory push --channel {spec.name}`",
                subject="--channel",
            )
        is_master = spec.name == MASTER
        own = spec.destination if not is_master else None
        seen[spec.name] = ExportTarget(
            spec=spec,
            # A channel with its own destination gets the render's name there; else a folder of
            # its own beside the renders.
            location=own or location,
            key=render_key if is_master or own else f"{spec.name}/{render_key}",
            # Burning captions into the master would change the render itself: never.
            burn_captions=not is_master and (burn_captions or spec.burn_captions),
        )
    return tuple(seen.values())
