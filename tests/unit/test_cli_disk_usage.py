"""``ketch system df -v``: docker's four verbose tables, and the help hint of a group
command naming the command as typed."""

from __future__ import annotations

import pytest

from ketch.cli.disk_usage import verbose_report
from ketch.cli.main import run_command_line

NOW = 1_700_000_000.0
REPLY = {
    "LayersSize": 4_260_000,
    "Images": [
        {
            "Id": "sha256:" + "a" * 64,
            "RepoTags": ["busybox:latest", "busybox:stable"],
            "Created": NOW - 7200,
            "Size": 4_260_000,
            "SharedSize": 0,
            "Containers": 1,
        }
    ],
    "Containers": [
        {
            "Id": "b" * 64,
            "Names": ["/web"],
            "Image": "busybox",
            "Command": "sleep 1000",
            "Created": NOW - 60,
            "Status": "Up 1 minute",
            "SizeRw": 12,
            "Mounts": [{"Type": "volume", "Name": "data", "Driver": "local"}],
        }
    ],
    "Volumes": [{"Name": "data", "UsageData": {"RefCount": 1, "Size": 2048}}],
    "BuildCache": [],
}


def test_verbose_sections_in_order() -> None:
    text = verbose_report(REPLY, NOW)
    titles = [line for line in text.splitlines() if line.endswith(":") or "usage:" in line]
    assert titles == [
        "Images space usage:",
        "Containers space usage:",
        "Local Volumes space usage:",
        "Build cache usage: 0B",
    ]


def test_verbose_image_row() -> None:
    text = verbose_report(REPLY, NOW)
    row = text.splitlines()[3].split()
    assert row == [
        "busybox",
        "latest",
        "a" * 12,
        "2",
        "hours",
        "ago",
        "4.26MB",
        "0B",
        "4.26MB",
        "1",
    ]


def test_verbose_image_header() -> None:
    header = verbose_report(REPLY, NOW).splitlines()[2]
    assert header.split() == [
        "REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE", "SHARED", "SIZE", "UNIQUE",
        "SIZE", "CONTAINERS",
    ]  # fmt: skip


def test_verbose_container_row() -> None:
    lines = verbose_report(REPLY, NOW).splitlines()
    row = lines[lines.index("Containers space usage:") + 3]
    assert row.split() == [
        "b" * 12, "busybox", '"sleep', '1000"', "1", "12B", "About", "a", "minute", "ago", "Up",
        "1", "minute", "web",
    ]  # fmt: skip


def test_verbose_volume_row() -> None:
    lines = verbose_report(REPLY, NOW).splitlines()
    row = lines[lines.index("Local Volumes space usage:") + 3]
    assert row.split() == ["data", "1", "2.05kB"]


def test_verbose_cache_header() -> None:
    lines = verbose_report(REPLY, NOW).splitlines()
    header = lines[lines.index("Build cache usage: 0B") + 2]
    assert header.split() == ["CACHE", "ID", "CACHE", "TYPE", "SIZE", "CREATED", "LAST", "USED",
                              "USAGE", "SHARED"]  # fmt: skip


def test_df_verbose_with_format(capsys: pytest.CaptureFixture[str]) -> None:
    status = run_command_line(
        ["-H", "unix:///nonexistent.sock", "system", "df", "-v", "--format", "json"]
    )
    assert status == 125
    assert "cannot be used together" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["system", "df", "-z"], "See 'ketch system df --help'."),
        (["container", "ls", "-z"], "See 'ketch container ls --help'."),
        (["image", "prune", "-z"], "See 'ketch image prune --help'."),
        (["ps", "-z"], "See 'ketch ps --help'."),
    ],
)
def test_usage_hint_names_command(
    capsys: pytest.CaptureFixture[str], argv: list[str], hint: str
) -> None:
    assert run_command_line(["-H", "unix:///nonexistent.sock", *argv]) == 125
    assert hint in capsys.readouterr().err
