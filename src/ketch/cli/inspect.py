"""``ketch inspect``: the daemon's JSON for containers and images, or a ``--format``.

Without ``--type`` each name is looked up as a container, then as an image, as docker
does. Names that match nothing are reported after the output of those that did, and
the exit status is then 1.
"""

from __future__ import annotations

import sys

from ketch.cli.errors import ApiError, UsageError
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable

    from ketch.cli.client import Client
    from ketch.cli.main import Context

# The --format flag of every inspect command.
INSPECT_FORMAT = Flag(
    "format",
    "Format output using a Go template, or 'json'",
    short="f",
    metavar="string",
    default="",
)

COMMAND = Command(
    "inspect",
    "ketch inspect [OPTIONS] NAME|ID [NAME|ID...]",
    "Return low-level information on containers and images",
    (
        INSPECT_FORMAT,
        Flag("size", "Display total file sizes if the type is container", short="s"),
        Flag(
            "type",
            "Only inspect objects of the given type: container or image",
            metavar="string",
            default="",
        ),
    ),
    min_args=1,
)

TYPES = ("container", "image")


def execute(context: Context, options: dict, args: list[str]) -> int:
    object_type = options.get("type", "")
    if object_type and object_type not in TYPES:
        raise UsageError(
            f'"{object_type}" is not a valid value for --type: expected container or image'
        )
    client = context.client()
    found: list[object] = []
    errors: list[str] = []
    for name in args:
        result = inspect_object(client, name, object_type, bool(options.get("size")))
        if result is None:
            errors.append(f"Error: No such {object_type or 'object'}: {name}")
        else:
            found.append(result)
    return write_inspect(options["format"], found, errors)


def write_inspect(format_text: str, found: list[object], errors: list[str]) -> int:
    """Write the inspect output of ``found``, then each of ``errors`` to stderr.

    Returns the exit status, which is 1 if there are errors. With a --format, nothing is
    written to stdout when nothing was found.
    """
    from ketch.cli.formatter import render_inspect

    if found or not format_text:
        sys.stdout.write(render_inspect(format_text, found))
    for error in errors:
        sys.stderr.write(f"{error}\n")
    return 1 if errors else 0


def fetch_each(
    client: Client, names: list[str], path_template: str
) -> tuple[list[object], list[tuple[str, ApiError]]]:
    """Fetch ``path_template`` with a GET for each name, which replaces ``{name}``.

    Returns the bodies found and the (name, error) pairs of the names that got a 404.
    Other errors are raised.
    """
    found: list[object] = []
    missing: list[tuple[str, ApiError]] = []
    for name in names:
        try:
            found.append(client.call("GET", path_template.format(name=name)))
        except ApiError as error:
            if error.status != 404:
                raise
            missing.append((name, error))
    return found, missing


def inspect_object(client: Client, name: str, object_type: str, size: bool) -> object | None:
    """Return the daemon's JSON for ``name`` as the given type (or any); None if absent."""
    if object_type in ("", "container"):
        query = {"size": "1"} if size else None
        result = _get_or_none(client, f"/containers/{name}/json", query)
        if result is not None or object_type:
            return result
    return _get_or_none(client, f"/images/{name}/json", None)


def _get_or_none(client: Client, path: str, query: dict[str, str] | None) -> object | None:
    try:
        return client.call("GET", path, query)
    except ApiError as error:
        if error.status == 404:
            return None
        raise


def _typed_command(object_type: str) -> Command:
    flags = [INSPECT_FORMAT]
    if object_type == "container":
        flags += [flag for flag in COMMAND.flags if flag.name == "size"]
    title = object_type.upper()
    return Command(
        f"{object_type} inspect",
        f"ketch {object_type} inspect [OPTIONS] {title} [{title}...]",
        f"Display detailed information on one or more {object_type}s",
        tuple(flags),
        min_args=1,
    )


def _execute_as(object_type: str) -> Callable[[Context, dict, list[str]], int]:
    return lambda context, options, args: execute(context, {**options, "type": object_type}, args)


# ``ketch container inspect`` and ``ketch image inspect`` look up one type only.
VERBS = {
    "inspect": (COMMAND, execute),
    "container-inspect": (_typed_command("container"), _execute_as("container")),
    "image-inspect": (_typed_command("image"), _execute_as("image")),
}
