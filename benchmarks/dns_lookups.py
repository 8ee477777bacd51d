"""DNS benchmark: network scorers against a loopback authoritative server, scanner on one core.

    python benchmarks/dns_lookups.py [--corpora ../shared/corpora] [--limit N] [--delay 0.05]

1. Latency of one scan (bayes + dnsbl + auth) of a message that needs 10 lookups (client IP
   on 3 RBLs, 5 URL domains on a URI list, SPF, DMARC) when every answer is 50 ms late.
2. Wall time for 100 such messages (all names distinct, so no cache help) scanned concurrently.
3. The resolver's cache hit rate on a replay of the SpamAssassin corpus through dnsbl + auth
   with the default public lists, against a local server answering NXDOMAIN for everything.

The DNS server runs in a child process (dnslib records, one asyncio UDP socket), so only
the scanner is pinned to one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from mailguard import Config, Envelope, MessageContext, Scanner
from mailguard.config import ScannerConfig, StoreConfig
from mailguard.dns import Resolver
from mailguard.scorer import Services
from mailguard.scorers.auth import AuthScorer
from mailguard.scorers.dnsbl import DnsblScorer
from mailguard.stores.memory import MemoryStore

import common  # benchmarks/common.py, beside this file

SERVER = r"""
import asyncio, json, socket, sys
from dnslib import DNSRecord
from mailguard.testing.dns import ZoneResolver

# The zone logic of mailguard.testing.dns, served by one asyncio UDP socket: no thread per
# question, a large receive buffer, and each answer delayed with call_later. A threaded
# server dropped datagrams under a burst of 1,000 questions, and the retries measured it.
records = {tuple(k.split("|")): v for k, v in json.load(open(sys.argv[1])).items()}
delay = float(sys.argv[2])
zone = ZoneResolver(records, (), 0.0)

class Answer(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        reply = zone.resolve(DNSRecord.parse(data), None).pack()
        asyncio.get_running_loop().call_later(delay, self.transport.sendto, reply, addr)

async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    await asyncio.get_running_loop().create_datagram_endpoint(Answer, sock=sock)
    print(sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin

asyncio.run(main())
"""

LISTS = [
    {"zone": "rbl1.bench", "kind": "ip", "symbol": "RBL1"},
    {"zone": "rbl2.bench", "kind": "ip", "symbol": "RBL2"},
    {"zone": "rbl3.bench", "kind": "ip", "symbol": "RBL3"},
    {"zone": "dbl.bench", "kind": "uri", "symbol": "DBL"},
]


class DnsServer:
    """The dnslib server in a child process (not pinned: it is the network, not the filter)."""

    def __init__(self, records: dict[tuple[str, str], list], delay: float) -> None:
        self.file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump({f"{n}|{t}": v for (n, t), v in records.items()}, self.file)
        self.file.close()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, self.file.name, str(delay)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        os.unlink(self.file.name)


def client_ip(i: int) -> str:
    return f"203.0.{i // 200}.{i % 200 + 1}"


def bench_message(i: int) -> tuple[bytes, Envelope]:
    urls = " ".join(f"http://www.u{i}-{j}.bench/offer" for j in range(5))
    raw = (
        f"From: Sender <user@s{i}.bench>\r\nTo: bob@example.net\r\nSubject: offer {i}\r\n"
        f"Message-ID: <{i}@s{i}.bench>\r\n\r\nSee {urls}\r\n"
    ).encode()
    # HELO is an address literal: not checked, so the message needs exactly 10 lookups
    return raw, Envelope(client_ip=client_ip(i), helo=f"[{client_ip(i)}]", mail_from=f"user@s{i}.bench", rcpt_to=("bob@example.net",))


def bench_records(n: int) -> dict[tuple[str, str], list]:
    records: dict[tuple[str, str], list] = {}
    for i in range(n):
        reverse = ".".join(reversed(client_ip(i).split(".")))
        if i % 2 == 0:
            records[(f"{reverse}.rbl1.bench", "A")] = ["127.0.0.2"]
        records[(f"u{i}-0.bench.dbl.bench", "A")] = ["127.0.1.2"]
        records[(f"s{i}.bench", "TXT")] = [f"v=spf1 ip4:{client_ip(i)} -all"]
        records[(f"_dmarc.s{i}.bench", "TXT")] = ["v=DMARC1; p=reject"]
    return records


def scanner_for(port: int) -> tuple[Scanner, Resolver]:
    resolver = Resolver(["127.0.0.1"], port=port, timeout=2.0, lifetime=3.0)
    config = Config(
        store=StoreConfig(backend="memory"),
        scanner=ScannerConfig(scorers=("bayes", "dnsbl", "auth")),
        scorers={"dnsbl": {"lists": LISTS}, "auth": {"authserv_id": "mx.bench"}},
    )
    return Scanner(config, store=MemoryStore(), resolver=resolver), resolver


def latency_and_concurrency(delay: float, singles: int = 20, concurrent: int = 100) -> dict[str, float]:
    server = DnsServer(bench_records(singles + concurrent + 1), delay)
    try:
        scanner, resolver = scanner_for(server.port)
        with scanner:
            warm_raw, warm_env = bench_message(singles + concurrent)  # imports, first sockets
            scanner.scan_sync(warm_raw, warm_env)
            resolver.reset_stats()
            latencies = []
            for i in range(singles):
                raw, env = bench_message(i)
                started = time.perf_counter()
                result = scanner.scan_sync(raw, env)
                latencies.append(time.perf_counter() - started)
                assert not result.failures, result.failures
            per_message = resolver.stats.queries / singles
            resolver.reset_stats()

            async def many() -> float:
                messages = [bench_message(singles + i) for i in range(concurrent)]
                started = time.perf_counter()
                results = await asyncio.gather(*(scanner.scan(raw, env) for raw, env in messages))
                wall = time.perf_counter() - started
                assert all(not r.failures for r in results)
                assert all(any(c.symbol == "SPF_PASS" for c in r.contributions) for r in results)
                return wall

            wall = scanner._run(many())
            temperrors = resolver.stats.timeouts + resolver.stats.servfails + resolver.stats.errors
            return {
                "lookups_per_message": per_message,
                "single_p50_ms": statistics.median(latencies) * 1e3,
                "single_max_ms": max(latencies) * 1e3,
                "concurrent_messages": concurrent,
                "concurrent_queries": resolver.stats.queries,
                "concurrent_wall_s": wall,
                "concurrent_failed_lookups": temperrors,
            }
    finally:
        server.close()


def corpus_hit_rate(corpora: str, limit: int, batch: int = 16) -> dict[str, float]:
    """Replay the corpus (folds.csv order) through dnsbl + auth with the default public lists;
    every name is NXDOMAIN, cached for the default negative TTL (the replay takes far less)."""
    raws = common.corpus_bytes(corpora, limit)
    server = DnsServer({}, 0.0)
    try:
        resolver = Resolver(["127.0.0.1"], port=server.port, timeout=2.0, lifetime=3.0)
        services = Services(Config(store=StoreConfig(backend="memory")), MemoryStore(), None, resolver)
        dnsbl = DnsblScorer.from_config({}, services)
        auth = AuthScorer.from_config({"authserv_id": "mx.bench"}, services)

        async def replay() -> float:
            started = time.perf_counter()
            for start in range(0, len(raws), batch):
                contexts = [MessageContext(raw) for raw in raws[start : start + batch]]
                await asyncio.gather(*(s.score(ctx) for ctx in contexts for s in (dnsbl, auth)))
            return time.perf_counter() - started

        elapsed = asyncio.run(replay())
        stats = resolver.stats
        return {
            "messages": len(raws),
            "lookups": stats.lookups,
            "cache_hits": stats.cache_hits,
            "coalesced": stats.coalesced,
            "queries": stats.queries,
            "failed": stats.timeouts + stats.servfails + stats.errors,
            "hit_rate": stats.hit_rate,
            "served_without_query": (stats.cache_hits + stats.coalesced) / stats.lookups if stats.lookups else 0.0,
            "replay_s": elapsed,
        }
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", str(HERE.parent.parent / "shared" / "corpora")))
    parser.add_argument("--limit", type=int, default=0, help="replay only the first N corpus messages")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the server waits before each answer")
    args = parser.parse_args()
    common.pin_one_core()  # after the servers start: they run in their own processes
    print(f"pinned to CPU(s) {sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'}")

    numbers = latency_and_concurrency(args.delay)
    print(f"server delay per answer: {args.delay * 1e3:.0f} ms")
    print(f"lookups per message: {numbers['lookups_per_message']:.1f}")
    print(f"single message (bayes+dnsbl+auth): p50 {numbers['single_p50_ms']:.1f} ms, max {numbers['single_max_ms']:.1f} ms over 20 messages (target: well under 200 ms)")
    print(
        f"{numbers['concurrent_messages']} messages concurrently: {numbers['concurrent_wall_s']:.3f} s wall, "
        f"{numbers['concurrent_queries']} DNS queries, {numbers['concurrent_failed_lookups']} failed (target: under 2 s)"
    )

    if Path(args.corpora, "spamassassin", "folds.csv").exists():
        rate = corpus_hit_rate(args.corpora, args.limit)
        print(
            f"corpus replay: {rate['messages']} messages, {rate['lookups']} lookups, {rate['queries']} queries sent, "
            f"cache hit rate {rate['hit_rate']:.1%} (+{rate['coalesced']} joined in flight: "
            f"{rate['served_without_query']:.1%} served without a query), {rate['failed']} failed, {rate['replay_s']:.1f} s"
        )
    else:
        print(f"corpus replay skipped: no {args.corpora}/spamassassin/folds.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
