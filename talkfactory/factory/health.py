"""What ``factory status`` says beyond "are the processes alive": is the Prefect server healthy, how
much work is queued and running, when the last scan ran and how it ended, and the last failures.

Prefect is asked through its REST API (a few small requests, each with a short timeout, so a
server that hangs cannot hang ``status``); failures come from lineage, which holds the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from talkfactory.infra.lineage.activity import FailureLine, recent_failures, running_renders
from talkfactory.infra.lineage.repository import LineageRepository

QUEUED_STATES = ("SCHEDULED", "PENDING")
ACTIVE_STATES = ("RUNNING",)


@dataclass(frozen=True)
class RunLine:
    name: str
    state: str
    message: str | None
    start_time: datetime | None


@dataclass
class FactoryHealth:
    api_url: str
    server_ok: bool = False
    server_error: str | None = None
    queued_runs: int | None = None
    running_runs: int | None = None
    last_scan: RunLine | None = None
    renders_running: int = 0
    failures: list[FailureLine] = field(default_factory=list)


def _count(client: httpx.Client, states: tuple[str, ...]) -> int:
    answer = client.post("/flow_runs/count", json={"flow_runs": {"state": {"type": {"any_": list(states)}}}})
    answer.raise_for_status()
    return int(answer.json())


def _last_run(client: httpx.Client, flow_name: str) -> RunLine | None:
    answer = client.post(
        "/flow_runs/filter",
        json={"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1},
    )
    answer.raise_for_status()
    runs: list[dict[str, Any]] = answer.json()
    if not runs:
        return None
    run, state = runs[0], runs[0].get("state") or {}
    start = run.get("start_time")
    return RunLine(
        name=str(run.get("name")),
        state=str(state.get("name") or state.get("type") or "?"),
        message=state.get("message"),
        start_time=datetime.fromisoformat(start) if start else None,
    )


def factory_health(api_url: str, repo: LineageRepository | None, *, timeout_s: float = 5.0) -> FactoryHealth:
    """Everything ``factory status`` prints besides processes; never raises for an unreachable server."""
    health = FactoryHealth(api_url)
    try:
        with httpx.Client(base_url=api_url, timeout=timeout_s) as client:
            ok = client.get("/health")
            health.server_ok = ok.status_code == 200
            if not health.server_ok:
                health.server_error = f"/health answered {ok.status_code}"
            else:
                health.queued_runs = _count(client, QUEUED_STATES)
                health.running_runs = _count(client, ACTIVE_STATES)
                health.last_scan = _last_run(client, "scan-ingest")
    except httpx.HTTPError as exc:
        health.server_ok, health.server_error = False, f"{type(exc).__name__}: {exc}"
    if repo is not None:
        health.renders_running = len(running_renders(repo))
        health.failures = recent_failures(repo)
    return health
