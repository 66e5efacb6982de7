"""Ctrl-C and kill -9 of a running render: nothing left running, nothing left behind, honest lineage."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.lineage.rows import RenderRow
from tests.cli.helpers import (
    alive,
    children_of,
    cli_argv,
    cli_env,
    processes_in_group,
    tf,
    tone_flv,
    wait_for,
)
from tests.fixtures.media import MediaSet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Long enough that the render is still running when the signal comes (~0.2x real time here).
    return tone_flv(tmp_path_factory.mktemp("long") / "long.flv", 40.0)


def _start(recording: Path, avatar: Path, out: Path, home: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_argv("run", str(recording), "--avatar", str(avatar), "--out", str(out), "--whole-track"),
        env=cli_env(home),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )


def _partials(out: Path) -> list[str]:
    """Temporary files in the output folder, and in the render spool beside the lineage database
    (renders are written there whole, then published to the output folder)."""
    spool = out.parent / "home" / "work" / "renders"
    return [p.name for d in (out, spool) if d.is_dir() for p in d.rglob(".*partial*")]


def _rendering(proc: subprocess.Popen[str], out: Path) -> None:
    wait_for(lambda: bool(_partials(out)) or proc.poll() is not None, 180, "the render to start")
    assert proc.poll() is None, "the render ended before it could be interrupted"
    time.sleep(0.5)


def _render_rows(home: Path) -> list[RenderRow]:
    repo = LineageRepository.from_url(f"sqlite:///{home / 'lineage.db'}")
    rec = repo.find_recording("long.flv")
    assert rec is not None
    return [o.render for o in repo.renders_for_recording(rec.id)]


def test_ctrl_c_stops_the_render_within_seconds(
    media: MediaSet, long_recording: Path, tmp_path: Path
) -> None:
    out, home = tmp_path / "out", tmp_path / "home"
    proc = _start(long_recording, media.portrait, out, home, tmp_path)
    _rendering(proc, out)
    helpers = children_of(proc.pid)  # the private Prefect API, ffmpeg: in sessions of their own
    assert helpers
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    t0 = time.monotonic()
    output, _ = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, output
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    wait_for(lambda: not processes_in_group(proc.pid), 5, "the process group to empty")
    wait_for(lambda: not any(alive(pid) for pid in helpers), 5, "helper processes to end")
    assert not _partials(out) and not list(out.rglob("*.mp4"))
    [row] = _render_rows(home)
    assert row.status == "interrupted" and row.attempts == 1  # not failed, not retried


def test_kill_9_leaves_no_process_and_the_next_run_cleans_up(
    media: MediaSet, long_recording: Path, tmp_path: Path
) -> None:
    out, home = tmp_path / "out", tmp_path / "home"
    proc = _start(long_recording, media.portrait, out, home, tmp_path)
    _rendering(proc, out)
    helpers = children_of(proc.pid)
    assert len(helpers) >= 2, helpers  # the API server and at least one ffmpeg
    os.kill(proc.pid, signal.SIGKILL)  # the CLI alone: its children are not in its group
    proc.communicate(timeout=30)
    wait_for(lambda: not any(alive(pid) for pid in helpers), 10, "orphaned helpers to die")
    assert _partials(out)  # a dead process cannot clean up after itself...
    [row] = _render_rows(home)
    assert row.status == "interrupted"  # ...but lineage does not claim it is still running

    again = tf("run", str(tone_flv(tmp_path / "short.flv", 3.0)), "--avatar", str(media.portrait),
               "--out", str(out), "--whole-track", home=home, cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert not _partials(out)  # ...the next run on that folder does
    assert (out / "short" / "astronaut.mp4").is_file()
