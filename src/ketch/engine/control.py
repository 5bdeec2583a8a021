"""Container operations beside the life cycle in ``containers``: pause and unpause,
restart, rename, update of resources, and prune.

Each operation checks the container's state first and raises docker's error for a
container in the wrong state (Conflict, HTTP 409), so a failed request changes nothing.
Each successful one publishes its event (pause, unpause, restart, rename, update,
destroy through remove).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ketch.engine import timestamps
from ketch.engine.containers import ContainerService
from ketch.engine.names import normalize_name
from ketch.engine.options import parse_resources, parse_restart_policy
from ketch.engine.spec import resources_spec
from ketch.engine.store import Container, ContainerPaths, ContainerStore
from ketch.errors import Conflict, InvalidArgument, KetchError

logger = logging.getLogger(__name__)

# Update fields that change a cgroup limit; zero (or absent) leaves a value unchanged, as
# in dockerd. PidsLimit is the exception: present and 0 or -1 removes the limit.
RESOURCE_FIELDS = (
    "Memory", "MemorySwap", "CpuShares", "CpuPeriod", "CpuQuota", "NanoCpus", "CpusetCpus",
    "CpusetMems",
)  # fmt: skip

# Update fields dockerd takes that ketch does not implement; a non-zero value is rejected.
UNSUPPORTED_UPDATE_FIELDS = (
    "MemoryReservation", "KernelMemory", "KernelMemoryTCP", "BlkioWeight",
    "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpuCount",
    "CpuPercent", "OomKillDisable", "Devices", "DeviceRequests", "DeviceCgroupRules",
    "IOMaximumIOps", "IOMaximumBandwidth", "MemorySwappiness",
)  # fmt: skip


class ContainerControl:
    """Pause, unpause, restart, rename, update and prune over a ContainerService."""

    def __init__(
        self, service: ContainerService, store: ContainerStore, paths: ContainerPaths
    ) -> None:
        self._service = service
        self._store = store
        self._paths = paths

    # Pause

    async def pause(self, reference: str) -> None:
        container = self._service.resolve(reference)
        if not container.running:
            raise Conflict(f"Container {container.id} is not running")
        if container.state.paused:
            raise Conflict(f"Container {container.id} is already paused")
        await self._service.supervisor.pause(container.id)
        container.state.paused = True
        self._store.save(container)
        self._service.emit(container, "pause")
        logger.info("paused container %s", container.id)

    async def unpause(self, reference: str) -> None:
        container = self._service.resolve(reference)
        if not container.running or not container.state.paused:
            raise Conflict(f"Container {container.id} is not paused")
        await self._service.supervisor.resume(container.id)
        container.state.paused = False
        self._store.save(container)
        self._service.emit(container, "unpause")
        logger.info("unpaused container %s", container.id)

    # Restart

    async def restart(
        self, reference: str, timeout: int | None = None, signal_name: str | None = None
    ) -> None:
        """Stop the container if it runs, then start it again."""
        container = self._service.resolve(reference)
        if container.running:
            await self._service.stop(container.id, timeout, signal_name)
        await self._service.start(container.id)
        self._service.emit(container, "restart")

    # Rename

    def rename(self, reference: str, new_name: str) -> None:
        container = self._service.resolve(reference)
        if not new_name:
            raise InvalidArgument("Neither old nor new names may be empty")
        stored = normalize_name(new_name)
        if stored == container.name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        owner = self._store.by_name(stored)
        if owner is not None or self._service.name_reserved(stored):
            owner_id = owner.id if owner is not None else "(being created)"
            raise Conflict(
                f'Conflict. The container name "{stored}" is already in use by container '
                f'"{owner_id}". You have to remove (or rename) that container to be able to '
                "reuse that name."
            )
        old_name = container.name
        container.name = stored
        self._store.save(container)
        self._service.emit(container, "rename", oldName=old_name)
        logger.info("renamed container %s from %s to %s", container.id, old_name, stored)

    # Update

    async def update(self, reference: str, body: Any) -> dict[str, Any]:
        """Apply an update body (docker's UpdateConfig); return ``{"Warnings": [...]}``."""
        if not isinstance(body, dict):
            raise InvalidArgument("invalid update body: expected a JSON object")
        container = self._service.resolve(reference)
        if container.state.removing:
            raise Conflict(f"cannot update container {container.id}: it is being removed")
        _reject_unsupported(body)

        host_config = dict(container.host_config)
        for key in RESOURCE_FIELDS:
            if body.get(key):
                host_config[key] = body[key]
        if body.get("PidsLimit") is not None:
            host_config["PidsLimit"] = body["PidsLimit"]
        if body.get("RestartPolicy") is not None:
            policy = parse_restart_policy({"RestartPolicy": body["RestartPolicy"]}, "")
            if policy["Name"] != "no" and container.auto_remove:
                raise Conflict(
                    "Restart policy cannot be updated because AutoRemove is enabled for the "
                    "container"
                )
            host_config["RestartPolicy"] = policy

        options = parse_resources(host_config, "update body")
        resources = resources_spec(options)
        if "PidsLimit" in body and not options.pids_limit:
            resources["pids"] = {"limit": 0}  # 0 writes "max": the limit is removed
        if container.running:
            await self._service.supervisor.update(container.id, resources)
        self._write_bundle_resources(container, resources)

        host_config["PidsLimit"] = options.pids_limit
        container.host_config = host_config
        self._store.save(container)
        self._service.emit(container, "update")
        return {"Warnings": options.warnings}

    def _write_bundle_resources(self, container: Container, resources: dict[str, Any]) -> None:
        """Put the new limits into config.json too, so the next start keeps them."""
        path = self._paths.bundle(container.id) / "config.json"
        spec = json.loads(path.read_text())
        linux_resources = spec.setdefault("linux", {}).setdefault("resources", {})
        for key, value in resources.items():
            if key == "pids" and not value.get("limit"):
                linux_resources.pop("pids", None)
            else:
                linux_resources[key] = value
        _replace_file(path, json.dumps(spec, indent=2))

    # Prune

    async def prune(self, filters: dict[str, list[str]]) -> dict[str, Any]:
        """Remove stopped containers that pass ``until`` and ``label`` filters."""
        until = _prune_until(filters)
        labels = filters.get("label", [])
        negative_labels = filters.get("label!", [])
        unknown = sorted(set(filters) - {"until", "label", "label!"})
        if unknown:
            raise InvalidArgument(
                f"invalid filter {unknown[0]!r}: container prune supports until, label, label!"
            )
        deleted, reclaimed = [], 0
        for container in self._service.all():
            if container.running or container.state.removing:
                continue
            if until is not None and (timestamps.to_epoch(container.created) or 0) >= until:
                continue
            container_labels = container.config.get("Labels") or {}
            if not all(_has_label(container_labels, label) for label in labels):
                continue
            if any(_has_label(container_labels, label) for label in negative_labels):
                continue
            size = writable_layer_size(container.rootfs)
            try:
                await self._service.remove(container.id)
            except KetchError as error:
                logger.warning("prune could not remove container %s: %s", container.id, error)
                continue
            deleted.append(container.id)
            reclaimed += size
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _reject_unsupported(body: dict[str, Any]) -> None:
    for key in UNSUPPORTED_UPDATE_FIELDS:
        if body.get(key):
            raise InvalidArgument(f"invalid update body: {key} is not supported by ketch")


def _prune_until(filters: dict[str, list[str]]) -> float | None:
    values = filters.get("until", [])
    if not values:
        return None
    value = values[-1]
    epoch = timestamps.to_epoch(value)
    if epoch is not None:
        return epoch
    try:
        return float(value)
    except ValueError:
        raise InvalidArgument(
            f"invalid filter 'until={value}': expected a Unix time or an RFC 3339 timestamp"
        ) from None


def _has_label(labels: dict[str, str], filter_value: str) -> bool:
    key, has_value, expected = filter_value.partition("=")
    return key in labels and (not has_value or labels[key] == expected)


def writable_layer_size(rootfs: str) -> int:
    """Return the bytes a container wrote to its rootfs (docker's SizeRw).

    Over overlayfs that is what the snapshotter keeps beside the ``merged`` mount (the
    upper and work directories). For a copied rootfs it is the whole copy.
    """
    merged = Path(rootfs)
    # A stopped container's overlayfs rootfs is unmounted but keeps its "upper" directory.
    if not os.path.ismount(merged) and not (merged.parent / "upper").is_dir():
        return _directory_size(merged)
    try:
        siblings = [entry for entry in merged.parent.iterdir() if entry != merged]
    except OSError:
        return 0
    return sum(_directory_size(entry) for entry in siblings if entry.is_dir())


def _directory_size(path: Path) -> int:
    """Return the bytes of the files under ``path``, without following links."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


def _replace_file(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
