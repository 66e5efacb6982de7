"""Local file helpers: content hashes, atomic writes, names that fit, leftovers of dead runs."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from pathlib import Path

from talkfactory.errors import MediaNotFoundError

_CHUNK = 1 << 20
log = logging.getLogger(__name__)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (memory does not grow with the file)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError as exc:
        raise MediaNotFoundError("file does not exist", subject=str(path)) from exc
    except IsADirectoryError as exc:
        raise MediaNotFoundError("is a directory, not a file", subject=str(path)) from exc
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / partial_name(path.name))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- names within NAME_MAX

NAME_MAX = 255
"""Bytes in one file name on Linux file systems (ext4, xfs, tmpfs, overlayfs)."""
PARTIAL_TAG = ".partial"
"""Marks a temporary file that a run writes and renames into place; ``sweep_stale_partials`` finds them."""
_HASH_CHARS = 12


def _utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` that fits ``max_bytes`` in UTF-8 (never half a character)."""
    data = text.encode("utf-8")[: max(0, max_bytes)]
    return data.decode("utf-8", errors="ignore")


def fit_file_name(name: str, *, max_bytes: int = NAME_MAX) -> str:
    """``name`` if it fits ``max_bytes``; else its stem cut short plus a hash of the whole name.

    The suffix (``.mp4``) is kept and the hash keeps two long names that share a prefix apart.
    A shortened name is logged as a warning, so the user learns why the file is not named as asked.
    """
    if len(name.encode("utf-8")) <= max_bytes:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    room = max_bytes - len(suffix.encode("utf-8")) - len(digest) - 1
    short = f"{_utf8_prefix(stem, room)}-{digest}{suffix}"
    log.warning(
        "file name %r is %d bytes, longer than the %d the file system allows: writing %r instead",
        name,
        len(name.encode("utf-8")),
        max_bytes,
        short,
    )
    return short


def partial_name(final_name: str, suffix: str = "") -> str:
    """A hidden temporary sibling name for ``final_name``, never longer than NAME_MAX.

    ``.<name>.<pid>-<random><PARTIAL_TAG><suffix>``: the pid says which process owns it, so a later
    run can remove the leftovers of a process that died (``sweep_stale_partials``); ``suffix`` keeps
    the extension that tells ffmpeg the container. The name part is shortened first, so a temporary
    name fits wherever the final name does.
    """
    tail = f".{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_TAG}{suffix}"
    room = NAME_MAX - 1 - len(tail.encode("utf-8"))
    return f".{_utf8_prefix(final_name, room)}{tail}"


def _partial_owner(name: str) -> int | None:
    """The pid a ``partial_name`` carries, or None for a name it did not make."""
    if not name.startswith(".") or PARTIAL_TAG not in name:
        return None
    head = name[: name.rindex(PARTIAL_TAG)]
    owner = head.rsplit(".", 1)[-1].split("-", 1)[0]
    return int(owner) if owner.isdigit() else None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this machine (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def sweep_stale_partials(folder: str | Path) -> list[Path]:
    """Remove temporary files in ``folder`` whose owning process is gone; returns what was removed.

    A run killed with SIGKILL cannot clean up after itself; the next run on the same folder does.
    Files of live processes (a concurrent run) are left alone. Errors (a read-only folder) are
    ignored here: the run itself reports them when it tries to write.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        owner = _partial_owner(entry.name)
        if owner is None or pid_alive(owner):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
                log.info("removed %s, left behind by process %d which is gone", entry.path, owner)
    return removed
