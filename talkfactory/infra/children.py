"""Child processes that never outlive us, and telling whether a recorded process is still there.

``die_with_parent`` runs in a child between fork and exec (``preexec_fn``): Linux's parent-death
signal makes the kernel SIGKILL the child when the thread that started it goes away, so a
``kill -9`` of talkfactory takes its ffmpeg processes and its Prefect API server with it.

``ProcessOwner`` is what lineage stores about the process working on a row (host, pid and the
process's start time, so a recycled pid is not mistaken for the owner); ``owner_gone`` answers
"is that process still running?" for rows written on this host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc: Any = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _prctl: Any = _libc.prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal, children are still killed on exit
    _prctl = None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when its parent dies.

    Checks the parent once more after arming: if it died during the fork, the child exits at once.
    Only async-signal-safe work happens in the child (one prctl, one getppid).
    """
    parent = os.getpid()

    def arm() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22); None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == b"Z":  # a zombie: exited, not yet reaped
        return -1
    return int(fields[19])


@dataclass(frozen=True)
class ProcessOwner:
    """The process doing some work, as lineage records it."""

    host: str
    pid: int
    started: int | None

    @classmethod
    def current(cls) -> ProcessOwner:
        return cls(host=socket.gethostname(), pid=os.getpid(), started=_start_ticks(os.getpid()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ProcessOwner | None:
        if not isinstance(data, dict) or "pid" not in data or "host" not in data:
            return None
        return cls(host=str(data["host"]), pid=int(data["pid"]), started=data.get("started"))

    def is_running_here(self) -> bool:
        """True when the process runs on this host now (False for other hosts: they cannot be checked)."""
        return self.host == socket.gethostname() and not self.is_gone()

    def is_gone(self) -> bool:
        """True only when this host can tell the process is no longer running (False for other hosts)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        now = _start_ticks(self.pid)
        if now == -1:
            return True
        # A different start time: the pid was recycled by another process.
        return self.started is not None and now is not None and now != self.started


__all__ = ["ProcessOwner", "die_with_parent"]
