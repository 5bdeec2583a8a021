"""``ketch network`` and ``docker network`` against a real ketchd, inside the test's network
namespace: the table and flags, containers on a named network, --ip, --network-alias and
--network container:NAME."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from support.daemon import KetchDaemon
from support.network_leftovers import no_network_leftovers  # noqa: F401

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(params=["ketch", "docker"])
def cli(request: pytest.FixtureRequest, daemon: KetchDaemon) -> Iterator[Runner]:
    """The ketch or the docker CLI; removes the containers and networks a test made."""
    run: Runner = getattr(daemon, request.param)
    try:
        yield run
    finally:
        listing = daemon.ketch("ps", "-aq", "--no-trunc").stdout.split()
        if listing:
            daemon.ketch("rm", "-f", *listing)
        names = daemon.ketch("network", "ls", "-q", "--filter", "type=custom").stdout.split()
        if names:
            daemon.ketch("network", "rm", *names)
    assert_nothing_left(daemon)


def assert_nothing_left(daemon: KetchDaemon) -> None:
    """Check that only lo and the default bridge remain, with no namespace pinned."""
    names = [line.split(":")[1].strip().split("@")[0] for line in _links(daemon).splitlines()]
    assert sorted(names) == sorted([daemon.instance.default_bridge, "lo"])
    assert list((daemon.exec_root / "netns").glob("*")) == []
    with open("/proc/self/mountinfo") as mountinfo:
        assert str(daemon.exec_root / "netns") not in mountinfo.read()


def ok(run: Runner, *args: str) -> str:
    result = run(*args, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}"
    return result.stdout


def _links(daemon: KetchDaemon) -> str:
    return subprocess.run(
        daemon.namespace.command(["ip", "-o", "link"]), capture_output=True, text=True
    ).stdout


def test_cli_create_ls_inspect_rm(daemon: KetchDaemon, cli: Runner) -> None:
    network_id = ok(
        cli, "network", "create", "--subnet", "10.88.0.0/24", "--gateway", "10.88.0.1",
        "--ip-range", "10.88.0.64/26", "--label", "tier=back", "-o",
        "com.docker.network.driver.mtu=1450", "back",
    ).strip()  # fmt: skip
    assert len(network_id) == 64

    table = ok(cli, "network", "ls").splitlines()
    assert table[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert f"{network_id[:12]}   back      bridge    local" in table

    assert ok(cli, "network", "ls", "-q", "--filter", "label=tier=back").split() == [
        network_id[:12]
    ]
    assert ok(cli, "network", "ls", "--format", "{{.Name}}", "-f", "name=back") == "back\n"

    inspected = json.loads(ok(cli, "network", "inspect", "back"))[0]
    assert inspected["IPAM"]["Config"][0]["IPRange"] == "10.88.0.64/26"
    assert inspected["Options"]["com.docker.network.driver.mtu"] == "1450"
    subnet = ok(cli, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", "back")
    assert subnet == "10.88.0.0/24\n"

    assert ok(cli, "network", "rm", "back") == "back\n"
    assert "br-" + network_id[:12] not in _links(daemon)


def test_cli_inspect_missing(cli: Runner) -> None:
    result = cli("network", "inspect", "missing")
    assert result.returncode == 1
    # ketch prints "No such network"; docker 20.10 prints the daemon's "not found".
    assert "network missing not found" in result.stderr or "No such network: missing" in (
        result.stderr
    )


def test_cli_overlap_error(cli: Runner) -> None:
    ok(cli, "network", "create", "--subnet", "10.89.0.0/24", "first")
    result = cli("network", "create", "--subnet", "10.89.0.128/25", "second")
    assert result.returncode != 0
    assert "10.89.0.0/24 of network first" in result.stderr


def test_cli_run_on_network_with_ip(cli: Runner) -> None:
    ok(cli, "network", "create", "--subnet", "10.90.0.0/24", "front")
    output = ok(
        cli, "run", "--rm", "--network", "front", "--ip", "10.90.0.50",
        "busybox", "ip", "-o", "-4", "addr", "show", "eth0",
    )  # fmt: skip
    assert ipaddress.IPv4Interface(output.split()[3]) == ipaddress.IPv4Interface("10.90.0.50/24")


def test_cli_tcp_by_name(cli: Runner) -> None:
    ok(cli, "network", "create", "talk")
    ok(
        cli, "run", "-d", "--network", "talk", "--name", "server", "busybox",
        "sh", "-c", "echo pong | nc -l -p 7000",
    )  # fmt: skip
    reply = ""
    deadline = time.monotonic() + 30
    while "pong" not in reply and time.monotonic() < deadline:
        result = cli(
            "run", "--rm", "--network", "talk", "busybox", "nc", "-w", "5", "server", "7000"
        )
        reply = result.stdout
        if "pong" not in reply:
            time.sleep(0.2)
    assert "pong" in reply


def test_cli_run_network_by_id(cli: Runner) -> None:
    network_id = ok(cli, "network", "create", "byid").strip()
    output = ok(cli, "run", "--rm", "--network", network_id[:10], "busybox", "ip", "-o", "link")
    assert "eth0" in output
    assert "eth1" not in output


def test_cli_internal_has_no_route_out(cli: Runner) -> None:
    ok(cli, "network", "create", "--internal", "--subnet", "10.94.0.0/24", "closed")
    routes = ok(cli, "run", "--rm", "--network", "closed", "busybox", "ip", "route")
    assert "default" not in routes
    assert "10.94.0.0/24 dev eth0" in routes


def test_cli_mac_address(cli: Runner) -> None:
    ok(cli, "network", "create", "macs")
    output = ok(
        cli, "run", "--rm", "--network", "macs", "--mac-address", "02:42:0a:0b:0c:0d",
        "busybox", "cat", "/sys/class/net/eth0/address",
    )  # fmt: skip
    assert output == "02:42:0a:0b:0c:0d\n"


def test_cli_prune(cli: Runner) -> None:
    ok(cli, "network", "create", "spare")
    ok(cli, "network", "create", "busy")
    # As in docker, only endpoints keep a network: a created container does not.
    ok(cli, "create", "--network", "spare", "busybox", "true")
    ok(cli, "run", "-d", "--network", "busy", "busybox", "sleep", "600")
    output = ok(cli, "network", "prune", "-f")
    assert output == "Deleted Networks:\nspare\n\n"
    assert ok(cli, "network", "ls", "--format", "{{.Name}}", "-f", "type=custom") == "busy\n"


def test_cli_alias_in_inspect(cli: Runner) -> None:
    ok(cli, "network", "create", "side")
    container = ok(
        cli, "run", "-d", "--network", "side", "--network-alias", "cache", "busybox",
        "sleep", "60",
    ).strip()  # fmt: skip
    aliases = ok(cli, "inspect", "-f", "{{json .NetworkSettings.Networks.side.Aliases}}", container)
    assert "cache" in json.loads(aliases)


def test_cli_ps_network_filter(cli: Runner) -> None:
    ok(cli, "network", "create", "listed")
    inside = ok(cli, "run", "-d", "--network", "listed", "busybox", "sleep", "60").strip()
    ok(cli, "run", "-d", "busybox", "sleep", "60")
    listed_ids = ok(cli, "ps", "-q", "--no-trunc", "--filter", "network=listed").split()
    assert listed_ids == [inside]


def test_cli_connect_disconnect(cli: Runner) -> None:
    ok(cli, "network", "create", "--subnet", "10.91.0.0/24", "extra")
    container = ok(cli, "run", "-d", "busybox", "sleep", "60").strip()
    ok(cli, "network", "connect", "--ip", "10.91.0.9", "extra", container)
    addresses = ok(cli, "exec", container, "ip", "-o", "-4", "addr", "show", "eth1")
    assert "10.91.0.9/24" in addresses

    result = cli("network", "rm", "extra")
    assert result.returncode != 0
    assert "has active endpoints" in result.stderr

    ok(cli, "network", "disconnect", "extra", container)
    assert "eth1" not in ok(cli, "exec", container, "ip", "-o", "link")


def test_cli_container_mode_shares_eth0(cli: Runner) -> None:
    server = ok(cli, "run", "-d", "--name", "holder", "busybox", "sleep", "60").strip()
    own = ok(cli, "exec", server, "ip", "-o", "-4", "addr", "show", "eth0").split()[3]
    shared = ok(
        cli, "run", "--rm", "--network", "container:holder", "busybox",
        "ip", "-o", "-4", "addr", "show", "eth0",
    ).split()[3]  # fmt: skip
    assert shared == own


def test_cli_container_mode_needs_running(cli: Runner) -> None:
    ok(cli, "create", "--name", "idle", "busybox", "true")
    result = cli("run", "--rm", "--network", "container:idle", "busybox", "true")
    assert result.returncode != 0
    assert "cannot join network of a non running container" in result.stderr


def test_cli_unknown_network(cli: Runner) -> None:
    result = cli("run", "--rm", "--network", "nowhere", "busybox", "true")
    assert result.returncode != 0
    assert "network nowhere not found" in result.stderr
