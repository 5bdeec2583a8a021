"""Validation of the ``POST /containers/create`` body into :class:`CreateOptions`.

The body is the Engine API's ContainerConfig with ``HostConfig`` and ``NetworkingConfig``
beside its fields. Every field ketch reads is type-checked here, and every error names
the field by its API path (``HostConfig.Memory``), so the spec builder after this point
works on checked values only.

Options that ketch does not implement yet are rejected when they are set to anything but
their zero value, instead of being ignored, so that a container never runs with less
isolation or fewer resources than its creator asked for.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ketch.engine.cpusets import check_cpuset
from ketch.engine.hostconfig import HostOptions, parse_host_options
from ketch.engine.logopts import check_log_driver, check_log_opts
from ketch.errors import InvalidArgument
from ketch.network.ports import exposed_port_keys, requested_bindings

# Docker refuses memory limits below 6 MiB because a container cannot start in less.
MIN_MEMORY_BYTES = 6 * 1024 * 1024

NETWORK_MODES = ("none", "default", "bridge", "host")

# Config fields that must stay at their zero value until ketch implements them.
_UNSUPPORTED_CONFIG: tuple[str, ...] = ()

# HostConfig fields that must stay at their zero value until ketch implements them.
_UNSUPPORTED_HOST_CONFIG = (
    "Devices", "DeviceRequests", "DeviceCgroupRules",
    "GroupAdd", "Links", "VolumeDriver",
    "StorageOpt", "UsernsMode", "PidMode", "IpcMode", "UTSMode",
    "CgroupParent", "Cgroup", "Runtime",
    "CpuRealtimePeriod", "CpuRealtimeRuntime",
    "CpuCount", "CpuPercent", "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "MemoryReservation", "KernelMemory", "KernelMemoryTCP", "OomKillDisable",
    "OomScoreAdj", "MaskedPaths", "ReadonlyPaths",
)  # fmt: skip


@dataclass
class CreateOptions:
    """A checked create body. ``None`` means the field was absent or null."""

    image: str
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: list[str] = field(default_factory=list)
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    domainname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str | None = None
    stop_timeout: int | None = None
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    tty: bool = False
    # (height, width) of the terminal at start; None leaves it 0x0 until a resize.
    console_size: tuple[int, int] | None = None
    open_stdin: bool = False
    stdin_once: bool = False
    exposed_ports: dict[str, Any] = field(default_factory=dict)
    network_mode: str = "default"
    # A network namespace the engine pinned for the container, which the runtime joins.
    network_namespace: str | None = None
    memory: int = 0
    memory_swap: int = 0
    pids_limit: int | None = None
    auto_remove: bool = False
    healthcheck: dict[str, Any] | None = None
    # Config.Volumes: destinations that get anonymous volumes (docker run -v /path).
    volumes: dict[str, Any] = field(default_factory=dict)
    host: HostOptions = field(default_factory=HostOptions)
    # The HostConfig as the client sent it, for the fields inspect shows as given.
    raw_host_config: dict[str, Any] = field(default_factory=dict)
    # Docker's warnings for the create or update reply, such as a swap limit ignored.
    warnings: list[str] = field(default_factory=list)
    # HostConfig.Init: True or False, or None for the daemon's default.
    init: bool | None = None
    restart_policy: dict[str, Any] = field(
        default_factory=lambda: {"Name": "no", "MaximumRetryCount": 0}
    )
    readonly_rootfs: bool = False
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    nano_cpus: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    # json-file options; empty means the daemon's defaults.
    log_opts: dict[str, str] = field(default_factory=dict)


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        bool: "a boolean",
        list: "a list",
        dict: "an object",
    }
    if isinstance(expected, tuple):
        return " or ".join(names.get(item, item.__name__) for item in expected)
    return names.get(expected, expected.__name__)


def _get(
    body: dict[str, Any],
    key: str,
    expected: type | tuple[type, ...],
    path: str,
    request: str = "create",
) -> Any:
    """Return ``body[key]`` (None when absent or null) after checking its JSON type.

    ``request`` names the body in the error: "create" or "update".
    """
    value = body.get(key)
    if value is None:
        return None
    # bool is a subclass of int in Python, but JSON true is not an integer.
    is_bool = isinstance(value, bool)
    wants_bool = expected is bool or (isinstance(expected, tuple) and bool in expected)
    if not isinstance(value, expected) or (is_bool and not wants_bool):
        raise InvalidArgument(
            f"invalid {request} body: {path} must be {_type_name(expected)}, "
            f"not {type(value).__name__} {value!r}"
        )
    return value


def _string_list(body: dict[str, Any], key: str, path: str) -> list[str] | None:
    """Read a StrSlice field: a list of strings, or one string meaning a one-item list."""
    value = _get(body, key, (list, str), path)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidArgument(
                f"invalid create body: {path}[{index}] must be a string, not {item!r}"
            )
    return list(value)


def _is_zero(value: Any) -> bool:
    return value in (None, False, 0, "", [], {})


def _reject_unsupported(body: dict[str, Any], keys: tuple[str, ...], prefix: str) -> None:
    for key in keys:
        if not _is_zero(body.get(key)):
            raise InvalidArgument(
                f"invalid create body: {prefix}{key} is not supported by ketch yet "
                f"(got {body[key]!r})"
            )


def parse_signal(value: str | int, path: str) -> int:
    """Turn "SIGTERM", "TERM", "15" or 15 into a signal number, or raise InvalidArgument."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    elif isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        member = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if member is None:
            raise InvalidArgument(f"Invalid signal: {value} (in {path})")
        return int(member)
    else:
        raise InvalidArgument(f"Invalid signal: {value!r} (in {path})")
    if not 1 <= number <= signal.SIGRTMAX:
        raise InvalidArgument(f"Invalid signal: {value} (in {path})")
    return number


def _parse_env(body: dict[str, Any]) -> list[str]:
    env = _string_list(body, "Env", "Env") or []
    for index, entry in enumerate(env):
        if entry.partition("=")[0] == "":
            raise InvalidArgument(
                f"invalid create body: Env[{index}] {entry!r} must be KEY=VALUE or KEY"
            )
    return env


def _parse_labels(body: dict[str, Any]) -> dict[str, str]:
    labels = _get(body, "Labels", dict, "Labels") or {}
    for key, value in labels.items():
        if not isinstance(value, str):
            raise InvalidArgument(f"invalid create body: Labels[{key!r}] must be a string")
    return dict(labels)


def _parse_working_dir(body: dict[str, Any]) -> str | None:
    working_dir = _get(body, "WorkingDir", str, "WorkingDir")
    if working_dir and not working_dir.startswith("/"):
        raise InvalidArgument(
            f"the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )
    return working_dir or None


def _parse_stop_options(body: dict[str, Any], options: CreateOptions) -> None:
    stop_signal = _get(body, "StopSignal", str, "StopSignal")
    if stop_signal:
        parse_signal(stop_signal, "StopSignal")
        options.stop_signal = stop_signal
    options.stop_timeout = _get(body, "StopTimeout", int, "StopTimeout")


def _parse_network_mode(host_config: dict[str, Any], networking: dict[str, Any]) -> str:
    mode = _get(host_config, "NetworkMode", str, "HostConfig.NetworkMode") or "default"
    if mode == "container:":
        raise InvalidArgument(
            "invalid create body: HostConfig.NetworkMode 'container:' names no container; "
            "expected container:<name or id>"
        )
    # Other names are user-defined networks, which the engine's networking checks.
    _get(networking, "EndpointsConfig", dict, "NetworkingConfig.EndpointsConfig")
    return mode


def _parse_memory(
    host_config: dict[str, Any], options: CreateOptions, request: str = "create"
) -> None:
    # A create body nests the fields in HostConfig, an update body has them at the top.
    prefix = "HostConfig." if request == "create" else ""
    memory = _get(host_config, "Memory", int, f"{prefix}Memory", request) or 0
    if memory < 0:
        raise InvalidArgument(
            f"invalid {request} body: {prefix}Memory must be 0 (no limit) or a number of "
            f"bytes, not {memory}"
        )
    if 0 < memory < MIN_MEMORY_BYTES:
        raise InvalidArgument(f"Minimum memory limit allowed is 6MB ({prefix}Memory)")
    swap = _get(host_config, "MemorySwap", int, f"{prefix}MemorySwap", request) or 0
    if swap < -1:
        raise InvalidArgument(
            f"invalid {request} body: {prefix}MemorySwap must be -1 (unlimited), 0 (default) "
            f"or a number of bytes, not {swap}"
        )
    # MemorySwap is memory plus swap, so like docker ketch needs a memory limit below it.
    if swap > 0 and not memory:
        raise InvalidArgument(
            f"You should always set the Memory limit when using Memoryswap limit "
            f"({prefix}MemorySwap {swap} with no {prefix}Memory)"
        )
    if swap > 0 and swap < memory:
        raise InvalidArgument(
            f"Minimum memoryswap limit should be larger than memory limit ({prefix}MemorySwap "
            f"{swap} is below {prefix}Memory {memory})"
        )
    if swap > 0 and not swap_limit_supported():
        # Docker does the same: it warns and limits memory only.
        options.warnings.append(SWAP_LIMIT_WARNING)
        swap = 0
    # NOTE: MemorySwap 0 with a Memory limit leaves swap unlimited. The podman-run man page
    # gives twice the memory limit as its default, and dockerd may default the same way.
    options.memory = memory
    options.memory_swap = swap


# cgroup v1 has the memsw files only when the kernel accounts swap (CONFIG_MEMCG_SWAP, and
# not booted with swapaccount=0).
MEMSW_LIMIT_FILE = Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
CGROUP2_CONTROLLERS_FILE = Path("/sys/fs/cgroup/cgroup.controllers")
SWAP_LIMIT_WARNING = (
    "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
    "Memory limited without swap."
)


def swap_limit_supported() -> bool:
    """Return whether the host's memory cgroup can limit memory plus swap."""
    if MEMSW_LIMIT_FILE.exists():
        return True
    # NOTE: on cgroup v2 the memory controller is taken to have memory.swap.max, which
    # is not checked.
    try:
        return "memory" in CGROUP2_CONTROLLERS_FILE.read_text().split()
    except OSError:
        return False


# The CFS period and quota bounds the kernel accepts, in microseconds.
MIN_CPU_PERIOD = 1000
MAX_CPU_PERIOD = 1_000_000
_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _parse_cpu(host_config: dict[str, Any], options: CreateOptions, prefix: str) -> None:
    shares = _get(host_config, "CpuShares", int, f"{prefix}.CpuShares") or 0
    period = _get(host_config, "CpuPeriod", int, f"{prefix}.CpuPeriod") or 0
    quota = _get(host_config, "CpuQuota", int, f"{prefix}.CpuQuota") or 0
    nano_cpus = _get(host_config, "NanoCpus", int, f"{prefix}.NanoCpus") or 0
    if shares < 0:
        raise InvalidArgument(f"invalid {prefix}.CpuShares {shares}: expected 0 or more")
    if period and not MIN_CPU_PERIOD <= period <= MAX_CPU_PERIOD:
        raise InvalidArgument(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1 second "
            f"(i.e. 1000000); got {prefix}.CpuPeriod {period}"
        )
    if quota and quota != -1 and quota < MIN_CPU_PERIOD:
        raise InvalidArgument(
            f"CPU cfs quota can not be less than 1ms (i.e. 1000); got {prefix}.CpuQuota {quota}"
        )

    if nano_cpus and (period or quota):
        raise InvalidArgument(
            "Conflicting options: Nano CPUs cannot be set together with CPU Period or CPU Quota"
        )
    available = os.cpu_count() or 1
    if nano_cpus < 0 or nano_cpus > available * 1_000_000_000:
        raise InvalidArgument(
            f"Range of CPUs is from 0.01 to {available}.00, as there are only {available} "
            f"CPUs available ({prefix}.NanoCpus {nano_cpus})"
        )

    options.cpu_shares, options.cpu_period, options.cpu_quota = shares, period, quota
    options.nano_cpus = nano_cpus
    for key in ("CpusetCpus", "CpusetMems"):
        value = _get(host_config, key, str, f"{prefix}.{key}") or ""
        if value and not _CPUSET.match(value):
            raise InvalidArgument(
                f"invalid {prefix}.{key} {value!r}: expected a list such as 0-2,4"
            )
        setattr(options, "cpuset_cpus" if key == "CpusetCpus" else "cpuset_mems", value)
    check_cpuset(options.cpuset_cpus, options.cpuset_mems)


def parse_resources(host_config: dict[str, Any], prefix: str = "HostConfig") -> CreateOptions:
    """Check the resource fields (memory, CPU, pids) of a HostConfig or an update body and
    return them in a CreateOptions whose other fields are unset."""
    options = CreateOptions(image="")
    _parse_memory(host_config, options, "create" if prefix == "HostConfig" else "update")
    _parse_cpu(host_config, options, prefix)
    options.pids_limit = _parse_pids_limit(host_config)
    return options


def _parse_pids_limit(host_config: dict[str, Any]) -> int | None:
    limit = _get(host_config, "PidsLimit", int, "HostConfig.PidsLimit")
    # Docker reads 0 and negative values as "unlimited".
    return limit if limit is not None and limit > 0 else None


RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse_restart_policy(host_config: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Check ``RestartPolicy`` and return it as ``{"Name", "MaximumRetryCount"}``."""
    path = f"{prefix}RestartPolicy"
    policy = _get(host_config, "RestartPolicy", dict, path) or {}
    name = _get(policy, "Name", str, f"{path}.Name") or "no"
    retries = _get(policy, "MaximumRetryCount", int, f"{path}.MaximumRetryCount") or 0
    if name not in RESTART_POLICIES:
        raise InvalidArgument(
            f"invalid restart policy: unknown policy '{name}'; use one of "
            "'no', 'always', 'unless-stopped', and 'on-failure'"
        )
    if retries < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count can not be negative")
    if retries and name != "on-failure":
        raise InvalidArgument(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
        )
    return {"Name": name, "MaximumRetryCount": retries}


def _parse_log_config(host_config: dict[str, Any]) -> dict[str, str]:
    log_config = _get(host_config, "LogConfig", dict, "HostConfig.LogConfig") or {}
    log_type = _get(log_config, "Type", str, "HostConfig.LogConfig.Type") or ""
    check_log_driver(log_type, "create body: HostConfig.LogConfig.Type")
    opts = _get(log_config, "Config", dict, "HostConfig.LogConfig.Config") or {}
    return check_log_opts(opts, "create body: HostConfig.LogConfig.Config")


# The namespace modes dockerd accepts, by HostConfig field, with the word its error uses.
# The entry "container:" matches any "container:<name or ID>".
_NAMESPACE_MODES = {
    "PidMode": ("PID", ("host", "container:")),
    "IpcMode": ("IPC", ("none", "private", "shareable", "host", "container:")),
    "UTSMode": ("UTS", ("host",)),
}


def _check_namespace_modes(host_config: dict[str, Any]) -> None:
    """Reject a namespace mode that dockerd does not know, in its wording, before the
    check that rejects the valid modes ketch does not implement yet."""
    for key, (label, modes) in _NAMESPACE_MODES.items():
        mode = _get(host_config, key, str, f"HostConfig.{key}") or ""
        if not mode:
            continue
        prefix, separator, target = mode.partition(":")
        if separator:
            known = f"{prefix}:" in modes and bool(target)
        else:
            known = mode in modes
        if not known:
            raise InvalidArgument(f"invalid {label} mode: {mode}")


def _parse_host_config(body: dict[str, Any], options: CreateOptions) -> None:
    host_config = _get(body, "HostConfig", dict, "HostConfig") or {}
    networking = _get(body, "NetworkingConfig", dict, "NetworkingConfig") or {}
    _check_namespace_modes(host_config)
    _reject_unsupported(host_config, _UNSUPPORTED_HOST_CONFIG, "HostConfig.")
    # Checked now, so that a bad port fails the create; host ports are bound at start.
    exposed_port_keys(body.get("ExposedPorts"))
    requested_bindings(host_config, body.get("ExposedPorts"))
    options.restart_policy = parse_restart_policy(host_config, "HostConfig.")
    options.log_opts = _parse_log_config(host_config)
    _parse_memory(host_config, options)
    _parse_cpu(host_config, options, "HostConfig")
    options.network_mode = _parse_network_mode(host_config, networking)
    options.host = parse_host_options(host_config, options.network_mode)
    options.raw_host_config = host_config
    options.pids_limit = _parse_pids_limit(host_config)
    options.auto_remove = bool(_get(host_config, "AutoRemove", bool, "HostConfig.AutoRemove"))
    if options.auto_remove and options.restart_policy["Name"] != "no":
        raise InvalidArgument(
            "conflicting options: cannot combine HostConfig.AutoRemove (--rm) with a restart "
            f"policy ({options.restart_policy['Name']})"
        )
    options.console_size = _parse_console_size(host_config)
    options.init = _get(host_config, "Init", bool, "HostConfig.Init")
    options.readonly_rootfs = bool(
        _get(host_config, "ReadonlyRootfs", bool, "HostConfig.ReadonlyRootfs")
    )


def _parse_console_size(host_config: dict[str, Any]) -> tuple[int, int] | None:
    size = _get(host_config, "ConsoleSize", list, "HostConfig.ConsoleSize")
    if not size:
        return None
    numbers = len(size) == 2 and all(type(n) is int and 0 <= n <= 65535 for n in size)
    if not numbers:
        raise InvalidArgument(
            "invalid create body: HostConfig.ConsoleSize must be [height, width], "
            "two numbers from 0 to 65535"
        )
    return None if size == [0, 0] else (size[0], size[1])


def _parse_healthcheck(body: dict[str, Any]) -> dict[str, Any] | None:
    healthcheck = _get(body, "Healthcheck", dict, "Healthcheck")
    if not healthcheck:
        return None
    test = _string_list(healthcheck, "Test", "Healthcheck.Test") or []
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise InvalidArgument(
            f"invalid create body: Healthcheck.Test must start with NONE, CMD or CMD-SHELL, "
            f"not {test[0]!r}"
        )
    checked: dict[str, Any] = {"Test": test} if test else {}
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
        value = _get(healthcheck, key, int, f"Healthcheck.{key}")
        if value is not None and value < 0:
            raise InvalidArgument(f"invalid create body: Healthcheck.{key} can't be negative")
        if value:
            checked[key] = value
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        if 0 < checked.get(key, 0) < 1_000_000:
            raise InvalidArgument(
                f"invalid create body: Healthcheck.{key} in a container's config cannot be "
                "less than 1ms"
            )
    return checked


def parse_create_body(body: Any) -> CreateOptions:
    """Check a create body and return its options, or raise InvalidArgument naming a field."""
    if not isinstance(body, dict):
        raise InvalidArgument(
            f"invalid create body: expected a JSON object, not {type(body).__name__}"
        )
    image = _get(body, "Image", str, "Image")
    if not image:
        raise InvalidArgument("invalid create body: Image is required")
    _reject_unsupported(body, _UNSUPPORTED_CONFIG, "")

    options = CreateOptions(image=image)
    options.cmd = _string_list(body, "Cmd", "Cmd")
    options.entrypoint = _string_list(body, "Entrypoint", "Entrypoint")
    options.env = _parse_env(body)
    options.user = _get(body, "User", str, "User") or None
    options.working_dir = _parse_working_dir(body)
    options.hostname = _get(body, "Hostname", str, "Hostname") or None
    options.domainname = _get(body, "Domainname", str, "Domainname") or ""
    options.labels = _parse_labels(body)
    options.attach_stdin = bool(_get(body, "AttachStdin", bool, "AttachStdin"))
    options.tty = bool(_get(body, "Tty", bool, "Tty"))
    options.open_stdin = bool(_get(body, "OpenStdin", bool, "OpenStdin"))
    options.stdin_once = bool(_get(body, "StdinOnce", bool, "StdinOnce"))
    options.attach_stdout = bool(_get(body, "AttachStdout", bool, "AttachStdout"))
    options.attach_stderr = bool(_get(body, "AttachStderr", bool, "AttachStderr"))
    options.exposed_ports = _get(body, "ExposedPorts", dict, "ExposedPorts") or {}
    _parse_stop_options(body, options)
    options.healthcheck = _parse_healthcheck(body)
    options.volumes = _get(body, "Volumes", dict, "Volumes") or {}
    _parse_host_config(body, options)
    return options
