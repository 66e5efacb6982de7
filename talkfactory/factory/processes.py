"""Start and stop the local factory's processes: a Prefect server, its workers and a Ray head.

Every process gets its own session (so a Ctrl-C in the shell that ran ``factory up`` does not reach
it) and a log file; their pids go to a state file that ``factory down`` reads. Stopping follows the
Prefect process worker's own rules: it ignores the first SIGTERM, so workers get SIGINT twice, and
SIGKILL (for the whole process group) after a grace period.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from talkfactory.errors import ConfigurationError


@dataclass
class Proc:
    """One started process, as the state file records it."""

    name: str
    pid: int
    log: str
    role: str
    """server, cpu-worker or gpu-worker."""


@dataclass
class RayHead:
    """The local Ray instance ``factory up`` started (``ray start --head``), as the state file records it."""

    address: str
    """``ip:port`` of its GCS, what ``TALKFACTORY_RAY_ADDRESS`` carries to the workers."""
    session: int
    """Session id of every Ray process it started (the pid of the ``ray start`` that made them)."""
    temp_dir: str
    token_path: str
    """File holding the cluster's auth token (the path only; the token is never recorded)."""
    log: str


@dataclass
class FactoryState:
    api_url: str
    procs: list[Proc] = field(default_factory=list)
    ray: RayHead | None = None
    ray_address: str | None = None
    """The Ray cluster the workers use: the started head's, or the one given to ``factory up``."""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "api_url": self.api_url,
            "procs": [asdict(p) for p in self.procs],
            "ray": asdict(self.ray) if self.ray else None,
            "ray_address": self.ray_address,
        }
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: Path) -> FactoryState | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        ray = data.get("ray")
        return cls(
            api_url=data["api_url"],
            procs=[Proc(**p) for p in data["procs"]],
            ray=RayHead(**ray) if ray else None,
            ray_address=data.get("ray_address"),
        )


def start(
    name: str, role: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path
) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return Proc(name=name, pid=proc.pid, log=str(log), role=role)


def wait_healthy(api_url: str, timeout_s: float = 60.0, proc: Proc | None = None) -> float:
    """Seconds until ``<api>/health`` answers; ``ConfigurationError`` naming the log when it never does."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:  # noqa: S310 - our own URL
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        if proc is not None and not alive(proc.pid):
            break
        time.sleep(0.3)
    where = f"; see {proc.log}" if proc else ""
    raise ConfigurationError(
        f"the Prefect API did not come up within {timeout_s:.0f} s{where}", subject=api_url
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers signal 0.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def session_members(sid: int) -> list[int]:
    """Every live process in session ``sid`` (Linux /proc): a daemonising launcher such as
    ``ray start`` exits, but the processes it left behind keep the session it was given."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, session.
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def stop_session(sid: int, grace_s: float = 5.0) -> bool:
    """SIGTERM every process of session ``sid``, SIGKILL what is left after ``grace_s``; True when
    all ended before SIGKILL was needed."""
    for pid in session_members(sid):
        _signal(pid, signal.SIGTERM)
    t0 = time.monotonic()
    while time.monotonic() - t0 < grace_s:
        if not session_members(sid):
            return True
        time.sleep(0.2)
    for pid in session_members(sid):
        _signal(pid, signal.SIGKILL)
    t0 = time.monotonic()
    while session_members(sid) and time.monotonic() - t0 < 5:
        time.sleep(0.1)
    return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc); the flow runs a worker started live in their own
    sessions, so a process group kill of the worker alone would leave them running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop(proc: Proc, grace_s: float = 20.0) -> bool:
    """Stop one process; True when it ended on its own before SIGKILL was needed."""
    if not alive(proc.pid):
        return True
    sigs = [signal.SIGINT, signal.SIGINT] if proc.role.endswith("worker") else [signal.SIGTERM]
    for sig in sigs:
        _signal(proc.pid, sig)
        if _wait_gone(proc.pid, grace_s / len(sigs)):
            return True
    for pid in [proc.pid, *descendants(proc.pid)]:
        _signal(pid, signal.SIGKILL)
    _wait_gone(proc.pid, 5)
    return False


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and everything below it at once: what a machine losing power looks like."""
    victims = [pid, *descendants(pid)]
    for p in victims:
        _signal(p, signal.SIGKILL)
    return victims


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout_s: float) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.2)
    return not alive(pid)
