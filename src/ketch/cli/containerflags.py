"""The flags of ``run`` and ``create`` and the ``POST /containers/create`` body they make.

Values are checked here, before any request, so a bad flag exits 125 with nothing
created, and the messages are docker's where scripts match on them. Only the fields a
flag set are sent, because a daemon may reject a field it does not implement even at
its zero value. Sizes (``-m 512m``) are binary units as in docker (``k`` = 1024);
durations (``--health-interval 30s``) are Go durations, sent in nanoseconds.
"""

from __future__ import annotations

import os

from ketch.cli.errors import UsageError
from ketch.cli.options import Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable


def _list(name: str, help: str, short: str = "") -> Flag:
    return Flag(name, help, short=short, metavar="list", repeated=True)


def _value(name: str, help: str, metavar: str = "string", short: str = "") -> Flag:
    return Flag(name, help, short=short, metavar=metavar)


FLAGS = (
    _list("add-host", "Add a custom host-to-IP mapping (host:ip)"),
    _list("attach", "Attach to STDIN, STDOUT or STDERR", short="a"),
    _list("cap-add", "Add Linux capabilities"),
    _list("cap-drop", "Drop Linux capabilities"),
    _value("cpu-period", "Limit CPU CFS (Completely Fair Scheduler) period", "int"),
    _value("cpu-quota", "Limit CPU CFS (Completely Fair Scheduler) quota", "int"),
    _value("cpu-shares", "CPU shares (relative weight)", "int", short="c"),
    _value("cpus", "Number of CPUs", "decimal"),
    _value("cpuset-cpus", "CPUs in which to allow execution (0-3, 0,1)"),
    _value("cpuset-mems", "MEMs in which to allow execution (0-3, 0,1)"),
    _list("dns", "Set custom DNS servers"),
    _list("dns-option", "Set DNS options"),
    _list("dns-search", "Set custom DNS search domains"),
    _value("entrypoint", "Overwrite the default ENTRYPOINT of the image"),
    _list("env", "Set environment variables", short="e"),
    _list("env-file", "Read in a file of environment variables"),
    _list("expose", "Expose a port or a range of ports"),
    _value("health-cmd", "Command to run to check health"),
    _value("health-interval", "Time between running the check (ms|s|m|h)", "duration"),
    _value("health-retries", "Consecutive failures needed to report unhealthy", "int"),
    _value(
        "health-start-period",
        "Start period for the container before counting retries (ms|s|m|h)",
        "duration",
    ),
    _value("health-timeout", "Maximum time to allow one check to run (ms|s|m|h)", "duration"),
    _value("hostname", "Container host name", short="h"),
    Flag("init", "Run an init inside the container that forwards signals and reaps processes"),
    Flag("interactive", "Keep STDIN open even if not attached", short="i"),
    _value("ip", "IPv4 address on the network of --network (e.g., 172.30.100.104)"),
    _list("label", "Set meta data on a container", short="l"),
    _list("label-file", "Read in a line delimited file of labels"),
    _value("log-driver", "Logging driver for the container"),
    _list("log-opt", "Log driver options"),
    _value("mac-address", "Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
    _value("memory", "Memory limit", "bytes", short="m"),
    _value("memory-reservation", "Memory soft limit", "bytes"),
    _value(
        "memory-swap",
        "Swap limit equal to memory plus swap: '-1' to enable unlimited swap",
        "bytes",
    ),
    _list("mount", "Attach a filesystem mount to the container"),
    _value("name", "Assign a name to the container"),
    Flag(
        "network",
        "Connect a container to a network: none, host, bridge, default, a network's name, "
        "or container:NAME to share another container's",
        metavar="network",
        default="default",
    ),
    _list("network-alias", "Add network-scoped alias for the container"),
    Flag("no-healthcheck", "Disable any container-specified HEALTHCHECK"),
    Flag("oom-kill-disable", "Disable OOM Killer"),
    _value("pid", "PID namespace to use"),
    _value("pids-limit", "Tune container pids limit (set -1 for unlimited)", "int"),
    Flag("privileged", "Give extended privileges to this container"),
    _list("publish", "Publish a container's port(s) to the host", short="p"),
    Flag("publish-all", "Publish all exposed ports to random ports", short="P"),
    _value("pull", 'Pull image before running ("always", "missing", "never")'),
    Flag("read-only", "Mount the container's root filesystem as read only"),
    _value("restart", 'Restart policy to apply when a container exits (default "no")'),
    Flag("rm", "Automatically remove the container and its resources when it exits"),
    _value("runtime", "Runtime to use for this container"),
    _list("security-opt", "Security Options"),
    _value("shm-size", "Size of /dev/shm", "bytes"),
    _value("stop-signal", "Signal to stop the container"),
    _value("stop-timeout", "Timeout (in seconds) to stop a container", "int"),
    _list("sysctl", "Sysctl options"),
    _list("tmpfs", "Mount a tmpfs directory"),
    Flag("tty", "Allocate a pseudo-TTY", short="t"),
    _list("ulimit", "Ulimit options"),
    _value("user", "Username or UID (format: <name|uid>[:<group|gid>])", short="u"),
    _list("volume", "Bind mount a volume", short="v"),
    _list("volumes-from", "Mount volumes from the specified container(s)"),
    _value("workdir", "Working directory inside the container", short="w"),
)

RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
_SIZE_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def flag_error(value: str, flag: str, reason: str) -> UsageError:
    return UsageError(f'invalid argument "{value}" for "{flag}" flag: {reason}')


def parse_bytes(value: str, flag: str) -> int:
    """Parse a size as docker's RAMInBytes does: ``512m``, ``1.5g``, ``1024``, ``2kb``."""
    text = value.strip().lower()
    number = text.rstrip("bkmgtpi")
    suffix = text[len(number) :].removesuffix("ib").removesuffix("b") or "b"
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if amount < 0 or suffix not in _SIZE_UNITS:
        raise flag_error(value, flag, f"invalid size: '{value}'")
    return int(amount * _SIZE_UNITS[suffix])


def parse_int(value: str, flag: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise flag_error(value, flag, "expected an integer") from None


def parse_duration_ns(value: str, flag: str) -> int:
    from ketch.cli.logs import parse_duration

    seconds = parse_duration(value.strip())
    if seconds is None:
        raise flag_error(value, flag, "expected a duration such as 30s, 1m30s or 500ms")
    return int(seconds * 1e9)


def parse_restart(value: str, auto_remove: bool) -> dict:
    """Parse ``--restart no|always|unless-stopped|on-failure[:N]`` into a RestartPolicy."""
    name, separator, count = value.partition(":")
    if name not in RESTART_POLICIES:
        raise UsageError(
            f"invalid restart policy {value!r}: expected no, always, unless-stopped or "
            "on-failure[:max-retries]"
        )
    policy: dict = {"Name": name}
    if separator:
        if name != "on-failure":
            raise UsageError(f"maximum retry count cannot be used with restart policy '{name}'")
        policy["MaximumRetryCount"] = parse_int(count, "--restart")
    if auto_remove and name != "no":
        raise UsageError("Conflicting options: --restart and --rm")
    return policy


def read_env_file(path: str) -> list[str]:
    """Read a docker env file: ``KEY=value`` lines, ``#`` comments, ``KEY`` alone takes
    the CLI's own value (and is skipped when unset). A bad line names file and line."""
    entries = []
    for number, line in enumerate(_read_lines(path, "--env-file"), start=1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        name, separator, value = line.partition("=")
        if not name:
            raise UsageError(
                f"invalid env file {path}, line {number}: no variable name on line '{line}'"
            )
        if any(char.isspace() for char in name):
            raise UsageError(
                f"invalid env file {path}, line {number}: poorly formatted environment: "
                f"variable '{name}' contains whitespaces"
            )
        if separator:
            entries.append(f"{name}={value}")
        elif name in os.environ:
            entries.append(f"{name}={os.environ[name]}")
    return entries


def read_label_file(path: str) -> list[str]:
    lines = _read_lines(path, "--label-file")
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _read_lines(path: str, flag: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise UsageError(f"cannot read {flag} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"invalid {flag} {path}: not valid UTF-8") from None
    return text.removeprefix("\ufeff").splitlines()


def environment_entries(values: list[str]) -> list[str]:
    """Turn ``-e`` values into Env entries: ``KEY`` alone takes the CLI's own value of
    KEY, and stays ``KEY`` (which unsets it) when the CLI has none, as in docker."""
    entries = []
    for value in values:
        if "=" not in value and value in os.environ:
            value = f"{value}={os.environ[value]}"
        entries.append(value)
    return entries


def parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, _, text = value.partition("=")
        if not key:
            raise flag_error(value, "-l, --label", "expected KEY=VALUE")
        labels[key] = text
    return labels


def parse_key_values(values: list[str], flag: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator or not key:
            raise flag_error(value, flag, "expected KEY=VALUE")
        result[key] = text
    return result


def parse_ulimit(value: str) -> dict:
    """Parse ``--ulimit nofile=1024[:2048]`` into ``{"Name", "Soft", "Hard"}``."""
    name, separator, limits = value.partition("=")
    soft_text, _, hard_text = limits.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        soft = hard = -2
    if not separator or not name or soft < -1 or hard < -1:
        raise flag_error(value, "--ulimit", "expected NAME=SOFT[:HARD] with integer limits")
    if 0 <= hard < soft:
        raise flag_error(value, "--ulimit", f"soft limit {soft} is above the hard limit {hard}")
    return {"Name": name, "Soft": soft, "Hard": hard}


def parse_add_host(value: str) -> str:
    host, separator, address = value.partition(":")
    if not separator or not host or not address:
        raise flag_error(value, "--add-host", "expected HOST:IP")
    return f"{host}:{address}"


def parse_tmpfs(values: list[str]) -> dict[str, str]:
    mounts = {}
    for value in values:
        path, _, options = value.partition(":")
        if not path.startswith("/"):
            raise flag_error(value, "--tmpfs", "expected an absolute path in the container")
        mounts[path] = options
    return mounts


def parse_volumes(values: list[str]) -> tuple[list[str], dict[str, dict]]:
    """Split ``-v`` values into Binds (``src:dst[:mode]``) and anonymous Volumes (``/dst``)."""
    binds: list[str] = []
    anonymous: dict[str, dict] = {}
    for value in values:
        parts = value.split(":")
        if len(parts) == 1:
            if not value.startswith("/"):
                raise flag_error(value, "-v, --volume", "expected an absolute container path")
            anonymous[value] = {}
        elif len(parts) > 3 or not all(parts[:2]):
            raise flag_error(value, "-v, --volume", "expected SOURCE:DESTINATION[:MODE]")
        elif len(parts) == 2 and parts[0].startswith("/") and _is_volume_mode(parts[1]):
            binds.append(value)  # DESTINATION:MODE, an anonymous volume with a mode
        elif not parts[1].startswith("/"):
            reason = f"invalid mount path: {parts[1]!r}: the destination must be an absolute path"
            raise flag_error(value, "-v, --volume", reason)
        else:
            binds.append(value)
    return binds, anonymous


# The MODE options of -v that docker accepts, comma-separated.
_PROPAGATION_MODES = {"private", "rprivate", "shared", "rshared", "slave", "rslave"}
_VOLUME_MODES = {"ro", "rw", "z", "Z", "nocopy"} | _PROPAGATION_MODES


def _is_volume_mode(text: str) -> bool:
    return all(option in _VOLUME_MODES for option in text.split(","))


_MOUNT_KEYS = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}


def parse_mount(value: str) -> dict:
    """Parse ``--mount type=bind,source=/a,target=/b,readonly`` into a Mount object."""
    fields: dict[str, str] = {}
    # volume-label and volume-opt may repeat, so they are collected as lists.
    repeated: dict[str, list[str]] = {"volume-label": [], "volume-opt": []}
    for part in value.split(","):
        key, separator, text = part.partition("=")
        key = _MOUNT_KEYS.get(key.strip().lower(), key.strip().lower())
        if key in repeated:
            repeated[key].append(text)
            continue
        fields[key] = text if separator else "true"

    kind = fields.pop("type", "volume")
    target = fields.pop("target", "")
    if not target:
        raise flag_error(value, "--mount", "target is required")
    if kind not in ("bind", "volume", "tmpfs"):
        reason = f"unknown mount type {kind!r}: expected bind, volume or tmpfs"
        raise flag_error(value, "--mount", reason)
    mount: dict = {"Type": kind, "Target": target}
    if fields.get("source"):
        mount["Source"] = fields.pop("source")
    from ketch.cli.volume import parse_mount_bool, volume_options

    if parse_mount_bool(value, "readonly", fields.pop("readonly", "false")):
        mount["ReadOnly"] = True

    if "bind-propagation" in fields:
        mount["BindOptions"] = {"Propagation": fields.pop("bind-propagation")}
    tmpfs = _tmpfs_options(value, fields)
    if tmpfs:
        mount["TmpfsOptions"] = tmpfs
    fields.pop("consistency", None)  # accepted and ignored, as on Linux docker does
    volume = volume_options(value, fields, repeated)
    if volume:
        mount["VolumeOptions"] = volume

    if fields:
        raise flag_error(value, "--mount", f"unexpected key {sorted(fields)[0]!r}")
    if kind == "bind" and "Source" not in mount:
        raise flag_error(value, "--mount", "source is required for a bind mount")
    return mount


def _tmpfs_options(value: str, fields: dict[str, str]) -> dict:
    options: dict = {}
    if "tmpfs-size" in fields:
        options["SizeBytes"] = parse_bytes(fields.pop("tmpfs-size"), "--mount")
    if "tmpfs-mode" in fields:
        mode = fields.pop("tmpfs-mode")
        try:
            options["Mode"] = int(mode, 8)
        except ValueError:
            raise flag_error(
                value, "--mount", f"invalid tmpfs-mode {mode!r}: expected octal"
            ) from None
    return options


def parse_publish(values: list[str]) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Parse ``-p [ip:][host_port:]container_port[/protocol]``, ports or ranges, into
    ExposedPorts and PortBindings."""
    from ketch.cli.port import publish_bindings

    exposed: dict[str, dict] = {}
    bindings: dict[str, list[dict]] = {}
    for value in values:
        try:
            pairs = publish_bindings(value)
        except ValueError as error:
            raise flag_error(value, "-p, --publish", str(error)) from None
        for key, binding in pairs:
            exposed[key] = {}
            bindings.setdefault(key, []).append(binding)
    return exposed, bindings


def create_body(image: str, command: list[str], options: dict, detached: bool) -> dict:
    """Build the ``POST /containers/create`` body for the parsed flags."""
    attach = [stream.lower() for stream in options["attach"]]
    for stream in attach:
        if stream not in ("stdin", "stdout", "stderr"):
            raise flag_error(stream, "-a, --attach", "expected STDIN, STDOUT or STDERR")
    interactive = bool(options["interactive"])
    attached = not detached
    body: dict = {
        "Image": image,
        "Cmd": command or None,
        "AttachStdin": attached and (interactive or "stdin" in attach),
        "AttachStdout": attached and (not attach or "stdout" in attach),
        "AttachStderr": attached and (not attach or "stderr" in attach),
        "Tty": bool(options["tty"]),
        "OpenStdin": interactive,
        "StdinOnce": attached and interactive,
    }
    environment = [entry for path in options["env-file"] for entry in read_env_file(path)]
    body["Env"] = environment + environment_entries(options["env"])
    _set_config_fields(body, options)
    body["HostConfig"] = host_config(options)
    endpoint = endpoint_config(options)
    if endpoint:
        body["NetworkingConfig"] = {"EndpointsConfig": {options["network"]: endpoint}}
    return body


def endpoint_config(options: dict) -> dict:
    """Build the endpoint settings of --network from --ip, --network-alias, --mac-address."""
    endpoint: dict = {}
    if options["network-alias"]:
        endpoint["Aliases"] = list(options["network-alias"])
    if options["ip"]:
        endpoint["IPAMConfig"] = {"IPv4Address": options["ip"]}
    if options["mac-address"]:
        endpoint["MacAddress"] = options["mac-address"]
    return endpoint


def _set_config_fields(body: dict, options: dict) -> None:
    simple = {
        "hostname": "Hostname",
        "user": "User",
        "workdir": "WorkingDir",
        "stop-signal": "StopSignal",
    }
    for flag, field in simple.items():
        if options[flag]:
            body[field] = options[flag]
    if options["entrypoint"] is not None:
        body["Entrypoint"] = [options["entrypoint"]]
    if options["stop-timeout"] is not None:
        body["StopTimeout"] = parse_int(options["stop-timeout"], "--stop-timeout")
    labels = [line for path in options["label-file"] for line in read_label_file(path)]
    if labels or options["label"]:
        body["Labels"] = parse_labels(labels + options["label"])
    exposed = {(port if "/" in port else f"{port}/tcp"): {} for port in options["expose"]}
    published, _ = parse_publish(options["publish"])
    if exposed or published:
        body["ExposedPorts"] = {**exposed, **published}
    _, anonymous = parse_volumes(options["volume"])
    if anonymous:
        body["Volumes"] = anonymous
    healthcheck = parse_healthcheck(options)
    if healthcheck:
        body["Healthcheck"] = healthcheck


def parse_healthcheck(options: dict) -> dict | None:
    if options["no-healthcheck"]:
        if options["health-cmd"]:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    check: dict = {}
    if options["health-cmd"]:
        check["Test"] = ["CMD-SHELL", options["health-cmd"]]
    durations = {
        "health-interval": "Interval",
        "health-timeout": "Timeout",
        "health-start-period": "StartPeriod",
    }
    for flag, field in durations.items():
        if options[flag] is not None:
            check[field] = parse_duration_ns(options[flag], f"--{flag}")
    if options["health-retries"] is not None:
        check["Retries"] = parse_int(options["health-retries"], "--health-retries")
    return check or None


def host_config(options: dict) -> dict:
    """Build HostConfig from the flags, with only the fields that were set."""
    config: dict = {"AutoRemove": bool(options["rm"])}
    if options["network"]:
        config["NetworkMode"] = options["network"]
    if options["restart"]:
        config["RestartPolicy"] = parse_restart(options["restart"], bool(options["rm"]))
    _set_resources(config, options)

    lists = {
        "cap-add": "CapAdd",
        "cap-drop": "CapDrop",
        "dns": "Dns",
        "dns-option": "DnsOptions",
        "dns-search": "DnsSearch",
        "security-opt": "SecurityOpt",
    }
    for flag, field in lists.items():
        if options[flag]:
            config[field] = list(options[flag])
    flags = {"privileged": "Privileged", "read-only": "ReadonlyRootfs", "init": "Init"}
    for flag, field in flags.items():
        if options[flag]:
            config[field] = True
    if options["publish-all"]:
        config["PublishAllPorts"] = True

    converted: dict[str, tuple[str, Callable[[list[str]], object]]] = {
        "add-host": ("ExtraHosts", lambda values: [parse_add_host(value) for value in values]),
        "ulimit": ("Ulimits", lambda values: [parse_ulimit(value) for value in values]),
        "tmpfs": ("Tmpfs", parse_tmpfs),
        "sysctl": ("Sysctls", lambda values: parse_key_values(values, "--sysctl")),
        "mount": ("Mounts", lambda values: [parse_mount(value) for value in values]),
        "volume": ("Binds", lambda values: parse_volumes(values)[0]),
        "volumes-from": ("VolumesFrom", list),
        "publish": ("PortBindings", lambda values: parse_publish(values)[1]),
    }
    for flag, (field, convert) in converted.items():
        if options[flag]:
            result = convert(options[flag])
            if result:
                config[field] = result

    if options["pid"]:
        config["PidMode"] = options["pid"]
    if options["runtime"]:
        config["Runtime"] = options["runtime"]
    if options["log-driver"] or options["log-opt"]:
        config["LogConfig"] = {
            "Type": options["log-driver"] or "",
            "Config": parse_key_values(options["log-opt"], "--log-opt"),
        }
    return config


def _set_resources(config: dict, options: dict) -> None:
    sizes = {
        "memory": ("Memory", "-m, --memory"),
        "memory-reservation": ("MemoryReservation", "--memory-reservation"),
        "shm-size": ("ShmSize", "--shm-size"),
    }
    for flag, (field, label) in sizes.items():
        if options[flag]:
            config[field] = parse_bytes(options[flag], label)
    if options["memory-swap"]:
        swap = options["memory-swap"]
        config["MemorySwap"] = -1 if swap.strip() == "-1" else parse_bytes(swap, "--memory-swap")
    integers = {
        "cpu-shares": ("CpuShares", "-c, --cpu-shares"),
        "cpu-period": ("CpuPeriod", "--cpu-period"),
        "cpu-quota": ("CpuQuota", "--cpu-quota"),
        "pids-limit": ("PidsLimit", "--pids-limit"),
    }
    for flag, (field, label) in integers.items():
        if options[flag] is not None:
            config[field] = parse_int(options[flag], label)
    if options["cpus"]:
        config["NanoCpus"] = parse_cpus(options["cpus"])
    for flag, field in (("cpuset-cpus", "CpusetCpus"), ("cpuset-mems", "CpusetMems")):
        if options[flag]:
            config[field] = options[flag]
    if options["oom-kill-disable"]:
        config["OomKillDisable"] = True


def parse_cpus(value: str) -> int:
    try:
        cpus = float(value)
    except ValueError:
        raise flag_error(value, "--cpus", f"failed to parse {value} as a rational number") from None
    if cpus < 0:
        raise flag_error(value, "--cpus", "expected a positive number of CPUs")
    return int(round(cpus * 1e9))
