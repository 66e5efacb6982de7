"""Running this worktree's ``talkfactory`` as a user does: a subprocess with its own TALKFACTORY_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TALKFACTORY_HOME": str(home), "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    for name in ("TALKFACTORY_DATABASE_URL", "PREFECT_API_URL"):
        env.pop(name, None)
    env.update(extra)
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "talkfactory.cli", *args]


def tf(
    *args: str, home: Path, cwd: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv(*args), env=cli_env(home, **env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def tone_flv(path: Path, seconds: float) -> Path:
    """A small FLV recording: test pattern video and a 220 Hz tone (for --whole-track runs)."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=220",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-f", "flv", str(path),
    )  # fmt: skip
    return path


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live (not zombie) process, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found.append((int(stat.parent.name), int(fields[1]), int(fields[2])))
    return found


def processes_in_group(pgid: int) -> list[str]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    return [str(pid) for pid, _, group in _live_processes() if group == pgid]


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    return [child for child, parent, _ in _live_processes() if parent == pid]


def named_children_of(pid: int, name: str) -> list[int]:
    """Live children of ``pid`` whose command is ``name`` (``ffmpeg``)."""
    found = []
    for child in children_of(pid):
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == name:
                found.append(child)
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A folder that cannot be written, even by root: a tmpfs remounted read-only, else chattr +i."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode == 0:
        try:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
            yield path
        finally:
            subprocess.run(["umount", str(path)], capture_output=True)
        return
    immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if immutable.returncode == 0:
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        return
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    if os.environ.get("CI"):
        pytest.fail("CI runs as root with mount or chattr: a read-only folder must be possible")
    pytest.skip("no way to make a read-only folder here (no mount, no chattr)")
