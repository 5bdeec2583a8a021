"""A container's bundle: ``config.json`` and the files bind-mounted over /etc.

Layout, inside the container's directory (see ``ketch.engine.store``)::

    bundle/config.json    the OCI spec: build_spec's, with the HostConfig options and init
    hostname, hosts       bind-mounted over /etc/hostname and /etc/hosts (with ExtraHosts)
    resolv.conf           bind-mounted over /etc/resolv.conf (see ``ketch.engine.resolvconf``)

Each file is written to a temporary name and renamed, so a crash leaves a whole file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ketch.engine.hostconfig import HostOptions, apply_host_options, hosts_lines
from ketch.engine.options import CreateOptions
from ketch.engine.resolvconf import ResolvConfRenderer
from ketch.engine.spec import DEFAULT_CAPABILITIES, add_init, build_spec
from ketch.engine.store import ContainerPaths
from ketch.engine.userdb import resolve_user_in_rootfs

HOSTS_FILE = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


def _write_file(path: Path, text: str, mode: int = 0o644) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def write_bundle(
    paths: ContainerPaths,
    container_id: str,
    config: dict[str, Any],
    options: CreateOptions,
    rootfs: Path,
    init_binary: str | None,
    resolv_conf: ResolvConfRenderer | None = None,
) -> None:
    """Write the container's /etc files and bundle/config.json. Without ``resolv_conf``,
    /etc/resolv.conf comes from the host's file alone."""
    user = resolve_user_in_rootfs(config["User"], rootfs)
    renderer = resolv_conf or ResolvConfRenderer()
    resolv_text = renderer.render(options.host, options.network_mode)
    mounts = write_etc_files(paths, container_id, config, options.host, resolv_text)
    spec = build_spec(container_id, config, options, user, str(rootfs), mounts)
    apply_host_options(spec, options.host, DEFAULT_CAPABILITIES)
    if init_binary is not None:
        add_init(spec, init_binary)
    bundle = paths.bundle(container_id)
    bundle.mkdir(mode=0o700)
    _write_file(bundle / "config.json", json.dumps(spec, indent=2), 0o600)


def write_etc_files(
    paths: ContainerPaths,
    container_id: str,
    config: dict[str, Any],
    host: HostOptions,
    resolv_text: str,
) -> list[dict[str, Any]]:
    """Write the container's /etc/hostname, /etc/hosts (with ExtraHosts) and
    /etc/resolv.conf, and return their bind mounts."""
    hostname_path = paths.hostname(container_id)
    hosts_path = paths.hosts(container_id)
    resolv_path = paths.directory(container_id) / "resolv.conf"
    _write_file(hostname_path, config["Hostname"] + "\n")
    _write_file(hosts_path, HOSTS_FILE + hosts_lines(host))
    _write_file(resolv_path, resolv_text)
    files = [
        ("/etc/hostname", hostname_path),
        ("/etc/hosts", hosts_path),
        ("/etc/resolv.conf", resolv_path),
    ]
    return [
        {
            "destination": destination,
            "type": "bind",
            "source": str(source),
            "options": ["rbind", "rprivate"],
        }
        for destination, source in files
    ]
