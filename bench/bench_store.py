"""Throughput of S3ObjectStore.put_file/get_file against the bare minio SDK, on a local SeaweedFS.

    .venv/bin/python bench/bench_store.py [--size-mb 200] [--runs 3]

Starts its own ``weed mini`` on 127.0.0.1 (the test fixture's class), writes one random file, and
times each variant ``--runs`` times, interleaved in a rotating order so drift hits all variants alike.
Reported: median seconds, MB/s, the ratio to the bare SDK (target: within 1.5x), the best run and its
ratio (less disturbed by neighbours on a shared machine), the median CPU time this process spent (the
adapter's own overhead, nearly immune to neighbours), and the peak RSS growth of this process during the
call (sampled every 5 ms from /proc), since "no whole-file buffering" is part of the contract.

Variants:
  bare fput/fget     Minio().fput_object / fget_object with the SDK's defaults (5 MiB parts, 3 threads,
                     urllib3 retries on).
  store (default)    S3ObjectStore defaults: 5 MiB parts, 3 threads, bounded timeouts, no urllib3 retries,
                     our retry loop, temp file + size check + rename on download, a stat after upload.
  store (16 MiB)     uploads with bigger parts, which is why the default is 5 MiB.
Every download reads the same object (the one the bare SDK uploaded).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minio import Minio  # noqa: E402

from talkfactory.infra.stores import S3ObjectStore  # noqa: E402
from tests.fixtures.servers import WeedServer  # noqa: E402

MIB = 1024 * 1024


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def hwm_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], object]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS growth and CPU seconds (all threads) of this process while ``fn`` ran."""
    base = rss_bytes()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu = cpu_seconds()
    started = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu
        done.set()
        sampler.join()
    return elapsed, max(0, peak - base), cpu


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tf-bench-store-"))
    dl: Path | None = None
    server = WeedServer(root=work / "weed")
    server.start()
    try:
        src = work / "src.bin"
        with open(src, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(MIB))
        size = src.stat().st_size
        want = sha256(src)
        bucket = server.make_bucket("bench")
        bare = Minio(
            server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False
        )
        store = S3ObjectStore(server.endpoint, server.access_key, server.secret_key, bucket, "store/")
        store16 = S3ObjectStore(
            server.endpoint, server.access_key, server.secret_key, bucket, "store16/", part_size=16 * MIB
        )
        # Downloads all read the object the bare SDK uploaded, so part layout cannot tell them apart.
        reader = S3ObjectStore(server.endpoint, server.access_key, server.secret_key, bucket, "bare/")
        # Downloads land on tmpfs when there is one: on a shared machine, other jobs' disk writeback
        # otherwise throttles whichever download happens to run next and swamps the comparison.
        shm = Path("/dev/shm")
        dl = Path(tempfile.mkdtemp(prefix="tf-bench-dl-", dir=shm if shm.is_dir() else work))

        variants: dict[str, dict[str, Callable[[], object]]] = {
            "bare fput/fget": {
                "upload": lambda: bare.fput_object(bucket, "bare/obj.bin", str(src)),
                "download": lambda: bare.fget_object(bucket, "bare/obj.bin", str(dl / "bare.bin")),
            },
            "store (default)": {
                "upload": lambda: store.put_file(src, "obj.bin"),
                "download": lambda: reader.get_file("obj.bin", dl / "store.bin"),
            },
            "store (16 MiB)": {
                "upload": lambda: store16.put_file(src, "obj.bin"),
            },
        }
        results: dict[tuple[str, str], list[tuple[float, int, float]]] = {}
        for op in ("upload", "download"):
            names = [name for name in variants if op in variants[name]]
            for run in range(args.runs):
                # Rotate the order each run: whoever goes first meets the server still settling
                # from the previous call (and the page cache flushing the previous download).
                for name in names[run % len(names) :] + names[: run % len(names)]:
                    results.setdefault((name, op), []).append(timed(variants[name][op]))
        for name in ("bare.bin", "store.bin"):
            assert sha256(dl / name) == want, f"{name} differs from the source"

        print(
            f"\n{args.size_mb} MiB random file, {args.runs} runs each, median; "
            f"SeaweedFS 4.48 `weed mini` on 127.0.0.1, {os.cpu_count()} CPUs; downloads to {dl.parent}"
        )
        header = (
            f"{'op':<9} {'variant':<16} {'median s':>9} {'MB/s':>8} {'x bare':>7} "
            f"{'best s':>7} {'x bare':>7} {'client CPU s':>13} {'peak RSS +MiB':>14}"
        )
        print(header)
        print("-" * len(header))
        for op in ("upload", "download"):
            bare_runs = results[("bare fput/fget", op)]
            bare_median = statistics.median(r[0] for r in bare_runs)
            bare_best = min(r[0] for r in bare_runs)
            for name in variants:
                if (name, op) not in results:
                    continue
                runs = results[(name, op)]
                median = statistics.median(r[0] for r in runs)
                best = min(r[0] for r in runs)
                cpu = statistics.median(r[2] for r in runs)
                peak = max(r[1] for r in runs) / MIB
                print(
                    f"{op:<9} {name:<16} {median:>9.2f} {size / MIB / median:>8.1f} "
                    f"{median / bare_median:>7.2f} {best:>7.2f} {best / bare_best:>7.2f} "
                    f"{cpu:>13.2f} {peak:>14.1f}"
                )
        load = os.getloadavg()[0]
        print(f"\nload average (1 min) at the end: {load:.1f} on {os.cpu_count()} CPUs")
        assert server.process is not None
        print(f"\nweed peak RSS (VmHWM): {hwm_bytes(server.process.pid) / MIB:.0f} MiB")
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        if dl is not None:
            shutil.rmtree(dl, ignore_errors=True)


if __name__ == "__main__":
    main()
