"""Network create in the bridge driver when the bridge setup fails, with the netlink calls
replaced, so that nothing touches the host's links."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from ketch.errors import SystemFailure
from ketch.network import bridge, links
from ketch.network.bridge import BridgeDriver, NetworkRequest
from ketch.network.instance import Instance
from ketch.network.store import NetworkStore


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BridgeDriver:
    monkeypatch.setattr(links, "link_exists", lambda name: False)
    monkeypatch.setattr(links, "host_routes", lambda bridges: [])
    store = NetworkStore(sqlite3.connect(":memory:", isolation_level=None))
    return BridgeDriver(store, tmp_path / "netns", Instance("test"))


def _fail_setup(*args: object) -> None:
    raise SystemFailure("cannot add bridge br-test: Operation not permitted")


def _fail_delete(name: str) -> None:
    raise SystemFailure(f"cannot delete link {name}: Device or resource busy")


def test_create_setup_failure_drops_record(
    driver: BridgeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted: list[str] = []
    monkeypatch.setattr(links, "ensure_bridge", _fail_setup)
    monkeypatch.setattr(links, "delete_link", deleted.append)

    with pytest.raises(SystemFailure, match="cannot add bridge"):
        asyncio.run(driver.create_network(NetworkRequest(name="front")))

    assert driver.store.by_name("front") is None
    assert len(deleted) == 1


def test_create_cleanup_failure_keeps_first_error(
    driver: BridgeDriver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(links, "ensure_bridge", _fail_setup)
    monkeypatch.setattr(links, "delete_link", _fail_delete)

    with caplog.at_level(logging.ERROR), pytest.raises(SystemFailure) as raised:
        asyncio.run(driver.create_network(NetworkRequest(name="front")))

    assert "cannot add bridge" in str(raised.value)
    assert any("Device or resource busy" in note for note in raised.value.__notes__)
    assert driver.store.by_name("front") is None
    assert driver.store.networks() == []
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 1
    assert "failed to delete bridge br-" in logged[0]
    assert "Device or resource busy" in logged[0]


def test_default_bridge_checked_once(driver: BridgeDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    monkeypatch.setattr(links, "ensure_bridge", lambda name, *args: checked.append(name))

    async def use_default_three_times() -> None:
        for _ in range(3):
            await driver.default_network()

    asyncio.run(use_default_three_times())

    assert len(checked) == 1


def test_bridge_checked_again_after_failed_connect(
    driver: BridgeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    monkeypatch.setattr(links, "ensure_bridge", lambda name, *args: checked.append(name))
    monkeypatch.setattr(links, "delete_link", lambda name: None)
    monkeypatch.setattr(bridge, "is_pinned", lambda path: True)

    def fail_wire(*args: object) -> None:
        raise OSError(19, "No such device")

    monkeypatch.setattr(driver, "_wire", fail_wire)

    async def connect_then_use_default() -> None:
        network = await driver.default_network()
        with pytest.raises(OSError, match="No such device"):
            await driver.connect("c" * 64, network)
        await driver.default_network()

    asyncio.run(connect_then_use_default())

    assert len(checked) == 2


def test_bridge_checked_again_after_forget(
    driver: BridgeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    monkeypatch.setattr(links, "ensure_bridge", lambda name, *args: checked.append(name))

    async def use_forget_use() -> None:
        network = await driver.default_network()
        await driver.default_network()
        driver.forget_bridge(network.id)
        await driver.default_network()

    asyncio.run(use_forget_use())

    assert len(checked) == 2


def test_created_network_bridge_not_checked_again(
    driver: BridgeDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    monkeypatch.setattr(links, "ensure_bridge", lambda name, *args: checked.append(name))

    async def create_then_bring_up() -> None:
        network = await driver.create_network(NetworkRequest(name="front"))
        await driver.bring_up(network)

    asyncio.run(create_then_bring_up())

    assert len(checked) == 1
