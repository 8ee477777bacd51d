"""Speed benchmark: scan the corpus with the shipped model, network off, on one core.

    python benchmarks/speed.py [--corpora ../shared/corpora] [--limit N] [--store sqlite|memory] [--jobs N]
        [--with dnsbl,auth,virus | --only bayes,reputation,...]

Prints messages per second, per-message latency p50/p99 (parse + every scorer + combine
+ policy, each message parsed from its bytes) and the process's peak RSS.

``--jobs N`` instead scans in N worker processes (mailguard/pool.py, as ``scan --jobs`` and
the milter's ``workers`` do), not pinned, and prints the wall-clock throughput from the
first message handed out to the last answer (worker start-up not counted) and each worker's
peak RSS. Compare ``--jobs 1`` with ``--jobs 2``: the same path, one or two processes.

``--with`` adds scorers to the default ones, for the README's sizing figures: ``dnsbl`` and
``auth`` against a loopback DNS server that answers every query at once (NXDOMAIN: the CPU
cost of the lookups, not the network's latency), ``virus`` against a private clamd with the
test signatures (its CPU is clamd's, on the other core; the figure is the scanner's side).

``--only`` runs a subset of the default scorers instead (``none``: no scorer, so the MIME
parse, the combiner and the policy alone): what each scorer costs, and the floor under any
speed target.
"""

from __future__ import annotations

import argparse
import contextlib
import collections
import functools
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import corpus_bytes, percentiles_ms, pin_one_core, timed_scans

from mailguard.config import Config, DnsConfig, ScannerConfig, StoreConfig
from mailguard.pool import ScanPool
from mailguard.scanner import Scanner


def bench_scanner(store: str, path: str) -> Scanner:
    """Each worker's scanner (built in the worker)."""
    return Scanner(Config(scanner=ScannerConfig(network=False), store=StoreConfig(backend=store, path=Path(path))))


async def scan_one(scanner: Scanner, raw: bytes) -> float:
    await scanner.scan(raw)
    return 0.0


async def peak_rss_mb(scanner: Scanner) -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_workers(raws: list[bytes], jobs: int, store: str, path: Path) -> int:
    with ScanPool(functools.partial(bench_scanner, store, str(path)), jobs) as pool:
        for future in [pool.submit(scan_one, raw) for raw in raws[: 50 * jobs]]:  # warm-up
            future.result()
        started = time.perf_counter()
        window: collections.deque = collections.deque()
        for raw in raws:
            window.append(pool.submit(scan_one, raw))
            if len(window) > 8 * jobs:
                window.popleft().result()
        while window:
            window.popleft().result()
        wall = time.perf_counter() - started
        rss = sorted(pool.submit(peak_rss_mb).result() for _ in range(4 * jobs))[-1]
    print(f"scanned {len(raws)} messages in {jobs} worker process(es), network off, {store} store, on {os.cpu_count()} cores")
    print(f"  throughput      {len(raws) / wall:.0f} messages/s ({wall:.1f} s wall)")
    print(f"  peak RSS        {rss:.0f} MB per worker (largest seen)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--limit", type=int, default=0, help="scan only the first N messages")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=0, help="scan in N worker processes (wall-clock throughput)")
    parser.add_argument("--with", dest="extra", default="", help="scorers to add: dnsbl, auth, virus (comma-separated)")
    parser.add_argument("--only", help="only these of the default scorers (comma-separated; none: no scorer)")
    args = parser.parse_args()
    extra = tuple(name for name in args.extra.split(",") if name)
    if not set(extra) <= {"dnsbl", "auth", "virus"}:
        parser.error("--with takes dnsbl, auth and virus")
    if (extra or args.only is not None) and args.jobs:
        parser.error("--with and --only measure one process; leave out --jobs")
    defaults = ScannerConfig().scorers
    only = None if args.only is None else tuple(name for name in args.only.split(",") if name and name != "none")
    if only is not None and (extra or not set(only) <= set(defaults)):
        parser.error(f"--only takes some of {', '.join(defaults)} (or none), and no --with")
    raws = corpus_bytes(args.corpora, args.limit)
    store = Path(tempfile.mkdtemp(prefix="mailguard-speed-")) / "store.sqlite3"
    if args.jobs:
        return in_workers(raws, args.jobs, args.store, store)
    pin_one_core()
    config = Config(scanner=ScannerConfig(network=False, scorers=defaults if only is None else only), store=StoreConfig(backend=args.store, path=store))
    scorers = "default scorers" + "".join(f" + {name}" for name in extra)
    if only is not None:
        scorers = f"only {', '.join(only)}" if only else "no scorer"
    with contextlib.ExitStack() as services:
        clamd_pid = None
        if extra:
            config, clamd_pid = with_scorers(config, extra, services)
        return scan_and_report(config, raws, args.store, scorers, clamd_pid)


def serve_dns(conn: Any) -> None:
    """A loopback DNS server answering NXDOMAIN at once, on any core; sends its port."""
    from mailguard.testing.dns import FakeDNS

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    with FakeDNS({}) as dns:
        conn.send(dns.port)
        time.sleep(1e6)


def with_scorers(config: Config, extra: tuple[str, ...], services: contextlib.ExitStack) -> tuple[Config, int | None]:
    """The default scorers plus ``extra``, each against a private server on loopback; and
    clamd's process id when it runs, to count its CPU."""
    from mailguard.testing import ClamdServer

    scorers = dict(config.scorers)
    clamd_pid = None
    network = any(name in extra for name in ("dnsbl", "auth"))
    if network:  # the server in a process of its own, off the measured core
        ctx = multiprocessing.get_context("spawn")
        here, there = ctx.Pipe()
        server = ctx.Process(target=serve_dns, args=(there,), daemon=True)
        server.start()
        services.callback(server.terminate)
        config = config.replace(dns=DnsConfig(nameservers=("127.0.0.1",), port=here.recv()))
    if "virus" in extra:
        clamd = services.enter_context(ClamdServer())
        clamd_pid = clamd.process.pid
        scorers["virus"] = {"socket": clamd.socket_path}
    scanner = ScannerConfig(scorers=config.scanner.scorers + extra, network=network)
    return config.replace(scanner=scanner, scorers=scorers), clamd_pid


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) another process has used, from /proc; 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scan_and_report(config: Config, raws: list[bytes], store: str, scorers: str, clamd_pid: int | None) -> int:
    started = time.perf_counter()
    with Scanner(config) as scanner:
        load_time = time.perf_counter() - started
        cpu, clamd_cpu = time.process_time(), process_cpu(clamd_pid)
        latencies = timed_scans(scanner, raws, warmup=50)
        cpu = time.process_time() - cpu  # warm-up scans included: CPU per message, not waits
        clamd_cpu = process_cpu(clamd_pid) - clamd_cpu
        version = scanner.model.version if scanner.model else "-"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    network = "loopback DNS answering at once" if config.scanner.network else "network off"
    print(f"scanned {len(raws)} messages (mean {np.mean([len(r) for r in raws]) / 1024:.1f} KiB) on one core, {scorers}, {network}, {store} store, model {version}")
    print(f"  throughput      {len(raws) / latencies.sum():.0f} messages/s")
    print(f"  latency         {percentiles_ms(latencies)}, max {latencies.max() * 1000:.1f} ms")
    per_message = cpu / (len(raws) + min(50, len(raws)))
    print(f"  CPU             {per_message * 1000:.2f} ms per message: {1 / per_message:.0f} messages/s per core")
    if clamd_pid is not None:
        print(f"  clamd CPU       {clamd_cpu / (len(raws) + min(50, len(raws))) * 1000:.2f} ms per message (its own process)")
    print(f"  peak RSS        {peak_mb:.0f} MB")
    print(f"  model load      {load_time * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
