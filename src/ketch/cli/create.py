"""``ketch create``: create a container from the ``run`` flags and print its ID."""

from __future__ import annotations

import sys

from ketch.cli.containerflags import FLAGS, create_body
from ketch.cli.options import Command

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "create",
    "ketch create [OPTIONS] IMAGE [COMMAND] [ARG...]",
    "Create a new container",
    FLAGS,
    min_args=1,
    interspersed=False,
)


def execute(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.run import create_container, pull_policy

    # A created container is attached later by ``start -a``, so it requests its streams.
    body = create_body(args[0], args[1:], options, detached=False)
    container_id = create_container(context.client(), body, options["name"], pull_policy(options))
    sys.stdout.write(f"{container_id}\n")
    return 0
