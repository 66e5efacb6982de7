"""The factory's renders on resident executors: orchestration overhead, model loads, 1 -> 2 executors.

    .venv/bin/python bench/bench_factory.py [--clips 2] [--clip-seconds 60] [--avatars 2]
                                            [--executors 1,2] [--sqlite] [--json PATH]

Builds a recording of ``--clips`` stretches of ~``--clip-seconds`` s of piper speech (so the speech
step cuts exactly those clips), a 1280x720 template and a portrait. For each executor count it
starts the local factory (``factory up``: a real Prefect server, its database in a throwaway
PostgreSQL unless ``--sqlite``; a Ray head with that many render actors; lineage in SQLite) and
runs the ``process-recording`` deployment twice on the same batch with ``force`` (every job renders
again). From lineage, for the first batch:

  render s          the sum of the renders' own times (lineage ``wall_s`` plus the sync check of the
                    written file, ``stage_s.qc``)
  in executor s     the sum of each job's time inside its executor (render, upload, lineage writes)
  window s          from the first render's start to the last render's export being recorded
  overhead ratio    1 - render s / (executors x window s): the share of executor time spent not
                    rendering while work waits (target < 5 %)
  idle ratio        1 - in executor s / (executors x window s): executors idle between jobs, the
                    orchestration alone (Prefect task, actor dispatch)
  renders/min       renders / window

and the model loads over all actors after the first batch (target <= executors) and during the
second (target 0: the models stayed loaded across parent flow runs). ``--json`` writes the first
batch's figures for the largest executor count, plus every count's, for CI dashboards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.objects import StateType  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import make_url, select  # noqa: E402

from talkfactory.factory.local import UpOptions, down, up  # noqa: E402
from talkfactory.factory.ray_head import auth_env  # noqa: E402
from talkfactory.infra.lineage.db import make_engine  # noqa: E402
from talkfactory.infra.lineage.tables import Export, Render  # noqa: E402
from talkfactory.infra.settings import Settings  # noqa: E402
from talkfactory.models.speech.tts import synthesize  # noqa: E402
from talkfactory.pipeline.executors.ray_status import cluster_report  # noqa: E402
from tests.fixtures.media import astronaut_bgr, ffmpeg, make_template, write_wav  # noqa: E402
from tests.fixtures.servers import PostgresServer, free_port  # noqa: E402

console = Console(width=140)
REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "Good evening and welcome back to the stream, tonight we look at the numbers from last week.",
    "Sales went up in the north and stayed flat in the south, which is what we expected.",
    "Remember to like and share if you find this useful, and ask your questions in the chat.",
    "Next we talk about the new product line and what it means for our regular customers.",
]


def make_recording(root: Path, clips: int, clip_seconds: float) -> Path:
    """Speech in ``clips`` stretches of ~``clip_seconds`` s: sentences 0.15 s apart, stretches 1.5 s apart."""
    parts = [synthesize(s) for s in SENTENCES]
    rate = parts[0][1]
    gap, pause = np.zeros(int(0.15 * rate), np.float32), np.zeros(int(1.5 * rate), np.float32)
    out: list[np.ndarray] = [pause]
    for _ in range(clips):
        stretch: list[np.ndarray] = []
        n = 0
        while sum(len(a) for a in stretch) < clip_seconds * rate:
            stretch += [parts[n % len(parts)][0], gap]
            n += 1
        out += stretch[:-1] + [pause]
    wav = root / "speech.wav"
    write_wav(wav, np.concatenate(out), rate)
    flv = root / "show.flv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-i", str(wav), "-map", "0:v", "-map", "1:a",
        "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-f", "flv", str(flv),
    )  # fmt: skip
    return flv


def make_avatars(root: Path, count: int) -> list[Path]:
    portrait = root / "portrait.png"
    cv2.imwrite(str(portrait), astronaut_bgr())
    template = root / "template720.mp4"
    make_template(portrait, template, size="1280x720", seconds=4.0)
    avatars = [template, portrait]
    for i in range(2, count):
        extra = root / f"mirrored{i}.png"
        cv2.imwrite(str(extra), cv2.flip(astronaut_bgr(), 1))
        avatars.append(extra)
    return avatars[:count]


def model_loads(address: str) -> tuple[int, int]:
    """(model loads over all render actors, actors answering) as the actors themselves count them."""
    report = cluster_report(address)
    actors = [a for a in report.actors if a.name.startswith("render-")]
    return sum(a.model_loads for a in actors), len(actors)


def run_batches(
    root: Path, recording: Path, avatars: list[Path], executors: int, prefect_db: str | None, clip_s: float
) -> dict[str, Any]:
    import ray

    home = root / f"home-{executors}"
    settings = Settings(home=home)
    os.environ["TALKFACTORY_HOME"] = str(home)
    state = up(
        UpOptions(
            project_dir=REPO,
            settings=settings,
            port=free_port(),
            prefect_database_url=prefect_db,
            gpus=executors,
        )
    )
    assert state.ray is not None, "factory up started no Ray head"
    os.environ.update(auth_env(state.ray.token_path))
    batches = []
    try:
        with temporary_settings({PREFECT_API_URL: state.api_url}), get_client(sync_client=True) as c:
            dep = c.read_deployment_by_name("process-recording/process-recording")
            params = {
                "recording": str(recording),
                "avatars": [str(a) for a in avatars],
                "render": {"force": True},
                "speech": {"min_clip": clip_s * 0.5, "max_clip": clip_s * 1.3},
                "executor": "ray",
            }
            loads_before = 0
            for _ in range(2):
                t0 = datetime.now(UTC)
                run = c.create_flow_run_from_deployment(dep.id, parameters=params)
                while not ((run := c.read_flow_run(run.id)).state and run.state.is_final()):
                    time.sleep(2)
                if run.state is None or run.state.type != StateType.COMPLETED:
                    raise SystemExit(f"process-recording ended {run.state}")
                loads, answering = model_loads(state.ray.address)
                batches.append(measure(settings, t0, executors) | {"model_loads": loads - loads_before})
                batches[-1]["actors"] = answering
                loads_before = loads
    finally:
        ray.shutdown()
        down(settings)
    return {"executors": executors, "batches": batches}


def measure(settings: Settings, since: datetime, executors: int) -> dict[str, Any]:
    """The renders (and their exports) that started after ``since``, from lineage."""
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        renders = [r for r in conn.execute(select(Render)).all() if r.status == "succeeded"]
        exported = {e.render_id: _aware(e.created_at) for e in conn.execute(select(Export)).all()}
    engine.dispose()
    mine = [r for r in renders if (r.stats or {}).get("started_at", 0) >= since.timestamp()]
    first = min(r.stats["started_at"] for r in mine)
    last = max(exported[r.id].timestamp() for r in mine)
    window = last - first
    # The render's own work: frames in, MP4 out, and its sync check of the written file.
    rendered = sum(r.wall_s + r.stats.get("stage_s", {}).get("qc", 0.0) for r in mine)
    # Inside the executor at all: the above plus the upload to the exports store and lineage writes.
    busy = sum(r.stats["finished_at"] - r.stats["started_at"] for r in mine)
    return {
        "renders": len(mine),
        "render_s": rendered,
        "busy_s": busy,
        "window_s": window,
        "orchestration_overhead_ratio": 1 - rendered / (executors * window),
        "idle_ratio": 1 - busy / (executors * window),
        "renders_per_min": 60 * len(mine) / window,
        "video_s": sum(r.duration_s for r in mine),
    }


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--clip-seconds", type=float, default=60.0)
    ap.add_argument("--avatars", type=int, default=2)
    ap.add_argument("--executors", default="1,2", help="comma-separated executor (actor) counts")
    ap.add_argument("--sqlite", action="store_true", help="Prefect server on SQLite instead of PostgreSQL")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-factory-"))
    pg: PostgresServer | None = None
    try:
        with console.status("making the recording and avatars ..."):
            recording = make_recording(root, args.clips, args.clip_seconds)
            avatars = make_avatars(root, args.avatars)
        results = []
        for n in (int(x) for x in args.executors.split(",")):
            prefect_db = None
            if not args.sqlite:
                if pg is None:
                    pg = PostgresServer()
                    pg.init()
                    pg.start()
                url = make_url(pg.url_for(pg.create_database(f"prefect{n}")))
                prefect_db = url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
            with console.status(f"two batches on {n} executor(s) ..."):
                results.append(run_batches(root, recording, avatars, n, prefect_db, args.clip_seconds))
        report(results, args)
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    t = Table(
        title=f"process-recording: {args.clips} clips of ~{args.clip_seconds:.0f} s x {args.avatars} avatars"
    )
    for col in (
        "executors", "batch", "renders", "render s", "in executor s", "window s", "overhead %",
        "idle %", "renders/min", "model loads",
    ):  # fmt: skip
        t.add_column(col, justify="right")
    for res in results:
        for i, b in enumerate(res["batches"], start=1):
            t.add_row(
                str(res["executors"]), str(i), str(b["renders"]),
                f"{b['render_s']:.1f}", f"{b['busy_s']:.1f}", f"{b['window_s']:.1f}",
                f"{100 * b['orchestration_overhead_ratio']:.1f}", f"{100 * b['idle_ratio']:.1f}",
                f"{b['renders_per_min']:.2f}",
                str(b["model_loads"]),
            )  # fmt: skip
    console.print(t)
    scaling = None
    if len(results) >= 2:
        one, two = results[0]["batches"][0], results[1]["batches"][0]
        scaling = two["renders_per_min"] / (
            results[1]["executors"] / results[0]["executors"] * one["renders_per_min"]
        )
        console.print(
            f"scaling {results[0]['executors']} -> {results[1]['executors']} executors: {scaling:.2f} "
            "(needs a core or GPU per executor to show)"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cores = subprocess.getoutput("nproc")
    console.print(f"bench process peak RSS {rss:.0f} MiB; machine: {cores} cores")
    if args.json:
        last = results[-1]
        first = last["batches"][0]
        doc = {
            "renders": first["renders"],
            "executors": last["executors"],
            "model_loads": first["model_loads"],
            "model_loads_second_batch": last["batches"][1]["model_loads"],
            "orchestration_overhead_ratio": round(first["orchestration_overhead_ratio"], 4),
            "idle_ratio": round(first["idle_ratio"], 4),
            "renders_per_min": round(first["renders_per_min"], 3),
            "scaling_efficiency": None if scaling is None else round(scaling, 3),
            "machine": {"cores": int(cores), "gpu": None},
            "runs": results,
        }
        args.json.write_text(json.dumps(doc, indent=2))
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
