"""The process that moves the container's init into its cgroups, by config and option."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.runtime.config import parse_spec
from ketch.runtime.create import _ContainerCgroups
from ketch.runtime.spec import default_spec


class _RecordingManager:
    """A stand-in cgroup manager that records the pids passed to add_process."""

    def __init__(self) -> None:
        self.added: list[int] = []

    def add_process(self, pid: int) -> None:
        self.added.append(pid)


def _cgroups(tmp_path: Path, after_ready: bool, **changes) -> _ContainerCgroups:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    config = default_spec(["true"])
    config["process"]["terminal"] = False
    extra_namespaces = changes.pop("namespaces", [])
    config["linux"]["namespaces"] += [{"type": kind} for kind in extra_namespaces]
    if "user" in extra_namespaces:
        mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["uidMappings"] = mapping
        config["linux"]["gidMappings"] = mapping
    config.update(changes)
    return _ContainerCgroups(_RecordingManager(), parse_spec(config, tmp_path), after_ready)


def test_default_parent_adds_init(tmp_path):
    cgroups = _cgroups(tmp_path, after_ready=False)
    assert not cgroups.init_joins_after_ready
    cgroups.add_init(42)
    assert cgroups.manager.added == [42]


def test_after_ready_init_joins(tmp_path):
    cgroups = _cgroups(tmp_path, after_ready=True)
    assert cgroups.init_joins_after_ready
    cgroups.add_init(42)
    assert cgroups.manager.added == []


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_after_ready_hooks_keep_parent(tmp_path, kind):
    hooks = {kind: [{"path": "/bin/true"}]}
    cgroups = _cgroups(tmp_path, after_ready=True, hooks=hooks)
    assert not cgroups.init_joins_after_ready
    cgroups.add_init(42)
    assert cgroups.manager.added == [42]


@pytest.mark.parametrize("kind", ["startContainer", "poststart", "poststop"])
def test_after_ready_later_hooks_allowed(tmp_path, kind):
    hooks = {kind: [{"path": "/bin/true"}]}
    assert _cgroups(tmp_path, after_ready=True, hooks=hooks).init_joins_after_ready


def test_after_ready_cgroup_namespace(tmp_path):
    cgroups = _cgroups(tmp_path, after_ready=True, namespaces=["cgroup"])
    assert cgroups.init_joins
    assert not cgroups.init_joins_after_ready


def test_after_ready_user_namespace(tmp_path):
    cgroups = _cgroups(tmp_path, after_ready=True, namespaces=["user"])
    assert not cgroups.init_joins_after_ready
    assert cgroups.open_procs_files() == []
