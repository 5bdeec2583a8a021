"""runc's extra verbs: ps, pause, resume, update, features and list.

Split from :mod:`ketch.runtime.cli` to keep that module about the standard verbs. Like
them, each handler parses, calls the library and prints, and imports what it needs
only when it runs, because every ``ketch-runc`` call builds these parsers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ketch.errors import InvalidArgument, NotFound, SystemFailure


def add_parsers(verbs: Any, runtime: Any) -> None:
    """Add the verbs to ``verbs``; ``runtime(arguments)`` returns the library object."""
    ps = verbs.add_parser("ps", help="list the processes of a container")
    ps.add_argument("--format", "-f", choices=("table", "json"), default="table")
    ps.add_argument("id")
    ps.add_argument("ps_options", nargs=argparse.REMAINDER, help="options for ps (default -ef)")
    ps.set_defaults(handler=lambda arguments: _ps(runtime(arguments), arguments))

    pause = verbs.add_parser("pause", help="freeze every process of a container")
    pause.add_argument("id")
    pause.set_defaults(handler=lambda arguments: _pause(runtime(arguments), arguments))

    resume = verbs.add_parser("resume", help="thaw a paused container")
    resume.add_argument("id")
    resume.set_defaults(handler=lambda arguments: _resume(runtime(arguments), arguments))

    update = verbs.add_parser("update", help="change a container's cgroup limits")
    update.add_argument("--resources", "-r", help="JSON file of linux.resources (- is stdin)")
    for flag, _field, unit in _UPDATE_FLAGS:
        update.add_argument(flag, help=f"new value ({unit})")
    update.add_argument("id")
    update.set_defaults(handler=lambda arguments: _update(runtime(arguments), arguments))

    features = verbs.add_parser("features", help="print what this runtime implements, as JSON")
    features.set_defaults(handler=_features)

    listing = verbs.add_parser("list", help="list the containers under --root")
    listing.add_argument(
        "--format", "-f", choices=("table", "json"), default="table", help="output format"
    )
    listing.add_argument("--quiet", "-q", action="store_true", help="print ids only")
    listing.set_defaults(handler=lambda arguments: _list(runtime(arguments), arguments))


def _ps(runtime: Any, arguments: argparse.Namespace) -> int:
    import json
    import subprocess

    pids = runtime.processes(arguments.id)
    if arguments.format == "json":
        print(json.dumps(pids))
        return 0
    options = arguments.ps_options or ["-ef"]
    try:
        output = subprocess.run(["ps", *options], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        raise NotFound("ps is not installed, so only --format json works") from None
    except subprocess.CalledProcessError as error:
        raise SystemFailure(f"ps {' '.join(options)} failed: {error.stderr.strip()}") from None
    print(_filter_ps(output, set(pids)), end="")
    return 0


def _filter_ps(output: str, pids: set[int]) -> str:
    """Keep the header of ``ps`` output and the lines whose PID column is in ``pids``."""
    lines = output.splitlines(keepends=True)
    if not lines:
        return ""
    header = lines[0].split()
    if "PID" not in header:
        raise InvalidArgument("the ps options must keep the PID column")
    column = header.index("PID")
    kept = [line for line in lines[1:] if _pid_at(line, column) in pids]
    return "".join([lines[0], *kept])


def _pid_at(line: str, column: int) -> int | None:
    fields = line.split()
    try:
        return int(fields[column])
    except (IndexError, ValueError):
        return None


def _list(runtime: Any, arguments: argparse.Namespace) -> int:
    """Print the containers as ``runc list`` (1.1) does: ids only with ``--quiet``, even
    with ``--format``, else a table or a JSON array."""
    containers = runtime.list()
    if arguments.quiet:
        for container in containers:
            print(container["id"])
        return 0

    # The owner costs a stat and a user database lookup per container, so --quiet skips it.
    owners = {
        container["id"]: _owner_of(runtime.state_root / container["id"]) for container in containers
    }
    if arguments.format == "json":
        import json

        for container in containers:
            container["owner"] = owners[container["id"]]
        print(json.dumps(containers))
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        for container in containers:
            rows.append(
                [
                    container["id"],
                    str(container["pid"]),
                    container["status"],
                    container["bundle"],
                    _rfc3339_nano(container["created"]),
                    owners[container["id"]],
                ]
            )
        print(format_table(rows), end="")
    return 0


def _owner_of(directory: Path) -> str:
    """Return the name of the user who owns the container's state directory, or ``#uid``
    when the user database has no name for it, as runc does."""
    import pwd

    try:
        uid = directory.stat().st_uid
    except FileNotFoundError:
        # The container was deleted since the list was read.
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def _rfc3339_nano(timestamp: str) -> str:
    """Drop the trailing zeros of the fraction of seconds, as Go's RFC3339Nano layout does.

    The state keeps ``created`` with nine digits, ``2024-01-02T03:04:05.120000000Z``,
    and runc prints ``2024-01-02T03:04:05.12Z`` for it.
    """
    if "." not in timestamp or not timestamp.endswith("Z"):
        return timestamp
    whole, fraction = timestamp[:-1].split(".", 1)
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}Z" if fraction else f"{whole}Z"


# The cell layout of runc's list table, from Go's text/tabwriter as runc sets it up: a
# column is as wide as its widest cell plus TABLE_PADDING, and at least TABLE_MIN_WIDTH.
TABLE_MIN_WIDTH = 12
TABLE_PADDING = 3


def format_table(rows: list[list[str]]) -> str:
    """Lay out ``rows`` as runc's tables are laid out. Every cell but the last of a row is
    padded with spaces, and the last is printed as it is, as tabwriter prints the text
    after a row's last tab."""
    widths = [
        max(TABLE_MIN_WIDTH, max(len(row[column]) for row in rows) + TABLE_PADDING)
        for column in range(len(rows[0]) - 1)
    ]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("".join(cells) + row[-1] + "\n")
    return "".join(lines)


def _pause(runtime: Any, arguments: argparse.Namespace) -> int:
    runtime.pause(arguments.id)
    return 0


def _resume(runtime: Any, arguments: argparse.Namespace) -> int:
    runtime.resume(arguments.id)
    return 0


# Flag, field path in linux.resources, and the unit shown in the help.
_UPDATE_FLAGS = (
    ("--memory", ("memory", "limit"), "bytes, or with a k, m or g suffix"),
    ("--memory-reservation", ("memory", "reservation"), "bytes, or with a k, m or g suffix"),
    ("--memory-swap", ("memory", "swap"), "memory plus swap in bytes, -1 for unlimited"),
    ("--cpu-shares", ("cpu", "shares"), "relative weight"),
    ("--cpu-quota", ("cpu", "quota"), "microseconds per period, -1 for unlimited"),
    ("--cpu-period", ("cpu", "period"), "microseconds"),
    ("--cpuset-cpus", ("cpu", "cpus"), "CPU list such as 0-2,4"),
    ("--cpuset-mems", ("cpu", "mems"), "memory node list such as 0"),
    ("--pids-limit", ("pids", "limit"), "max number of processes, 0 or less for unlimited"),
)


def _update(runtime: Any, arguments: argparse.Namespace) -> int:
    resources: dict[str, Any] = {}
    if arguments.resources:
        resources = _load_resources(arguments.resources)
    for flag, (group, name), _unit in _UPDATE_FLAGS:
        value = getattr(arguments, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            resources.setdefault(group, {})[name] = _flag_value(flag, name, value)
    if not resources:
        raise InvalidArgument("update needs --resources or at least one limit flag")
    runtime.update(arguments.id, resources)
    return 0


def _load_resources(path: str) -> dict[str, Any]:
    import json

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except FileNotFoundError:
        raise NotFound(f"resources file {path} does not exist (--resources)") from None
    except OSError as error:
        raise InvalidArgument(f"cannot read resources file {path}: {error.strerror}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"invalid resources file {path}: {error}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"invalid resources file {path}: expected a JSON object")
    return document


_SIZE_PATTERN = r"(-?[0-9]+)([kmg]?)b?"
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _flag_value(flag: str, name: str, text: str) -> int | str:
    if name in ("cpus", "mems"):
        return text
    import re

    match = re.fullmatch(_SIZE_PATTERN, text.strip(), re.IGNORECASE)
    if match is None or (match.group(2) and not flag.startswith("--memory")):
        raise InvalidArgument(f"invalid {flag} {text!r}: expected an integer")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


def _features(arguments: argparse.Namespace) -> int:
    import json

    from ketch.runtime.features import features

    print(json.dumps(features(), indent=2))
    return 0
