"""Flag parsing, progress display and human-readable formatting of the CLI, in-process."""

from __future__ import annotations

import io

import pytest

from ketch.cli.errors import UsageError, start_failure_exit_code
from ketch.cli.formatter import tabulate
from ketch.cli.humanize import human_duration, human_size, truncate
from ketch.cli.options import Command, Flag, HelpRequested, parse
from ketch.cli.progress import ProgressDisplay, progress_bar
from ketch.cli.pull import canonical_reference, split_reference, with_default_tag
from ketch.cli.run import COMMAND as RUN

LIST = Command(
    "ls",
    "ketch ls [OPTIONS]",
    "List things",
    (
        Flag("all", "Show all", short="a"),
        Flag("quiet", "Only IDs", short="q"),
        Flag("format", "Format", short="f", metavar="string"),
    ),
    max_args=0,
)


def test_options_run_stops_at_image() -> None:
    values, args = parse(RUN, ["--rm", "-e", "A=1", "busybox", "ls", "-l", "--rm"])
    assert values["rm"] is True
    assert values["env"] == ["A=1"]
    assert args == ["busybox", "ls", "-l", "--rm"]


def test_options_value_forms() -> None:
    argv = ["-eA=1", "--env=B=2", "-e", "C", "--name=web", "--network", "none", "x"]
    values, _ = parse(RUN, argv)
    assert values["env"] == ["A=1", "B=2", "C"]
    assert values["name"] == "web"
    assert values["network"] == "none"


def test_options_defaults() -> None:
    values, _ = parse(RUN, ["busybox"])
    assert values["detach"] is False
    assert values["env"] == []
    assert values["name"] is None
    assert values["network"] == "default"
    assert values["sig-proxy"] is True


def test_options_combined_short_flags() -> None:
    values, _ = parse(LIST, ["-aq", "-fjson"])
    assert values == {"all": True, "quiet": True, "format": "json"}


def test_options_bool_with_value() -> None:
    values, _ = parse(LIST, ["--all=false", "--quiet=true"])
    assert values["all"] is False
    assert values["quiet"] is True


def test_options_double_dash_ends_flags() -> None:
    _, args = parse(RUN, ["--", "-image-like"])
    assert args == ["-image-like"]


def test_options_errors() -> None:
    cases = [
        (["--nope"], "unknown flag: --nope"),
        (["-x"], "unknown shorthand flag: 'x' in -x"),
        (["-ax"], "unknown shorthand flag: 'x' in -ax"),
        (["--format"], "flag needs an argument: --format"),
        (["-f"], "flag needs an argument: 'f' in -f"),
        (["--all=maybe"], 'invalid argument "maybe" for "--all=maybe": expected true or false'),
        (["extra"], '"ketch ls" accepts no arguments.'),
    ]
    for argv, message in cases:
        with pytest.raises(UsageError) as raised:
            parse(LIST, argv)
        assert str(raised.value) == message, argv


def test_options_help_requested() -> None:
    with pytest.raises(HelpRequested):
        parse(LIST, ["-a", "--help"])


def test_options_help_text_lists_flags() -> None:
    text = LIST.help_text()
    assert text.startswith("Usage:  ketch ls [OPTIONS]\n\nList things\n\nOptions:\n")
    assert "  -f, --format string   Format\n" in text


def test_start_failure_exit_codes() -> None:
    cases = [
        ('exec: "x": executable file not found in $PATH', 127),
        ("open /bin/x: no such file or directory", 127),
        ("exec /bin/x: permission denied", 126),
        ("cgroup write failed", 125),
    ]
    for message, code in cases:
        assert start_failure_exit_code(message) == code, message


def test_progress_bar_format() -> None:
    assert progress_bar({}) == ""
    assert progress_bar({"current": 0, "total": 0}) == ""
    assert progress_bar({"current": 1_049_000}) == "1.049MB"
    half = progress_bar({"current": 1_048_576, "total": 2_097_152})
    assert half == "[" + "=" * 25 + ">" + " " * 24 + "]  1.049MB/2.097MB"
    full = progress_bar({"current": 10, "total": 10})
    assert full == "[" + "=" * 50 + "]  10B/10B"


MESSAGES = [
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "aaa"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "bbb"},
    {"status": "Downloading", "progressDetail": {"current": 5, "total": 10}, "id": "aaa"},
    {"status": "Pull complete", "progressDetail": {}, "id": "aaa"},
    {"status": "Digest: sha256:abc"},
]


def test_progress_in_a_pipe_prints_plain_lines() -> None:
    output = io.StringIO()
    display = ProgressDisplay(output)
    for message in MESSAGES:
        display.show(message)
    assert output.getvalue().splitlines() == [
        "latest: Pulling from library/busybox",
        "aaa: Pulling fs layer",
        "bbb: Pulling fs layer",
        "aaa: Pull complete",
        "Digest: sha256:abc",
    ]


def test_progress_on_a_terminal_redraws_lines() -> None:
    output = io.StringIO()
    display = ProgressDisplay(output, terminal=True)
    for message in MESSAGES:
        display.show(message)
    # An unknown width counts as 80 columns, too narrow for the bar itself.
    bar = progress_bar({"current": 5, "total": 10}, with_bar=False)
    assert bar == "5B/10B"
    assert output.getvalue() == (
        "latest: Pulling from library/busybox\n"
        "aaa: Pulling fs layer\n"
        "bbb: Pulling fs layer\n"
        # aaa is two lines above the cursor: up 2, clear, rewrite, down 2.
        f"\x1b[2A\r\x1b[2Kaaa: Downloading {bar}\x1b[2B\r"
        "\x1b[2A\r\x1b[2Kaaa: Pull complete\x1b[2B\r"
        "Digest: sha256:abc\n"
    )


def test_human_duration() -> None:
    cases = [
        (0.4, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),
        (45 * 60, "45 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ]
    for seconds, text in cases:
        assert human_duration(seconds) == text, seconds


def test_human_size() -> None:
    cases = [
        (0, "0B"),
        (812, "812B"),
        (4_261_000, "4.26MB"),
        (1_000, "1kB"),
        (999_999, "1MB"),
        (1_500_000_000, "1.5GB"),
    ]
    for size, text in cases:
        assert human_size(size) == text, size


def test_truncate_adds_ellipsis() -> None:
    assert truncate("short", 20) == "short"
    assert truncate("sh -c 'echo hello; sleep 100'", 20) == "sh -c 'echo hello; …"


def test_tabulate_pads_columns() -> None:
    table = tabulate("A\tLONGER\tC\nx\ty\t\nwide cell\t\tz\n")
    assert table.splitlines() == [
        "A           LONGER    C",
        "x           y         ",
        "wide cell             z",
    ]


def test_reference_helpers() -> None:
    assert split_reference("127.0.0.1:5000/app") == ("127.0.0.1:5000/app", "")
    assert split_reference("app:v1") == ("app", "v1")
    assert split_reference("app@sha256:abc") == ("app", "sha256:abc")
    assert with_default_tag("busybox") == "busybox:latest"
    assert canonical_reference("busybox") == "docker.io/library/busybox:latest"
    assert canonical_reference("team/app:v1") == "docker.io/team/app:v1"
    assert canonical_reference("localhost/app") == "localhost/app:latest"
    assert canonical_reference("127.0.0.1:5000/app") == "127.0.0.1:5000/app:latest"


def test_progress_on_a_terminal_cuts_long_lines() -> None:
    output = io.StringIO()
    display = ProgressDisplay(output, terminal=True)
    display.show({"status": "x" * 200, "progressDetail": {}, "id": "aaa"})
    assert output.getvalue() == "aaa: " + "x" * 74 + "\n"
