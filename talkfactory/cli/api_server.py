"""The Prefect API a command runs against when no ``PREFECT_API_URL`` is set: our own child process.

Prefect would start the same server (uvicorn on ``prefect.server.api.server:create_app``) itself,
but in our process group: a Ctrl-C in the terminal reaches it too, it shuts down while the flow
still needs it, and every later API call retries against nothing for about a minute. Started here
it sits in its own session (Ctrl-C reaches only talkfactory, which stops the work and then the
server) with a parent-death signal (a ``kill -9`` of talkfactory takes the server with it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from talkfactory.errors import ConfigurationError
from talkfactory.infra.children import die_with_parent

STARTUP_TIMEOUT_S = 180.0
STOP_GRACE_S = 5.0
MAX_STARTS = 3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:  # noqa: S310 - our own URL
            return bool(r.status == 200)
    except OSError:
        return False


def _drain_prefect_logs() -> None:
    """Send the run logs Prefect still holds while the server is up (else it reports failing at exit)."""
    if "prefect.logging.handlers" not in sys.modules:
        return
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=5)


class ApiServer:
    """A private API started in the background: ``wait_ready`` blocks until it answers.

    A server that exits while starting is started again (twice at most, on the same port): two
    commands starting at once on a new Prefect home race to migrate its database, and the loser
    exits; by its second start the database is ready.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log = log_dir / "prefect-api.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api_url: str | None = None
        self.port: int | None = None
        self.starts = 0

    def start(self) -> None:
        # A restart keeps the port: Prefect read PREFECT_API_URL when the flow modules were imported.
        port = self.port or _free_port()
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"
        spec = importlib.util.find_spec("prefect")
        app_dir = str(Path(spec.origin).parent.parent) if spec and spec.origin else "."
        env = {
            **os.environ,
            "PREFECT_API_URL": "",
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        argv = [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, "--factory"]
        argv += ["prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--log-level", "error", "--lifespan", "on"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        self.starts += 1
        os.environ["PREFECT_API_URL"] = self.api_url

    def wait_ready(self) -> None:
        if self.proc is None or self.api_url is None:
            return
        limit = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", STARTUP_TIMEOUT_S))
        deadline = time.monotonic() + limit
        from talkfactory.pipeline.interrupt import stop_requested

        while not _healthy(self.api_url):
            if stop_requested():
                raise KeyboardInterrupt  # Ctrl-C while the server starts: nothing has run yet
            if self.proc.poll() is not None and self.starts < MAX_STARTS:
                self.start()
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the Prefect API did not start; see {self.log}", subject=self.api_url
                )
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        _drain_prefect_logs()
        os.environ.pop("PREFECT_API_URL", None)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def own_api_server(log_dir: Path) -> Iterator[ApiServer]:
    """Start a private Prefect API for the block and point ``PREFECT_API_URL`` at it.

    Does nothing when ``PREFECT_API_URL`` is already set: a real server is in use. The server starts
    in the background; call ``wait_ready`` on the yielded handle before the first flow runs.
    """
    server = ApiServer(log_dir)
    if os.environ.get("PREFECT_API_URL"):
        yield server
        return
    server.start()
    try:
        yield server
    finally:
        server.stop()


__all__ = ["ApiServer", "own_api_server"]
