"""The page in a real browser: upload, list, render grid with thumbnails, playing video, channel ZIP,
retiring an avatar, a quarantined upload's reason, the live view. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from talkfactory.infra.lineage.repository import LineageRepository, Provenance
from talkfactory.infra.stores import LocalObjectStore
from talkfactory.pipeline.ingest import ingest_location, plan_scan
from talkfactory.web.app import create_app
from tests.web.browser import browser_page, serving
from tests.web.conftest import Factory

pytestmark = pytest.mark.slow

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def site(factory: Factory) -> Iterator[str]:
    with serving(create_app(factory.settings)) as url:
        yield url


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    with browser_page(tmp_path) as p:
        yield p


def shot(page: Any, name: str) -> None:
    """A screenshot for the docs, in 256 colours (a third of the size, still readable)."""
    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), type="png", full_page=False)
    with Image.open(path) as image:
        image.convert("RGB").quantize(256).save(path, optimize=True)


def repo(factory: Factory) -> LineageRepository:
    return LineageRepository.from_url(factory.settings.resolved_database_url)


def scan_registers(factory: Factory) -> None:
    """The scan's first step, as ``scan_ingest`` takes it: plan the location, register what is new."""
    store = LocalObjectStore(factory.ingest)
    loc = ingest_location(store)
    plan = plan_scan(store, "", repo(factory), settle_seconds=0)
    for info in plan.new:
        repo(factory).register_source_object(
            store_url=loc.store_url, bucket=loc.bucket, key=loc.full_key(info.key), etag=info.etag,
            size_bytes=info.size, prov=Provenance(),
        )  # fmt: skip


def test_upload_then_the_list_shows_it_new(page: Any, site: str, factory: Factory, tmp_path: Path) -> None:
    flv = tmp_path / "tiny show.flv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-f", "lavfi",
         "-i", "testsrc2=size=64x64:rate=10:duration=1", "-c:v", "libx264", "-c:a", "aac", "-f", "flv",
         str(flv)],
        check=True,
    )  # fmt: skip
    page.goto(f"{site}/upload")
    page.set_input_files("#files", str(flv))
    page.click("button[type=submit]")
    page.wait_for_selector("#upload-results")
    assert "stored as" in page.inner_text("#upload-results tr.ok")
    assert (factory.ingest / "tiny show.flv").read_bytes() == flv.read_bytes()
    shot(page, "upload")
    scan_registers(factory)
    page.goto(f"{site}/recordings?prefix=tiny")
    row = page.locator("#recordings-table tbody tr").first
    assert "tiny show.flv" in row.inner_text() and row.get_attribute("data-state") == "new"


def test_quarantined_upload_shows_why(page: Any, site: str, factory: Factory) -> None:
    loc = ingest_location(LocalObjectStore(factory.ingest))
    why = "InvalidMediaError: not a media file: it is text (ASCII); we accept FLV, MP4, MOV, MKV"
    repo(factory).register_source_object(
        store_url=loc.store_url, bucket=loc.bucket, key=loc.full_key("notes.flv"), etag="e1", size_bytes=40,
        prov=Provenance(), status="quarantined", error=why,
    )  # fmt: skip
    page.goto(f"{site}/recordings?state=quarantined")
    row = page.locator("#recordings-table tbody tr", has_text="notes.flv")
    assert row.get_attribute("data-state") == "quarantined"
    assert "not a media file" in row.locator(".why").inner_text()
    page.goto(f"{site}/recordings")
    shot(page, "recordings")


def test_grid_thumbnails_video_plays_and_channel_zip(
    page: Any, site: str, factory: Factory, tmp_path: Path
) -> None:
    page.goto(f"{site}/recordings/{factory.recording_id}")
    cells = page.locator("#grid .cell")
    assert cells.count() == 2
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img.thumb')].every(i => i.complete && i.naturalWidth > 0)"
    )
    widths = page.eval_on_selector_all("#grid img.thumb", "imgs => imgs.map(i => i.naturalWidth)")
    assert widths == [240, 240]
    shot(page, "recording")
    video = page.locator("#grid video").first
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('#grid video').currentTime > 0.3", timeout=15000)
    with page.expect_download() as dl:
        page.click("#zip-master")
    saved = tmp_path / "master.zip"
    dl.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        names = sorted(zf.namelist())
        assert names == ["astronaut.mp4", "zoom.mp4"]
        assert all(zf.read(n)[4:8] == b"ftyp" for n in names)
        assert [(factory.exports / "speech" / n).read_bytes() == zf.read(n) for n in names] == [True, True]


def test_retire_and_reactivate_an_avatar(page: Any, site: str, factory: Factory) -> None:
    page.goto(f"{site}/avatars")
    card = page.locator(".avatar[data-avatar=zoom]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.avatar img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "avatars")
    card.get_by_role("button", name="Retire").click()
    page.wait_for_url(f"{site}/avatars")
    assert "retired" in page.locator(".avatar[data-avatar=zoom]").inner_text()
    from talkfactory.infra.lineage.avatars import list_avatars

    assert "zoom" not in {a.name for a in list_avatars(repo(factory))}
    page.locator(".avatar[data-avatar=zoom]").get_by_role("button", name="Reactivate").click()
    page.wait_for_url(f"{site}/avatars")
    assert "zoom" in {a.name for a in list_avatars(repo(factory))}


def test_live_view_refreshes_in_place(page: Any, site: str, factory: Factory) -> None:
    from sqlalchemy import update

    from talkfactory.infra.lineage.tables import Render

    page.goto(f"{site}/live")
    assert "Nothing is rendering" in page.inner_text("#live")
    rid = repo(factory).renders_for_recording(factory.recording_id)[0].render.id
    with repo(factory).session() as s:
        s.execute(update(Render).where(Render.id == rid).values(status="running"))
    repo(factory).annotate_render(rid, {"progress": {"done": 40, "total": 100}})
    try:
        # No reload: live.js replaces the fragment within a couple of seconds.
        page.wait_for_selector(f"#live tr[data-render='{rid}'] .frames", timeout=8000)
        assert "40/100 frames" in page.inner_text("#live")
        shot(page, "live")
    finally:
        with repo(factory).session() as s:
            s.execute(update(Render).where(Render.id == rid).values(status="succeeded"))
