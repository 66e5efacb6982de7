"""How long one ingest scan takes over a bucket of 10,000 objects of which 10 are new.

    .venv/bin/python bench/bench_scan.py [--objects 10000] [--new 10] [--runs 3] [--no-postgres]

Starts its own ``weed mini`` (and, unless ``--no-postgres``, a throwaway PostgreSQL) with the test
fixtures' classes, uploads the objects with a thread pool, seeds lineage with every object but ``--new``
of them as already registered (bulk insert, as earlier scans would have left it), then times
``plan_scan`` (settle 0) on each database:

  10 new          the scan the issue asks about (target: under 10 s in total);
  nothing new     the steady state of a scheduled scan, every object registered;
  unbatched       the same lineage lookups one key per query (``batch_size=1``), for the ratio.

Reported per row: the median of ``--runs`` runs of the listing time (waiting on S3), the lineage
lookup time, the number of SQL statements (SQLAlchemy ``before_cursor_execute``), and the total; plus
this process's peak RSS and the weed server's. The machine is shared, so the S3 listing time varies
most; the query count does not.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import event, insert  # noqa: E402

from talkfactory.infra.lineage.db import upgrade  # noqa: E402
from talkfactory.infra.lineage.repository import LineageRepository  # noqa: E402
from talkfactory.infra.lineage.tables import SourceObject  # noqa: E402
from talkfactory.infra.stores import S3ObjectStore  # noqa: E402
from talkfactory.pipeline.ingest import ScanPlan, ingest_location, plan_scan  # noqa: E402
from tests.fixtures.servers import PostgresServer, WeedServer  # noqa: E402

console = Console(width=130)


def hwm_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def upload(server: WeedServer, bucket: str, prefix: str, count: int) -> list[str]:
    client = server.client(timeout=30)
    keys = [f"day-{i % 30:02d}/rec-{i:06d}.flv" for i in range(count)]

    def put(key: str) -> None:
        data = key.encode()  # tiny, and distinct, so every etag differs
        client.put_object(bucket, prefix + key, io.BytesIO(data), len(data))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    return keys


def seed(repo: LineageRepository, store: S3ObjectStore, new: int) -> None:
    """Register every listed object except ``new`` of them, spread over the listing."""
    loc = ingest_location(store)
    infos = list(store.list())
    step = max(1, len(infos) // max(1, new))
    fresh = {i for i in range(0, len(infos), step)} if new else set()
    fresh = set(sorted(fresh)[:new])
    rows = [
        {
            "store_url": loc.store_url,
            "bucket": loc.bucket,
            "key": loc.full_key(info.key),
            "etag": info.etag,
            "size_bytes": info.size,
            "status": "done",
            "attempts": 1,
        }
        for n, info in enumerate(infos)
        if n not in fresh
    ]
    with repo.session() as s:
        for start in range(0, len(rows), 2000):
            s.execute(insert(SourceObject), rows[start : start + 2000])


def mark_all_registered(repo: LineageRepository, store: S3ObjectStore) -> None:
    loc = ingest_location(store)
    infos = list(store.list())
    known = repo.known_source_objects(loc.bucket, [loc.full_key(i.key) for i in infos])
    rows = [
        {"store_url": loc.store_url, "bucket": loc.bucket, "key": loc.full_key(i.key), "etag": i.etag,
         "size_bytes": i.size, "status": "done", "attempts": 1}
        for i in infos
        if (loc.full_key(i.key), i.etag) not in known
    ]  # fmt: skip
    with repo.session() as s:
        s.execute(insert(SourceObject), rows)


def timed_scan(repo: LineageRepository, run: Callable[[], ScanPlan]) -> tuple[ScanPlan, float, int]:
    statements = 0

    def count(*_args: object) -> None:
        nonlocal statements
        statements += 1

    event.listen(repo.engine, "before_cursor_execute", count)
    try:
        t0 = time.perf_counter()
        plan = run()
        total = time.perf_counter() - t0
    finally:
        event.remove(repo.engine, "before_cursor_execute", count)
    return plan, total, statements


def measure(
    repo: LineageRepository, store: S3ObjectStore, runs: int, batch_size: int
) -> tuple[ScanPlan, float, float, float, int]:
    results = [
        timed_scan(repo, lambda: plan_scan(store, "", repo, settle_seconds=0, batch_size=batch_size))
        for _ in range(runs)
    ]
    plan = results[-1][0]
    return (
        plan,
        statistics.median(r[0].list_s for r in results),
        statistics.median(r[0].lookup_s for r in results),
        statistics.median(r[1] for r in results),
        results[-1][2],
    )


def cells(measured: tuple[ScanPlan, float, float, float, int]) -> list[str]:
    plan, list_s, lookup_s, total, queries = measured
    return [
        str(len(plan.new)),
        f"{plan.known:,}",
        f"{list_s:.2f}",
        f"{lookup_s:.2f}",
        f"{queries:,}",
        f"{total:.2f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    weed = WeedServer(root=root / "weed")
    pg: PostgresServer | None = None
    try:
        weed.start()
        bucket = weed.make_bucket()
        t0 = time.perf_counter()
        upload(weed, bucket, "live/", args.objects)
        upload_s = time.perf_counter() - t0
        console.print(f"uploaded {args.objects} objects in {upload_s:.1f} s")
        store = S3ObjectStore(weed.endpoint, weed.access_key, weed.secret_key, bucket, "live/")

        databases = [("sqlite", f"sqlite:///{root / 'lineage.db'}")]
        if not args.no_postgres:
            pg = PostgresServer()
            pg.init()
            pg.start()
            databases.append(("postgres", pg.url_for(pg.create_database("bench_scan"))))

        table = Table(
            title=f"scan of {args.objects:,} objects ({args.new} new), median of {args.runs} runs; "
            "2-core CPU, no GPU, local SeaweedFS 4.48"
        )
        for col in (
            "lineage db",
            "scenario",
            "new",
            "known",
            "list s",
            "lookup s",
            "SQL statements",
            "total s",
        ):
            table.add_column(col, justify="right" if col not in ("lineage db", "scenario") else "left")
        for name, url in databases:
            upgrade(url)
            repo = LineageRepository.from_url(url)
            seed(repo, store, args.new)
            scenarios = [("10 new" if args.new == 10 else f"{args.new} new", 500, args.runs)]
            scenarios.append(("unbatched lookups", 1, 1))
            for label, batch, runs in scenarios:
                table.add_row(name, label, *cells(measure(repo, store, runs, batch)))
            mark_all_registered(repo, store)
            table.add_row(name, "nothing new", *cells(measure(repo, store, args.runs, 500)))
            repo.engine.dispose()
        console.print(table)
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        weed_rss = hwm_mib(weed.process.pid) if weed.process else 0.0
        console.print(f"peak RSS: this process {self_rss:.0f} MiB, weed {weed_rss:.0f} MiB")
    finally:
        weed.cleanup()
        if pg is not None:
            pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
