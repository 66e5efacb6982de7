"""The README's commands, run as a user runs them: the installed ``talkfactory`` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.media import MediaSet

EXE = str(Path(sys.executable).with_name("talkfactory"))


def tf(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALKFACTORY_HOME": str(home), "COLUMNS": "200"}
    env.pop("TALKFACTORY_DATABASE_URL", None)
    return subprocess.run([EXE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def test_help_lists_the_commands(tmp_path: Path) -> None:
    res = tf("--help", home=tmp_path, cwd=tmp_path)
    assert res.returncode == 0
    for cmd in ("run", "demo", "db", "lineage", "doctor"):
        assert cmd in res.stdout


def test_db_upgrade_and_doctor(tmp_path: Path) -> None:
    res = tf("db", "upgrade", home=tmp_path / "h", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "h" / "lineage.db").exists()
    doc = tf("doctor", home=tmp_path / "h", cwd=tmp_path)
    assert doc.returncode == 0, doc.stderr
    assert "libx264" in doc.stdout or "h264_nvenc" in doc.stdout


@pytest.mark.slow
def test_run_twice_then_trace_the_output(media: MediaSet, tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    args = (
        "run",
        str(media.speech_flv),
        "--avatar",
        str(media.portrait),
        "--avatar",
        str(tmp_path / "nope.png"),
    )
    # An avatar that does not exist is a mistake in the command: it stops the job before any work.
    wrong = tf(*args, "--out", str(out), home=home, cwd=tmp_path)
    assert wrong.returncode == 2, wrong.stderr
    assert "nope.png" in wrong.stderr and not list(out.rglob("*.mp4"))

    args = args[:-2]
    first = tf(*args, "--out", str(out), home=home, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    mp4s = sorted(out.glob("speech/astronaut__clip*.mp4"))
    assert mp4s, first.stdout
    mp4 = mp4s[0]
    assert "succeeded" in first.stdout
    assert "libx264" in first.stdout or "h264_nvenc" in first.stdout

    second = tf(*args, "--out", str(out), home=home, cwd=tmp_path)
    assert "already done" in second.stdout

    trace = tf("lineage", str(mp4), home=home, cwd=tmp_path)
    assert trace.returncode == 0, trace.stderr
    assert "speech.flv" in trace.stdout and "weightless" in trace.stdout and "succeeded" in trace.stdout

    bad = tf("run", str(tmp_path / "missing.flv"), "--avatar", str(media.portrait), "--out", str(out),
             home=home, cwd=tmp_path)  # fmt: skip
    # an unusable recording stops the job: 2, as the README says
    assert bad.returncode == 2 and "missing.flv" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_demo_runs_on_embedded_defaults(tmp_path: Path) -> None:
    res = tf("demo", "--seconds", "4", "--out", str(tmp_path / "demo"), home=tmp_path / "home", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    mp4s = sorted(p.name for p in (tmp_path / "demo" / "livestream").glob("*.mp4"))
    assert "astronaut__clip001.mp4" in mp4s, res.stdout
    assert "astronaut-template__clip001.mp4" in mp4s
    assert "lineage database" in res.stderr


def test_backend_comes_from_the_flag_else_from_settings(
    tf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from talkfactory.cli.common import render_options
    from talkfactory.infra.settings import get_settings

    monkeypatch.setenv("TALKFACTORY_BACKEND", "wav2lip")
    monkeypatch.setenv("TALKFACTORY_CHECKPOINT", "/models/w2l.pth")
    get_settings.cache_clear()
    opts = render_options(argparse.Namespace(backend=None, checkpoint=None))
    assert (opts.backend, opts.checkpoint) == ("wav2lip", "/models/w2l.pth")
    flags = argparse.Namespace(backend="weightless", checkpoint="/other.pth", force=True)
    opts = render_options(flags)
    assert (opts.backend, opts.checkpoint, opts.force) == ("weightless", "/other.pth", True)
