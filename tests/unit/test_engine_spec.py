"""Spec generation: docker's Entrypoint/Cmd/Env rules and the OCI spec's fields."""

from __future__ import annotations

from typing import Any

import pytest

from ketch.engine.options import CreateOptions, parse_create_body
from ketch.engine.spec import (
    DEFAULT_CAPABILITIES,
    build_spec,
    merge_config,
    merge_env,
    process_env,
    resolve_command,
)
from ketch.engine.userdb import ExecUser
from ketch.errors import InvalidArgument

IMAGE_CONFIG: dict[str, Any] = {
    "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
    "Entrypoint": ["/entry.sh"],
    "Cmd": ["serve", "--port", "80"],
    "WorkingDir": "/srv",
    "User": "daemon",
    "Labels": {"from": "image"},
}


def options(**body: Any) -> CreateOptions:
    return parse_create_body({"Image": "busybox", **body})


def test_command_image_defaults() -> None:
    assert resolve_command(options(), IMAGE_CONFIG) == (["/entry.sh"], ["serve", "--port", "80"])


def test_command_body_cmd_keeps_image_entrypoint() -> None:
    assert resolve_command(options(Cmd=["status"]), IMAGE_CONFIG) == (["/entry.sh"], ["status"])


def test_command_body_entrypoint_drops_image_cmd() -> None:
    assert resolve_command(options(Entrypoint=["/bin/sh"]), IMAGE_CONFIG) == (["/bin/sh"], None)


def test_command_body_entrypoint_and_cmd() -> None:
    chosen = resolve_command(options(Entrypoint=["/bin/sh"], Cmd=["-c", "true"]), IMAGE_CONFIG)
    assert chosen == (["/bin/sh"], ["-c", "true"])


def test_command_empty_entrypoint_clears_image_entrypoint() -> None:
    assert resolve_command(options(Entrypoint=[""]), IMAGE_CONFIG) == (
        None,
        ["serve", "--port", "80"],
    )


def test_command_string_cmd_is_one_argument() -> None:
    assert resolve_command(options(Cmd="date"), {}) == (None, ["date"])


def test_command_missing_raises() -> None:
    with pytest.raises(InvalidArgument, match="No command specified"):
        merge_config(options(), {}, "abc")


def test_command_empty_lists_raise() -> None:
    with pytest.raises(InvalidArgument, match="No command specified"):
        merge_config(options(Cmd=[], Entrypoint=[]), {"Cmd": []}, "abc")


def test_env_body_wins_by_key() -> None:
    assert merge_env(["A=1", "B=2"], ["B=3", "C=4"]) == ["A=1", "B=3", "C=4"]


def test_env_bare_key_removes() -> None:
    assert merge_env(["A=1", "B=2"], ["A"]) == ["B=2"]


def test_env_value_may_contain_equals() -> None:
    assert merge_env([], ["A=b=c"]) == ["A=b=c"]


def test_config_merges_image_and_body() -> None:
    config = merge_config(options(Env=["LANG=en"], Labels={"x": "y"}), IMAGE_CONFIG, "0123456789ab")
    assert config["Env"] == ["PATH=/usr/bin:/bin", "LANG=en"]
    assert config["Labels"] == {"from": "image", "x": "y"}
    assert config["WorkingDir"] == "/srv"
    assert config["User"] == "daemon"
    assert config["Hostname"] == "0123456789ab"


def test_config_body_user_and_workdir_win() -> None:
    config = merge_config(options(User="1000:1000", WorkingDir="/tmp"), IMAGE_CONFIG, "h")
    assert config["User"] == "1000:1000"
    assert config["WorkingDir"] == "/tmp"


def test_process_env_defaults_path_and_hostname() -> None:
    config = {"Hostname": "abc", "Env": []}
    env = process_env(config, ExecUser(home="/root"))
    assert env == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=abc",
        "HOME=/root",
    ]


def test_process_env_config_overrides_path() -> None:
    env = process_env({"Hostname": "abc", "Env": ["PATH=/x", "HOME=/h"]}, ExecUser())
    assert env == ["PATH=/x", "HOSTNAME=abc", "HOME=/h"]


def _spec(**body: Any) -> dict[str, Any]:
    checked = options(**body)
    config = merge_config(checked, {"Cmd": ["sh"]}, "0123456789ab")
    user = ExecUser(uid=0, gid=0, additional_gids=[10], home="/root")
    return build_spec("f" * 64, config, checked, user, "/rootfs", [])


def test_spec_process_fields() -> None:
    spec = _spec(Cmd=["echo", "hi"], WorkingDir="/tmp")
    assert spec["process"]["args"] == ["echo", "hi"]
    assert spec["process"]["cwd"] == "/tmp"
    assert spec["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [10]}
    assert spec["process"]["terminal"] is False


def test_spec_root_and_hostname() -> None:
    spec = _spec()
    assert spec["root"] == {"path": "/rootfs", "readonly": False}
    assert spec["hostname"] == "0123456789ab"


def test_spec_cgroups_path() -> None:
    assert _spec()["linux"]["cgroupsPath"] == "ketch/" + "f" * 64


def test_spec_new_network_namespace() -> None:
    kinds = [namespace["type"] for namespace in _spec()["linux"]["namespaces"]]
    assert sorted(kinds) == ["ipc", "mount", "network", "pid", "uts"]


def test_spec_namespaces_have_no_path() -> None:
    assert all("path" not in namespace for namespace in _spec()["linux"]["namespaces"])


def test_spec_memory_and_pids_limits() -> None:
    resources = _spec(HostConfig={"Memory": 64 << 20, "PidsLimit": 50})["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20}
    assert resources["pids"] == {"limit": 50}


def test_spec_no_limits_by_default() -> None:
    resources = _spec()["linux"]["resources"]
    assert "memory" not in resources
    assert "pids" not in resources


def test_spec_root_capabilities() -> None:
    capabilities = _spec()["process"]["capabilities"]
    assert capabilities["bounding"] == DEFAULT_CAPABILITIES
    assert capabilities["effective"] == DEFAULT_CAPABILITIES
    assert "ambient" not in capabilities


def test_spec_non_root_has_no_effective_capabilities() -> None:
    checked = options()
    config = merge_config(checked, {"Cmd": ["sh"]}, "h")
    spec = build_spec("f" * 64, config, checked, ExecUser(uid=1000, gid=1000), "/r", [])
    assert spec["process"]["capabilities"]["effective"] == []


def test_spec_docker_mounts() -> None:
    destinations = [mount["destination"] for mount in _spec()["mounts"]]
    assert destinations == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/mqueue",
        "/dev/shm",
    ]


def test_spec_extra_mounts_appended() -> None:
    checked = options()
    config = merge_config(checked, {"Cmd": ["sh"]}, "h")
    extra = [{"destination": "/etc/hosts", "type": "bind", "source": "/x", "options": ["rbind"]}]
    spec = build_spec("f" * 64, config, checked, ExecUser(), "/r", extra)
    assert spec["mounts"][-1] == extra[0]


def test_spec_masks_proc_kcore() -> None:
    assert "/proc/kcore" in _spec()["linux"]["maskedPaths"]


def test_spec_readonly_rootfs() -> None:
    assert _spec(HostConfig={"ReadonlyRootfs": True})["root"]["readonly"] is True
