"""``ketch volume create|ls|inspect|rm|prune``, with docker's flags and output, over the
``/volumes`` routes of the Engine API."""

from __future__ import annotations

import sys

from ketch.cli.errors import ProtocolFailure, UsageError
from ketch.cli.humanize import human_size
from ketch.cli.inspect import INSPECT_FORMAT
from ketch.cli.options import TABLE_FORMAT_FLAG, Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.client import Client
    from ketch.cli.main import Context

DEFAULT_TABLE = "{{.Driver}}\t{{.Name}}"
HEADERS = {
    "Name": "VOLUME NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
}
PRUNE_WARNING = "This will remove anonymous local volumes not used by at least one container."
PRUNE_ALL_WARNING = "This will remove all local volumes not used by at least one container."


def create(context: Context, options: dict, args: list[str]) -> int:
    if args and options["name"] and args[0] != options["name"]:
        raise UsageError(
            f"conflicting volume names: --name {options['name']} and argument {args[0]}"
        )
    body = {
        "Name": args[0] if args else options["name"],
        "Driver": options["driver"],
        "DriverOpts": pairs(options["opt"], "--opt"),
        "Labels": pairs(options["label"], "--label", value_required=False),
    }
    volume = context.client().call("POST", "/volumes/create", body=body)
    if not isinstance(volume, dict) or "Name" not in volume:
        raise ProtocolFailure(f"invalid reply to volume create: {volume!r}")
    sys.stdout.write(f"{volume['Name']}\n")
    return 0


def pairs(values: list[str], flag: str, value_required: bool = True) -> dict[str, str]:
    """Parse repeated ``KEY=VALUE`` flag values, and also bare ``KEY`` values unless
    ``value_required``."""
    parsed = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not key or (value_required and not separator):
            raise UsageError(f"invalid {flag} {value!r}: expected KEY=VALUE")
        parsed[key] = text
    return parsed


def volume_options(value: str, fields: dict[str, str], repeated: dict[str, list[str]]) -> dict:
    """Take the volume keys out of a parsed ``--mount`` value and return its VolumeOptions:
    volume-nocopy, volume-label (repeated), volume-driver and volume-opt (repeated)."""
    options: dict = {}
    nocopy = fields.pop("volume-nocopy", "false")
    if parse_mount_bool(value, "volume-nocopy", nocopy):
        options["NoCopy"] = True
    labels = pairs(repeated["volume-label"], f"--mount {value!r} volume-label", False)
    if labels:
        options["Labels"] = labels
    driver = fields.pop("volume-driver", "")
    driver_options = pairs(repeated["volume-opt"], f"--mount {value!r} volume-opt")
    if driver or driver_options:
        options["DriverConfig"] = {"Name": driver or "local", "Options": driver_options}
    return options


# The spellings that Go's strconv.ParseBool accepts, as the docker CLI parses the boolean
# keys of --mount (readonly, volume-nocopy).
_TRUE_VALUES = ("1", "t", "T", "true", "TRUE", "True")
_FALSE_VALUES = ("0", "f", "F", "false", "FALSE", "False")


def parse_mount_bool(value: str, key: str, text: str) -> bool:
    """Parse the boolean ``text`` of ``key`` in the ``--mount`` value ``value``."""
    if text in _TRUE_VALUES:
        return True
    if text in _FALSE_VALUES:
        return False
    raise UsageError(
        f'invalid argument "{value}" for "--mount" flag: invalid value for {key}: {text!r}; '
        f"expected one of {', '.join(_TRUE_VALUES + _FALSE_VALUES)}"
    )


def list_volumes(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.ps import filters_json

    query = {"filters": filters_json(options["filter"])} if options["filter"] else {}
    reply = context.client().call("GET", "/volumes", query)
    volumes = reply.get("Volumes") if isinstance(reply, dict) else None
    if not isinstance(volumes, list):
        raise ProtocolFailure(f"invalid reply to volume ls: {reply!r}")
    volumes.sort(key=lambda volume: volume.get("Name") or "")
    if options["quiet"]:
        sys.stdout.write("".join(f"{volume.get('Name', '')}\n" for volume in volumes))
        return 0
    from ketch.cli.formatter import render
    from ketch.cli.ps import HeaderRow

    rows = [VolumeRow(volume) for volume in volumes]
    sys.stdout.write(render(options["format"], DEFAULT_TABLE, HeaderRow(HEADERS), rows))
    return 0


class VolumeRow:
    """One volume of a ``GET /volumes`` or ``GET /system/df`` reply, with the fields of
    docker's ``volume ls`` template."""

    def __init__(self, volume: dict) -> None:
        labels = volume.get("Labels") or {}
        usage = volume.get("UsageData") or {}
        self.Name = volume.get("Name") or ""
        self.Driver = volume.get("Driver") or ""
        self.Scope = volume.get("Scope") or ""
        self.Mountpoint = volume.get("Mountpoint") or ""
        self.Labels = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        links = usage.get("RefCount")
        size = usage.get("Size")
        # Docker prints N/A when the daemon did not compute usage (no UsageData, or -1).
        self.Links = "N/A" if links is None or links < 0 else str(links)
        self.Size = "N/A" if size is None or size < 0 else human_size(size)

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in sorted(HEADERS)}


def inspect(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.inspect import fetch_each, write_inspect

    found, missing = fetch_each(context.client(), args, "/volumes/{name}")
    return write_inspect(options["format"], found, [str(error) for _, error in missing])


def remove(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.lifecycle import delete_each

    query = {"force": "1"} if options["force"] else {}
    return delete_each(context.client(), args, "/volumes/{name}", query)


def prune(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.system import confirm

    if not confirm(options, PRUNE_ALL_WARNING if options["all"] else PRUNE_WARNING):
        return 0
    return request_prune(context.client(), options["filter"], prune_all=bool(options["all"]))


def request_prune(client: Client, filters: list[str], prune_all: bool) -> int:
    """Send POST /volumes/prune with ``filters`` (``KEY=VALUE`` strings), and print the
    deleted volumes and the space reclaimed."""
    from ketch.cli.ps import filters_json

    # An explicit all=false keeps named volumes also where the client's API version is below
    # 1.42, for which dockerd (and ketchd) prune named volumes by default.
    selected = [*filters, f"all={str(prune_all).lower()}"]
    result = client.call("POST", "/volumes/prune", {"filters": filters_json(selected)})
    if not isinstance(result, dict):
        raise ProtocolFailure(f"invalid reply to volume prune: {result!r}")
    deleted = result.get("VolumesDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Volumes:\n" + "".join(f"{name}\n" for name in deleted) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(result.get('SpaceReclaimed') or 0)}\n")
    return 0


_FILTER = Flag(
    "filter",
    "Provide filter values (e.g. 'dangling=true')",
    short="f",
    metavar="filter",
    repeated=True,
)

VERBS = {
    "volume-create": (
        Command(
            "volume create",
            "ketch volume create [OPTIONS] [VOLUME]",
            "Create a volume",
            (
                Flag(
                    "driver",
                    "Specify volume driver name",
                    short="d",
                    metavar="string",
                    default="local",
                ),
                Flag("label", "Set metadata for a volume", metavar="list", repeated=True),
                Flag("name", "Specify volume name", metavar="string", default=""),
                Flag("opt", "Set driver specific options", short="o", metavar="map", repeated=True),
            ),
            max_args=1,
        ),
        create,
    ),
    "volume-ls": (
        Command(
            "volume ls",
            "ketch volume ls [OPTIONS]",
            "List volumes",
            (
                _FILTER,
                TABLE_FORMAT_FLAG,
                Flag("quiet", "Only display volume names", short="q"),
            ),
            max_args=0,
        ),
        list_volumes,
    ),
    "volume-inspect": (
        Command(
            "volume inspect",
            "ketch volume inspect [OPTIONS] VOLUME [VOLUME...]",
            "Display detailed information on one or more volumes",
            (INSPECT_FORMAT,),
            min_args=1,
        ),
        inspect,
    ),
    "volume-rm": (
        Command(
            "volume rm",
            "ketch volume rm [OPTIONS] VOLUME [VOLUME...]",
            "Remove one or more volumes",
            (Flag("force", "Force the removal of one or more volumes", short="f"),),
            min_args=1,
        ),
        remove,
    ),
    "volume-prune": (
        Command(
            "volume prune",
            "ketch volume prune [OPTIONS]",
            "Remove unused local volumes",
            (
                Flag("all", "Remove all unused volumes, not just anonymous ones", short="a"),
                Flag(
                    "filter",
                    "Provide filter values (e.g. 'label=<label>')",
                    metavar="filter",
                    repeated=True,
                ),
                Flag("force", "Do not prompt for confirmation", short="f"),
            ),
            max_args=0,
        ),
        prune,
    ),
}
