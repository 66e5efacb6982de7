"""``talkfactory lineage`` in process, on a seeded database: every column it prints comes from a typed row."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from talkfactory.cli.main import cmd_lineage
from talkfactory.cli.scan import print_ingest_lineage
from talkfactory.errors import NoFaceError
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.settings import get_settings
from tests.infra.lineage_seed import BACKEND, PROV, Seed


@pytest.fixture
def seeded(tf_home: Path) -> tuple[LineageRepository, dict[str, int]]:
    url = get_settings().resolved_database_url
    upgrade(url)
    repo = LineageRepository.from_url(url)
    seed = Seed(repo)
    rec, (first, second) = seed.recording("show", spans=[(1.0, 2.5), (4.0, 6.0)], key="live/show.flv")
    av = seed.avatar("astro")
    done = seed.render(rec, first, av, failures=[NoFaceError("no face yet", subject="astro.mp4")])
    failed = seed.render(
        rec, second, av, failures=[NoFaceError("still no face", subject="astro.mp4")], succeed=False
    )
    (source,) = repo.source_objects_for_recording(rec)
    repo.record_export(
        render_id=done, recording_id=rec, source_object_id=source.id, uri="s3://exports/show/astro.mp4",
        etag="e", size_bytes=10, prov=PROV,
    )  # fmt: skip
    return repo, {"rec": rec, "done": done, "failed": failed, "source": source.id}


def test_lineage_of_a_recording_lists_its_renders(
    seeded: tuple[LineageRepository, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, ids = seeded
    assert cmd_lineage(argparse.Namespace(ref=str(ids["rec"]))) == 0
    text = capsys.readouterr().out
    assert f"recording #{ids['rec']} /data/recordings/show.flv" in text
    assert "1.0-2.5 s" in text and "4.0-6.0 s" in text and "astro" in text and BACKEND in text
    assert f"/out/{ids['done']}.mp4" in text and "still no face" in text


def test_lineage_of_an_output_shows_only_its_render(
    seeded: tuple[LineageRepository, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, ids = seeded
    assert cmd_lineage(argparse.Namespace(ref=f"/out/{ids['done']}.mp4")) == 0
    text = capsys.readouterr().out
    assert "1.0-2.5 s" in text and "4.0-6.0 s" not in text


def test_lineage_of_an_export_walks_back_to_the_source_object(
    seeded: tuple[LineageRepository, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, ids = seeded
    assert print_ingest_lineage("show/astro.mp4")
    text = capsys.readouterr().out
    assert f"source object #{ids['source']} s3://archive/live/show.flv" in text
    assert "attempt" in text and "succeeded" in text
    assert f"recording #{ids['rec']}" in text and "s3://exports/show/astro.mp4" in text
    assert "4.0-6.0 s" not in text  # only the exported render
    assert print_ingest_lineage("live/show.flv") and "4.0-6.0 s" in capsys.readouterr().out
    assert not print_ingest_lineage("nothing-like-this.flv")
