"""The lineage repository of this process: one per database URL, so one connection pool, whoever asks
(flows through ``tasks.context``, render jobs in ``pipeline.jobs``, Ray actors)."""

from __future__ import annotations

from functools import lru_cache

from talkfactory.infra.lineage.repository import LineageRepository


@lru_cache(maxsize=4)
def lineage(database_url: str) -> LineageRepository:
    return LineageRepository.from_url(database_url)
