"""Authoritative DNS servers on loopback for tests and benchmarks (dnslib, in-process).

``FakeDNS`` answers from a dict of records, UDP and TCP on one kernel-chosen port, with
optional per-answer delay and SERVFAIL for chosen names; ``SilentDNS`` binds the ports and
never answers (a blackholed server). Recipe verified in ../shared/integration.md section 5.
Needs the ``dnslib`` package (the ``test`` extra); nothing in the filter imports this.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from dnslib import AAAA, MX, PTR, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

__all__ = ["FakeDNS", "SilentDNS", "ZoneResolver"]

Records = Mapping[tuple[str, str], Iterable[Any]]


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """The answers: dnslib's resolver interface over a dict of records (usable on its own)."""

    def __init__(self, records: Records, servfail: Iterable[str], delay: float) -> None:
        self.records: dict[tuple[str, str], list[Any]] = {}
        self.update(records)
        self.servfail = {_norm(n) for n in servfail}
        self.delay = delay
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def update(self, records: Records) -> None:
        for (name, qtype), values in records.items():
            self.records[(_norm(name), qtype.upper())] = list(values)

    def resolve(self, request: Any, handler: Any) -> Any:
        qname = _norm(str(request.q.qname))
        qtype = QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((qname, qtype))
        if self.delay:
            time.sleep(self.delay)
        reply = request.reply()
        if qname in self.servfail or "*" in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        for value in self.records.get((qname, qtype), []):
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=_rdata(qtype, value), ttl=300))
        if not reply.rr and not any(name == qname for name, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def _rdata(qtype: str, value: Any) -> Any:
    if qtype == "A":
        return A(value)
    if qtype == "AAAA":
        return AAAA(value)
    if qtype == "MX":
        return MX(value[1], value[0])
    if qtype == "PTR":
        return PTR(value)
    if qtype == "TXT":
        data = value.encode() if isinstance(value, str) else bytes(value)
        return TXT([data[i : i + 255] for i in range(0, len(data), 255)])  # one string is at most 255 bytes
    raise ValueError(f"FakeDNS cannot serve {qtype}")


class FakeDNS:
    """``with FakeDNS({("x.test", "A"): ["192.0.2.1"]}) as server:`` serves on 127.0.0.1:``server.port``.

    A name that is in no record gets NXDOMAIN; one that exists with other types, NOERROR and
    no answer. ``servfail`` names (``"*"``: all) get SERVFAIL; ``delay`` sleeps before each answer;
    ``pause()`` and ``resume()`` take the server away and bring it back on the same port.
    """

    def __init__(self, records: Records | None = None, *, delay: float = 0.0, servfail: Iterable[str] = ()) -> None:
        self.resolver = ZoneResolver(records or {}, servfail, delay)
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        for _ in range(50):  # UDP port 0 picks a port; the same TCP port may be busy: retry
            self.udp = DNSServer(self.resolver, address="127.0.0.1", port=0, logger=quiet)
            self.port = int(self.udp.server.server_address[1])
            try:
                self.tcp = DNSServer(self.resolver, address="127.0.0.1", port=self.port, tcp=True, logger=quiet)
                break
            except OSError:
                self.udp.server.server_close()
        else:
            raise RuntimeError("no free UDP+TCP port pair on 127.0.0.1")
        self._threads: list[threading.Thread] = []

    @property
    def queries(self) -> list[tuple[str, str]]:
        """Every question received, in order (name, type)."""
        return self.resolver.queries

    def add(self, records: Records) -> None:
        self.resolver.update(records)

    def start(self) -> FakeDNS:
        for server in (self.udp, self.tcp):
            thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def pause(self) -> None:
        """Stop answering (an outage): the ports stay bound, questions are read by nobody."""
        for server in (self.udp, self.tcp):
            server.server.shutdown()
        self._threads.clear()

    def resume(self) -> None:
        """Answer again after `pause` (questions queued meanwhile get late answers nobody awaits)."""
        self.start()

    def stop(self) -> None:
        if self._threads:
            for server in (self.udp, self.tcp):
                server.server.shutdown()
        for server in (self.udp, self.tcp):
            server.server.server_close()

    def __enter__(self) -> FakeDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentDNS:
    """A UDP and TCP port on 127.0.0.1 that accepts questions and never answers."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = int(self.udp.getsockname()[1])
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.tcp.bind(("127.0.0.1", self.port))
            self.tcp.listen(16)
        except OSError:
            self.tcp.close()  # TCP is a nicety here: dnspython asks over UDP first

    def __enter__(self) -> SilentDNS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.udp.close()
        self.tcp.close()
