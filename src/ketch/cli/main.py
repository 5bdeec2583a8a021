"""The ``ketch`` entry point: global options, the command table, and error reporting.

``main`` reads the global options (``-H/--host``, ``-v/--version``), imports only the
module of the command in hand, and runs it. It is the one place that prints errors and
chooses exit codes (see ``ketch.cli.errors``). The daemon's address comes from ``-H``,
else ``KETCH_HOST``, else ``unix:///run/ketch/ketch.sock``. For that default address,
and only as root, the CLI starts ketchd when nothing responds there.
"""

from __future__ import annotations

import os
import sys

from ketch import __version__
from ketch.cli.errors import StartFailed, UsageError
from ketch.cli.options import Command, Flag, HelpRequested, parse

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from ketch.cli.client import Client

DEFAULT_HOST = "unix:///run/ketch/ketch.sock"
HOST_VARIABLE = "KETCH_HOST"

# Command name -> one-line summary; the command lives in the module ketch.cli.<name>.
COMMANDS = {
    "images": "List images",
    "ps": "List containers",
    "pull": "Download an image from a registry",
    "rm": "Remove one or more containers",
    "run": "Create and run a new container from an image",
    "version": "Show the ketch version information",
}

GLOBAL = Command(
    "",
    "ketch [OPTIONS] COMMAND",
    "A container engine that does Docker's job",
    (
        Flag("host", "Daemon socket to connect to", short="H", metavar="string"),
        Flag("version", "Print version information and quit", short="v"),
    ),
    interspersed=False,
)


class Context:
    """The daemon's address for one command, and the client that connects to it."""

    def __init__(self, host: str, autostart: bool) -> None:
        self.host = host
        self.autostart = autostart

    def client(self) -> Client:
        from ketch.cli.client import Client

        if not self.autostart:
            return Client(self.host)
        from ketch.cli.autostart import start_daemon

        return Client(self.host, autostart=start_daemon)


def global_help() -> str:
    width = max(len(name) for name in COMMANDS)
    commands = "".join(f"  {name.ljust(width)}   {summary}\n" for name, summary in COMMANDS.items())
    footer = "Run 'ketch COMMAND --help' for more information on a command.\n"
    return f"{GLOBAL.help_text()}\nCommands:\n{commands}\n{footer}"


def main(argv: list[str] | None = None) -> None:
    """Run the ketch command line and exit with the command's status."""
    sys.exit(run_command_line(sys.argv[1:] if argv is None else argv))


def run_command_line(argv: list[str]) -> int:
    """Parse ``argv``, run the command, report any error; return the exit status."""
    try:
        options, rest = parse(GLOBAL, argv)
    except HelpRequested:
        sys.stdout.write(global_help())
        return 0
    except UsageError as error:
        return _report_usage_error(error, "ketch --help")
    if options["version"]:
        sys.stdout.write(f"ketch version {__version__}\n")
        return 0
    if not rest:
        sys.stdout.write(global_help())
        return 0

    name, command_argv = rest[0], rest[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"ketch: '{name}' is not a ketch command.\nSee 'ketch --help'\n")
        return 1
    host = str(options["host"] or os.environ.get(HOST_VARIABLE) or DEFAULT_HOST)
    if not host.startswith("unix://") or host == "unix://":
        message = f"invalid host {host!r}: expected unix:///path/to/socket"
        return _report_usage_error(UsageError(message), "ketch --help")
    autostart = not options["host"] and HOST_VARIABLE not in os.environ and os.geteuid() == 0
    module = __import__(f"ketch.cli.{name}", fromlist=["execute"])
    return _run(module, name, Context(host, autostart), command_argv)


def _run(module: object, name: str, context: Context, argv: list[str]) -> int:
    command: Command = module.COMMAND  # type: ignore[attr-defined]
    try:
        options, args = parse(command, argv)
        return module.execute(context, options, args)  # type: ignore[attr-defined]
    except HelpRequested:
        sys.stdout.write(command.help_text())
        return 0
    except UsageError as error:
        return _report_usage_error(error, f"ketch {name} --help")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``ketch ps | head -1``); nothing to report.
        _silence_stdout()
        return 1
    except Exception as error:
        return _report_failure(error, name)


def _report_usage_error(error: UsageError, help_command: str) -> int:
    sys.stderr.write(f"{error}\nSee '{help_command}'.\n")
    return 125


def _report_failure(error: Exception, name: str) -> int:
    from ketch.errors import KetchError

    if not isinstance(error, KetchError):
        raise error
    prefix = "ketch: " if name == "run" else ""
    sys.stderr.write(f"{prefix}{error}\n")
    if isinstance(error, StartFailed):
        return error.exit_code
    return 125 if name == "run" else 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    main()
