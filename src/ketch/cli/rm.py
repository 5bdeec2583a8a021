"""``ketch rm``: remove containers by name or ID.

Each container is removed on its own: a failure is printed and the rest are still
removed, and the exit status is 1 if any failed, as with docker.
"""

from __future__ import annotations

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


def _remove(client: Client, name: str, query: dict[str, str]) -> str:
    client.open("DELETE", f"/containers/{name}", query).close()
    return name
