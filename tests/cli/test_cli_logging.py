"""Prefect's failure records (tracebacks) go to the log file, not the terminal; the user gets one line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from talkfactory.cli import errors
from talkfactory.errors import StoreUnavailableError


@pytest.fixture
def terminal() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = list(root.handlers)
    stream = io.StringIO()
    for h in saved:
        root.removeHandler(h)
    root.addHandler(logging.StreamHandler(stream))
    try:
        yield stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved:
            root.addHandler(h)


def test_task_tracebacks_go_to_the_log_file_only(terminal: io.StringIO, tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "talkfactory.log"
    errors.route_logs(log_path, verbose=False)
    try:
        raise StoreUnavailableError("connection refused", subject="s3://ingest/")
    except StoreUnavailableError as exc:
        logging.getLogger("prefect.task_runs").error("Task run failed", exc_info=exc)
        errors.traceback_to_log(exc)
        line, code = errors.one_line(exc, None, log_path)
    logging.getLogger("talkfactory.retry").warning("retrying s3 list")
    for h in logging.getLogger().handlers:
        h.flush()
    shown = terminal.getvalue()
    assert "Traceback" not in shown and "Task run failed" not in shown
    assert "retrying s3 list" in shown  # our own warnings still reach the user
    written = log_path.read_text()
    assert written.count("Traceback") == 2 and "Task run failed" in written
    assert line == "s3://ingest/: connection refused" and code == errors.EXIT_STOPPED
