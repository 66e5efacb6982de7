"""The recordings list on seeded lineage: the SQL state filter agrees with the derived state, and a page
costs the same number of SQL statements whatever the number of recordings."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.overview import STATES, RecordingFilter, RenderTarget, list_recordings
from talkfactory.infra.lineage.repository import LineageRepository
from tests.fixtures.lineage_seed import seed_recordings

TARGET = RenderTarget(backend_version="1", params_hash="p")
"""What the seeded lineage's ``stale`` recordings were not rendered with."""


def seeded(tmp_path: Path, n: int, waiting: int) -> LineageRepository:
    url = f"sqlite:///{tmp_path / f'lineage-{n}.db'}"
    upgrade(url)
    repo = LineageRepository.from_url(url)
    seed_recordings(repo.engine, n, uploads_waiting=waiting)
    return repo


def statements(repo: LineageRepository, f: RecordingFilter) -> int:
    count = 0

    def on_execute(*_: object) -> None:
        nonlocal count
        count += 1

    event.listen(repo.engine, "before_cursor_execute", on_execute)
    try:
        list_recordings(repo, f, target=TARGET)
    finally:
        event.remove(repo.engine, "before_cursor_execute", on_execute)
    return count


def test_state_filter_matches_the_derived_state(tmp_path: Path) -> None:
    repo = seeded(tmp_path, 140, waiting=9)
    everything = list_recordings(repo, RecordingFilter(page_size=1000), target=TARGET)
    assert everything.total == 149 and len(everything.items) == 149
    derived: dict[str, int] = {}
    for item in everything.items:
        derived[item.state] = derived.get(item.state, 0) + 1
    assert set(derived) == set(STATES), derived
    for state in STATES:
        page = list_recordings(repo, RecordingFilter(state=state, page_size=1000), target=TARGET)
        assert page.total == derived[state], state
        assert {i.state for i in page.items} == {state}
    # Newest first, paged.
    first, second = (list_recordings(repo, RecordingFilter(page=p, page_size=20)) for p in (1, 2))
    assert first.items[0].created_at > first.items[-1].created_at > second.items[0].created_at
    assert first.pages == 8
    # Key prefix (relative to the ingest location) and date range.
    day = list_recordings(repo, RecordingFilter(prefix="live/2026-01-01/show-1", page_size=1000))
    assert {i.name for i in day.items} == {
        f"live/2026-01-01/show-{n}.flv" for n in (1, *range(10, 20), *range(100, 141))
    }
    from datetime import UTC, datetime

    window = RecordingFilter(
        since=datetime(2026, 1, 1, 1, tzinfo=UTC), until=datetime(2026, 1, 1, 2, tzinfo=UTC)
    )
    assert list_recordings(repo, window).total == 60


def test_a_recording_rendered_with_an_older_model_reads_stale_until_rerendered(tmp_path: Path) -> None:
    repo = seeded(tmp_path, 9, waiting=0)
    stale = [i for i in list_recordings(repo, RecordingFilter(), target=TARGET).items if i.stale]
    assert [i.state for i in stale] == ["stale for nightly"] and stale[0].stale == 4
    # Without a target (the model is not at hand) nothing is called stale: it reads done.
    plain = {i.id: i.state for i in list_recordings(repo, RecordingFilter()).items}
    assert plain[stale[0].id] == "done"
    # Rendered again with the target for every clip x avatar: no longer stale.
    from sqlalchemy import text

    with repo.engine.begin() as c:
        c.execute(
            text("UPDATE renders SET backend_version = '1' WHERE recording_id = :r"), {"r": stale[0].id}
        )
    again = {i.id: i.state for i in list_recordings(repo, RecordingFilter(), target=TARGET).items}
    assert again[stale[0].id] == "done"


@pytest.mark.parametrize("state", [None, "rendering", "stale for nightly"])
def test_a_page_costs_the_same_statements_at_any_size(tmp_path: Path, state: str | None) -> None:
    small = statements(seeded(tmp_path / "s", 30, waiting=3), RecordingFilter(state=state))
    large = statements(seeded(tmp_path / "l", 700, waiting=30), RecordingFilter(state=state))
    assert small == large <= 8
