"""Create body validation: types, unsupported options and errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ketch.engine.hostconfig import create_bind_sources
from ketch.engine.options import parse_create_body, parse_signal
from ketch.errors import InvalidArgument, SystemFailure


def parse(**body: Any):  # type: ignore[no-untyped-def]
    return parse_create_body({"Image": "busybox", **body})


def test_body_not_object() -> None:
    with pytest.raises(InvalidArgument, match="expected a JSON object"):
        parse_create_body(["Image"])


def test_body_image_required() -> None:
    with pytest.raises(InvalidArgument, match="Image is required"):
        parse_create_body({"Cmd": ["true"]})


def test_body_cmd_wrong_type_names_field() -> None:
    with pytest.raises(InvalidArgument, match="Cmd must be a list or a string"):
        parse(Cmd=5)


def test_body_cmd_item_wrong_type() -> None:
    with pytest.raises(InvalidArgument, match=r"Cmd\[1\] must be a string"):
        parse(Cmd=["echo", 3])


def test_body_env_wrong_type() -> None:
    with pytest.raises(InvalidArgument, match=r"Env must be"):
        parse(Env={"A": "1"})


def test_body_env_empty_key() -> None:
    with pytest.raises(InvalidArgument, match=r"Env\[0\]"):
        parse(Env=["=value"])


def test_body_memory_negative() -> None:
    with pytest.raises(InvalidArgument, match="HostConfig.Memory"):
        parse(HostConfig={"Memory": -1})


def test_body_memory_too_small() -> None:
    with pytest.raises(InvalidArgument, match="Minimum memory limit allowed is 6MB"):
        parse(HostConfig={"Memory": 1024})


def test_body_memory_boolean_rejected() -> None:
    with pytest.raises(InvalidArgument, match="HostConfig.Memory must be an integer"):
        parse(HostConfig={"Memory": True})


def test_body_memory_string_rejected() -> None:
    with pytest.raises(InvalidArgument, match="HostConfig.Memory must be an integer"):
        parse(HostConfig={"Memory": "64m"})


def test_body_container_mode_without_name() -> None:
    with pytest.raises(InvalidArgument, match="HostConfig.NetworkMode 'container:'"):
        parse(HostConfig={"NetworkMode": "container:"})


def test_body_network_modes_accepted() -> None:
    for mode in ("none", "default", "bridge", "container:web", "backend"):
        assert parse(HostConfig={"NetworkMode": mode}).network_mode == mode


def test_body_network_mode_defaults() -> None:
    assert parse().network_mode == "default"


def test_body_pids_limit_zero_is_unlimited() -> None:
    assert parse(HostConfig={"PidsLimit": 0}).pids_limit is None


def test_body_pids_limit_positive() -> None:
    assert parse(HostConfig={"PidsLimit": 20}).pids_limit == 20


def test_body_named_volume_bind_is_volume_mount() -> None:
    mounts = parse(HostConfig={"Binds": ["data:/b"]}).host.mounts
    assert [(mount["type"], mount["source"]) for mount in mounts] == [("volume", "data")]


def test_body_bind_read_only() -> None:
    mounts = parse(HostConfig={"Binds": ["/a:/b:ro"]}).host.mounts
    assert mounts == [
        {
            "destination": "/b",
            "type": "bind",
            "source": "/a",
            "options": ["rbind", "rprivate", "ro"],
        }
    ]


def test_body_unknown_capability_rejected() -> None:
    with pytest.raises(InvalidArgument, match="unknown capability 'FLY'"):
        parse(HostConfig={"CapAdd": ["FLY"]})


def test_body_host_sysctl_rejected() -> None:
    with pytest.raises(InvalidArgument, match="sysctl 'vm.swappiness' is not allowed"):
        parse(HostConfig={"Sysctls": {"vm.swappiness": "10"}})


def test_body_ulimit_above_host_rejected() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ulimit = {"Name": "nofile", "Soft": 1024, "Hard": hard + 1}
    with pytest.raises(InvalidArgument, match="above the host's"):
        parse(HostConfig={"Ulimits": [ulimit]})


def test_body_zero_values_of_unsupported_fields_accepted() -> None:
    host_config = {"Binds": None, "CpuShares": 0, "PortBindings": {}, "Privileged": False}
    assert parse(Tty=False, OpenStdin=False, HostConfig=host_config).image == "busybox"


def test_body_tty_accepted() -> None:
    assert parse(Tty=True, OpenStdin=True).tty


def test_body_tty_must_be_bool() -> None:
    with pytest.raises(InvalidArgument, match="Tty"):
        parse(Tty="yes")


def test_body_restart_policy_unknown_rejected() -> None:
    with pytest.raises(InvalidArgument, match="unknown policy 'sometimes'"):
        parse(HostConfig={"RestartPolicy": {"Name": "sometimes"}})


def test_body_restart_policy_on_failure_count() -> None:
    policy = {"Name": "on-failure", "MaximumRetryCount": 3}
    assert parse(HostConfig={"RestartPolicy": policy}).restart_policy == policy


def test_body_restart_count_needs_on_failure() -> None:
    with pytest.raises(InvalidArgument, match="on-failure"):
        parse(HostConfig={"RestartPolicy": {"Name": "always", "MaximumRetryCount": 2}})


def test_body_restart_policy_with_auto_remove_rejected() -> None:
    with pytest.raises(InvalidArgument, match="AutoRemove"):
        parse(HostConfig={"RestartPolicy": {"Name": "always"}, "AutoRemove": True})


def test_body_restart_policy_no_accepted() -> None:
    assert parse(HostConfig={"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}})


def test_body_relative_working_dir() -> None:
    with pytest.raises(InvalidArgument, match="needs to be an absolute path"):
        parse(WorkingDir="srv")


def test_body_bad_stop_signal() -> None:
    with pytest.raises(InvalidArgument, match="Invalid signal: SIGNOPE"):
        parse(StopSignal="SIGNOPE")


def test_body_auto_remove() -> None:
    assert parse(HostConfig={"AutoRemove": True}).auto_remove is True


def test_body_labels_values_must_be_strings() -> None:
    with pytest.raises(InvalidArgument, match=r"Labels\['a'\]"):
        parse(Labels={"a": 1})


def test_signal_forms() -> None:
    assert parse_signal("SIGTERM", "signal") == 15
    assert parse_signal("term", "signal") == 15
    assert parse_signal("9", "signal") == 9
    assert parse_signal(2, "signal") == 2


def test_signal_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match="Invalid signal: 0"):
        parse_signal(0, "signal")


@pytest.mark.parametrize(
    ("field", "mode", "message"),
    [
        ("PidMode", "nope", "invalid PID mode: nope"),
        ("PidMode", "container", "invalid PID mode: container"),
        ("IpcMode", "bogus", "invalid IPC mode: bogus"),
        ("UTSMode", "private", "invalid UTS mode: private"),
    ],
)
def test_namespace_mode_invalid(field: str, mode: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse(HostConfig={field: mode})
    assert str(caught.value) == message


@pytest.mark.parametrize("mode", ["host", "container:web"])
def test_pid_mode_valid_unsupported(mode: str) -> None:
    with pytest.raises(InvalidArgument, match="PidMode is not supported by ketch yet"):
        parse(HostConfig={"PidMode": mode})


def test_bind_mount_missing_source(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    mount = {"Type": "bind", "Source": str(missing), "Target": "/data"}
    with pytest.raises(InvalidArgument) as caught:
        parse(HostConfig={"Mounts": [mount]})
    expected = f'invalid mount config for type "bind": bind source path does not exist: {missing}'
    assert str(caught.value) == expected


def test_bind_mount_existing_source(tmp_path: Path) -> None:
    mount = {"Type": "bind", "Source": str(tmp_path), "Target": "/data"}
    options = parse(HostConfig={"Mounts": [mount]})
    assert [m["source"] for m in options.host.mounts] == [str(tmp_path)]


def test_bind_sources_created(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b"
    existing_file = tmp_path / "file"
    existing_file.write_text("x")
    binds = [f"{missing}:/data", f"{existing_file}:/file:ro", "named:/volume"]
    create_bind_sources({"Binds": binds})
    assert missing.is_dir()
    assert existing_file.read_text() == "x"
    assert not (tmp_path / "named").exists()


def test_bind_source_under_file_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemFailure, match="error while creating mount source path"):
        create_bind_sources({"Binds": [f"{blocker}/sub:/data"]})
