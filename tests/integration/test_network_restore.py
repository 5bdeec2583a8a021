"""Networks across a SIGKILL of ketchd and a restart: running containers keep their
addresses and traffic, and links that no record names any more are deleted."""

from __future__ import annotations

import subprocess
import time

from support.daemon import KetchDaemon
from support.network_leftovers import no_network_leftovers  # noqa: F401
from support.restart import restart_ketchd

FAKE_NETWORK_ID = "f" * 64
FAKE_CONTAINER_ID = "e" * 64


def ok(daemon: KetchDaemon, *args: str) -> str:
    result = daemon.ketch(*args, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def in_namespace(daemon: KetchDaemon, *argv: str) -> str:
    result = subprocess.run(
        daemon.namespace.command(list(argv)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
    return result.stdout


def link_names(daemon: KetchDaemon) -> list[str]:
    output = in_namespace(daemon, "ip", "-o", "link")
    return [line.split(":")[1].strip().split("@")[0] for line in output.splitlines()]


def add_leftover_links(daemon: KetchDaemon) -> None:
    """Make a bridge and a veth marked as ketch's, as a crash between deleting a record
    and deleting its link would leave them."""
    in_namespace(daemon, "ip", "link", "add", "br-leftover", "type", "bridge")
    tag = daemon.instance.tag
    bridge_alias = f"ketch network {tag} {FAKE_NETWORK_ID}"
    in_namespace(daemon, "ip", "link", "set", "br-leftover", "alias", bridge_alias)
    in_namespace(
        daemon, "ip", "link", "add", "vleftover", "type", "veth", "peer", "name", "kleftover"
    )
    alias = f"ketch endpoint {tag} {FAKE_CONTAINER_ID} {FAKE_NETWORK_ID}"
    in_namespace(daemon, "ip", "link", "set", "vleftover", "alias", alias)


def fetch_pong(daemon: KetchDaemon, address: str) -> str:
    reply = ""
    deadline = time.monotonic() + 30
    while "pong" not in reply and time.monotonic() < deadline:
        result = daemon.ketch(
            "run", "--rm", "--network", "kept", "busybox", "nc", "-w", "5", address, "7000"
        )
        reply = result.stdout
        if "pong" not in reply:
            time.sleep(0.2)
    return reply


def test_restore_keeps_networking_and_removes_leftovers(daemon: KetchDaemon) -> None:
    network_id = ok(daemon, "network", "create", "--subnet", "10.93.0.0/24", "kept").strip()
    server = ok(
        daemon, "run", "-d", "--network", "kept", "busybox",
        "sh", "-c", "while true; do echo pong | nc -l -p 7000; done",
    ).strip()  # fmt: skip
    ok(daemon, "network", "connect", "bridge", server)
    address = ok(
        daemon, "inspect", "-f", "{{.NetworkSettings.Networks.kept.IPAddress}}", server
    ).strip()
    assert "pong" in fetch_pong(daemon, address)

    restart_ketchd(daemon, while_down=0.5)
    restart_ketchd(daemon, while_down=0.0)  # a second start finds everything in place
    add_leftover_links(daemon)
    restart_ketchd(daemon)

    links = link_names(daemon)
    assert "br-leftover" not in links
    assert "vleftover" not in links
    assert "br-" + network_id[:12] in links
    assert ok(daemon, "inspect", "-f", "{{.State.Status}}", server) == "running\n"
    addresses = ok(daemon, "exec", server, "ip", "-o", "-4", "addr", "show", "eth0")
    assert f"{address}/24" in addresses
    assert "eth1" in ok(daemon, "exec", server, "ip", "-o", "link")
    assert "pong" in fetch_pong(daemon, address)

    ok(daemon, "rm", "-f", server)
    ok(daemon, "network", "rm", "kept")
    links = link_names(daemon)
    assert "br-" + network_id[:12] not in links
    assert not any(name.startswith("v" + server[:7]) for name in links)
    assert list((daemon.exec_root / "netns").iterdir()) == []


def add_leftover_rules(daemon: KetchDaemon) -> None:
    """Add rules of a network that has no record to ketch's tables, as a crash between
    deleting a network's record and rewriting the tables would leave them."""
    table = daemon.instance.table_name
    in_namespace(
        daemon, "nft", "add", "rule", "ip", table, "postrouting",
        "ip", "saddr", "10.199.0.0/24", "masquerade",
    )  # fmt: skip
    in_namespace(daemon, "nft", "add", "table", "bridge", table)
    in_namespace(
        daemon, "nft", "add", "chain", "bridge", table, "forward",
        "{ type filter hook forward priority filter; }",
    )  # fmt: skip
    in_namespace(
        daemon, "nft", "add", "rule", "bridge", table, "forward",
        "ip", "saddr", "10.199.0.0/24", "drop",
    )  # fmt: skip


def published_reply(daemon: KetchDaemon, port: int) -> str:
    reply = ""
    deadline = time.monotonic() + 30
    while "pong" not in reply and time.monotonic() < deadline:
        result = subprocess.run(
            daemon.namespace.command(["busybox", "nc", "-w", "5", "127.0.0.1", str(port)]),
            capture_output=True,
            text=True,
            timeout=30,
        )
        reply = result.stdout
        if "pong" not in reply:
            time.sleep(0.2)
    return reply


def resolved(daemon: KetchDaemon, client: str, name: str) -> str:
    output = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = daemon.ketch("exec", client, "nslookup", name)
        output = result.stdout
        if result.returncode == 0:
            break
        time.sleep(0.2)
    return output


def test_restore_brings_back_services(daemon: KetchDaemon) -> None:
    ok(daemon, "network", "create", "--subnet", "10.92.0.0/24", "served")
    server = ok(
        daemon, "run", "-d", "--network", "served", "--name", "restored-server",
        "-p", "18190:7000", "busybox",
        "sh", "-c", "while true; do echo pong | nc -l -p 7000; done",
    ).strip()  # fmt: skip
    client = ok(daemon, "run", "-d", "--network", "served", "busybox", "sleep", "600").strip()
    address = ok(
        daemon, "inspect", "-f", "{{.NetworkSettings.Networks.served.IPAddress}}", server
    ).strip()
    assert "pong" in published_reply(daemon, 18190)

    add_leftover_rules(daemon)
    restart_ketchd(daemon)

    assert "pong" in published_reply(daemon, 18190)
    assert address in resolved(daemon, client, "restored-server")
    ruleset = in_namespace(daemon, "nft", "list", "ruleset")
    assert "10.92.0.0/24" in ruleset
    assert "10.199.0.0/24" not in ruleset
    assert "table bridge ketch" not in ruleset

    ok(daemon, "rm", "-f", server, client)
    ok(daemon, "network", "rm", "served")
    assert "10.92.0.0/24" not in in_namespace(daemon, "nft", "list", "ruleset")
