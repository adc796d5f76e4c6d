"""Container steps on the Docker or Podman command line: no Kubernetes needed.

Each container is named and labelled with its run, task, item, attempt and worker, so
a timeout or cancel can stop and remove it, and a worker starting after a crash can
remove the containers its dead predecessor left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from contracts.messages import ContainerSpec, TaskReady
from contracts.vocabulary import FailureKind
from workers.executors.base import LogEmitter, StepOutcome, succeeded
from workers.executors.orphans import worker_alive
from workers.executors.process import conveyor_env, pump
from workers.executors.spawning import Spawned, spawn

log = structlog.get_logger("conveyor.container")

CONTAINER_WORKDIR = "/work"
_NOT_STARTED = (125, 126, 127)
"""Exit codes of the runtime itself (125), or of a command that could not run (126, 127)."""
_IMAGE_MISSING = ("image not known", "manifest unknown", "no such image", "unable to find image")
SCRIPT_PATH = "/conveyor/step"
PULL_FLAG = {"always": "always", "if-not-present": "missing", "never": "never"}
LABEL = "conveyor"


DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
"""What a container step keeps by default: enough for an image's root user to manage
its own files and drop to another user; no network administration, no raw sockets, no
kernel modules, no ptrace, no mount (``CONVEYOR_CONTAINER_CAPABILITIES`` to change)."""


@dataclass
class ContainerRuntime:
    """Which CLI runs containers, and the extra flags this machine needs.

    ``global_args`` go before the subcommand (``podman --runtime runc run ...``),
    ``run_args`` after it (``... run --ulimit nofile=1024:1024 ...``).
    """

    binary: str | None = None
    global_args: list[str] = field(default_factory=list)
    run_args: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=lambda: list(DEFAULT_CAPABILITIES))
    """Capabilities a step keeps; every other one is dropped."""
    new_privileges: bool = False
    """Whether a step may gain privileges (setuid programs): off unless asked."""
    default_user: str | None = field(default_factory=lambda: f"{os.getuid()}:{os.getgid()}")
    """Who a step runs as when its task names no ``user``: the worker's own user, so a
    step is not root unless the worker is, and can write its mounted directory.
    ``CONVEYOR_CONTAINER_USER`` changes it; empty means the image's own user."""

    @classmethod
    def from_env(cls) -> ContainerRuntime:
        caps = os.environ.get("CONVEYOR_CONTAINER_CAPABILITIES")
        return cls(
            binary=os.environ.get("CONVEYOR_CONTAINER_RUNTIME") or None,
            global_args=shlex.split(os.environ.get("CONVEYOR_CONTAINER_GLOBAL_ARGS", "")),
            run_args=shlex.split(os.environ.get("CONVEYOR_CONTAINER_RUN_ARGS", "")),
            capabilities=list(DEFAULT_CAPABILITIES)
            if caps is None
            else [c.strip().upper() for c in caps.split(",") if c.strip()],
            new_privileges=os.environ.get("CONVEYOR_CONTAINER_NEW_PRIVILEGES", "") in ("1", "true"),
            default_user=os.environ.get("CONVEYOR_CONTAINER_USER", f"{os.getuid()}:{os.getgid()}")
            or None,
        )

    def hardening(self) -> list[str]:
        """Flags that keep a step to what it needs (see docs/security.md)."""
        flags = ["--cap-drop=ALL", *(f"--cap-add={cap}" for cap in self.capabilities)]
        if not self.new_privileges:
            flags.append("--security-opt=no-new-privileges")
        return flags

    def resolve(self) -> str | None:
        """The runtime binary: as configured, else Podman or Docker, whichever is found."""
        if self.binary:
            return shutil.which(self.binary)
        return shutil.which("podman") or shutil.which("docker")

    def base(self) -> list[str]:
        binary = self.resolve()
        if binary is None:
            raise FileNotFoundError(self.binary or "podman or docker")
        return [binary, *self.global_args]


class ContainerExecutor:
    def __init__(self, runtime: ContainerRuntime | None = None, worker: str = "") -> None:
        self.runtime = runtime or ContainerRuntime.from_env()
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self._removals: set[asyncio.Task[None]] = set()

    async def run(self, task: TaskReady, emit: LogEmitter, workdir: Path) -> StepOutcome:
        spec = task.step.container
        assert spec is not None
        try:
            base = self.runtime.base()
        except FileNotFoundError as exc:
            return StepOutcome(
                ok=False,
                error=f"container runtime not found: {exc} (install Podman or Docker, or set "
                "CONVEYOR_CONTAINER_RUNTIME)",
                reason=FailureKind.START,
                retryable=False,
            )
        if spec.image.startswith("-") or not spec.image.strip():
            return StepOutcome(
                ok=False,
                error=f"not an image: {spec.image!r}",
                reason=FailureKind.START,
                retryable=False,
            )
        multiline = sorted(k for k, v in task.step.env.items() if "\n" in v or "\0" in v)
        if multiline:
            return StepOutcome(
                ok=False,
                error=f"env {', '.join(multiline)}: a container's variables cannot hold line"
                " breaks; pass such data as a file (an input artifact)",
                reason=FailureKind.START,
                retryable=False,
            )
        suffix = f"{task.index}-{task.attempt}-{uuid.uuid4().hex[:6]}"
        name = f"conveyor-{task.run_id[:12]}-{_safe(task.task)}-{suffix}"
        argv = [
            *base,
            "run",
            *self._run_flags(task, spec, name, workdir),
            "--",  # whatever the image is, it is not read as a flag
            spec.image,
            *self._command(spec, workdir),
        ]
        # The runtime's monitor (conmon) writes a file named ``oom`` into its working
        # directory when the kernel kills the container: that is the scratch directory,
        # which goes with the step, not the worker's own directory.
        proc = await spawn(argv, cwd=workdir.parent)
        stdout_parts: list[bytes] = []
        stderr_tail: list[str] = []

        def emit_err(stream: str, text: str) -> None:
            stderr_tail.append(text)
            del stderr_tail[:-20]
            emit(stream, text)

        readers = asyncio.gather(
            pump(proc.stdout, "stdout", emit, stdout_parts),
            pump(proc.stderr, "stderr", emit_err, None),
        )
        try:
            # Shielded: a cancel stops the container, and then the readers take what it
            # wrote before it stopped.
            await asyncio.shield(readers)
            code = await proc.wait()
        except asyncio.CancelledError:  # cancelled or timed out: stop and remove it
            await self._stop(base, name, proc, readers)
            raise
        # Ask the runtime only when the exit code hints at it: each call costs a process.
        oom = code == 137 and await self._oom_killed(base, name)
        self._remove_later(base, name)
        if code != 0:
            return self._failure(code, oom, spec, stderr_tail)
        return succeeded(stdout_parts, workdir, task.step.outputs)

    def _run_flags(
        self, task: TaskReady, spec: ContainerSpec, name: str, workdir: Path
    ) -> list[str]:
        inner = task.step.workdir or CONTAINER_WORKDIR
        flags = [
            "--name",
            name,
            "--label",
            f"{LABEL}.run={task.run_id}",
            "--label",
            f"{LABEL}.task={task.task}",
            "--label",
            f"{LABEL}.index={task.index}",
            "--label",
            f"{LABEL}.attempt={task.attempt}",
            "--label",
            f"{LABEL}.worker={self.worker}",
            "--label",
            f"{LABEL}.host={socket.gethostname()}",
            "-v",
            f"{workdir}:{inner}",
            "-w",
            inner,
            f"--pull={PULL_FLAG.get(spec.pull, 'missing')}",
        ]
        # Values go in a file only this user can read, never on the runtime's command
        # line, where `ps` shows them to everyone on the host.
        env_file = workdir.parent / "conveyor-env"
        env_file.touch(mode=0o600)
        env_file.write_text(
            "".join(f"{k}={v}\n" for k, v in {**conveyor_env(task), **task.step.env}.items()),
            encoding="utf-8",
        )
        flags += ["--env-file", str(env_file)]
        if spec.script is not None:
            script = workdir.parent / "conveyor-step"
            script.write_text(spec.script, encoding="utf-8")
            flags += ["-v", f"{script}:{SCRIPT_PATH}:ro"]
        user = spec.user or self.runtime.default_user
        if user:
            flags += ["--user", user]
        if spec.network:
            flags += ["--network", spec.network]
        if spec.cpus:
            flags += ["--cpus", str(spec.cpus)]
        if spec.memory:
            flags += ["--memory", spec.memory, "--memory-swap", spec.memory]
        return [*flags, *self.runtime.hardening(), *self.runtime.run_args]

    @staticmethod
    def _command(spec: ContainerSpec, workdir: Path) -> list[str]:
        if spec.script is not None:
            return [*(spec.command or ["sh"]), SCRIPT_PATH, *spec.args]
        return [*(spec.command or []), *spec.args]

    def _failure(self, code: int, oom: bool, spec: ContainerSpec, stderr: list[str]) -> StepOutcome:
        text = "\n".join(stderr).lower()
        last = stderr[-1] if stderr else ""

        def refused(error: str, reason: FailureKind = FailureKind.START) -> StepOutcome:
            # Retrying cannot help: the same image, command or permissions fail again.
            return StepOutcome(
                ok=False, error=error, reason=reason, retryable=False, exit_code=code
            )

        if oom or (code == 137 and spec.memory):
            return StepOutcome(
                ok=False,
                error=f"OOM-killed: the container went over its memory limit ({spec.memory})",
                reason=FailureKind.ERROR,
                exit_code=137,
            )
        not_started = code in _NOT_STARTED
        if not_started and (
            any(marker in text for marker in _IMAGE_MISSING)
            or ("pull" in text and "not found" in text)
        ):
            return refused(f"image not found: {spec.image} (pull policy {spec.pull})")
        if "permission denied" in text:
            return refused(
                f"permission denied: {last}".strip(),
                FailureKind.START if code in (125, 126) else FailureKind.ERROR,
            )
        if not_started:
            detail = last if stderr else f"exit code {code}"
            return refused(f"container could not start: {detail}")
        return StepOutcome(
            ok=False, error=f"exit code {code}", reason=FailureKind.ERROR, exit_code=code
        )

    async def _oom_killed(self, base: list[str], name: str) -> bool:
        done = await _quiet(*base, "inspect", "--format", "{{.State.OOMKilled}}", name)
        return done.strip().lower() == "true"

    async def _remove(self, base: list[str], name: str) -> None:
        await _quiet(*base, "rm", "-f", name)

    def _remove_later(self, base: list[str], name: str) -> None:
        """Remove an exited container off the step's critical path."""
        self._in_background(self._remove(base, name))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def start(self) -> None:
        """Remove containers a crashed worker of this host left behind, in the
        background: listing them takes the runtime 10-20 ms, which would be most of the
        start of an embedded engine whose workflow runs no container at all."""
        self._in_background(self._remove_orphans())

    async def stop(self) -> None:
        """Wait for the search for orphans and the removals going on in the background."""
        await self.drain()

    async def drain(self) -> None:
        """Wait for pending removals (the worker calls this when it stops)."""
        await asyncio.gather(*self._removals, return_exceptions=True)

    async def _stop(
        self,
        base: list[str],
        name: str,
        proc: Spawned,
        readers: asyncio.Future[Any],
    ) -> None:
        await _quiet(*base, "kill", name)
        await self._remove(base, name)
        proc.kill()
        await proc.wait()
        await proc.end_reading(readers)

    async def _remove_orphans(self) -> None:
        """Remove containers of workers on this host that are no longer alive."""
        try:
            base = self.runtime.base()
        except FileNotFoundError:
            return  # no runtime here, so no containers either
        try:
            listing = await _quiet(
                *base,
                "ps",
                "-a",
                "--filter",
                f"label={LABEL}.host={socket.gethostname()}",
                "--format",
                "{{.Names}} {{.Labels}}",
            )
        except OSError:  # found but cannot be started: for the container steps to report
            log.exception("could not look for orphaned containers")
            return
        for line in listing.splitlines():
            name, _, labels = line.partition(" ")
            owner = _label(labels, f"{LABEL}.worker")
            if owner and owner != self.worker and not worker_alive(owner):
                await _quiet(*base, "kill", name)  # rm -f alone waits out a stop timeout
                await self._remove(base, name)
                log.warning("removed an orphaned container", container=name, owner=owner)


def _label(labels: str, key: str) -> str | None:
    # `--format {{.Labels}}` prints map[k:v k2:v2] (podman) or k=v,k2=v2 (docker).
    text = labels.strip().removeprefix("map[").removesuffix("]")
    for part in text.replace(",", " ").split():
        for sep in ("=", ":"):
            k, s, v = part.partition(sep)
            if s and k == key:
                return v
    return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:40]


async def _quiet(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    return out.decode(errors="replace")


__all__ = ["ContainerExecutor", "ContainerRuntime"]
