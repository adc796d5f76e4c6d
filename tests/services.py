"""Real RabbitMQ and Redis servers for integration tests.

In order of preference: URLs from the environment (``CONVEYOR_TEST_AMQP_URL``,
``CONVEYOR_TEST_REDIS_URL``); testcontainers when a Docker engine answers; the Debian
``rabbitmq-server`` and ``redis-server`` binaries started in a temp dir on free ports.
With none of these, tests that need them skip with the reason, except in CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def start_logging_to(log: Path, argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, its stdout and stderr appended to ``log``.

    The process writes through its own copy of the descriptor: ours closes at once.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **options
        )


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs this service: {reason}", pytrace=False)
    pytest.skip(reason)


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass
class LocalRabbit:
    """A RabbitMQ node of our own: can be stopped and started again on the same port."""

    base: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    # Tiny, so any message held unacked for long makes a test fail. (RabbitMQ checks
    # once a minute, so only holds of more than about a minute are caught.)
    consumer_timeout_ms: int = 1_000
    check_every_ms: int | None = None
    """How often each channel checks its consumers' timeouts, if not once a minute."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def node(self) -> str:
        return f"conveyor{self.port}@localhost"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }

    def start(self) -> None:
        self.launch()
        self.wait_until_listening()

    def launch(self) -> None:
        """Start the node without waiting for it (a cluster boots its nodes together)."""
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"consumer_timeout = {self.consumer_timeout_ms}\nloopback_users = none\n"
        )
        every = self.check_every_ms
        ticks = "" if every is None else f"{{channel_tick_interval, {every}}}"
        (self.base / "advanced.config").write_text(f"[{{rabbit, [{ticks}]}}].\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        try:
            user = pwd.getpwnam("rabbitmq")
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)
        except KeyError:
            pass
        self.proc = start_logging_to(self.base / "server.out", ["rabbitmq-server"], env=self._env())

    def wait_until_listening(self) -> None:
        wait_for_port(self.port, 90, self.proc)

    def log(self) -> str:
        """What the node has logged."""
        return "".join(path.read_text() for path in sorted((self.base / "log").glob("*.log")))

    def stop(self) -> None:
        if self.proc is None:
            return
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "shutdown"],
            env=self._env(),
            capture_output=True,
            timeout=60,
        )
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.proc = None


@dataclass
class LocalRedis:
    base: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--dir",
                str(self.base),
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, 20, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


def server_folder(prefix: str) -> Path:
    """A new folder in the system's /tmp, not the test run's scratch: RabbitMQ switches to
    its own user, which cannot enter pytest's private directories."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(folder, 0o755)
    return folder


class Services:
    """Lazily started servers, shared by a whole test session."""

    def __init__(self) -> None:
        self._tmp = server_folder("conveyor-services-")  # removed on close
        self.rabbit: LocalRabbit | None = None
        self.redis: LocalRedis | None = None
        self._amqp_url: str | None = os.environ.get("CONVEYOR_TEST_AMQP_URL")
        self._redis_url: str | None = os.environ.get("CONVEYOR_TEST_REDIS_URL")
        self._containers: list[object] = []

    def amqp_url(self) -> str:
        if self._amqp_url:
            return self._amqp_url
        if shutil.which("rabbitmq-server"):
            self.rabbit = LocalRabbit(self._tmp / "rabbit")
            self.rabbit.start()
            self._amqp_url = self.rabbit.url
        elif docker_answers():
            from testcontainers.rabbitmq import RabbitMqContainer

            container = RabbitMqContainer("rabbitmq:3.13")
            container.start()
            self._containers.append(container)
            host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
            self._amqp_url = f"amqp://guest:guest@{host}:{port}/"
        else:
            unavailable(
                "no RabbitMQ: set CONVEYOR_TEST_AMQP_URL, run Docker, or install rabbitmq-server"
            )
        assert self._amqp_url
        return self._amqp_url

    def redis_url(self) -> str:
        if self._redis_url:
            return self._redis_url
        if shutil.which("redis-server"):
            self.redis = LocalRedis(self._tmp / "redis")
            self.redis.start()
            self._redis_url = self.redis.url
        elif docker_answers():
            from testcontainers.redis import RedisContainer

            container = RedisContainer("redis:7")
            container.start()
            self._containers.append(container)
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            self._redis_url = f"redis://{host}:{port}/0"
        else:
            unavailable(
                "no Redis: set CONVEYOR_TEST_REDIS_URL, run Docker, or install redis-server"
            )
        assert self._redis_url
        return self._redis_url

    def close(self) -> None:
        if self.rabbit is not None:
            self.rabbit.stop()
        if self.redis is not None:
            self.redis.stop()
        for container in self._containers:
            container.stop()  # type: ignore[attr-defined]
        shutil.rmtree(self._tmp, ignore_errors=True)
