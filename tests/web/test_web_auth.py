"""The token off loopback, the same-origin rule for writes, and the pure helpers the page stands on."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from talkfactory.errors import ConfigurationError
from talkfactory.infra.lineage.overview import RecordingItem, RenderCounts, derive_state
from talkfactory.infra.settings import Settings
from talkfactory.web.app import create_app
from talkfactory.web.auth import COOKIE, is_loopback, token_needed
from talkfactory.web.media import OutsideStoresError, RangeNotSatisfiableError, StoreResolver, parse_range
from talkfactory.web.upload import UploadRefusedError, sanitize_name
from tests.web.browser import serving

TOKEN = "s3cr3t-t0ken-for-tests"


def own_address() -> str | None:
    """This host's address on its own (non-loopback) interface, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the route's address
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if is_loopback(address) else address


def test_binding_beyond_loopback_needs_a_token() -> None:
    assert token_needed("127.0.0.1", None) is None and token_needed("::1", None) is None
    assert token_needed("localhost", TOKEN) == TOKEN
    with pytest.raises(ConfigurationError, match="TALKFACTORY_WEB_TOKEN"):
        token_needed("0.0.0.0", None)
    with pytest.raises(ConfigurationError):
        token_needed("192.0.2.7", "")
    assert token_needed("0.0.0.0", TOKEN) == TOKEN


def test_requests_without_the_token_are_refused_on_a_real_interface(tmp_path: Path) -> None:
    host = own_address()
    if host is None:
        pytest.skip("this host has no non-loopback interface address")
    app = create_app(Settings(home=tmp_path / "home"), token=token_needed(host, TOKEN))
    with serving(app, host=host) as url:
        assert httpx.get(f"{url}/recordings").status_code == 401
        assert httpx.get(f"{url}/recordings", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(f"{url}/recordings", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "Recordings" in ok.text
        # ?token= once: an HttpOnly cookie, and a redirect that drops the token from the address.
        first = httpx.get(f"{url}/recordings?state=done&token={TOKEN}")
        assert first.status_code == 303 and first.headers["location"] == "/recordings?state=done"
        cookie = first.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert httpx.get(f"{url}/recordings", cookies={COOKIE: TOKEN}).status_code == 200


def test_writes_need_this_pages_origin(tmp_path: Path) -> None:
    client = TestClient(create_app(Settings(home=tmp_path / "home")), base_url="http://127.0.0.1:8470")
    form = {"name": "nobody", "active": "0"}
    assert client.post("/avatars/active", data=form).status_code == 403
    evil = client.post("/avatars/active", data=form, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    mine = client.post("/avatars/active", data=form, headers={"Origin": "http://127.0.0.1:8470"})
    assert mine.status_code == 404  # allowed through, and there is no such avatar


def test_parse_range() -> None:
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-", 100) == (0, 99)
    assert parse_range("bytes=10-19", 100) == (10, 19)
    assert parse_range("bytes=90-500", 100) == (90, 99)
    assert parse_range("bytes=-5", 100) == (95, 99)
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole object
    with pytest.raises(RangeNotSatisfiableError):
        parse_range("bytes=100-", 100)


def test_sanitize_name() -> None:
    assert sanitize_name("../../show.flv") == "show.flv"
    assert sanitize_name("C:\\Users\\me\\live 1.MP4") == "live 1.MP4"
    assert sanitize_name("bell\x07 and\ttab.flv") == "bell andtab.flv"
    assert sanitize_name(".hidden.flv") == "hidden.flv"
    for bad in ("notes.txt", "..", "/", "x.flv/"):
        with pytest.raises(UploadRefusedError):
            sanitize_name(bad)


def test_resolver_serves_only_inside_the_stores(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "show").mkdir(parents=True)
    (exports / "show" / "a.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"y")
    (exports / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    r = StoreResolver(Settings(home=tmp_path / "home", exports_url=str(exports)))
    assert r.locate((exports / "show" / "a.mp4").as_uri()).key == "show/a.mp4"
    for uri in (
        (tmp_path / "secret.mp4").as_uri(),
        f"file://{exports}/../secret.mp4",
        f"{exports}/show/../../secret.mp4",
        (exports / "link.mp4").as_uri(),
        "s3://other-bucket/a.mp4",
        "http://example.com/a.mp4",
    ):
        with pytest.raises(OutsideStoresError):
            r.locate(uri)
    for key in ("../secret.mp4", "/etc/passwd", "show/../../secret.mp4", "a\x00b"):
        with pytest.raises(OutsideStoresError):
            r.in_store(str(exports), key)


def _item(**kw: object) -> RecordingItem:
    base: dict[str, object] = {
        "kind": "recording", "id": 1, "name": "x.flv", "created_at": datetime.now(UTC), "row_status": "ok",
        "error": None,
    }  # fmt: skip
    base.update(kw)
    return RecordingItem(**base)  # type: ignore[arg-type]


def test_derive_state() -> None:
    assert derive_state(_item(kind="source", row_status="registered")) == "new"
    assert derive_state(_item(kind="source", row_status="quarantined")) == "quarantined"
    assert derive_state(_item(row_status="failed")) == "quarantined"
    assert derive_state(_item()) == "new"
    assert derive_state(_item(clips=3)) == "speech done"
    assert derive_state(_item(source_status="done")) == "no speech"
    running = _item(renders=RenderCounts(total=4, running=1, done=2, failed=1))
    assert derive_state(running) == "rendering" and running.state_text == "rendering 2/4"
    assert derive_state(_item(renders=RenderCounts(total=4, done=3, failed=1))) == "done with failures"
    assert derive_state(_item(renders=RenderCounts(total=2, done=2, needs_review=1))) == "needs review"
    assert derive_state(_item(renders=RenderCounts(total=2, done=2))) == "done"
