"""Reading and validating a bundle's config.json (the OCI runtime spec) into typed objects.

Everything the runtime acts on is checked here, before anything is created on the host, so
a bad config fails ``create`` with an InvalidArgument that names the field (for example
``invalid config.json: process.args: expected a non-empty list of strings``) and leaves
nothing behind. Fields this runtime does not act on yet are either ignored, when ignoring
them is safe, or rejected with a message saying so.
``linux.seccomp`` is validated by :mod:`ketch.runtime.seccomp` and ``hooks`` by
:mod:`ketch.runtime.hooks`.
"""

from __future__ import annotations

import os

from ketch.errors import InvalidArgument, NotFound
from ketch.runtime import json_text
from ketch.runtime.capabilities import check_names
from ketch.runtime.hooks import Hook, parse_hooks
from ketch.runtime.record import Factory, Record

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
# Limitation: time namespaces are rejected, so configs that ask for one fail.
UNSUPPORTED_NAMESPACES = ("time",)

# The resource limits setrlimit(2) accepts, by their OCI names.
RLIMIT_NAMES = (
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
)

CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


class User(Record):
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = Factory(list)
    umask: int | None = None


class Rlimit(Record):
    type: str
    soft: int
    hard: int


class Process(Record):
    args: list[str]
    env: list[str]
    cwd: str
    user: User
    terminal: bool = False
    rlimits: list[Rlimit] = Factory(list)
    no_new_privileges: bool = False
    # Capability set name -> capability names; None when the config has no
    # process.capabilities, in which case the process keeps what the init has.
    capabilities: dict[str, list[str]] | None = None
    console_size: tuple[int, int] | None = None  # (rows, columns) of the terminal
    oom_score_adj: int | None = None


class Mount(Record):
    destination: str
    type: str | None
    source: str | None
    options: list[str]


class Namespace(Record):
    type: str
    path: str | None = None


class IdMapping(Record):
    """One linux.uidMappings or linux.gidMappings entry, as /proc/<pid>/uid_map takes it."""

    container_id: int
    host_id: int
    size: int


class Device(Record):
    path: str
    type: str
    major: int
    minor: int
    file_mode: int
    uid: int
    gid: int


class DeviceRule(Record):
    """One linux.resources.devices entry: a devices cgroup allow or deny rule."""

    allow: bool
    type: str
    major: int | None
    minor: int | None
    access: str


class Resources(Record):
    memory_limit: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    pids_limit: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    devices: list[DeviceRule] = Factory(list)


class Spec(Record):
    """The parts of config.json the runtime acts on; ``rootfs`` is an absolute path."""

    oci_version: str
    rootfs: str  # absolute, with symlinks resolved
    root_readonly: bool
    process: Process
    hostname: str | None
    domainname: str | None
    mounts: list[Mount]
    namespaces: list[Namespace]
    cgroups_path: str | None
    resources: Resources
    devices: list[Device]
    masked_paths: list[str]
    readonly_paths: list[str]
    rootfs_propagation: str | None
    sysctl: dict[str, str]
    annotations: dict[str, str]
    # The decoded linux.seccomp object (validated), or None; see ketch.runtime.seccomp.
    seccomp: dict[str, Any] | None = None
    # Hook kind ("prestart", ...) -> hooks of that kind; see ketch.runtime.hooks.
    hooks: dict[str, list[Hook]] = Factory(dict)
    uid_mappings: list[IdMapping] = Factory(list)
    gid_mappings: list[IdMapping] = Factory(list)

    def namespace(self, kind: str) -> Namespace | None:
        for namespace in self.namespaces:
            if namespace.type == kind:
                return namespace
        return None


def load_spec(bundle: Path | str) -> Spec:
    """Read ``<bundle>/config.json`` and return the validated spec."""
    bundle = os.fspath(bundle)
    if not os.path.isdir(bundle):
        raise NotFound(f"bundle {bundle} does not exist or is not a directory")
    config_path = os.path.join(bundle, "config.json")
    try:
        with open(config_path) as config_file:
            text = config_file.read()
    except FileNotFoundError:
        raise NotFound(f"config.json not found in bundle {bundle}") from None
    except OSError as error:
        raise InvalidArgument(f"cannot read {config_path}: {error.strerror}") from None
    try:
        document = json_text.loads(text)
    except ValueError:
        raise InvalidArgument(
            f"invalid config.json in bundle {bundle}: {_json_error(text)}"
        ) from None
    return parse_spec(document, bundle)


def _json_error(text: str) -> str:
    """Return json's description of the fault in ``text``, with its line and column.

    Only this error path imports json, because json_text's parser, which saves create
    about 1 ms of imports by ``-X importtime``, does not locate the fault.
    """
    import json

    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return str(error)
    return "not a JSON document"


def parse_spec(document: object, bundle: Path | str) -> Spec:
    """Validate a decoded config.json; relative paths are taken from ``bundle``."""
    config = _object(document, "the top level")
    oci_version = _string(config.get("ociVersion"), "ociVersion")
    root = _object(config.get("root"), "root")
    linux = _object(config.get("linux", {}), "linux")
    spec = Spec(
        oci_version=oci_version,
        rootfs=_rootfs(root, bundle),
        root_readonly=_boolean(root.get("readonly", False), "root.readonly"),
        process=_process(config.get("process")),
        hostname=_optional_string(config.get("hostname"), "hostname"),
        domainname=_optional_string(config.get("domainname"), "domainname"),
        mounts=_mounts(config.get("mounts", [])),
        namespaces=_namespaces(linux.get("namespaces", [])),
        cgroups_path=_optional_string(linux.get("cgroupsPath"), "linux.cgroupsPath"),
        resources=_resources(linux.get("resources", {})),
        devices=_devices(linux.get("devices", [])),
        masked_paths=_absolute_paths(linux.get("maskedPaths", []), "linux.maskedPaths"),
        readonly_paths=_absolute_paths(linux.get("readonlyPaths", []), "linux.readonlyPaths"),
        rootfs_propagation=_propagation(linux.get("rootfsPropagation")),
        sysctl=_string_map(linux.get("sysctl", {}), "linux.sysctl"),
        annotations=_string_map(config.get("annotations", {}), "annotations"),
        seccomp=_seccomp(linux.get("seccomp")),
        hooks=parse_hooks(config.get("hooks", {})),
        uid_mappings=_id_mappings(linux.get("uidMappings", []), "linux.uidMappings"),
        gid_mappings=_id_mappings(linux.get("gidMappings", []), "linux.gidMappings"),
    )
    _check_namespaces_fit(spec)
    _check_id_mappings(spec)
    _allow_listed_devices(spec)
    return spec


def _id_mappings(value: object, where: str) -> list[IdMapping]:
    mappings = []
    for index, item in enumerate(_list(value, where)):
        entry = _object(item, f"{where}[{index}]")
        mappings.append(
            IdMapping(
                container_id=_id(entry.get("containerID"), f"{where}[{index}].containerID"),
                host_id=_id(entry.get("hostID"), f"{where}[{index}].hostID"),
                size=_integer(entry.get("size"), f"{where}[{index}].size", 1, 2**32 - 1),
            )
        )
    return mappings


def _check_id_mappings(spec: Spec) -> None:
    user = spec.namespace("user")
    mapped = spec.uid_mappings or spec.gid_mappings
    if user is None and mapped:
        raise InvalidArgument(
            "invalid config.json: linux.uidMappings and linux.gidMappings need a user "
            "namespace in linux.namespaces"
        )
    if user is not None and user.path is None:
        if not spec.uid_mappings or not spec.gid_mappings:
            raise InvalidArgument(
                "invalid config.json: a new user namespace needs linux.uidMappings and "
                "linux.gidMappings"
            )
        if spec.namespace("pid") is None:
            # Limitation: the init's pid namespace is made in the new user namespace, so a
            # new user namespace without a new (or joined) pid namespace is not supported.
            raise InvalidArgument(
                "invalid config.json: a new user namespace needs a pid namespace too"
            )


def _seccomp(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    from ketch.runtime.seccomp import parse_profile

    parse_profile(value)
    return _object(value, "linux.seccomp")


def _allow_listed_devices(spec: Spec) -> None:
    # The runtime creates the devices linux.devices lists for the container to use, so
    # the devices cgroup allows them after the config's own rules, as runc does.
    if not spec.resources.devices:
        return
    for device in spec.devices:
        if device.type in ("c", "u", "b"):
            kind = "b" if device.type == "b" else "c"
            rule = DeviceRule(True, kind, device.major, device.minor, "rwm")
            spec.resources.devices.append(rule)


def _rootfs(root: dict[str, Any], bundle: Path | str) -> str:
    path = os.path.join(bundle, _string(root.get("path"), "root.path"))
    if not os.path.isdir(path):
        raise NotFound(f"rootfs {path} does not exist or is not a directory (root.path)")
    return os.path.realpath(path)


def _process(value: object) -> Process:
    process = _object(value, "process")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise _invalid("process.args", "a non-empty list of strings")
    if any("\0" in a for a in args):
        raise _invalid("process.args", "strings without NUL bytes")
    env = _string_list(process.get("env", []), "process.env")
    for entry in env:
        if "=" not in entry or "\0" in entry:
            raise _invalid("process.env", f"KEY=VALUE entries, not {entry!r}")
    cwd = _string(process.get("cwd", "/"), "process.cwd")
    if not cwd.startswith("/"):
        raise _invalid("process.cwd", f"an absolute path, not {cwd!r}")
    return Process(
        args=args,
        env=env,
        cwd=cwd,
        user=_user(process.get("user", {})),
        terminal=_boolean(process.get("terminal", False), "process.terminal"),
        rlimits=_rlimits(process.get("rlimits", [])),
        no_new_privileges=_boolean(
            process.get("noNewPrivileges", False), "process.noNewPrivileges"
        ),
        capabilities=_capabilities(process.get("capabilities")),
        console_size=_console_size(process.get("consoleSize")),
        oom_score_adj=_oom_score_adj(process.get("oomScoreAdj")),
    )


def parse_process(document: object) -> Process:
    """Validate a decoded OCI process object, as ``exec --process`` gives one."""
    return _process(document)


def _oom_score_adj(value: object) -> int | None:
    if value is None:
        return None
    return _integer(value, "process.oomScoreAdj", -1000, 1000)


def _console_size(value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    size = _object(value, "process.consoleSize")
    rows = _integer(size.get("height"), "process.consoleSize.height", 0, 65535)
    columns = _integer(size.get("width"), "process.consoleSize.width", 0, 65535)
    return rows, columns


def _user(value: object) -> User:
    user = _object(value, "process.user")
    if "username" in user:
        raise InvalidArgument("invalid config.json: process.user.username is for Windows only")
    umask = user.get("umask")
    return User(
        uid=_id(user.get("uid", 0), "process.user.uid"),
        gid=_id(user.get("gid", 0), "process.user.gid"),
        additional_gids=[
            _id(g, "process.user.additionalGids")
            for g in _list(user.get("additionalGids", []), "process.user.additionalGids")
        ],
        umask=None if umask is None else _integer(umask, "process.user.umask", 0, 0o777),
    )


def _rlimits(value: object) -> list[Rlimit]:
    rlimits = []
    seen = set()
    for index, item in enumerate(_list(value, "process.rlimits")):
        where = f"process.rlimits[{index}]"
        entry = _object(item, where)
        kind = _string(entry.get("type"), f"{where}.type")
        if kind not in RLIMIT_NAMES:
            raise _invalid(f"{where}.type", f"one of {', '.join(RLIMIT_NAMES)}, not {kind!r}")
        if kind in seen:
            raise InvalidArgument(f"invalid config.json: {where}: {kind} is given twice")
        seen.add(kind)
        soft = _integer(entry.get("soft"), f"{where}.soft", 0, 2**64 - 1)
        hard = _integer(entry.get("hard"), f"{where}.hard", 0, 2**64 - 1)
        if soft > hard:
            raise InvalidArgument(f"invalid config.json: {where}: soft {soft} > hard {hard}")
        rlimits.append(Rlimit(kind, soft, hard))
    return rlimits


def _capabilities(value: object) -> dict[str, list[str]] | None:
    if value is None:
        return None
    capabilities = _object(value, "process.capabilities")
    result = {}
    for name, names in capabilities.items():
        if name not in CAPABILITY_SETS:
            raise _invalid("process.capabilities", f"keys among {', '.join(CAPABILITY_SETS)}")
        result[name] = _string_list(names, f"process.capabilities.{name}")
    check_names(result)
    return result


def _mounts(value: object) -> list[Mount]:
    mounts = []
    for index, item in enumerate(_list(value, "mounts")):
        where = f"mounts[{index}]"
        entry = _object(item, where)
        destination = _string(entry.get("destination"), f"{where}.destination")
        if not destination.startswith("/"):
            raise _invalid(f"{where}.destination", f"an absolute path, not {destination!r}")
        mounts.append(
            Mount(
                destination=destination,
                type=_optional_string(entry.get("type"), f"{where}.type"),
                source=_optional_string(entry.get("source"), f"{where}.source"),
                options=_string_list(entry.get("options", []), f"{where}.options"),
            )
        )
    return mounts


def _namespaces(value: object) -> list[Namespace]:
    namespaces = []
    for index, item in enumerate(_list(value, "linux.namespaces")):
        where = f"linux.namespaces[{index}]"
        entry = _object(item, where)
        kind = _string(entry.get("type"), f"{where}.type")
        if kind not in NAMESPACE_TYPES:
            expected = f"one of {', '.join(NAMESPACE_TYPES)}, not {kind!r}"
            raise _invalid(f"{where}.type", expected)
        if kind in UNSUPPORTED_NAMESPACES:
            raise InvalidArgument(
                f"invalid config.json: {where}: {kind} namespaces are not supported yet"
            )
        if any(n.type == kind for n in namespaces):
            raise InvalidArgument(f"invalid config.json: {where}: {kind} is given twice")
        path = _optional_string(entry.get("path"), f"{where}.path")
        if path is not None and not path.startswith("/"):
            raise _invalid(f"{where}.path", f"an absolute path, not {path!r}")
        namespaces.append(Namespace(kind, path or None))
    return namespaces


def _check_namespaces_fit(spec: Spec) -> None:
    if spec.namespace("mount") is None:
        # pivot_root and every mount below happen in the container's own mount namespace;
        # without one they would change the host's mounts.
        raise InvalidArgument("invalid config.json: linux.namespaces must include mount")
    if spec.hostname and spec.namespace("uts") is None:
        raise InvalidArgument(
            "invalid config.json: hostname is set but linux.namespaces has no uts namespace"
        )
    if spec.domainname and spec.namespace("uts") is None:
        raise InvalidArgument(
            "invalid config.json: domainname is set but linux.namespaces has no uts namespace"
        )


def parse_resources(document: object) -> Resources:
    """Validate a decoded OCI linux.resources object, as ``update --resources`` gives one."""
    return _resources(document)


def _resources(value: object) -> Resources:
    resources = _object(value, "linux.resources")
    memory = _object(resources.get("memory", {}), "linux.resources.memory")
    pids = _object(resources.get("pids", {}), "linux.resources.pids")
    cpu = _object(resources.get("cpu", {}), "linux.resources.cpu")
    result = Resources(
        memory_limit=_optional_integer(memory.get("limit"), "linux.resources.memory.limit"),
        memory_reservation=_optional_integer(
            memory.get("reservation"), "linux.resources.memory.reservation"
        ),
        memory_swap=_optional_integer(memory.get("swap"), "linux.resources.memory.swap"),
        pids_limit=_optional_integer(pids.get("limit"), "linux.resources.pids.limit"),
        cpu_shares=_optional_integer(cpu.get("shares"), "linux.resources.cpu.shares"),
        cpu_quota=_optional_integer(cpu.get("quota"), "linux.resources.cpu.quota"),
        cpu_period=_optional_integer(cpu.get("period"), "linux.resources.cpu.period"),
        cpuset_cpus=_optional_string(cpu.get("cpus"), "linux.resources.cpu.cpus") or None,
        cpuset_mems=_optional_string(cpu.get("mems"), "linux.resources.cpu.mems") or None,
        devices=_device_rules(resources.get("devices", [])),
    )
    _unset_zero_limits(result)
    _check_limits(result)
    return result


def _unset_zero_limits(resources: Resources) -> None:
    """Treat 0 as "not set" for these limits, as runc 1.1 does, because callers send 0 for
    a limit the user left out (dockerd 20.10 sends cpu.shares 0 for every `docker run`)."""
    for name in (
        "memory_limit",
        "memory_reservation",
        "memory_swap",
        "pids_limit",
        "cpu_shares",
        "cpu_quota",
        "cpu_period",
    ):
        if getattr(resources, name) == 0:
            setattr(resources, name, None)


def _check_limits(resources: Resources) -> None:
    positive_or_unlimited = {
        "linux.resources.memory.limit": resources.memory_limit,
        "linux.resources.memory.reservation": resources.memory_reservation,
        "linux.resources.memory.swap": resources.memory_swap,
    }
    for name, value in positive_or_unlimited.items():
        if value is not None and value < -1:
            raise _invalid(name, f"a byte count or -1 for unlimited, not {value}")
    if resources.cpu_shares is not None and resources.cpu_shares < 2:
        raise _invalid("linux.resources.cpu.shares", f"at least 2, not {resources.cpu_shares}")
    if resources.cpu_period is not None and not 1000 <= resources.cpu_period <= 1_000_000:
        raise _invalid("linux.resources.cpu.period", "microseconds from 1000 to 1000000")
    if resources.cpu_quota is not None and resources.cpu_quota < 1000 and resources.cpu_quota != -1:
        raise _invalid("linux.resources.cpu.quota", "at least 1000 microseconds, or -1")
    for name, value in (
        ("linux.resources.cpu.cpus", resources.cpuset_cpus),
        ("linux.resources.cpu.mems", resources.cpuset_mems),
    ):
        if value is not None and not is_cpu_list(value):
            raise _invalid(name, f"a list such as 0-2,4, not {value!r}")


def is_cpu_list(text: str) -> bool:
    """Tell whether ``text`` is a cgroup cpu or node list such as 0-2,4: decimal numbers
    or ranges joined by commas.

    Plain string checks in place of a regular expression, because importing re costs
    create about 1 ms by ``-X importtime``.
    """
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not _is_decimal(first) or (dash and not _is_decimal(last)):
            return False
    return True


def _is_decimal(text: str) -> bool:
    # str.isdigit alone accepts digits of other scripts and superscripts.
    return text.isascii() and text.isdigit()


def _device_rules(value: object) -> list[DeviceRule]:
    rules = []
    for index, item in enumerate(_list(value, "linux.resources.devices")):
        where = f"linux.resources.devices[{index}]"
        entry = _object(item, where)
        kind = _string(entry.get("type", "a"), f"{where}.type")
        if kind not in ("a", "b", "c"):
            raise _invalid(f"{where}.type", f"a, b or c, not {kind!r}")
        access = _string(entry.get("access", "rwm"), f"{where}.access")
        if not access or set(access) - set("rwm"):
            raise _invalid(f"{where}.access", f"letters from rwm, not {access!r}")
        rules.append(
            DeviceRule(
                allow=_boolean(entry.get("allow"), f"{where}.allow"),
                type=kind,
                major=_optional_integer(entry.get("major"), f"{where}.major"),
                minor=_optional_integer(entry.get("minor"), f"{where}.minor"),
                access=access,
            )
        )
    return rules


def _devices(value: object) -> list[Device]:
    devices = []
    for index, item in enumerate(_list(value, "linux.devices")):
        where = f"linux.devices[{index}]"
        entry = _object(item, where)
        path = _string(entry.get("path"), f"{where}.path")
        if not path.startswith("/dev/"):
            raise _invalid(f"{where}.path", f"a path under /dev, not {path!r}")
        kind = _string(entry.get("type"), f"{where}.type")
        if kind not in ("c", "b", "u", "p"):
            raise _invalid(f"{where}.type", f"c, b, u or p, not {kind!r}")
        devices.append(
            Device(
                path=path,
                type=kind,
                major=_integer(entry.get("major", 0), f"{where}.major", 0, 2**32 - 1),
                minor=_integer(entry.get("minor", 0), f"{where}.minor", 0, 2**32 - 1),
                file_mode=_integer(entry.get("fileMode", 0o666), f"{where}.fileMode", 0, 0o7777),
                uid=_id(entry.get("uid", 0), f"{where}.uid"),
                gid=_id(entry.get("gid", 0), f"{where}.gid"),
            )
        )
    return devices


def _propagation(value: object) -> str | None:
    allowed = ("private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable")
    if value is None or value == "":
        return None
    text = _string(value, "linux.rootfsPropagation")
    if text not in allowed:
        raise _invalid("linux.rootfsPropagation", f"one of {', '.join(allowed)}")
    return text


def _absolute_paths(value: object, where: str) -> list[str]:
    paths = _string_list(value, where)
    for path in paths:
        if not path.startswith("/"):
            raise _invalid(where, f"absolute paths, not {path!r}")
    return paths


def _invalid(where: str, expected: str) -> InvalidArgument:
    return InvalidArgument(f"invalid config.json: {where}: expected {expected}")


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(where, "an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(where, "a list")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _invalid(where, "a string")
    return value


def _optional_string(value: object, where: str) -> str | None:
    return None if value is None else _string(value, where)


def _string_list(value: object, where: str) -> list[str]:
    items = _list(value, where)
    if not all(isinstance(item, str) for item in items):
        raise _invalid(where, "a list of strings")
    return items


def _string_map(value: object, where: str) -> dict[str, str]:
    mapping = _object(value, where)
    if not all(isinstance(v, str) for v in mapping.values()):
        raise _invalid(where, "an object of strings")
    return mapping


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid(where, "true or false")
    return value


def _integer(value: object, where: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(where, "an integer")
    if not minimum <= value <= maximum:
        raise _invalid(where, f"an integer from {minimum} to {maximum}, not {value}")
    return value


def _optional_integer(value: object, where: str) -> int | None:
    return None if value is None else _integer(value, where, -(2**63), 2**63 - 1)


def _id(value: object, where: str) -> int:
    return _integer(value, where, 0, 2**32 - 2)
