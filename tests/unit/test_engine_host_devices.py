"""The host's device nodes listed for a privileged container, read from the real /dev."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ketch.engine.host_devices import host_devices, merge_devices
from ketch.engine.hostconfig import apply_host_options, parse_host_options
from ketch.engine.spec import DEFAULT_CAPABILITIES


@pytest.fixture(scope="module")
def devices_by_path() -> dict[str, dict[str, object]]:
    return {device["path"]: device for device in host_devices()}


def test_host_devices_null_entry(devices_by_path: dict[str, dict[str, object]]) -> None:
    null = devices_by_path["/dev/null"]
    info = os.stat("/dev/null")
    assert null["type"] == "c"
    assert (null["major"], null["minor"]) == (1, 3)
    assert null["fileMode"] == stat.S_IMODE(info.st_mode)
    assert (null["uid"], null["gid"]) == (info.st_uid, info.st_gid)


def test_host_devices_skips_runtime_nodes(devices_by_path: dict[str, dict[str, object]]) -> None:
    assert "/dev/console" not in devices_by_path
    assert "/dev/ptmx" not in devices_by_path


def test_host_devices_skips_own_mounts(devices_by_path: dict[str, dict[str, object]]) -> None:
    for path in devices_by_path:
        assert not path.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/")), path


def test_host_devices_only_nodes(devices_by_path: dict[str, dict[str, object]]) -> None:
    for path, device in devices_by_path.items():
        assert device["type"] in ("b", "c"), path
        assert not Path(path).is_symlink(), path


def test_host_devices_sorted() -> None:
    paths = [device["path"] for device in host_devices()]
    assert paths == sorted(paths)


def test_host_devices_other_root(tmp_path: Path) -> None:
    (tmp_path / "regular").write_text("not a device")
    (tmp_path / "link").symlink_to("/dev/null")
    assert host_devices(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_host_devices_nested_pts_kept(tmp_path: Path) -> None:
    for directory in ("pts", "bus/pts"):
        (tmp_path / directory).mkdir(parents=True)
        os.mknod(tmp_path / directory / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    paths = [device["path"] for device in host_devices(tmp_path)]
    assert paths == ["/dev/bus/pts/null"]


def test_merge_devices_explicit_replaces_host() -> None:
    host = [
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
        {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
    ]
    explicit = [{"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}]

    merged = merge_devices(host, explicit)

    assert [device["path"] for device in merged] == ["/dev/null", "/dev/zero"]
    assert merged[0]["fileMode"] == 0o600


def test_privileged_spec_one_entry_per_path() -> None:
    explicit = {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}
    spec = {
        "process": {"capabilities": {"effective": ["CAP_CHOWN"]}},
        "linux": {"resources": {"devices": []}, "devices": [explicit]},
        "mounts": [],
    }

    options = parse_host_options({"Privileged": True}, "none")
    apply_host_options(spec, options, DEFAULT_CAPABILITIES)

    paths = [device["path"] for device in spec["linux"]["devices"]]
    assert len(paths) == len(set(paths))
    null = [device for device in spec["linux"]["devices"] if device["path"] == "/dev/null"]
    assert null == [explicit]
