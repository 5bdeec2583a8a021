"""Container creation: check the create body, claim the name, mount the rootfs, write the
bundle and insert the row, or leave nothing behind when a step fails.

``ContainerCreation`` is mixed into ``ContainerService`` (engine/containers.py), which owns
the state used here.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ketch.engine import timestamps
from ketch.engine.bundles import write_bundle
from ketch.engine.interfaces import ImageSource
from ketch.engine.names import generate_id, generate_name, normalize_name
from ketch.engine.networking import BRIDGE_MODES, NAMESPACE_ONLY_MODES, ContainerNetworking
from ketch.engine.options import CreateOptions, parse_create_body
from ketch.engine.ports import PublishedPorts
from ketch.engine.resolvconf import ResolvConfRenderer
from ketch.engine.spec import find_init_binary, merge_config
from ketch.engine.store import Container, ContainerPaths, ContainerStore
from ketch.engine.views import host_config_view
from ketch.errors import Conflict
from ketch.network.firewall import PortRule, check_ipv4_host_ip
from ketch.network.ports import check_network_mode, requested_bindings

logger = logging.getLogger(__name__)

BRIDGE_WARNING = (
    "bridge networking is not implemented yet: the container has only a loopback interface"
)


class ContainerCreation:
    """The create step of ``ContainerService``."""

    _store: ContainerStore
    _paths: ContainerPaths
    _images: ImageSource
    _default_log_opts: dict[str, str]
    _reserved_names: set[str]
    networking: ContainerNetworking | None
    ports: PublishedPorts | None
    volumes: Any
    resolv_conf: ResolvConfRenderer
    default_init: bool
    default_ulimits: list[dict[str, Any]]
    init_path: str | None

    async def create(self, body: Any, name: str | None) -> dict[str, Any]:
        """Create a container from a create body and return ``{"Id", "Warnings"}``."""
        options = parse_create_body(body)
        port_warnings = check_network_mode(
            options.network_mode, options.raw_host_config, options.exposed_ports
        )
        self._check_kernel_forwarding(options)

        planned = {}
        if self.networking is not None:
            planned = await self.networking.plan(options, body, self.resolve)
        if not options.log_opts:
            options.log_opts = dict(self._default_log_opts)

        stored_name = self._claim_name(name)
        try:
            image = self._images.get(options.image)
            container_id = generate_id(self._store.ids())
            hostname = options.hostname or container_id[:12]
            config = merge_config(options, dict(image.config or {}), hostname)
            container = self._materialize(container_id, stored_name, image, options, config)
            if self.volumes is not None:
                await self.volumes.populate(container, self._remove)
        finally:
            self._reserved_names.discard(stored_name)

        if planned:
            container.network_endpoints = planned
            self._store.save(container)

        warnings = [*options.warnings, *port_warnings]
        if self.networking is None and options.network_mode in BRIDGE_MODES:
            warnings.append(BRIDGE_WARNING)
        self.emit(container, "create")
        logger.info("created container %s (%s) from %s", container.id, stored_name, options.image)
        return {"Id": container.id, "Warnings": warnings}

    def _check_kernel_forwarding(self, options: CreateOptions) -> None:
        """Raise InvalidArgument for a port published on an IPv6 host address when the
        firewall's dnat rules, not proxies, forward published ports.

        The start would fail on it anyway (``Firewall.set_port_rules`` checks again), so
        the create rejects it before making anything.
        """
        if self.ports is None or self.ports.kernel_rules is None:
            return
        if options.network_mode in NAMESPACE_ONLY_MODES:
            return  # no address of its own, so the start makes no dnat rule
        requests = requested_bindings(options.raw_host_config, options.exposed_ports)
        for request in requests:
            # Only the protocol, ports and host address are known before the start, and
            # only they appear in the message.
            rule = PortRule(
                protocol=request.protocol,
                host_ip=request.host_ip,
                host_port=request.host_low,
                container_ip="",
                container_port=request.container_port,
                network_id="",
            )
            check_ipv4_host_ip(rule)

    def _claim_name(self, name: str | None) -> str:
        names_in_use = self._store.names() | self._reserved_names
        stored_name = normalize_name(name) if name else generate_name(names_in_use)
        owner = self._store.by_name(stored_name)
        if owner is not None or stored_name in self._reserved_names:
            owner_id = owner.id if owner is not None else "(being created)"
            raise Conflict(
                f'Conflict. The container name "{stored_name}" is already in use by container '
                f'"{owner_id}". You have to remove (or rename) that container to be able to '
                "reuse that name."
            )
        self._reserved_names.add(stored_name)
        return stored_name

    def _materialize(
        self,
        container_id: str,
        name: str,
        image: Any,
        options: CreateOptions,
        config: dict[str, Any],
    ) -> Container:
        """Make the container's rootfs, files and row, or leave nothing if any step fails."""
        directory = self._paths.directory(container_id)
        directory.mkdir(parents=True, mode=0o710)
        try:
            rootfs = Path(self._images.prepare_rootfs(container_id, image))
            if not options.host.ulimits:
                options.host.ulimits = list(self.default_ulimits)
            wants_init = options.init if options.init is not None else self.default_init
            init_binary = find_init_binary(self.init_path) if wants_init else None
            if self.networking is not None:
                namespace = self.networking.namespace_path(container_id, options.network_mode)
                options.network_namespace = str(namespace) if namespace else None
            if self.volumes is not None:
                self.volumes.attach(container_id, options, config, rootfs, self.resolve)
            write_bundle(
                self._paths, container_id, config, options, rootfs, init_binary, self.resolv_conf
            )
            container = Container(
                id=container_id,
                name=name,
                created=timestamps.now(),
                image_id=image.id,
                config=config,
                host_config=host_config_view(options),
                rootfs=str(rootfs),
            )
            self._store.add(container)
            return container
        except BaseException:
            if self.volumes is not None:
                self.volumes.detach(container_id, remove_anonymous=True)
            self._release_rootfs(container_id)
            shutil.rmtree(directory, ignore_errors=True)
            raise
