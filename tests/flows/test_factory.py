"""The factory for real: a Prefect server, a ``cpu`` worker and a Ray head with two resident render
actors (``talkfactory factory up``), SeaweedFS buckets for ingest, work and exports, lineage and the
Prefect database in PostgreSQL.

Two recordings are dropped into the ingest bucket and three avatars sit in the library. A scan
dispatches them; their render jobs go to both actors; one actor process is SIGKILLed in the middle
of a render (as a GPU process dying would) and its job must complete exactly once. A second
``process-recording`` of a finished recording renders nothing. Then a fourth avatar is added and
``nightly-reprocess`` must plan (dry run) and render exactly its missing renders.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
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
from talkfactory.factory.processes import FactoryState
from talkfactory.infra.lineage.db import make_engine
from talkfactory.infra.lineage.tables import RENDER_DONE, Clip, Export, Render, SourceObject
from talkfactory.infra.settings import Settings
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


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals open at one moment; an end does not overlap a start at the same instant."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    return peak


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


def test_factory_renders_on_resident_actors_survives_a_killed_one_and_reprocesses_nightly(
    factory: Factory,
    media: MediaSet,  # noqa: F811
    tmp_path: Path,
) -> None:
    f = factory
    _drop_recordings(f, media, tmp_path)
    scan = f.start("scan-ingest/scan-ingest", {"settle_seconds": 0, "speech": SPEECH, "dispatch": True})
    (scan,) = f.wait_final([scan.id], 120)
    assert scan.state and scan.state.type == StateType.COMPLETED, scan.state

    # SIGKILL an actor's process while it renders, once both actors have finished a render each.
    def victim() -> tuple[int, int] | None:
        renders = f.renders()
        finished = {(r.stats or {}).get("pid") for r in renders if r.status in RENDER_DONE}
        if len(finished) < 2:
            return None
        for r in renders:
            pid = (r.stats or {}).get("pid")
            if r.status == "running" and pid in finished:
                return int(r.id), int(pid)
        return None

    try:
        killed_render, killed_pid = _wait("a render running after both actors finished one", victim, 300, 0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{f.describe()}") from None
    os.kill(killed_pid, signal.SIGKILL)

    processes = f.runs("process-recording")
    assert len(processes) == 2
    done = f.wait_final([r.id for r in processes], 420)
    assert all(r.state and r.state.type == StateType.COMPLETED for r in done), [r.state for r in done]

    with f.engine.connect() as conn:
        clips = conn.execute(select(Clip.recording_id, Clip.id)).all()
        exports = conn.execute(select(Export.uri, Export.flow_run_id, Export.render_id)).all()
        sources = conn.execute(select(SourceObject.status)).scalars().all()
    renders = f.renders()
    assert len({rec for rec, _ in clips}) == 2 and len(clips) >= 4, "each recording gives two clips or more"
    expected = len(clips) * 3
    # needs_review (a failed sync check) is published too: short test clips give the check few frames.
    assert len(renders) == expected and all(r.status in RENDER_DONE for r in renders), f.describe()
    assert sorted(sources) == ["done", "done"]

    # The killed job was retried once on the restarted actor and completed exactly once.
    killed = next(r for r in renders if r.id == killed_render)
    assert killed.attempts == 2 and (killed.stats or {}).get("pid") != killed_pid
    assert sum(1 for _, _, render_id in exports if render_id == killed_render) == 1

    # Nothing duplicated or half-written in the exports bucket; each export names the run that made it.
    keys = f.export_keys()
    assert len(keys) == expected == len(set(keys)) == len(exports)
    assert all(k.startswith(("live/first/", "live/second/")) for k in keys)
    assert {flow_run_id for _, flow_run_id, _ in exports} == {str(r.id) for r in processes}

    # Both actors took work, and no actor process ever rendered two jobs at once.
    spans: dict[int, list[tuple[float, float]]] = {}
    for r in renders:
        st = r.stats or {}
        spans.setdefault(st["pid"], []).append((st["started_at"], st["finished_at"]))
    assert len(spans) >= 2 and all(max_overlap(v) == 1 for v in spans.values())

    # A second process-recording of a finished recording renders nothing and publishes nothing new.
    before_exports = {o: o for o in f.export_keys()}
    again = f.start(
        "process-recording/process-recording",
        {
            "recording": f"s3://{f.buckets['ingest']}/live/first.flv",
            "source_key": "live/first.flv",
            "speech": SPEECH,
            "executor": "ray",
        },
    )
    (again,) = f.wait_final([again.id], 300)
    assert again.state and again.state.type == StateType.COMPLETED, again.state
    assert len(f.renders()) == expected and set(f.export_keys()) == set(before_exports)

    # Nothing is missing or stale now: a nightly dry run plans nothing and renders nothing.
    dry = f.start("nightly-reprocess/nightly-reprocess", {"dry_run": True})
    (dry,) = f.wait_final([dry.id], 120)
    assert dry.state and dry.state.type == StateType.COMPLETED
    assert len(f.renders()) == expected

    # A new avatar in the library: tonight's run registers it and renders exactly its missing renders.
    cv2.imwrite(
        str(Path(f.settings.avatars_url or "") / "newcomer.png"), cv2.resize(astronaut_bgr(), (384, 384))
    )
    nightly = f.start("nightly-reprocess/nightly-reprocess", {"dry_run": False})
    (nightly,) = f.wait_final([nightly.id], 300)
    assert nightly.state and nightly.state.type == StateType.COMPLETED, nightly.state
    new = [r for r in f.renders() if r.id not in {x.id for x in renders}]
    assert len(new) == len(clips) and all(r.status in RENDER_DONE for r in new), f.describe()
    keys = f.export_keys()
    assert len(keys) == expected + len(clips)
    assert sum("/newcomer__clip" in k for k in keys) == len(clips)
