"""A private Redis Cluster on loopback: masters with replicas, in a temporary directory.

Why its own helper: failover is what a cluster adds, and it is only tested for real with
real nodes that can be killed (``kill -9``) and that elect a replica by themselves. A short
``cluster-node-timeout`` (1 s by default) makes that take seconds, not the 15 s default.

    with RedisClusterServers() as cluster:          # 3 masters, 1 replica each
        store = RedisStore(cluster.url)             # redis+cluster://127.0.0.1:PORT
        port = cluster.master_of("mg:c:key")
        cluster.kill(port)                          # SIGKILL: no goodbye to the cluster
        cluster.wait_until_serving()                # the replica took over

Each node gets its own client and bus port (``--cluster-port``), both free ports. Queries go
through ``redis-cli`` (installed with redis-server, and needed for ``--cluster create``), so
this helper needs no redis-py.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .redis import _ping
from .system import find_binary, free_port, stop_process

__all__ = ["ClusterNode", "RedisClusterServers"]


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES, as much of it as the tests need."""

    node_id: str
    port: int
    role: str  # "master" or "replica"
    master_id: str  # "-" for a master
    failing: bool  # flagged fail or pfail by the node asked
    slots: tuple[tuple[int, int], ...]  # ranges owned (masters only)


class RedisClusterServers:
    """``with RedisClusterServers() as cluster`` gives a cluster whose every slot is served and
    every master has its replicas in sync; every node is stopped and the directory removed
    afterwards."""

    def __init__(self, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        server, cli = find_binary("redis-server"), find_binary("redis-cli")
        if server is None or cli is None:
            raise FileNotFoundError(
                "redis-server and redis-cli not found (Debian: apt-get install redis-server; see scripts/system-deps)"
            )
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.server_binary, self.cli_binary = server, cli
        self.masters_wanted, self.replicas_wanted, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.directory = Path(tempfile.mkdtemp(prefix="mg-redis-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}  # client port -> running node
        self.bus_ports: dict[int, int] = {}

    @property
    def ports(self) -> list[int]:
        """Client ports of every node, running or not, in start order."""
        return list(self.bus_ports)

    @property
    def url(self) -> str:
        """The store URL: one node to start from; the client discovers the others."""
        live = self.live_ports()
        if not live:
            raise RuntimeError("no cluster node is running")
        return f"redis+cluster://127.0.0.1:{live[0]}"

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> RedisClusterServers:
        deadline = time.monotonic() + timeout
        for _ in range(self.masters_wanted * (1 + self.replicas_wanted)):
            self._launch_new(deadline)
        created = subprocess.run(
            [self.cli_binary, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas_wanted), "--cluster-yes"],
            capture_output=True, timeout=max(1.0, deadline - time.monotonic()),
        )
        if created.returncode != 0:
            self.close()
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout.decode()[-2000:]}{created.stderr.decode()[-2000:]}")
        self.wait_until_serving(timeout=max(1.0, deadline - time.monotonic()), replicas=self.replicas_wanted)
        return self

    def _launch_new(self, deadline: float) -> None:
        """A new node on free ports (new ones again if they were taken meanwhile)."""
        for _ in range(20):
            port, bus = free_port(), free_port()
            if port == bus or port in self.bus_ports:
                continue
            self.bus_ports[port] = bus
            if self._launch(port, deadline):
                return
            del self.bus_ports[port]
        raise RuntimeError("could not start a cluster node on free ports")

    def _launch(self, port: int, deadline: float) -> bool:
        """True once the node on ``port`` answers PING; False if it exited (port taken)."""
        directory = self.directory / str(port)
        directory.mkdir(exist_ok=True)
        args = [self.server_binary, "--port", str(port), "--cluster-port", str(self.bus_ports[port]),
                "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(directory), "--logfile", ""]
        with open(directory / "redis.log", "ab") as log:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if _ping(port):
                self.processes[port] = process
                return True
            time.sleep(0.01)
        stop_process(process)
        raise TimeoutError(f"cluster node on port {port} did not answer PING: {self.log(port)[-2000:]}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (as a crash: nothing flushed, nobody told)."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again on its ports with its nodes.conf: it rejoins the cluster
        (a master that was replaced comes back as a replica of its successor)."""
        if port in self.processes:
            raise RuntimeError(f"node {port} is running")
        deadline = time.monotonic() + timeout
        while not self._launch(port, deadline):  # the old socket may linger for a moment
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {port} did not start again: {self.log(port)[-2000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        for port in list(self.processes):
            stop_process(self.processes.pop(port))
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the cluster says -------------------------------------------------------------

    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.processes and self.processes[p].poll() is None]

    def cli(self, port: int, *args: str) -> str:
        """One command through redis-cli on ``port``; its raw output."""
        done = subprocess.run([self.cli_binary, "-h", "127.0.0.1", "-p", str(port), *args],
                              capture_output=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli -p {port} {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout.decode()

    def nodes(self, port: int | None = None) -> list[ClusterNode]:
        """CLUSTER NODES as the node on ``port`` (default: the first live one) sees it."""
        asked = port if port is not None else self.live_ports()[0]
        found = []
        for line in self.cli(asked, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            flags = set(fields[2].split(","))
            slots = []
            for part in fields[8:]:
                if part.startswith("["):  # a slot being migrated: not owned yet
                    continue
                first, _, last = part.partition("-")
                slots.append((int(first), int(last or first)))
            found.append(ClusterNode(
                node_id=fields[0], port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                role="master" if "master" in flags else "replica", master_id=fields[3],
                failing=bool(flags & {"fail", "fail?"}), slots=tuple(slots),
            ))
        return found

    def keyslot(self, key: str) -> int:
        return int(self.cli(self.live_ports()[0], "CLUSTER", "KEYSLOT", key))

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key`` now."""
        slot = self.keyslot(key)
        for node in self.nodes():
            if node.role == "master" and any(a <= slot <= b for a, b in node.slots):
                return node.port
        raise RuntimeError(f"no master serves slot {slot}")

    def replicas_of(self, port: int) -> list[int]:
        nodes = self.nodes()
        master = next(n for n in nodes if n.port == port)
        return [n.port for n in nodes if n.master_id == master.node_id]

    def serving(self, replicas: int = 0) -> bool:
        """Every live node says cluster_state:ok and sees every slot on a live, healthy master
        with at least ``replicas`` replicas online."""
        live = self.live_ports()
        try:
            for port in live:
                if "cluster_state:ok" not in self.cli(port, "CLUSTER", "INFO"):
                    return False
                masters = [n for n in self.nodes(port) if n.role == "master" and n.slots]
                if sum(b - a + 1 for n in masters for a, b in n.slots) != 16384:
                    return False
                if any(n.failing or n.port not in live for n in masters):
                    return False
            if replicas:
                for master in {n.port for n in self.nodes() if n.role == "master" and n.slots}:
                    info = self.cli(master, "INFO", "replication")
                    if info.count("state=online") < replicas:
                        return False
        except RuntimeError:  # a node that just died or is still loading
            return False
        return True

    def wait_until_serving(self, timeout: float = 30.0, replicas: int = 0) -> None:
        """Poll until `serving` (failover after a kill takes a few node timeouts)."""
        deadline = time.monotonic() + timeout
        while not self.serving(replicas):
            if time.monotonic() > deadline:
                views = {p: self.cli(p, "CLUSTER", "NODES") for p in self.live_ports()}
                raise TimeoutError(f"cluster not serving within {timeout} s: {views}")
            time.sleep(0.05)

    def log(self, port: int) -> str:
        path = self.directory / str(port) / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""
