"""Command-line flags parsed the way the docker CLI parses them.

docker's flags behave differently from argparse's in ways users rely on. ``run`` stops
reading flags at the image, so ``ketch run busybox ls -l`` passes ``-l`` to ``ls``.
Short flags combine (``ps -aq``). A value may follow with a space, an ``=`` or directly
(``-eA=1``). Errors read "unknown flag: --foo". This module does exactly that and no
more, and it costs a fraction of argparse's import time.

Each command module declares a ``Command`` with its ``Flag`` list; ``parse`` returns the
flag values by long name and the positional arguments.
"""

from __future__ import annotations

from ketch.cli.errors import UsageError


class HelpRequested(Exception):
    """``-h`` or ``--help`` was given; the caller prints the command's help."""


class Flag:
    """One flag. A flag with a ``metavar`` takes a value; ``repeated`` collects values."""

    def __init__(
        self,
        name: str,
        help: str,
        *,
        short: str = "",
        metavar: str = "",
        repeated: bool = False,
        default: object = None,
    ) -> None:
        self.name = name
        self.help = help
        self.short = short
        self.metavar = metavar
        self.repeated = repeated
        self.default = default

    @property
    def takes_value(self) -> bool:
        return bool(self.metavar)

    def initial_value(self) -> object:
        if self.repeated:
            return []
        if self.takes_value:
            return self.default
        return bool(self.default)


# The ``--filter`` and ``--format`` flags that docker's list commands share.
FILTER_FLAG = Flag(
    "filter",
    "Filter output based on conditions provided",
    short="f",
    metavar="filter",
    repeated=True,
)
TABLE_FORMAT_FLAG = Flag(
    "format",
    "Format output using a Go template, 'table', 'table TEMPLATE' or 'json'",
    metavar="string",
    default="",
)


class Command:
    """A command's usage line, summary, flags and how many arguments it takes."""

    def __init__(
        self,
        name: str,
        usage: str,
        summary: str,
        flags: tuple[Flag, ...] = (),
        *,
        min_args: int = 0,
        max_args: int | None = None,
        interspersed: bool = True,
    ) -> None:
        self.name = name
        self.usage = usage
        self.summary = summary
        self.flags = flags
        self.min_args = min_args
        self.max_args = max_args
        # With interspersed=False the first positional argument ends the flags (run).
        self.interspersed = interspersed

    def help_text(self) -> str:
        """Format the help that ``--help`` prints, laid out as docker lays it out."""
        lines = [f"Usage:  {self.usage}", "", self.summary, "", "Options:"]
        flags = sorted(self.flags, key=lambda flag: flag.name)
        entries = [(_flag_label(flag), _flag_help(flag)) for flag in flags]
        entries.append(("-h, --help", "Print usage"))
        width = max(len(label) for label, _ in entries)
        lines += [f"  {label.ljust(width)}   {text}" for label, text in entries]
        return "\n".join(lines) + "\n"


def _flag_help(flag: Flag) -> str:
    if flag.default is True:
        return f"{flag.help} (default true)"
    return flag.help


def _flag_label(flag: Flag) -> str:
    short = f"-{flag.short}, " if flag.short else "    "
    value = f" {flag.metavar}" if flag.takes_value else ""
    return f"{short}--{flag.name}{value}"


def parse(command: Command, argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """Parse ``argv`` for ``command``; return flag values by long name and positionals.

    Raises UsageError with docker's wording, or HelpRequested.
    """
    by_name = {flag.name: flag for flag in command.flags}
    by_short = {flag.short: flag for flag in command.flags if flag.short}
    values = {flag.name: flag.initial_value() for flag in command.flags}
    positionals: list[str] = []
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument == "--":
            positionals += argv[index + 1 :]
            break
        if argument == "--help" or (argument == "-h" and "h" not in by_short):
            raise HelpRequested()
        if argument.startswith("--"):
            index = _parse_long(argument, argv, index, by_name, values)
        elif argument.startswith("-") and argument != "-":
            index = _parse_short(argument, argv, index, by_short, values)
        else:
            positionals.append(argument)
            if not command.interspersed:
                positionals += argv[index + 1 :]
                break
        index += 1
    _check_argument_count(command, positionals)
    return values, positionals


def _parse_long(
    argument: str, argv: list[str], index: int, by_name: dict[str, Flag], values: dict
) -> int:
    name, has_value, value = argument[2:].partition("=")
    flag = by_name.get(name)
    if flag is None:
        raise UsageError(f"unknown flag: --{name}")
    if not flag.takes_value:
        values[flag.name] = _parse_bool(argument, value) if has_value else True
        return index
    if not has_value:
        index += 1
        if index >= len(argv):
            raise UsageError(f"flag needs an argument: --{name}")
        value = argv[index]
    _store(flag, value, values)
    return index


def _parse_short(
    argument: str, argv: list[str], index: int, by_short: dict[str, Flag], values: dict
) -> int:
    letters = argument[1:]
    for position, letter in enumerate(letters):
        flag = by_short.get(letter)
        if flag is None:
            raise UsageError(f"unknown shorthand flag: '{letter}' in {argument}")
        if not flag.takes_value:
            values[flag.name] = True
            continue
        value = letters[position + 1 :].removeprefix("=")
        if not value:
            index += 1
            if index >= len(argv):
                raise UsageError(f"flag needs an argument: '{letter}' in {argument}")
            value = argv[index]
        _store(flag, value, values)
        return index
    return index


def _parse_bool(argument: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise UsageError(f'invalid argument "{value}" for "{argument}": expected true or false')


def _store(flag: Flag, value: str, values: dict) -> None:
    if flag.repeated:
        values[flag.name].append(value)
    else:
        values[flag.name] = value


def _check_argument_count(command: Command, positionals: list[str]) -> None:
    count = len(positionals)
    name = f'"ketch {command.name}"'
    if command.max_args == 0:
        if count:
            raise UsageError(f"{name} accepts no arguments.")
        return
    if command.min_args == command.max_args and count != command.min_args:
        raise UsageError(f"{name} requires exactly {_arguments(command.min_args)}.")
    if count < command.min_args:
        raise UsageError(f"{name} requires at least {_arguments(command.min_args)}.")
    if command.max_args is not None and count > command.max_args:
        raise UsageError(f"{name} requires at most {_arguments(command.max_args)}.")


def _arguments(count: int) -> str:
    return f"{count} argument" if count == 1 else f"{count} arguments"
