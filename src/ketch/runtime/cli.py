"""``ketch-runc``: the runc command line over :class:`ketch.runtime.Runtime`.

This module parses arguments, calls the library and reports; all behaviour is in the
library. The plain forms of create, start, state, kill and delete are parsed by
:mod:`.cli_quick` without argparse, and everything else by the argparse parser below.
The OCI standard verbs (create, start, state, kill, delete) come first, then runc's
extras (run, exec, spec, list); :mod:`.cli_extras` has the rest of them. Each verb
imports only what it needs, because the interpreter's start-up is most of the cost of
a call.

Errors print one line, ``ketch-runc: <message>``, and exit with status 1. With
``--log FILE`` the line is also appended to FILE as a record at level error, as JSON
(``--log-format json``: ``{"level": "error", "msg": ..., "time": ...}``, the form
containerd and dockerd read back) or as text, after any records the library logged
(at debug level with ``--debug``).
"""

from __future__ import annotations

import posix
import sys

# False at run time, so that this module does not import typing: every ketch-runc call
# pays for what it imports. For the same reason it calls posix, not os (see
# ketch.runtime.paths). pathlib is imported only by the verbs that need it, because
# start, state, kill and delete need none. Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

DEFAULT_ROOT = "/run/ketch-runc"


def main(argv: list[str] | None = None) -> int:
    from ketch.runtime import cli_quick

    if argv is None:
        argv = sys.argv[1:]
    arguments: Any = cli_quick.parse(argv, DEFAULT_ROOT)
    quick = arguments is not None
    if quick:
        arguments.handler = _QUICK_HANDLERS[arguments.verb]
    else:
        # The launcher turns the cyclic garbage collector off for the quick verbs. The
        # verbs parsed here, such as run and exec, can last as long as a container.
        import gc

        gc.enable()
        parser = _parser()
        arguments = parser.parse_args(argv)
        if arguments.version:
            from ketch import __version__
            from ketch.runtime.spec import OCI_VERSION

            print(f"ketch-runc version {__version__}\nspec: {OCI_VERSION}")
            return 0
        if arguments.verb is None:
            parser.error("a command is required")
    from ketch.errors import KetchError

    try:
        _set_up_logging(arguments, defer=quick)
        _check_global_options(arguments)
        return int(arguments.handler(arguments) or 0)
    except KetchError as error:
        _report(arguments, str(error))
        return 1
    except KeyboardInterrupt:
        return 130


def _runtime(arguments: argparse.Namespace) -> Any:
    from ketch.runtime import Runtime

    return Runtime(arguments.root)


# The OCI standard verbs.


def _create(arguments: argparse.Namespace) -> int:
    # Paths stay strings, because importing pathlib (with re and enum) took about 4 ms of
    # create's imports by -X importtime.
    _runtime(arguments).create(
        arguments.id,
        arguments.bundle,
        pid_file=arguments.pid_file or None,
        console_socket=arguments.console_socket or None,
        preserve_fds=arguments.preserve_fds,
        no_pivot=arguments.no_pivot,
        # This process exits once create returns, so the init's cgroup join overlaps
        # that exit and the start of the caller's next ketch-runc call.
        join_cgroups_after_ready=True,
    )
    return 0


def _start(arguments: argparse.Namespace) -> int:
    _runtime(arguments).start(arguments.id)
    return 0


def _state(arguments: argparse.Namespace) -> int:
    from ketch.runtime import json_text

    print(json_text.dumps(_runtime(arguments).state(arguments.id), indent=2))
    return 0


def _kill(arguments: argparse.Namespace) -> int:
    from ketch.runtime.signals import parse_signal

    number = parse_signal(arguments.signal)
    _runtime(arguments).kill(arguments.id, number, all=arguments.all)
    return 0


def _delete(arguments: argparse.Namespace) -> int:
    _runtime(arguments).delete(arguments.id, force=arguments.force)
    return 0


# runc's extras.


def _run(arguments: argparse.Namespace) -> int:
    from ketch.runtime.foreground import run_foreground

    if arguments.console_socket:
        from ketch.errors import InvalidArgument

        raise InvalidArgument("run keeps the terminal itself; --console-socket is for create")
    from pathlib import Path

    pid_file = Path(arguments.pid_file) if arguments.pid_file else None
    return run_foreground(
        _runtime(arguments),
        arguments.id,
        Path(arguments.bundle),
        pid_file=pid_file,
        preserve_fds=arguments.preserve_fds,
        no_pivot=arguments.no_pivot,
    )


def _exec(arguments: argparse.Namespace) -> int:
    from pathlib import Path

    from ketch.runtime import exec_options

    runtime = _runtime(arguments)
    if arguments.process:
        process = exec_options.load_process_file(arguments.process)
    else:
        template = exec_options.container_process(runtime.state(arguments.id)["bundle"])
        process = exec_options.process_from_options(
            template,
            arguments.command,
            terminal=arguments.tty,
            cwd=arguments.cwd,
            env=arguments.env,
            user=arguments.user,
            additional_gids=arguments.additional_gids,
            caps=arguments.cap,
            no_new_privileges=arguments.no_new_privs,
        )
    pid_file = Path(arguments.pid_file) if arguments.pid_file else None
    console_socket = Path(arguments.console_socket) if arguments.console_socket else None
    if arguments.detach:
        runtime.exec(
            arguments.id,
            process,
            pid_file=pid_file,
            console_socket=console_socket,
            preserve_fds=arguments.preserve_fds,
        )
        return 0
    if console_socket is not None:
        from ketch.errors import InvalidArgument

        raise InvalidArgument("--console-socket needs --detach; without it exec keeps the terminal")
    from ketch.runtime.foreground import exec_foreground

    return exec_foreground(
        runtime, arguments.id, process, pid_file=pid_file, preserve_fds=arguments.preserve_fds
    )


def _spec(arguments: argparse.Namespace) -> int:
    import json

    from ketch.errors import Conflict
    from ketch.runtime.paths import join
    from ketch.runtime.spec import default_spec

    path = join(arguments.bundle, "config.json")
    try:
        with open(path, "x") as handle:
            json.dump(default_spec(), handle, indent="\t")
    except FileExistsError:
        raise Conflict(f"{path} exists; remove it first") from None
    return 0


# The verbs that :mod:`.cli_quick` parses without argparse.
_QUICK_HANDLERS = {
    "create": _create,
    "start": _start,
    "state": _state,
    "kill": _kill,
    "delete": _delete,
}


def _check_global_options(arguments: argparse.Namespace) -> None:
    from ketch.errors import InvalidArgument

    if arguments.systemd_cgroup:
        # Limitation: no systemd cgroup driver; cgroups are written under the caller's own.
        raise InvalidArgument("--systemd-cgroup is not supported; cgroups are managed directly")
    if arguments.rootless == "true":
        # Limitation: ketch-runc must run as root; a user namespace in the config maps the
        # container's ids, but an unprivileged caller cannot create the cgroups and mounts.
        raise InvalidArgument("--rootless=true is not supported yet; run ketch-runc as root")


def _set_up_logging(arguments: argparse.Namespace, *, defer: bool) -> None:
    """Send the library's log records to ``--log`` (or stderr), at debug level with
    ``--debug``. Without either, only the error line of :func:`_report` is written.

    With ``defer`` and without ``--debug``, the handler is attached only before the first
    warning or error, and the log file is merely created now. containerd and dockerd pass
    ``--log`` on every call, and importing logging costs about as much as the rest of a
    ``start`` (``python -I -S -c "import os, logging"`` took 17 ms against 9 ms without
    logging, medians on the loaded 2-core test machine). ``defer`` is for the verbs whose
    modules log through :class:`ketch.runtime.lazylog.LazyLogger`, which runs the deferred
    setup.
    """
    if not arguments.log and not arguments.debug:
        return
    if defer and not arguments.debug:
        from ketch.runtime import lazylog

        if _create_log_file(arguments.log):
            lazylog.defer_setup(lambda: _attach_log_handler(arguments))
        return
    _attach_log_handler(arguments)


def _create_log_file(path: str) -> bool:
    """Create ``path`` if it is missing, as logging's FileHandler would.

    Return False if that fails, after printing why.
    """
    try:
        flags = posix.O_WRONLY | posix.O_CREAT | posix.O_APPEND | posix.O_CLOEXEC
        posix.close(posix.open(path, flags, 0o666))
    except OSError as error:
        print(f"ketch-runc: cannot open the log {path}: {error}", file=sys.stderr)
        return False
    return True


def _attach_log_handler(arguments: argparse.Namespace) -> None:
    import logging

    global _log_handler
    if arguments.log:
        try:
            handler: logging.Handler = logging.FileHandler(arguments.log)
        except OSError as error:
            print(f"ketch-runc: cannot open the log {arguments.log}: {error}", file=sys.stderr)
            return
        _log_handler = handler
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if arguments.log_format == "json" else _TextFormatter())
    logger = logging.getLogger("ketch")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if arguments.debug else logging.WARNING)


_log_handler: Any = None


class _TextFormatter:
    """``time="..." level=error msg="..."``, the text form runc's logrus writes."""

    def format(self, record: Any) -> str:
        message = record.getMessage().replace('"', '\\"')
        return f'time="{_timestamp(record.created)}" level={_level(record)} msg="{message}"'


class _JsonFormatter:
    """One JSON object a line with level, msg and time, the form containerd reads back."""

    def format(self, record: Any) -> str:
        import json

        fields = {"level": _level(record), "msg": record.getMessage()}
        fields["time"] = _timestamp(record.created)
        return json.dumps(fields)


def _level(record: Any) -> str:
    return "warning" if record.levelname == "WARNING" else record.levelname.lower()


def _timestamp(created: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(created, datetime.UTC).isoformat()


def _report(arguments: argparse.Namespace, message: str) -> None:
    print(f"ketch-runc: {message}", file=sys.stderr)
    from ketch.runtime import lazylog

    lazylog.run_deferred_setup()
    if _log_handler is None:
        return
    import logging

    record = logging.LogRecord("ketch.runtime.cli", logging.ERROR, __file__, 0, message, (), None)
    _log_handler.handle(record)


def _parser() -> argparse.ArgumentParser:
    import argparse

    from ketch.runtime.paths import getenv

    parser = argparse.ArgumentParser(
        prog="ketch-runc", description="Run containers from OCI bundles, as runc does."
    )
    parser.add_argument(
        "--root",
        default=getenv("KETCH_RUNC_ROOT", DEFAULT_ROOT),
        help=f"directory for the containers' state (default {DEFAULT_ROOT})",
    )
    parser.add_argument("--log", help="append log records, errors included, to this file")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="format of the log records"
    )
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument(
        "--systemd-cgroup", action="store_true", help="not supported: cgroups are managed directly"
    )
    parser.add_argument(
        "--rootless", choices=("true", "false", "auto"), default="auto", help="only false works"
    )
    parser.add_argument("--version", "-v", action="store_true", help="print the version")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    create = verbs.add_parser("create", help="create a container, stopped before its process")
    _add_bundle_options(create)
    create.set_defaults(handler=_create)

    start = verbs.add_parser("start", help="start the process of a created container")
    start.add_argument("id")
    start.set_defaults(handler=_start)

    state = verbs.add_parser("state", help="print a container's state as JSON")
    state.add_argument("id")
    state.set_defaults(handler=_state)

    kill = verbs.add_parser("kill", help="send a signal (default SIGTERM) to the init")
    kill.add_argument("--all", "-a", action="store_true", help="signal every process")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="SIGTERM", help="number or name")
    kill.set_defaults(handler=_kill)

    delete = verbs.add_parser("delete", help="remove a stopped container")
    delete.add_argument("--force", "-f", action="store_true", help="kill it first if running")
    delete.add_argument("id")
    delete.set_defaults(handler=_delete)

    run = verbs.add_parser("run", help="create, start and wait; exit with its status")
    _add_bundle_options(run)
    run.set_defaults(handler=_run)

    _add_exec_parser(verbs)

    from ketch.runtime import cli_extras

    cli_extras.add_parsers(verbs, _runtime)

    spec = verbs.add_parser("spec", help="write a default config.json")
    spec.add_argument("--bundle", "-b", default=".", help="directory to write it in")
    spec.set_defaults(handler=_spec)
    return parser


def _add_exec_parser(verbs: Any) -> None:
    import argparse

    verb = verbs.add_parser("exec", help="run another process in a container")
    verb.add_argument("--process", "-p", help="JSON file with an OCI process object (- is stdin)")
    verb.add_argument("--tty", "-t", action="store_true", help="give the process a terminal")
    verb.add_argument("--detach", "-d", action="store_true", help="do not wait for the process")
    verb.add_argument("--pid-file", help="write the process's pid to this file")
    verb.add_argument(
        "--console-socket", help="unix socket that receives the pty master (with --detach)"
    )
    verb.add_argument("--cwd", help="working directory inside the container")
    verb.add_argument(
        "--env", "-e", action="append", default=[], help="KEY=VALUE to set (repeatable)"
    )
    verb.add_argument("--user", "-u", help="UID[:GID] to run as")
    verb.add_argument(
        "--additional-gids", "-g", action="append", type=int, default=[], help="extra group id"
    )
    verb.add_argument("--cap", "-c", action="append", default=[], help="capability to add")
    verb.add_argument("--no-new-privs", action="store_true", help="set no_new_privs")
    verb.add_argument(
        "--preserve-fds", type=int, default=0, help="pass on descriptors 3 to 2 + N as well"
    )
    verb.add_argument("id")
    verb.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    verb.set_defaults(handler=_exec)


def _add_bundle_options(verb: argparse.ArgumentParser) -> None:
    verb.add_argument("--bundle", "-b", default=".", help="bundle directory (default .)")
    verb.add_argument("--pid-file", help="write the init's pid to this file")
    verb.add_argument(
        "--console-socket", help="unix socket that receives the pty master (process.terminal)"
    )
    verb.add_argument(
        "--no-pivot",
        action="store_true",
        help="move the rootfs onto / and chroot instead of pivot_root (for a ramdisk root)",
    )
    verb.add_argument(
        "--preserve-fds", type=int, default=0, help="pass on descriptors 3 to 2 + N as well"
    )
    verb.add_argument("--no-new-keyring", action="store_true", help="accepted and ignored")
    verb.add_argument("id")


if __name__ == "__main__":
    sys.exit(main())
