"""The ``nightly-reprocess`` flow itself, on Prefect's ephemeral API, against a seeded lineage database.

A dry run must plan exactly what lineage says is missing or stale, publish the plan as artifacts, and
submit and write nothing: there is no ``render-clip`` deployment here, so any submission would fail it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import Artifact

from talkfactory.errors import FFmpegError, NoFaceError
from talkfactory.flows.nightly_reprocess import nightly_reprocess
from talkfactory.infra.lineage.db import upgrade
from talkfactory.infra.lineage.repository import LineageRepository
from talkfactory.infra.settings import get_settings
from talkfactory.models.lipsync.registry import backend_version
from talkfactory.pipeline.jobs.model import RenderParams
from talkfactory.pipeline.reprocess import PLAN_KINDS
from tests.infra.lineage_seed import PARAMS_CRF18, Seed, table_fingerprint

OLD_VERSION = "weightless-0.9.0"
Planned = tuple[str, int, int | None, str | None]
"""(kind, recording id, clip id, avatar name), as the flow's summary lists them."""


@dataclass
class Archive:
    repo: LineageRepository
    version: str
    params: str
    planned: set[Planned]
    """What the flow must plan to submit."""
    counts: dict[str, int]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LineageRepository]:
    url = f"sqlite:///{tmp_path / 'lineage.db'}"
    monkeypatch.setenv("TALKFACTORY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TALKFACTORY_DATABASE_URL", url)
    # Planning depends on these; the developer's environment must not change what "current" means.
    for name in ("AVATARS_URL", "BACKEND", "CHECKPOINT", "CRF", "PRESET", "INGEST_URL", "EXPORTS_URL"):
        monkeypatch.delenv(f"TALKFACTORY_{name}", raising=False)
    get_settings.cache_clear()
    upgrade(url)
    repo = LineageRepository.from_url(url)
    yield repo
    repo.engine.dispose()
    get_settings.cache_clear()


def current_params() -> str:
    s = get_settings()
    return RenderParams(backend="weightless", crf=s.crf, preset=s.preset).params_hash()


@pytest.fixture
def archive(repo: LineageRepository) -> Archive:
    """Three recordings, two avatars; some renders current, some stale, missing, failed, or no clips."""
    seed = Seed(repo)
    version, params = backend_version("weightless"), current_params()
    assert OLD_VERSION != version
    ra, (a1, a2) = seed.recording("show-a", key="2026/05/01/show-a.flv")
    rb, (b1, b2, b3) = seed.recording(
        "show-b", spans=[(0.5, 2.0), (3.0, 5.0), (7.0, 8.0)], key="2026/05/02/show-b.flv"
    )
    rc, _ = seed.recording("show-c", spans=[], key="2026/05/03/show-c.flv")
    astro, nova = seed.avatar("astro"), seed.avatar("nova")

    def done(rec: int, clip: int, avatar: int) -> None:
        seed.render(rec, clip, avatar, version=version, params=params)

    done(ra, a1, astro)
    done(ra, a1, nova)
    done(ra, a2, astro)
    seed.render(ra, a2, nova, version=OLD_VERSION, params=params)  # stale-backend
    seed.render(rb, b1, astro, version=version, params=PARAMS_CRF18)  # stale-params
    done(rb, b1, nova)
    done(rb, b2, astro)
    # (b2, nova) never rendered: missing
    transient = FFmpegError("encoder crashed", subject="x")
    seed.render(rb, b3, astro, version=version, params=params, failures=[transient], succeed=False)
    no_face = NoFaceError("no face", subject="nova")
    seed.render(rb, b3, nova, version=version, params=params, failures=[no_face], succeed=False)
    planned: set[Planned] = {
        ("needs-speech", rc, None, None),
        ("missing", rb, b2, "nova"),
        ("stale-backend", ra, a2, "nova"),
        ("stale-params", rb, b1, "astro"),
        ("retry", rb, b3, "astro"),
    }
    counts: dict[str, int] = {kind: 0 for kind in PLAN_KINDS}
    counts.update({"needs-speech": 1, "missing": 1, "stale-backend": 1, "stale-params": 1, "retry": 1})
    counts.update({"given-up": 1, "done": 5})
    return Archive(repo, version, params, planned, counts)


def run_nightly(**parameters: Any) -> tuple[dict[str, Any], UUID]:
    state = nightly_reprocess(**parameters, return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    summary = state.result()
    assert isinstance(summary, dict)
    return summary, flow_run_id


def artifact(flow_run_id: UUID, key: str) -> Artifact:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    assert len(found) == 1, f"{len(found)} {key!r} artifacts for flow run {flow_run_id}"
    return found[0]


def table_rows(art: Artifact) -> list[dict[str, Any]]:
    data = json.loads(art.data) if isinstance(art.data, str) else art.data
    assert isinstance(data, list)
    return data


def assert_nothing_ran_under(flow_run_id: UUID) -> None:
    """No task runs (``run_deployment`` as a subflow makes one) and no child flow runs."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
    assert [r.name for r in runs] == ["nightly "]  # the flow_run_name template with an empty prefix
    assert tasks == [] and children == []


def test_a_dry_run_plans_exactly_the_missing_and_stale_renders_and_changes_nothing(
    archive: Archive,
) -> None:
    before = table_fingerprint(archive.repo)

    summary, run_id = run_nightly(dry_run=True)

    assert summary["dry_run"] is True
    assert summary["backend_version"] == archive.version
    assert summary["counts"] == archive.counts
    planned = [(p["kind"], p["recording_id"], p["clip_id"], p["avatar"]) for p in summary["planned"]]
    assert len(planned) == len(archive.planned)
    assert set(planned) == archive.planned
    assert all(p["reason"] for p in summary["planned"])
    assert "renders" not in summary  # nothing was submitted, so nothing was waited for

    assert table_fingerprint(archive.repo) == before
    assert_nothing_ran_under(run_id)

    plan = artifact(run_id, "nightly-plan")
    assert plan.type == "table"
    rows = table_rows(plan)
    # Every item that is not done: the five to submit and the one given up on.
    assert len(rows) == 6
    assert sorted(r["kind"] for r in rows) == sorted([k for k, *_ in archive.planned] + ["given-up"])
    assert plan.description == "would submit: 5 items"

    report = artifact(run_id, "nightly-report")
    assert report.type == "markdown"
    assert isinstance(report.data, str)
    assert report.data.startswith("# Dry run: nightly re-process plan")
    kind_rows = [line for line in report.data.splitlines() if line.startswith("| ") and "kind" not in line]
    assert len(kind_rows) == len(PLAN_KINDS)
    assert {f"| {kind} | {n} |" for kind, n in archive.counts.items()} == set(kind_rows)


def test_a_dry_run_limited_to_a_prefix_plans_only_those_recordings(archive: Archive) -> None:
    summary, run_id = run_nightly(dry_run=True, prefix="2026/05/02/")
    show_b = {p for p in archive.planned if p[0] in ("missing", "stale-params", "retry")}
    planned = {(p["kind"], p["recording_id"], p["clip_id"], p["avatar"]) for p in summary["planned"]}
    assert planned == show_b
    assert summary["counts"]["done"] == 2 and summary["counts"]["given-up"] == 1
    assert len(table_rows(artifact(run_id, "nightly-plan"))) == 4


def test_an_up_to_date_archive_submits_nothing_even_for_real(repo: LineageRepository) -> None:
    seed = Seed(repo)
    version, params = backend_version("weightless"), current_params()
    rec, clips = seed.recording("show-a", key="2026/05/01/show-a.flv")
    astro = seed.avatar("astro")
    for clip in clips:
        seed.render(rec, clip, astro, version=version, params=params)
    before = table_fingerprint(repo)

    summary, run_id = run_nightly(dry_run=False)

    assert summary["planned"] == []
    assert {k: n for k, n in summary["counts"].items() if n} == {"done": 2}
    assert table_fingerprint(repo) == before
    assert_nothing_ran_under(run_id)
    assert table_rows(artifact(run_id, "nightly-plan")) == [{"kind": "nothing to do"}]
    report = artifact(run_id, "nightly-report")
    assert isinstance(report.data, str) and report.data.startswith("# nightly re-process plan")


def test_a_dry_run_with_channels_plans_re_exports_of_finished_renders(archive: Archive) -> None:
    before = table_fingerprint(archive.repo)
    summary, run_id = run_nightly(dry_run=True, channels=["youtube-shorts"])
    done = archive.counts["done"]
    assert done > 0
    # Every finished, current render lacks its Shorts file (and its measured master): re-export it.
    assert summary["counts"]["stale-exports"] == done and summary["counts"]["done"] == 0
    reasons = {p["reason"] for p in summary["planned"] if p["kind"] == "stale-exports"}
    assert reasons == {"no current export for youtube-shorts, master"}
    assert table_fingerprint(archive.repo) == before
    assert_nothing_ran_under(run_id)
