"""A container runtime and a tiny image for tests, built here (no registry is reachable).

The image is busybox-static in an empty root filesystem, imported with
``podman import`` (or ``docker import``). On Podman in this sandbox, containers need
``--runtime runc`` and explicit ulimits; ``CONVEYOR_CONTAINER_GLOBAL_ARGS`` and
``CONVEYOR_CONTAINER_RUN_ARGS`` override those flags.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.services import unavailable
from workers.executors import ContainerRuntime

APPLETS = (
    "sh echo cat sleep ls mkdir wc head tail sort tr seq cut printf test true false env pwd "
    "id expr dd awk sed grep rm cp mv"
)
# The tag names the applet list, so a changed list builds a new image.
IMAGE = f"localhost/conveyor-busybox:{hashlib.sha256(APPLETS.encode()).hexdigest()[:12]}"


def runtime_for_tests() -> ContainerRuntime:
    binary = os.environ.get("CONVEYOR_CONTAINER_RUNTIME") or (
        "podman" if shutil.which("podman") else "docker" if shutil.which("docker") else None
    )
    if binary is None:
        unavailable("no container runtime: install podman (apt-get install podman runc)")
    assert binary
    if binary == "docker":
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
        if done.returncode != 0:
            unavailable("docker is installed but no Docker engine answers; install podman")
    podman = os.path.basename(binary) == "podman"
    global_args = os.environ.get(
        "CONVEYOR_CONTAINER_GLOBAL_ARGS", "--runtime runc" if podman else ""
    )
    run_args = os.environ.get(
        "CONVEYOR_CONTAINER_RUN_ARGS",
        "--ulimit nofile=1024:1024 --ulimit nproc=1000:1000" if podman else "",
    )
    return ContainerRuntime(
        binary=binary, global_args=shlex.split(global_args), run_args=shlex.split(run_args)
    )


def build_image(runtime: ContainerRuntime) -> str:
    base = runtime.base()
    if subprocess.run([*base, "image", "exists", IMAGE], capture_output=True).returncode == 0:
        return IMAGE
    busybox = shutil.which("busybox")
    if busybox is None:
        unavailable("busybox is needed to build the test image (apt-get install busybox-static)")
    assert busybox
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        (root / "bin").mkdir(parents=True)
        for sub in ("tmp", "work", "conveyor"):
            (root / sub).mkdir()
        shutil.copy(busybox, root / "bin" / "busybox")
        for applet in APPLETS.split():
            os.symlink("busybox", root / "bin" / applet)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        done = subprocess.run(
            [*base, "import", str(archive), IMAGE], capture_output=True, text=True
        )
        if done.returncode != 0:
            unavailable(f"cannot import the test image: {done.stderr.strip()}")
    return IMAGE
