"""Names that keep ketchd instances apart: tags, default bridges, nftables tables, which
links a start may delete, and the ``bridge`` setting."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ketch.engine.config import DEFAULT_DATA_ROOT, load_config
from ketch.errors import InvalidArgument
from ketch.network.bridge import is_own_leftover
from ketch.network.firewall import render_ruleset
from ketch.network.instance import check_bridge_name, instance_for, instance_tag
from ketch.network.store import Network

TAG = "0123456789"
NETWORK_ID = "n" * 64
CONTAINER_ID = "c" * 64
OTHER_ID = "o" * 64

NETWORK = Network(
    id=NETWORK_ID,
    name="front",
    driver="bridge",
    subnet=IPv4Network("172.18.0.0/16"),
    gateway=IPv4Address("172.18.0.1"),
    bridge="br-nnnnnnnnnnnn",
)


def test_tag_is_ten_hex_digits() -> None:
    tag = instance_tag(Path("/srv/ketch"))
    assert len(tag) == 10
    assert int(tag, 16) >= 0


def test_tag_differs_by_root() -> None:
    assert instance_tag(Path("/srv/a")) != instance_tag(Path("/srv/b"))


def test_default_root_keeps_names() -> None:
    instance = instance_for(DEFAULT_DATA_ROOT, DEFAULT_DATA_ROOT)
    assert instance.default_bridge == "ketch0"
    assert instance.table_name == "ketch"


def test_other_root_names_from_tag() -> None:
    instance = instance_for(Path("/srv/ketch"), DEFAULT_DATA_ROOT)
    assert instance.default_bridge == "ketch" + instance.tag
    assert instance.table_name == "ketch-" + instance.tag


def test_other_root_bridge_fits_ifnamsiz() -> None:
    instance = instance_for(Path("/srv/ketch"), DEFAULT_DATA_ROOT)
    assert len(instance.default_bridge.encode()) == 15


def test_bridge_setting_overrides_name() -> None:
    instance = instance_for(Path("/srv/ketch"), DEFAULT_DATA_ROOT, "docker1")
    assert instance.default_bridge == "docker1"
    assert instance.table_name == "ketch-" + instance.tag


@pytest.mark.parametrize("name", ["", "none", "a" * 16, "has space", "a/b", "a:b", ".."])
def test_bridge_name_invalid(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_bridge_name(name)


def test_bridge_name_valid() -> None:
    assert check_bridge_name("a" * 15) == "a" * 15


def test_leftover_own_unrecorded_bridge() -> None:
    assert is_own_leftover([TAG, NETWORK_ID], TAG, set(), key_size=1)


def test_leftover_own_recorded_bridge_kept() -> None:
    assert not is_own_leftover([TAG, NETWORK_ID], TAG, {(NETWORK_ID,)}, key_size=1)


def test_leftover_other_tag_kept() -> None:
    assert not is_own_leftover(["9876543210", NETWORK_ID], TAG, set(), key_size=1)


def test_leftover_untagged_bridge_kept() -> None:
    assert not is_own_leftover([NETWORK_ID], TAG, set(), key_size=1)


def test_leftover_own_unrecorded_veth() -> None:
    assert is_own_leftover([TAG, CONTAINER_ID, NETWORK_ID], TAG, set(), key_size=2)


def test_leftover_untagged_veth_of_own_container() -> None:
    recorded = {(CONTAINER_ID, OTHER_ID)}
    containers = frozenset([CONTAINER_ID])
    fields = [CONTAINER_ID, NETWORK_ID]
    assert is_own_leftover(fields, TAG, recorded, key_size=2, recorded_containers=containers)


def test_leftover_untagged_veth_of_unknown_container() -> None:
    recorded = {(OTHER_ID, NETWORK_ID)}
    containers = frozenset([OTHER_ID])
    fields = [CONTAINER_ID, NETWORK_ID]
    assert not is_own_leftover(fields, TAG, recorded, key_size=2, recorded_containers=containers)


def test_ruleset_uses_table_name() -> None:
    script = render_ruleset([NETWORK], table_name="ketch-" + TAG)
    assert f"table ip ketch-{TAG} {{" in script
    assert f"delete table bridge ketch-{TAG}" in script


def test_ruleset_leaves_default_table() -> None:
    script = render_ruleset([NETWORK], table_name="ketch-" + TAG)
    assert "table ip ketch " not in script


def test_config_bridge_key(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"bridge": "docker1"}))
    assert load_config(["--config-file", str(path)]).bridge == "docker1"


def test_config_bridge_flag(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text("{}")
    assert load_config(["--config-file", str(path), "--bridge", "br0"]).bridge == "br0"


def test_config_bridge_invalid(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"bridge": "much-too-long-name"}))
    with pytest.raises(InvalidArgument, match="invalid bridge 'much-too-long-name'"):
        load_config(["--config-file", str(path)])
