"""factory.processes with small real child processes: sessions, logs, signals, process trees, zombies."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.factory.processes import (
    FactoryState,
    Proc,
    alive,
    descendants,
    kill_tree,
    start,
    stop,
    wait_healthy,
)

SLEEPER = "import time; time.sleep(120)"

TWO_SIGINTS = textwrap.dedent(
    """
    import signal, sys, time
    seen = 0
    def on_sigint(signum, frame):
        global seen
        seen += 1
        print(f"SIGINT {seen}", flush=True)
        if seen == 2:
            sys.exit(0)
    signal.signal(signal.SIGINT, on_sigint)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
    """
)

ON_SIGTERM = textwrap.dedent(
    """
    import signal, sys, time
    def on_sigterm(signum, frame):
        print("SIGTERM", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_sigterm)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
    """
)

# Ignores everything it can, and leaves a grandchild in a session of its own (as a flow run is).
STUBBORN_PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True)
    print(f"grandchild {child.pid}", flush=True)
    time.sleep(120)
    """
)
STUBBORN_CHILD = textwrap.dedent(
    """
    import signal, time
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    time.sleep(120)
    """
)

HEALTH_SERVER = textwrap.dedent(
    """
    import http.server, sys
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
    """
)


def wait_for(what: str, fn: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def log_text(proc: Proc) -> str:
    path = Path(proc.log)
    return path.read_text() if path.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``start`` under tmp_path; whatever a test leaves running (children included) is killed after it."""
    started: list[int] = []
    env = {**os.environ, "TF_TEST_MARK": "from-the-env-argument"}

    def run(name: str, role: str, *argv: str) -> Proc:
        proc = start(name, role, [sys.executable, *argv], env, tmp_path / "logs", tmp_path)
        started.append(proc.pid)
        return proc

    yield run
    for pid in started:
        if alive(pid):
            kill_tree(pid)


def test_start_logs_output_and_runs_the_child_in_its_own_session(
    spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    script = "import os; print('hello', os.getcwd(), os.environ['TF_TEST_MARK'], flush=True); " + SLEEPER
    proc = spawn("greeter", "cpu-worker", "-c", script)
    assert proc.name == "greeter" and proc.role == "cpu-worker"
    assert proc.log == str(tmp_path / "logs" / "greeter.log")
    wait_for("the greeting in the log", lambda: "hello" in log_text(proc))
    assert log_text(proc).split() == ["hello", str(tmp_path), "from-the-env-argument"]
    # Its own session and process group: a Ctrl-C in our terminal does not reach it.
    assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
    assert os.getpgid(proc.pid) == proc.pid
    assert alive(proc.pid)


def test_start_appends_to_an_existing_log(spawn: Callable[..., Proc]) -> None:
    first = spawn("twice", "server", "-c", "print('first run', flush=True)")
    wait_for("the first run to end", lambda: not alive(first.pid))
    second = spawn("twice", "server", "-c", "print('second run', flush=True)")
    wait_for("the second run to end", lambda: not alive(second.pid))
    assert first.log == second.log
    assert log_text(second).splitlines() == ["first run", "second run"]


def test_stop_gives_a_worker_two_sigints(spawn: Callable[..., Proc]) -> None:
    proc = spawn("worker", "gpu-worker", "-c", TWO_SIGINTS)
    wait_for("its handler to be installed", lambda: "ready" in log_text(proc))
    assert stop(proc, grace_s=6.0) is True
    assert not alive(proc.pid)
    assert log_text(proc).splitlines() == ["ready", "SIGINT 1", "SIGINT 2"]


def test_stop_sends_a_server_sigterm(spawn: Callable[..., Proc]) -> None:
    proc = spawn("server", "server", "-c", ON_SIGTERM)
    wait_for("its handler to be installed", lambda: "ready" in log_text(proc))
    assert stop(proc, grace_s=6.0) is True
    assert not alive(proc.pid)
    assert log_text(proc).splitlines() == ["ready", "SIGTERM"]


def test_stop_of_a_process_already_gone_is_clean(spawn: Callable[..., Proc]) -> None:
    proc = spawn("quick", "cpu-worker", "-c", "pass")
    wait_for("it to exit", lambda: not alive(proc.pid))
    assert stop(proc, grace_s=1.0) is True


@pytest.mark.parametrize("role", ["gpu-worker", "server"])
def test_stop_sigkills_a_process_that_ignores_signals_and_its_grandchild(
    spawn: Callable[..., Proc], role: str
) -> None:
    proc = spawn("stubborn", role, "-c", STUBBORN_PARENT, STUBBORN_CHILD)
    wait_for("the grandchild", lambda: "grandchild" in log_text(proc))
    match = re.search(r"grandchild (\d+)", log_text(proc))
    assert match is not None
    grandchild = int(match.group(1))
    assert descendants(proc.pid) == [grandchild]
    assert os.getsid(grandchild) == grandchild  # out of the parent's process group

    t0 = time.monotonic()
    assert stop(proc, grace_s=1.0) is False
    assert time.monotonic() - t0 >= 0.9  # the grace was given before SIGKILL
    assert not alive(proc.pid)
    wait_for("the grandchild to be gone", lambda: not alive(grandchild), 5.0)


def test_kill_tree_kills_a_parent_and_its_grandchild_in_another_session(spawn: Callable[..., Proc]) -> None:
    parent = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 start_new_session=True)
        print(f"grandchild {child.pid}", flush=True)
        time.sleep(120)
        """
    )
    proc = spawn("tree", "gpu-worker", "-c", parent)
    wait_for("the grandchild", lambda: "grandchild" in log_text(proc))
    match = re.search(r"grandchild (\d+)", log_text(proc))
    assert match is not None
    grandchild = int(match.group(1))
    assert alive(grandchild)

    assert kill_tree(proc.pid) == [proc.pid, grandchild]
    wait_for("the parent to be gone", lambda: not alive(proc.pid), 5.0)
    wait_for("the grandchild to be gone", lambda: not alive(grandchild), 5.0)


def test_alive_is_false_for_a_zombie_and_for_a_reaped_pid() -> None:
    assert alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for("the child to become a zombie", lambda: proc_state(child.pid) == "Z")
        # Signal 0 still reaches a zombie; alive must look past that.
        os.kill(child.pid, 0)
        assert alive(child.pid) is False
    finally:
        child.wait(timeout=10)
    assert proc_state(child.pid) is None
    assert alive(child.pid) is False


def test_alive_is_true_for_a_running_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", SLEEPER])
    try:
        assert alive(child.pid) is True
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)


def test_factory_state_round_trips(tmp_path: Path) -> None:
    state = FactoryState(
        api_url="http://127.0.0.1:4321/api",
        procs=[
            Proc(name="server", pid=101, log="/logs/server.log", role="server"),
            Proc(name="gpu-cpu0", pid=102, log="/logs/gpu-cpu0.log", role="gpu-worker"),
        ],
    )
    path = tmp_path / "factory" / "nested" / "state.json"
    state.save(path)
    assert FactoryState.load(path) == state
    assert FactoryState.load(tmp_path / "absent.json") is None
    empty = FactoryState(api_url="http://h/api")
    empty.save(path)
    assert FactoryState.load(path) == empty


def test_wait_healthy_names_the_log_when_the_server_exits_early(spawn: Callable[..., Proc]) -> None:
    proc = spawn("server", "server", "-c", "import sys; print('cannot bind', flush=True); sys.exit(3)")
    api = f"http://127.0.0.1:{free_port()}/api"
    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as err:
        wait_healthy(api, timeout_s=60, proc=proc)
    # It noticed the exit; it did not sit out the whole timeout.
    assert time.monotonic() - t0 < 20
    assert proc.log in str(err.value)
    assert err.value.subject == api


def test_wait_healthy_without_a_process_times_out(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{free_port()}/api"
    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as err:
        wait_healthy(api, timeout_s=1.0)
    assert 1.0 <= time.monotonic() - t0 < 10
    assert "see " not in str(err.value)


def test_wait_healthy_returns_once_health_answers(spawn: Callable[..., Proc]) -> None:
    port = free_port()
    proc = spawn("health", "server", "-c", HEALTH_SERVER, str(port))
    seconds = wait_healthy(f"http://127.0.0.1:{port}/api", timeout_s=30, proc=proc)
    assert 0 <= seconds < 30
    assert stop(proc, grace_s=5.0) is True
