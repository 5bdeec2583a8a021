"""The interfaces the engine calls in the layers below it, as typing Protocols.

``ImageSource`` is the part of ``ketch.images.ImageStore`` and ``Supervisor`` the part of
``ketch.supervisor.client.SupervisorClient`` that the container service uses, so tests
can pass in-memory stand-ins.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol


class ImageSource(Protocol):
    """The part of ketch.images.ImageStore that containers use."""

    def get(self, name_or_id: str) -> Any: ...
    def prepare_rootfs(self, container_id: str, image: Any) -> Path: ...
    def release_rootfs(self, container_id: str) -> None: ...


class Supervisor(Protocol):
    """The part of ketch.supervisor.client.SupervisorClient that containers use."""

    async def create(
        self,
        container_id: str,
        bundle: Path,
        log_path: Path,
        *,
        open_stdin: bool = False,
        log_max_size: int = 0,
        log_max_files: int = 1,
        tty: bool = False,
    ) -> int: ...
    async def start(self, container_id: str) -> None: ...
    async def kill(self, container_id: str, signal: int) -> None: ...
    async def pause(self, container_id: str) -> None: ...
    async def resume(self, container_id: str) -> None: ...
    async def update(self, container_id: str, resources: dict[str, Any]) -> None: ...
    async def exec(
        self,
        container_id: str,
        exec_id: str,
        process: dict[str, Any],
        *,
        tty: bool = False,
        open_stdin: bool = False,
    ) -> tuple[Any, Any, int]: ...
    async def resize(self, target_id: str, height: int, width: int) -> None: ...
    async def delete(self, container_id: str, force: bool = False) -> None: ...
    async def list(self) -> list[dict[str, Any]]: ...
    async def attach(
        self, container_id: str, stdout: bool = True, stderr: bool = True
    ) -> asyncio.StreamReader: ...
