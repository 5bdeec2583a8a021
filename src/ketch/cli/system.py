"""``info``, ``system df`` and the prune commands: daemon-wide views and clean-up."""

from __future__ import annotations

import sys

from ketch.cli.errors import UsageError
from ketch.cli.humanize import human_size
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.client import Client
    from ketch.cli.main import Context

_FORMAT = Flag(
    "format",
    "Format output using a Go template, or 'json'",
    short="f",
    metavar="string",
    default="",
)
_FORCE = Flag("force", "Do not prompt for confirmation", short="f")
_FILTER = Flag(
    "filter", "Provide filter values (e.g. 'until=<timestamp>')", metavar="filter", repeated=True
)


def info(context: Context, options: dict, args: list[str]) -> int:
    data = context.client().call("GET", "/info")
    if not isinstance(data, dict):
        data = {}
    from ketch.cli.stats import binary_size

    if options["format"]:
        from ketch.cli.formatter import render_inspect

        sys.stdout.write(render_inspect(options["format"], [data]))
        return 0
    lines = [
        "Server:",
        f" Containers: {data.get('Containers', 0)}",
        f"  Running: {data.get('ContainersRunning', 0)}",
        f"  Paused: {data.get('ContainersPaused', 0)}",
        f"  Stopped: {data.get('ContainersStopped', 0)}",
        f" Images: {data.get('Images', 0)}",
        f" Server Version: {data.get('ServerVersion', '')}",
        f" Storage Driver: {data.get('Driver', '')}",
        f" Logging Driver: {data.get('LoggingDriver', '')}",
        f" Cgroup Driver: {data.get('CgroupDriver', '')}",
        f" Cgroup Version: {data.get('CgroupVersion', '')}",
        f" Kernel Version: {data.get('KernelVersion', '')}",
        f" Operating System: {data.get('OperatingSystem', '')}",
        f" OSType: {data.get('OSType', '')}",
        f" Architecture: {data.get('Architecture', '')}",
        f" CPUs: {data.get('NCPU', 0)}",
        f" Total Memory: {binary_size(data.get('MemTotal') or 0)}",
        f" Name: {data.get('Name', '')}",
        f" ID: {data.get('ID', '')}",
        f" Docker Root Dir: {data.get('DockerRootDir', '')}",
        f" Debug Mode: {str(bool(data.get('Debug'))).lower()}",
        f" Live Restore Enabled: {str(bool(data.get('LiveRestoreEnabled'))).lower()}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    for warning in data.get("Warnings") or []:
        sys.stderr.write(f"{warning}\n")
    return 0


def system_df(context: Context, options: dict, args: list[str]) -> int:
    if options["verbose"] and options["format"]:
        raise UsageError("--format and --verbose cannot be used together: choose one")
    data = context.client().call("GET", "/system/df")
    if not isinstance(data, dict):
        data = {}
    if options["verbose"]:
        from ketch.cli.disk_usage import verbose_report

        sys.stdout.write(verbose_report(data))
        return 0
    images = data.get("Images") or []
    containers = data.get("Containers") or []
    volumes = data.get("Volumes") or []
    cache = data.get("BuildCache") or []
    used_images = [image for image in images if (image.get("Containers") or 0) > 0]
    running = [container for container in containers if container.get("State") == "running"]
    volume_usage = [volume.get("UsageData") or {} for volume in volumes]
    rows = [
        _df_row(
            "Images",
            images,
            used_images,
            data.get("LayersSize") or 0,
            [_reclaimable_image_bytes(data.get("LayersSize") or 0, used_images)],
        ),
        _df_row(
            "Containers",
            containers,
            running,
            sum(c.get("SizeRw") or 0 for c in containers),
            [c.get("SizeRw") or 0 for c in containers if c not in running],
        ),
        _df_row(
            "Local Volumes",
            volumes,
            [usage for usage in volume_usage if (usage.get("RefCount") or 0) > 0],
            sum(usage.get("Size") or 0 for usage in volume_usage),
            [usage.get("Size") or 0 for usage in volume_usage if not usage.get("RefCount")],
        ),
        _df_row(
            "Build Cache",
            cache,
            [c for c in cache if c.get("InUse")],
            sum(c.get("Size") or 0 for c in cache),
            [c.get("Size") or 0 for c in cache if not c.get("InUse")],
        ),
    ]
    from ketch.cli.formatter import render
    from ketch.cli.ps import HeaderRow

    headers = {
        "Type": "TYPE",
        "TotalCount": "TOTAL",
        "Active": "ACTIVE",
        "Size": "SIZE",
        "Reclaimable": "RECLAIMABLE",
    }
    default = "{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
    sys.stdout.write(render(options["format"], default, HeaderRow(headers), rows))
    return 0


def _reclaimable_image_bytes(layers_size: int, used_images: list[dict]) -> int:
    """Compute the reclaimable image bytes as the docker CLI counts them.

    That is the layers' total minus the unique bytes (Size - SharedSize) of each image
    that a container uses.
    """
    used = 0
    for image in used_images:
        # -1 means that the daemon did not compute the figure. A missing field reads as 0,
        # as it does in the docker CLI's Go structs.
        size = image.get("Size") or 0
        shared = image.get("SharedSize") or 0
        if size == -1 or shared == -1:
            continue
        used += size - shared
    return layers_size - used


class _DiskUsageRow:
    def __init__(self, **fields: str) -> None:
        self.__dict__.update(fields)

    def to_json(self) -> dict[str, str]:
        return dict(sorted(self.__dict__.items()))


def _df_row(
    kind: str, items: list, active: list, size: int, reclaimable: list[int]
) -> _DiskUsageRow:
    freed = sum(reclaimable)
    share = f" ({int(freed * 100 / size)}%)" if size else ""
    return _DiskUsageRow(
        Type=kind,
        TotalCount=str(len(items)),
        Active=str(len(active)),
        Size=human_size(size),
        Reclaimable=f"{human_size(freed)}{share}",
    )


def prune(client: Client, path: str, options: dict, query: dict[str, str] | None = None) -> int:
    """POST a prune request, list what went and print the space reclaimed."""
    from ketch.cli.ps import filters_json

    query = dict(query or {})
    if options.get("filter"):
        query["filters"] = filters_json(options["filter"])
    result = client.call("POST", path, query)
    if not isinstance(result, dict):
        result = {}
    removed = result.get("ContainersDeleted") or []
    if removed:
        sys.stdout.write("Deleted Containers:\n" + "".join(f"{item}\n" for item in removed) + "\n")
    images = result.get("ImagesDeleted") or []
    if images:
        lines = []
        for entry in images:
            for kind in ("Untagged", "Deleted"):
                if entry.get(kind):
                    lines.append(
                        f"{'deleted' if kind == 'Deleted' else 'untagged'}: {entry[kind]}\n"
                    )
        sys.stdout.write("Deleted Images:\n" + "".join(lines) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(result.get('SpaceReclaimed') or 0)}\n")
    return 0


def confirm(options: dict, warning: str) -> bool:
    """Ask before a prune unless ``--force``; docker's prompt, docker's default No."""
    if options["force"]:
        return True
    sys.stdout.write(f"WARNING! {warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def container_prune(context: Context, options: dict, args: list[str]) -> int:
    if not confirm(options, "This will remove all stopped containers."):
        return 0
    return prune(context.client(), "/containers/prune", options)


def image_prune(context: Context, options: dict, args: list[str]) -> int:
    if options["all"]:
        warning = "This will remove all images without at least one container associated to them."
    else:
        warning = "This will remove all dangling images."
    if not confirm(options, warning):
        return 0
    if options["all"]:
        options = {**options, "filter": [*options["filter"], "dangling=false"]}
    return prune(context.client(), "/images/prune", options)


def system_prune(context: Context, options: dict, args: list[str]) -> int:
    warning = "This will remove:\n  - all stopped containers\n  - all dangling images"
    if options["volumes"]:
        warning += "\n  - all anonymous volumes not used by at least one container"
    if not confirm(options, warning):
        return 0
    client = context.client()
    prune(client, "/containers/prune", options)
    if options["volumes"]:
        from ketch.cli.volume import request_prune

        # Volume prune takes label filters but not until, which containers and images take.
        labels = [value for value in options["filter"] if value.startswith("label")]
        request_prune(client, labels, prune_all=False)
    return prune(client, "/images/prune", options)


VERBS = {
    "info": (
        Command(
            "info",
            "ketch info [OPTIONS]",
            "Display system-wide information",
            (_FORMAT,),
            max_args=0,
        ),
        info,
    ),
    "system-df": (
        Command(
            "system df",
            "ketch system df [OPTIONS]",
            "Show disk usage of images, containers and volumes",
            (
                Flag(
                    "format",
                    "Format output using a Go template, 'table', 'table TEMPLATE' or 'json'",
                    metavar="string",
                    default="",
                ),
                Flag("verbose", "Show detailed information on space usage", short="v"),
            ),
            max_args=0,
        ),
        system_df,
    ),
    "container-prune": (
        Command(
            "container prune",
            "ketch container prune [OPTIONS]",
            "Remove all stopped containers",
            (_FILTER, _FORCE),
            max_args=0,
        ),
        container_prune,
    ),
    "image-prune": (
        Command(
            "image prune",
            "ketch image prune [OPTIONS]",
            "Remove unused images",
            (
                Flag("all", "Remove all unused images, not just dangling ones", short="a"),
                _FILTER,
                _FORCE,
            ),
            max_args=0,
        ),
        image_prune,
    ),
    "system-prune": (
        Command(
            "system prune",
            "ketch system prune [OPTIONS]",
            "Remove unused data",
            (_FILTER, _FORCE, Flag("volumes", "Prune anonymous volumes")),
            max_args=0,
        ),
        system_prune,
    ),
}
