"""Engines and migrations for the lineage database (SQLite by default, Postgres in production)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for lineage writes from several threads and processes."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the Prefect UI or `talkfactory lineage` read while a batch writes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # pre_ping replaces connections that died with a Postgres restart between steps.
    return create_engine(url, pool_pre_ping=True, **kwargs)


def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` on the database at ``url``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def ensure_schema(url: str) -> None:
    """Migrate the embedded SQLite database on first use; insist on an explicit upgrade elsewhere.

    Several workers may start at once against Postgres, and a migration racing itself there is
    worse than a clear message, so only SQLite is migrated implicitly.
    """
    if url.startswith("sqlite"):
        upgrade(url)
        return
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    if current != head:
        from talkfactory.errors import ConfigurationError

        raise ConfigurationError(
            f"lineage schema is at {current or 'nothing'}, code needs {head}: run `talkfactory db upgrade`",
            subject=redact_url(url),
        )


def redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
