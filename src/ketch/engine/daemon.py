"""``ketchd``: builds the Engine from its configuration and serves the Engine API.

Start-up, in order: create the data and exec roots, take the pid files
``<exec_root>/ketchd.pid`` and ``<data_root>/ketchd.pid`` (locked, so a second ketchd that
shares either root stops with an error), open ``<data_root>/ketch.db`` (SQLite in WAL
mode), open the image store at ``<data_root>/images``, start the supervisor unless one
responds, reconcile containers with it, then serve each ``-H`` socket (mode 0660, group
``ketch`` when that group exists).

SIGTERM and SIGINT stop serving and close the database. Containers keep running in the
supervisor, and a later ketchd picks up their state and any exits it missed.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ketch
from ketch.engine.config import DEFAULT_DATA_ROOT, DaemonConfig, load_config
from ketch.engine.dnsnames import NameService, attach_name_server
from ketch.engine.engine import Engine
from ketch.engine.networking import ContainerNetworking
from ketch.engine.resolvconf import DnsSettings
from ketch.errors import Conflict, KetchError, SystemFailure
from ketch.linux.malloc import map_large_buffers_separately
from ketch.network.firewall import Firewall
from ketch.network.instance import instance_for

logger = logging.getLogger(__name__)

# The limit of SQLite's page cache for ketchd's connection, in KiB. The container store
# keeps its records in memory, so the cache serves writes and the image store's lookups.
# SQLite's default of 2000 KiB let it grow with the database. A copy of ketchd's database
# with 100 containers has 98 pages of 4 KiB. Reading it in full took SQLite's memory from
# 111 KiB to 393 KiB, and to 203 KiB with this limit. A page not in the cache is read again.
PAGE_CACHE_KIB = 128


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def make_roots(config: DaemonConfig) -> None:
    """Create the data and exec roots, readable by root only beyond traversal."""
    for directory in (config.data_root, config.exec_root):
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o711)
        except OSError as error:
            raise SystemFailure(f"cannot create {directory}: {error.strerror}") from None


class PidFile:
    """A ketchd.pid file, locked with flock for as long as ketchd runs.

    ketchd keeps one in its exec root and one in its data root, so that a second ketchd
    sharing either root with a running one stops at start. Two daemons on one data root
    would each take the other's containers for exited and release their addresses.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise Conflict(
                f"ketchd is already running with pid {other} (pid file {path}); stop it first"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)


def open_database(path: Path) -> sqlite3.Connection:
    """Open the engine's SQLite database in WAL mode, in autocommit mode.

    Autocommit because every writer (the image store, the container store) runs its own
    explicit transactions.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode keeps every commit atomic; a power loss may lose the last ones.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
    os.chmod(path, 0o600)
    return db


async def _serve_all(engine: Engine, paths: list[Path]) -> list[Any]:
    from ketch.api.server import serve

    servers = []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        # serve() gives the socket mode 0660 and group "ketch" when that group exists.
        servers.append(await serve(engine, path))
    return servers


async def _serve_tcp(engine: Engine, config: DaemonConfig) -> list[Any]:
    from ketch.api.server import serve_tcp, tls_context

    context = None
    if config.tls_verify:
        # load_config has checked that all three files are set.
        context = tls_context(config.tls_ca or "", config.tls_cert or "", config.tls_key or "")
    return [
        await serve_tcp(engine, address, port, context) for address, port in config.tcp_addresses()
    ]


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    return stop


@dataclass
class DaemonParts:
    """The objects that ketchd builds at start, before any of them runs."""

    engine: Engine
    networking: ContainerNetworking
    firewall: Firewall
    name_service: NameService


def build_daemon(config: DaemonConfig, db: sqlite3.Connection) -> DaemonParts:
    """Build the engine with its image store, supervisor client, networking, firewall and
    name server, on the running event loop. This makes no process, listener, link or rule:
    ``run`` starts them."""
    from ketch.images import ImageStore
    from ketch.supervisor.client import SupervisorClient, ensure_supervisor

    images = ImageStore(
        config.data_root / "images",
        db,
        mirrors=config.registry_mirrors,
        insecure_registries=config.insecure_registries,
    )
    engine = Engine(
        data_root=config.data_root,
        db=db,
        images=images,
        supervisor=SupervisorClient(config.exec_root),
        ensure_supervisor=lambda: ensure_supervisor(config.exec_root),
        registry_mirrors=config.registry_mirrors,
        insecure_registries=config.insecure_registries,
        debug=config.debug,
        default_log_opts=config.log_opts,
    )
    engine.containers.default_init = config.init
    engine.containers.init_path = config.init_path
    engine.containers.default_ulimits = config.default_ulimits
    instance = instance_for(config.data_root, DEFAULT_DATA_ROOT, config.bridge)
    networking = ContainerNetworking(db, config.exec_root, instance)
    engine.containers.networking = networking
    firewall = Firewall(table_name=instance.table_name)
    networking.services.append(firewall)
    if not config.userland_proxy:
        engine.ports.kernel_rules = firewall
    dns_settings = DnsSettings(
        servers=tuple(config.dns),
        host_resolv_conf=config.host_resolv_conf,
        search=tuple(config.dns_search),
        options=tuple(config.dns_options),
    )
    name_service = attach_name_server(engine, networking, dns_settings)
    return DaemonParts(engine, networking, firewall, name_service)


async def run(config: DaemonConfig) -> None:
    """Run ketchd until SIGTERM or SIGINT."""
    from ketch.supervisor.client import ensure_supervisor

    make_roots(config)
    pid_file = PidFile(config.exec_root / "ketchd.pid")
    try:
        data_pid_file = PidFile(config.data_root / "ketchd.pid")
    except Conflict:
        pid_file.release()
        raise
    db = open_database(config.data_root / "ketch.db")
    parts = None
    servers: list[Any] = []
    try:
        parts = build_daemon(config, db)
        await ensure_supervisor(config.exec_root)
        engine, networking, firewall = parts.engine, parts.networking, parts.firewall
        stop = _stop_event()
        await engine.start()
        await networking.remove_stale(engine.store.ids())
        await firewall.reconcile()
        await networking.bring_up_networks()
        servers = await _serve_all(engine, config.socket_paths())
        servers += await _serve_tcp(engine, config)
        logger.info("ketchd %s ready (pid %d)", ketch.__version__, os.getpid())
        await stop.wait()
        logger.info("shutting down; containers keep running in the supervisor")
    finally:
        for server in servers:
            server.close()
        for path in config.socket_paths() if servers else []:
            path.unlink(missing_ok=True)
        if parts is not None:
            await parts.name_service.close()
            await parts.engine.close()
        db.close()
        data_pid_file.release()
        pid_file.release()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ketchd``; exits 1 with one error line when it cannot run."""
    map_large_buffers_separately()
    try:
        config = load_config(argv)
    except KetchError as error:
        print(f"ketchd: {error}", file=sys.stderr)
        sys.exit(1)
    setup_logging(config.debug)
    try:
        asyncio.run(run(config))
    except KetchError as error:
        logger.error("%s", error)
        sys.exit(1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
