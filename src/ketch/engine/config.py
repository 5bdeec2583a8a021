"""ketchd's configuration: command-line flags and the daemon.json file, as dockerd has them.

The file (default ``/etc/ketch/daemon.json``) takes dockerd's keys for what ketchd
supports: ``data-root``, ``exec-root``, ``hosts``, ``registry-mirrors``,
``insecure-registries``, ``log-driver``, ``log-opts``, ``init``, ``init-path``,
``default-ulimits``, ``live-restore``, ``dns``, ``dns-search``, ``dns-opts``,
``userland-proxy``, ``bridge`` and ``debug``. Containers always outlive ketchd, because the
supervisor runs them, so ``live-restore`` false only logs that it is ignored. An unknown
key is an error naming it, and, as with dockerd, so is a setting given both as a flag and
in the file. A missing file is fine unless ``--config-file`` named it.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ketch
from ketch.engine.hostconfig import clamp_default_ulimits
from ketch.engine.logopts import DEFAULT_LOG_OPTS, LOG_DRIVER, check_log_driver, check_log_opts
from ketch.errors import InvalidArgument
from ketch.network.instance import check_bridge_name

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_FILE = Path("/etc/ketch/daemon.json")
DEFAULT_DATA_ROOT = Path("/var/lib/ketch")
DEFAULT_EXEC_ROOT = Path("/run/ketch")
DEFAULT_HOST = "unix:///run/ketch/ketch.sock"

# daemon.json key -> (argparse destination, expected JSON type)
FILE_KEYS: dict[str, tuple[str, type]] = {
    "data-root": ("data_root", str),
    "exec-root": ("exec_root", str),
    "hosts": ("hosts", list),
    "registry-mirrors": ("registry_mirrors", list),
    "insecure-registries": ("insecure_registries", list),
    "log-driver": ("log_driver", str),
    "log-opts": ("log_opts", dict),
    "init": ("init", bool),
    "default-ulimits": ("default_ulimits", dict),
    "live-restore": ("live_restore", bool),
    "tlsverify": ("tls_verify", bool),
    "tlscacert": ("tls_ca", str),
    "tlscert": ("tls_cert", str),
    "tlskey": ("tls_key", str),
    "insecure-tcp": ("insecure_tcp", bool),
    "init-path": ("init_path", str),
    "debug": ("debug", bool),
    "dns": ("dns", list),
    "dns-search": ("dns_search", list),
    "dns-opts": ("dns_options", list),
    "userland-proxy": ("userland_proxy", bool),
    "bridge": ("bridge", str),
}


@dataclass
class DaemonConfig:
    data_root: Path = DEFAULT_DATA_ROOT
    exec_root: Path = DEFAULT_EXEC_ROOT
    hosts: list[str] = field(default_factory=lambda: [DEFAULT_HOST])
    registry_mirrors: list[str] = field(default_factory=list)
    insecure_registries: list[str] = field(default_factory=list)
    log_driver: str = LOG_DRIVER
    log_opts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LOG_OPTS))
    init: bool = False
    init_path: str | None = None
    default_ulimits: list[dict[str, Any]] = field(default_factory=list)
    live_restore: bool = True
    tls_verify: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure_tcp: bool = False
    debug: bool = False
    # DNS servers for containers and for the network name server to forward to; empty: the
    # nameservers of host_resolv_conf.
    dns: list[str] = field(default_factory=list)
    # Search domains and resolver options for containers that set none of their own.
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    host_resolv_conf: Path = Path("/etc/resolv.conf")
    # False: published ports are dnat rules in the kernel instead of proxies in ketchd.
    userland_proxy: bool = True
    # The default network's bridge. None means ketch0 for the default data root and a name
    # derived from the data root otherwise (see ketch.network.instance).
    bridge: str | None = None

    def socket_paths(self) -> list[Path]:
        return [socket_path(host) for host in self.hosts if not host.startswith("tcp://")]

    def tcp_addresses(self) -> list[tuple[str, int]]:
        return [tcp_address(host) for host in self.hosts if host.startswith("tcp://")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ketchd", description="Serve the Docker Engine API for ketch containers."
    )
    # Every default is None so that load_config can tell a flag given from one left out.
    parser.add_argument("--data-root", help=f"directory of persistent state ({DEFAULT_DATA_ROOT})")
    parser.add_argument(
        "--exec-root", help=f"directory of sockets and runtime state ({DEFAULT_EXEC_ROOT})"
    )
    parser.add_argument(
        "-H",
        "--host",
        dest="hosts",
        action="append",
        help="socket to serve the API on, as unix:///path, or tcp://address:port with "
        f"--tlsverify (or --insecure-tcp); repeatable ({DEFAULT_HOST})",
    )
    parser.add_argument(
        "--config-file", help=f"daemon configuration file in JSON ({DEFAULT_CONFIG_FILE})"
    )
    parser.add_argument(
        "--registry-mirror",
        dest="registry_mirrors",
        action="append",
        help="URL of a docker.io mirror, such as http://127.0.0.1:5000; repeatable",
    )
    parser.add_argument(
        "--insecure-registry",
        dest="insecure_registries",
        action="append",
        help="registry host[:port] to reach over plain HTTP; repeatable",
    )
    parser.add_argument(
        "--log-driver", help=f"default log driver of containers; only {LOG_DRIVER} exists"
    )
    parser.add_argument(
        "--log-opt",
        dest="log_opts",
        action="append",
        metavar="KEY=VALUE",
        help="default log driver option, such as max-size=10m or max-file=3; repeatable "
        "(default: max-size=10m, max-file=3)",
    )
    parser.add_argument(
        "--default-ulimit",
        dest="default_ulimits",
        action="append",
        metavar="NAME=SOFT[:HARD]",
        help="default ulimit of containers, such as nofile=1024:4096; repeatable; lowered to "
        "the host's hard limit where above it",
    )
    parser.add_argument(
        "--live-restore", action="store_const", const=True, help="accepted; always on in ketch"
    )
    parser.add_argument(
        "--tlsverify",
        dest="tls_verify",
        action="store_const",
        const=True,
        help="serve tcp:// hosts over TLS, accepting only clients with a certificate the CA signed",
    )
    parser.add_argument("--tlscacert", dest="tls_ca", help="CA certificate file for clients")
    parser.add_argument("--tlscert", dest="tls_cert", help="the server's TLS certificate file")
    parser.add_argument("--tlskey", dest="tls_key", help="the server's TLS key file")
    parser.add_argument(
        "--insecure-tcp",
        dest="insecure_tcp",
        action="store_const",
        const=True,
        help="serve tcp:// hosts without TLS (anyone who reaches the port controls the host)",
    )
    parser.add_argument(
        "--init",
        action="store_const",
        const=True,
        help="run an init (tini) as PID 1 in containers that do not choose",
    )
    parser.add_argument(
        "--init-path", help="init binary for --init (default: docker-init or tini-static in PATH)"
    )
    parser.add_argument(
        "--dns",
        action="append",
        metavar="ADDRESS",
        help="IP address of a DNS server for containers, which the name server of "
        "user-defined networks forwards to; repeatable (default: the host's nameservers)",
    )
    parser.add_argument(
        "--dns-search",
        action="append",
        metavar="DOMAIN",
        help="DNS search domain for containers; repeatable (default: the host's)",
    )
    parser.add_argument(
        "--dns-opt",
        dest="dns_options",
        action="append",
        metavar="OPTION",
        help="resolv.conf option for containers, such as ndots:2; repeatable (default: the host's)",
    )
    parser.add_argument(
        "--userland-proxy",
        type=_parse_bool,
        nargs="?",
        const=True,
        metavar="BOOL",
        help="forward published ports with a proxy in ketchd (true, the default) or with "
        "nftables dnat rules (false)",
    )
    parser.add_argument(
        "-b",
        "--bridge",
        help="interface name of the default network's bridge, made if missing (default: "
        "ketch0 for the default data root, a name derived from the data root otherwise)",
    )
    parser.add_argument(
        "-D", "--debug", action="store_const", const=True, help="log at debug level"
    )
    parser.add_argument("-v", "--version", action="version", version=f"ketchd {ketch.__version__}")
    return parser


def _parse_bool(text: str) -> bool:
    """Parse a flag value the way Go's strconv.ParseBool does for dockerd's flags."""
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: expected true or false")


def socket_path(host: str) -> Path:
    """Return the socket path of a ``unix:///path`` host, or raise InvalidArgument."""
    scheme, separator, path = host.partition("://")
    if not separator or scheme != "unix" or not path.startswith("/"):
        raise InvalidArgument(
            f"invalid host {host!r}: expected unix:///absolute/path or tcp://address:port"
        )
    return Path(path)


def tcp_address(host: str) -> tuple[str, int]:
    """Return ``(address, port)`` of a ``tcp://address:port`` host."""
    address, _, port = host.removeprefix("tcp://").rstrip("/").rpartition(":")
    if not address or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"invalid host {host!r}: expected tcp://address:port")
    return address.strip("[]"), int(port)


def _check_tcp_security(config: DaemonConfig) -> None:
    """Require TLS client verification for TCP, unless insecure TCP was asked for."""
    for host in config.hosts:
        if not host.startswith("tcp://"):
            continue
        tcp_address(host)
        if config.tls_verify:
            missing = [
                flag
                for flag, value in (
                    ("--tlscacert", config.tls_ca),
                    ("--tlscert", config.tls_cert),
                    ("--tlskey", config.tls_key),
                )
                if not value
            ]
            if missing:
                raise InvalidArgument(
                    f"invalid host {host!r}: --tlsverify needs {', '.join(missing)}"
                )
        elif config.insecure_tcp:
            logger.warning(
                "serving %s without TLS: anyone who can reach it controls ketchd and the host",
                host,
            )
        else:
            raise InvalidArgument(
                f"invalid host {host!r}: TCP needs TLS client verification (--tlsverify with "
                "--tlscacert, --tlscert and --tlskey) or an explicit --insecure-tcp"
            )


def load_config_file(path: Path, required: bool) -> dict[str, Any]:
    """Read daemon.json; an absent file gives {} unless ``required``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise InvalidArgument(f"configuration file {path} does not exist") from None
        return {}
    except OSError as error:
        raise InvalidArgument(f"cannot read configuration file {path}: {error.strerror}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(
            f"invalid JSON in configuration file {path} at line {error.lineno}, "
            f"column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(values, dict):
        raise InvalidArgument(f"configuration file {path} must contain a JSON object")
    _check_file_values(path, values)
    return values


def _check_file_values(path: Path, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if key not in FILE_KEYS:
            raise InvalidArgument(
                f"unknown key {key!r} in configuration file {path}; "
                f"ketchd supports {', '.join(FILE_KEYS)}"
            )
        expected = FILE_KEYS[key][1]
        valid = isinstance(value, expected)
        if expected is list:
            valid = valid and all(isinstance(item, str) for item in value)
        if expected is dict and key == "default-ulimits":
            valid = valid and all(isinstance(item, dict) for item in value.values())
        elif expected is dict:
            valid = valid and all(isinstance(item, str) for item in value.values())
        if not valid:
            kind = {
                str: "a string",
                list: "a list of strings",
                bool: "true or false",
                dict: "an object of strings",
            }[expected]
            raise InvalidArgument(f"invalid {key!r} in configuration file {path}: expected {kind}")


def _check_mirror(url: str) -> str:
    scheme = url.partition("://")[0]
    if scheme not in ("http", "https") or "://" not in url or not url.partition("://")[2]:
        raise InvalidArgument(
            f"invalid registry mirror {url!r}: expected an http:// or https:// URL"
        )
    return url.rstrip("/")


def _check_dns_server(server: str) -> str:
    try:
        return str(ipaddress.ip_address(server))
    except ValueError:
        raise InvalidArgument(f"invalid dns {server!r}: expected an IP address") from None


def _check_dns_word(word: str, key: str) -> str:
    # A word with white space would add lines to containers' resolv.conf files.
    if not word or any(character.isspace() for character in word):
        raise InvalidArgument(f"invalid {key} {word!r}: expected a value without white space")
    return word


def _log_opts(value: dict[str, str] | list[str]) -> dict[str, str]:
    """Return log options from daemon.json's object or from ``--log-opt KEY=VALUE`` flags."""
    if isinstance(value, dict):
        return dict(value)
    opts = {}
    for item in value:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise InvalidArgument(f"invalid --log-opt {item!r}: expected KEY=VALUE")
        opts[key] = text
    return opts


def _ulimits(value: dict[str, Any] | list[str]) -> dict[str, dict[str, Any]]:
    """Return ulimits by name from daemon.json's object or ``--default-ulimit`` flags."""
    if isinstance(value, dict):
        return {name: dict(limit) for name, limit in value.items()}
    ulimits = {}
    for item in value:
        name, separator, limits = item.partition("=")
        soft, _, hard = limits.partition(":")
        if (
            not separator
            or not soft.lstrip("-").isdigit()
            or not (hard or soft).lstrip("-").isdigit()
        ):
            raise InvalidArgument(f"invalid --default-ulimit {item!r}: expected NAME=SOFT[:HARD]")
        ulimits[name] = {"Name": name, "Soft": int(soft), "Hard": int(hard or soft)}
    return ulimits


def load_config(argv: list[str] | None = None) -> DaemonConfig:
    """Combine flags and the configuration file into a checked DaemonConfig."""
    arguments = build_parser().parse_args(argv)
    explicit_file = arguments.config_file is not None
    path = Path(arguments.config_file) if explicit_file else DEFAULT_CONFIG_FILE
    file_values = load_config_file(path, required=explicit_file)

    merged: dict[str, Any] = {}
    conflicts = []
    for key, (destination, _) in FILE_KEYS.items():
        flag_value = getattr(arguments, destination)
        if flag_value is not None and key in file_values:
            conflicts.append(f"{key}: (from flag: {flag_value}, from file: {file_values[key]})")
        merged[destination] = flag_value if flag_value is not None else file_values.get(key)
    if conflicts:
        raise InvalidArgument(
            "the following directives are specified both as a flag and in the configuration "
            f"file {path}: {', '.join(conflicts)}"
        )

    config = DaemonConfig()
    if merged["data_root"]:
        config.data_root = Path(merged["data_root"]).absolute()
    if merged["exec_root"]:
        config.exec_root = Path(merged["exec_root"]).absolute()
    if merged["hosts"]:
        config.hosts = list(merged["hosts"])
    config.registry_mirrors = [_check_mirror(url) for url in merged["registry_mirrors"] or []]
    config.insecure_registries = list(merged["insecure_registries"] or [])
    config.debug = bool(merged["debug"])
    config.init = bool(merged["init"])
    config.default_ulimits = clamp_default_ulimits(_ulimits(merged["default_ulimits"] or {}))
    if merged["live_restore"] is False:
        logger.warning("live-restore false is ignored: containers always outlive ketchd")
    config.init_path = merged["init_path"] or None
    config.log_driver = check_log_driver(merged["log_driver"] or "", "log-driver")
    if merged["log_opts"] is not None:
        config.log_opts = check_log_opts(_log_opts(merged["log_opts"]), "log-opts")
    config.tls_verify = bool(merged["tls_verify"])
    config.tls_ca = merged["tls_ca"] or None
    config.tls_cert = merged["tls_cert"] or None
    config.tls_key = merged["tls_key"] or None
    config.insecure_tcp = bool(merged["insecure_tcp"])
    config.dns = [_check_dns_server(server) for server in merged["dns"] or []]
    config.dns_search = [_check_dns_word(word, "dns-search") for word in merged["dns_search"] or []]
    config.dns_options = [_check_dns_word(word, "dns-opts") for word in merged["dns_options"] or []]
    config.userland_proxy = merged["userland_proxy"] is not False
    config.bridge = check_bridge_name(merged["bridge"]) if merged["bridge"] else None
    config.socket_paths()  # checks every unix host
    _check_tcp_security(config)
    return config
