"""Configuration from flags and the environment (``CONVEYOR_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.durations import Duration
from contracts.topology import DEFAULT_SHARDS
from contracts.validation import MAX_WORKFLOW_BYTES
from contracts.values import MAX_VALUE_BYTES
from engine.announce import AnnounceLevel

MAX_REQUEST_BYTES = 1 << 20
"""The default ceiling on a request to the server's API and UI: parameters and signal
data are small; files go as artifacts."""


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
AMQP_SCHEMES = ("amqp", "amqps")


def _scheme_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``url`` is not one of ``schemes``, naming only its scheme: the rest may hold
    a password."""
    scheme, sep, _ = url.strip().partition("://")
    if sep and scheme in schemes:
        return None
    given = f"{scheme}://…" if sep else "no scheme"
    return f"expected a URL starting {', '.join(f'{s}://' for s in schemes)}; got {given}"


class Settings(BaseSettings):
    """Where the services are and how the engine paces itself.

    With ``amqp_url`` and ``redis_url`` set, commands work against the distributed
    engine; without them, against the local embedded store under ``home``.
    """

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", extra="ignore")

    amqp_url: str | None = Field(
        default=None,
        description="RabbitMQ URL, e.g. amqp://guest:guest@localhost:5672/; a cluster's"
        " nodes comma-separated (amqp://a/,amqp://b/,amqp://c/), tried in turn.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis URL, e.g. redis://localhost:6379/0; redis+cluster://host:port"
        " for a Redis Cluster.",
    )

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls(cls, url: str | None) -> str | None:
        for one in (url or "").split(","):
            if one.strip() and (problem := _scheme_problem(one, AMQP_SCHEMES)):
                raise ValueError(problem)
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url and (problem := _scheme_problem(url, REDIS_SCHEMES)):
            raise ValueError(problem)
        return url

    home: Path = Field(default=Path(".conveyor"), description="Local store of embedded runs.")
    shards: int = Field(
        default=DEFAULT_SHARDS,
        ge=1,
        le=1024,
        description="Coordinator shards when the run log holds no shard map yet (the first"
        " coordinator or client stores one; change it with `conveyor shards N`).",
    )
    shard_watch_interval: float = Field(
        default=5.0, gt=0, description="How often coordinators look for a changed shard map (s)."
    )
    amqp_heartbeat: float = Field(default=10.0, gt=0, description="AMQP connection heartbeat (s).")
    connect_within: float = Field(
        default=20.0,
        gt=0,
        description="How long a command (submit, cancel, dead-letters, ...) tries to reach"
        " RabbitMQ before it gives up (s); services keep trying.",
    )
    queue_type: Literal["quorum", "classic"] = Field(
        default="quorum",
        description="RabbitMQ queue type of Conveyor's queues: quorum (replicated, the"
        " broker dead-letters a message after delivery_limit deliveries) or classic.",
    )
    delivery_limit: int = Field(
        default=20,
        ge=1,
        description="Deliveries of one message before a quorum queue dead-letters it.",
    )
    heartbeat_interval: float = Field(default=2.0, gt=0)
    heartbeat_timeout: float = Field(
        default=15.0,
        gt=0,
        description="The lease of a started attempt: one whose worker sent no heartbeat"
        " for this long runs again elsewhere (the AMQP heartbeat is kept under a third).",
    )
    wake_interval: float = Field(default=5.0, gt=0)
    retention: Duration | None = Field(
        default=None,
        gt=0,
        description="A server deletes runs that ended longer ago than this (30d, 12h), with"
        " their output lines and artifacts; unset, runs are kept for good.",
    )
    worker_grace: float = Field(default=30.0, ge=0)
    dispatch_batch: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Most tasks per task message when many are ready at once (1: never batch; "
        "a batch's tasks all run on the worker that takes it).",
    )
    artifacts_url: str | None = Field(
        default=None,
        description="Artifact store: a directory or any fsspec URL (s3://bucket/prefix, ...). "
        "Default: HOME/artifacts, which only works when every process shares that disk.",
    )
    artifact_max_bytes: int = Field(default=1 << 30, gt=0)
    artifact_roots: str = Field(
        default="",
        description="Local folders (separated by ':') whose files steps may take as input"
        " artifacts by file:// URL, besides a local artifact store.",
    )
    max_result_bytes: int = Field(
        default=MAX_VALUE_BYTES,
        gt=0,
        description="Largest result or output parameter of a step (over 64 KiB they travel"
        " through the artifact store).",
    )
    signing_keys: str = Field(
        default="",
        description="Keys that sign and check messages on the broker:"
        " role:key-id:KEY,... (roles client, worker, coordinator; KEY a shared secret or"
        " half of an Ed25519 pair; `conveyor keys new`; docs/security.md).",
    )
    announce: AnnounceLevel = Field(
        default=AnnounceLevel.RUNS,
        description="State changes published on the conveyor.state-changes exchange: runs,"
        " tasks (every task attempt's too), none.",
    )
    max_workflow_bytes: int = Field(
        default=MAX_WORKFLOW_BYTES, gt=0, description="Largest workflow file read."
    )
    max_request_bytes: int = Field(
        default=MAX_REQUEST_BYTES,
        gt=0,
        description="Largest request body the server's API and UI read (a 413 past it;"
        " webhooks have their own max_bytes per trigger).",
    )

    def artifact_store_url(self) -> str:
        return self.artifacts_url or str((self.home / "artifacts").resolve())
