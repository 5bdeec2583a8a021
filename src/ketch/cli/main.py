"""The ``ketch`` entry point: global options, the command table, and error reporting.

``main`` reads the global options (``-H/--host``, ``-v/--version``), maps a management
command (``ketch container ls``) to its plain name (``ps``), imports only the module of
the command in hand, and runs it. It is the one place that prints errors and
chooses exit codes (see ``ketch.cli.errors``). The daemon's address comes from ``-H``,
else ``KETCH_HOST``, else ``unix:///run/ketch/ketch.sock``. For that default address,
and only as root, the CLI starts ketchd when nothing responds there.
"""

from __future__ import annotations

import os
import sys

from ketch import __version__
from ketch.cli.errors import ConflictingOptions, NotATerminal, StartFailed, UsageError
from ketch.cli.options import Command, Flag, HelpRequested, parse

# Not typing.TYPE_CHECKING: importing typing costs about 3 ms of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable

    from ketch.cli.client import Client

DEFAULT_HOST = "unix:///run/ketch/ketch.sock"
HOST_VARIABLE = "KETCH_HOST"

# Command name -> (module under ketch.cli, one-line summary). A module contains one command
# as COMMAND and execute(), or several as VERBS: name -> (Command, execute).
COMMANDS = {
    "attach": (
        "attach",
        "Attach local standard input, output, and error streams to a running container",
    ),
    "commit": ("transfer", "Create a new image from a container's changes"),
    "cp": ("copy", "Copy files/folders between a container and the local filesystem"),
    "create": ("create", "Create a new container"),
    "diff": ("transfer", "Inspect changes to files or directories on a container's filesystem"),
    "events": ("events", "Get real time events from the server"),
    "exec": ("exec", "Execute a command in a running container"),
    "export": ("transfer", "Export a container's filesystem as a tar archive"),
    "history": ("imagecmds", "Show the history of an image"),
    "images": ("images", "List images"),
    "import": ("transfer", "Import the contents from a tarball to create a filesystem image"),
    "info": ("system", "Display system-wide information"),
    "inspect": ("inspect", "Return low-level information on containers and images"),
    "kill": ("lifecycle", "Kill one or more running containers"),
    "load": ("transfer", "Load an image from a tar archive or STDIN"),
    "login": ("login", "Log in to a registry"),
    "logout": ("login", "Log out from a registry"),
    "logs": ("logs", "Fetch the logs of a container"),
    "pause": ("lifecycle", "Pause all processes within one or more containers"),
    "port": ("port", "List port mappings or a specific mapping for the container"),
    "ps": ("ps", "List containers"),
    "pull": ("pull", "Download an image from a registry"),
    "push": ("imagecmds", "Upload an image to a registry"),
    "rename": ("lifecycle", "Rename a container"),
    "restart": ("lifecycle", "Restart one or more containers"),
    "rm": ("rm", "Remove one or more containers"),
    "rmi": ("imagecmds", "Remove one or more images"),
    "run": ("run", "Create and run a new container from an image"),
    "save": (
        "transfer",
        "Save one or more images to a tar archive (streamed to STDOUT by default)",
    ),
    "start": ("start", "Start one or more stopped containers"),
    "stats": ("stats", "Display a live stream of container(s) resource usage statistics"),
    "stop": ("lifecycle", "Stop one or more running containers"),
    "tag": ("imagecmds", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "top": ("stats", "Display the running processes of a container"),
    "unpause": ("lifecycle", "Unpause all processes within one or more containers"),
    "update": ("update", "Update configuration of one or more containers"),
    "version": ("version", "Show the ketch version information"),
    "wait": ("lifecycle", "Block until one or more containers stop, then print their exit codes"),
}

# Management commands: ``ketch container ls`` is ``ketch ps``; name -> subcommand -> command.
_CONTAINER_VERBS = (
    "attach commit cp create diff exec export inspect kill logs pause port rename restart rm run "
    "start stats stop top unpause update wait"
)
GROUPS = {
    "container": {
        **{verb: verb for verb in _CONTAINER_VERBS.split()},
        "ls": "ps",
        "list": "ps",
        "ps": "ps",
        "prune": "container-prune",
        "inspect": "container-inspect",
    },
    "image": {
        "history": "history",
        "import": "import",
        "inspect": "image-inspect",
        "load": "load",
        "ls": "images",
        "list": "images",
        "prune": "image-prune",
        "pull": "pull",
        "push": "push",
        "rm": "rmi",
        "save": "save",
        "tag": "tag",
    },
    "network": {
        "connect": "network-connect",
        "create": "network-create",
        "disconnect": "network-disconnect",
        "inspect": "network-inspect",
        "ls": "network-ls",
        "list": "network-ls",
        "prune": "network-prune",
        "rm": "network-rm",
        "remove": "network-rm",
    },
    "volume": {
        "create": "volume-create",
        "inspect": "volume-inspect",
        "ls": "volume-ls",
        "list": "volume-ls",
        "prune": "volume-prune",
        "rm": "volume-rm",
        "remove": "volume-rm",
    },
    "system": {
        "df": "system-df",
        "events": "events",
        "info": "info",
        "prune": "system-prune",
    },
}
HIDDEN_COMMANDS = {
    "container-inspect": "inspect",
    "image-inspect": "inspect",
    "container-prune": "system",
    "image-prune": "system",
    **dict.fromkeys(GROUPS["network"].values(), "network"),
    **dict.fromkeys(GROUPS["volume"].values(), "volume"),
    "system-df": "system",
    "system-prune": "system",
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
    width = max(len(name) for name in [*COMMANDS, *GROUPS])
    commands = "".join(
        f"  {name.ljust(width)}   {summary}\n" for name, (_, summary) in COMMANDS.items()
    )
    groups = "".join(f"  {name.ljust(width)}   Manage {name}s\n" for name in GROUPS)
    groups = groups.replace("Manage systems", "Manage ketch")
    footer = "Run 'ketch COMMAND --help' for more information on a command.\n"
    return f"{GLOBAL.help_text()}\nManagement Commands:\n{groups}\nCommands:\n{commands}\n{footer}"


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
    # The command as typed, for the help hint: "system df" rather than its key "system-df".
    typed_name = " ".join([name, *command_argv[:1]]) if name in GROUPS else name
    if name in GROUPS:
        resolved = _resolve_group(name, command_argv)
        if isinstance(resolved, int):
            return resolved
        name, command_argv = resolved
    elif name not in COMMANDS:
        sys.stderr.write(f"ketch: '{name}' is not a ketch command.\nSee 'ketch --help'\n")
        return 1
    host = str(options["host"] or os.environ.get(HOST_VARIABLE) or DEFAULT_HOST)
    if not host.startswith("unix://") or host == "unix://":
        message = f"invalid host {host!r}: expected unix:///path/to/socket"
        return _report_usage_error(UsageError(message), "ketch --help")
    autostart = not options["host"] and HOST_VARIABLE not in os.environ and os.geteuid() == 0
    module_name = HIDDEN_COMMANDS.get(name) or COMMANDS[name][0]
    module = __import__(f"ketch.cli.{module_name}", fromlist=["execute"])
    verbs = getattr(module, "VERBS", None)
    if verbs is not None:
        command, execute = verbs[name]
    else:
        command, execute = module.COMMAND, module.execute
    return _run(command, execute, name, Context(host, autostart), command_argv, typed_name)


def _resolve_group(group: str, argv: list[str]) -> tuple[str, list[str]] | int:
    """Map ``ketch container ls ...`` to ``("ps", [...])``; an exit status on error."""
    verbs = GROUPS[group]
    if not argv or argv[0] in ("-h", "--help"):
        width = max(len(verb) for verb in verbs)
        lines = "".join(f"  {verb.ljust(width)}   {target}\n" for verb, target in verbs.items())
        sys.stdout.write(f"Usage:  ketch {group} COMMAND\n\nCommands (same as):\n{lines}")
        return 0
    if argv[0] not in verbs:
        sys.stderr.write(
            f"ketch: '{group} {argv[0]}' is not a ketch command.\nSee 'ketch {group} --help'\n"
        )
        return 1
    return verbs[argv[0]], argv[1:]


def _run(
    command: Command,
    execute: Callable,
    name: str,
    context: Context,
    argv: list[str],
    typed_name: str,
) -> int:
    try:
        options, args = parse(command, argv)
        return execute(context, options, args)
    except HelpRequested:
        sys.stdout.write(command.help_text())
        return 0
    except UsageError as error:
        return _report_usage_error(error, f"ketch {typed_name} --help")
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (``ketch ps | head -1``); nothing to report.
        _silence_stdout()
        return 1
    except Exception as error:
        return _report_failure(error, name)


def _report_usage_error(error: UsageError, help_command: str) -> int:
    _flush_stdout()
    sys.stderr.write(f"{error}\nSee '{help_command}'.\n")
    return 125


def _report_failure(error: Exception, name: str) -> int:
    from ketch.errors import KetchError

    if not isinstance(error, KetchError):
        raise error
    _flush_stdout()
    # Docker prefixes the failures of ``run`` with its name, but not a flag conflict.
    prefix = "ketch: " if name == "run" and not isinstance(error, ConflictingOptions) else ""
    sys.stderr.write(f"{prefix}{error}\n")
    if isinstance(error, (StartFailed, NotATerminal, ConflictingOptions)):
        return error.exit_code
    return 125 if name == "run" else 1


def _flush_stdout() -> None:
    """Write out what the command printed before its error, so that in a pipe shared by
    stdout and stderr the lines keep the order in which they were printed."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    main()
