"""A source object settled with its recording carries its sha256, as the README says lineage records."""

from __future__ import annotations

from pathlib import Path

from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository
from tests.infra.lineage_seed import PROV, sha


def test_settling_with_a_recording_records_its_sha256(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    state, _ = repo.register_source_object(
        store_url="s3://ingest/", bucket="ingest", key="live/show.flv", etag="e1", size_bytes=10,
        prov=PROV, status="processing",
    )  # fmt: skip
    rec = repo.register_recording(
        uri="/work/show.flv",
        sha256=sha("show"),
        size_bytes=10,
        duration_s=1.0,
        probe={},
        warnings=[],
        prov=PROV,
    )
    # As process-recording settles it: a recording id, no hash of its own.
    repo.mark_source_object(state.id, "done", recording_id=rec, prov=PROV)
    row = repo.find_source_object(str(state.id))
    assert row is not None and row.sha256 == sha("show")
