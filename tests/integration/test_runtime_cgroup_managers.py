"""One suite for every cgroup manager: the v1 hierarchies and the v2 unified hierarchy.

On these machines cgroup v2 is mounted at /sys/fs/cgroup/unified with no controller
enabled below the root, so the v2 manager is checked for directories and membership,
and for its error when a limit needs a controller that is missing.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from ketch.errors import SystemFailure
from ketch.runtime.cgroups import CgroupManager, manager_from_state
from ketch.runtime.cgroups.base import is_unified, own_cgroups
from ketch.runtime.cgroups.v1 import V1Manager
from ketch.runtime.cgroups.v2 import V2Manager
from ketch.runtime.config import Resources

UNIFIED = Path("/sys/fs/cgroup/unified")


def _v1(parent: str) -> V1Manager:
    return V1Manager.under_caller(f"{parent}/c", relative=True)


def _v2(parent: str) -> V2Manager:
    if not is_unified(UNIFIED):
        pytest.skip(f"no cgroup v2 hierarchy at {UNIFIED}")
    return V2Manager.under_caller(f"{parent}/c", relative=True, mount_point=UNIFIED)


@pytest.fixture(params=["v1", "v2"])
def manager(request):
    parent = f"ketch-test-{uuid.uuid4().hex[:8]}"
    cgroup_manager = _v1(parent) if request.param == "v1" else _v2(parent)
    try:
        yield cgroup_manager
    finally:
        cgroup_manager.destroy()
        for directory in _directories(cgroup_manager):
            if directory.parent.is_dir():
                directory.parent.rmdir()


@pytest.fixture
def sleeper():
    process = subprocess.Popen(["sleep", "30"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _directories(manager: CgroupManager) -> list[Path]:
    if isinstance(manager, V1Manager):
        return [Path(directory) for directory in manager.directories.values()]
    return [Path(manager.directory)]


def test_create_makes_directories(manager):
    manager.create(Resources())
    assert all(directory.is_dir() for directory in _directories(manager))


def test_directories_under_caller(manager):
    own = own_cgroups()
    for directory in _directories(manager):
        assert any(
            directory.as_posix().find(path.rstrip("/") + "/ketch-test-") >= 0
            for path in own.values()
        )


def test_add_process_lists_it(manager, sleeper):
    manager.create(Resources())
    manager.add_process(sleeper.pid)
    assert manager.processes() == [sleeper.pid]


def test_destroy_removes(manager, sleeper):
    manager.create(Resources())
    manager.add_process(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    manager.destroy()
    assert [d for d in _directories(manager) if d.exists()] == []


def test_destroy_idempotent(manager):
    manager.create(Resources())
    manager.destroy()
    manager.destroy()
    assert manager.processes() == []


def test_state_round_trip(manager):
    rebuilt = manager_from_state(manager.state())
    assert _directories(rebuilt) == _directories(manager)


def test_bind_sources_are_directories(manager):
    manager.create(Resources())
    assert [Path(path) for _, path in manager.bind_sources()] == _directories(manager)


def test_v1_limits_written():
    manager = _v1(f"ketch-test-{uuid.uuid4().hex[:8]}")
    try:
        manager.create(Resources(pids_limit=9, memory_limit=2**26, cpu_shares=512))
        assert (Path(manager.directories["pids"]) / "pids.max").read_text() == "9\n"
        assert (
            Path(manager.directories["memory"]) / "memory.limit_in_bytes"
        ).read_text() == "67108864\n"
        assert (Path(manager.directories["cpu"]) / "cpu.shares").read_text() == "512\n"
    finally:
        manager.destroy()
        for directory in _directories(manager):
            directory.parent.rmdir()


def test_v1_cpuset_inherited():
    manager = _v1(f"ketch-test-{uuid.uuid4().hex[:8]}")
    try:
        manager.create(Resources())
        cpuset = Path(manager.directories["cpuset"])
        assert (cpuset / "cpuset.cpus").read_text() == (cpuset.parent / "cpuset.cpus").read_text()
    finally:
        manager.destroy()
        for directory in _directories(manager):
            directory.parent.rmdir()


def test_v2_missing_controller_leaves_nothing():
    parent = f"ketch-test-{uuid.uuid4().hex[:8]}"
    manager = _v2(parent)
    if "memory" in (UNIFIED / "cgroup.controllers").read_text().split():
        pytest.skip("the v2 hierarchy here has the memory controller")
    with pytest.raises(SystemFailure, match="no memory controller"):
        manager.create(Resources(memory_limit=2**26))
    assert not Path(manager.directory).parent.exists()
