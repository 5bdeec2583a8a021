"""cgroup paths, controller values and device rules, without touching the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime.cgroups import cpu, devices, manager_from_state, memory, pids
from ketch.runtime.cgroups.base import resolve_cgroups_path
from ketch.runtime.cgroups.v1 import V1Manager
from ketch.runtime.cgroups.v2 import V2Manager
from ketch.runtime.config import DeviceRule, Resources
from ketch.runtime.paths import unescape_mountinfo


def test_default_path_relative():
    assert resolve_cgroups_path(None, "abc") == (True, "ketch/abc")


def test_absolute_path():
    assert resolve_cgroups_path("/docker/abc", "abc") == (False, "docker/abc")


@pytest.mark.parametrize("path", ["../escape", "a/../../b", "/"])
def test_bad_path_rejected(path):
    with pytest.raises(InvalidArgument, match="linux.cgroupsPath"):
        resolve_cgroups_path(path, "abc")


def test_shares_to_weight_bounds():
    assert cpu.shares_to_weight(2) == 1
    assert cpu.shares_to_weight(262144) == 10000


def test_shares_to_weight_default():
    assert cpu.shares_to_weight(1024) == 39


def _files(directory: Path, *names: str) -> None:
    # cgroup interface files always exist; the runtime opens them without O_CREAT.
    for name in names:
        (directory / name).write_text("")


def test_pids_unlimited_written_max(tmp_path):
    _files(tmp_path, "pids.max")
    pids.apply_v1(tmp_path, Resources(pids_limit=0))
    assert (tmp_path / "pids.max").read_text() == "max"


def test_memory_v1_files(tmp_path):
    _files(tmp_path, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
    _files(tmp_path, "memory.soft_limit_in_bytes")
    memory.apply_v1(tmp_path, Resources(memory_limit=100, memory_swap=200, memory_reservation=50))
    assert (tmp_path / "memory.limit_in_bytes").read_text() == "100"
    assert (tmp_path / "memory.memsw.limit_in_bytes").read_text() == "200"
    assert (tmp_path / "memory.soft_limit_in_bytes").read_text() == "50"


def test_memory_v1_swap_without_accounting(tmp_path):
    with pytest.raises(InvalidArgument, match="swap accounting"):
        memory.apply_v1(tmp_path, Resources(memory_swap=200))


def test_memory_v2_swap_is_difference(tmp_path):
    _files(tmp_path, "memory.max", "memory.swap.max")
    memory.apply_v2(tmp_path, Resources(memory_limit=100, memory_swap=300))
    assert (tmp_path / "memory.max").read_text() == "100"
    assert (tmp_path / "memory.swap.max").read_text() == "200"


def test_memory_v2_unlimited(tmp_path):
    _files(tmp_path, "memory.max")
    memory.apply_v2(tmp_path, Resources(memory_limit=-1))
    assert (tmp_path / "memory.max").read_text() == "max"


def test_cpu_v2_max(tmp_path):
    _files(tmp_path, "cpu.max")
    cpu.apply_v2(tmp_path, Resources(cpu_quota=50000, cpu_period=100000))
    assert (tmp_path / "cpu.max").read_text() == "50000 100000"


def test_device_rule_text():
    assert devices.rule_text("c", 1, 3, "rwm") == "c 1:3 rwm"
    assert devices.rule_text("b", None, None, "m") == "b *:* m"
    assert devices.rule_text("a", None, None, "rwm") == "a"


def test_device_rules_then_defaults(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(
        devices, "write_value", lambda d, name, value: written.append((name, value))
    )
    rules = [DeviceRule(allow=False, type="a", major=None, minor=None, access="rwm")]
    devices.apply_v1(tmp_path, Resources(devices=rules))
    assert written[0] == ("devices.deny", "a")
    assert ("devices.allow", "c 1:3 rwm") in written[1:]
    assert len(written) == 1 + len(devices.DEFAULT_ALLOWED)


def test_v1_state_round_trip():
    manager = V1Manager({"pids": Path("/sys/fs/cgroup/pids/x")}, {"pids": ["pids"]})
    rebuilt = manager_from_state(manager.state())
    assert isinstance(rebuilt, V1Manager)
    assert rebuilt.directories == manager.directories


def test_v2_state_round_trip():
    manager = V2Manager(Path("/sys/fs/cgroup/x"))
    rebuilt = manager_from_state(manager.state())
    assert isinstance(rebuilt, V2Manager)
    assert rebuilt.directory == manager.directory


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("/plain", "/plain"),
        ("/a\\040b", "/a b"),
        ("/t\\011n\\012", "/t\tn\n"),
        ("/back\\134slash", "/back\\slash"),
        ("/literal\\134040", "/literal\\040"),
        ("/caf\u00e9", "/caf\u00e9"),
        ("/caf\u00e9\\040x", "/caf\u00e9 x"),
    ],
)
def test_unescape_mountinfo(field, expected):
    assert unescape_mountinfo(field) == expected
