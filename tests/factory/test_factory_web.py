"""``factory up --web``: the page starts as its own process beside the workers, and stops with them."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from talkfactory.factory.local import UpOptions, _start_web
from talkfactory.factory.processes import alive, stop
from talkfactory.infra.settings import Settings
from tests.web.browser import free_port


def test_the_page_starts_and_answers(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    opts = UpOptions(project_dir=Path.cwd(), settings=Settings(home=home), web_port=port)
    env = {**os.environ, "TALKFACTORY_HOME": str(home)}
    env.pop("TALKFACTORY_DATABASE_URL", None)
    web = _start_web(opts, env, tmp_path / "logs", "http://127.0.0.1:4200/api")
    try:
        assert web.role == "web" and alive(web.pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/recordings", timeout=10) as r:
            page = r.read().decode()
        assert r.status == 200 and "No recordings match" in page
        assert 'href="http://127.0.0.1:4200"' in page  # the Prefect UI link, from the factory's API URL
    finally:
        assert stop(web, grace_s=10)
    assert not alive(web.pid)
