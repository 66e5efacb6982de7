"""Real render jobs on Ray actors: ``process-recording`` with ``executor="ray"`` against a Ray head
started with this test's settings (actors read settings from their node's environment, as factory
actors do from ``factory up``'s), on Prefect's ephemeral API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.media import MediaSet
from tests.fixtures.ray_cluster import REPO

pytestmark = [pytest.mark.slow, pytest.mark.servers]


@pytest.fixture
def own_ray_head(tf_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import ray

    from talkfactory.factory.ray_head import auth_env, start_head, stop_head
    from talkfactory.infra.settings import get_settings
    from talkfactory.tasks import render_job

    ray.shutdown()  # this process may be joined to the session's cluster; jobs must go to this one
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    head = start_head(tmp_path / "ray-home", num_cpus=2, num_gpus=0, env=env, log_dir=tmp_path, cwd=REPO)
    for key, value in {**auth_env(head.token_path), "TALKFACTORY_RAY_ADDRESS": head.address}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        yield head.address
    finally:
        render_job._executors.pop("ray", None)
        ray.shutdown()
        stop_head(head, grace_s=2)
        get_settings.cache_clear()


def test_process_recording_renders_on_resident_actors(
    media: MediaSet, own_ray_head: str, tmp_path: Path
) -> None:
    from talkfactory.flows.process_recording import process_recording
    from talkfactory.pipeline.jobs.model import RenderOptions
    from talkfactory.tasks.render_job import executor_for

    out = tmp_path / "out"
    avatars = [str(media.portrait), str(media.template)]
    report = process_recording(
        recording=str(media.speech_flv),
        avatars=avatars,
        exports_url=str(out),
        render=RenderOptions(whole_track=True),
        executor="ray",
    )
    assert report.status == "done", report
    assert {r.status for r in report.rows} == {"succeeded"}
    ex = executor_for("ray")
    infos = ex.actors_info()  # type: ignore[attr-defined]
    assert sum(i.jobs_done for i in infos) == 2
    assert sum(i.model_loads for i in infos) == len(infos) == 1, "one actor, the backend loaded once"
    assert {i.pid for i in infos} != {os.getpid()}
