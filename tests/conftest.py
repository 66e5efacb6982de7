"""Session-wide test setup: an isolated Prefect home and talkfactory home per test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Shared fixtures (media made on the fly, real S3 and Postgres servers), visible to every test.
pytest_plugins = ["tests.fixtures.media", "tests.fixtures.servers", "tests.fixtures.ray_cluster"]

# Before anything imports Prefect: its ephemeral server keeps a database in PREFECT_HOME; one per
# session keeps the user's ~/.prefect clean and pays the migration once.
_PREFECT_HOME = tempfile.mkdtemp(prefix="tf-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "tf-numba-cache"))


@pytest.fixture
def tf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh TALKFACTORY_HOME (SQLite lineage, caches) for one test."""
    from talkfactory.infra.settings import get_settings

    home = tmp_path / "tf-home"
    monkeypatch.setenv("TALKFACTORY_HOME", str(home))
    monkeypatch.delenv("TALKFACTORY_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
