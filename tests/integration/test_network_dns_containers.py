"""Name resolution between containers on a user-defined network, through a real ketchd and
the docker CLI.

ketchd runs in the test's network namespace with ``--dns 127.0.0.1``, and a fake upstream
DNS server listens on 127.0.0.1:53 in that namespace, so a forwarded query never leaves it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import docker
import pytest

from support.daemon import KetchDaemon, docker_ok
from support.dns_upstream import UpstreamServer, upstream_server
from support.netns import entered
from support.network_leftovers import no_network_leftovers  # noqa: F401
from support.restart import restart_ketchd

pytestmark = pytest.mark.skipif(
    shutil.which("docker") is None, reason="the docker CLI is not installed"
)

UPSTREAM_RECORDS = {"upstream.test.": ["192.0.2.10"]}
# A second upstream on another loopback address, named only by one container's --dns.
CONTAINER_UPSTREAM_ADDRESS = "127.0.0.2"
CONTAINER_UPSTREAM_RECORDS = {"own.test.": ["192.0.2.20"]}


@dataclass
class FrontNetwork:
    daemon: KetchDaemon
    upstream: UpstreamServer
    gateway: str
    web_address: str


def gateway_of(daemon: KetchDaemon, network: str) -> str:
    template = "{{(index .IPAM.Config 0).Gateway}}"
    return docker_ok(daemon, "network", "inspect", "-f", template, network).strip()


def udp_listeners(daemon: KetchDaemon) -> str:
    command = daemon.namespace.command(["ss", "-Hlnu"])
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def upstream(daemon: KetchDaemon) -> Iterator[UpstreamServer]:
    with ExitStack() as stack:
        # The sockets are made inside the daemon's namespace, so 127.0.0.1:53 is its loopback.
        with entered(daemon.namespace):
            server = stack.enter_context(upstream_server(UPSTREAM_RECORDS, port=53))
        restart_ketchd(daemon, "--dns", "127.0.0.1", kill_signal=signal.SIGTERM)
        yield server


@pytest.fixture(scope="module")
def front(daemon: KetchDaemon, upstream: UpstreamServer) -> Iterator[FrontNetwork]:
    docker_ok(daemon, "network", "create", "front")
    try:
        docker_ok(
            daemon, "run", "-d", "--name", "web", "--network", "front", "--network-alias", "www",
            "busybox", "nc", "-ll", "-p", "8080", "-e", "echo", "hello",
        )  # fmt: skip
        template = "{{.NetworkSettings.Networks.front.IPAddress}}"
        web_address = docker_ok(daemon, "inspect", "-f", template, "web").strip()
        yield FrontNetwork(daemon, upstream, gateway_of(daemon, "front"), web_address)
    finally:
        daemon.docker("rm", "-f", "web")
        daemon.docker("network", "rm", "front")


def run_on(network: FrontNetwork, name: str, *command: str) -> subprocess.CompletedProcess[str]:
    return network.daemon.docker("run", "--rm", "--network", name, "busybox", *command)


def test_dns_resolv_conf_names_gateway(front: FrontNetwork) -> None:
    result = run_on(front, "front", "cat", "/etc/resolv.conf")
    assert result.returncode == 0, result.stderr
    assert f"nameserver {front.gateway}" in result.stdout.splitlines()


def test_dns_nslookup_container_name(front: FrontNetwork) -> None:
    result = run_on(front, "front", "nslookup", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Address: {front.web_address}" in result.stdout


def test_dns_nslookup_alias(front: FrontNetwork) -> None:
    result = run_on(front, "front", "nslookup", "www")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Address: {front.web_address}" in result.stdout


def test_dns_nslookup_name_with_network(front: FrontNetwork) -> None:
    result = run_on(front, "front", "nslookup", "web.front")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Address: {front.web_address}" in result.stdout


def test_dns_ping_by_alias(front: FrontNetwork) -> None:
    result = run_on(front, "front", "ping", "-c1", "-W5", "www")
    assert result.returncode == 0, result.stdout + result.stderr
    assert front.web_address in result.stdout


def test_dns_tcp_by_name(front: FrontNetwork) -> None:
    result = run_on(front, "front", "nc", "-w", "5", "web", "8080")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"


def test_dns_forwards_other_names(front: FrontNetwork) -> None:
    result = run_on(front, "front", "nslookup", "upstream.test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Address: 192.0.2.10" in result.stdout
    assert ("upstream.test.", "udp") in front.upstream.queries


def test_dns_other_network_unresolved(front: FrontNetwork) -> None:
    daemon = front.daemon
    docker_ok(daemon, "network", "create", "back")
    try:
        result = run_on(front, "back", "nslookup", "web")
    finally:
        daemon.docker("network", "rm", "back")
    assert result.returncode != 0, result.stdout
    assert front.web_address not in result.stdout
    # The name server passed the unknown name on, and the upstream had no such name.
    assert ("web.", "udp") in front.upstream.queries


def test_dns_other_gateway_hides_names(front: FrontNetwork) -> None:
    daemon = front.daemon
    docker_ok(daemon, "network", "create", "side")
    try:
        # The front gateway is reachable from the side network through ketchd's namespace.
        result = run_on(front, "side", "nslookup", "web", front.gateway)
    finally:
        daemon.docker("network", "rm", "side")
    # The server replied after forwarding the name, and the upstream has no such name.
    assert "NXDOMAIN" in result.stdout, result.stdout + result.stderr
    assert front.web_address not in result.stdout


def test_dns_listener_follows_network(front: FrontNetwork) -> None:
    daemon = front.daemon
    docker_ok(daemon, "network", "create", "brief")
    gateway = gateway_of(daemon, "brief")
    listening_while_up = f"{gateway}:53" in udp_listeners(daemon)
    docker_ok(daemon, "network", "rm", "brief")
    assert listening_while_up
    assert f"{gateway}:53" not in udp_listeners(daemon)


def test_dns_default_bridge_has_no_listener(front: FrontNetwork) -> None:
    daemon = front.daemon
    docker_ok(daemon, "run", "--rm", "busybox", "true")
    gateway = gateway_of(daemon, "bridge")
    assert f"{gateway}:53" not in udp_listeners(daemon)


def test_dns_container_dns_option_forwarded(front: FrontNetwork) -> None:
    daemon = front.daemon
    with ExitStack() as stack:
        # Entered inside the namespace, because entering binds the sockets.
        with entered(daemon.namespace):
            container_upstream = stack.enter_context(
                upstream_server(CONTAINER_UPSTREAM_RECORDS, CONTAINER_UPSTREAM_ADDRESS, 53)
            )
        result = daemon.docker(
            "run", "--rm", "--network", "front", "--dns", CONTAINER_UPSTREAM_ADDRESS,
            "busybox", "sh", "-c", "cat /etc/resolv.conf; nslookup own.test; nslookup web",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"nameserver {front.gateway}" in result.stdout.splitlines()
    assert "Address: 192.0.2.20" in result.stdout
    assert f"Address: {front.web_address}" in result.stdout
    assert ("own.test.", "udp") in container_upstream.queries


def test_dns_hostname_and_hosts_per_container(front: FrontNetwork) -> None:
    script = "cat /etc/hostname; grep -c $(hostname) /etc/hosts"
    first = run_on(front, "front", "sh", "-c", script)
    second = run_on(front, "front", "sh", "-c", script)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert first.stdout.splitlines()[0] != second.stdout.splitlines()[0]
    assert first.stdout.splitlines()[1] == "1"


def test_dns_rename_and_stop_followed(front: FrontNetwork) -> None:
    daemon = front.daemon
    docker_ok(
        daemon, "run", "-d", "--name", "before", "--network", "front", "busybox", "sleep", "60"
    )
    try:
        docker_ok(daemon, "rename", "before", "after")
        renamed = run_on(front, "front", "nslookup", "after")
        old_name = run_on(front, "front", "nslookup", "before")
        docker_ok(daemon, "stop", "-t", "0", "after")
        stopped = run_on(front, "front", "nslookup", "after")
    finally:
        daemon.docker("rm", "-f", "before", "after")
    assert renamed.returncode == 0, renamed.stdout + renamed.stderr
    assert old_name.returncode != 0, old_name.stdout
    assert stopped.returncode != 0, stopped.stdout


def test_dns_docker_py_tcp_by_name(front: FrontNetwork) -> None:
    client = docker.DockerClient(base_url=front.daemon.host)
    try:
        output = client.containers.run(
            "busybox", ["nc", "-w", "5", "www", "8080"], network="front", remove=True
        )
    finally:
        client.close()
    assert output == b"hello\n"


def test_dns_connect_rewrites_resolv_conf(front: FrontNetwork) -> None:
    daemon = front.daemon
    docker_ok(daemon, "run", "-d", "--name", "joiner", "busybox", "sleep", "60")
    try:
        before = docker_ok(daemon, "exec", "joiner", "cat", "/etc/resolv.conf")
        docker_ok(daemon, "network", "connect", "front", "joiner")
        joined = daemon.docker("exec", "joiner", "sh", "-c", "cat /etc/resolv.conf; nslookup web")
        docker_ok(daemon, "network", "disconnect", "front", "joiner")
        after = docker_ok(daemon, "exec", "joiner", "cat", "/etc/resolv.conf")
    finally:
        daemon.docker("rm", "-f", "joiner")
    assert f"nameserver {front.gateway}" not in before.splitlines()
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert f"nameserver {front.gateway}" in joined.stdout.splitlines()
    assert f"Address: {front.web_address}" in joined.stdout
    assert after == before


def test_dns_served_after_ketchd_restart(front: FrontNetwork) -> None:
    # Last in the module: it replaces the ketchd process, keeping its --dns setting.
    restart_ketchd(front.daemon, "--dns", "127.0.0.1")
    result = run_on(front, "front", "nslookup", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Address: {front.web_address}" in result.stdout
