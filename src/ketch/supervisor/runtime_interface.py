"""The part of the OCI runtime library that the supervisor calls, as a Protocol, so that
tests can run the supervisor over a runtime that starts plain processes."""

from __future__ import annotations

from pathlib import Path

from ketch.errors import SystemFailure

# False at run time, so that the supervisor process does not import typing (see
# ketch.supervisor.records). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Runtime(Protocol):
        """The part of ketch.runtime.Runtime the supervisor calls."""

        def create(
            self,
            container_id: str,
            bundle: Path,
            *,
            stdio: tuple[int, int, int] | None = None,
            console_socket: Path | None = None,
        ) -> int: ...

        def exec(
            self,
            container_id: str,
            process: dict[str, Any],
            *,
            stdio: tuple[int, int, int] | None = None,
            console_socket: Path | None = None,
        ) -> int: ...

        def start(self, container_id: str) -> None: ...

        def kill(self, container_id: str, signal: int, all: bool = False) -> None: ...

        def delete(self, container_id: str, force: bool = False) -> None: ...

        def pause(self, container_id: str) -> None: ...

        def resume(self, container_id: str) -> None: ...

        def update(self, container_id: str, resources: dict[str, Any]) -> None: ...

        def processes(self, container_id: str) -> list[int]: ...


def call_runtime(action: str, container_id: str, call: Any) -> Any:
    """Run a runtime call, turning an OSError into SystemFailure naming the container."""
    try:
        return call()
    except OSError as error:
        raise SystemFailure(f"cannot {action} container {container_id}: {error}") from None
