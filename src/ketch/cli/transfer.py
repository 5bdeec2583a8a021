"""Verbs that move a container's or an image's content: commit, diff, export, import,
save and load.

Archives go to ``-o FILE`` or stdout and come from ``-i FILE`` or stdin. As docker does,
a tar archive is not written to a terminal.
"""

from __future__ import annotations

import sys

from ketch.cli.errors import CommandFailed, ProtocolFailure
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import BinaryIO

    from ketch.cli.client import Response
    from ketch.cli.main import Context

CHANGE_KINDS = {0: "C", 1: "A", 2: "D"}


def commit(context: Context, options: dict, args: list[str]) -> int:
    query: dict = {"container": args[0], "pause": "1" if options["pause"] else "0"}
    if len(args) == 2:
        from ketch.cli.pull import split_reference

        repository, tag = split_reference(args[1])
        query["repo"] = repository
        if tag:
            query["tag"] = tag
    if options["message"]:
        query["comment"] = options["message"]
    if options["author"]:
        query["author"] = options["author"]
    if options["change"]:
        query["changes"] = list(options["change"])
    result = context.client().call("POST", "/commit", query)
    if not isinstance(result, dict) or not isinstance(result.get("Id"), str):
        raise ProtocolFailure(f"invalid reply to commit: {result!r}")
    sys.stdout.write(f"{result['Id']}\n")
    return 0


def diff(context: Context, options: dict, args: list[str]) -> int:
    changes = context.client().call("GET", f"/containers/{args[0]}/changes")
    for change in changes if isinstance(changes, list) else []:
        sys.stdout.write(f"{CHANGE_KINDS.get(change.get('Kind'), '?')} {change.get('Path')}\n")
    return 0


def export(context: Context, options: dict, args: list[str]) -> int:
    check_archive_output(options["output"])
    response = context.client().open("GET", f"/containers/{args[0]}/export")
    write_archive(response, options["output"])
    return 0


def save(context: Context, options: dict, args: list[str]) -> int:
    check_archive_output(options["output"])
    response = context.client().open("GET", "/images/get", {"names": list(args)})
    write_archive(response, options["output"])
    return 0


def check_archive_output(output: str | None) -> None:
    """Raise CommandFailed before any request when the archive would go to a terminal."""
    if not output and sys.stdout.isatty():
        raise CommandFailed("cowardly refusing to save to a terminal. Use the -o flag or redirect")


def write_archive(response: Response, output: str | None) -> None:
    """Copy an archive reply to ``output``, or to stdout."""
    target: BinaryIO = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
    try:
        for block in response.iter_body():
            target.write(block)
        target.flush()
    finally:
        response.close()
        if output:
            target.close()


def open_input(path: str | None) -> BinaryIO:
    """Open ``-i FILE`` (or ``-`` and no flag for stdin); stdin must not be a terminal."""
    if path and path != "-":
        try:
            return open(path, "rb")  # noqa: SIM115
        except OSError as error:
            raise CommandFailed(f"cannot open {path}: {error.strerror}") from None
    if sys.stdin.isatty():
        raise CommandFailed("requested load from stdin, but stdin is empty")
    return sys.stdin.buffer


def load(context: Context, options: dict, args: list[str]) -> int:
    source = open_input(options["input"])
    try:
        query = {"quiet": "1" if options["quiet"] else "0"}
        response = context.client().open("POST", "/images/load", query, data=source)
        print_stream(response)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    return 0


def print_stream(response: Response) -> None:
    """Print the ``stream`` and ``status`` texts of a JSON-lines reply."""
    if "json" not in response.headers.get("content-type", "json"):
        sys.stdout.write(response.read().decode("utf-8", "replace"))
        return
    for message in response.iter_json_lines():
        if message.get("stream"):
            sys.stdout.write(message["stream"])
        elif message.get("status"):
            sys.stdout.write(f"{message['status']}\n")


def import_image(context: Context, options: dict, args: list[str]) -> int:
    source = args[0]
    query: dict = {"fromSrc": source}
    if len(args) == 2:
        from ketch.cli.pull import split_reference

        repository, tag = split_reference(args[1])
        query["repo"] = repository
        if tag:
            query["tag"] = tag
    if options["message"]:
        query["message"] = options["message"]
    if options["change"]:
        query["changes"] = list(options["change"])
    client = context.client()
    if source == "-" or "://" not in source:
        query["fromSrc"] = "-"
        data = open_input(source)
        try:
            response = client.open("POST", "/images/create", query, data=data)
            print_stream(response)
        finally:
            if data is not sys.stdin.buffer:
                data.close()
    else:
        print_stream(client.open("POST", "/images/create", query))
    return 0


_OUTPUT = Flag("output", "Write to a file, instead of STDOUT", short="o", metavar="string")
_CHANGE = Flag(
    "change",
    "Apply Dockerfile instruction to the created image",
    short="c",
    metavar="list",
    repeated=True,
)
_MESSAGE = Flag("message", "Set commit message for imported image", short="m", metavar="string")

VERBS = {
    "commit": (
        Command(
            "commit",
            "ketch commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
            "Create a new image from a container's changes",
            (
                Flag(
                    "author",
                    'Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")',
                    short="a",
                    metavar="string",
                ),
                _CHANGE,
                Flag("message", "Commit message", short="m", metavar="string"),
                Flag("pause", "Pause container during commit", short="p", default=True),
            ),
            min_args=1,
            max_args=2,
        ),
        commit,
    ),
    "diff": (
        Command(
            "diff",
            "ketch diff CONTAINER",
            "Inspect changes to files or directories on a container's filesystem",
            min_args=1,
            max_args=1,
        ),
        diff,
    ),
    "export": (
        Command(
            "export",
            "ketch export [OPTIONS] CONTAINER",
            "Export a container's filesystem as a tar archive",
            (_OUTPUT,),
            min_args=1,
            max_args=1,
        ),
        export,
    ),
    "save": (
        Command(
            "save",
            "ketch save [OPTIONS] IMAGE [IMAGE...]",
            "Save one or more images to a tar archive (streamed to STDOUT by default)",
            (_OUTPUT,),
            min_args=1,
        ),
        save,
    ),
    "load": (
        Command(
            "load",
            "ketch load [OPTIONS]",
            "Load an image from a tar archive or STDIN",
            (
                Flag(
                    "input",
                    "Read from tar archive file, instead of STDIN",
                    short="i",
                    metavar="string",
                ),
                Flag("quiet", "Suppress the load output", short="q"),
            ),
            max_args=0,
        ),
        load,
    ),
    "import": (
        Command(
            "import",
            "ketch import [OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
            "Import the contents from a tarball to create a filesystem image",
            (_CHANGE, _MESSAGE),
            min_args=1,
            max_args=2,
        ),
        import_image,
    ),
}
