"""How the command line ends: one clear line per error, tracebacks in the log file, README exit codes.

Exit codes (README "Errors"): 0 every render succeeded (or the recording holds no speech), 1 some
item failed, 2 an error that stopped the job (bad configuration, an unusable recording, a lineage
database or output folder that cannot be used), 130 interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from talkfactory.errors import OutputNotWritableError, TalkfactoryError

EXIT_OK = 0
EXIT_ITEM_FAILED = 1
EXIT_STOPPED = 2
EXIT_INTERRUPTED = 130

_trace = logging.getLogger("talkfactory.traceback")
"""Tracebacks of errors that stopped a command: to the log file only, never the terminal."""
_trace.propagate = False
_trace.addHandler(logging.NullHandler())


# ---------------------------------------------------------------- pre-flight checks


def check_output_folder(path: Path) -> None:
    """``OutputNotWritableError`` unless ``path`` exists (or can be made) and a file can be written in it."""
    from talkfactory.infra.files import partial_name

    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / partial_name(".write-check")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot write to the output folder ({exc.strerror or exc}): choose another --out",
            subject=str(path),
        ) from exc


def check_lineage_database(url: str) -> None:
    from talkfactory.infra.lineage.db import check_database

    check_database(url)


# ---------------------------------------------------------------- logging


def log_file(home: Path) -> Path:
    return home / "logs" / "talkfactory.log"


def route_logs(path: Path, *, verbose: bool) -> None:
    """Everything (tracebacks included) to ``path``; the terminal keeps talkfactory's own warnings.

    Prefect logs each failed task and flow with its traceback on the root logger's console handler;
    the command prints its own summary and one line per error, so those records go to the file (and
    to the Prefect run log through Prefect's API handler) but not to the terminal, unless ``-v``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    except OSError:
        return  # no log file (read-only home): the terminal is all there is
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    _trace.addHandler(handler)
    if not verbose:
        for h in root.handlers:
            if h is not handler:
                h.addFilter(_terminal_filter)


def _terminal_filter(record: logging.LogRecord) -> bool:
    # Prefect's engine records (task/flow failures with tracebacks, "Crash detected!") stay off the terminal.
    return not record.name.startswith("prefect")


def traceback_to_log(exc: BaseException) -> None:
    _trace.error("the command stopped: %s", exc, exc_info=exc)


# ---------------------------------------------------------------- interrupts


@contextmanager
def stopping_on_signals(on_first: Callable[[], None]) -> Iterator[None]:
    """First SIGINT/SIGTERM: ask the work to stop (``request_stop``) and let it wind down; second: abort.

    Work stops at its next frame or chunk, cleans up and is recorded ``interrupted``; the command
    then prints what finished and exits 130. A second Ctrl-C raises ``KeyboardInterrupt`` at once.
    """
    from talkfactory.pipeline.interrupt import request_stop, stop_requested

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop_requested():
            raise KeyboardInterrupt
        request_stop(f"interrupted ({signal.Signals(signum).name})")
        on_first()

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def is_database_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("sqlalchemy", "sqlite3", "psycopg2", "psycopg"))


def one_line(exc: BaseException, database_url: str | None, log_path: Path | None) -> tuple[str, int]:
    """The line to print for an error that stopped the command, and the exit code."""
    if isinstance(exc, TalkfactoryError):
        return str(exc), EXIT_STOPPED
    if database_url is not None and is_database_error(exc):
        from talkfactory.infra.lineage.db import describe_database_error

        return str(describe_database_error(database_url, exc)), EXIT_STOPPED
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}", EXIT_STOPPED
    where = f" (traceback in {log_path})" if log_path else ""
    return f"{type(exc).__name__}: {exc}{where}", EXIT_STOPPED


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_ITEM_FAILED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "check_lineage_database",
    "check_output_folder",
    "log_file",
    "one_line",
    "route_logs",
    "stopping_on_signals",
    "traceback_to_log",
]
