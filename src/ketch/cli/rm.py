"""``ketch rm``: remove containers by name or ID.

Each container is removed on its own: a failure is printed and the rest are still
removed, and the exit status is 1 if any failed, as with docker. With ``--force`` a
missing container is printed as an error but does not count as a failure.
"""

from __future__ import annotations

import sys

from ketch.cli.errors import ApiError
from ketch.cli.lifecycle import for_each
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.client import Client
    from ketch.cli.main import Context

COMMAND = Command(
    "rm",
    "ketch rm [OPTIONS] CONTAINER [CONTAINER...]",
    "Remove one or more containers",
    (
        Flag("force", "Force the removal of a running container (uses SIGKILL)", short="f"),
        Flag("volumes", "Remove anonymous volumes associated with the container", short="v"),
    ),
    min_args=1,
)


def execute(context: Context, options: dict, args: list[str]) -> int:
    client = context.client()
    query = {}
    if options["force"]:
        query["force"] = "1"
    if options["volumes"]:
        query["v"] = "1"
    return for_each(args, lambda name: _remove(client, name, query))


def _remove(client: Client, name: str, query: dict[str, str]) -> str | None:
    try:
        client.open("DELETE", f"/containers/{name}", query).close()
    except ApiError as error:
        # Docker (since 20.10) prints a missing container's error under --force but exits 0.
        if error.status != 404 or "force" not in query:
            raise
        sys.stderr.write(f"{error}\n")
        return None
    return name
