"""Clusters on one machine for the tests: a Redis Cluster of three masters, each with a
replica, and a RabbitMQ cluster of three nodes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.services import LocalRabbit, free_port, wait_for_port

T = TypeVar("T")


def poll(find: Callable[[], T | None], timeout: float, failure: str) -> T:
    """``find()`` again every 0.2 s until it finds something (RuntimeError past ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found is not None:
            return found
        time.sleep(0.2)
    raise RuntimeError(failure)


def _port(address: str) -> int:
    """The port of a ``cluster nodes`` address, ``host:port@bus-port``."""
    return int(address.split(":")[1].split("@")[0])


def _serves(spans: list[str], slot: int) -> bool:
    for span in spans:
        low, _, high = span.partition("-")
        if low.isdigit() and int(low) <= slot <= int(high or low):
            return True
    return False


@dataclass
class LocalRedisCluster:
    base: Path
    masters: int = 3
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()  # no node outlives a cluster that did not form
            raise

    def _start(self) -> None:
        self.ports = [free_port() for _ in range(self.masters * 2)]
        for port in self.ports:
            self.start_node(port)
        done = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{port}" for port in self.ports],
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        self.wait_until_ok()

    def start_node(self, port: int) -> None:
        folder = self.base / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [
                "redis-server",
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "1000",
                # The bus port defaults to port + 10000, past 65535 for a high free port.
                "--cluster-port", str(free_port()),
                "--appendonly", "yes",
                "--save", "",
                "--dir", str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for_port(port, 20, self.procs[port])

    def cli(self, port: int, *args: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout

    def wait_until_ok(self, timeout: float = 60) -> None:
        def ok() -> bool | None:
            live = [port for port, proc in self.procs.items() if proc.poll() is None]
            return all("cluster_state:ok" in self.cli(p, "cluster", "info") for p in live) or None

        poll(ok, timeout, "the Redis Cluster did not become ok")

    def _nodes(self, port: int) -> list[list[str]]:
        """``cluster nodes`` as seen by ``port``, one list of fields per node."""
        return [line.split() for line in self.cli(port, "cluster", "nodes").splitlines()]

    def roles(self) -> dict[int, str]:
        """Each live node's role: master or slave."""
        found = {}
        for port, proc in self.procs.items():
            if proc.poll() is None:
                info = self.cli(port, "role")
                found[port] = info.split("\n", 1)[0].strip()
        return found

    def master_of_slot_key(self, key: str, timeout: float = 30) -> int:
        """The master serving ``key``'s slot, as a node that says it is a master (after
        a failover, other nodes learn of it by gossip, a moment later)."""
        slot = int(self.cli(self.ports[0], "cluster", "keyslot", key))

        def master() -> int | None:
            for parts in self._nodes(self.ports[0]):
                if "master" in parts[2] and "fail" not in parts[2] and _serves(parts[8:], slot):
                    port = _port(parts[1])
                    if self.cli(port, "role").startswith("master"):
                        return port
            return None

        return poll(master, timeout, f"no master serves {key}")

    def replica_of(self, master: int, timeout: float = 30) -> int:
        """A replica of ``master`` (a demoted master rejoins as a replica a moment after
        a failover)."""
        master_id = self.cli(master, "cluster", "myid").strip()

        def replica() -> int | None:
            for parts in self._nodes(master):
                if parts[3] == master_id and "slave" in parts[2] and "fail" not in parts[2]:
                    return _port(parts[1])
            return None

        return poll(replica, timeout, f"no replica of {master}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


@dataclass
class LocalRabbitCluster:
    """Three RabbitMQ nodes on this machine, joined into one cluster."""

    base: Path
    size: int = 3
    nodes: list[LocalRabbit] = field(default_factory=list)

    @property
    def urls(self) -> str:
        """Every node's URL, comma-separated, as CONVEYOR_AMQP_URL takes a cluster."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.nodes = [LocalRabbit(self.base / f"node{i}") for i in range(self.size)]
        for node in self.nodes:  # booted side by side: each boot is mostly waiting
            node.launch()
        for node in self.nodes:
            node.wait_until_listening()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for command in (["stop_app"], ["join_cluster", first.node], ["start_app"]):
                self.ctl(node, *command)

        def formed() -> bool | None:
            status = json.loads(self.ctl(first, "cluster_status", "--formatter", "json"))
            return len(status.get("running_nodes", [])) == self.size or None

        poll(formed, 120, "the RabbitMQ cluster did not form")
        for node in self.nodes:  # every node fully booted (quorum queues too)
            self.ctl(node, "await_startup")

    def ctl(self, node: LocalRabbit, *args: str) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-n", node.node, *args],
            env=node._env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def restart(self, node: LocalRabbit) -> None:
        """Start a stopped node again: it rejoins the cluster from its own data."""
        node.start()
        self.ctl(node, "await_startup")

    def queues(self) -> dict[str, tuple[list[str], str]]:
        """Each quorum queue's members and leader (node names)."""
        live = next(node for node in self.nodes if node.proc is not None)
        rows = json.loads(
            self.ctl(
                live, "list_queues", "name", "type", "members", "leader", "--formatter", "json"
            )
        )
        return {
            row["name"]: (list(row["members"]), row["leader"])
            for row in rows
            if row["type"] == "quorum"
        }

    def stop(self) -> None:
        # Side by side: each shutdown is mostly a rabbitmqctl start-up and waiting.
        with ThreadPoolExecutor(len(self.nodes) or 1) as pool:
            list(pool.map(LocalRabbit.stop, self.nodes))
