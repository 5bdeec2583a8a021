"""A hand parser for the command lines that callers send most: create, start, state, kill
and delete.

containerd's shim, dockerd and podman call ``ketch-runc`` several times for each
container, and each call pays the interpreter's start-up. Importing argparse and
building every verb's subparser costs several milliseconds more than the work of
``start`` or ``delete`` itself, so these five verbs are parsed here by hand.

:func:`parse` accepts only the plain forms: the global options ``--root``, ``--log``,
``--log-format``, ``--rootless`` (each as ``--opt VALUE`` or ``--opt=VALUE``),
``--debug`` and ``--systemd-cgroup``, then the verb, its flags and its positionals. For
anything else it returns None and :mod:`ketch.runtime.cli` parses with argparse, which
also writes the help and the usage errors. The result has the same attributes as
argparse's namespace for that verb, so the handlers cannot tell the two apart.

This module imports neither :mod:`os` nor :mod:`types` (see :mod:`ketch.runtime.paths`).
"""

from __future__ import annotations

from ketch.runtime.paths import getenv

_VALUED_OPTIONS = {
    "--root": "root",
    "--log": "log",
    "--log-format": "log_format",
    "--rootless": "rootless",
}
_FLAG_OPTIONS = {"--debug": "debug", "--systemd-cgroup": "systemd_cgroup"}
_CHOICES = {"log_format": ("text", "json"), "rootless": ("true", "false", "auto")}


class Arguments:
    """The parsed arguments, as attributes, like argparse's namespace."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"Arguments({fields})"


# A verb's options: its flags (set True when given), its options that take a value (with
# the value's type and default), and how many positionals it takes as (required,
# maximum). kill's optional second positional is the signal.
class _Verb:
    def __init__(
        self,
        flags: dict[str, str],
        valued: dict[str, tuple[str, type, object]],
        positionals: tuple[int, int],
    ) -> None:
        self.flags = flags
        self.valued = valued
        self.positionals = positionals


_CREATE_OPTIONS: dict[str, tuple[str, type, object]] = {
    "--bundle": ("bundle", str, "."),
    "-b": ("bundle", str, "."),
    "--pid-file": ("pid_file", str, None),
    "--console-socket": ("console_socket", str, None),
    "--preserve-fds": ("preserve_fds", int, 0),
}
_VERBS = {
    "create": _Verb(
        {"--no-pivot": "no_pivot", "--no-new-keyring": "no_new_keyring"}, _CREATE_OPTIONS, (1, 1)
    ),
    "start": _Verb({}, {}, (1, 1)),
    "state": _Verb({}, {}, (1, 1)),
    "kill": _Verb({"--all": "all", "-a": "all"}, {}, (1, 2)),
    "delete": _Verb({"--force": "force", "-f": "force"}, {}, (1, 1)),
}


def parse(argv: list[str], default_root: str) -> Arguments | None:
    """Return the parsed arguments of a plain call of one of these verbs, else None."""
    arguments = Arguments(
        root=getenv("KETCH_RUNC_ROOT", default_root),
        log=None,
        log_format="text",
        rootless="auto",
        debug=False,
        systemd_cgroup=False,
        version=False,
    )
    index = _parse_global_options(argv, arguments)
    if index is None or index >= len(argv) or argv[index] not in _VERBS:
        return None
    verb = argv[index]
    if not _parse_verb(verb, argv[index + 1 :], arguments):
        return None
    arguments.verb = verb
    return arguments


def _parse_global_options(argv: list[str], arguments: Arguments) -> int | None:
    """Set the global options on ``arguments``; return the index of the verb, or None."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        name, equals, value = argv[index].partition("=")
        if name in _FLAG_OPTIONS and not equals:
            setattr(arguments, _FLAG_OPTIONS[name], True)
            index += 1
            continue
        if name not in _VALUED_OPTIONS:
            return None
        if not equals:
            if index + 1 >= len(argv) or argv[index + 1].startswith("-"):
                return None
            value = argv[index + 1]
            index += 1
        attribute = _VALUED_OPTIONS[name]
        if attribute in _CHOICES and value not in _CHOICES[attribute]:
            return None
        setattr(arguments, attribute, value)
        index += 1
    return index


def _parse_verb(verb: str, rest: list[str], arguments: Arguments) -> bool:
    """Set the verb's options and positionals on ``arguments``; False leaves it to argparse."""
    options = _VERBS[verb]
    for attribute in options.flags.values():
        setattr(arguments, attribute, False)
    for attribute, _kind, default in options.valued.values():
        setattr(arguments, attribute, default)

    positionals: list[str] = []
    option_after_positional = False
    index: int | None = 0
    while index is not None and index < len(rest):
        token = rest[index]
        if token.startswith("-"):
            index = _parse_option(options, rest, index, arguments)
            option_after_positional = bool(positionals)
        elif option_after_positional:
            # argparse fills the positionals from the first unbroken run of them, so in
            # "kill ID --all SIGNAL" the signal is an error there, and argparse reports it.
            return False
        else:
            positionals.append(token)
            index += 1
    if index is None:
        return False

    required, maximum = options.positionals
    if not required <= len(positionals) <= maximum:
        return False
    arguments.id = positionals[0]
    if verb == "kill":
        arguments.signal = positionals[1] if len(positionals) > 1 else "SIGTERM"
    return True


def _parse_option(options: _Verb, rest: list[str], index: int, arguments: Arguments) -> int | None:
    """Set the option at ``rest[index]``; return the index after it, or None for argparse."""
    token = rest[index]
    if token in options.flags:
        setattr(arguments, options.flags[token], True)
        return index + 1
    name, equals, value = token.partition("=")
    if name not in options.valued or (equals and not name.startswith("--")):
        # "--", "--help", a negative signal number, combined short flags, "-b=DIR":
        # argparse decides what those mean.
        return None
    if not equals:
        if index + 1 >= len(rest) or rest[index + 1].startswith("-"):
            return None
        index += 1
        value = rest[index]
    attribute, kind, _default = options.valued[name]
    try:
        setattr(arguments, attribute, kind(value))
    except ValueError:
        return None
    return index + 1
