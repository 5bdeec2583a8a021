"""Docker-shaped JSON for the Engine API: container inspect and list items, image summary
and inspect, ``/version`` and ``/info``.

Field names and value forms follow the Engine API (v1.41 to v1.45), because clients such
as the docker CLI and docker-py read them by name. Fields for features ketch lacks are
present with docker's empty values rather than left out, since clients index some of
them without checking.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import ketch
from ketch.engine import timestamps
from ketch.engine.hostconfig import PROPAGATIONS, host_config_fields, parse_mount_options
from ketch.engine.options import CreateOptions
from ketch.engine.store import Container, ContainerPaths
from ketch.engine.volumes import LOCAL_DRIVER

# The Engine API versions ketchd serves. ketch.api reports the same values in its headers.
API_VERSION = "1.45"
MIN_API_VERSION = "1.24"

_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def go_arch() -> str:
    """Return the machine's architecture in Go's (and so OCI's) naming."""
    machine = platform.machine()
    return _GO_ARCH.get(machine, machine)


# Containers


def host_config_view(options: CreateOptions) -> dict[str, Any]:
    """Return the container's HostConfig as inspect shows it: set values and defaults."""
    return {
        "NetworkMode": options.network_mode,
        "AutoRemove": options.auto_remove,
        "Init": options.init,
        "Memory": options.memory,
        "MemorySwap": options.memory_swap,
        "PidsLimit": options.pids_limit,
        "ReadonlyRootfs": options.readonly_rootfs,
        "RestartPolicy": dict(options.restart_policy),
        "LogConfig": {"Type": "json-file", "Config": dict(options.log_opts)},
        "Binds": None,
        "PortBindings": options.raw_host_config.get("PortBindings") or {},
        "Privileged": False,
        "PublishAllPorts": bool(options.raw_host_config.get("PublishAllPorts")),
        "CapAdd": None,
        "CapDrop": None,
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": None,
        "IpcMode": "private",
        "PidMode": "",
        "UTSMode": "",
        "UsernsMode": "",
        "CgroupnsMode": "host",
        "ShmSize": 67108864,
        "Runtime": "ketch",
        "Isolation": "",
        "CpuShares": options.cpu_shares,
        "NanoCpus": options.nano_cpus,
        "CpuPeriod": options.cpu_period,
        "CpuQuota": options.cpu_quota,
        "CpusetCpus": options.cpuset_cpus,
        "CpusetMems": options.cpuset_mems,
        "Devices": [],
        "Ulimits": None,
        "MaskedPaths": None,
        "ReadonlyPaths": None,
        **host_config_fields(options.raw_host_config, options.host),
    }


def mount_points(host_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Return inspect's Mounts: the container's binds and tmpfs mounts."""
    points = []
    for mount in parse_mount_options(host_config):
        if mount["type"] == "volume":
            continue  # the volume store records these
        options = mount["options"]
        propagation = next((o for o in options if o in PROPAGATIONS), "")
        points.append(
            {
                "Type": mount["type"],
                "Source": mount["source"] if mount["type"] == "bind" else "",
                "Destination": mount["destination"],
                "Mode": "ro" if "ro" in options else "",
                "RW": "ro" not in options,
                "Propagation": propagation,
            }
        )
    return points


def command_line(container: Container) -> list[str]:
    """Return the container's argv: Entrypoint followed by Cmd."""
    return list(container.config.get("Entrypoint") or []) + list(container.config.get("Cmd") or [])


def status_name(container: Container) -> str:
    if container.state.removing:
        return "removing"
    if container.state.restarting:
        return "restarting"
    if container.running and container.state.paused:
        return "paused"
    return container.state.status


def state_view(container: Container) -> dict[str, Any]:
    state = container.state
    return {
        "Status": status_name(container),
        "Running": container.running,
        "Paused": container.running and state.paused,
        "Restarting": state.restarting,
        # Limitation: OOM kills are not detected yet, so OOMKilled stays false.
        "OOMKilled": state.oom_killed,
        "Dead": False,
        "Pid": state.pid,
        "ExitCode": state.exit_code,
        "Error": state.error,
        "StartedAt": state.started_at,
        "FinishedAt": state.finished_at,
        **({"Health": state.health} if state.health is not None else {}),
    }


def _networks(container: Container) -> dict[str, Any]:
    mode = container.host_config.get("NetworkMode", "default")
    if mode.startswith("container:"):
        return {}  # the container has the namespace, and the endpoints, of another
    names = list(container.network_endpoints) or ["bridge" if mode == "default" else mode]
    return {name: _endpoint_view(container, name) for name in names}


def _endpoint_view(container: Container, name: str) -> dict[str, Any]:
    endpoint = {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "",
        "DriverOpts": None,
    }
    connected = container.network_endpoints.get(name, {})
    endpoint.update({key: value for key, value in connected.items() if key in endpoint})
    return endpoint


def network_settings(container: Container) -> dict[str, Any]:
    # Docker repeats the default bridge endpoint's fields at the top level.
    bridge = container.network_endpoints.get("bridge", {})
    return {
        "Bridge": "",
        "SandboxID": "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": {},
        "SandboxKey": bridge.get("SandboxKey", ""),
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": bridge.get("EndpointID", ""),
        "Gateway": bridge.get("Gateway", ""),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": bridge.get("IPAddress", ""),
        "IPPrefixLen": bridge.get("IPPrefixLen", 0),
        "IPv6Gateway": "",
        "MacAddress": bridge.get("MacAddress", ""),
        "Networks": _networks(container),
    }


def inspect_container(container: Container, paths: ContainerPaths) -> dict[str, Any]:
    """Return ``GET /containers/{id}/json`` for the container."""
    argv = command_line(container)
    return {
        "Id": container.id,
        "Created": container.created,
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": state_view(container),
        "Image": container.image_id,
        "ResolvConfPath": "",
        "HostnamePath": str(paths.hostname(container.id)),
        "HostsPath": str(paths.hosts(container.id)),
        "LogPath": str(paths.log(container.id)),
        "Name": container.name,
        "RestartCount": container.restart_count,
        "Driver": "overlay2",
        "Platform": container.platform,
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": dict(container.host_config),
        "GraphDriver": {"Name": "overlay2", "Data": {"MergedDir": container.rootfs}},
        "Mounts": mount_points(container.host_config),
        "Config": dict(container.config),
        "NetworkSettings": network_settings(container),
    }


def status_text(container: Container, now: float | None = None) -> str:
    """Return the STATUS column of ``docker ps``: "Up 3 seconds", "Exited (0) 2 hours ago"."""
    now = time.time() if now is None else now
    state = container.state
    if state.removing:
        return "Removal In Progress"
    if state.restarting:
        finished = timestamps.to_epoch(state.finished_at) or now
        ago = timestamps.human_duration(max(0.0, now - finished))
        return f"Restarting ({state.exit_code}) {ago} ago"
    if state.status == "running":
        started = timestamps.to_epoch(state.started_at) or now
        text = f"Up {timestamps.human_duration(max(0.0, now - started))}"
        if state.paused:
            return text + " (Paused)"
        health = (state.health or {}).get("Status")
        if health == "starting":
            return text + " (health: starting)"
        return f"{text} ({health})" if health else text
    if state.status == "exited":
        finished = timestamps.to_epoch(state.finished_at)
        if finished is None:
            return f"Exited ({state.exit_code})"
        ago = timestamps.human_duration(max(0.0, now - finished))
        return f"Exited ({state.exit_code}) {ago} ago"
    return "Created"


def container_summary(container: Container, now: float | None = None) -> dict[str, Any]:
    """Return one item of ``GET /containers/json``."""
    created = timestamps.to_epoch(container.created) or 0
    return {
        "Id": container.id,
        "Names": [container.name],
        "Image": container.config.get("Image", ""),
        "ImageID": container.image_id,
        "Command": " ".join(command_line(container)),
        "Created": int(created),
        "Ports": [],
        "Labels": dict(container.config.get("Labels") or {}),
        "State": status_name(container),
        "Status": status_text(container, now),
        "HostConfig": {"NetworkMode": container.host_config.get("NetworkMode", "default")},
        "NetworkSettings": {"Networks": _networks(container)},
        "Mounts": mount_points(container.host_config),
    }


# Images


def image_summary(image: Any, containers: int = -1) -> dict[str, Any]:
    """Return one item of ``GET /images/json`` for an ``ketch.images.Image``."""
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests),
        "Created": int(timestamps.to_epoch(image.created) or 0),
        "Size": image.size,
        "SharedSize": -1,
        "VirtualSize": image.size,
        "Labels": dict((image.config or {}).get("Labels") or {}),
        "Containers": containers,
    }


def inspect_image(image: Any) -> dict[str, Any]:
    """Return ``GET /images/{name}/json`` for an ``ketch.images.Image``."""
    return {
        "Id": image.id,
        "RepoTags": list(image.repo_tags),
        "RepoDigests": list(image.repo_digests),
        "Parent": "",
        "Comment": image.comment,
        "Created": image.created,
        "Container": "",
        "ContainerConfig": {},
        "DockerVersion": "",
        "Author": image.author,
        "Config": dict(image.config or {}),
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {"Name": "overlay2", "Data": {}},
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
        "Metadata": {"LastTagTime": timestamps.ZERO_TIME},
    }


# System


def version_view() -> dict[str, Any]:
    """Return ``GET /version``."""
    details = {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": platform.release(),
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "BuildTime": "",
        "Experimental": "false",
    }
    return {
        "Platform": {"Name": "ketch"},
        "Components": [{"Name": "Engine", "Version": ketch.__version__, "Details": details}],
        "Version": ketch.__version__,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": details["GoVersion"],
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": platform.release(),
        "BuildTime": "",
    }


def _os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, value = line.partition("=")
        values[key] = value.strip().strip('"')
    return values


def _mem_total() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cgroup_version() -> str:
    """Return "2" on a unified hierarchy, else "1"."""
    return "2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "1"


def _open_fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def registry_config(mirrors: list[str], insecure_registries: list[str]) -> dict[str, Any]:
    index_configs: dict[str, Any] = {
        "docker.io": {
            "Name": "docker.io",
            "Mirrors": list(mirrors),
            "Secure": True,
            "Official": True,
        }
    }
    for registry in insecure_registries:
        index_configs[registry] = {
            "Name": registry,
            "Mirrors": [],
            "Secure": False,
            "Official": False,
        }
    return {
        "AllowNondistributableArtifactsCIDRs": [],
        "AllowNondistributableArtifactsHostnames": [],
        "InsecureRegistryCIDRs": ["127.0.0.0/8"],
        "IndexConfigs": index_configs,
        "Mirrors": list(mirrors),
    }


# The network drivers /info lists as plugins: bridge for user-defined networks, and host
# and null behind the built-in "host" and "none" networks. dockerd also lists ipvlan,
# macvlan and overlay, which ketch does not implement.
NETWORK_DRIVERS = ("bridge", "host", "null")


def info_view(
    *,
    engine_id: str,
    containers: list[Container],
    image_count: int,
    data_root: Path,
    debug: bool,
    mirrors: list[str],
    insecure_registries: list[str],
    warnings: list[str],
    events_listeners: int = 0,
) -> dict[str, Any]:
    """Return ``GET /info``."""
    os_release = _os_release()
    paused = sum(1 for container in containers if container.running and container.state.paused)
    running = sum(1 for container in containers if container.running) - paused
    return {
        "ID": engine_id,
        "Containers": len(containers),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(containers) - running - paused,
        "Images": image_count,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "overlayfs"]],
        "DockerRootDir": str(data_root),
        "Plugins": {
            "Volume": [LOCAL_DRIVER],
            "Network": list(NETWORK_DRIVERS),
            "Authorization": None,
            "Log": ["json-file"],
        },
        "MemoryLimit": True,
        "SwapLimit": False,
        "KernelMemory": False,
        "KernelMemoryTCP": False,
        "CpuCfsPeriod": False,
        "CpuCfsQuota": False,
        "CPUShares": False,
        "CPUSet": False,
        "PidsLimit": True,
        "OomKillDisable": False,
        "IPv4Forwarding": False,
        "BridgeNfIptables": False,
        "BridgeNfIp6tables": False,
        "Debug": debug,
        "NFd": _open_fd_count(),
        "NGoroutines": 1,
        "SystemTime": timestamps.now(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "NEventsListener": events_listeners,
        "KernelVersion": platform.release(),
        "OperatingSystem": os_release.get("PRETTY_NAME", "Linux"),
        "OSVersion": os_release.get("VERSION_ID", ""),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": _mem_total(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": registry_config(mirrors, insecure_registries),
        "GenericResources": None,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": socket.gethostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": ketch.__version__,
        "Runtimes": {"ketch": {"path": "ketch-runc"}},
        "DefaultRuntime": "ketch",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": True,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": [],
        "Warnings": list(warnings),
    }
