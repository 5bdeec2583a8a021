"""HostConfig.MemorySwap in create and update bodies: the checks docker makes, errors that
name the request kind, and the warning when the kernel cannot limit swap."""

from __future__ import annotations

from pathlib import Path

import pytest

from ketch.engine import options as options_module
from ketch.engine.options import SWAP_LIMIT_WARNING, parse_create_body, parse_resources
from ketch.engine.spec import resources_spec
from ketch.errors import InvalidArgument

MIB = 1 << 20


@pytest.fixture
def swap_accounting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options_module, "swap_limit_supported", lambda: True)


def create_options(**host_config: int):  # type: ignore[no-untyped-def]
    return parse_create_body({"Image": "busybox", "HostConfig": host_config})


@pytest.mark.usefixtures("swap_accounting")
def test_swap_in_spec() -> None:
    options = create_options(Memory=32 * MIB, MemorySwap=64 * MIB)
    assert resources_spec(options)["memory"] == {"limit": 32 * MIB, "swap": 64 * MIB}


@pytest.mark.usefixtures("swap_accounting")
def test_swap_unlimited_in_spec() -> None:
    options = create_options(Memory=32 * MIB, MemorySwap=-1)
    assert resources_spec(options)["memory"] == {"limit": 32 * MIB, "swap": -1}


def test_swap_default_not_in_spec() -> None:
    options = create_options(Memory=32 * MIB)
    assert resources_spec(options)["memory"] == {"limit": 32 * MIB}


@pytest.mark.usefixtures("swap_accounting")
def test_swap_below_memory() -> None:
    with pytest.raises(InvalidArgument, match="should be larger than memory limit"):
        create_options(Memory=64 * MIB, MemorySwap=32 * MIB)


@pytest.mark.usefixtures("swap_accounting")
def test_swap_without_memory() -> None:
    with pytest.raises(InvalidArgument, match="always set the Memory limit"):
        create_options(MemorySwap=64 * MIB)


def test_swap_below_minus_one() -> None:
    with pytest.raises(InvalidArgument, match="HostConfig.MemorySwap must be -1"):
        create_options(MemorySwap=-2)


def test_update_names_update_body() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_resources({"MemorySwap": "64m"}, "update body")
    assert str(raised.value).startswith("invalid update body: MemorySwap must be an integer")


def test_update_memory_names_update_body() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_resources({"Memory": -5}, "update body")
    assert str(raised.value).startswith("invalid update body: Memory must be 0")


def test_swap_without_accounting_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options_module, "swap_limit_supported", lambda: False)
    options = create_options(Memory=32 * MIB, MemorySwap=64 * MIB)
    assert options.warnings == [SWAP_LIMIT_WARNING]


def test_swap_without_accounting_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(options_module, "swap_limit_supported", lambda: False)
    options = create_options(Memory=32 * MIB, MemorySwap=64 * MIB)
    assert resources_spec(options)["memory"] == {"limit": 32 * MIB}


def test_swap_supported_by_memsw_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    memsw = tmp_path / "memory.memsw.limit_in_bytes"
    memsw.write_text("9223372036854771712\n")
    monkeypatch.setattr(options_module, "MEMSW_LIMIT_FILE", memsw)
    assert options_module.swap_limit_supported()


def test_swap_unsupported_without_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(options_module, "MEMSW_LIMIT_FILE", tmp_path / "absent")
    monkeypatch.setattr(options_module, "CGROUP2_CONTROLLERS_FILE", tmp_path / "absent2")
    assert not options_module.swap_limit_supported()
