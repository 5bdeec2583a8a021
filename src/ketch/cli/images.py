"""``ketch images``: list images in docker's table, one row per tag."""

from __future__ import annotations

import json
import sys
import time

from ketch.cli.humanize import format_table, human_duration, human_size
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "images",
    "ketch images [OPTIONS] [REPOSITORY[:TAG]]",
    "List images",
    (
        Flag("no-trunc", "Don't truncate output"),
        Flag("quiet", "Only show image IDs", short="q"),
    ),
    max_args=1,
)

HEADER = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
SHORT_ID_LENGTH = 12
NONE = "<none>"


def execute(context: Context, options: dict, args: list[str]) -> int:
    query = {"filters": json.dumps({"reference": {args[0]: True}})} if args else None
    images = context.client().call("GET", "/images/json", query)
    if not isinstance(images, list):
        from ketch.cli.errors import ProtocolFailure

        raise ProtocolFailure(f"invalid reply to image list: {images!r}")
    images.sort(key=lambda image: image.get("Created") or 0, reverse=True)
    truncated = not options["no-trunc"]
    if options["quiet"]:
        seen: list[str] = []
        for image in images:
            identifier = image_id(image["Id"], truncated)
            if identifier not in seen:
                seen.append(identifier)
        sys.stdout.write("".join(f"{identifier}\n" for identifier in seen))
        return 0
    now = time.time()
    rows = [row for image in images for row in table_rows(image, now, truncated)]
    sys.stdout.write(format_table(HEADER, rows))
    return 0


def image_id(identifier: str, truncated: bool = True) -> str:
    if truncated:
        return identifier.removeprefix("sha256:")[:SHORT_ID_LENGTH]
    return identifier


def split_tag(repo_tag: str) -> tuple[str, str]:
    """Split ``repository:tag``; a colon before the last "/" is a registry's port."""
    if ":" in repo_tag.rsplit("/", 1)[-1]:
        repository, tag = repo_tag.rsplit(":", 1)
        return repository, tag
    return repo_tag, NONE


def table_rows(image: dict, now: float, truncated: bool = True) -> list[list[str]]:
    """Format one ``GET /images/json`` item as rows, one per tag (``<none>`` if untagged)."""
    tags = [split_tag(tag) for tag in image.get("RepoTags") or [] if tag != "<none>:<none>"]
    common = [
        image_id(image["Id"], truncated),
        f"{human_duration(now - (image.get('Created') or 0))} ago",
        human_size(image.get("Size") or 0),
    ]
    return [[repository, tag, *common] for repository, tag in tags or [(NONE, NONE)]]
