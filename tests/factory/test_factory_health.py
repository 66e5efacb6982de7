"""``factory status``'s health lines against a real Prefect server and lineage with failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkfactory.factory.health import factory_health
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository, Provenance
from tests.web.browser import free_port

pytestmark = pytest.mark.servers


def test_health_counts_runs_names_the_last_scan_and_failures(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    repo.record_recording_failure(
        uri="file:///in/notes.flv", sha256=None, error=ValueError("not a media file"), prov=Provenance()
    )

    @flow(name="scan-ingest")
    def scan() -> str:
        return "ok"

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        scan()
        api = PREFECT_API_URL.value()
        h = factory_health(api, repo)
        assert h.server_ok and h.queued_runs == 0 and h.running_runs == 0
        assert h.last_scan is not None and h.last_scan.state == "Completed"
    assert [(f.what, f.subject) for f in h.failures] == [("recording", "file:///in/notes.flv")]
    assert "not a media file" in (h.failures[0].error or "")

    down = factory_health(f"http://127.0.0.1:{free_port()}/api", None, timeout_s=1)
    assert not down.server_ok and down.server_error and down.queued_runs is None
