"""Names: one function for what an export is called, one for what an avatar is called in it.

An avatar's name is where it lives, not just its file stem: ``hosts/anna.png`` and
``guests/anna.png`` in a library are two avatars (``hosts.anna``, ``guests.anna``), and two local
files with one stem get a short hash of their path, so two avatars never share an export key.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from talkfactory.errors import ConfigurationError
from talkfactory.infra.files import fit_file_name


def export_key(recording_name: str, avatar_label: str, clip_number: int | None) -> str:
    """``live/show.flv``, ``anna``, 3 -> ``live/show/anna__clip003.mp4`` (``anna.mp4`` for a whole track)."""
    stem = PurePosixPath(recording_name)
    folder = stem.with_suffix("").as_posix() if stem.suffix else stem.as_posix()
    name = avatar_label if clip_number is None else f"{avatar_label}__clip{clip_number:03d}"
    # Every segment must fit a file system's 255 bytes (exports may be folders): a longer one is cut
    # with a hash of the whole, and a warning says so.
    parts = [fit_file_name(p) for p in folder.split("/")] + [fit_file_name(f"{name}.mp4")]
    return "/".join(parts)


def library_label(key: str) -> str:
    """The name of the avatar at ``key`` in the avatars library: its key without the extension,
    folders joined with dots (``hosts/anna.png`` -> ``hosts.anna``)."""
    path = PurePosixPath(key)
    return path.with_suffix("").as_posix().replace("/", ".")


def library_labels(keys: Sequence[str]) -> list[str]:
    """``library_label`` of each key; two files that differ only by extension are a setup error."""
    labels = [library_label(k) for k in keys]
    twins = sorted(label for label, n in Counter(labels).items() if n > 1)
    if twins:
        clash = [k for k in keys if library_label(k) in twins]
        raise ConfigurationError(
            f"these avatars would share the name {twins[0]!r}: {', '.join(clash)}; rename one",
            subject="avatars",
        )
    return labels


def local_labels(paths: Sequence[str]) -> list[str]:
    """Names for avatars given as local files: the file stem, plus a hash of the path when two of
    them share a stem (stable for the same paths, whatever their order)."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    return [
        stem if counts[stem] == 1 else f"{stem}-{_path_hash(p)}" for stem, p in zip(stems, paths, strict=True)
    ]


def _path_hash(path: str) -> str:
    return hashlib.sha256(str(Path(path).expanduser().resolve()).encode()).hexdigest()[:6]
