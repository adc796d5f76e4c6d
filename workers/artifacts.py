"""The artifact store on fsspec: a local directory by default, any fsspec URL otherwise.

Objects are immutable and content-checked: every reference carries the sha256 and
size of what was stored, and a fetch that does not match is an error. Directories
are stored as one gzipped tar.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
from fsspec.registry import known_implementations, registry

from contracts.errors import InvalidInput, Problem, StepError
from contracts.events import ArtifactRef
from contracts.vocabulary import FailureKind

DEFAULT_MAX_BYTES = 1 << 30
CHUNK = 1 << 20


def backend_problem(url: str) -> str | None:
    """Why no filesystem here can serve ``url`` (an unknown scheme, a package that is not
    installed), or None when one can. Imports the backend, opens nothing."""
    if "://" not in url:
        return None  # a local path
    for scheme in url.split("://", 1)[0].split("::"):
        known = known_implementations.get(scheme)
        if known is None and scheme not in registry:
            return f"no filesystem serves {scheme}:// URLs (unknown scheme)"
        try:
            fsspec.get_filesystem_class(scheme)
        except ImportError as exc:
            need = (known or {}).get("err") or str(exc)
            return f"{scheme}:// URLs need a package that is not installed: {need}"
    return None


class FsspecArtifactStore:
    """Implements ``contracts.ports.ArtifactStore``."""

    def __init__(
        self,
        url: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        readable_roots: Sequence[str | Path] = (),
        **storage_options: Any,
    ) -> None:
        """``readable_roots``: local folders whose files steps may take as input by
        ``file://`` URL, besides this store itself (when it is local)."""
        url = str(url)
        if "://" not in url:
            url = Path(url).resolve().as_uri()
        self.url = url.rstrip("/")
        self.max_bytes = max_bytes
        self._fs, self._root = fsspec.core.url_to_fs(self.url, **storage_options)
        roots = [Path(root).resolve() for root in readable_roots]
        if self.url.startswith("file://"):
            roots.append(Path(self._root).resolve())
        self._readable_roots = roots

    def _uri(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _path(self, uri: str) -> str:
        if not uri.startswith(self.url + "/"):
            raise StepError(f"artifact {uri} is not in this store ({self.url})", retryable=False)
        return f"{self._root}/{uri[len(self.url) + 1 :]}"

    async def put_path(self, key: str, local: Path) -> ArtifactRef:
        return await asyncio.to_thread(self._put_path, key, local)

    def _put_path(self, key: str, local: Path) -> ArtifactRef:
        if local.is_dir():
            with tempfile.TemporaryDirectory(prefix="conveyor-artifact-") as tmp:
                archive = Path(tmp) / "artifact.tar.gz"
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(local, arcname=".")
                return self._upload(key, archive, "dir", local)
        if not local.exists():
            raise StepError(f"the step did not write {local.name!r}", retryable=False)
        return self._upload(key, local, "file", local)

    def _upload(self, key: str, file: Path, kind: str, shown: Path) -> ArtifactRef:
        size = file.stat().st_size
        if size > self.max_bytes:
            raise StepError(
                f"artifact {shown.name!r} is {size} bytes, over the limit of {self.max_bytes}",
                retryable=False,
            )
        digest = _sha256(file)
        target = f"{self._root}/{key}"
        self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self._fs.put_file(str(file), target)
        return ArtifactRef(uri=self._uri(key), size=size, sha256=digest, kind=kind)  # type: ignore[arg-type]

    async def get_path(self, ref: ArtifactRef, local: Path) -> None:
        await asyncio.to_thread(self._get_path, ref, local)

    def _get_path(self, ref: ArtifactRef, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="conveyor-artifact-") as tmp:
            fetched = Path(tmp) / "object"
            self._fs.get_file(self._path(ref.uri), str(fetched))
            if _sha256(fetched) != ref.sha256:
                raise StepError(f"artifact {ref.uri} does not match its sha256", retryable=True)
            if ref.kind == "dir":
                local.mkdir(parents=True, exist_ok=True)
                with tarfile.open(fetched, "r:gz") as tar:
                    tar.extractall(local, filter="data")
            else:
                shutil.move(str(fetched), local)

    async def fetch_url(self, url: str, local: Path) -> None:
        await asyncio.to_thread(self._fetch_url, url, local)

    def _fetch_url(self, url: str, local: Path) -> None:
        self._check_local_source(url)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with fsspec.open(url, "rb") as source, open(local, "wb") as target:
                copied = 0
                while chunk := source.read(CHUNK):
                    copied += len(chunk)
                    if copied > self.max_bytes:
                        raise StepError(
                            f"{url} is over the limit of {self.max_bytes} bytes", retryable=False
                        )
                    target.write(chunk)
        except (FileNotFoundError, OSError, ValueError) as exc:
            problem = backend_problem(url) or str(exc)
            raise StepError(
                f"cannot fetch {url}: {problem}", kind=FailureKind.START, retryable=False
            ) from exc
        except ImportError as exc:
            raise StepError(
                f"cannot fetch {url}: {backend_problem(url) or exc}",
                kind=FailureKind.START,
                retryable=False,
            ) from exc

    def _check_local_source(self, url: str) -> None:
        """A step may read the worker's own disk only inside the folders allowed for it."""
        scheme = url.split("://", 1)[0].split("::")[-1] if "://" in url else "file"
        if scheme not in ("file", "local"):
            return
        path = Path(fsspec.core.strip_protocol(url)).resolve()  # links followed
        if not any(path.is_relative_to(root) for root in self._readable_roots):
            raise StepError(
                f"{url} is outside the folders steps may read from this machine (the"
                " artifact store and CONVEYOR_ARTIFACT_ROOTS)",
                kind=FailureKind.START,
                retryable=False,
            )

    async def put_bytes(self, key: str, data: bytes) -> ArtifactRef:
        return await asyncio.to_thread(self._put_bytes, key, data)

    def _put_bytes(self, key: str, data: bytes) -> ArtifactRef:
        if len(data) > self.max_bytes:
            raise StepError(
                f"{key.rsplit('/', 1)[-1]} is {len(data)} bytes, over the limit of"
                f" {self.max_bytes}",
                retryable=False,
            )
        target = f"{self._root}/{key}"
        self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self._fs.pipe_file(target, data)
        return ArtifactRef(
            uri=self._uri(key), size=len(data), sha256=hashlib.sha256(data).hexdigest()
        )

    async def get_bytes(self, ref: ArtifactRef) -> bytes:
        data: bytes = await asyncio.to_thread(self._fs.cat_file, self._path(ref.uri))
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise StepError(f"artifact {ref.uri} does not match its sha256")
        return data

    async def read_range(self, uri: str, start: int, length: int) -> bytes:
        path = self._path(uri)
        size: int = await asyncio.to_thread(self._fs.size, path)
        if start >= size:
            return b""
        end = min(size, start + length)
        data: bytes = await asyncio.to_thread(self._fs.cat_file, path, start, end)
        return data

    async def put_named(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put_bytes, key, data)

    async def get_named(self, key: str) -> bytes | None:
        try:
            found: bytes = await asyncio.to_thread(self._fs.cat_file, f"{self._root}/{key}")
        except FileNotFoundError:
            return None
        return found

    async def remove(self, key: str) -> int:
        parts = key.strip("/").split("/")
        if any(part in ("", ".", "..") for part in parts):
            # Never the whole store, nor a folder above it, whatever the caller passes.
            raise InvalidInput([Problem(f"not a folder of the artifact store: {key!r}")])
        return await asyncio.to_thread(self._remove, "/".join(parts))

    def _remove(self, key: str) -> int:
        folder = f"{self._root}/{key}"
        found = self._fs.find(folder)  # nothing there: none
        if found:
            self._fs.rm(folder, recursive=True)
        return len(found)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
