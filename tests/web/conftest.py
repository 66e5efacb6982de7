"""A factory that has run: lineage and MP4s from the real ``process_recording`` flow, plus stores."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from talkfactory.infra.settings import Settings, get_settings
from tests.fixtures.media import MediaSet


@dataclass(frozen=True)
class Factory:
    home: Path
    ingest: Path
    exports: Path
    avatars: Path
    recording_id: int
    settings: Settings


@pytest.fixture(scope="module")
def factory(media: MediaSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    """One recording rendered (whole track) by two avatars, into a folder exports store (~20 s)."""
    from talkfactory.flows.process_recording import process_recording
    from talkfactory.pipeline.jobs.model import RenderOptions

    root = tmp_path_factory.mktemp("webfactory")
    home, ingest, exports, avatars = (root / n for n in ("home", "ingest", "exports", "avatars"))
    for d in (ingest, exports, avatars):
        d.mkdir()
    (avatars / "astronaut.png").write_bytes(media.portrait.read_bytes())
    (avatars / "zoom.mp4").write_bytes(media.template.read_bytes())
    env = {
        "TALKFACTORY_HOME": str(home),
        "TALKFACTORY_INGEST_URL": str(ingest),
        "TALKFACTORY_EXPORTS_URL": str(exports),
        "TALKFACTORY_AVATARS_URL": str(avatars),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("TALKFACTORY_DATABASE_URL", raising=False)
        mp.delenv("TALKFACTORY_WEB_TOKEN", raising=False)
        get_settings.cache_clear()
        report = process_recording(
            recording=str(media.speech_flv),
            avatars=[str(avatars / "astronaut.png"), str(avatars / "zoom.mp4")],
            exports_url=str(exports),
            render=RenderOptions(whole_track=True),
            executor="local",
        )
        assert report.status == "done", report
        from talkfactory.infra.lineage.repository import LineageRepository

        rec = LineageRepository.from_url(get_settings().resolved_database_url).find_recording("speech.flv")
        assert rec is not None
        yield Factory(home, ingest, exports, avatars, rec.id, get_settings())
    get_settings.cache_clear()
