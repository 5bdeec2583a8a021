"""``ketch pull``: pull an image through the daemon and show its progress.

``pull_image`` is shared with ``run``, which pulls when the image is not present.
"""

from __future__ import annotations

import sys

from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import TextIO

    from ketch.cli.client import Client
    from ketch.cli.main import Context

COMMAND = Command(
    "pull",
    "ketch pull [OPTIONS] NAME[:TAG|@DIGEST]",
    "Download an image from a registry",
    (
        Flag("all-tags", "Download all tagged images in the repository", short="a"),
        Flag("platform", "Set platform if server is multi-platform capable", metavar="string"),
        Flag("quiet", "Suppress verbose output", short="q"),
    ),
    min_args=1,
    max_args=1,
)

DEFAULT_TAG = "latest"


def split_reference(reference: str) -> tuple[str, str]:
    """Split ``name[:tag|@digest]`` into the name and the tag or digest ("" if none).

    A colon before the last "/" belongs to a registry's port (``127.0.0.1:5000/app``).
    """
    if "@" in reference:
        name, digest = reference.split("@", 1)
        return name, digest
    last_component = reference.rsplit("/", 1)[-1]
    if ":" in last_component:
        name, tag = reference.rsplit(":", 1)
        return name, tag
    return reference, ""


def with_default_tag(reference: str) -> str:
    """Return ``reference`` with ``:latest`` added when it has no tag or digest."""
    name, tag = split_reference(reference)
    return reference if tag else f"{name}:{DEFAULT_TAG}"


def canonical_reference(reference: str) -> str:
    """Spell a reference out in full as docker prints it: ``docker.io/library/busybox:latest``."""
    reference = with_default_tag(reference)
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return reference
    if not rest:
        return f"docker.io/library/{reference}"
    return f"docker.io/{reference}"


def pull_image(
    client: Client,
    reference: str,
    output: TextIO,
    quiet: bool = False,
    all_tags: bool = False,
    platform: str = "",
) -> None:
    """Pull ``reference`` (every tag of its repository with ``all_tags``) and write
    docker's progress output to ``output``.

    Raises ApiError when the daemon rejects the pull, StreamError when it fails later.
    """
    from ketch.cli.login import registry_auth_header
    from ketch.cli.progress import ProgressDisplay

    name, tag = split_reference(reference)
    # The API pulls every tag of the repository when the tag is empty.
    query = {"fromImage": name, "tag": "" if all_tags else tag or DEFAULT_TAG}
    if platform:
        query["platform"] = platform
    response = client.open("POST", "/images/create", query, headers=registry_auth_header(name))
    display = None if quiet else ProgressDisplay(output)
    for message in response.iter_json_lines():
        if display is not None:
            display.show(message)


def execute(context: Context, options: dict, args: list[str]) -> int:
    reference = args[0]
    quiet = bool(options["quiet"])
    all_tags = bool(options["all-tags"])
    has_tag = bool(split_reference(reference)[1])
    if all_tags and has_tag:
        from ketch.cli.errors import UsageError

        raise UsageError(f"tag can't be used with --all-tags/-a: {reference}")
    if not has_tag and not quiet and not all_tags:
        print(f"Using default tag: {DEFAULT_TAG}")
    client = context.client()
    pull_image(client, reference, sys.stdout, quiet, all_tags, options["platform"] or "")
    print(
        canonical_reference(reference).rsplit(":", 1)[0]
        if all_tags
        else canonical_reference(reference)
    )
    return 0
