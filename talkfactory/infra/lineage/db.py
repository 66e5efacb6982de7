"""Engines and migrations for the lineage database (SQLite by default, Postgres in production)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from talkfactory.errors import LineageDatabaseError

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


_SQLITE_ADVICE: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("file is not a database", "malformed", "not a database"),
        "is not a readable SQLite database (corrupt or another kind of file): move it aside or restore it"
        " from a backup (a new one is created where it was), or set TALKFACTORY_DATABASE_URL",
    ),
    (
        ("readonly", "read-only", "unable to open", "permission denied"),
        "cannot be written (a read-only file, folder or file system): make it and its folder writable,"
        " or set TALKFACTORY_DATABASE_URL to one that is",
    ),
    (
        ("disk is full", "no space left"),
        "cannot be written: its disk is full; free space and run again",
    ),
)


def describe_database_error(url: str, exc: BaseException) -> LineageDatabaseError:
    """One clear error for a database that cannot be used: which one (password masked), why, what to do."""
    text = (
        str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if str(exc).strip()
        else type(exc).__name__
    )
    lowered = text.lower()
    if url.startswith("sqlite"):
        for phrases, advice in _SQLITE_ADVICE:
            if any(p in lowered for p in phrases):
                return LineageDatabaseError(
                    f"{advice} ({text})", subject=f"lineage database {redact_url(url)}"
                )
        return LineageDatabaseError(f"cannot be used ({text})", subject=f"lineage database {redact_url(url)}")
    if any(p in lowered for p in ("password authentication", "authentication failed", "role ")):
        advice = "refused our credentials: check the user and password in TALKFACTORY_DATABASE_URL"
    elif "does not exist" in lowered:
        advice = "does not exist on the server: create it, then run `talkfactory db upgrade`"
    else:
        advice = "cannot be reached: start it, or fix the host and port in TALKFACTORY_DATABASE_URL"
    return LineageDatabaseError(f"{advice} ({text})", subject=f"lineage database {redact_url(url)}")


def check_database(url: str, *, connect_timeout_s: int = 10) -> None:
    """Fail fast with ``LineageDatabaseError`` when the lineage database cannot be read and written.

    SQLite: the file must be a database (or not exist yet) and writable (a write transaction is
    begun and rolled back). Postgres: a connection must open within ``connect_timeout_s``. Nothing
    is changed either way.
    """
    from sqlalchemy.exc import SQLAlchemyError

    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    try:
        engine = make_engine(url, **kwargs)
    except (SQLAlchemyError, OSError) as exc:
        raise describe_database_error(url, exc) from exc
    try:
        with engine.connect() as conn:
            if url.startswith("sqlite"):
                conn.exec_driver_sql("PRAGMA schema_version").scalar()
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.exec_driver_sql("ROLLBACK")
            else:
                conn.exec_driver_sql("SELECT 1").scalar()
    except (SQLAlchemyError, OSError) as exc:
        raise describe_database_error(url, exc) from exc
    finally:
        engine.dispose()


def redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
