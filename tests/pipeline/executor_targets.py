"""Job functions for the executor tests, imported by Ray's workers (the test cluster's PYTHONPATH is
this checkout). They leave evidence in files, since the actor process is not the test's."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talkfactory.errors import NoFaceError


@dataclass(frozen=True)
class SleepJob:
    key: str
    evidence: str
    """Folder for started/, spans/ and done/ files."""
    work_s: float = 0.2
    load_s: float = 0.3


@dataclass(frozen=True)
class SleepResult:
    key: str
    pid: int
    model_loads: int


def load_and_sleep(job: SleepJob, cache: dict[str, Any]) -> SleepResult:
    """Load a "model" once per executor, then work; the export appears whole, at the end, once."""
    if "model" not in cache:
        time.sleep(job.load_s)
        cache["model"] = object()
        cache["model_loads"] = cache.get("model_loads", 0) + 1
    root = Path(job.evidence)
    _put(root / "started" / f"{job.key}.{uuid.uuid4().hex}", str(os.getpid()))
    t0 = time.time()
    time.sleep(job.work_s)
    span = {"pid": os.getpid(), "start": t0, "end": time.time()}
    _put(root / "spans" / f"{job.key}.json", json.dumps(span))
    _put(root / "done" / f"{job.key}.{uuid.uuid4().hex}", str(os.getpid()))
    return SleepResult(job.key, os.getpid(), cache["model_loads"])


def faceless(job: SleepJob, cache: dict[str, Any]) -> SleepResult:
    raise NoFaceError("no face in any frame", subject=job.key)


def echo(job: Any, cache: dict[str, Any]) -> Any:
    return job


def _put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cuda_visible(job: Any, cache: dict[str, Any]) -> str:
    """What a GPU job sees: Ray pins each GPU actor to its GPU through ``CUDA_VISIBLE_DEVICES``."""
    time.sleep(0.2)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")
