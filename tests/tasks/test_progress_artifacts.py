"""Progress artifacts never hold up a render, even with the Prefect API gone."""

from __future__ import annotations

import time

from prefect.settings import PREFECT_API_URL, temporary_settings

from talkfactory.tasks.progress_artifacts import CLOSE_WAIT_S, BackgroundProgressArtifact
from tests.fixtures.servers import free_port


def test_updates_return_at_once_when_the_api_is_gone() -> None:
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        t0 = time.monotonic()
        artifact = BackgroundProgressArtifact("render test")
        for done in range(0, 3001, 25):
            artifact.update(done, 3000)  # a render's worth of progress calls
        artifact.close()
        assert time.monotonic() - t0 < CLOSE_WAIT_S + 0.5
