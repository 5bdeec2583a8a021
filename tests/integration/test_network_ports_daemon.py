"""Published ports against a real ketchd; every packet stays in the test's network namespace.

Clients connect to 127.0.0.1 of the namespace that ketchd runs in, which is where its
proxies listen, so fixed host ports cannot clash with anything else on the machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from support.daemon import KetchDaemon
from support.netns import entered
from support.network_leftovers import no_network_leftovers  # noqa: F401
from support.restart import restart_ketchd

WAIT_SECONDS = 30.0


def _run_detached(daemon: KetchDaemon, *args: str) -> str:
    result = daemon.ketch("run", "-d", *args)
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    daemon.container_ids.add(container_id)
    return container_id


def _inspect(daemon: KetchDaemon, container_id: str) -> dict:
    result = daemon.ketch("inspect", container_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def _tcp_reply(daemon: KetchDaemon, port: int) -> bytes:
    """Connect to 127.0.0.1:port in ketchd's namespace and read until EOF, once."""
    with entered(daemon.namespace):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
    with client:
        chunks = []
        while chunk := client.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _wait_for_tcp_reply(daemon: KetchDaemon, port: int, expected: bytes) -> bytes:
    """Retry until the server in the container is up; the proxy accepts before it is."""
    deadline = time.monotonic() + WAIT_SECONDS
    reply = b""
    while time.monotonic() < deadline:
        try:
            reply = _tcp_reply(daemon, port)
        except OSError:
            reply = b""
        if expected in reply:
            return reply
        time.sleep(0.2)
    return reply


def _connection_refused(daemon: KetchDaemon, port: int) -> bool:
    with entered(daemon.namespace):
        probe = socket.socket()
    with probe:
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def test_publish_tcp_answers(daemon: KetchDaemon) -> None:
    container_id = _run_detached(
        daemon,
        "-p",
        "127.0.0.1:18080:8080",
        "busybox",
        "nc",
        "-ll",
        "-p",
        "8080",
        "-e",
        "echo",
        "hi",
    )
    assert _wait_for_tcp_reply(daemon, 18080, b"hi") == b"hi\n"
    daemon.ketch("rm", "-f", container_id)


def test_publish_shown_in_inspect_and_ps(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "-p", "127.0.0.1:18081:80", "busybox", "sleep", "60")
    inspected = _inspect(daemon, container_id)
    assert inspected["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18081"}]
    }
    assert inspected["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18081"}]
    }
    listing = daemon.ketch("ps", "--format", "{{.Ports}}", "--filter", f"id={container_id}")
    assert listing.stdout.strip() == "127.0.0.1:18081->80/tcp"
    daemon.ketch("rm", "-f", container_id)


def test_port_command_lists_bindings(daemon: KetchDaemon) -> None:
    container_id = _run_detached(
        daemon, "-p", "127.0.0.1:18088:80", "-p", "127.0.0.1:18089:53/udp", "busybox", "sleep", "60"
    )
    every = daemon.ketch("port", container_id)
    assert every.stdout.splitlines() == ["53/udp -> 127.0.0.1:18089", "80/tcp -> 127.0.0.1:18088"]
    port_output = daemon.ketch("port", container_id, "80")
    assert port_output.stdout == "127.0.0.1:18088\n"
    missing = daemon.ketch("port", container_id, "81")
    assert missing.returncode == 1
    assert "No public port '81/tcp' published" in missing.stderr
    daemon.ketch("rm", "-f", container_id)


def test_publish_all_exposed(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "--expose", "7000", "-P", "busybox", "sleep", "60")
    bindings = _inspect(daemon, container_id)["NetworkSettings"]["Ports"]["7000/tcp"]
    low, high = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert bindings[0]["HostIp"] == "0.0.0.0"
    assert low <= int(bindings[0]["HostPort"]) <= high
    daemon.ketch("rm", "-f", container_id)


def test_exposed_only_is_null(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "--expose", "7001", "busybox", "sleep", "60")
    assert _inspect(daemon, container_id)["NetworkSettings"]["Ports"] == {"7001/tcp": None}
    daemon.ketch("rm", "-f", container_id)


def test_taken_port_fails_start(daemon: KetchDaemon) -> None:
    first = _run_detached(daemon, "-p", "18082:80", "busybox", "sleep", "60")
    second = daemon.ketch("run", "-d", "--name", "second-on-18082", "-p", "18082:80", "busybox")
    assert second.returncode != 0
    assert "Bind for 0.0.0.0:18082 failed: port is already allocated" in second.stderr
    state = _inspect(daemon, "second-on-18082")["State"]
    assert state["Running"] is False
    daemon.ketch("rm", "-f", first, "second-on-18082")


def test_rm_closes_listener(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "-p", "127.0.0.1:18083:80", "busybox", "sleep", "60")
    assert not _connection_refused(daemon, 18083)
    removed = daemon.ketch("rm", "-f", container_id)
    assert removed.returncode == 0, removed.stderr
    assert _connection_refused(daemon, 18083)


def test_stop_releases_and_start_binds(daemon: KetchDaemon) -> None:
    container_id = _run_detached(
        daemon,
        "-p",
        "127.0.0.1:18084:8080",
        "busybox",
        "nc",
        "-ll",
        "-p",
        "8080",
        "-e",
        "echo",
        "hi",
    )
    stopped = daemon.ketch("stop", "-t", "0", container_id)
    assert stopped.returncode == 0, stopped.stderr
    assert _connection_refused(daemon, 18084)
    started = daemon.ketch("start", container_id)
    assert started.returncode == 0, started.stderr
    assert _wait_for_tcp_reply(daemon, 18084, b"hi") == b"hi\n"
    daemon.ketch("rm", "-f", container_id)


UDP_ECHO = """
import socket
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("0.0.0.0", 9000))
while True:
    data, client = server.recvfrom(65535)
    server.sendto(data.upper(), client)
"""


def test_publish_udp_echoes(daemon: KetchDaemon) -> None:
    container_id = _run_detached(daemon, "-p", "127.0.0.1:18085:9000/udp", "busybox", "sleep", "60")
    sandbox = _inspect(daemon, container_id)["NetworkSettings"]["SandboxKey"]
    # busybox has no UDP server, so the echo server runs in the container's network
    # namespace from the host; the proxy still forwards to the container's address.
    server = subprocess.Popen(["nsenter", f"--net={sandbox}", sys.executable, "-c", UDP_ECHO])
    try:
        with entered(daemon.namespace):
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with client:
            client.settimeout(0.5)
            reply = b""
            deadline = time.monotonic() + WAIT_SECONDS
            while not reply and time.monotonic() < deadline:
                client.sendto(b"ping", ("127.0.0.1", 18085))
                try:
                    reply = client.recv(100)
                except TimeoutError:
                    continue
        assert reply == b"PING"
    finally:
        server.kill()
        server.wait(timeout=10)
        daemon.ketch("rm", "-f", container_id)


def test_docker_cli_publish(daemon: KetchDaemon) -> None:
    result = daemon.docker(
        "run", "-d", "-p", "127.0.0.1:18086:8080", "busybox", "nc", "-ll", "-p", "8080", "-e",
        "echo", "hi",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    daemon.container_ids.add(container_id)
    assert _wait_for_tcp_reply(daemon, 18086, b"hi") == b"hi\n"
    port = daemon.docker("port", container_id, "8080")
    assert port.stdout.strip() == "127.0.0.1:18086"
    daemon.docker("rm", "-f", container_id)


def test_docker_py_publish(daemon: KetchDaemon) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host)
    try:
        container = client.containers.run(
            "busybox",
            ["nc", "-ll", "-p", "8080", "-e", "echo", "hi"],
            detach=True,
            ports={"8080/tcp": ("127.0.0.1", 18087)},
        )
        daemon.container_ids.add(container.id)
        try:
            assert _wait_for_tcp_reply(daemon, 18087, b"hi") == b"hi\n"
            container.reload()
            assert container.ports == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18087"}]}
        finally:
            container.remove(force=True)
    finally:
        client.close()


def test_ports_survive_ketchd_kill(daemon: KetchDaemon) -> None:
    container_id = _run_detached(
        daemon,
        "-p",
        "127.0.0.1:18090:8080",
        "busybox",
        "nc",
        "-ll",
        "-p",
        "8080",
        "-e",
        "echo",
        "hi",
    )
    assert _wait_for_tcp_reply(daemon, 18090, b"hi") == b"hi\n"

    restart_ketchd(daemon)
    assert _wait_for_tcp_reply(daemon, 18090, b"hi") == b"hi\n"
    assert _inspect(daemon, container_id)["NetworkSettings"]["Ports"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18090"}]
    }
    daemon.ketch("rm", "-f", container_id)


def test_restart_policy_binds_again(daemon: KetchDaemon) -> None:
    # Without -ll the server exits after one connection, and the policy starts it again.
    container_id = _run_detached(
        daemon, "--restart", "always", "-p", "127.0.0.1:18091:8080", "busybox", "nc", "-l", "-p",
        "8080", "-e", "echo", "hi",
    )  # fmt: skip
    assert _wait_for_tcp_reply(daemon, 18091, b"hi") == b"hi\n"
    assert _wait_for_tcp_reply(daemon, 18091, b"hi") == b"hi\n"
    inspected = _inspect(daemon, container_id)
    assert inspected["RestartCount"] >= 1
    daemon.ketch("rm", "-f", container_id)


def test_docker_cli_port_ranges(daemon: KetchDaemon) -> None:
    result = daemon.docker(
        "run", "-d", "-p", "127.0.0.1:18100-18101:8080-8081", "-p", "127.0.0.1:18110-18112:9000",
        "busybox", "sleep", "60",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    container_id = result.stdout.strip()
    daemon.container_ids.add(container_id)
    ports = _inspect(daemon, container_id)["NetworkSettings"]["Ports"]
    assert ports["8080/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "18100"}]
    assert ports["8081/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": "18101"}]
    assert 18110 <= int(ports["9000/tcp"][0]["HostPort"]) <= 18112
    daemon.docker("rm", "-f", container_id)


def test_docker_py_taken_port_error(daemon: KetchDaemon) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=daemon.host)
    first = _run_detached(daemon, "-p", "18120:80", "busybox", "sleep", "60")
    try:
        with pytest.raises(docker.errors.APIError, match="port is already allocated"):
            client.containers.run(
                "busybox", ["sleep", "60"], detach=True, name="py-on-18120", ports={"80/tcp": 18120}
            )
        assert client.containers.get("py-on-18120").status == "created"
    finally:
        daemon.ketch("rm", "-f", first, "py-on-18120")
        client.close()


def test_publish_with_container_mode_rejected(daemon: KetchDaemon) -> None:
    owner = _run_detached(daemon, "busybox", "sleep", "60")
    result = daemon.docker("create", "--network", f"container:{owner}", "-p", "80", "busybox")
    assert result.returncode != 0
    assert "conflicting options: port publishing and the container type network mode" in (
        result.stderr
    )
    daemon.ketch("rm", "-f", owner)


def test_publish_with_host_mode_warns(daemon: KetchDaemon) -> None:
    result = daemon.docker("create", "--network", "host", "-p", "18130:80", "busybox")
    assert result.returncode == 0, result.stderr
    daemon.container_ids.add(result.stdout.strip())
    assert "Published ports are discarded when using host network mode" in result.stderr
    daemon.docker("rm", "-f", result.stdout.strip())


def test_ketch_cli_port_ranges(daemon: KetchDaemon) -> None:
    container_id = _run_detached(
        daemon, "-p", "127.0.0.1:18140-18141:8080-8081/udp", "busybox", "sleep", "60"
    )
    ports = _inspect(daemon, container_id)["NetworkSettings"]["Ports"]
    assert ports["8080/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "18140"}]
    assert ports["8081/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "18141"}]
    daemon.ketch("rm", "-f", container_id)


def test_empty_host_ip_binds_ipv6_too(daemon: KetchDaemon) -> None:
    container_id = _run_detached(
        daemon, "-p", "18150:8080", "busybox", "nc", "-ll", "-p", "8080", "-e", "echo", "hi"
    )
    assert _inspect(daemon, container_id)["NetworkSettings"]["Ports"]["8080/tcp"] == [
        {"HostIp": "0.0.0.0", "HostPort": "18150"},
        {"HostIp": "::", "HostPort": "18150"},
    ]
    deadline = time.monotonic() + WAIT_SECONDS
    reply = b""
    while b"hi" not in reply and time.monotonic() < deadline:
        with entered(daemon.namespace):
            client = socket.socket(socket.AF_INET6)
        with client:
            client.settimeout(10)
            try:
                client.connect(("::1", 18150))
                reply = client.recv(100)
            except OSError:
                time.sleep(0.2)
    assert reply == b"hi\n"
    daemon.ketch("rm", "-f", container_id)


REMOVAL_SECONDS = 5.0


def _removed_within(daemon: KetchDaemon, container_id: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if daemon.ketch("inspect", container_id).returncode != 0:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(
    ("command", "host_port"), [(("stop", "-t", "1"), 18160), (("kill",), 18161)]
)
def test_auto_remove_after_stop_or_kill(
    daemon: KetchDaemon, command: tuple[str, ...], host_port: int
) -> None:
    # The auto-removal opens a supervisor connection right after the exit closed the proxy's
    # listener, so that connection can get the listener's descriptor number.
    container_id = _run_detached(
        daemon, "--rm", "-p", f"127.0.0.1:{host_port}:8080", "busybox", "httpd", "-f", "-p",
        "8080", "-h", "/etc",
    )  # fmt: skip
    ended = daemon.ketch(*command, container_id)
    assert ended.returncode == 0, ended.stderr

    assert _removed_within(daemon, container_id, REMOVAL_SECONDS)
    assert _connection_refused(daemon, host_port)
    assert "is used by transport" not in daemon.log_text()
