"""Commit of a container: pause, resume, and a container removed during the commit."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from ketch.engine.commits import commit_container
from ketch.errors import NotFound


class FakeEngine:
    """An engine with one running container whose commit can remove it."""

    def __init__(self, remove_during_commit: bool) -> None:
        self.container = SimpleNamespace(id="c1", running=True, state=SimpleNamespace(paused=False))
        self.removed = False
        self.calls: list[str] = []
        self.data_root = "/tmp"
        self.remove_during_commit = remove_during_commit
        self.containers = SimpleNamespace(resolve=self._resolve)
        self.control = SimpleNamespace(pause=self._pause, unpause=self._unpause)
        self.image_operations = SimpleNamespace(commit=self._commit)

    def _resolve(self, reference: str) -> Any:
        if self.removed:
            raise NotFound(f"No such container: {reference}")
        return self.container

    async def _pause(self, container_id: str) -> None:
        self.calls.append(f"pause {container_id}")
        self.container.state.paused = True

    async def _unpause(self, container_id: str) -> None:
        self.calls.append(f"unpause {container_id}")
        self.container.state.paused = False

    async def _commit(self, container_id: str, *arguments: Any) -> str:
        self.calls.append(f"commit {container_id}")
        self.removed = self.remove_during_commit
        return "sha256:abc"


def test_commit_pauses_and_resumes() -> None:
    engine = FakeEngine(remove_during_commit=False)
    image_id = asyncio.run(commit_container(engine, "c1", {}, [], None, True))
    assert image_id == "sha256:abc"
    assert engine.calls == ["pause c1", "commit c1", "unpause c1"]


def test_commit_of_removed_container_succeeds() -> None:
    engine = FakeEngine(remove_during_commit=True)
    image_id = asyncio.run(commit_container(engine, "c1", {}, [], None, True))
    assert image_id == "sha256:abc"
    assert engine.calls == ["pause c1", "commit c1"]
