"""``factory status``/``down`` from any folder: ``up`` records where its home and project are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from talkfactory.factory.local import state_file
from talkfactory.factory.processes import FactoryState, Proc
from talkfactory.factory.whereabouts import default_project_dir, forget, recalled, remember
from talkfactory.infra.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def test_remember_recall_forget(config_home: Path, tmp_path: Path) -> None:
    assert recalled() is None
    remember(tmp_path / "home", REPO)
    found = recalled()
    assert found is not None and found.home == (tmp_path / "home").resolve() and found.project_dir == REPO
    forget(tmp_path / "other-home")  # someone else's factory: the record stays
    assert recalled() is not None
    forget(tmp_path / "home")
    assert recalled() is None


def test_the_project_is_this_folder_when_it_has_prefect_yaml_else_the_checkout(tmp_path: Path) -> None:
    assert default_project_dir(REPO) == REPO
    assert default_project_dir(tmp_path) == REPO  # the checkout this package runs from


def test_status_from_another_folder_finds_the_factory_up_started(config_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "project" / ".talkfactory"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A factory as `up` leaves it: its state in its home, its whereabouts recorded.
        FactoryState(
            api_url="http://127.0.0.1:9/api",  # nothing listens: the server is reported unhealthy
            procs=[Proc(name="cpu-0", pid=sleeper.pid, log=str(tmp_path / "w.log"), role="cpu-worker")],
        ).save(state_file(Settings(home=home)))
        remember(home, REPO)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALKFACTORY_")}
        env |= {"XDG_CONFIG_HOME": str(config_home), "PYTHONPATH": str(REPO)}
        res = subprocess.run(
            [sys.executable, "-m", "talkfactory.cli", "factory", "status"],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        text = res.stdout + res.stderr
        assert "no factory is running" not in text, text
        assert f"home {home.resolve()}" in text and "cpu-0" in text, text
    finally:
        sleeper.kill()
        sleeper.wait()
