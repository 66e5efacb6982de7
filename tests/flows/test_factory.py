"""The factory for real: a Prefect server, two render workers on the ``gpu`` pool and one ``cpu``
worker (``talkfactory factory up``), SeaweedFS buckets for ingest, work and exports.

Two recordings are dropped into the ingest bucket and three avatars sit in the library. A scan
dispatches them; renders fan out over both render workers; one worker is killed (with its flow run
process, as a machine dying would) in the middle of a render. Then a fourth avatar is added and
``nightly-reprocess`` must plan (dry run) and render exactly its missing renders.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import cv2
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import make_url, select

from talkfactory.factory.local import UpOptions, down, up
from talkfactory.factory.processes import FactoryState, descendants, kill_tree
from talkfactory.infra.lineage.db import make_engine
from talkfactory.infra.lineage.tables import Clip, Export, Render, SourceObject
from talkfactory.infra.settings import Settings
from talkfactory.pipeline.fanout import max_overlap
from tests.fixtures.media import MediaSet, astronaut_bgr, ffmpeg, media  # noqa: F401
from tests.fixtures.servers import (  # noqa: F401
    PostgresServer,
    WeedServer,
    free_port,
    postgres_server,
    s3_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.servers]

REPO = Path(__file__).resolve().parents[2]
SPEECH = {"min_clip": 2.0, "max_clip": 6.0}
T = TypeVar("T")


def _wait(what: str, fn: Callable[[], T | None], timeout_s: float, every_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Factory:
    def __init__(
        self, state: FactoryState, settings: Settings, buckets: dict[str, str], s3: WeedServer
    ) -> None:
        self.state, self.settings, self.buckets, self.s3 = state, settings, buckets, s3
        self.engine = make_engine(settings.resolved_database_url)

    def client(self) -> SyncPrefectClient:
        return get_client(sync_client=True)

    def runs(self, flow_name: str) -> list[FlowRun]:
        with self.client() as c:
            deps = c.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[flow_name]))
            )
            return c.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id={"any_": [d.id for d in deps]}),  # type: ignore[arg-type]
                limit=200,
            )

    def start(self, deployment: str, parameters: dict[str, Any]) -> FlowRun:
        with self.client() as c:
            dep = c.read_deployment_by_name(deployment)
            return c.create_flow_run_from_deployment(dep.id, parameters=parameters)

    def wait_final(self, run_ids: list[Any], timeout_s: float) -> list[FlowRun]:
        def done() -> list[FlowRun] | None:
            with self.client() as c:
                runs = [c.read_flow_run(i) for i in run_ids]
            return runs if all(r.state and r.state.is_final() for r in runs) else None

        try:
            return _wait("runs to finish", done, timeout_s, 2.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None

    def describe(self) -> str:
        """Every run and render, for a failure message that says where the factory got stuck."""
        with self.client() as c:
            runs = c.read_flow_runs(limit=200)
        lines = [f"run {r.name}: {_state_text(r)}" for r in runs]
        lines += [
            f"render {r.id}: {r.status} {(r.stats or {}).get('worker')} {r.error or ''}"
            for r in self.renders()
        ]
        return "\n".join(lines)

    def renders(self) -> list[Render]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Render)).all())  # type: ignore[arg-type]

    def export_keys(self) -> list[str]:
        objs = self.s3.client().list_objects(self.buckets["exports"], recursive=True)
        return sorted(o.object_name for o in objs)


def _state_text(run: FlowRun) -> str:
    return f"{run.state.name} {(run.state.message or '')[:120]}" if run.state else "?"


@pytest.fixture
def factory(
    s3_server: WeedServer,  # noqa: F811
    postgres_server: PostgresServer,  # noqa: F811
    media: MediaSet,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Factory]:
    buckets = {k: s3_server.make_bucket() for k in ("ingest", "work", "exports")}
    library = tmp_path / "avatars"
    library.mkdir()
    shutil.copy(media.portrait, library / "astronaut.png")
    shutil.copy(media.template, library / "template.mp4")
    cv2.imwrite(str(library / "mirrored.png"), cv2.flip(astronaut_bgr(), 1))
    env = {
        "TALKFACTORY_HOME": str(tmp_path / "home"),
        "TALKFACTORY_INGEST_URL": f"s3://{buckets['ingest']}/",
        "TALKFACTORY_WORK_URL": f"s3://{buckets['work']}/",
        "TALKFACTORY_EXPORTS_URL": f"s3://{buckets['exports']}/",
        "TALKFACTORY_AVATARS_URL": str(library),
        "TALKFACTORY_S3_ENDPOINT": s3_server.endpoint,
        "TALKFACTORY_S3_ACCESS_KEY": s3_server.access_key,
        "TALKFACTORY_S3_SECRET_KEY": s3_server.secret_key,
        # Production shape: lineage in Postgres, shared by every worker.
        "TALKFACTORY_DATABASE_URL": postgres_server.url_for(postgres_server.create_database("lineage")),
    }
    prefect_db = make_url(postgres_server.url_for(postgres_server.create_database("prefect")))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    settings = Settings()
    opts = UpOptions(
        project_dir=REPO,
        settings=settings,
        port=free_port(),
        prefect_database_url=prefect_db.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False
        ),
        gpus=2,
        cpu_workers=1,
        heartbeat_s=30,
        zombie_after_s=60,
    )
    state = up(opts)
    try:
        with temporary_settings({PREFECT_API_URL: state.api_url}):
            yield Factory(state, settings, buckets, s3_server)
    finally:
        stopped = down(settings)
        assert all(p.role != "server" or clean for p, clean in stopped)


def _drop_recordings(f: Factory, media: MediaSet, tmp: Path) -> None:  # noqa: F811
    other = tmp / "second.flv"
    # Same speech, other picture: a different recording by content, with the same clips.
    ffmpeg(
        "-f", "lavfi", "-i", "mandelbrot=size=320x240:rate=25", "-i", str(media.speech_wav),
        "-map", "0:v", "-map", "1:a", "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", str(other),
    )  # fmt: skip
    client = f.s3.client()
    client.fput_object(f.buckets["ingest"], "live/first.flv", str(media.speech_flv))
    client.fput_object(f.buckets["ingest"], "live/second.flv", str(other))


def test_factory_fans_out_survives_a_dead_worker_and_reprocesses_nightly(
    factory: Factory,
    media: MediaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    f = factory
    _drop_recordings(f, media, tmp_path)
    scan = f.start("scan-ingest/scan-ingest", {"settle_seconds": 0, "speech": SPEECH, "dispatch": True})
    (scan,) = f.wait_final([scan.id], 120)
    assert scan.state and scan.state.type == StateType.COMPLETED, scan.state

    # Kill a render worker while a render runs, once both workers have finished a render each.
    workers = {p.name: p for p in f.state.procs if p.role == "gpu-worker"}

    def victim() -> tuple[FlowRun, str] | None:
        renders = f.renders()
        finished = {(r.stats or {}).get("worker") for r in renders if r.status == "succeeded"}
        if not set(workers) <= finished:
            return None
        rendering = {r.flow_run_id for r in renders if r.status == "running"}
        for run in f.runs("render-clip"):
            if str(run.id) in rendering and run.infrastructure_pid:
                pid = int(run.infrastructure_pid.rsplit(":", 1)[-1])
                for name, proc in workers.items():
                    if pid in descendants(proc.pid):
                        return run, name
        return None

    killed_run, killed_worker = _wait("a render running after both workers finished one", victim, 300, 0.2)
    kill_tree(workers[killed_worker].pid)

    processes = f.runs("process-recording")
    assert len(processes) == 2
    done = f.wait_final([r.id for r in processes], 420)
    assert all(r.state and r.state.type == StateType.COMPLETED for r in done), [r.state for r in done]

    # The killed run was marked Crashed by the zombie automation; its render was done by the other worker.
    with f.client() as c:
        crashed = c.read_flow_run(killed_run.id)
    assert crashed.state and crashed.state.type == StateType.CRASHED, crashed.state
    key = killed_run.parameters["export_key"]
    redo = [r for r in f.runs("render-clip") if r.parameters["export_key"] == key and r.id != killed_run.id]
    assert len(redo) == 1 and redo[0].state and redo[0].state.type == StateType.COMPLETED

    with f.engine.connect() as conn:
        clips = conn.execute(select(Clip.recording_id, Clip.id)).all()
        exports = conn.execute(select(Export.uri, Export.flow_run_id, Export.render_id)).all()
        sources = conn.execute(select(SourceObject.status)).scalars().all()
    renders = f.renders()
    clips_per_recording = {rec for rec, _ in clips}
    assert len(clips_per_recording) == 2 and len(clips) >= 4, "each recording should give two clips or more"
    expected = len(clips) * 3
    assert len([r for r in renders if r.status == "succeeded"]) == expected
    assert sorted(sources) == ["done", "done"]

    # Nothing duplicated or half-written in the exports bucket; each export names the run that made it.
    keys = f.export_keys()
    assert len(keys) == expected == len(set(keys)) == len(exports)
    assert all(k.startswith(("live/first/", "live/second/")) for k in keys)
    completed = {
        str(r.id): r for r in f.runs("render-clip") if r.state and r.state.type == StateType.COMPLETED
    }
    for uri, flow_run_id, _ in exports:
        run = completed[flow_run_id]
        assert uri.endswith(run.parameters["export_key"])

    # Both render workers took work, and no GPU slot ever held two renders at once.
    by_worker = {(r.stats or {}).get("worker") for r in renders}
    assert by_worker == set(workers)
    slots: dict[str, list[tuple[datetime, datetime]]] = {}
    for r in renders:
        s = r.stats or {}
        slots.setdefault(s["gpu_slot"], []).append(
            (datetime.fromisoformat(s["slot_acquired_at"]), datetime.fromisoformat(s["slot_released_at"]))
        )
    assert len(slots) == 2 and all(max_overlap(v) == 1 for v in slots.values())

    # Nothing is missing or stale now: a nightly dry run plans nothing and submits nothing.
    before = {r.id for r in f.runs("render-clip")}
    dry = f.start("nightly-reprocess/nightly-reprocess", {"dry_run": True})
    (dry,) = f.wait_final([dry.id], 120)
    assert dry.state and dry.state.type == StateType.COMPLETED
    assert {r.id for r in f.runs("render-clip")} == before

    # A new avatar in the library: tonight's run registers it and renders exactly its missing renders.
    cv2.imwrite(
        str(Path(f.settings.avatars_url or "") / "newcomer.png"), cv2.resize(astronaut_bgr(), (384, 384))
    )
    nightly = f.start("nightly-reprocess/nightly-reprocess", {"dry_run": False})
    (nightly,) = f.wait_final([nightly.id], 300)
    assert nightly.state and nightly.state.type == StateType.COMPLETED, nightly.state
    new_runs = [r for r in f.runs("render-clip") if r.id not in before]
    assert len(new_runs) == len(clips)
    assert all("/newcomer__clip" in r.parameters["export_key"] for r in new_runs)
    assert all(r.state and r.state.type == StateType.COMPLETED for r in new_runs)
    assert len(f.export_keys()) == expected + len(clips)
