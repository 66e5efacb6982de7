"""Factory throughput with 1 vs 2 render workers, and what Prefect adds to every render.

    .venv/bin/python bench/bench_factory.py [--clips 2] [--clip-seconds 60] [--avatars 2] [--sqlite]

Builds a recording of ``--clips`` stretches of ~``--clip-seconds`` s of piper speech (so the speech
step cuts exactly those clips), a 1280x720 template and a portrait, then for 1 and then 2 render
workers starts the local factory (``factory up``: a real Prefect server, with its database in a
throwaway PostgreSQL unless ``--sqlite``; lineage in SQLite) and runs ``process-recording`` with
``force`` on the same batch. From the Prefect API and lineage, per render-clip run:

  pickup     a worker free for it (its submission, or that worker's previous run ending) -> run
             started (worker poll interval, flow-run process spawn)
  startup    run started -> render started (imports, clip download, avatar preparation, GPU slot)
  render     the render itself (lineage ``wall_s``), GPU slot held
  tail       render finished -> run finished (upload to exports, lineage, teardown)
  overhead   (pickup + startup + tail) / render: what running it as a Prefect deployment costs

and per batch: wall time from the first submission to the last finish, renders/minute, and the
scaling efficiency (renders/min with 2 workers) / (2 x renders/min with 1). Also the cost of loading
each backend cold in a fresh process versus reusing it (``loaded_backend``): what keeping the model
loaded between renders saves.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.objects import FlowRun, StateType  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import make_url, select  # noqa: E402

from talkfactory.factory.local import UpOptions, down, up  # noqa: E402
from talkfactory.infra.lineage.db import make_engine  # noqa: E402
from talkfactory.infra.lineage.tables import Render  # noqa: E402
from talkfactory.infra.settings import Settings  # noqa: E402
from talkfactory.models.speech.tts import synthesize  # noqa: E402
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


def backend_load_cost() -> list[tuple[str, float, float]]:
    """(backend, cold load in a fresh process, reuse in the same process) in seconds."""
    from tests.fixtures.lipsync import checkpoint_file

    rows = []
    for name, ckpt in (("weightless", None), ("wav2lip", str(checkpoint_file()))):
        code = (
            "import time; t=time.perf_counter();"
            "from talkfactory.tasks.render import loaded_backend as lb;"
            f"b=lb({name!r}, {ckpt!r}); cold=time.perf_counter()-t;"
            f"t=time.perf_counter(); lb({name!r}, {ckpt!r}); warm=time.perf_counter()-t;"
            "print(cold, warm)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
        )
        cold, warm = map(float, out.stdout.split()[-2:])
        rows.append((name, cold, warm))
    return rows


def run_batch(
    settings: Settings,
    recording: Path,
    avatars: list[Path],
    workers: int,
    prefect_db: str | None,
    clip_s: float,
) -> dict[str, Any]:
    port = free_port()
    state = up(
        UpOptions(
            project_dir=REPO, settings=settings, port=port, prefect_database_url=prefect_db, gpus=workers
        )
    )
    try:
        with temporary_settings({PREFECT_API_URL: state.api_url}), get_client(sync_client=True) as c:
            dep = c.read_deployment_by_name("process-recording/process-recording")
            params = {
                "recording": str(recording),
                "avatars": [str(a) for a in avatars],
                "force": True,
                "speech": {"min_clip": clip_s * 0.5, "max_clip": clip_s * 1.3},
            }
            parent = c.create_flow_run_from_deployment(dep.id, parameters=params)
            while True:
                parent = c.read_flow_run(parent.id)
                if parent.state and parent.state.is_final():
                    break
                time.sleep(2)
            if parent.state is None or parent.state.type != StateType.COMPLETED:
                raise SystemExit(f"process-recording ended {parent.state}")
            runs = [
                r
                for r in c.read_flow_runs(limit=200)
                if r.name.startswith("render clip")
                and r.created
                and parent.created
                and r.created > parent.created
            ]
    finally:
        down(settings)
    engine = make_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        renders = {r.flow_run_id: r for r in conn.execute(select(Render)).all()}
    return measure(runs, renders, workers)


def measure(runs: list[FlowRun], renders: dict[str | None, Any], workers: int) -> dict[str, Any]:
    """Per run: where its time went. ``pickup`` counts from when a worker was free for it (its
    submission, or the end of that worker's previous run), so waiting for capacity is not overhead."""
    rows = []
    for run in runs:
        r = renders.get(str(run.id))
        if r is None or not (run.created and run.start_time and run.end_time and r.started_at and r.wall_s):
            continue
        started = _aware(r.started_at)
        rows.append(
            {
                "worker": (r.stats or {}).get("worker"),
                "created": run.created,
                "start": run.start_time,
                "end": run.end_time,
                "startup": (started - run.start_time).total_seconds(),
                "render": r.wall_s,
                "tail": (run.end_time - started).total_seconds() - r.wall_s,
                "duration": r.duration_s,
            }
        )
    for worker in {x["worker"] for x in rows}:
        mine = sorted((x for x in rows if x["worker"] == worker), key=lambda x: x["start"])
        free = None
        for x in mine:
            ready = max(x["created"], free) if free else x["created"]
            x["pickup"] = (x["start"] - ready).total_seconds()
            x["overhead"] = x["pickup"] + x["startup"] + x["tail"]
            free = x["end"]
    wall = (max(x["end"] for x in rows) - min(x["created"] for x in rows)).total_seconds()
    return {
        "workers": workers,
        "renders": len(rows),
        "wall": wall,
        "rpm": 60 * len(rows) / wall,
        "rows": rows,
    }


def _aware(t: datetime) -> datetime:
    from datetime import UTC

    return t if t.tzinfo else t.replace(tzinfo=UTC)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--clip-seconds", type=float, default=60.0)
    ap.add_argument("--avatars", type=int, default=2)
    ap.add_argument("--sqlite", action="store_true", help="Prefect server on SQLite instead of PostgreSQL")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-factory-"))
    pg: PostgresServer | None = None
    try:
        with console.status("making the recording and avatars ..."):
            recording = make_recording(root, args.clips, args.clip_seconds)
            avatars = make_avatars(root, args.avatars)
        loads = backend_load_cost()
        results = []
        for workers in (1, 2):
            prefect_db = None
            if not args.sqlite:
                if pg is None:
                    pg = PostgresServer()
                    pg.init()
                    pg.start()
                url = make_url(pg.url_for(pg.create_database("prefect")))
                prefect_db = url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
            settings = Settings(home=root / "home")
            with console.status(f"batch with {workers} render worker(s) ..."):
                results.append(
                    run_batch(settings, recording, avatars, workers, prefect_db, args.clip_seconds)
                )
        report(results, loads, args)
    finally:
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def report(
    results: list[dict[str, Any]], loads: list[tuple[str, float, float]], args: argparse.Namespace
) -> None:
    t = Table(
        title=f"render-clip runs: {args.clips} clips of ~{args.clip_seconds:.0f} s x {args.avatars} avatars"
    )
    cols = (
        "workers",
        "renders",
        "batch wall s",
        "renders/min",
        "pickup s",
        "startup s",
        "render s",
        "tail s",
    )
    for col in (*cols, "overhead % of render"):
        t.add_column(col, justify="right")
    for res in results:
        rows = res["rows"]

        def med(k: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(x[k] for x in rows)

        overhead = statistics.median(x["overhead"] / x["render"] for x in rows)
        t.add_row(
            str(res["workers"]), str(res["renders"]), f"{res['wall']:.1f}", f"{res['rpm']:.2f}",
            f"{med('pickup'):.2f}", f"{med('startup'):.2f}", f"{med('render'):.2f}", f"{med('tail'):.2f}",
            f"{100 * overhead:.0f}",
        )  # fmt: skip
    console.print(t)
    if len(results) == 2:
        eff = results[1]["rpm"] / (2 * results[0]["rpm"])
        console.print(f"scaling efficiency 1 -> 2 workers: {eff:.2f} (target >= 0.85 when the cores allow)")
    lt = Table(title="backend load: cold in a fresh process vs reused (loaded_backend)")
    for col in ("backend", "cold s", "reused s"):
        lt.add_column(col, justify="right")
    for name, cold, warm in loads:
        lt.add_row(name, f"{cold:.2f}", f"{warm * 1000:.3f} ms")
    console.print(lt)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"bench process peak RSS {rss:.0f} MiB; machine: {subprocess.getoutput('nproc')} cores")


if __name__ == "__main__":
    main()
