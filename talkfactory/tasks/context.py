"""What every task needs from its surroundings: the lineage repository and run provenance."""

from __future__ import annotations

from typing import Any

from prefect.runtime import flow_run, task_run

from talkfactory import __version__
from talkfactory.errors import is_transient
from talkfactory.infra.lineage.repository import LineageRepository, Provenance
from talkfactory.pipeline.lineage import lineage


def repository(database_url: str) -> LineageRepository:
    """One repository (and connection pool) per database per process, shared with render jobs."""
    return lineage(database_url)


def provenance() -> Provenance:
    """Flow and task run ids when running under Prefect, plus talkfactory's version."""
    return Provenance(
        flow_run_id=_str_or_none(flow_run.get_id()),
        task_run_id=_str_or_none(task_run.get_id()),
        code_version=__version__,
    )


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors another attempt could fix (not bad input)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the point is to look at whatever the task raised
        return is_transient(exc)
    return False


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None
