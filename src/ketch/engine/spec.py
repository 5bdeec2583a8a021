"""The OCI runtime spec (a bundle's config.json) for a container, and the docker Config it
comes from.

Two steps, both pure functions:

1. :func:`merge_config` combines the image's config with the create options the way
   docker does, giving the container's ``Config`` as ``docker inspect`` shows it.
2. :func:`build_spec` turns that Config, the host options and the resolved user into
   config.json: docker's defaults for capabilities, mounts, masked paths and devices,
   ``linux.cgroupsPath = "ketch/<id>"``, and a new network namespace
   (loopback only, or the one the engine pinned for a bridge container).
"""

from __future__ import annotations

import copy
import os
from typing import Any

from ketch.engine.options import CreateOptions
from ketch.engine.userdb import ExecUser
from ketch.errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_STOP_SIGNAL = "SIGTERM"
DEFAULT_STOP_TIMEOUT = 10

# The capabilities docker grants a container by default (moby's oci/caps defaults).
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

# Paths docker hides (masked) or makes read-only in /proc and /sys, because they expose
# host kernel state or let a container change it.
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _device_rule(kind: str, major: int | None, minor: int | None, access: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": True, "type": kind, "access": access}
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


# The device cgroup: deny everything, then allow mknod of any node and read/write of the
# devices every container gets (null, zero, full, random, urandom, tty, console, ptmx, pts).
DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    _device_rule("c", None, None, "m"),
    _device_rule("b", None, None, "m"),
    _device_rule("c", 1, 3, "rwm"),
    _device_rule("c", 1, 5, "rwm"),
    _device_rule("c", 1, 7, "rwm"),
    _device_rule("c", 1, 8, "rwm"),
    _device_rule("c", 1, 9, "rwm"),
    _device_rule("c", 5, 0, "rwm"),
    _device_rule("c", 5, 1, "rwm"),
    _device_rule("c", 5, 2, "rwm"),
    _device_rule("c", 136, None, "rwm"),
]


def _mount(destination: str, kind: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": options}


# The mounts docker gives every container.
DEFAULT_MOUNTS = [
    _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
    _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
    _mount(
        "/dev/pts",
        "devpts",
        "devpts",
        ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    ),
    _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
    _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["ro", "nosuid", "noexec", "nodev"]),
    _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
    _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
]


def _env_key(entry: str) -> str:
    return entry.partition("=")[0]


def merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """Apply ``overrides`` to ``base`` by key, as docker merges image and container Env.

    ``KEY=VALUE`` replaces KEY's entry in place or appends it; a bare ``KEY`` removes
    KEY from ``base``.
    """
    merged = list(base)
    for entry in overrides:
        key = _env_key(entry)
        positions = [index for index, item in enumerate(merged) if _env_key(item) == key]
        if "=" not in entry:
            merged = [item for item in merged if _env_key(item) != key]
        elif positions:
            merged[positions[0]] = entry
        else:
            merged.append(entry)
    return merged


def _explicitly_empty(entrypoint: list[str] | None) -> bool:
    # The docker CLI sends [""] for `--entrypoint ""`, which clears the image's entrypoint.
    return entrypoint is not None and all(part == "" for part in entrypoint)


def resolve_command(
    options: CreateOptions, image_config: dict[str, Any]
) -> tuple[list[str] | None, list[str] | None]:
    """Return the container's (Entrypoint, Cmd) by docker's rules.

    A body Entrypoint replaces the image's and drops the image's Cmd, so only the body
    Cmd follows it. Without a body Entrypoint, the body Cmd replaces the image's Cmd and
    the image's Entrypoint stays.
    """
    if options.entrypoint is not None and not _explicitly_empty(options.entrypoint):
        return options.entrypoint, options.cmd
    cmd = options.cmd if options.cmd else image_config.get("Cmd")
    if options.entrypoint is None:
        return image_config.get("Entrypoint") or None, cmd or None
    return None, cmd or None


def process_args(entrypoint: list[str] | None, cmd: list[str] | None) -> list[str]:
    """Return the argv a container runs, or raise InvalidArgument when there is none."""
    args = list(entrypoint or []) + list(cmd or [])
    if not args:
        raise InvalidArgument("No command specified")
    return args


def merge_config(
    options: CreateOptions, image_config: dict[str, Any], hostname: str
) -> dict[str, Any]:
    """Return the container's docker Config: the image config overridden by the options."""
    entrypoint, cmd = resolve_command(options, image_config)
    process_args(entrypoint, cmd)
    labels = dict(image_config.get("Labels") or {})
    labels.update(options.labels)
    exposed_ports = dict(image_config.get("ExposedPorts") or {})
    exposed_ports.update(options.exposed_ports)
    return {
        "Hostname": hostname,
        "Domainname": options.domainname,
        "User": options.user if options.user is not None else image_config.get("User", ""),
        "AttachStdin": options.attach_stdin,
        "AttachStdout": options.attach_stdout,
        "AttachStderr": options.attach_stderr,
        "ExposedPorts": exposed_ports or None,
        "Tty": options.tty,
        "OpenStdin": options.open_stdin,
        "StdinOnce": options.stdin_once,
        "Env": merge_env(list(image_config.get("Env") or []), options.env),
        "Cmd": cmd,
        "Image": options.image,
        "Volumes": image_config.get("Volumes") or None,
        "WorkingDir": options.working_dir or image_config.get("WorkingDir") or "",
        "Entrypoint": entrypoint,
        "OnBuild": None,
        "Labels": labels,
        "StopSignal": options.stop_signal or image_config.get("StopSignal") or None,
        "StopTimeout": options.stop_timeout,
        "Healthcheck": _merge_healthcheck(options.healthcheck, image_config.get("Healthcheck")),
    }


def _merge_healthcheck(
    requested: dict[str, Any] | None, from_image: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Return the healthcheck: the image's, with the fields the create body sets replaced."""
    merged = dict(from_image or {})
    merged.update(requested or {})
    return merged or None


def process_env(config: dict[str, Any], user: ExecUser) -> list[str]:
    """Return the environment of the container's process.

    Like docker, PATH and HOSTNAME are set first (and TERM=xterm with a TTY), and the
    Config's Env overrides them. HOME comes from the user's passwd entry unless the Env sets
    it, as runc does.
    """
    defaults = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={config['Hostname']}"]
    if config.get("Tty"):
        defaults.append("TERM=xterm")
    env = merge_env(defaults, list(config["Env"] or []))
    if not any(_env_key(entry) == "HOME" for entry in env):
        env.append(f"HOME={user.home}")
    return env


def _base_spec() -> dict[str, Any]:
    try:
        from ketch.runtime.spec import default_spec
    except ImportError:
        return {"ociVersion": "1.2.0", "process": {}, "root": {}, "linux": {}}
    return copy.deepcopy(default_spec())


def _capabilities(user: ExecUser) -> dict[str, list[str]]:
    # A process that switches from root to another uid loses its effective and permitted
    # capabilities in the kernel, and docker's spec says so explicitly.
    held = list(DEFAULT_CAPABILITIES) if user.uid == 0 else []
    return {
        "bounding": list(DEFAULT_CAPABILITIES),
        "effective": held,
        "permitted": held,
    }


# The CFS period docker uses to turn NanoCpus into a quota, in microseconds.
NANO_CPUS_PERIOD = 100_000


def resources_spec(options: CreateOptions) -> dict[str, Any]:
    """Return the OCI ``linux.resources`` for the memory, CPU and pids options, without
    device rules."""
    resources: dict[str, Any] = {}
    if options.memory:
        resources["memory"] = {"limit": options.memory}
    if options.memory_swap:
        resources.setdefault("memory", {})["swap"] = options.memory_swap
    if options.pids_limit:
        resources["pids"] = {"limit": options.pids_limit}
    cpu: dict[str, Any] = {}
    if options.cpu_shares:
        # The kernel's minimum is 2; dockerd raises smaller values to it as well.
        cpu["shares"] = max(2, options.cpu_shares)
    if options.nano_cpus:
        cpu["period"] = NANO_CPUS_PERIOD
        cpu["quota"] = options.nano_cpus * NANO_CPUS_PERIOD // 1_000_000_000
    if options.cpu_period:
        cpu["period"] = options.cpu_period
    if options.cpu_quota:
        cpu["quota"] = options.cpu_quota
    if options.cpuset_cpus:
        cpu["cpus"] = options.cpuset_cpus
    if options.cpuset_mems:
        cpu["mems"] = options.cpuset_mems
    if cpu:
        resources["cpu"] = cpu
    return resources


def _resources(options: CreateOptions) -> dict[str, Any]:
    return {"devices": copy.deepcopy(DEVICE_RULES), **resources_spec(options)}


# Where an init binary is bind-mounted in a container created with HostConfig.Init, the
# path dockerd uses.
INIT_DESTINATION = "/sbin/docker-init"
# Init binaries looked up in PATH when the daemon names none: Debian's docker.io package
# installs tini's static build under both names.
INIT_BINARIES = ("docker-init", "tini-static")


def find_init_binary(configured: str | None) -> str:
    """Return the init binary for HostConfig.Init, or raise InvalidArgument naming the fix."""
    import shutil

    candidates = [configured] if configured else list(INIT_BINARIES)
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return os.path.realpath(found)
    raise InvalidArgument(
        f"cannot use HostConfig.Init (--init): no init binary found ({', '.join(candidates)}); "
        "install tini's static build (Debian: tini) or set init-path in daemon.json"
    )


def add_init(spec: dict[str, Any], init_binary: str) -> None:
    """Run the container's command under ``init_binary`` as PID 1, which forwards signals
    to it and reaps orphaned processes (tini's ``--`` form)."""
    spec["process"]["args"] = [INIT_DESTINATION, "--", *spec["process"]["args"]]
    spec["mounts"].append(
        {
            "destination": INIT_DESTINATION,
            "type": "bind",
            "source": init_binary,
            "options": ["rbind", "ro", "rprivate"],
        }
    )


def build_spec(
    container_id: str,
    config: dict[str, Any],
    options: CreateOptions,
    user: ExecUser,
    rootfs: str,
    extra_mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return config.json for the container, on the runtime's default spec."""
    spec = _base_spec()
    spec["process"] = {
        "terminal": options.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids)},
        "args": process_args(config["Entrypoint"], config["Cmd"]),
        "env": process_env(config, user),
        "cwd": config["WorkingDir"] or "/",
        "capabilities": _capabilities(user),
        "noNewPrivileges": False,
        "oomScoreAdj": 0,
    }
    if options.tty and options.console_size is not None:
        height, width = options.console_size
        spec["process"]["consoleSize"] = {"height": height, "width": width}
    spec["root"] = {"path": rootfs, "readonly": options.readonly_rootfs}
    spec["hostname"] = config["Hostname"]
    if config["Domainname"]:
        spec["domainname"] = config["Domainname"]
    spec["mounts"] = copy.deepcopy(DEFAULT_MOUNTS) + list(extra_mounts or [])

    # "none" gets a new network namespace, whose loopback the runtime brings up. With
    # bridge networking the engine has pinned a wired namespace, which the runtime joins.
    namespaces: list[dict[str, str]] = [
        {"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")
    ]
    if options.network_mode == "host":
        namespaces = [n for n in namespaces if n["type"] != "network"]
    elif options.network_namespace is not None:
        namespaces[1]["path"] = options.network_namespace
    spec["linux"] = {
        "namespaces": namespaces,
        "cgroupsPath": f"ketch/{container_id}",
        "resources": _resources(options),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    spec["annotations"] = {"org.opencontainers.image.ref.name": config["Image"]}
    return spec
