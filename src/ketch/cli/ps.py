"""``ketch ps``: list containers in docker's table, or in the ``--format`` requested."""

from __future__ import annotations

import json
import sys
import time

from ketch.cli.humanize import human_duration, human_size, truncate
from ketch.cli.options import FILTER_FLAG, TABLE_FORMAT_FLAG, Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "ps",
    "ketch ps [OPTIONS]",
    "List containers",
    (
        Flag("all", "Show all containers (default shows just running)", short="a"),
        FILTER_FLAG,
        TABLE_FORMAT_FLAG,
        Flag(
            "last", "Show n last created containers (includes all states)", short="n", metavar="int"
        ),
        Flag("latest", "Show the latest created container (includes all states)", short="l"),
        Flag("no-trunc", "Don't truncate output"),
        Flag("quiet", "Only display container IDs", short="q"),
        Flag("size", "Display total file sizes", short="s"),
    ),
    max_args=0,
)

DEFAULT_TABLE = (
    "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
)
# The fields of DEFAULT_TABLE, in its order.
DEFAULT_FIELDS = ("ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names")
HEADERS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "State": "STATE",
    "Status": "STATUS",
    "Size": "SIZE",
    "Names": "NAMES",
    "Labels": "LABELS",
    "Label": "LABEL",
    "Mounts": "MOUNTS",
    "Networks": "NETWORKS",
    "LocalVolumes": "LOCAL VOLUMES",
}
SHORT_ID_LENGTH = 12
COMMAND_WIDTH = 20


def execute(context: Context, options: dict, args: list[str]) -> int:
    containers = context.client().call("GET", "/containers/json", list_query(options))
    if not isinstance(containers, list):
        from ketch.cli.errors import ProtocolFailure

        raise ProtocolFailure(f"invalid reply to container list: {containers!r}")
    truncated = not options["no-trunc"]
    if options["quiet"]:
        for container in containers:
            sys.stdout.write(short_id(container["Id"], truncated) + "\n")
        return 0
    now = time.time()
    rows = [ContainerRow(container, now, truncated) for container in containers]
    if options["format"].strip() in ("", "table"):
        sys.stdout.write(default_table(rows, options["size"]))
        return 0
    from ketch.cli.formatter import render

    default = DEFAULT_TABLE + ("\t{{.Size}}" if options["size"] else "")
    sys.stdout.write(render(options["format"], default, HeaderRow(HEADERS), rows))
    return 0


def default_table(rows: list[ContainerRow], size: bool) -> str:
    """Render the default table without the template engine.

    The output is the same as rendering ``DEFAULT_TABLE``, at a fraction of the cost for
    many containers.
    """
    from ketch.cli.formatter import tabulate

    fields = DEFAULT_FIELDS + (("Size",) if size else ())
    lines = ["\t".join(HEADERS[name] for name in fields)]
    for row in rows:
        lines.append("\t".join(getattr(row, name) for name in fields))
    return tabulate("\n".join(lines) + "\n")


def list_query(options: dict) -> dict[str, str]:
    """Build the ``GET /containers/json`` query from the flags."""
    query = {}
    if options["all"]:
        query["all"] = "1"
    if options["latest"]:
        query["limit"] = "1"
    elif options["last"] is not None:
        query["limit"] = str(parse_count(options["last"], "--last"))
    # As docker does, a template that shows .Size requests the sizes from the daemon.
    if options["size"] or ".Size" in (options["format"] or ""):
        query["size"] = "1"
    if options["filter"]:
        query["filters"] = filters_json(options["filter"])
    return query


def parse_count(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        from ketch.cli.errors import UsageError

        raise UsageError(
            f'invalid argument "{text}" for "{flag}" flag: expected an integer'
        ) from None


def filters_json(values: list[str]) -> str:
    """Encode ``-f key=value`` flags as the API's ``filters`` JSON: ``{"key": ["value"]}``."""
    filters: dict[str, list[str]] = {}
    for value in values:
        key, separator, text = value.partition("=")
        if not separator or not key.strip():
            from ketch.cli.errors import UsageError

            raise UsageError(f"invalid filter {value!r}: expected KEY=VALUE")
        filters.setdefault(key.strip().lower(), []).append(text)
    return json.dumps(filters)


def short_id(identifier: str, truncated: bool = True) -> str:
    identifier = identifier.removeprefix("sha256:")
    return identifier[:SHORT_ID_LENGTH] if truncated else identifier


class HeaderTitle(str):
    """A column title that a template may also call as a method (``{{.Label "k"}}``)."""

    def __call__(self, *arguments: object) -> str:
        return str(self)


class HeaderRow:
    """The value a table's header row is rendered with: each field is its column title."""

    def __init__(self, titles: dict[str, str]) -> None:
        self._titles = titles

    def __getattr__(self, name: str) -> HeaderTitle:
        titles = self.__dict__.get("_titles", {})
        if name not in titles:
            raise AttributeError(name)
        return HeaderTitle(titles[name])

    def to_json(self) -> dict[str, str]:
        return dict(self._titles)


class ContainerRow:
    """One ``GET /containers/json`` item with the fields docker's ``ps`` templates use."""

    def __init__(self, container: dict, now: float, truncated: bool = True) -> None:
        self._container = container
        self._now = now
        self._truncated = truncated

    @property
    def ID(self) -> str:  # noqa: N802 - the field names are docker's template names
        return short_id(self._container["Id"], self._truncated)

    @property
    def Image(self) -> str:  # noqa: N802
        image = self._container.get("Image") or ""
        return short_id(image, self._truncated) if image.startswith("sha256:") else image

    @property
    def Command(self) -> str:  # noqa: N802
        command = self._container.get("Command") or ""
        if self._truncated:
            command = truncate(command, COMMAND_WIDTH)
        # Quoted with escapes, as Go's strconv.Quote does in docker's table.
        return json.dumps(command, ensure_ascii=False)

    @property
    def CreatedAt(self) -> str:  # noqa: N802
        return go_time(self._container.get("Created") or 0)

    @property
    def RunningFor(self) -> str:  # noqa: N802
        return f"{human_duration(self._now - (self._container.get('Created') or 0))} ago"

    @property
    def Ports(self) -> str:  # noqa: N802
        return format_ports(self._container.get("Ports") or [])

    @property
    def State(self) -> str:  # noqa: N802
        return self._container.get("State") or ""

    @property
    def Status(self) -> str:  # noqa: N802
        return self._container.get("Status") or ""

    @property
    def Size(self) -> str:  # noqa: N802
        written = human_size(self._container.get("SizeRw") or 0)
        root = self._container.get("SizeRootFs") or 0
        return f"{written} (virtual {human_size(root)})" if root else written

    @property
    def Names(self) -> str:  # noqa: N802
        return ",".join(name.lstrip("/") for name in self._container.get("Names") or [])

    @property
    def Labels(self) -> str:  # noqa: N802
        labels = self._container.get("Labels") or {}
        return ",".join(f"{key}={value}" for key, value in labels.items())

    def Label(self, name: str) -> str:  # noqa: N802
        return (self._container.get("Labels") or {}).get(name, "")

    @property
    def Mounts(self) -> str:  # noqa: N802
        mounts = self._container.get("Mounts") or []
        return ",".join(mount.get("Name") or mount.get("Source") or "" for mount in mounts)

    @property
    def Networks(self) -> str:  # noqa: N802
        networks = (self._container.get("NetworkSettings") or {}).get("Networks") or {}
        return ",".join(networks)

    @property
    def LocalVolumes(self) -> str:  # noqa: N802
        mounts = self._container.get("Mounts") or []
        return str(sum(1 for mount in mounts if mount.get("Driver") == "local"))

    def to_json(self) -> dict[str, str]:
        fields = [name for name in HEADERS if name != "Label"]
        return {name: getattr(self, name) for name in sorted(fields)}


def go_time(timestamp: float) -> str:
    """Format a Unix time as Go's ``time.Time`` prints: ``2024-05-01 10:00:00 +0000 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(timestamp))


def format_ports(ports: list[dict]) -> str:
    """Format port mappings: ``0.0.0.0:8080->80/tcp`` when published, else ``80/tcp``."""
    formatted = []
    for port in ports:
        private = f"{port.get('PrivatePort')}/{port.get('Type', 'tcp')}"
        if port.get("PublicPort"):
            formatted.append(f"{port.get('IP') or '0.0.0.0'}:{port['PublicPort']}->{private}")
        else:
            formatted.append(private)
    return ", ".join(formatted)
