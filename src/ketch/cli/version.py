"""``ketch version``: the CLI's version and, when the daemon responds, the daemon's."""

from __future__ import annotations

import platform
import sys

from ketch import __version__
from ketch.cli.options import Command, Flag

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.main import Context

COMMAND = Command(
    "version",
    "ketch version [OPTIONS]",
    "Show the ketch version information",
    (
        Flag(
            "format",
            "Format output using a Go template over {Client, Server}, or 'json'",
            short="f",
            metavar="string",
            default="",
        ),
    ),
    max_args=0,
)


def client_version() -> dict:
    """Return the client's half of ``{{.Client}}``, named as docker names its fields."""
    from ketch.cli.client import API_VERSION

    return {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "PythonVersion": platform.python_version(),
        "Os": "linux",
        "Arch": _architecture(platform.machine()),
    }


def execute(context: Context, options: dict, args: list[str]) -> int:
    from ketch.cli.client import API_VERSION

    if options["format"]:
        return print_formatted(context, options["format"])

    sys.stdout.write(
        "Client:\n"
        f" Version:        {__version__}\n"
        f" API version:    {API_VERSION}\n"
        f" Python version: {platform.python_version()}\n"
        f" OS/Arch:        linux/{_architecture(platform.machine())}\n"
    )
    sys.stdout.flush()
    server = context.client().call("GET", "/version")
    if not isinstance(server, dict):
        server = {}
    minimum = server.get("MinAPIVersion")
    api_version = server.get("ApiVersion", "")
    if minimum:
        api_version = f"{api_version} (minimum version {minimum})"
    sys.stdout.write(
        "\nServer:\n"
        " Engine:\n"
        f"  Version:        {server.get('Version', '')}\n"
        f"  API version:    {api_version}\n"
        f"  OS/Arch:        {server.get('Os', '')}/{server.get('Arch', '')}\n"
        f"  Kernel version: {server.get('KernelVersion', '')}\n"
    )
    return 0


def _architecture(machine: str) -> str:
    """Name the machine the way Go and the Engine API do (x86_64 is amd64)."""
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def print_formatted(context: Context, format_text: str) -> int:
    """Render ``{"Client": ..., "Server": ...}``; the server is null when it is down."""
    from ketch.cli.errors import DaemonUnreachable
    from ketch.cli.formatter import render_inspect

    try:
        server = context.client().call("GET", "/version")
    except DaemonUnreachable as error:
        server = None
        failure: DaemonUnreachable | None = error
    else:
        failure = None
    sys.stdout.write(render_inspect(format_text, [{"Client": client_version(), "Server": server}]))
    if failure is not None:
        raise failure
    return 0
