"""Image verbs other than pull and images: rmi, tag, history and push."""

from __future__ import annotations

import sys
import time

from ketch.cli.errors import ApiError, ProtocolFailure
from ketch.cli.humanize import human_duration, human_size
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

HISTORY_TABLE = "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}
CREATED_BY_WIDTH = 45


def rmi(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    query = {}
    if options["force"]:
        query["force"] = "1"
    if options["no-prune"]:
        query["noprune"] = "1"
    failed = False
    for name in args:
        try:
            removed = client.call("DELETE", f"/images/{name}", query)
        except ApiError as error:
            failed = True
            sys.stderr.write(f"{error}\n")
            continue
        for entry in removed if isinstance(removed, list) else []:
            if entry.get("Untagged"):
                sys.stdout.write(f"Untagged: {entry['Untagged']}\n")
            if entry.get("Deleted"):
                sys.stdout.write(f"Deleted: {entry['Deleted']}\n")
    return 1 if failed else 0


def tag(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.pull import split_reference

    source, target = args
    repository, version = split_reference(target)
    if "@" in target:
        from ketch.cli.errors import UsageError

        raise UsageError(f"invalid target reference {target!r}: a tag cannot be a digest")
    query = {"repo": repository, "tag": version or "latest"}
    context.client().open("POST", f"/images/{source}/tag", query).close()
    return 0


def history(context: Context, options: dict, args: list[str]) -> int:
    entries = context.client().call("GET", f"/images/{args[0]}/history")
    if not isinstance(entries, list):
        raise ProtocolFailure(f"invalid reply to image history: {entries!r}")
    truncated = not options["no-trunc"]
    human = options["human"]
    if options["quiet"]:
        for entry in entries:
            sys.stdout.write(_history_id(entry, truncated) + "\n")
        return 0
    from ketch.cli.formatter import render
    from ketch.cli.ps import HeaderRow

    now = time.time()
    rows = [_HistoryRow(entry, now, truncated, human) for entry in entries]
    sys.stdout.write(render(options["format"], HISTORY_TABLE, HeaderRow(HISTORY_HEADERS), rows))
    return 0


def _history_id(entry: dict, truncated: bool) -> str:
    identifier = entry.get("Id") or "<missing>"
    if identifier == "<missing>" or not truncated:
        return identifier
    return identifier.removeprefix("sha256:")[:12]


class _HistoryRow:
    """One ``GET /images/{name}/history`` entry with the fields of docker's template."""

    def __init__(self, entry: dict, now: float, truncated: bool, human: bool) -> None:
        from ketch.cli.ps import go_time

        created = entry.get("Created") or 0
        created_by = " ".join((entry.get("CreatedBy") or "").split())
        if truncated and len(created_by) > CREATED_BY_WIDTH:
            created_by = created_by[: CREATED_BY_WIDTH - 1] + "…"
        self.ID = _history_id(entry, truncated)
        self.CreatedSince = f"{human_duration(now - created)} ago" if human else go_time(created)
        self.CreatedAt = go_time(created)
        self.CreatedBy = created_by
        self.Size = human_size(entry.get("Size") or 0) if human else str(entry.get("Size") or 0)
        self.Comment = entry.get("Comment") or ""

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in sorted(HISTORY_HEADERS)}


def push(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.login import registry_auth_header
    from ketch.cli.progress import ProgressDisplay
    from ketch.cli.pull import split_reference

    reference = args[0]
    name, version = split_reference(reference)
    query = {"tag": version} if version else {}
    if options["all-tags"] and version:
        from ketch.cli.errors import UsageError

        raise UsageError(f"tag can't be used with --all-tags/-a: {reference}")
    if not version and not options["all-tags"]:
        query = {"tag": "latest"}
        sys.stdout.write("Using default tag: latest\n")
    # dockerd rejects a push without the header, so an empty credential is sent then.
    headers = registry_auth_header(reference) or {"X-Registry-Auth": "e30="}
    client = context.client()
    response = client.open("POST", f"/images/{name}/push", query, headers=headers)
    display = None if options["quiet"] else ProgressDisplay(sys.stdout)
    for message in response.iter_json_lines():
        if display is not None:
            display.show(message)
    if options["quiet"]:
        sys.stdout.write(f"{reference}\n")
    return 0


VERBS = {
    "rmi": (
        Command(
            "rmi",
            "ketch rmi [OPTIONS] IMAGE [IMAGE...]",
            "Remove one or more images",
            (
                Flag("force", "Force removal of the image", short="f"),
                Flag("no-prune", "Do not delete untagged parents"),
            ),
            min_args=1,
        ),
        rmi,
    ),
    "tag": (
        Command(
            "tag",
            "ketch tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
            "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
            min_args=2,
            max_args=2,
        ),
        tag,
    ),
    "history": (
        Command(
            "history",
            "ketch history [OPTIONS] IMAGE",
            "Show the history of an image",
            (
                Flag(
                    "format",
                    "Format output using a Go template, 'table', 'table TEMPLATE' or 'json'",
                    metavar="string",
                    default="",
                ),
                Flag(
                    "human",
                    "Print sizes and dates in human readable format",
                    short="H",
                    default=True,
                ),
                Flag("no-trunc", "Don't truncate output"),
                Flag("quiet", "Only show image IDs", short="q"),
            ),
            min_args=1,
            max_args=1,
        ),
        history,
    ),
    "push": (
        Command(
            "push",
            "ketch push [OPTIONS] NAME[:TAG]",
            "Upload an image to a registry",
            (
                Flag("all-tags", "Push all tags of an image to the repository", short="a"),
                Flag("quiet", "Suppress verbose output", short="q"),
            ),
            min_args=1,
            max_args=1,
        ),
        push,
    ),
}
