"""Exec records on disk, loaded back when ketchd restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ketch.engine.execs import ExecInstance, ExecService
from ketch.engine.store import ContainerPaths


class FakeContainers:
    """One container, ``c1``, with a supervisor that knows no execs."""

    def __init__(self) -> None:
        self.supervisor = SimpleNamespace(execs=self._execs)

    def all(self) -> list[Any]:
        return [SimpleNamespace(id="c1")]

    async def _execs(self, container_id: str) -> list[dict[str, Any]]:
        return []


def test_restore_skips_non_object_record(tmp_path: Path) -> None:
    paths = ContainerPaths(tmp_path)
    directory = paths.directory("c1") / "execs"
    directory.mkdir(parents=True)
    (directory / "bad.json").write_text(json.dumps(["not", "an", "exec"]))
    record = ExecInstance(id="e1", container_id="c1", cmd=["true"]).to_record()
    (directory / "e1.json").write_text(json.dumps(record))

    service = ExecService(FakeContainers(), paths)  # type: ignore[arg-type]
    asyncio.run(service.reconcile())

    assert service.get("e1").cmd == ["true"]
    assert service.get("e1").running is False
