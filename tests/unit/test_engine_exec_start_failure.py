"""An exec whose process does not start: its exit code, state and reported error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ketch.engine.execs import ExecService, exec_failure_exit_code, exec_start_error
from ketch.engine.store import ContainerPaths
from ketch.errors import Conflict, Forbidden, InvalidArgument, KetchError, NotFound, Unavailable


class FailingContainers:
    """One running container, ``c1``, whose supervisor fails every exec with ``error``."""

    def __init__(self, error: KetchError) -> None:
        self.error = error
        self.container = SimpleNamespace(
            id="c1", running=True, state=SimpleNamespace(paused=False), rootfs="/nonexistent"
        )
        self.supervisor = SimpleNamespace(exec=self._exec)
        self.events: list[str] = []

    def resolve(self, reference: str) -> Any:
        return self.container

    def all(self) -> list[Any]:
        return [self.container]

    def emit(self, container: Any, action: str, **attributes: str) -> None:
        self.events.append(action)

    async def _exec(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def failing_service(tmp_path: Path, error: KetchError) -> tuple[ExecService, str]:
    paths = ContainerPaths(tmp_path)
    paths.bundle("c1").mkdir(parents=True)
    (paths.bundle("c1") / "config.json").write_text(json.dumps({"process": {"args": ["sh"]}}))
    service = ExecService(FailingContainers(error), paths)  # type: ignore[arg-type]
    exec_id = service.create("c1", {"Cmd": ["nonexistentcmd"]})["Id"]
    return service, exec_id


def test_missing_command_exits_127(tmp_path: Path) -> None:
    error = NotFound('exec: "nonexistentcmd": executable file not found in $PATH')
    service, exec_id = failing_service(tmp_path, error)

    with pytest.raises(InvalidArgument) as raised:
        asyncio.run(service.start(exec_id, detach=False))

    assert str(raised.value) == (
        "OCI runtime exec failed: exec failed: unable to start container process: "
        'exec: "nonexistentcmd": executable file not found in $PATH: unknown'
    )
    inspected = service.inspect(exec_id)
    assert inspected["ExitCode"] == 127
    assert inspected["Running"] is False


def test_not_executable_exits_126(tmp_path: Path) -> None:
    service, exec_id = failing_service(tmp_path, Forbidden('exec: "/tmp/x": permission denied'))

    with pytest.raises(InvalidArgument):
        asyncio.run(service.start(exec_id, detach=True))

    assert service.inspect(exec_id)["ExitCode"] == 126


def test_failed_exec_cannot_start_again(tmp_path: Path) -> None:
    service, exec_id = failing_service(tmp_path, NotFound('exec: "x": executable file not found'))
    with pytest.raises(InvalidArgument):
        asyncio.run(service.start(exec_id, detach=False))

    with pytest.raises(Conflict):
        service.check_start(exec_id)


def test_failed_exec_record_keeps_exit_code(tmp_path: Path) -> None:
    service, exec_id = failing_service(tmp_path, NotFound('exec: "x": executable file not found'))
    with pytest.raises(InvalidArgument):
        asyncio.run(service.start(exec_id, detach=False))

    record_path = ContainerPaths(tmp_path).directory("c1") / "execs" / f"{exec_id}.json"
    record = json.loads(record_path.read_text())
    assert record["exit_code"] == 127
    assert record["running"] is False


def test_other_start_error_kept(tmp_path: Path) -> None:
    error = Unavailable("supervisor connection failed during exec")
    service, exec_id = failing_service(tmp_path, error)

    with pytest.raises(Unavailable):
        asyncio.run(service.start(exec_id, detach=False))

    assert service.inspect(exec_id)["ExitCode"] == 126


def test_exec_failure_exit_codes() -> None:
    assert exec_failure_exit_code('exec: "x": executable file not found in $PATH') == 127
    assert exec_failure_exit_code('exec: "/x": stat /x: no such file or directory') == 127
    assert exec_failure_exit_code('exec: "/x": permission denied') == 126
    assert exec_failure_exit_code('exec: "/x": is a directory') == 126
    assert exec_failure_exit_code("cannot enter process.cwd /nope") == 126


def test_start_error_not_a_lookup_kept() -> None:
    error = NotFound("No such container: c1")
    assert exec_start_error(error) is error
