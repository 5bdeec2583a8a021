"""Containers' /etc/resolv.conf text and the name server's upstreams, from a host file that
each test writes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from ketch.engine.bundles import write_etc_files
from ketch.engine.hostconfig import HostOptions
from ketch.engine.resolvconf import (
    NO_NAMESERVER_COMMENT,
    DnsSettings,
    ResolvConfRenderer,
    container_resolv_conf,
    parse_resolv_conf,
)
from ketch.engine.store import ContainerPaths
from ketch.errors import InvalidArgument
from ketch.network.store import Network

HOST_FILE = """# written by the host
nameserver 127.0.0.53
nameserver 10.0.0.2
search corp.test lab.test
options edns0 timeout:2
"""
GATEWAY = IPv4Address("172.20.0.1")
NETWORK = Network(
    id="ab" * 32,
    name="front",
    driver="bridge",
    subnet=IPv4Network("172.20.0.0/16"),
    gateway=GATEWAY,
    bridge="br-abababababab",
)


def settings_for(tmp_path: Path, text: str = HOST_FILE, servers: tuple[str, ...] = ()):
    path = tmp_path / "resolv.conf"
    path.write_text(text)
    return DnsSettings(servers=servers, host_resolv_conf=path)


def test_parse_keeps_last_search() -> None:
    parsed = parse_resolv_conf("search a.test\ndomain b.test\nnameserver 10.0.0.1\n")
    assert parsed.search == ["b.test"]
    assert parsed.nameservers == ["10.0.0.1"]


def test_parse_skips_comments() -> None:
    parsed = parse_resolv_conf("; nameserver 10.0.0.9\n# nameserver 10.0.0.8\n")
    assert parsed.nameservers == []


def test_user_network_uses_gateway(tmp_path: Path) -> None:
    text = container_resolv_conf(HostOptions(), "front", GATEWAY, settings_for(tmp_path))
    assert text == (
        "nameserver 172.20.0.1\nsearch corp.test lab.test\noptions edns0 timeout:2 ndots:0\n"
    )


def test_user_network_keeps_own_ndots(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "nameserver 10.0.0.2\noptions ndots:2\n")
    text = container_resolv_conf(HostOptions(), "front", GATEWAY, settings)
    assert text == "nameserver 172.20.0.1\noptions ndots:2\n"


def test_default_bridge_drops_loopback(tmp_path: Path) -> None:
    text = container_resolv_conf(HostOptions(), "default", None, settings_for(tmp_path))
    assert text == "nameserver 10.0.0.2\nsearch corp.test lab.test\noptions edns0 timeout:2\n"


def test_default_bridge_prefers_daemon_dns(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, servers=("10.9.9.9",))
    text = container_resolv_conf(HostOptions(), "bridge", None, settings)
    assert text.splitlines()[0] == "nameserver 10.9.9.9"


def test_only_loopback_leaves_comment(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "nameserver 127.0.0.1\nnameserver ::1\n")
    text = container_resolv_conf(HostOptions(), "default", None, settings)
    assert text == NO_NAMESERVER_COMMENT
    assert "nameserver" not in text.replace("No nameserver", "")


def test_host_mode_copies_host_file(tmp_path: Path) -> None:
    text = container_resolv_conf(HostOptions(), "host", None, settings_for(tmp_path))
    assert text.splitlines()[:2] == ["nameserver 127.0.0.53", "nameserver 10.0.0.2"]


def test_container_dns_options_override(tmp_path: Path) -> None:
    host = HostOptions(dns=["10.1.1.1"], dns_search=["app.test"], dns_options=["ndots:3"])
    for mode in ("default", "host"):
        text = container_resolv_conf(host, mode, None, settings_for(tmp_path))
        assert text == "nameserver 10.1.1.1\nsearch app.test\noptions ndots:3\n", mode


def test_user_network_keeps_gateway_with_dns(tmp_path: Path) -> None:
    host = HostOptions(dns=["10.1.1.1"], dns_search=["app.test"], dns_options=["ndots:3"])
    text = container_resolv_conf(host, "front", GATEWAY, settings_for(tmp_path))
    assert text == "nameserver 172.20.0.1\nsearch app.test\noptions ndots:3\n"


def test_dns_not_address_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="resolver.test"):
        container_resolv_conf(
            HostOptions(dns=["resolver.test"]), "default", None, settings_for(tmp_path)
        )


def test_search_with_newline_rejected(tmp_path: Path) -> None:
    host = HostOptions(dns_search=["a.test\nnameserver 10.6.6.6"])
    with pytest.raises(InvalidArgument, match="DnsSearch"):
        container_resolv_conf(host, "default", None, settings_for(tmp_path))


def test_missing_host_file_gives_comment(tmp_path: Path) -> None:
    settings = DnsSettings(host_resolv_conf=tmp_path / "absent")
    text = container_resolv_conf(HostOptions(), "default", None, settings)
    assert text == NO_NAMESERVER_COMMENT


def test_upstreams_prefer_dns_setting(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, servers=("10.9.9.9",))
    assert settings.upstream_servers() == ["10.9.9.9"]


def test_upstreams_keep_host_loopback(tmp_path: Path) -> None:
    assert settings_for(tmp_path).upstream_servers() == ["127.0.0.53", "10.0.0.2"]


def test_renderer_finds_network_by_name(tmp_path: Path) -> None:
    renderer = ResolvConfRenderer(settings_for(tmp_path), lambda: [NETWORK])
    assert renderer.gateway_of("front") == GATEWAY


def test_renderer_finds_network_by_id_prefix(tmp_path: Path) -> None:
    renderer = ResolvConfRenderer(settings_for(tmp_path), lambda: [NETWORK])
    assert renderer.gateway_of("abab") == GATEWAY


def test_renderer_builtin_modes_no_gateway(tmp_path: Path) -> None:
    renderer = ResolvConfRenderer(settings_for(tmp_path), lambda: [NETWORK])
    for mode in ("default", "bridge", "host", "none", "container:web"):
        assert renderer.gateway_of(mode) is None, mode


def test_etc_files_always_mount_resolv_conf(tmp_path: Path) -> None:
    paths = ContainerPaths(tmp_path)
    paths.directory("c1").mkdir(parents=True)
    mounts = write_etc_files(
        paths, "c1", {"Hostname": "c1"}, HostOptions(), "nameserver 10.0.0.2\n"
    )
    by_target = {mount["destination"]: mount["source"] for mount in mounts}
    assert Path(by_target["/etc/resolv.conf"]).read_text() == "nameserver 10.0.0.2\n"
    assert Path(by_target["/etc/hosts"]).parent == paths.directory("c1")
    assert Path(by_target["/etc/hostname"]).read_text() == "c1\n"


def test_daemon_search_and_options_used(tmp_path: Path) -> None:
    settings = DnsSettings(
        host_resolv_conf=settings_for(tmp_path).host_resolv_conf,
        search=("daemon.test",),
        options=("timeout:1",),
    )
    default = container_resolv_conf(HostOptions(), "default", None, settings)
    user = container_resolv_conf(HostOptions(), "front", GATEWAY, settings)
    assert default == "nameserver 10.0.0.2\nsearch daemon.test\noptions timeout:1\n"
    assert user == "nameserver 172.20.0.1\nsearch daemon.test\noptions timeout:1 ndots:0\n"


def test_container_options_beat_daemon_ones(tmp_path: Path) -> None:
    settings = DnsSettings(
        host_resolv_conf=settings_for(tmp_path).host_resolv_conf,
        search=("daemon.test",),
        options=("timeout:1",),
    )
    host = HostOptions(dns_search=["app.test"], dns_options=["attempts:3"])
    text = container_resolv_conf(host, "front", GATEWAY, settings)
    assert text == "nameserver 172.20.0.1\nsearch app.test\noptions attempts:3 ndots:0\n"
