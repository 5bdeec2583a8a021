"""Value parsers of the CLI, in-process: times, durations, sizes, ports and mounts."""

from __future__ import annotations

import pytest

from ketch.cli.containerflags import parse_bytes, parse_mount, parse_publish, parse_volumes
from ketch.cli.errors import UsageError
from ketch.cli.logs import iter_frames, parse_duration, parse_time

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000000", "1700000000"),
        ("1700000000.5", "1700000000.5"),
        ("10m", "1699999400"),
        ("1h30m", "1699994600"),
        ("250ms", "1699999999.750000000"),
        ("2023-11-14T22:13:20Z", "1700000000"),
        ("2023-11-14T23:13:20+01:00", "1700000000"),
        ("2023-11-14", "1699920000"),
    ],
)
def test_parse_time_forms(value: str, expected: str) -> None:
    assert parse_time(value, NOW, "--since") == expected


def test_parse_time_rejects_words() -> None:
    with pytest.raises(UsageError) as raised:
        parse_time("last tuesday", NOW, "--until")
    assert 'invalid value for "--until"' in str(raised.value)


def test_parse_duration_not_a_duration() -> None:
    assert parse_duration("10") is None
    assert parse_duration("10x") is None
    assert parse_duration("1.5h") == 5400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1024", 1024),
        ("1k", 1024),
        ("512m", 512 << 20),
        ("1.5g", 3 << 29),
        ("2kb", 2048),
        ("1GiB", 1 << 30),
    ],
)
def test_parse_bytes_units(value: str, expected: int) -> None:
    assert parse_bytes(value, "-m, --memory") == expected


def test_parse_bytes_rejects_unit() -> None:
    with pytest.raises(UsageError) as raised:
        parse_bytes("5q", "-m, --memory")
    assert (
        str(raised.value) == 'invalid argument "5q" for "-m, --memory" flag: invalid size: \'5q\''
    )


def test_parse_publish_forms() -> None:
    exposed, bindings = parse_publish(["80", "8080:80/udp", "127.0.0.1:9000:90"])
    assert exposed == {"80/tcp": {}, "80/udp": {}, "90/tcp": {}}
    assert bindings["80/tcp"] == [{"HostIp": "", "HostPort": ""}]
    assert bindings["80/udp"] == [{"HostIp": "", "HostPort": "8080"}]
    assert bindings["90/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "9000"}]


def test_parse_volumes_split() -> None:
    binds, anonymous = parse_volumes(["/srv:/data", "/cache", "named:/db:ro"])
    assert binds == ["/srv:/data", "named:/db:ro"]
    assert anonymous == {"/cache": {}}


def test_parse_volumes_relative_destination() -> None:
    with pytest.raises(UsageError) as raised:
        parse_volumes(["/tmp:relative"])
    assert "the destination must be an absolute path" in str(raised.value)


def test_parse_volumes_destination_mode() -> None:
    binds, _ = parse_volumes(["/data:ro"])
    assert binds == ["/data:ro"]


def test_parse_mount_tmpfs() -> None:
    mount = parse_mount("type=tmpfs,dst=/run,tmpfs-size=1m,tmpfs-mode=1770")
    assert mount == {
        "Type": "tmpfs",
        "Target": "/run",
        "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1770},
    }


def test_parse_mount_unknown_key() -> None:
    with pytest.raises(UsageError) as raised:
        parse_mount("type=bind,src=/a,dst=/b,colour=red")
    assert "unexpected key 'colour'" in str(raised.value)


def test_iter_frames_across_chunks() -> None:
    stream = b"\x01\x00\x00\x00\x00\x00\x00\x03abc\x02\x00\x00\x00\x00\x00\x00\x01z"
    chunks = [stream[:5], stream[5:12], stream[12:]]
    assert list(iter_frames(chunks)) == [(1, b"abc"), (2, b"z")]
