"""Port options of a create body and the host sockets bound for them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ketch.errors import Conflict, InvalidArgument
from ketch.network.ports import (
    BoundPort,
    PortBinder,
    PortRequest,
    check_network_mode,
    ephemeral_range,
    exposed_port_keys,
    parse_host_port,
    parse_port_key,
    requested_bindings,
)


def test_port_key_defaults_to_tcp() -> None:
    assert parse_port_key("80") == (80, "tcp")


def test_port_key_udp() -> None:
    assert parse_port_key("53/udp") == (53, "udp")


@pytest.mark.parametrize("key", ["abc/tcp", "0/tcp", "70000/tcp", "/tcp", "80-90/tcp"])
def test_port_key_invalid(key: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid port specification"):
        parse_port_key(key)


def test_port_key_names_docker_quoting() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_port_key("abc/tcp")
    assert str(raised.value) == 'invalid port specification: "abc"'


def test_port_key_sctp_rejected() -> None:
    with pytest.raises(InvalidArgument, match="sctp"):
        parse_port_key("80/sctp")


def test_host_port_empty_is_ephemeral() -> None:
    assert parse_host_port("") == (0, 0)


def test_host_port_range() -> None:
    assert parse_host_port("8000-8010") == (8000, 8010)


@pytest.mark.parametrize("text", ["x", "8010-8000", "65536", "-", "80-"])
def test_host_port_invalid(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid port specification"):
        parse_host_port(text)


def test_bindings_from_port_bindings() -> None:
    host_config = {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}}
    assert requested_bindings(host_config, None) == [
        PortRequest(80, "tcp", "127.0.0.1", 8080, 8080)
    ]


def test_bindings_empty_host_ip_is_all() -> None:
    host_config = {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}
    assert requested_bindings(host_config, None)[0].host_ip == "0.0.0.0"


def test_bindings_null_list_binds_nothing() -> None:
    assert requested_bindings({"PortBindings": {"80/tcp": None}}, None) == []


def test_bindings_publish_all_exposed() -> None:
    host_config = {
        "PublishAllPorts": True,
        "PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
    }
    requests = requested_bindings(host_config, {"80/tcp": {}, "53/udp": {}})
    assert [request.key for request in requests] == ["80/tcp", "53/udp"]
    assert requests[1].host_low == 0


def test_bindings_bad_host_ip() -> None:
    host_config = {"PortBindings": {"80/tcp": [{"HostIp": "nowhere", "HostPort": "1"}]}}
    with pytest.raises(InvalidArgument, match='"nowhere"'):
        requested_bindings(host_config, None)


def test_bindings_bad_host_port() -> None:
    host_config = {"PortBindings": {"80/tcp": [{"HostPort": "http"}]}}
    with pytest.raises(InvalidArgument) as raised:
        requested_bindings(host_config, None)
    assert str(raised.value) == 'invalid port specification: "http"'


def test_bindings_not_a_list() -> None:
    with pytest.raises(InvalidArgument, match="must be a list"):
        requested_bindings({"PortBindings": {"80/tcp": {"HostPort": "1"}}}, None)


def test_bindings_publish_all_not_bool() -> None:
    with pytest.raises(InvalidArgument, match="PublishAllPorts"):
        requested_bindings({"PublishAllPorts": "yes"}, None)


def test_exposed_keys_normalized() -> None:
    assert exposed_port_keys({"80": {}, "53/UDP": {}}) == ["80/tcp", "53/udp"]


def test_ephemeral_range_read(tmp_path: Path) -> None:
    path = tmp_path / "range"
    path.write_text("40000\t40100\n")
    assert ephemeral_range(path) == (40000, 40100)


def test_ephemeral_range_missing_file(tmp_path: Path) -> None:
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_binder_exact_port() -> None:
    port = _free_port()
    binder = PortBinder()
    bound, sock = binder.bind(PortRequest(80, "tcp", "127.0.0.1", port, port))
    with sock:
        assert bound == BoundPort(80, "tcp", "127.0.0.1", port)
        assert sock.getsockname() == ("127.0.0.1", port)


def test_binder_port_held_by_ketch() -> None:
    port = _free_port()
    binder = PortBinder()
    _, sock = binder.bind(PortRequest(80, "tcp", "127.0.0.1", port, port))
    with sock, pytest.raises(Conflict) as raised:
        binder.bind(PortRequest(81, "tcp", "0.0.0.0", port, port))
    assert str(raised.value) == f"Bind for 0.0.0.0:{port} failed: port is already allocated"


def test_binder_udp_beside_tcp() -> None:
    port = _free_port()
    binder = PortBinder()
    _, tcp = binder.bind(PortRequest(80, "tcp", "127.0.0.1", port, port))
    _, udp = binder.bind(PortRequest(80, "udp", "127.0.0.1", port, port))
    with tcp, udp:
        assert udp.type == socket.SOCK_DGRAM


def test_binder_port_taken_elsewhere() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(Conflict, match="address already in use"):
            PortBinder().bind(PortRequest(80, "tcp", "127.0.0.1", port, port))


def test_binder_release_frees_port() -> None:
    port = _free_port()
    binder = PortBinder()
    bound, sock = binder.bind(PortRequest(80, "tcp", "127.0.0.1", port, port))
    sock.close()
    binder.release(bound)
    _, again = binder.bind(PortRequest(80, "tcp", "127.0.0.1", port, port))
    again.close()


def test_binder_range_skips_taken() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        binder = PortBinder()
        bound, sock = binder.bind(PortRequest(80, "tcp", "127.0.0.1", taken, taken + 1))
        sock.close()
    assert bound.host_port == taken + 1


def test_binder_ephemeral_in_range() -> None:
    low = _free_port()
    binder = PortBinder((low, low + 20))
    bound, sock = binder.bind(PortRequest(80, "tcp", "127.0.0.1"))
    sock.close()
    assert low <= bound.host_port <= low + 20


def test_binder_ephemeral_takes_turns() -> None:
    low = _free_port()
    binder = PortBinder((low, low + 20))
    first, first_sock = binder.bind(PortRequest(80, "tcp", "127.0.0.1"))
    first_sock.close()
    binder.release(first)
    second, second_sock = binder.bind(PortRequest(80, "tcp", "127.0.0.1"))
    second_sock.close()
    assert second.host_port != first.host_port


def test_create_body_rejects_bad_host_port() -> None:
    from ketch.engine.options import parse_create_body

    body = {"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}}
    with pytest.raises(InvalidArgument, match='invalid port specification: "x"'):
        parse_create_body(body)


def test_create_body_rejects_bad_exposed_port() -> None:
    from ketch.engine.options import parse_create_body

    with pytest.raises(InvalidArgument, match='invalid port specification: "eighty"'):
        parse_create_body({"Image": "busybox", "ExposedPorts": {"eighty/tcp": {}}})


def test_create_body_accepts_port_bindings() -> None:
    from ketch.engine.options import parse_create_body
    from ketch.engine.views import host_config_view

    bindings = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    body = {"Image": "busybox", "HostConfig": {"PortBindings": bindings, "PublishAllPorts": True}}
    view = host_config_view(parse_create_body(body))
    assert view["PortBindings"] == bindings
    assert view["PublishAllPorts"] is True


def test_daemon_userland_proxy_default_on() -> None:
    from ketch.engine.config import load_config

    assert load_config([]).userland_proxy is True


def test_daemon_userland_proxy_flag_off() -> None:
    from ketch.engine.config import load_config

    assert load_config(["--userland-proxy=false"]).userland_proxy is False


def test_daemon_userland_proxy_file_off(tmp_path: Path) -> None:
    from ketch.engine.config import load_config

    path = tmp_path / "daemon.json"
    path.write_text('{"userland-proxy": false}')
    assert load_config(["--config-file", str(path)]).userland_proxy is False


def test_network_mode_container_rejects_publish() -> None:
    host_config = {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}
    with pytest.raises(InvalidArgument, match="port publishing and the container type"):
        check_network_mode("container:web", host_config, None)


def test_network_mode_container_rejects_expose() -> None:
    with pytest.raises(InvalidArgument, match="port exposing and the container type"):
        check_network_mode("container:web", {}, {"80/tcp": {}})


def test_network_mode_host_warns() -> None:
    warnings = check_network_mode("host", {"PublishAllPorts": True}, None)
    assert warnings == ["Published ports are discarded when using host network mode"]


def test_network_mode_bridge_quiet() -> None:
    assert check_network_mode("bridge", {"PublishAllPorts": True}, {"80/tcp": {}}) == []


def test_restore_requests_pair_ipv6() -> None:
    from ketch.engine.ports import _restore_requests

    recorded = [
        BoundPort(80, "tcp", "0.0.0.0", 8080),
        BoundPort(80, "tcp", "::", 8080),
        BoundPort(53, "udp", "::", 5353),
    ]
    assert _restore_requests(recorded) == [
        PortRequest(80, "tcp", "0.0.0.0", 8080, 8080, also_ipv6=True),
        PortRequest(53, "udp", "::", 5353, 5353),
    ]


def test_bindings_empty_host_ip_also_ipv6() -> None:
    requests = requested_bindings({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}, None)
    assert requests[0].also_ipv6 is True


def test_bindings_explicit_host_ip_ipv4_only() -> None:
    host_config = {"PortBindings": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}}
    assert requested_bindings(host_config, None)[0].also_ipv6 is False
