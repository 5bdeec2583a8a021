"""`ketch volume` parsing and rows, and the volume flags of run and create."""

from __future__ import annotations

import pytest

from ketch.cli.containerflags import create_body, parse_mount
from ketch.cli.create import COMMAND as CREATE
from ketch.cli.errors import UsageError
from ketch.cli.options import parse
from ketch.cli.volume import VERBS, VolumeRow, pairs


def create_request(*argv: str) -> dict:
    options, args = parse(CREATE, [*argv, "busybox"])
    return create_body(args[0], args[1:], options, detached=True)


def test_pairs_key_value() -> None:
    assert pairs(["type=tmpfs", "o=size=1m"], "--opt") == {"type": "tmpfs", "o": "size=1m"}


def test_pairs_key_only_label() -> None:
    assert pairs(["keep"], "--label", value_required=False) == {"keep": ""}


def test_pairs_missing_value_rejected() -> None:
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        pairs(["type"], "--opt")


def test_mount_volume_keys() -> None:
    mount = parse_mount(
        "type=volume,src=v1,dst=/data,volume-nocopy,volume-label=a=1,volume-label=b=2,"
        "volume-driver=local,volume-opt=type=tmpfs"
    )
    assert mount["Source"] == "v1"
    assert mount["VolumeOptions"] == {
        "NoCopy": True,
        "Labels": {"a": "1", "b": "2"},
        "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}},
    }


def test_mount_plain_volume_has_no_options() -> None:
    assert "VolumeOptions" not in parse_mount("type=volume,dst=/data")


def test_volumes_from_flag() -> None:
    body = create_request("--volumes-from", "web:ro", "--volumes-from", "db")
    assert body["HostConfig"]["VolumesFrom"] == ["web:ro", "db"]


def test_volume_flag_splits_binds_and_anonymous() -> None:
    body = create_request("-v", "data:/data", "-v", "/cache")
    assert body["HostConfig"]["Binds"] == ["data:/data"]
    assert body["Volumes"] == {"/cache": {}}


def test_row_without_usage_is_na() -> None:
    row = VolumeRow({"Name": "v1", "Driver": "local", "Labels": {"b": "2", "a": "1"}})
    assert (row.Name, row.Driver, row.Labels) == ("v1", "local", "a=1,b=2")
    assert (row.Links, row.Size) == ("N/A", "N/A")


def test_row_with_usage() -> None:
    row = VolumeRow({"Name": "v1", "UsageData": {"Size": 2048, "RefCount": 2}})
    assert (row.Links, row.Size) == ("2", "2.05kB")


def test_create_flags_parse() -> None:
    command, _ = VERBS["volume-create"]
    options, args = parse(command, ["-d", "local", "-o", "type=tmpfs", "--label", "a=b", "v1"])
    assert args == ["v1"]
    assert options["opt"] == ["type=tmpfs"]
    assert options["label"] == ["a=b"]


@pytest.mark.parametrize("text", ["yes", "no", "on", "2", "tRuE", ""])
def test_mount_nocopy_invalid_value_rejected(text: str) -> None:
    value = f"type=volume,dst=/data,volume-nocopy={text}"
    with pytest.raises(UsageError) as raised:
        parse_mount(value)
    message = str(raised.value)
    assert f"invalid value for volume-nocopy: {text!r}" in message
    assert "expected one of 1, t, T, true, TRUE, True, 0, f, F, false, FALSE, False" in message


@pytest.mark.parametrize(("text", "nocopy"), [("1", True), ("TRUE", True), ("f", False)])
def test_mount_nocopy_go_bool_values(text: str, nocopy: bool) -> None:
    mount = parse_mount(f"type=volume,dst=/data,volume-nocopy={text}")
    assert mount.get("VolumeOptions", {}).get("NoCopy", False) is nocopy


@pytest.mark.parametrize(
    ("text", "readonly"), [("readonly", True), ("ro=1", True), ("readonly=false", False)]
)
def test_mount_readonly_go_bool_values(text: str, readonly: bool) -> None:
    mount = parse_mount(f"type=bind,src=/srv,dst=/data,{text}")
    assert mount.get("ReadOnly", False) is readonly


@pytest.mark.parametrize("text", ["readonly=yes", "ro=2"])
def test_mount_readonly_invalid_value_rejected(text: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_mount(f"type=bind,src=/srv,dst=/data,{text}")
    assert "invalid value for readonly" in str(raised.value)
