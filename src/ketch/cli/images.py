"""``ketch images``: list images in docker's table, one row per tag, or in ``--format``."""

from __future__ import annotations

import sys
import time

from ketch.cli.humanize import human_duration, human_size
from ketch.cli.options import FILTER_FLAG, TABLE_FORMAT_FLAG, Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "images",
    "ketch images [OPTIONS] [REPOSITORY[:TAG]]",
    "List images",
    (
        Flag("all", "Show all images (default hides intermediate images)", short="a"),
        Flag("digests", "Show digests"),
        FILTER_FLAG,
        TABLE_FORMAT_FLAG,
        Flag("no-trunc", "Don't truncate output"),
        Flag("quiet", "Only show image IDs", short="q"),
    ),
    max_args=1,
)

DEFAULT_TABLE = "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
DIGESTS_TABLE = "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
HEADERS = {
    "ID": "IMAGE ID",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "VIRTUAL SIZE",
}
SHORT_ID_LENGTH = 12
NONE = "<none>"


def execute(context: Context, options: dict, args: list[str]) -> int:
    images = context.client().call("GET", "/images/json", list_query(options, args))
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
    from ketch.cli.formatter import render
    from ketch.cli.ps import HeaderRow

    now = time.time()
    rows = [row for image in images for row in image_rows(image, now, truncated)]
    default = DIGESTS_TABLE if options["digests"] else DEFAULT_TABLE
    sys.stdout.write(render(options["format"], default, HeaderRow(HEADERS), rows))
    return 0


def list_query(options: dict, args: list[str]) -> dict[str, str]:
    from ketch.cli.ps import filters_json

    filters = list(options["filter"])
    if args:
        filters.append(f"reference={args[0]}")
    query = {"filters": filters_json(filters)} if filters else {}
    if options["all"]:
        query["all"] = "1"
    return query


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


def image_rows(image: dict, now: float, truncated: bool = True) -> list[ImageRow]:
    """Make one row per tag of a ``GET /images/json`` item (``<none>`` when untagged)."""
    tags = [split_tag(tag) for tag in image.get("RepoTags") or [] if tag != "<none>:<none>"]
    digests = [digest.partition("@")[2] for digest in image.get("RepoDigests") or []]
    digest = digests[0] if digests else NONE
    return [
        ImageRow(image, repository, tag, digest, now, truncated)
        for repository, tag in tags or [(NONE, NONE)]
    ]


class ImageRow:
    """One tag of an image with the fields docker's ``images`` templates use."""

    def __init__(
        self, image: dict, repository: str, tag: str, digest: str, now: float, truncated: bool
    ) -> None:
        self._image = image
        self.Repository = repository
        self.Tag = tag
        self.Digest = digest
        self._now = now
        self._truncated = truncated

    @property
    def ID(self) -> str:  # noqa: N802 - the field names are docker's template names
        return image_id(self._image["Id"], self._truncated)

    @property
    def CreatedSince(self) -> str:  # noqa: N802
        return f"{human_duration(self._now - (self._image.get('Created') or 0))} ago"

    @property
    def CreatedAt(self) -> str:  # noqa: N802
        from ketch.cli.ps import go_time

        return go_time(self._image.get("Created") or 0)

    @property
    def Size(self) -> str:  # noqa: N802
        return human_size(self._image.get("Size") or 0)

    @property
    def VirtualSize(self) -> str:  # noqa: N802
        return human_size(self._image.get("VirtualSize") or self._image.get("Size") or 0)

    @property
    def SharedSize(self) -> str:  # noqa: N802
        shared = self._image.get("SharedSize", -1)
        return "N/A" if shared is None or shared < 0 else human_size(shared)

    @property
    def UniqueSize(self) -> str:  # noqa: N802
        shared = self._image.get("SharedSize", -1)
        if shared is None or shared < 0:
            return "N/A"
        return human_size((self._image.get("Size") or 0) - shared)

    @property
    def Containers(self) -> str:  # noqa: N802
        count = self._image.get("Containers", -1)
        return "N/A" if count is None or count < 0 else str(count)

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in sorted(HEADERS)}
