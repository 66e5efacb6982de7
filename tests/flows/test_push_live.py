"""The ``push-live`` flow: a deployment-style run against a real RTMP server, the key only by reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkfactory.errors import ConfigurationError
from talkfactory.flows import push_live as flow_module
from talkfactory.flows.push_live import push_live_flow
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.live.push_args import LiveLimits
from talkfactory.infra.settings import get_settings
from tests.fixtures.rtmp_server import RtmpServer, rtmp_server  # noqa: F401
from tests.pipeline.test_live_push import KEY, Repo, make_source

pytestmark = pytest.mark.servers


def test_push_live_flow_pushes_records_and_keeps_the_key_out(
    rtmp_server: RtmpServer,  # noqa: F811
    tf_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db_url = get_settings().resolved_database_url
    upgrade(db_url)
    repo = Repo.from_url(db_url)
    monkeypatch.setattr(flow_module, "repository", lambda _url: repo)
    monkeypatch.setenv("TF_FLOW_LIVE_URL", rtmp_server.url(KEY))
    clip = make_source(tmp_path / "clip.mp4", seconds=3, freq=440)

    report = push_live_flow(
        sources=[str(clip)], url="env:TF_FLOW_LIVE_URL", limits=LiveLimits(), backoff_s=0.5
    )
    assert report.status == "done" and report.mode == "copy"
    [push] = repo.recent_pushes()
    assert push.status == "done" and push.flow_run_id  # provenance from the Prefect run
    assert push.target == rtmp_server.url("****")

    with pytest.raises(ConfigurationError, match="never lands in Prefect's database") as caught:
        push_live_flow(sources=[str(clip)], url=rtmp_server.url(KEY))
    assert KEY not in str(caught.value)
    assert len(repo.recent_pushes()) == 1


def test_a_push_that_fails_ends_the_run_failed_saying_why_without_the_key(
    tf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    db_url = get_settings().resolved_database_url
    upgrade(db_url)
    repo = Repo.from_url(db_url)
    monkeypatch.setattr(flow_module, "repository", lambda _url: repo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TF_FLOW_LIVE_KEY", KEY)
    clip = make_source(tmp_path / "clip.mp4", seconds=2, freq=440)
    state = push_live_flow(
        sources=[str(clip)],
        url=f"rtmp://127.0.0.1:{port}/live/env:TF_FLOW_LIVE_KEY",
        attempts=2,
        backoff_s=0.2,
        return_state=True,
    )
    assert state.is_failed()
    assert f"rtmp://127.0.0.1:{port}/live/****" in (state.message or "") and "refused" in (
        state.message or ""
    )
    assert KEY not in (state.message or "")
    [push] = repo.recent_pushes()
    assert push.status == "failed" and push.attempts == 2
