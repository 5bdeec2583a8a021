"""The request bodies and the table of ``ketch network``, without a daemon."""

from __future__ import annotations

import pytest

from ketch.cli.errors import UsageError
from ketch.cli.formatter import render
from ketch.cli.network import DEFAULT_TABLE, HEADERS, VERBS, _NetworkRow, create_body
from ketch.cli.options import parse
from ketch.cli.ps import HeaderRow


def _create_options(*argv: str) -> dict:
    options, args = parse(VERBS["network-create"][0], [*argv, "back"])
    assert args == ["back"]
    return options


def test_create_body_from_flags() -> None:
    options = _create_options(
        "--subnet", "10.5.0.0/24", "--gateway", "10.5.0.1", "--ip-range", "10.5.0.64/26",
        "--internal", "--label", "team=a", "--label", "flag",
        "-o", "com.docker.network.driver.mtu=1400",
    )  # fmt: skip
    body = create_body(options, "back")
    assert body["IPAM"]["Config"] == [
        {"Subnet": "10.5.0.0/24", "Gateway": "10.5.0.1", "IPRange": "10.5.0.64/26"}
    ]
    assert body["Internal"] is True
    assert body["Labels"] == {"team": "a", "flag": ""}
    assert body["Options"] == {"com.docker.network.driver.mtu": "1400"}
    assert body["Driver"] == "bridge"


def test_create_gateway_needs_subnet() -> None:
    with pytest.raises(UsageError, match="needs a --subnet"):
        create_body(_create_options("--gateway", "10.5.0.1"), "back")


def test_create_opt_needs_value() -> None:
    with pytest.raises(UsageError, match="invalid --opt 'mtu'"):
        create_body(_create_options("-o", "mtu"), "back")


def test_ls_table() -> None:
    network = {"Id": "a" * 64, "Name": "back", "Driver": "bridge", "Scope": "local"}
    rows = [_NetworkRow(network, truncated=True)]
    table = render("", DEFAULT_TABLE, HeaderRow(HEADERS), rows).splitlines()
    assert table[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    assert table[1] == "aaaaaaaaaaaa   back      bridge    local"
