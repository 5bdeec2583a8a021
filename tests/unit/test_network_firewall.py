"""ketch's nftables table: the rules rendered for networks, and how they are applied."""

from __future__ import annotations

import asyncio
import stat
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ketch.errors import InvalidArgument, SystemFailure
from ketch.network.firewall import (
    Firewall,
    PortRule,
    isolation_rule,
    network_rules,
    port_rule_text,
    render_ruleset,
)
from ketch.network.store import Network

ICC = "com.docker.network.bridge.enable_icc"

OPEN = Network(
    id="a" * 64,
    name="front",
    driver="bridge",
    subnet=IPv4Network("172.18.0.0/16"),
    gateway=IPv4Address("172.18.0.1"),
    bridge="br-aaaaaaaaaaaa",
)
INTERNAL = Network(
    id="b" * 64,
    name="back",
    driver="bridge",
    subnet=IPv4Network("172.19.0.0/16"),
    gateway=IPv4Address("172.19.0.1"),
    bridge="br-bbbbbbbbbbbb",
    internal=True,
)


def test_rules_masquerade_subnet() -> None:
    postrouting, _ = network_rules(OPEN)
    assert postrouting == [
        'ip saddr 172.18.0.0/16 oifname != "br-aaaaaaaaaaaa" masquerade comment "network front"'
    ]


def test_rules_forward_accepts_bridge() -> None:
    _, forward = network_rules(OPEN)
    assert forward[0].startswith('iifname "br-aaaaaaaaaaaa" accept')


def test_rules_internal_no_masquerade() -> None:
    postrouting, _ = network_rules(INTERNAL)
    assert postrouting == []


def test_rules_internal_drops_both_ways() -> None:
    _, forward = network_rules(INTERNAL)
    assert all(rule.split(" comment ")[0].endswith("drop") for rule in forward)
    assert len(forward) == 2


def test_rules_quote_odd_names() -> None:
    odd = Network(**{**vars(OPEN), "name": 'x" ; flush ruleset'})
    postrouting, _ = network_rules(odd)
    assert 'comment "network x_ _ flush ruleset"' in postrouting[0]


def test_ruleset_empty_deletes_tables() -> None:
    assert render_ruleset([]) == (
        "table ip ketch {}\ndelete table ip ketch\n"
        "table bridge ketch {}\ndelete table bridge ketch\n"
    )


def test_ruleset_replaces_table_at_once() -> None:
    script = render_ruleset([OPEN, INTERNAL])
    lines = script.splitlines()
    assert lines[:2] == ["table ip ketch {}", "delete table ip ketch"]
    assert lines[4] == "table ip ketch {"
    assert "type nat hook postrouting priority srcnat; policy accept;" in script
    assert "type filter hook forward priority filter; policy accept;" in script


def test_isolation_rule_default_none() -> None:
    assert isolation_rule(OPEN) is None


def test_isolation_rule_icc_false_drops_subnet() -> None:
    isolated = Network(**{**vars(OPEN), "options": {ICC: "False"}})
    assert isolation_rule(isolated) == (
        'ip saddr 172.18.0.0/16 ip daddr 172.18.0.0/16 drop comment "network front"'
    )


def test_ruleset_isolation_in_bridge_table() -> None:
    isolated = Network(**{**vars(OPEN), "options": {ICC: "false"}})
    script = render_ruleset([isolated, INTERNAL])
    bridge_part = script.split("table bridge ketch {\n", 1)[1]
    assert "ip saddr 172.18.0.0/16 ip daddr 172.18.0.0/16 drop" in bridge_part
    assert "172.19.0.0/16" not in bridge_part


def test_ruleset_no_isolation_no_bridge_table() -> None:
    script = render_ruleset([OPEN])
    assert "table bridge ketch {\n" not in script


def _fake_nft(tmp_path: Path, exit_code: int = 0) -> tuple[Path, Path]:
    """A stand-in for nft that stores each script it is given and exits with exit_code."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    nft = tmp_path / "nft"
    nft.write_text(
        "#!/bin/sh\n"
        f'cat > "{scripts}/$(date +%s%N)"\n'
        'echo "Error: syntax error" >&2\n'
        f"exit {exit_code}\n"
    )
    nft.chmod(nft.stat().st_mode | stat.S_IXUSR)
    return nft, scripts


def _applied(scripts: Path) -> list[str]:
    return [path.read_text() for path in sorted(scripts.iterdir())]


def test_firewall_up_applies_and_forwards(tmp_path: Path) -> None:
    nft, scripts = _fake_nft(tmp_path)
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    asyncio.run(Firewall(str(nft), forward).network_up(OPEN))
    assert _applied(scripts) == [render_ruleset([OPEN])]
    assert forward.read_text() == "1\n"


def test_firewall_internal_leaves_forwarding(tmp_path: Path) -> None:
    nft, _ = _fake_nft(tmp_path)
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    asyncio.run(Firewall(str(nft), forward).network_up(INTERNAL))
    assert forward.read_text() == "0\n"


def test_firewall_down_last_deletes_table(tmp_path: Path) -> None:
    nft, scripts = _fake_nft(tmp_path)
    forward = tmp_path / "ip_forward"
    forward.write_text("1\n")

    async def scenario() -> None:
        firewall = Firewall(str(nft), forward)
        await firewall.network_up(OPEN)
        await firewall.network_down(OPEN)

    asyncio.run(scenario())
    assert _applied(scripts)[-1] == render_ruleset([])


def test_firewall_nft_failure_raises(tmp_path: Path) -> None:
    nft, _ = _fake_nft(tmp_path, exit_code=1)
    firewall = Firewall(str(nft), tmp_path / "ip_forward")
    with pytest.raises(SystemFailure, match="syntax error"):
        asyncio.run(firewall.network_up(OPEN))


def test_firewall_missing_nft_raises(tmp_path: Path) -> None:
    firewall = Firewall(str(tmp_path / "no-nft"), tmp_path / "ip_forward")
    with pytest.raises(SystemFailure, match="install nftables"):
        asyncio.run(firewall.network_up(OPEN))


def test_firewall_reconcile_logs_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    firewall = Firewall(str(tmp_path / "no-nft"), tmp_path / "ip_forward")
    asyncio.run(firewall.reconcile())
    assert "install nftables" in caplog.text


PORT = PortRule("tcp", "0.0.0.0", 8080, "172.18.0.2", 80, OPEN.id)


def test_port_rule_all_addresses() -> None:
    assert port_rule_text(PORT) == "fib daddr type local tcp dport 8080 dnat to 172.18.0.2:80"


def test_port_rule_one_address() -> None:
    rule = PortRule("udp", "127.0.0.1", 5353, "172.18.0.2", 53, OPEN.id)
    assert port_rule_text(rule) == "ip daddr 127.0.0.1 udp dport 5353 dnat to 172.18.0.2:53"


def test_ruleset_port_rules_both_hooks() -> None:
    script = render_ruleset([OPEN], [PORT])
    assert script.count(port_rule_text(PORT)) == 2
    assert 'ip saddr 127.0.0.0/8 oifname "br-aaaaaaaaaaaa" masquerade' in script


def test_ruleset_skips_rules_of_down_network() -> None:
    script = render_ruleset([INTERNAL], [PORT])
    assert "dnat" not in script


def test_firewall_port_rules_set_and_removed(tmp_path: Path) -> None:
    nft, scripts = _fake_nft(tmp_path)
    forward = tmp_path / "ip_forward"
    forward.write_text("1\n")
    interfaces = tmp_path / "conf"
    (interfaces / OPEN.bridge).mkdir(parents=True)

    async def scenario() -> None:
        firewall = Firewall(str(nft), forward, interfaces)
        await firewall.network_up(OPEN)
        await firewall.set_port_rules("c" * 64, [PORT])
        firewall.remove_port_rules("c" * 64)
        await asyncio.sleep(0)
        await firewall.reconcile()  # waits for the lock, so the removal has been applied

    asyncio.run(scenario())
    applied = _applied(scripts)
    assert "dnat" in applied[1]
    assert "dnat" not in applied[-1]
    assert (interfaces / OPEN.bridge / "route_localnet").read_text() == "1\n"


def test_port_rules_reject_ipv6_host(tmp_path: Path) -> None:
    nft, scripts = _fake_nft(tmp_path)
    rule = PortRule("tcp", "::1", 8080, "172.18.0.2", 80, OPEN.id)
    firewall = Firewall(str(nft), tmp_path / "ip_forward", tmp_path / "conf")

    with pytest.raises(InvalidArgument) as raised:
        asyncio.run(firewall.set_port_rules("c" * 64, [rule]))

    message = str(raised.value)
    assert "IPv6 host address ::1" in message
    assert "80/tcp" in message
    assert "needs the userland proxy" in message
    assert _applied(scripts) == []
