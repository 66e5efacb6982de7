"""How long the operator's page takes to answer the recordings list with 10,000 recordings in lineage.

    .venv/bin/python bench/bench_web.py [--recordings 10000] [--runs 5] [--no-postgres]

Seeds lineage with ``--recordings`` recordings (2 clips x 2 avatars, states cycling through new,
speech done, rendering, done, done with failures, needs review, no speech, quarantined; 4 renders and
their exports each where they got that far) plus 3 % waiting or quarantined uploads, by bulk insert, on
SQLite and (unless ``--no-postgres``) a throwaway PostgreSQL. Then asks the page (the FastAPI app in
process, through httpx's TestClient: routing, queries and the Jinja template, no network) for:

  page 1                      newest 50, no filter
  page 100                    an offset deep into the list
  state=rendering             a state filter (EXISTS on renders)
  state=new                   a state filter touching uploads and recordings
  prefix + date range         key prefix and one day

Reported per row: the median server time of ``--runs`` requests, and the number of SQL statements
one request ran (SQLAlchemy ``before_cursor_execute``), which must not depend on the number of rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import event  # noqa: E402

from talkfactory.infra.lineage.db import upgrade  # noqa: E402
from talkfactory.infra.lineage.repository import LineageRepository  # noqa: E402
from talkfactory.infra.settings import Settings  # noqa: E402
from talkfactory.web.app import create_app  # noqa: E402
from tests.fixtures.lineage_seed import seed_recordings  # noqa: E402
from tests.fixtures.servers import PostgresServer  # noqa: E402

console = Console(width=120)

QUERIES = [
    ("page 1", {}),
    ("page 100", {"page": "100"}),
    ("state=rendering", {"state": "rendering"}),
    ("state=new", {"state": "new"}),
    ("prefix + date range", {"prefix": "2026-01-03/show-3", "since": "2026-01-03", "until": "2026-01-03"}),
]


def measure(url: str, home: Path, n: int, runs: int) -> list[tuple[str, float, int, int]]:
    upgrade(url)
    repo = LineageRepository.from_url(url)
    t0 = time.perf_counter()
    seed_recordings(repo.engine, n, uploads_waiting=n * 3 // 100)
    console.print(f"seeded {n:,} recordings in {time.perf_counter() - t0:.1f} s ({url.split(':')[0]})")
    # The ingest location makes the prefix filter relative to the bucket, as in the factory.
    app = create_app(Settings(home=home, ingest_url="s3://recordings/", s3_endpoint="127.0.0.1:1"), repo=repo)
    client = TestClient(app)
    count = 0

    def on_execute(*_: object) -> None:
        nonlocal count
        count += 1

    event.listen(repo.engine, "before_cursor_execute", on_execute)
    rows = []
    for name, params in QUERIES:
        client.get("/recordings", params=params)  # warm: the first request compiles the statements
        times = []
        for _ in range(runs):
            count = 0
            t = time.perf_counter()
            answer = client.get("/recordings", params=params)
            times.append(time.perf_counter() - t)
            assert answer.status_code == 200, answer.text[:300]
        shown = answer.text.count("<tr data-state")
        rows.append((name, statistics.median(times) * 1000, count, shown))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--no-postgres", action="store_true")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-web-"))
    results = {
        "sqlite": measure(f"sqlite:///{root / 'lineage.db'}", root / "home", args.recordings, args.runs)
    }
    if not args.no_postgres:
        pg = PostgresServer()
        pg.init()
        pg.start()
        try:
            url = pg.url_for(pg.create_database("bench_web"))
            results["postgres"] = measure(url, root / "home-pg", args.recordings, args.runs)
        finally:
            pg.stop()
    table = Table(
        title=f"recordings list, {args.recordings:,} recordings in lineage, median of {args.runs} requests "
        "(server time: route + SQL + template); 2-core CPU, no GPU"
    )
    for col in ("database", "request", "server ms", "SQL statements", "rows shown"):
        table.add_column(col)
    for db, rows in results.items():
        for name, ms, statements, shown in rows:
            table.add_row(db, name, f"{ms:.0f}", str(statements), str(shown))
    console.print(table)
    worst = max(ms for rows in results.values() for _, ms, _, _ in rows)
    console.print(f"slowest: {worst:.0f} ms ({'under' if worst < 300 else 'OVER'} the 300 ms target)")
    return 0 if worst < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
