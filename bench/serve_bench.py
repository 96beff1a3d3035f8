#!/usr/bin/env python3
"""`newsletter serve` benchmark: one-click unsubscribes per second and their latency, on SQLite and on
PostgreSQL, and kill -9 during a storm (nothing acknowledged may be lost).

    .venv/bin/python bench/serve_bench.py               # both stores, 5,000 requests each, 20 kill rounds
    .venv/bin/python bench/serve_bench.py --quick       # 1,000 requests, 5 kill rounds
    .venv/bin/python bench/serve_bench.py --store sqlite --requests 20000 --concurrency 32

Each store gets a real `python -m newsletter serve` process (uvicorn) on 127.0.0.1 in a temporary
project; PostgreSQL is a throwaway cluster (tests/pg_server.py: Debian's PostgreSQL 15, fsync off,
so the figure is the service's and not the disk's). The load generator is a bounded asyncio client
in this process: --concurrency keep-alive connections, each sending the next RFC 8058 POST
(`List-Unsubscribe=One-Click`, a distinct reader each, tokens signed before the clock starts) as soon
as its previous one is answered, until --requests are done or --max-seconds pass. Latency is per
request, from the first byte written to the last byte read. That finds the most it can do; then an
open-loop run paces requests at --rate (500/s) for --rate-seconds over up to 64 connections, each
request's latency counted from when it was due (a stall is charged for the queue behind it).
Targets: >= 500/s, with p99 < 50 ms at that rate.

Then the kill test, --kill-rounds per store: 6 clients storm the service with one-click POSTs and
webhook deliveries (5 events each, one a bounce), the service is killed with SIGKILL after 0.3-1.2 s,
and every request that got a 2xx must be in the store (suppression or event). Lost must be 0.

Client and server share this machine's cores: the figures are a floor for a server of its own.
It is a report: the exit code is 0 unless an acknowledged request was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pg_server
from serve_storm import (
    ONE_CLICK_BODY,
    ServiceProcess,
    child_env,
    lost_after_kill,
    one_click_target,
)

SECRET = "bench-secret-0123456789abcdefghijklmnopqrstuv"
CONFIG = """\
[newsletter]
name = "Bench Digest"
language = "en"
from_email = "digest@example.org"
postal_address = "1 Example Street, Springfield"
unsubscribe_url = "https://example.org/unsubscribe?email={email}&token={token}"
provider = "smtp"
"""


def request_bytes(n: int, tag: str) -> list[bytes]:
    out = []
    for i in range(n):
        target = one_click_target("/unsubscribe", SECRET, f"{tag}{i}@example.com")
        out.append((f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    f"Content-Length: {len(ONE_CLICK_BODY)}\r\n\r\n").encode() + ONE_CLICK_BODY)
    return out


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bytes:
    """Send one raw HTTP/1.1 request on a kept-alive connection; the answer's head (its body read)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return head


async def load(port: int, requests: list[bytes], concurrency: int, max_seconds: float) -> tuple[list[float], int, float]:
    """(latencies in s, non-2xx answers, wall seconds)."""
    latencies: list[float] = []
    errors = 0
    next_index = 0
    deadline = time.perf_counter() + max_seconds

    async def connection() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_index < len(requests) and time.perf_counter() < deadline:
            request = requests[next_index]
            next_index += 1
            started = time.perf_counter()
            head = await exchange(reader, writer, request)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 2"):
                errors += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def paced(port: int, requests: list[bytes], rate: float, connections: int = 64) -> tuple[list[float], int, float]:
    """Open loop: request i is due at start + i/rate whatever happened to the others; its latency
    runs from when it was due (so a stalled server is charged for the queue it causes, no
    coordinated omission). (latencies in s, non-2xx answers, wall seconds)."""
    latencies: list[float] = []
    errors = 0
    due: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while (item := await due.get())[0]:
            request, at = item
            head = await exchange(reader, writer, request)
            latencies.append(time.perf_counter() - at)
            if not head.startswith(b"HTTP/1.1 2"):
                errors += 1
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    started = time.perf_counter()
    for i, request in enumerate(requests):
        at = started + i / rate
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        due.put_nowait((request, at))
    for _ in workers:
        due.put_nowait((b"", 0.0))
    await asyncio.gather(*workers)
    return latencies, errors, time.perf_counter() - started


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far (Linux /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postgres_pids(cluster: pg_server.PostgresCluster | None) -> list[int]:
    """The cluster's postmaster and its children (backends, writer, WAL writer...)."""
    if cluster is None:
        return []
    try:
        master = int((cluster.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    children.append(int(entry.name))
            except (OSError, ValueError):
                pass
    return [master, *children]


def machine_load() -> str:
    """Load average and CPU pressure (Linux PSI): how much others were using this shared machine."""
    load = os.getloadavg()[0]
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n")[0]
        pressure = f", tasks waiting for a CPU {float(some.split('avg60=')[1].split()[0]):.0f}% of the last minute"
    except (OSError, IndexError, ValueError):
        pressure = ""
    return f"load average {load:.1f}{pressure}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def throughput(project: Path, env: dict[str, str], args: argparse.Namespace, label: str,
               cluster: pg_server.PostgresCluster | None) -> dict[str, float]:
    service = ServiceProcess(project, env).wait_ready()
    try:
        asyncio.run(load(service.port, request_bytes(300, f"warm-{label}-"), args.concurrency, 30))
        requests = request_bytes(args.requests, f"load-{label}-")
        db_pids = postgres_pids(cluster)
        cpu0, db0 = cpu_seconds([service.proc.pid]), cpu_seconds(db_pids)
        latencies, errors, wall = asyncio.run(load(service.port, requests, args.concurrency, args.max_seconds))
        cpu = (cpu_seconds([service.proc.pid]) - cpu0) / len(latencies) * 1e6
        db_cpu = (cpu_seconds(postgres_pids(cluster)) - db0) / len(latencies) * 1e6
        at_rate = request_bytes(int(args.rate * args.rate_seconds), f"rate-{label}-")
        paced_latencies, paced_errors, paced_wall = asyncio.run(paced(service.port, at_rate, args.rate))
    finally:
        service.stop()
    return {"requests": len(latencies), "errors": errors, "per_s": len(latencies) / wall,
            "p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000,
            "max": max(latencies) * 1000, "mean": statistics.fmean(latencies) * 1000,
            "cpu_us": cpu, "db_cpu_us": db_cpu,
            "paced_requests": len(paced_latencies), "paced_errors": paced_errors,
            "paced_per_s": len(paced_latencies) / paced_wall,
            "paced_p50": percentile(paced_latencies, 50) * 1000, "paced_p99": percentile(paced_latencies, 99) * 1000,
            "paced_max": max(paced_latencies) * 1000}


def kill_rounds(project: Path, env: dict[str, str], rounds: int, label: str) -> tuple[int, int, int]:
    acknowledged = lost = unanswered = 0
    rng = random.Random(8058)
    for n in range(rounds):
        a, lo, u = lost_after_kill(project, env, SECRET, f"{label}-kill{n}", run_for=rng.uniform(0.3, 1.2))
        acknowledged, lost, unanswered = acknowledged + a, lost + lo, unanswered + u
        print(f"  {label} kill round {n + 1:2}/{rounds}: {a:5} acknowledged, {lo} lost, {u} cut off", flush=True)
    return acknowledged, lost, unanswered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=500, help="the paced run's requests per second")
    parser.add_argument("--rate-seconds", type=float, default=10, help="how long the paced run lasts")
    parser.add_argument("--kill-rounds", type=int, default=None, help="per store (default 20; --quick: 5)")
    parser.add_argument("--quick", action="store_true", help="1,000 requests, 5 kill rounds")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rate_seconds = 1000, 3
    if args.kill_rounds is None:
        args.kill_rounds = 5 if args.quick else 20
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    print(f"newsletter serve bench: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} cores, {args.requests} one-click POSTs over {args.concurrency} connections")
    results = {}
    cluster = None
    try:
        for store in stores:
            with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
                project = Path(tmp)
                (project / "newsletter.toml").write_text(CONFIG, encoding="utf-8")
                extra = {"NEWSLETTER_SECRET": SECRET}
                if store == "postgres":
                    if not pg_server.available():
                        print(f"postgres: skipped, no PostgreSQL in {pg_server.PG_BIN} (apt-get install postgresql)")
                        continue
                    cluster = cluster or pg_server.PostgresCluster().start()
                    extra["NEWSLETTER_DATABASE_URL"] = cluster.new_database()
                env = child_env(extra)
                r = throughput(project, env, args, store, cluster if store == "postgres" else None)
                print(f"{store:8}  as fast as it goes: {r['per_s']:5.0f} unsubscribes/s  p50 {r['p50']:5.1f} ms  "
                      f"p99 {r['p99']:5.1f} ms  max {r['max']:6.1f} ms  ({r['requests']} requests over "
                      f"{args.concurrency} connections, {r['errors']} not 2xx)", flush=True)
                db = f", PostgreSQL {r['db_cpu_us']:.0f} µs" if store == "postgres" else ""
                print(f"{store:8}  CPU a request: the service {r['cpu_us']:.0f} µs{db} "
                      f"(one core: {1e6 / (r['cpu_us'] + r['db_cpu_us']):.0f}/s)", flush=True)
                print(f"{store:8}  machine: {machine_load()}", flush=True)
                print(f"{store:8}  paced at {args.rate:.0f}/s:    {r['paced_per_s']:5.0f} unsubscribes/s  p50 "
                      f"{r['paced_p50']:5.1f} ms  p99 {r['paced_p99']:5.1f} ms  max {r['paced_max']:6.1f} ms  "
                      f"({r['paced_requests']} requests, {r['paced_errors']} not 2xx)", flush=True)
                kills = kill_rounds(project, env, args.kill_rounds, store) if args.kill_rounds else (0, 0, 0)
                print(f"{store:8}  kill -9 x {args.kill_rounds}: {kills[0]} acknowledged, lost {kills[1]}, "
                      f"{kills[2]} requests cut off unanswered (never acknowledged)", flush=True)
                results[store] = (r, kills)
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"\n| store | most one-click/s ({args.concurrency} connections) | p50 | p99 | at {args.rate:.0f}/s: p50 | p99 "
          "| CPU a request (service + database) | kill -9 rounds | acknowledged | lost |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for store, (r, kills) in results.items():
        print(f"| {store} | {r['per_s']:.0f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['paced_p50']:.1f} ms | "
              f"{r['paced_p99']:.1f} ms | {r['cpu_us']:.0f} + {r['db_cpu_us']:.0f} µs | {args.kill_rounds} | "
              f"{kills[0]} | {kills[1]} |")
    return 1 if any(kills[1] for _, kills in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
