"""The factory's own Ray instance: ``ray start --head`` at ``factory up``, stopped at ``factory down``.

Render executors (Ray actors, one per GPU) live on it. Ray 2.60 authenticates every connection with a
token when ``RAY_AUTH_MODE=token``; the factory makes one per home (``factory/ray/auth_token``, mode
0600) and hands the head and the workers ``RAY_AUTH_TOKEN_PATH``, so ``~/.ray`` is left alone and only
processes that can read that file can use the cluster. The token itself is never logged or recorded.

Ray binds its ports on every interface and refuses a loopback node address (it needs one other nodes
can reach), so the token is what keeps the cluster to this user; pick ports explicitly (free ones
outside Ray's worker range 10002-19999) so two factories on one machine do not collide.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from talkfactory.errors import ConfigurationError
from talkfactory.factory.processes import RayHead, session_members, stop_session


def ray_exe() -> str:
    """The ``ray`` CLI of this interpreter's environment (the venv's), else the one on ``PATH``."""
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else "ray"


def ensure_token(path: Path) -> Path:
    """A cluster token at ``path``, made (256 random bits, readable by this user only) when missing."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def auth_env(token_path: Path | str) -> dict[str, str]:
    """What a process needs to join the cluster: Ray reads the token from the file when it connects."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}


def temp_dir_for(home: Path) -> Path:
    """Ray's session folder for this home. Short, under the system temp dir: Ray puts Unix sockets in
    it, and a socket path over 107 bytes (easy under a deep home) cannot be bound."""
    tag = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"tf-ray-{tag}"


def free_port() -> int:
    # The kernel's ephemeral range (32768+) sits above Ray's default worker ports (10002-19999).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def head_argv(
    temp_dir: Path, port: int, num_cpus: int, num_gpus: int, agent_port: int, dashboard_port: int
) -> list[str]:
    return [
        ray_exe(),
        "start",
        "--head",
        "--port",
        str(port),
        "--num-cpus",
        str(num_cpus),
        "--num-gpus",
        str(num_gpus),
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
        "--include-dashboard",
        "false",
        # Fixed by default (52365, 8265): a second instance on the machine would fail to bind them.
        "--dashboard-agent-listen-port",
        str(agent_port),
        "--dashboard-port",
        str(dashboard_port),
    ]


def start_head(
    home: Path,
    *,
    num_cpus: int,
    num_gpus: int,
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path,
    port: int | None = None,
    timeout_s: float = 90.0,
) -> RayHead:
    """Start a Ray head for this home; returns once it accepts drivers.

    ``ray start`` launches the Ray daemons and exits; it runs in a session of its own, so every
    process it leaves (GCS, raylet, agents, and the actors' workers) carries that session id, which is
    how ``stop_head`` finds them without touching another Ray instance on the machine.
    """
    token = ensure_token(home / "factory" / "ray" / "auth_token")
    temp_dir = temp_dir_for(home)
    current = temp_dir / "ray_current_cluster"
    current.unlink(missing_ok=True)
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "ray-head.log"
    argv = head_argv(temp_dir, port, num_cpus, num_gpus, free_port(), free_port())
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, **auth_env(token)},
            cwd=cwd,
            start_new_session=True,
        )
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        rc = None
    head = RayHead(address="", session=proc.pid, temp_dir=str(temp_dir), token_path=str(token), log=str(log))
    # `ray start` writes the address it serves (node ip:port) for `address="auto"` drivers.
    address = current.read_text().strip() if current.is_file() else ""
    if rc != 0 or not address.endswith(f":{port}"):
        stop_head(head, grace_s=2)
        raise ConfigurationError(f"`ray start --head` did not come up (exit {rc}); see {log}", subject="ray")
    head.address = address
    return head


def stop_head(head: RayHead, grace_s: float = 3.0) -> bool:
    """Stop every process of the head's session and remove its session folder; True when none is left.

    (``ray stop`` would stop every Ray instance of this user on the machine.) GCS and raylet take ~10 s
    to act on SIGTERM and keep nothing worth a clean exit (the actors' models die with them either
    way), so the grace is short and SIGKILL ends the rest.
    """
    stop_session(head.session, grace_s)
    shutil.rmtree(head.temp_dir, ignore_errors=True)
    return not session_members(head.session)


def head_running(head: RayHead) -> bool:
    return bool(session_members(head.session))
