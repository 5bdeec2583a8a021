"""Validation of config.json: each bad field is named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.runtime.config import load_spec, parse_spec
from ketch.runtime.spec import default_spec


def _config(tmp_path: Path, **changes) -> dict:
    (tmp_path / "rootfs").mkdir(exist_ok=True)
    config = default_spec(["true"])
    config["process"]["terminal"] = False
    config.update(changes)
    return config


def _parse(tmp_path: Path, config: dict):
    return parse_spec(config, tmp_path)


def test_default_spec_parses(tmp_path):
    spec = _parse(tmp_path, _config(tmp_path))
    assert spec.process.args == ["true"]
    assert spec.rootfs == str((tmp_path / "rootfs").resolve())
    assert spec.root_readonly is True
    assert spec.hostname == "runc"


def test_namespaces_parsed(tmp_path):
    spec = _parse(tmp_path, _config(tmp_path))
    assert [n.type for n in spec.namespaces] == ["pid", "network", "ipc", "uts", "mount"]


def test_relative_rootfs_from_bundle(tmp_path):
    config = _config(tmp_path)
    config["root"]["path"] = "rootfs"
    assert _parse(tmp_path, config).rootfs == str((tmp_path / "rootfs").resolve())


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("process", "args"), [], "process.args"),
        (("process", "args"), "sh", "process.args"),
        (("process", "env"), ["NOEQUALS"], "process.env"),
        (("process", "cwd"), "relative", "process.cwd"),
        (("process", "user"), {"uid": -1}, "process.user.uid"),
        (("process", "user"), {"uid": "0"}, "process.user.uid"),
        (("process", "terminal"), "yes", "process.terminal"),
        (("process", "rlimits"), [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}], "type"),
        (("process", "rlimits"), [{"type": "RLIMIT_NOFILE", "soft": 9, "hard": 1}], "soft 9"),
        (("process", "capabilities"), {"bounding": ["CAP_FLY"]}, "CAP_FLY"),
        (("root", "path"), 5, "root.path"),
        (("linux", "namespaces"), [{"type": "bogus"}], "linux.namespaces[0].type"),
        (("linux", "namespaces"), [{"type": "time"}, {"type": "mount"}], "time namespaces"),
        (("linux", "uidMappings"), [{"containerID": 0, "hostID": 0}], "uidMappings[0].size"),
        (("linux", "namespaces"), [{"type": "pid"}], "must include mount"),
        (("linux", "namespaces"), [{"type": "mount"}, {"type": "mount"}], "given twice"),
        (("linux", "resources"), {"memory": {"limit": "1g"}}, "linux.resources.memory.limit"),
        (("linux", "resources"), {"memory": {"limit": -5}}, "linux.resources.memory.limit"),
        (("linux", "resources"), {"pids": {"limit": 1.5}}, "linux.resources.pids.limit"),
        (("linux", "resources"), {"cpu": {"cpus": "a-b"}}, "linux.resources.cpu.cpus"),
        (("linux", "resources"), {"devices": [{"allow": True, "type": "x"}]}, "devices[0].type"),
        (("linux", "maskedPaths"), ["relative"], "linux.maskedPaths"),
        (("linux", "rootfsPropagation"), "sideways", "linux.rootfsPropagation"),
        (("linux", "seccomp"), {"defaultAction": "SCMP_ACT_BOGUS"}, "seccomp.defaultAction"),
        (("process", "oomScoreAdj"), 5000, "process.oomScoreAdj"),
    ],
)
def test_invalid_field_named(tmp_path, path, value, field):
    config = _config(tmp_path)
    config[path[0]][path[1]] = value
    with pytest.raises(InvalidArgument) as raised:
        _parse(tmp_path, config)
    assert field in str(raised.value)


def test_hostname_without_uts_rejected(tmp_path):
    config = _config(tmp_path)
    config["linux"]["namespaces"] = [{"type": "mount"}]
    with pytest.raises(InvalidArgument, match="no uts namespace"):
        _parse(tmp_path, config)


def test_console_size_parsed(tmp_path):
    config = _config(tmp_path)
    config["process"]["terminal"] = True
    config["process"]["consoleSize"] = {"height": 30, "width": 100}
    assert _parse(tmp_path, config).process.console_size == (30, 100)


def test_console_size_invalid(tmp_path):
    config = _config(tmp_path)
    config["process"]["consoleSize"] = {"height": -1, "width": 100}
    with pytest.raises(InvalidArgument, match="process.consoleSize.height"):
        _parse(tmp_path, config)


def test_mount_destination_relative_rejected(tmp_path):
    config = _config(tmp_path)
    config["mounts"] = [{"destination": "proc", "type": "proc"}]
    with pytest.raises(InvalidArgument, match=r"mounts\[0\].destination"):
        _parse(tmp_path, config)


def test_user_namespace_needs_mappings(tmp_path):
    config = _config(tmp_path)
    config["linux"]["namespaces"].append({"type": "user"})
    with pytest.raises(InvalidArgument, match="linux.uidMappings"):
        _parse(tmp_path, config)


def test_id_mappings_parsed(tmp_path):
    config = _config(tmp_path)
    config["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": 1000, "size": 10}]
    config["linux"]["uidMappings"] = mapping
    config["linux"]["gidMappings"] = mapping
    (parsed,) = _parse(tmp_path, config).uid_mappings
    assert (parsed.container_id, parsed.host_id, parsed.size) == (0, 1000, 10)


def test_hooks_parsed(tmp_path):
    hook = {"path": "/bin/true", "args": ["true", "x"], "env": ["A=1"], "timeout": 5}
    config = _config(tmp_path, hooks={"prestart": [hook]})
    (parsed,) = _parse(tmp_path, config).hooks["prestart"]
    assert parsed.path == "/bin/true"
    assert parsed.args == ["true", "x"]
    assert parsed.env == ["A=1"]
    assert parsed.timeout == 5


@pytest.mark.parametrize(
    ("hooks", "field"),
    [
        ({"prestop": []}, "hooks"),
        ({"prestart": [{"path": "true"}]}, "hooks.prestart[0].path"),
        ({"poststop": [{"path": "/bin/true", "timeout": 0}]}, "hooks.poststop[0].timeout"),
        ({"poststart": [{"path": "/bin/true", "args": "true"}]}, "hooks.poststart[0].args"),
    ],
)
def test_hooks_invalid_named(tmp_path, hooks, field):
    config = _config(tmp_path, hooks=hooks)
    with pytest.raises(InvalidArgument) as raised:
        _parse(tmp_path, config)
    assert field in str(raised.value)


def test_missing_rootfs_not_found(tmp_path):
    config = _config(tmp_path)
    config["root"]["path"] = str(tmp_path / "absent")
    with pytest.raises(NotFound, match="absent"):
        _parse(tmp_path, config)


def test_missing_bundle_not_found(tmp_path):
    with pytest.raises(NotFound, match="bundle"):
        load_spec(tmp_path / "nope")


def test_invalid_json_names_bundle(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InvalidArgument, match="invalid config.json"):
        load_spec(tmp_path)


def test_resources_parsed(tmp_path):
    config = _config(tmp_path)
    config["linux"]["resources"] = {"memory": {"limit": 1024}, "pids": {"limit": 5}}
    resources = _parse(tmp_path, config).resources
    assert resources.memory_limit == 1024
    assert resources.pids_limit == 5


def test_load_spec_reads_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_config(tmp_path)))
    assert load_spec(tmp_path).process.args == ["true"]


def test_listed_devices_allowed(tmp_path):
    config = _config(tmp_path)
    config["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    rules = _parse(tmp_path, config).resources.devices
    assert rules[0].allow is False
    assert (rules[-1].type, rules[-1].major, rules[-1].minor) == ("c", 10, 229)
