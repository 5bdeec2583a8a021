"""HostConfig options that shape a container's isolation and files, checked and applied
to its OCI spec: Binds, Mounts (bind and tmpfs), Tmpfs, CapAdd, CapDrop, Privileged,
Ulimits, Sysctls, SecurityOpt, ShmSize, ExtraHosts, Dns, DnsSearch and DnsOptions.

:func:`parse_host_options` checks the create body's values (every error names the
field), and :func:`apply_host_options` edits the spec that ``spec.build_spec`` made.
A Binds entry that names a volume, and a Mounts entry of type volume, stay placeholder
mounts of type ``volume`` until ``ketch.engine.volume_mounts`` resolves them at create.
"""

from __future__ import annotations

import copy
import json
import os
import resource
from dataclasses import dataclass, field
from typing import Any

from ketch.engine.host_devices import host_devices, merge_devices
from ketch.engine.seccomp_profile import default_profile
from ketch.engine.volume_mounts import parse_volume_bind, parse_volume_mount
from ketch.errors import InvalidArgument, SystemFailure

PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")

# Sysctls that have a per-namespace value, as docker allows them (net.* only with a
# network namespace of the container's own).
_IPC_SYSCTLS = (
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
)  # fmt: skip

# Python's resource module lacks RLIMIT_LOCKS, which is 10 on Linux.
_RLIMIT_LOCKS = 10

_RLIMITS = {
    "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU, "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE, "locks": _RLIMIT_LOCKS,
    "memlock": resource.RLIMIT_MEMLOCK, "msgqueue": resource.RLIMIT_MSGQUEUE,
    "nice": resource.RLIMIT_NICE, "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC, "rss": resource.RLIMIT_RSS,
    "rtprio": resource.RLIMIT_RTPRIO, "rttime": resource.RLIMIT_RTTIME,
    "sigpending": resource.RLIMIT_SIGPENDING, "stack": resource.RLIMIT_STACK,
}  # fmt: skip


@dataclass
class HostOptions:
    """The checked values; ``mounts`` are OCI mount objects."""

    mounts: list[dict[str, Any]] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    privileged: bool = False
    ulimits: list[dict[str, Any]] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    no_new_privileges: bool = False
    # A profile from SecurityOpt; None with seccomp_unconfined False means the default.
    seccomp: dict[str, Any] | None = None
    seccomp_unconfined: bool = False
    shm_size: int = 0
    extra_hosts: list[tuple[str, str]] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)


def _strings(host_config: dict[str, Any], key: str) -> list[str]:
    value = host_config.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"invalid create body: HostConfig.{key} must be a list of strings")
    return list(value)


def _bind(source: str, target: str, read_only: bool, propagation: str, where: str) -> dict:
    if not source.startswith("/"):
        raise InvalidArgument(
            f"invalid {where}: source {source!r} is not an absolute path; a bind mount takes a "
            "host path, and a volume takes Type volume"
        )
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid {where}: target {target!r} is not an absolute path")
    options = ["rbind", propagation or "rprivate"]
    if read_only:
        options.append("ro")
    return {"destination": target, "type": "bind", "source": source, "options": options}


def _parse_binds(host_config: dict[str, Any]) -> list[dict[str, Any]]:
    mounts = []
    for bind in _strings(host_config, "Binds"):
        volume = parse_volume_bind(bind)
        if volume is not None:
            mounts.append(volume)
            continue
        parts = bind.split(":")
        if len(parts) not in (2, 3):
            raise InvalidArgument(
                f"invalid HostConfig.Binds entry {bind!r}: expected /host/path:/container/path"
                "[:options]"
            )
        read_only, propagation = False, ""
        for option in parts[2].split(",") if len(parts) == 3 else []:
            if option in ("ro", "rw"):
                read_only = option == "ro"
            elif option in PROPAGATIONS:
                propagation = option
            elif option not in ("z", "Z", "nocopy", ""):
                raise InvalidArgument(f"invalid HostConfig.Binds entry {bind!r}: option {option!r}")
        mounts.append(_bind(parts[0], parts[1], read_only, propagation, f"bind {bind!r}"))
    return mounts


def _tmpfs(target: str, options: list[str], where: str) -> dict[str, Any]:
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid {where}: target {target!r} is not an absolute path")
    base = ["nosuid", "nodev", "noexec"]
    return {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": base + options}


def _parse_mounts(host_config: dict[str, Any]) -> list[dict[str, Any]]:
    value = host_config.get("Mounts") or []
    if not isinstance(value, list):
        raise InvalidArgument("invalid create body: HostConfig.Mounts must be a list")
    mounts = []
    for index, mount in enumerate(value):
        where = f"HostConfig.Mounts[{index}]"
        if not isinstance(mount, dict):
            raise InvalidArgument(f"invalid {where}: expected an object")
        kind = mount.get("Type")
        target = mount.get("Target") or ""
        read_only = bool(mount.get("ReadOnly"))
        if kind == "bind":
            propagation = (mount.get("BindOptions") or {}).get("Propagation") or ""
            if propagation and propagation not in PROPAGATIONS:
                raise InvalidArgument(f"invalid {where}: propagation {propagation!r}")
            mounts.append(_bind(mount.get("Source") or "", target, read_only, propagation, where))
        elif kind == "tmpfs":
            tmpfs_options = mount.get("TmpfsOptions") or {}
            options = []
            if tmpfs_options.get("SizeBytes"):
                options.append(f"size={int(tmpfs_options['SizeBytes'])}")
            if tmpfs_options.get("Mode"):
                options.append(f"mode={int(tmpfs_options['Mode']):o}")
            if read_only:
                options.append("ro")
            mounts.append(_tmpfs(target, options, where))
        elif kind == "volume":
            mounts.append(parse_volume_mount(mount, where))
        else:
            raise InvalidArgument(
                f"invalid {where}: mount type {kind!r} is not supported; expected bind, volume "
                "or tmpfs"
            )
    for target, text in (host_config.get("Tmpfs") or {}).items():
        options = [option for option in str(text).split(",") if option]
        mounts.append(_tmpfs(target, options, f"HostConfig.Tmpfs {target!r}"))
    return mounts


def _capability(name: str, key: str) -> str:
    from ketch.runtime.capabilities import CAPABILITIES

    if name.upper() == "ALL":
        return "ALL"
    full = name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper()
    if full not in CAPABILITIES:
        raise InvalidArgument(f"invalid create body: HostConfig.{key}: unknown capability {name!r}")
    return full


def _parse_ulimits(host_config: dict[str, Any]) -> list[dict[str, Any]]:
    ulimits = []
    for index, ulimit in enumerate(host_config.get("Ulimits") or []):
        where = f"HostConfig.Ulimits[{index}]"
        if not isinstance(ulimit, dict) or ulimit.get("Name") not in _RLIMITS:
            raise InvalidArgument(
                f"invalid {where}: expected {{Name, Soft, Hard}} with Name one of "
                f"{', '.join(_RLIMITS)}"
            )
        soft, hard = ulimit.get("Soft"), ulimit.get("Hard")
        if not isinstance(soft, int) or not isinstance(hard, int) or soft > hard:
            raise InvalidArgument(f"invalid {where}: Soft and Hard must be numbers, Soft <= Hard")
        check_host_limit(ulimit["Name"], hard, where)
        ulimits.append({"Name": ulimit["Name"], "Soft": soft, "Hard": hard})
    return ulimits


def check_host_limit(name: str, hard: int, where: str) -> None:
    """Reject a hard limit above the host's, which the runtime could not set without
    CAP_SYS_RESOURCE."""
    _, host_hard = resource.getrlimit(_RLIMITS[name])
    if host_hard != resource.RLIM_INFINITY and (hard < 0 or hard > host_hard):
        raise InvalidArgument(
            f"invalid {where}: the hard limit of {name} ({hard}) is above the host's "
            f"({host_hard}), which ketch cannot raise"
        )


def clamp_default_ulimits(ulimits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Return daemon default-ulimits lowered to the host's hard limits where above them."""
    clamped = []
    for name, limit in ulimits.items():
        if name not in _RLIMITS:
            raise InvalidArgument(f"invalid default-ulimits: unknown ulimit {name!r}")
        _, host_hard = resource.getrlimit(_RLIMITS[name])
        soft, hard = int(limit.get("Soft", 0)), int(limit.get("Hard", 0))
        if host_hard != resource.RLIM_INFINITY:
            hard = min(hard, host_hard)
            soft = min(soft, hard)
        clamped.append({"Name": name, "Soft": soft, "Hard": hard})
    return clamped


def _parse_sysctls(host_config: dict[str, Any], network_mode: str) -> dict[str, str]:
    sysctls = host_config.get("Sysctls") or {}
    if not isinstance(sysctls, dict):
        raise InvalidArgument("invalid create body: HostConfig.Sysctls must be an object")
    for key, value in sysctls.items():
        namespaced = key in _IPC_SYSCTLS or key.startswith(("fs.mqueue.", "net."))
        if not namespaced or not isinstance(value, str):
            raise InvalidArgument(f"sysctl '{key}' is not allowed")
        if key.startswith("net.") and network_mode == "host":
            raise InvalidArgument(f"sysctl '{key}' is not allowed in host network mode")
    return dict(sysctls)


def _parse_security_opt(host_config: dict[str, Any], options: HostOptions) -> None:
    for item in _strings(host_config, "SecurityOpt"):
        key, separator, value = item.partition("=" if "=" in item else ":")
        if item in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            options.no_new_privileges = True
        elif key == "no-new-privileges" and value == "false":
            options.no_new_privileges = False
        elif key == "seccomp" and value == "unconfined":
            options.seccomp = None
            options.seccomp_unconfined = True
        elif key == "seccomp" and value:
            try:
                options.seccomp = _docker_profile_to_oci(json.loads(value))
                options.seccomp_unconfined = False
            except (json.JSONDecodeError, TypeError, KeyError) as error:
                raise InvalidArgument(f"invalid seccomp profile in SecurityOpt: {error}") from None
        elif key in ("label", "apparmor"):
            raise InvalidArgument(f"SecurityOpt {item!r}: {key} is not available on this host")
        else:
            raise InvalidArgument(f"invalid --security-opt: {item!r}")


def _docker_profile_to_oci(profile: dict[str, Any]) -> dict[str, Any]:
    """Turn a docker seccomp profile into an OCI ``linux.seccomp`` object."""
    syscalls = []
    for rule in profile.get("syscalls") or []:
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        entry = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            entry["args"] = rule["args"]
        if rule.get("errnoRet") is not None:
            entry["errnoRet"] = rule["errnoRet"]
        syscalls.append(entry)
    architectures = list(profile.get("architectures") or [])
    for group in profile.get("archMap") or []:
        architectures += [group["architecture"], *group.get("subArchitectures", [])]
    return {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }


def _parse_hosts(host_config: dict[str, Any]) -> list[tuple[str, str]]:
    entries = []
    for item in _strings(host_config, "ExtraHosts"):
        name, separator, address = item.partition(":" if "=" not in item else "=")
        if not separator or not name or not address:
            raise InvalidArgument(f"invalid argument {item!r} for ExtraHosts: expected host:ip")
        if address == "host-gateway":
            raise InvalidArgument("ExtraHosts host-gateway needs bridge networking, not there yet")
        entries.append((name, address.strip("[]")))
    return entries


def create_bind_sources(host_config: dict[str, Any]) -> None:
    """Create the missing host directories of the Binds entries, as dockerd does at start.

    Mounts entries are left alone, because their sources are checked at create.
    """
    for mount in _parse_binds(host_config):
        source = mount["source"]
        # A file source is bound as it is, so only a missing path becomes a directory.
        if mount["type"] != "bind" or os.path.exists(source):
            continue
        try:
            os.makedirs(source, mode=0o755, exist_ok=True)
        except OSError as error:
            raise SystemFailure(
                f"error while creating mount source path {source!r}: {error.strerror}"
            ) from None


def parse_mount_options(host_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the OCI mounts of Binds, Mounts and Tmpfs."""
    return _parse_binds(host_config) + _parse_mounts(host_config)


def _check_mount_sources(host_config: dict[str, Any]) -> None:
    """Raise InvalidArgument for a Mounts bind whose source does not exist.

    dockerd creates a missing Binds source but rejects a missing Mounts source at create,
    with this message. The check runs at create only, so that inspect and ps still show a
    container whose source was removed later.
    """
    for mount in _parse_mounts(host_config):
        # Limitation: BindOptions.CreateMountpoint, which makes dockerd create the
        # source, is ignored, so such a Mounts entry is rejected too.
        if mount["type"] == "bind" and not os.path.exists(mount["source"]):
            raise InvalidArgument(
                'invalid mount config for type "bind": bind source path does not exist: '
                f"{mount['source']}"
            )


def parse_host_options(host_config: dict[str, Any], network_mode: str) -> HostOptions:
    """Check the HostConfig fields this module owns and return them."""
    options = HostOptions()
    options.mounts = parse_mount_options(host_config)
    _check_mount_sources(host_config)
    options.cap_add = [_capability(name, "CapAdd") for name in _strings(host_config, "CapAdd")]
    options.cap_drop = [_capability(name, "CapDrop") for name in _strings(host_config, "CapDrop")]
    options.privileged = bool(host_config.get("Privileged"))
    options.ulimits = _parse_ulimits(host_config)
    options.sysctls = _parse_sysctls(host_config, network_mode)
    _parse_security_opt(host_config, options)
    shm_size = host_config.get("ShmSize") or 0
    if not isinstance(shm_size, int) or shm_size < 0:
        raise InvalidArgument("invalid create body: HostConfig.ShmSize must be bytes >= 0")
    options.shm_size = shm_size
    options.extra_hosts = _parse_hosts(host_config)
    options.dns = _strings(host_config, "Dns")
    options.dns_search = _strings(host_config, "DnsSearch")
    options.dns_options = _strings(host_config, "DnsOptions")
    return options


def capability_set(default: list[str], options: HostOptions) -> list[str]:
    """Return the capabilities after Privileged, CapAdd and CapDrop, as docker computes them."""
    from ketch.runtime.capabilities import CAPABILITIES

    # "All" is what this host can grant: ketchd's bounding set, which the supervisor shares,
    # because a capability outside it makes the runtime's capset fail.
    bounding = _bounding_set()
    everything = [
        name
        for name in sorted(CAPABILITIES, key=CAPABILITIES.__getitem__)
        if bounding >> CAPABILITIES[name] & 1
    ]
    if options.privileged or "ALL" in options.cap_add:
        held = list(everything)
    else:
        held = list(default) + [name for name in options.cap_add if name not in default]
    if "ALL" in options.cap_drop:
        return [name for name in held if name in options.cap_add]
    return [name for name in held if name not in options.cap_drop]


def _bounding_set() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return 0


def apply_host_options(spec: dict[str, Any], options: HostOptions, default_caps: list[str]) -> None:
    """Edit the container's spec for the checked options."""
    process = spec["process"]
    capabilities = capability_set(default_caps, options)
    # build_spec gives a non-root user no effective capabilities, and that stays so.
    held = bool(process["capabilities"]["effective"])
    process["capabilities"] = {
        "bounding": list(capabilities),
        "effective": list(capabilities) if held else [],
        "permitted": list(capabilities) if held else [],
    }
    if options.no_new_privileges:
        process["noNewPrivileges"] = True

    if options.ulimits:
        process["rlimits"] = [
            {"type": f"RLIMIT_{u['Name'].upper()}", "soft": u["Soft"], "hard": u["Hard"]}
            for u in options.ulimits
        ]

    linux = spec["linux"]
    if options.sysctls:
        linux["sysctl"] = dict(options.sysctls)
    # As in docker, a privileged container runs without seccomp even when given a profile.
    if options.privileged or options.seccomp_unconfined:
        linux.pop("seccomp", None)
    elif options.seccomp is not None:
        linux["seccomp"] = copy.deepcopy(options.seccomp)
    else:
        linux["seccomp"] = default_profile(capabilities)
    if options.privileged:
        linux["devices"] = merge_devices(host_devices(), linux.get("devices", []))
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
        linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        for mount in spec["mounts"]:
            if mount["destination"] in ("/sys", "/sys/fs/cgroup"):
                mount["options"] = [o for o in mount["options"] if o != "ro"]

    if options.shm_size:
        for mount in spec["mounts"]:
            if mount["destination"] == "/dev/shm":
                mount["options"] = [o for o in mount["options"] if not o.startswith("size=")]
                mount["options"].append(f"size={options.shm_size}")
    targets = {mount["destination"] for mount in options.mounts}
    spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in targets]
    spec["mounts"] += copy.deepcopy(options.mounts)


def hosts_lines(options: HostOptions) -> str:
    """Return the /etc/hosts lines ExtraHosts adds."""
    return "".join(f"{address}\t{name}\n" for name, address in options.extra_hosts)


def host_config_fields(host_config: dict[str, Any], options: HostOptions) -> dict[str, Any]:
    """Return the inspect HostConfig values of these options, as the client sent them."""
    return {
        "Binds": host_config.get("Binds"),
        "Mounts": host_config.get("Mounts"),
        "Tmpfs": host_config.get("Tmpfs"),
        "CapAdd": host_config.get("CapAdd"),
        "CapDrop": host_config.get("CapDrop"),
        "Privileged": options.privileged,
        "Ulimits": host_config.get("Ulimits"),
        "Sysctls": host_config.get("Sysctls"),
        "SecurityOpt": host_config.get("SecurityOpt"),
        "ShmSize": options.shm_size or 67108864,
        "ExtraHosts": host_config.get("ExtraHosts"),
        "Dns": options.dns,
        "DnsSearch": options.dns_search,
        "DnsOptions": options.dns_options,
    }
