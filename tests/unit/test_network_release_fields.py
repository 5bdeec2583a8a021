"""What a stopped container keeps of its endpoints, and when ketchd releases them. The
release itself needs netlink, so a recorder replaces it here."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from ketch.engine.networking import ContainerNetworking, configured_fields, remove_hosts_lines

CONNECTED = {
    "IPAMConfig": {"IPv4Address": "10.5.0.9"},
    "Aliases": ["web"],
    "NetworkID": "n" * 64,
    "EndpointID": "e" * 64,
    "Gateway": "10.5.0.1",
    "IPAddress": "10.5.0.9",
    "IPPrefixLen": 24,
    "MacAddress": "02:42:0a:05:00:09",
}


@dataclass
class FakeContainer:
    id: str
    running: bool = False
    host_config: dict[str, Any] = field(default_factory=dict)
    network_endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)


def test_configured_fields_drop_assigned() -> None:
    fields = configured_fields(CONNECTED)
    assert fields == {
        "IPAMConfig": {"IPv4Address": "10.5.0.9"},
        "Aliases": ["web"],
        "NetworkID": "n" * 64,
        "MacAddress": "",
    }


def test_configured_fields_keep_requested_mac() -> None:
    fields = configured_fields({**CONNECTED, "MacAddress": "02:aa:bb:cc:dd:ee"})
    assert fields["MacAddress"] == "02:aa:bb:cc:dd:ee"


def test_configured_fields_of_planned_unchanged() -> None:
    planned = configured_fields(CONNECTED)
    assert configured_fields(planned) == planned


def test_remove_hosts_lines_only_given(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n10.5.0.9\tweb\n10.5.0.19\tother\n")
    remove_hosts_lines(hosts, ["10.5.0.9", None])
    assert hosts.read_text() == "127.0.0.1\tlocalhost\n10.5.0.19\tother\n"


def test_remove_hosts_lines_missing_file(tmp_path: Path) -> None:
    remove_hosts_lines(tmp_path / "hosts", ["10.5.0.9"])
    assert not (tmp_path / "hosts").exists()


def test_add_hosts_line_whole_lines(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("110.0.0.1\tweb\n")
    ContainerNetworking._add_hosts_line(hosts, IPv4Address("10.0.0.1"), "web")
    ContainerNetworking._add_hosts_line(hosts, IPv4Address("10.0.0.1"), "web")
    assert hosts.read_text() == "110.0.0.1\tweb\n10.0.0.1\tweb\n"


def _release_calls(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    container: FakeContainer,
    others: list[FakeContainer],
) -> list[str]:
    """Run ``release_on_exit`` for ``container`` and return the ids whose release ran."""
    released: list[str] = []

    async def record(self: ContainerNetworking, container_id: str, hosts_path: Path) -> None:
        released.append(container_id)

    monkeypatch.setattr(ContainerNetworking, "_release", record)

    async def scenario() -> None:
        networking = ContainerNetworking(sqlite3.connect(":memory:"), tmp_path)
        networking.release_on_exit(container, lambda i: tmp_path / i, lambda: [container, *others])
        await networking.wait_for_release(container.id)
        for other in others:
            await networking.wait_for_release(other.id)

    asyncio.run(scenario())
    return released


def test_release_on_exit_resets_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    container = FakeContainer("a" * 64, network_endpoints={"back": dict(CONNECTED)})
    released = _release_calls(monkeypatch, tmp_path, container, [])
    assert released == ["a" * 64]
    assert container.network_endpoints["back"]["NetworkID"] == "n" * 64
    assert "IPAddress" not in container.network_endpoints["back"]


def test_release_on_exit_joined_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    container = FakeContainer("a" * 64, network_endpoints={"back": dict(CONNECTED)})
    joiner = FakeContainer("b" * 64, True, {"NetworkMode": "container:" + "a" * 64})
    assert _release_calls(monkeypatch, tmp_path, container, [joiner]) == []


def test_release_on_exit_last_joiner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = FakeContainer("a" * 64)
    joiner = FakeContainer("b" * 64, False, {"NetworkMode": "container:" + "a" * 64})
    assert _release_calls(monkeypatch, tmp_path, joiner, [target]) == ["a" * 64]


def test_release_on_exit_none_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    container = FakeContainer("a" * 64, host_config={"NetworkMode": "none"})
    assert _release_calls(monkeypatch, tmp_path, container, []) == []
